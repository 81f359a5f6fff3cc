"""`folder:PATH` datasets: one subfolder per class (Keras' `image_dataset_from_directory` layout).

Layout: `PATH/<class name>/<image files>`, in subfolders at any depth; class ids follow the sorted subfolder
names. If PATH holds `train/` and `test/` folders, each laid out that way, they are the train and test splits;
otherwise a fixed (seed 0) `test_split` fraction of the images is held out as the test split, so runs with
different seeds are compared on the same test images.

One listing, one reader: the files are listed once here and each is read once with
`nin_keras.data.images.read_image` (the reader `maps` uses too), so what is checked is what is trained on.

- Hidden entries (names starting with ".": macOS `._*` files, `.ipynb_checkpoints/`, `.thumbs/`) are left out
  everywhere, counted in `info["hidden_entries_ignored"]`.
- Links are followed, but a class folder that leads to PATH itself (or a folder above it), two class folders
  that overlap, a folder reached twice (a link loop) and a file reached twice are refused, naming them.
- An empty class folder is refused, naming it. So is a class name that labels.txt cannot hold (a control
  character, a line separator; see `nin_keras.export_layout.class_name_problem`).
- A file that is not an image, or that cannot be decoded, is named. With `on_bad_image="fail"` (default) loading
  stops with `InvalidInputError` listing them; with "skip" they are left out, a warning names them, and
  `info["skipped_files"]` records them. Never silent.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from nin_keras.checks import check_choice, check_float
from nin_keras.data.formats import RawData
from nin_keras.data.images import IMAGE_EXTENSIONS, ImageReadError, read_image_and_size
from nin_keras.data.pipeline import split_validation
from nin_keras.errors import InvalidInputError, MissingFileError, NotAFolderError
from nin_keras.export_layout import check_class_names

ON_BAD_IMAGE = ("fail", "skip")
COLOR_MODES = {"grayscale": 1, "rgb": 3, "rgba": 4}
_TEST_SPLIT_SEED = 0


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _class_dirs(root: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not _is_hidden(entry.name))


def _within(inner: str, outer: str) -> bool:
    """Whether real path `inner` is `outer` or inside it."""
    return inner == outer or inner.startswith(outer.rstrip(os.sep) + os.sep)


class _Listing:
    """The image files of one folder dataset (one split): [(path, label)], refusing loops and duplicates."""

    def __init__(self, root: Path, classes: list[str]):
        self.root, self.files, self.hidden = root, [], 0
        self._root_real = os.path.realpath(root)
        self._dirs: dict[str, Path] = {}  # real path -> the path it was first reached by
        self.real_files: dict[str, tuple[Path, int]] = {}  # real path -> (the path it was first listed by, label)
        for label, name in enumerate(classes):
            files_before, hidden_before = len(self.files), self.hidden
            self._walk(root / name, label)
            if len(self.files) == files_before:
                hidden = " (hidden ones are ignored)" if self.hidden > hidden_before else ""
                raise InvalidInputError(
                    f"Class folder {root / name} holds no files{hidden}; every subfolder of {root} is a class. "
                    f"Remove it, or add images of class {name!r}.")

    def _enter(self, directory: Path) -> None:
        real = os.path.realpath(directory)
        if _within(self._root_real, real):
            raise InvalidInputError(
                f"{directory} leads to {real}, which holds the image folder {self.root} itself (a link to it or "
                "above it): every image would be read again under another class. Remove the link.")
        if real in self._dirs:
            raise InvalidInputError(
                f"{directory} and {self._dirs[real]} are the same folder ({real}; a link loop, a second link to it, "
                "or a class folder inside another): its images would be read twice. Remove the link or move the "
                "folder so each image is in one class.")
        self._dirs[real] = directory

    def _walk(self, top: Path, label: int) -> None:
        self._enter(top)
        for dirpath, dirnames, filenames in os.walk(top, followlinks=True, onerror=_raise):
            real_dir = os.path.realpath(dirpath)
            kept = sorted(d for d in dirnames if not _is_hidden(d))
            self.hidden += len(dirnames) - len(kept)
            for name in kept:  # checked before os.walk descends, so a link loop never recurses
                self._enter(Path(dirpath) / name)
            dirnames[:] = kept
            for filename in sorted(filenames):
                if _is_hidden(filename):
                    self.hidden += 1
                    continue
                path = Path(dirpath) / filename
                real = os.path.realpath(path) if os.path.islink(path) else os.path.join(real_dir, filename)
                if real in self.real_files:
                    first, first_label = self.real_files[real]
                    raise InvalidInputError(
                        f"{path} and {first} are the same file ({real}); it would be read twice"
                        f"{'' if first_label == label else ', as two classes'}. Remove one of them.")
                self.real_files[real] = (path, label)
                self.files.append((path, label))


def _raise(error: OSError) -> None:
    raise error  # a subfolder that cannot be listed is not left out silently (os.walk's default)


def _read_images(files, channels: int | None, size) -> tuple[list, list, tuple | None, int]:
    """Reads each file once: (readable [(pixels, label)], bad [(file, reason)], size, how many were resized).

    With `size` None, the first readable image sets it; the rest are resized to it.
    """
    good, bad, resized = [], [], 0
    for path, label in files:
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            bad.append((path, f"not an image file (allowed: {', '.join(IMAGE_EXTENSIONS)})"))
            continue
        try:
            pixels, original_size = read_image_and_size(path, channels, size)
        except ImageReadError as error:
            bad.append((path, error.reason))
            continue
        size = size or original_size
        resized += original_size != tuple(size)
        good.append((pixels, label))
    return good, bad, size, resized


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


def _list_split(root: Path) -> tuple[list[str], _Listing]:
    """The classes and files of one split folder, every structural check made before any image is read."""
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
    check_class_names(classes, where=f"a subfolder of {root}")
    return classes, _Listing(root, classes)


def _read_split(root: Path, classes, listing: _Listing, on_bad_image: str, channels, size):
    """(images, labels, skipped files, size, resized count) of one split."""
    good, bad, size, resized = _read_images(listing.files, channels, size)
    skipped = _report_bad(bad, on_bad_image, root)
    if not good:
        raise InvalidInputError(f"Image folder {root} holds no readable images in {', '.join(classes)}.")
    readable = sorted({classes[label] for _, label in good})
    if len(readable) < 2:
        raise InvalidInputError(
            f"Image folder {root} has readable images only in {readable[0]} (the others were skipped); a "
            "classifier needs images of at least two classes."
        )
    return [pixels for pixels, _ in good], np.array([label for _, label in good], np.int64), skipped, size, resized


def _check_size(image_size):
    if image_size is None:
        return None
    try:
        image_size = tuple(int(d) for d in image_size)
    except (TypeError, ValueError):
        image_size = None
    if image_size is None or len(image_size) != 2 or min(image_size) < 1:
        raise InvalidInputError(f"image_size must be (height, width) with positive sizes; received {image_size!r}.")
    return image_size


def _check_splits_apart(split_dirs, listings) -> None:
    shared = listings[0].real_files.keys() & listings[1].real_files.keys()
    if shared:
        real = sorted(shared)[0]
        raise InvalidInputError(
            f"{len(shared)} file(s) are in both {split_dirs[0]} and {split_dirs[1]} (e.g. {real}, through a link): "
            "a test image seen in training makes the test score meaningless. Keep the splits apart.")


def read_folder(path, *, seed: int = 0, on_bad_image: str = "fail", image_size=None, color_mode=None,
                test_split: float = 0.2) -> RawData:
    """Reads `folder:PATH` into uint8 arrays (see the module docstring)."""
    del seed  # the test hold-out is fixed; the validation split (seeded) is made by load_dataset
    check_choice("on_bad_image", on_bad_image, ON_BAD_IMAGE)
    check_choice("color_mode", color_mode, (*COLOR_MODES, None))
    test_split = check_float("test_split", test_split, minimum=0, maximum=1, min_inclusive=False, max_inclusive=False)
    size = chosen_size = _check_size(image_size)
    root = Path(path).expanduser()
    split_dirs = root / "train", root / "test"
    has_splits = all(d.is_dir() and _class_dirs(d) for d in split_dirs)
    roots = split_dirs if has_splits else (root,)
    listed = [_list_split(d) for d in roots]
    classes = listed[0][0]
    if has_splits:
        if listed[1][0] != classes:
            raise InvalidInputError(
                f"{split_dirs[0]} has classes {classes} but {split_dirs[1]} has {listed[1][0]}; they must match.")
        _check_splits_apart(split_dirs, [listing for _, listing in listed])
    channels = COLOR_MODES[color_mode] if color_mode else None
    splits, skipped, resized = [], [], 0
    for d, (_, listing) in zip(roots, listed):
        images, labels, split_skipped, size, split_resized = _read_split(d, classes, listing, on_bad_image,
                                                                         channels, size)
        splits.append((images, labels))
        skipped += split_skipped
        resized += split_resized
    if color_mode is None:  # each image read as it is: grayscale only if all are
        color_mode = "grayscale" if all(p.shape[-1] == 1 for images, _ in splits for p in images) else "rgb"
    depth = COLOR_MODES[color_mode]
    arrays = [(np.stack([np.repeat(p, depth, axis=-1) if p.shape[-1] != depth else p for p in images]), labels)
              for images, labels in splits]
    total = sum(len(labels) for _, labels in splits)
    if resized and chosen_size is None:  # said once here, not only in config.json: some images get stretched
        warnings.warn(
            f"{resized} of {total} images in {root} are not {size[0]}x{size[1]}, the first "
            "image's size; they are resized to it. Pass image_size=(height, width) to choose the size.",
            stacklevel=3)
    hidden = sum(listing.hidden for _, listing in listed)
    info = {"folder": str(root), "color_mode": color_mode, "image_size": list(size),
            "resized_images": resized, "skipped_files": skipped, "hidden_entries_ignored": hidden}
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
