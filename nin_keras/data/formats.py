"""Readers for the datasets' original file formats, with no network, no code execution and no unchecked sizes.

- IDX (MNIST, Fashion-MNIST): `train-images-idx3-ubyte.gz` & co., gzipped or not.
- `mnist.npz` as Keras caches it (x_train, y_train, x_test, y_test): each member's .npy header is read with
  numpy's header reader, never its pickle path.
- CIFAR-10/100 python pickles, from the extracted folder or straight out of the `.tar.gz` (members are read,
  never extracted), through `SafeUnpickler`, which resolves only the few names those pickles contain, each to
  a checking stand-in of ours: a pickle that would call anything else (os.system, eval, ...) raises
  `UnsafeFileError` before anything runs, and nothing in the file ever reaches numpy's own pickle protocol.

Every size a header announces is checked against the bytes the file really holds before anything of that
size is allocated. Every reader raises `InvalidInputError` naming the file when a file is truncated, random
bytes, crafted or of the wrong shape, and `FileNotFoundError` naming the expected files when they are missing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import io
import os
import pickle
import pickletools
import tarfile
import tokenize
import zipfile
import zlib
from pathlib import Path

import numpy as np

from nin_keras.errors import InvalidInputError, MissingDependencyError, UnsafeFileError

# Errors that reading a damaged compressed/pickled/zipped file can raise. MemoryError is deliberately not here:
# sizes are checked before allocating, so running out of memory would be a bug to see, not a damaged file.
_CORRUPT_ERRORS = (EOFError, OSError, zlib.error, gzip.BadGzipFile, tarfile.TarError, zipfile.BadZipFile,
                   pickle.UnpicklingError, ValueError, KeyError, IndexError, TypeError, AttributeError,
                   UnicodeDecodeError, OverflowError, RecursionError, NotImplementedError)

# Deflate (gzip, zip) never inflates data more than 1032-fold, so a compressed file of n bytes cannot hold more
# than this many times n bytes: a header announcing more is refused before anything is read or allocated.
DEFLATE_MAX_RATIO = 1032
_CHUNK = 1 << 22  # bytes read at a time, so memory grows with what the file really holds, not with its header


def _read_exactly(stream, size: int, *, source: str, what: str) -> bytearray:
    """Reads exactly `size` bytes from `stream` in chunks (never allocating `size` up front), then checks that
    nothing follows; a shorter or longer stream raises InvalidInputError naming `source`."""
    data = bytearray()
    while len(data) < size:
        chunk = stream.read(min(_CHUNK, size - len(data)))
        if not chunk:
            raise InvalidInputError(
                f"{source} is truncated: its header announces {what} ({size} bytes of data) but it holds only "
                f"{len(data)}. Download the file again."
            )
        data += chunk
    if stream.read(1):
        raise InvalidInputError(
            f"{source} is corrupt: it holds more data than its header announces ({what}, {size} bytes). Download "
            "the file again."
        )
    return data


def _byte_count(shape: tuple, itemsize: int) -> int:
    """Bytes an array of `shape` needs, in Python integers (no overflow, whatever a header claims)."""
    count = itemsize
    for dim in shape:
        count *= dim
    return count


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


@dataclasses.dataclass(frozen=True)
class IdxHeader:
    """What an IDX file's header announces, and where its data starts."""

    shape: tuple
    dtype: np.dtype
    offset: int

    @property
    def nbytes(self) -> int:
        return _byte_count(self.shape, self.dtype.itemsize)


def _open_idx(path: Path):
    """(stream, the most data bytes the file can hold): gzip streams inflate at most DEFLATE_MAX_RATIO-fold."""
    size = path.stat().st_size
    with open(path, "rb") as file:
        gzipped = file.read(2) == b"\x1f\x8b"
    if gzipped:
        return gzip.open(path, "rb"), size * DEFLATE_MAX_RATIO
    return open(path, "rb"), size


def _parse_idx_header(stream, path: Path, expected_ndim: int | None) -> IdxHeader:
    magic = stream.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_DTYPES:
        raise InvalidInputError(
            f"{path} is not an IDX file (bad magic number {magic.hex() or 'none'}; expected 0000 08 01 for "
            "labels or 0000 08 03 for images)."
        )
    ndim = magic[3]
    if expected_ndim is not None and ndim != expected_ndim:
        raise InvalidInputError(f"{path} holds a {ndim}-D IDX array; expected {expected_ndim}-D.")
    dims = stream.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise InvalidInputError(f"{path} is truncated: its IDX header is incomplete. Download the file again.")
    shape = tuple(int.from_bytes(dims[4 * i: 4 * i + 4], "big") for i in range(ndim))
    return IdxHeader(shape, np.dtype(_IDX_DTYPES[magic[2]]), 4 + 4 * ndim)


@contextlib.contextmanager
def _idx_stream(path: Path):
    """Yields (stream, the most data bytes the file can hold); damage met while reading it (a bad gzip
    stream, an I/O error) becomes InvalidInputError naming the file."""
    try:
        stream, capacity = _open_idx(path)
        with stream:
            yield stream, capacity
    except InvalidInputError:
        raise
    except _CORRUPT_ERRORS as error:
        raise InvalidInputError(
            f"{path} is not a readable IDX file (truncated or corrupt?): {type(error).__name__}: {error}"
        ) from None


def _checked_header(stream, capacity: int, path: Path, expected_ndim: int | None) -> IdxHeader:
    """The header at the start of `stream`, refused when it announces more data than the file can hold."""
    header = _parse_idx_header(stream, path, expected_ndim)
    if header.nbytes > capacity - header.offset:
        raise InvalidInputError(
            f"{path} is truncated or crafted: its header announces shape {header.shape} ({header.nbytes} bytes of "
            f"data), more than a {path.stat().st_size}-byte file can hold. Download the file again."
        )
    return header


def read_idx_header(path, *, expected_ndim: int | None = None) -> IdxHeader:
    """Reads only the header of an IDX file (gzipped or not) and checks that the file can hold the data it
    announces; nothing of the announced size is read or allocated.

    Raises:
        InvalidInputError: bad magic number, wrong number of dimensions, or more data announced than the file
            can hold (a truncated or crafted file).
    """
    path = Path(path)
    with _idx_stream(path) as (stream, capacity):
        return _checked_header(stream, capacity, path, expected_ndim)


def read_idx(path, *, expected_ndim: int | None = None) -> np.ndarray:
    """Reads one IDX file (gzipped or not) and returns its array.

    The header is checked against the file's size first, then the data is read in chunks from the same
    stream, so memory never exceeds what the file really holds.

    Raises:
        InvalidInputError: bad magic number, wrong number of dimensions, or a size that does not match the
            header (a truncated or crafted file).
    """
    path = Path(path)
    with _idx_stream(path) as (stream, capacity):
        header = _checked_header(stream, capacity, path, expected_ndim)
        data = _read_exactly(stream, header.nbytes, source=str(path), what=f"shape {header.shape}")
    array = np.frombuffer(data, dtype=header.dtype).reshape(header.shape)
    return array.astype(header.dtype.newbyteorder("="), copy=False)


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
    """Reads the four IDX files found by `find_idx_files`: returns (x_train, y_train, x_test, y_test).

    All four headers are read and compared first (image and label counts, unsigned bytes), so a file announcing
    more labels than there are images is refused before any data is read.
    """
    headers = {key: read_idx_header(path, expected_ndim=3 if key.startswith("x") else 1)
               for key, path in files.items()}
    for key, header in headers.items():
        if header.dtype != np.uint8:
            raise InvalidInputError(f"{files[key]} holds {header.dtype} values; expected unsigned bytes.")
    for split in ("train", "test"):
        images, labels = headers[f"x_{split}"].shape[0], headers[f"y_{split}"].shape[0]
        if images != labels:
            raise InvalidInputError(
                f"{files[f'x_{split}']} has {images} images but {files[f'y_{split}']} has {labels} labels: one "
                "of them is damaged or from another dataset. Download the files again."
            )
    arrays = {key: read_idx(path, expected_ndim=3 if key.startswith("x") else 1) for key, path in files.items()}
    return (arrays["x_train"][..., None], arrays["y_train"], arrays["x_test"][..., None], arrays["y_test"])


# ----------------------------------------------------------------------------------------------------- npz

_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _read_npy_header(member, source: str) -> tuple:
    """(shape, fortran_order, dtype) of a .npy stream, through numpy's header readers (never its pickle path)."""
    try:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(member)
        if version == (2, 0):
            return np.lib.format.read_array_header_2_0(member)
    except (*_CORRUPT_ERRORS, SyntaxError, tokenize.TokenError) as error:
        raise InvalidInputError(
            f"{source} has a damaged .npy header ({type(error).__name__}: {error}). Download the file again."
        ) from None
    raise InvalidInputError(f"{source} is a .npy file of version {version}; expected 1.0 or 2.0 (as np.savez writes).")


def _read_npz_member(archive: zipfile.ZipFile, key: str, path: Path) -> np.ndarray:
    source = f"{path}:{key}"
    info = archive.getinfo(f"{key}.npy")
    capacity = info.compress_size * (DEFLATE_MAX_RATIO if info.compress_type != zipfile.ZIP_STORED else 1)
    with archive.open(info) as member:
        shape, fortran, dtype = _read_npy_header(member, source)
        if dtype.hasobject or dtype.kind not in "uib":
            raise InvalidInputError(f"{source} holds {dtype} values; expected integer pixels and labels (no objects).")
        if len(shape) > 4 or any(type(dim) is not int or dim < 0 for dim in shape):
            raise InvalidInputError(f"{source} announces shape {shape}; expected (n, height, width) or (n,).")
        nbytes = _byte_count(shape, dtype.itemsize)
        available = min(info.file_size, capacity) - member.tell()
        if nbytes != available:
            raise InvalidInputError(
                f"{source} is truncated or crafted: its header announces shape {shape} ({nbytes} bytes of data) "
                f"but the member holds {available}. Download the file again."
            )
        data = _read_exactly(member, nbytes, source=source, what=f"shape {shape}")
    array = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    return array.astype(dtype.newbyteorder("="), copy=False)


def read_mnist_npz(path) -> tuple:
    """Reads Keras' `mnist.npz` (x_train, y_train, x_test, y_test) without allowing pickles.

    Each member's .npy header (shape, dtype) is checked against the member's real size before its data is read.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            missing = [key for key in _NPZ_KEYS if f"{key}.npy" not in names]
            if missing:
                raise InvalidInputError(
                    f"{path} lacks the arrays {', '.join(missing)}; expected {', '.join(_NPZ_KEYS)} (Keras' mnist.npz)."
                )
            arrays = {key: _read_npz_member(archive, key, path) for key in _NPZ_KEYS}
    except InvalidInputError:
        raise
    except _CORRUPT_ERRORS as error:
        raise InvalidInputError(
            f"{path} is not a readable .npz file (truncated or corrupt?): {type(error).__name__}: {error}"
        ) from None
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
#
# A CIFAR pickle names four things: numpy's `_reconstruct`, `ndarray` and `dtype` (the one uint8 array) and,
# when written by Python 3, `_codecs.encode` (how protocol 2 spells bytes). `SafeUnpickler` resolves each to a
# stand-in of ours that checks its arguments and the state the pickle BUILDs into it, then makes the array
# with `np.frombuffer(raw bytes).reshape(checked shape)`: numpy's own `__setstate__`, which trusts its input
# (a crafted dtype state segfaults it), is never called on anything from the file.

_PICKLE_DTYPES = frozenset({"u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "b1"})
_BYTE_ORDERS = {"|": "|", "=": "=", "<": "<", ">": ">"}
_MAX_NDIM = 8
_CIFAR_SOURCE = "https://www.cs.toronto.edu/~kriz/cifar.html"


def _as_text(value):
    return value.decode("latin1") if isinstance(value, bytes) else value


def _damaged(what: str) -> InvalidInputError:
    return InvalidInputError(f"{what}: the file is damaged or crafted. Use the original files from {_CIFAR_SOURCE}.")


class _Refusing:
    """Base of the stand-ins: a BUILD the format never applies to them is refused (no attributes to set)."""

    __slots__ = ()

    def __setstate__(self, state):
        raise _damaged(f"the pickle sets state on {type(self).__name__.strip('_')}, which CIFAR pickles never do")


class _PickledDtype(_Refusing):
    """Stands in for `numpy.dtype(name, align, copy)` + BUILD(state) of a plain integer dtype."""

    __slots__ = ("name", "dtype")

    def __init__(self, name, align=False, copy=False):
        name = _as_text(name)
        if not isinstance(name, str) or name not in _PICKLE_DTYPES:
            raise _damaged(f"the pickle asks for numpy dtype {str(name)[:40]!r}; CIFAR pickles hold only uint8")
        self.name, self.dtype = name, None

    def __setstate__(self, state):
        # numpy's dtype state for a plain type: (version, byte order, subarray, names, fields, elsize, alignment,
        # flags) with version 3 or 4 (4 adds metadata), None, None, None, -1, -1 and 0.
        if self.dtype is not None:
            raise _damaged("the pickle sets a numpy dtype's state twice")
        if not isinstance(state, tuple) or len(state) not in (8, 9) or state[0] not in (3, 4):
            raise _damaged(f"the pickle holds a malformed numpy dtype state ({_describe(state)})")
        order = _as_text(state[1])
        if (not isinstance(order, str) or order not in _BYTE_ORDERS or state[2:5] != (None, None, None)
                or state[5:7] != (-1, -1) or type(state[7]) is not int or (len(state) == 9 and state[8] is not None)):
            raise _damaged(f"the pickle holds a malformed numpy dtype state ({_describe(state)})")
        dtype = np.dtype(self.name)
        self.dtype = dtype if order in "|=" or dtype.itemsize == 1 else dtype.newbyteorder(order)


class _PickledArray(_Refusing):
    """Stands in for `numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')` + BUILD(state)."""

    __slots__ = ("array",)

    def __init__(self):
        self.array = None

    def __setstate__(self, state):
        # numpy's ndarray state: (version 1, shape, dtype, is_fortran, raw data bytes).
        if self.array is not None:
            raise _damaged("the pickle sets an array's state twice")
        if not isinstance(state, tuple) or len(state) != 5 or state[0] != 1:
            raise _damaged(f"the pickle holds a malformed numpy array state ({_describe(state)})")
        _, shape, dtype, fortran, raw = state
        if (not isinstance(shape, tuple) or len(shape) > _MAX_NDIM
                or any(type(dim) is not int or dim < 0 for dim in shape)):
            raise _damaged(f"the pickle holds an array of shape {_describe(shape)}")
        if not isinstance(dtype, _PickledDtype) or dtype.dtype is None:
            raise _damaged(f"the pickle holds an array of dtype {_describe(dtype)}")
        if type(fortran) not in (bool, int) or not isinstance(raw, bytes):
            raise _damaged("the pickle holds a malformed numpy array state (order flag or data)")
        nbytes = _byte_count(shape, dtype.dtype.itemsize)
        if nbytes != len(raw):
            raise _damaged(f"an array announces shape {shape} ({nbytes} bytes) but the pickle holds {len(raw)} bytes")
        self.array = np.frombuffer(raw, dtype=dtype.dtype).reshape(shape, order="F" if fortran else "C")


class _NdarrayType(_Refusing):
    """Stands in for `numpy.ndarray`, which CIFAR pickles only pass to `_reconstruct`."""

    __slots__ = ()


_NDARRAY = _NdarrayType()


class _Call(_Refusing):
    """A callable stand-in (an instance, so NEWOBJ, which needs a class, cannot use it)."""

    __slots__ = ("function",)

    def __init__(self, function):
        self.function = function

    def __call__(self, *args):
        return self.function(*args)


def _reconstruct(subtype, shape, code):
    if subtype is not _NDARRAY or shape != (0,) or _as_text(code) != "b":
        raise _damaged("the pickle calls numpy's _reconstruct with unexpected arguments")
    return _PickledArray()


def _scalar(dtype, raw):
    """numpy.core.multiarray.scalar(dtype, raw bytes) of an integer: returned as a Python int."""
    if (not isinstance(dtype, _PickledDtype) or dtype.dtype is None or not isinstance(raw, bytes)
            or len(raw) != dtype.dtype.itemsize):
        raise _damaged("the pickle holds a malformed numpy scalar")
    return int(np.frombuffer(raw, dtype=dtype.dtype)[0])


def _latin1_encode(text, encoding="latin1", errors="strict"):
    """`_codecs.encode` as protocol-2 pickles of `bytes` use it, limited to latin-1 (no codec lookups)."""
    if _as_text(encoding) not in ("latin1", "latin-1") or not isinstance(text, str):
        raise UnsafeFileError(f"A pickle asked to encode with {str(encoding)[:40]!r}; CIFAR pickles only use latin1.")
    return text.encode("latin1")


def _describe(value, limit: int = 60) -> str:
    """A short description of an unpickled value for messages: its type and, for scalars, a clipped repr (never
    the repr of a container, which shared references can make astronomically long)."""
    if isinstance(value, (bytes, str, int, float, bool)) or value is None:
        text = repr(value)
        return text if len(text) <= limit else text[:limit] + "..."
    if isinstance(value, (list, tuple, dict)):
        return f"a {type(value).__name__} of {len(value)} items"
    return f"a {type(value).__name__.strip('_')}"


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the names found in the CIFAR python pickles, to checking stand-ins.

    `find_class` is the only way a pickle can reach a callable, so refusing every other name means a
    crafted pickle cannot run code: loading it raises `UnsafeFileError` before any call happens. The names it
    does allow resolve to the stand-ins above, never to numpy's own classes, so no crafted state reaches numpy.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _Call(_reconstruct),
        ("numpy._core.multiarray", "_reconstruct"): _Call(_reconstruct),
        ("numpy.core.multiarray", "scalar"): _Call(_scalar),
        ("numpy._core.multiarray", "scalar"): _Call(_scalar),
        ("numpy", "ndarray"): _NDARRAY,
        ("numpy", "dtype"): _Call(_PickledDtype),
        ("_codecs", "encode"): _Call(_latin1_encode),  # how Python 3 writes `bytes` at protocol 2
    }

    def __init__(self, file, *, source="pickle"):
        super().__init__(file, encoding="bytes")
        self._source = source

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise UnsafeFileError(
                f"{self._source} is not a plain CIFAR pickle: it asks for {module}.{name}, which could run code "
                f"when loaded. Refusing to load it; use the original files from {_CIFAR_SOURCE}."
            )
        return self.ALLOWED[(module, name)]

    def persistent_load(self, pid):
        raise UnsafeFileError(f"{self._source} uses persistent ids, which CIFAR pickles never do; refusing it.")


def _resolve_arrays(value):
    """The unpickled value with its (top-level or dict-value) stand-in arrays replaced by the numpy arrays."""
    if isinstance(value, _PickledArray):
        if value.array is None:
            raise _damaged("the pickle holds an array whose data is missing")
        return value.array
    if type(value) is dict:
        return {key: _resolve_arrays(item) if isinstance(item, _PickledArray) else item for key, item in value.items()}
    return value


# The opcodes a data pickle (protocols 0-4) may use. Left out: persistent ids, extension registry codes and the
# class-building opcodes (INST, OBJ, NEWOBJ, NEWOBJ_EX), out-of-band buffers and BYTEARRAY8.
_DATA_OPCODES = frozenset({
    "PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK", "DUP", "NONE", "NEWTRUE", "NEWFALSE",
    "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT",
    "STRING", "BINSTRING", "SHORT_BINSTRING", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8",
    "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8",
    "EMPTY_LIST", "APPEND", "APPENDS", "LIST", "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3",
    "EMPTY_DICT", "DICT", "SETITEM", "SETITEMS", "EMPTY_SET", "ADDITEMS", "FROZENSET",
    "GET", "BINGET", "LONG_BINGET", "PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE",
    "GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD",
})


def _check_opcodes(data: bytes, source: str) -> None:
    """Walks the pickle's opcodes (pickletools, which reads each length-prefixed argument from the data itself)
    before the C unpickler runs: that one allocates a BINBYTES8's announced length before reading it, so a
    crafted length would reach memory first. Unknown opcodes and arguments longer than the file are refused."""
    memoized = 0
    try:
        for opcode, argument, _ in pickletools.genops(data):
            if opcode.name not in _DATA_OPCODES:
                raise UnsafeFileError(
                    f"{source} is not a plain CIFAR pickle: it uses the pickle opcode {opcode.name}, which CIFAR "
                    f"pickles never do. Refusing to load it; use the original files from {_CIFAR_SOURCE}."
                )
            if opcode.name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
                # Picklers number memo entries 0, 1, 2, ...; the C unpickler sizes its memo table by the largest
                # index, so a crafted 2**32 would allocate gigabytes.
                if opcode.name != "MEMOIZE" and not 0 <= int(argument) <= 2 * memoized + 16:
                    raise InvalidInputError(
                        f"{source} is not a readable CIFAR pickle: it stores memo entry {argument} after "
                        f"{memoized} entries (damaged or crafted). Use the original files from {_CIFAR_SOURCE}."
                    )
                memoized += 1
    except ValueError as error:  # pickletools' word for a truncated argument or an unknown opcode
        raise InvalidInputError(
            f"{source} is not a readable CIFAR pickle (truncated or corrupt?): {str(error)[:200]}. Use the original "
            f"files from {_CIFAR_SOURCE}."
        ) from None


def safe_unpickle(data: bytes, *, source: str):
    """Unpickles `data` with `SafeUnpickler`; damaged data raises InvalidInputError naming `source`."""
    _check_opcodes(data, source)
    try:
        return _resolve_arrays(SafeUnpickler(io.BytesIO(data), source=source).load())
    except InvalidInputError as error:
        if source in str(error):
            raise
        raise type(error)(f"{source}: {error}") from None
    except _CORRUPT_ERRORS as error:
        raise InvalidInputError(
            f"{source} is not a readable CIFAR pickle (truncated or corrupt?): {type(error).__name__}: "
            f"{str(error)[:200]}. Use the original files from {_CIFAR_SOURCE}."
        ) from None


def _text_keys(value: dict) -> dict:
    """`value` with bytes keys decoded; keys of any other type are left as they are (and never sorted)."""
    return {(key.decode("utf-8", "replace") if isinstance(key, bytes) else key): item for key, item in value.items()}


def _describe_keys(value: dict) -> str:
    keys = [_describe(key, 30) for key in list(value)[:8]]
    return ", ".join(keys) + (f", ... ({len(value)} keys)" if len(value) > 8 else "") if keys else "no keys"


def _check_labels(labels, *, source: str, label_key: str, count: int) -> np.ndarray:
    """A CIFAR label list (Python ints, or a 1-D integer array) as int64, checked before numpy sees it."""
    if isinstance(labels, np.ndarray):
        if labels.ndim != 1 or labels.dtype.kind not in "ui":
            raise InvalidInputError(
                f"{source}: {label_key!r} is a {labels.dtype} array of shape {labels.shape}; expected a list of "
                f"integer class ids. Use the original files from {_CIFAR_SOURCE}."
            )
        labels = labels.tolist()
    if type(labels) not in (list, tuple):
        raise InvalidInputError(
            f"{source}: {label_key!r} is {_describe(labels)}; expected a list of integer class ids. Use the "
            f"original files from {_CIFAR_SOURCE}."
        )
    if len(labels) != count:
        raise InvalidInputError(f"{source} has {count} images but {len(labels)} labels. Use the original files "
                                f"from {_CIFAR_SOURCE}.")
    for index, label in enumerate(labels):
        if type(label) is not int or not 0 <= label < 2**31:
            raise InvalidInputError(
                f"{source}: {label_key!r}[{index}] is {_describe(label)}; expected an integer class id (0, 1, ...). "
                f"Use the original files from {_CIFAR_SOURCE}."
            )
    return np.array(labels, dtype=np.int64).reshape(count)


def parse_cifar_batch(data: bytes, *, source: str, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Returns (uint8 NHWC images, int labels) of one CIFAR batch pickle."""
    batch = safe_unpickle(data, source=source)
    if type(batch) is not dict:
        raise InvalidInputError(f"{source} is not a CIFAR batch: it holds {_describe(batch)}, not a dict. Use the "
                                f"original files from {_CIFAR_SOURCE}.")
    batch = _text_keys(batch)
    if "data" not in batch or label_key not in batch:
        raise InvalidInputError(
            f"{source} is not a CIFAR batch: expected keys 'data' and {label_key!r}, found {_describe_keys(batch)}. "
            f"Use the original files from {_CIFAR_SOURCE}."
        )
    images = batch["data"]
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != 3072:
        shape = images.shape if isinstance(images, np.ndarray) else _describe(images)
        raise InvalidInputError(f"{source}: 'data' has shape {shape}; expected (n, 3072) uint8 (32x32x3 images). "
                                f"Use the original files from {_CIFAR_SOURCE}.")
    labels = _check_labels(batch[label_key], source=source, label_key=label_key, count=len(images))
    return images.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels


def parse_cifar_meta(data: bytes, *, source: str, names_key: str) -> list[str]:
    """Returns the class names of a CIFAR metadata pickle (batches.meta or meta)."""
    meta = safe_unpickle(data, source=source)
    meta = _text_keys(meta) if type(meta) is dict else None
    if meta is None or names_key not in meta:
        raise InvalidInputError(f"{source} is not CIFAR metadata: it lacks {names_key!r}. Use the original files "
                                f"from {_CIFAR_SOURCE}.")
    names = meta[names_key]
    if type(names) not in (list, tuple) or not all(isinstance(name, (bytes, str)) for name in names):
        raise InvalidInputError(
            f"{source}: {names_key!r} is {_describe(names)}; expected a list of class names (strings). Use the "
            f"original files from {_CIFAR_SOURCE}."
        )
    return [name.decode("utf-8", "replace") if isinstance(name, bytes) else name for name in names]


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
    size = location.stat().st_size
    capacity = size * DEFLATE_MAX_RATIO  # a tar.gz member cannot inflate past this
    try:
        with tarfile.open(location, "r:*") as archive:
            for info in archive:
                base = info.name.rsplit("/", 1)[-1]
                if info.isfile() and base in members and base not in found:
                    if info.size > capacity:
                        raise InvalidInputError(
                            f"{location}:{info.name} announces {info.size} bytes, more than a {size}-byte archive "
                            "can hold: the archive is damaged or crafted. Download it again."
                        )
                    file = archive.extractfile(info)
                    found[base] = (file.read(), f"{location}:{info.name}")
    except InvalidInputError:
        raise
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
    """Reads SVHN's `train_32x32.mat` / `test_32x32.mat` (label 10 means digit 0, as tensorflow-datasets maps it).

    The variables' shapes are read first (`scipy.io.whosmat`) and checked against the file's size before loading.
    """
    path = Path(path)
    try:
        from scipy.io import loadmat, whosmat  # lazy: not a declared dependency; only SVHN .mat files need it
    except ImportError:
        raise MissingDependencyError(f"Reading {path} needs scipy: pip install scipy.") from None
    try:
        shapes = {name: shape for name, shape, _ in whosmat(path)}
        if "X" not in shapes or "y" not in shapes:
            raise InvalidInputError(f"{path} lacks the variables X and y of SVHN's cropped digits (found "
                                    f"{', '.join(sorted(shapes)[:8]) or 'none'}). Download the file again.")
        announced = _byte_count(shapes["X"], 1) + _byte_count(shapes["y"], 8)
        if len(shapes["X"]) != 4 or announced > path.stat().st_size * DEFLATE_MAX_RATIO:
            raise InvalidInputError(f"{path}: X announces shape {shapes['X']}, which a {path.stat().st_size}-byte "
                                    "file cannot hold as (32, 32, 3, n) images. Download the file again.")
        mat = loadmat(path)
        x, y = mat["X"], mat["y"]
    except InvalidInputError:
        raise
    except _CORRUPT_ERRORS as error:
        raise InvalidInputError(f"{path} is not a readable SVHN .mat file: {type(error).__name__}: {error}") from None
    if not isinstance(x, np.ndarray) or x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.dtype != np.uint8:
        raise InvalidInputError(f"{path}: X has shape {getattr(x, 'shape', None)} ({getattr(x, 'dtype', None)}); "
                                "expected (32, 32, 3, n) uint8.")
    if not isinstance(y, np.ndarray) or y.dtype.kind not in "uif" or y.size != x.shape[3]:
        raise InvalidInputError(f"{path} has {x.shape[3]} images but its labels y are {getattr(y, 'shape', None)} "
                                f"{getattr(y, 'dtype', None)}; expected {x.shape[3]} integer labels.")
    y = y.reshape(-1)
    if y.dtype.kind == "f" and not np.all((y == np.round(y)) & (y >= 0) & (y <= 10)):
        raise InvalidInputError(f"{path}: y holds non-integer labels; expected digits 1..10 (10 meaning 0).")
    y = y.astype(np.int64)
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
