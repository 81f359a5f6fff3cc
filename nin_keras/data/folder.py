"""`folder:PATH` datasets: one subfolder per class, read with `keras.utils.image_dataset_from_directory`.

Layout (Keras' own): `PATH/<class name>/<image files>`; class ids follow the sorted subfolder names. If
PATH holds `train/` and `test/` folders, each laid out that way, they are the train and test splits;
otherwise a fixed (seed 0) `test_split` fraction of the images is held out as the test split, so runs with
different seeds are compared on the same test images.

Every file is decoded once before loading: a file that is not an image, or that cannot be decoded, is
named. With `on_bad_image="fail"` (default) loading stops with `InvalidInputError` listing them; with
"skip" they are left out, a warning names them, and `info["skipped_files"]` records them. Never silent.
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from nin_keras.checks import check_choice, check_float
from nin_keras.data.formats import RawData
from nin_keras.data.pipeline import split_validation
from nin_keras.errors import InvalidInputError, MissingFileError, NotAFolderError
from nin_keras.process_state import silenced_native_stderr

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")  # what image_dataset_from_directory reads
ON_BAD_IMAGE = ("fail", "skip")
COLOR_MODES = {"grayscale": 1, "rgb": 3, "rgba": 4}
_TEST_SPLIT_SEED = 0


def _class_dirs(root: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))


def _list_files(root: Path, classes: list[str]) -> list[tuple[Path, int]]:
    files = []
    for label, name in enumerate(classes):
        for dirpath, dirnames, filenames in os.walk(root / name):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for filename in sorted(filenames):
                if not filename.startswith("."):
                    files.append((Path(dirpath) / filename, label))
    return files


def _check_images(files, channels: int) -> tuple[list, list, list]:
    """Decodes every file: returns (good files, [(file, reason)] bad ones, native channel counts)."""
    good, bad, native_channels = [], [], []
    for path, label in files:
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            bad.append((path, f"not an image file (allowed: {', '.join(IMAGE_EXTENSIONS)})"))
            continue
        try:
            # A failed decode also logs a C++ warning; the CLI wants only our one-line message.
            with silenced_native_stderr():
                image = tf.io.decode_image(path.read_bytes(), channels=channels, expand_animations=False)
        except (OSError, tf.errors.OpError) as error:
            reason = getattr(error, "message", None) or str(error)
            reason = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", reason)  # TF's internal op path
            bad.append((path, f"cannot be decoded ({reason.splitlines()[0][:120]})"))
            continue
        good.append((path, label, tuple(int(d) for d in image.shape)))
        native_channels.append(int(image.shape[-1]))
    return good, bad, native_channels


def _report_bad(bad, on_bad_image: str, root: Path) -> list[str]:
    if not bad:
        return []
    listing = "; ".join(f"{path}: {reason}" for path, reason in bad[:10])
    more = f" (and {len(bad) - 10} more)" if len(bad) > 10 else ""
    if on_bad_image == "fail":
        raise InvalidInputError(
            f"{len(bad)} unreadable or non-image file(s) in {root}: {listing}{more}. Remove them, or skip them with "
            "on_bad_image='skip'."
        )
    warnings.warn(f"Skipping {len(bad)} unreadable or non-image file(s) in {root}: {listing}{more}.", stacklevel=4)
    return [str(path) for path, _ in bad]


def _load_with_keras(root: Path, classes, good, image_size, color_mode) -> tuple[np.ndarray, np.ndarray]:
    """Loads `good` files through image_dataset_from_directory (from a mirror of links when some were left out)."""
    def load(directory):
        dataset = keras.utils.image_dataset_from_directory(
            str(directory), labels="inferred", label_mode="int", class_names=list(classes), color_mode=color_mode,
            batch_size=None, image_size=tuple(image_size), shuffle=False, interpolation="bilinear", verbose=False,
        )
        images, labels = [], []
        for x, y in dataset.batch(256).as_numpy_iterator():
            images.append(np.clip(np.rint(x), 0, 255).astype(np.uint8))
            labels.append(y.astype(np.int64))
        if not images:
            return np.zeros((0, *image_size, COLOR_MODES[color_mode]), np.uint8), np.zeros((0,), np.int64)
        return np.concatenate(images), np.concatenate(labels)

    all_files = _list_files(root, classes)
    if len(good) == len(all_files):
        return load(root)
    with tempfile.TemporaryDirectory(prefix="nin_keras_folder_") as mirror:
        for name in classes:
            os.makedirs(os.path.join(mirror, name))
        for index, (path, label, _) in enumerate(good):
            link = os.path.join(mirror, classes[label], f"{index:09d}{path.suffix.lower()}")
            os.symlink(path.resolve(), link)
        return load(mirror)


def _scan(root: Path, on_bad_image: str, color_mode: str | None):
    if root.exists() and not root.is_dir():
        raise NotAFolderError(
            f"Image folder {root} is a file, not a folder (expected {root}/<class name>/<images>).")
    if not root.is_dir():
        raise MissingFileError(f"Image folder {root} does not exist (expected {root}/<class name>/<images>).")
    classes = _class_dirs(root)
    if not classes:
        raise InvalidInputError(
            f"Image folder {root} has no class subfolders; expected {root}/<class name>/<image files> "
            f"({', '.join(IMAGE_EXTENSIONS)})."
        )
    if len(classes) < 2:  # a one-class "classifier" scores 100% by always answering that class
        raise InvalidInputError(
            f"Image folder {root} has one class subfolder ({classes[0]}); a classifier needs at least two "
            f"classes: put each class's images in its own subfolder, {root}/<class name>/<image files>."
        )
    files = _list_files(root, classes)
    channels = COLOR_MODES[color_mode] if color_mode else 0
    good, bad, native = _check_images(files, channels)
    skipped = _report_bad(bad, on_bad_image, root)
    if not good:
        raise InvalidInputError(f"Image folder {root} holds no readable images in {', '.join(classes)}.")
    readable = sorted({classes[label] for _, label, _ in good})
    if len(readable) < 2:
        raise InvalidInputError(
            f"Image folder {root} has readable images only in {readable[0]} (the others were skipped); a "
            "classifier needs images of at least two classes."
        )
    return classes, good, skipped, native


def read_folder(path, *, seed: int = 0, on_bad_image: str = "fail", image_size=None, color_mode=None,
                test_split: float = 0.2) -> RawData:
    """Reads `folder:PATH` into uint8 arrays (see the module docstring)."""
    del seed  # the test hold-out is fixed; the validation split (seeded) is made by load_dataset
    check_choice("on_bad_image", on_bad_image, ON_BAD_IMAGE)
    check_choice("color_mode", color_mode, (*COLOR_MODES, None))
    test_split = check_float("test_split", test_split, minimum=0, maximum=1, min_inclusive=False, max_inclusive=False)
    root = Path(path).expanduser()
    split_dirs = root / "train", root / "test"
    has_splits = all(d.is_dir() and _class_dirs(d) for d in split_dirs)
    scans = [_scan(d, on_bad_image, color_mode) for d in (split_dirs if has_splits else (root,))]
    classes = scans[0][0]
    if has_splits and scans[1][0] != classes:
        raise InvalidInputError(
            f"{split_dirs[0]} has classes {classes} but {split_dirs[1]} has {scans[1][0]}; they must match."
        )
    native = [c for scan in scans for c in scan[3]]
    if color_mode is None:
        color_mode = "grayscale" if all(c == 1 for c in native) else "rgb"
    shapes = [shape for scan in scans for _, _, shape in scan[1]]
    chose_size = image_size is not None
    if image_size is None:
        image_size = shapes[0][:2]
    image_size = tuple(int(d) for d in image_size)
    if len(image_size) != 2 or min(image_size) < 1:
        raise InvalidInputError(f"image_size must be (height, width) with positive sizes; received {image_size!r}.")
    resized = sum(1 for shape in shapes if tuple(shape[:2]) != image_size)
    if resized and not chose_size:  # said once here, not only in config.json: some images get stretched
        warnings.warn(
            f"{resized} of {len(shapes)} images in {root} are not {image_size[0]}x{image_size[1]}, the first "
            "image's size; they are resized to it. Pass image_size=(height, width) to choose the size.",
            stacklevel=3)
    arrays = [_load_with_keras(d, classes, scan[1], image_size, color_mode)
              for d, scan in zip(split_dirs if has_splits else (root,), scans)]
    skipped = [f for scan in scans for f in scan[2]]
    info = {"folder": str(root), "color_mode": color_mode, "image_size": list(image_size),
            "resized_images": resized, "skipped_files": skipped}
    if has_splits:
        (x_train, y_train), (x_test, y_test) = arrays
        info["test_source"] = str(split_dirs[1])
    else:
        x, y = arrays[0]
        if len(x) < 2:
            raise InvalidInputError(f"Image folder {root} holds {len(x)} image(s); need at least 2 (train and test).")
        train_idx, test_idx = split_validation(len(x), test_split, _TEST_SPLIT_SEED)
        x_train, y_train, x_test, y_test = x[train_idx], y[train_idx], x[test_idx], y[test_idx]
        info["test_source"] = f"fixed hold-out (seed {_TEST_SPLIT_SEED}) of {test_split:.0%} of the images"
    return RawData(x_train, y_train, x_test, y_test, class_names=list(classes), files=[str(root)], info=info)
