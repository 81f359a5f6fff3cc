"""Where each dataset comes from: a registry of name -> `Source` (data, not if/else).

A source's `read(data_dir, seed, **options)` returns `RawData` (uint8 NHWC images, int labels, class
names). Downloads go through `keras.datasets` (cached in ~/.keras/datasets as Keras does); `data_dir`
reads the original files from a local folder instead, with no network.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from nin_keras.checks import check_int
from nin_keras.data import formats
from nin_keras.data.folder import read_folder
from nin_keras.data.formats import RawData
from nin_keras.data.pipeline import split_validation
from nin_keras.errors import InvalidInputError, MissingDependencyError, MissingFileError, NotAFolderError

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR100_CLASSES = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can "
    "castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin "
    "elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster "
    "man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck "
    "pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk "
    "skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger "
    "tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm"
).split()
DIGIT_CLASSES = [str(i) for i in range(10)]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]

SVHN_EXTRA = "pip install nin-keras[svhn]"
SYNTHETIC_DEFAULTS = {"input_shape": (32, 32, 3), "num_classes": 10, "size": 1024}


@dataclasses.dataclass(frozen=True)
class Source:
    """One dataset name.

    Attributes:
        description: one line for `list_datasets`.
        read: `read(data_dir, seed, **options) -> RawData`.
        flip: whether horizontal flips are a valid augmentation (not for digits).
        options: keyword options `load_dataset` passes through to `read`.
        num_classes: class count, when fixed (used to validate labels).
    """

    description: str
    read: Callable
    flip: bool = True
    options: tuple = ()
    num_classes: int | None = None


def _require_dir(data_dir) -> Path:
    path = Path(data_dir).expanduser()
    if not path.exists():
        raise MissingFileError(f"data_dir {path} does not exist.")
    if not path.is_dir():
        raise NotAFolderError(f"data_dir {path} is a file, not a folder: pass the folder that holds the files.")
    return path


def _download_error(name: str, expected: str, error: Exception) -> InvalidInputError:
    return InvalidInputError(
        f"Could not download or read {name} through keras.datasets ({type(error).__name__}: {error}). Check the "
        f"network, or pass data_dir= pointing at the original files: {expected}."
    )


def _keras_load(name: str, expected: str, loader: Callable):
    try:
        return loader()
    except (OSError, ValueError, EOFError) as error:
        raise _download_error(name, expected, error) from None
    except Exception as error:  # keras' get_file raises a bare Exception on URL errors
        if type(error) is Exception:
            raise _download_error(name, expected, error) from None
        raise


# --------------------------------------------------------------------------------------------- MNIST family


# Distribution packages that install a dataset's original files: name -> (package, folder it installs).
SYSTEM_PACKAGES = {"fashion_mnist": ("dataset-fashion-mnist", Path("/usr/share/datasets/fashion-mnist"))}


def _from_system_package(name: str, class_names: list) -> RawData | None:
    """The dataset's files as a system package installed them (same files keras.datasets downloads), or None."""
    if name not in SYSTEM_PACKAGES:
        return None
    package, folder = SYSTEM_PACKAGES[name]
    idx = formats.find_idx_files(folder) if folder.is_dir() else None
    if idx is None:
        return None
    arrays = formats.read_idx_dataset(idx)
    return RawData(*arrays, class_names=list(class_names), files=[str(p) for p in idx.values()],
                   info={"system_package": package})


def _mnist_like(name: str, npz: bool, subdirs: tuple, keras_module: str, class_names: list) -> Callable:
    expected = ("mnist.npz or " if npz else "") + "the four IDX files " + ", ".join(
        f"{stem}.gz" for stem in formats.IDX_FILES.values())
    if name in SYSTEM_PACKAGES:
        package, folder = SYSTEM_PACKAGES[name]
        expected += f" (or install the system package {package}, e.g. apt-get install {package}, into {folder})"

    def read(data_dir, seed, **_):
        if data_dir is None:
            installed = _from_system_package(name, class_names)  # no network needed: prefer it
            if installed is not None:
                return installed
            module = getattr(keras.datasets, keras_module)
            (x_train, y_train), (x_test, y_test) = _keras_load(name, expected, module.load_data)
            return RawData(x_train[..., None], y_train, x_test[..., None], y_test, class_names=list(class_names),
                           files=[f"keras.datasets.{keras_module}"])
        root = _require_dir(data_dir)
        for folder in (root, *(root / sub for sub in subdirs)):
            if npz and (folder / "mnist.npz").is_file():
                arrays = formats.read_mnist_npz(folder / "mnist.npz")
                return RawData(*arrays, class_names=list(class_names), files=[str(folder / "mnist.npz")])
            if npz and folder.is_file() and folder.suffix == ".npz":
                return RawData(*formats.read_mnist_npz(folder), class_names=list(class_names), files=[str(folder)])
            if folder.is_dir():
                idx = formats.find_idx_files(folder)
                if idx is not None:
                    arrays = formats.read_idx_dataset(idx)
                    return RawData(*arrays, class_names=list(class_names), files=[str(p) for p in idx.values()])
        raise MissingFileError(
            f"data_dir {root} holds no {name} files: expected {expected} "
            f"(found: {formats.describe_dir(root) if root.is_dir() else 'a file'})."
        )

    return read


# ------------------------------------------------------------------------------------------------- CIFAR


CIFAR_ORIGIN = "https://www.cs.toronto.edu/~kriz/"  # where keras.datasets.cifar10/cifar100 download from


def _download_cifar(name: str, layout: formats.CifarLayout, expected: str) -> Path:
    """The CIFAR folder Keras' downloader left in its cache (the same file name keras.datasets uses, so either
    one's download serves the other). Only the download is Keras': `keras.datasets.cifar10.load_data` would
    read the batches with an unrestricted `pickle.load`, and a tampered cache would then run or crash; we read
    them with the checked reader, like any `data_dir`."""
    path = Path(_keras_load(name, expected, lambda: keras.utils.get_file(
        fname=f"{layout.folder}-target", origin=CIFAR_ORIGIN + layout.archive, extract=True)))
    for candidate in (path, path.parent):
        location = formats.find_cifar(candidate, layout) if candidate.is_dir() else None
        if location is not None:
            return location
    raise InvalidInputError(f"The {name} download in {path} does not hold {expected}. Delete {path} (and the "
                            "archive beside it) to download it afresh, or pass data_dir= with the original files.")


def _cifar(name: str, layout: formats.CifarLayout, class_names: list) -> Callable:
    expected = formats.cifar_expected_files(layout)

    def read(data_dir, seed, **_):
        if data_dir is None:
            return formats.read_cifar(_download_cifar(name, layout, expected), layout)
        root = _require_dir(data_dir)
        location = formats.find_cifar(root, layout)
        if location is None:
            raise MissingFileError(
                f"data_dir {root} holds no {name} files: expected {expected} "
                f"(found: {formats.describe_dir(root) if root.is_dir() else 'a file'})."
            )
        return formats.read_cifar(location, layout)

    return read


# -------------------------------------------------------------------------------------------------- SVHN


def _read_svhn(data_dir, seed, **_):
    if data_dir is not None:
        root = _require_dir(data_dir)
        mats = [root / "train_32x32.mat", root / "test_32x32.mat"]
        if all(p.is_file() for p in mats):
            (x_train, y_train), (x_test, y_test) = (formats.read_svhn_mat(p) for p in mats)
            return RawData(x_train, y_train, x_test, y_test, class_names=list(DIGIT_CLASSES),
                           files=[str(p) for p in mats])
    try:
        import tensorflow_datasets as tfds  # lazy: optional extra (nin-keras[svhn])
    except ImportError:
        raise MissingDependencyError(
            f"svhn_cropped needs tensorflow-datasets, which is not installed: {SVHN_EXTRA} "
            "(or pass data_dir holding SVHN's train_32x32.mat and test_32x32.mat)."
        ) from None
    kwargs = {"data_dir": str(data_dir), "download": False} if data_dir is not None else {}
    try:
        train, test = tfds.load("svhn_cropped", split=["train", "test"], as_supervised=True, batch_size=-1, **kwargs)
    except Exception as error:  # tfds raises assorted errors for missing/unprepared data
        where = f"in {data_dir} (a tensorflow-datasets data_dir)" if data_dir is not None else "through tfds"
        first_line = str(error).splitlines()[0] if str(error) else ""
        raise InvalidInputError(
            f"Could not load svhn_cropped {where}: {type(error).__name__}: {first_line}. "
            "Pass data_dir holding SVHN's train_32x32.mat and test_32x32.mat, or a prepared tfds data_dir."
        ) from None
    (x_train, y_train), (x_test, y_test) = (tfds.as_numpy(train), tfds.as_numpy(test))
    return RawData(np.asarray(x_train), np.asarray(y_train), np.asarray(x_test), np.asarray(y_test),
                   class_names=list(DIGIT_CLASSES), files=["tensorflow_datasets:svhn_cropped"])


# ------------------------------------------------------------------------------------------------ digits

DIGITS_TEST_FRACTION = 0.2


def _read_digits(data_dir, seed, **_):
    try:
        from sklearn.datasets import load_digits  # lazy: optional extra (nin-keras[demo])
    except ImportError:
        raise MissingDependencyError("The digits dataset needs scikit-learn: pip install nin-keras[demo].") from None
    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[..., None]
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = split_validation(len(images), DIGITS_TEST_FRACTION, 0)
    return RawData(images[train_idx], labels[train_idx], images[test_idx], labels[test_idx],
                   class_names=list(DIGIT_CLASSES), files=["sklearn.datasets.load_digits"],
                   info={"test_source": f"fixed hold-out (seed 0) of {DIGITS_TEST_FRACTION:.0%} of the 1797 images",
                         "pixel_scaling": "0..16 -> 0..255"})


# --------------------------------------------------------------------------------------------- synthetic


def _read_synthetic(data_dir, seed, *, input_shape=None, num_classes=None, size=None, **_):
    input_shape = tuple(SYNTHETIC_DEFAULTS["input_shape"] if input_shape is None else input_shape)
    num_classes = SYNTHETIC_DEFAULTS["num_classes"] if num_classes is None else num_classes
    size = SYNTHETIC_DEFAULTS["size"] if size is None else size
    if len(input_shape) != 3:
        raise InvalidInputError(f"synthetic input_shape must be (height, width, channels); received {input_shape!r}.")
    input_shape = tuple(check_int(f"synthetic input_shape[{i}]", d, minimum=1) for i, d in enumerate(input_shape))
    num_classes = check_int("synthetic num_classes", num_classes, minimum=1)
    size = check_int("synthetic size (training images)", size, minimum=2)
    rng = np.random.default_rng(seed)
    test_size = max(1, size // 5)
    x = rng.integers(0, 256, size=(size + test_size, *input_shape), dtype=np.uint8)
    y = rng.integers(0, num_classes, size=size + test_size).astype(np.int64)
    return RawData(x[:size], y[:size], x[size:], y[size:], class_names=[f"class_{i}" for i in range(num_classes)],
                   files=[], info={"synthetic": True,
                                   "note": "SYNTHETIC: random images and labels (no learnable signal); "
                                           "for benchmarks and smoke tests only"})


def _read_folder(data_dir, seed, *, path, **options):
    return read_folder(path, seed=seed, **options)


SOURCES: dict[str, Source] = {
    "cifar10": Source(
        "CIFAR-10: 50k/10k 32x32x3 colour images, 10 classes (keras.datasets)",
        _cifar("cifar10", formats.CIFAR10, CIFAR10_CLASSES), num_classes=10),
    "cifar100": Source(
        "CIFAR-100: 50k/10k 32x32x3 colour images, 100 fine classes (keras.datasets)",
        _cifar("cifar100", formats.CIFAR100, CIFAR100_CLASSES), num_classes=100),
    "mnist": Source(
        "MNIST: 60k/10k 28x28x1 handwritten digits, 10 classes (keras.datasets)",
        _mnist_like("mnist", True, ("mnist",), "mnist", DIGIT_CLASSES), flip=False, num_classes=10),
    "fashion_mnist": Source(
        "Fashion-MNIST: 60k/10k 28x28x1 clothing images, 10 classes (keras.datasets, or the system package "
        "dataset-fashion-mnist when installed)",
        _mnist_like("fashion_mnist", False, ("fashion-mnist", "fashion_mnist"), "fashion_mnist", FASHION_CLASSES),
        num_classes=10),
    "svhn_cropped": Source(
        f"SVHN cropped digits: 73k/26k 32x32x3, 10 classes (tensorflow-datasets: {SVHN_EXTRA})",
        _read_svhn, flip=False, num_classes=10),
    "digits": Source(
        "scikit-learn's bundled 8x8x1 digits (1797 images, 10 classes), offline; pixels scaled to 0..255",
        _read_digits, flip=False, num_classes=10),
    "synthetic": Source(
        "SYNTHETIC random images and labels for benchmarks/smoke tests (options: input_shape, num_classes, size)",
        _read_synthetic, options=("input_shape", "num_classes", "size")),
}

# Names with an argument after a colon: prefix -> Source (the argument is passed as `path`).
PREFIX_SOURCES: dict[str, Source] = {
    "folder": Source(
        "folder:PATH: your images, one subfolder per class (Keras' image_dataset_from_directory layout); "
        "options: on_bad_image, image_size, color_mode, test_split",
        _read_folder, options=("on_bad_image", "image_size", "color_mode", "test_split")),
}


def list_datasets() -> dict[str, str]:
    """Returns the dataset names `load_dataset` knows, name -> one-line description."""
    names = {name: source.description for name, source in SOURCES.items()}
    names.update({f"{prefix}:PATH": source.description for prefix, source in PREFIX_SOURCES.items()})
    return names


def resolve(name) -> tuple[Source, dict]:
    """Returns (Source, extra read() keywords) for a dataset name; unknown names list the known ones."""
    if isinstance(name, str):
        if name in SOURCES:
            return SOURCES[name], {}
        prefix, sep, argument = name.partition(":")
        if sep and prefix in PREFIX_SOURCES:
            if not argument:
                raise InvalidInputError(f"Dataset {name!r} lacks its path: write {prefix}:PATH.")
            return PREFIX_SOURCES[prefix], {"path": argument}
    known = ", ".join(list_datasets())
    raise InvalidInputError(f"Unknown dataset {name!r}. Known datasets: {known}.")
