"""Readers for the datasets' original file formats, with no network and no code execution.

- IDX (MNIST, Fashion-MNIST): `train-images-idx3-ubyte.gz` & co., gzipped or not.
- `mnist.npz` as Keras caches it (x_train, y_train, x_test, y_test), read with `allow_pickle=False`.
- CIFAR-10/100 python pickles, from the extracted folder or straight out of the `.tar.gz` (members are read,
  never extracted), through `SafeUnpickler`, which only resolves the few numpy/builtin names those pickles
  contain: a pickle that would call anything else (os.system, eval, ...) raises `UnsafeFileError` before
  anything runs.

Every reader raises `InvalidInputError` naming the file when a file is truncated, random bytes or of the
wrong shape, and `FileNotFoundError` naming the expected files when they are missing.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
import pickle
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from nin_keras.errors import InvalidInputError, MissingDependencyError, UnsafeFileError

# Errors that reading a damaged compressed/pickled/zipped file can raise.
_CORRUPT_ERRORS = (EOFError, OSError, zlib.error, gzip.BadGzipFile, tarfile.TarError, zipfile.BadZipFile,
                   pickle.UnpicklingError, ValueError, KeyError, IndexError, TypeError, AttributeError,
                   MemoryError, UnicodeDecodeError)


@dataclasses.dataclass
class RawData:
    """Arrays of one dataset as read from its files: uint8 NHWC images, int labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list
    files: list = dataclasses.field(default_factory=list)
    info: dict = dataclasses.field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------- IDX

IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}

# IDX type codes -> numpy big-endian dtypes (the MNIST files only use 0x08, unsigned bytes).
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_maybe_gzip(path: Path) -> bytes:
    with open(path, "rb") as file:
        head = file.read(2)
    opener = gzip.open if head == b"\x1f\x8b" else open
    try:
        with opener(path, "rb") as file:
            return file.read()
    except (EOFError, OSError, zlib.error) as error:
        raise InvalidInputError(f"{path} is not a readable gzip file (truncated or corrupt?): {error}") from None


def read_idx(path, *, expected_ndim: int | None = None) -> np.ndarray:
    """Reads one IDX file (gzipped or not) and returns its array.

    Raises:
        InvalidInputError: bad magic number, wrong number of dimensions, or a size that does not match the
            header (a truncated file).
    """
    path = Path(path)
    data = _read_maybe_gzip(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise InvalidInputError(
            f"{path} is not an IDX file (bad magic number {data[:4].hex() or 'none'}; expected 0000 08 01 for "
            "labels or 0000 08 03 for images)."
        )
    ndim = data[3]
    if expected_ndim is not None and ndim != expected_ndim:
        raise InvalidInputError(f"{path} holds a {ndim}-D IDX array; expected {expected_ndim}-D.")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise InvalidInputError(f"{path} is truncated: its IDX header is incomplete.")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise InvalidInputError(
            f"{path} is truncated or corrupt: its header announces shape {shape} ({expected} bytes of data) "
            f"but it holds {len(data) - header} bytes."
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def find_idx_files(folder: Path) -> dict | None:
    """Returns {key: path} of the four IDX files in `folder` (`.gz` or not), or None if any is missing."""
    found = {}
    for key, stem in IDX_FILES.items():
        for candidate in (folder / f"{stem}.gz", folder / stem):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            return None
    return found


def read_idx_dataset(files: dict) -> tuple:
    """Reads the four IDX files found by `find_idx_files`: returns (x_train, y_train, x_test, y_test)."""
    arrays = {}
    for key, path in files.items():
        array = read_idx(path, expected_ndim=3 if key.startswith("x") else 1)
        if array.dtype != np.uint8:
            raise InvalidInputError(f"{path} holds {array.dtype} values; expected unsigned bytes.")
        arrays[key] = array
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if len(x) != len(y):
            raise InvalidInputError(
                f"{files[f'x_{split}']} has {len(x)} images but {files[f'y_{split}']} has {len(y)} labels."
            )
    return (arrays["x_train"][..., None], arrays["y_train"], arrays["x_test"][..., None], arrays["y_test"])


# ----------------------------------------------------------------------------------------------------- npz


def read_mnist_npz(path) -> tuple:
    """Reads Keras' `mnist.npz` (x_train, y_train, x_test, y_test) without allowing pickles."""
    path = Path(path)
    keys = ("x_train", "y_train", "x_test", "y_test")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in keys if key not in archive.files]
            if missing:
                raise InvalidInputError(
                    f"{path} lacks the arrays {', '.join(missing)}; expected {', '.join(keys)} (Keras' mnist.npz)."
                )
            arrays = {key: np.asarray(archive[key]) for key in keys}
    except InvalidInputError:
        raise
    except _CORRUPT_ERRORS as error:
        raise InvalidInputError(f"{path} is not a readable .npz file (truncated or corrupt?): {error}") from None
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise InvalidInputError(
                f"{path}: x_{split} has shape {x.shape} and y_{split} {y.shape}; expected (n, height, width) "
                "images and (n,) labels."
            )
        if x.dtype != np.uint8:
            raise InvalidInputError(f"{path}: x_{split} holds {x.dtype}; expected uint8 pixels.")
    return (arrays["x_train"][..., None], arrays["y_train"], arrays["x_test"][..., None], arrays["y_test"])


# ------------------------------------------------------------------------------------------- CIFAR pickles


def _latin1_encode(text, encoding="latin1", errors="strict"):
    """`_codecs.encode` as protocol-2 pickles of `bytes` use it, limited to latin-1 (no codec lookups)."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise UnsafeFileError(f"A pickle asked to encode with {encoding!r}; CIFAR pickles only use latin1.")
    return text.encode("latin1", errors if errors in ("strict",) else "strict")


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the numpy/builtin names found in the CIFAR python pickles.

    `find_class` is the only way a pickle can reach a callable, so refusing every other name means a
    crafted pickle cannot run code: loading it raises `UnsafeFileError` before any call happens.
    """

    ALLOWED = frozenset({
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 writes `bytes` at protocol 2
    })

    def __init__(self, file, *, source="pickle"):
        super().__init__(file, encoding="bytes")
        self._source = source

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise UnsafeFileError(
                f"{self._source} is not a plain CIFAR pickle: it asks for {module}.{name}, which could run code "
                "when loaded. Refusing to load it; use the original files from "
                "https://www.cs.toronto.edu/~kriz/cifar.html."
            )
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        if module.startswith("numpy.core."):
            module = "numpy._core." + module[len("numpy.core."):]
            if not hasattr(np, "_core"):  # numpy < 2
                module = "numpy.core." + module[len("numpy._core."):]
        elif module.startswith("numpy._core.") and not hasattr(np, "_core"):
            module = "numpy.core." + module[len("numpy._core."):]
        return super().find_class(module, name)

    def persistent_load(self, pid):
        raise UnsafeFileError(f"{self._source} uses persistent ids, which CIFAR pickles never do; refusing it.")


def safe_unpickle(data: bytes, *, source: str):
    """Unpickles `data` with `SafeUnpickler`; damaged data raises InvalidInputError naming `source`."""
    try:
        return SafeUnpickler(io.BytesIO(data), source=source).load()
    except UnsafeFileError as error:
        if source in str(error):
            raise
        raise UnsafeFileError(f"{source}: {error}") from None
    except _CORRUPT_ERRORS as error:
        raise InvalidInputError(
            f"{source} is not a readable CIFAR pickle (truncated or corrupt?): {type(error).__name__}: {error}"
        ) from None


def _decode_keys(value):
    if isinstance(value, dict):
        return {(k.decode("utf-8", "replace") if isinstance(k, bytes) else k): v for k, v in value.items()}
    return value


def parse_cifar_batch(data: bytes, *, source: str, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Returns (uint8 NHWC images, int labels) of one CIFAR batch pickle."""
    batch = _decode_keys(safe_unpickle(data, source=source))
    if not isinstance(batch, dict) or "data" not in batch or label_key not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise InvalidInputError(f"{source} is not a CIFAR batch: expected keys 'data' and {label_key!r}, found {keys}.")
    images, labels = batch["data"], batch[label_key]
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != 3072:
        shape = getattr(images, "shape", None)
        raise InvalidInputError(f"{source}: 'data' has shape {shape}; expected (n, 3072) uint8 (32x32x3 images).")
    try:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{source}: {label_key!r} is not a list of integers.") from None
    if len(labels) != len(images):
        raise InvalidInputError(f"{source} has {len(images)} images but {len(labels)} labels.")
    return images.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels


def parse_cifar_meta(data: bytes, *, source: str, names_key: str) -> list[str]:
    meta = _decode_keys(safe_unpickle(data, source=source))
    if not isinstance(meta, dict) or names_key not in meta:
        raise InvalidInputError(f"{source} is not CIFAR metadata: it lacks {names_key!r}.")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in meta[names_key]]


@dataclasses.dataclass(frozen=True)
class CifarLayout:
    """Where the files of one CIFAR version live, and which keys they use."""

    folder: str
    archive: str
    train: tuple
    test: str
    meta: str
    label_key: str
    names_key: str


CIFAR10 = CifarLayout(
    folder="cifar-10-batches-py", archive="cifar-10-python.tar.gz",
    train=tuple(f"data_batch_{i}" for i in range(1, 6)), test="test_batch", meta="batches.meta",
    label_key="labels", names_key="label_names",
)
CIFAR100 = CifarLayout(
    folder="cifar-100-python", archive="cifar-100-python.tar.gz",
    train=("train",), test="test", meta="meta", label_key="fine_labels", names_key="fine_label_names",
)


def _cifar_members(layout: CifarLayout) -> list[str]:
    return [*layout.train, layout.test, layout.meta]


def find_cifar(data_dir: Path, layout: CifarLayout) -> Path | None:
    """Returns the CIFAR folder or archive under `data_dir` (also Keras' cache layout), or None."""
    candidates = [data_dir, data_dir / layout.folder, data_dir / f"{layout.folder}-target" / layout.folder]
    for folder in candidates:
        if folder.is_dir() and all((folder / member).is_file() for member in _cifar_members(layout)):
            return folder
    for archive in (data_dir / layout.archive, data_dir if data_dir.is_file() else None):
        if archive is not None and archive.is_file() and archive.name.endswith((".tar.gz", ".tgz", ".tar")):
            return archive
    return None


def cifar_expected_files(layout: CifarLayout) -> str:
    return f"{layout.folder}/ (with {', '.join(_cifar_members(layout))}) or {layout.archive}"


def _read_cifar_members(location: Path, layout: CifarLayout) -> dict[str, tuple[bytes, str]]:
    """Returns {member: (bytes, source name)} from an extracted folder or a tar archive."""
    members = _cifar_members(layout)
    if location.is_dir():
        return {m: ((location / m).read_bytes(), str(location / m)) for m in members}
    found = {}
    try:
        with tarfile.open(location, "r:*") as archive:
            for info in archive:
                base = info.name.rsplit("/", 1)[-1]
                if info.isfile() and base in members and base not in found:
                    file = archive.extractfile(info)
                    found[base] = (file.read(), f"{location}:{info.name}")
    except _CORRUPT_ERRORS as error:
        raise InvalidInputError(
            f"{location} is not a readable tar archive (truncated or corrupt?): {type(error).__name__}: {error}"
        ) from None
    missing = [m for m in members if m not in found]
    if missing:
        raise InvalidInputError(f"{location} lacks {', '.join(missing)}; expected {cifar_expected_files(layout)}.")
    return found


def read_cifar(location, layout: CifarLayout) -> RawData:
    """Reads CIFAR-10 or CIFAR-100 from its extracted folder or its `.tar.gz`."""
    location = Path(location)
    members = _read_cifar_members(location, layout)
    parts = [parse_cifar_batch(members[m][0], source=members[m][1], label_key=layout.label_key) for m in layout.train]
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    x_test, y_test = parse_cifar_batch(members[layout.test][0], source=members[layout.test][1],
                                       label_key=layout.label_key)
    names = parse_cifar_meta(members[layout.meta][0], source=members[layout.meta][1], names_key=layout.names_key)
    return RawData(x_train, y_train, x_test, y_test, class_names=names, files=[str(location)])


# ------------------------------------------------------------------------------------------------ SVHN .mat


def read_svhn_mat(path) -> tuple[np.ndarray, np.ndarray]:
    """Reads SVHN's `train_32x32.mat` / `test_32x32.mat` (label 10 means digit 0, as tensorflow-datasets maps it)."""
    path = Path(path)
    try:
        from scipy.io import loadmat  # lazy: not a declared dependency; only SVHN .mat files need it

        mat = loadmat(path)
        x, y = mat["X"], mat["y"]
    except ImportError:
        raise MissingDependencyError(f"Reading {path} needs scipy: pip install scipy.") from None
    except _CORRUPT_ERRORS as error:
        raise InvalidInputError(f"{path} is not a readable SVHN .mat file: {type(error).__name__}: {error}") from None
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.dtype != np.uint8:
        raise InvalidInputError(f"{path}: X has shape {x.shape} ({x.dtype}); expected (32, 32, 3, n) uint8.")
    y = np.asarray(y, dtype=np.int64).reshape(-1)
    if len(y) != x.shape[3]:
        raise InvalidInputError(f"{path} has {x.shape[3]} images but {len(y)} labels.")
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2)), np.where(y == 10, 0, y)


def describe_dir(path: Path) -> str:
    """A short listing of what a folder holds, for error messages."""
    try:
        names = sorted(os.listdir(path))
    except OSError:
        return "(unreadable)"
    if not names:
        return "(empty)"
    shown = ", ".join(names[:8])
    return shown + (f", ... ({len(names)} entries)" if len(names) > 8 else "")
