"""`load_dataset`: a name -> train/validation/test tf.data pipelines plus what a model needs to know."""

from __future__ import annotations

import numpy as np

from nin_keras.checks import MAX_BATCH_SIZE, MAX_SEED, check_bool, check_choice, check_float, check_int
from nin_keras.data import sources
from nin_keras.data.folder import ON_BAD_IMAGE
from nin_keras.data.pipeline import Augmentation, make_dataset, split_validation
from nin_keras.data.preprocessing import resolve_preprocessing
from nin_keras.data.splits import DatasetSplits
from nin_keras.errors import InvalidInputError


def _check_arrays(raw, name: str, num_classes: int) -> None:
    where = ", ".join(raw.files) or name
    if num_classes < 2:
        raise InvalidInputError(f"{where}: {num_classes} class; a classifier needs at least two classes.")
    for split in ("train", "test"):
        x, y = getattr(raw, f"x_{split}"), getattr(raw, f"y_{split}")
        if x.ndim != 4 or len(x) != len(y):
            raise InvalidInputError(
                f"{where}: {split} images have shape {x.shape} and labels {y.shape}; expected (n, H, W, C) and (n,)."
            )
        if len(x) == 0:
            raise InvalidInputError(f"{where}: the {split} split is empty.")
        if y.size and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            bad = y[(y < 0) | (y >= num_classes)]
            raise InvalidInputError(
                f"{where}: {split} labels must be class ids 0..{num_classes - 1} ({num_classes} classes), "
                f"found {len(bad)} outside that range (e.g. {int(bad[0])})."
            )
    if raw.x_train.shape[1:] != raw.x_test.shape[1:]:
        raise InvalidInputError(
            f"{where}: train images are {raw.x_train.shape[1:]} but test images {raw.x_test.shape[1:]}."
        )


def load_dataset(name: str, *, data_dir=None, batch_size: int = 128, validation_split: float = 0.1,
                 augment: bool = False, seed: int = 0, preprocessing=None, on_bad_image: str = "fail",
                 **options) -> DatasetSplits:
    """Loads a dataset as batched train/validation/test `tf.data` pipelines of (uint8 images, int32 labels).

    The pipelines cache the uint8 images, shuffle the training split (seeded), batch, augment (if asked, on
    the CPU in tf.data, never in the model) and prefetch, all with `tf.data.AUTOTUNE`. Pixels stay raw
    (uint8 0..255): NIN models rescale/standardise inside the model, so exported models take raw pixels.

    Args:
        name: one of `nin_keras.data.list_datasets()`: "cifar10", "cifar100", "mnist", "fashion_mnist"
            (downloaded and cached by keras.datasets; fashion_mnist is read from the system package
            dataset-fashion-mnist instead when it is installed), "svhn_cropped" (needs `pip install nin-keras[svhn]`),
            "digits" (scikit-learn's 8x8 digits, offline), "folder:PATH" (one subfolder per class) or
            "synthetic" (random images and labels, for benchmarks and smoke tests only).
        data_dir: read the original files from this folder, with no network: mnist.npz or the four IDX files
            (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz,
            t10k-labels-idx1-ubyte.gz); cifar-10-batches-py/ or cifar-10-python.tar.gz; cifar-100-python/ or
            cifar-100-python.tar.gz; SVHN's train_32x32.mat and test_32x32.mat. Keras' cache folder
            (~/.keras/datasets) works too. CIFAR pickles are read with a restricted unpickler: a pickle that
            would run code raises `UnsafeFileError`.
        batch_size: examples per batch (>= 1). Defaults to 128.
        validation_split: fraction of the training images held out (seeded, deterministic) as the
            validation split, in [0, 1); 0 gives `validation=None`. Defaults to 0.1.
        augment: the paper's augmentation on the training split: random translation (zero-pad by an eighth
            of the image side, 4 pixels for 32x32, then random crop back) and random horizontal flips (not for
            digit datasets: mnist, digits, svhn_cropped). Defaults to False.
        seed: seeds the validation split, shuffling, augmentation and synthetic data. Defaults to 0.
        preprocessing: None (default: raw uint8 pixels) or "gcn_zca", the paper's global contrast
            normalisation + ZCA whitening fitted on the training split only (validation hold-out excluded).
            Images are then float32, for a model built with `build_nin(..., preprocessing=None)`; such a
            model cannot be exported (its artifacts would need whitened input). To deploy, keep the
            whitening in the model instead: `build_nin(..., preprocessing="gcn_zca")`, then
            `adapt_whitening(model, load_dataset(name))` on the raw pixels.
        on_bad_image: folder datasets: "fail" (default) stops at the first listing of unreadable or non-image
            files, naming them; "skip" leaves them out with a warning naming them (recorded in
            `info["skipped_files"]`).
        **options: dataset options. synthetic: `input_shape` (default (32, 32, 3)), `num_classes` (10),
            `size` (training images, 1024). folder: `image_size` (default: the first image's), `color_mode`
            ("grayscale"/"rgb"/"rgba"; default grayscale if every image is, else rgb), `test_split` (0.2,
            used when PATH has no train/ and test/ subfolders).

    Returns:
        A `DatasetSplits` (train, validation, test, num_classes, class_names, input_shape, info).

    Raises:
        InvalidInputError: unknown dataset (the message lists the known ones) or a bad argument.
        MissingFileError: `data_dir` missing or lacking the expected files (named in the message).
        InvalidInputError: a truncated/corrupt file, an unreadable image, labels outside 0..num_classes-1.
        UnsafeFileError: a CIFAR pickle that would run code.
    """
    source, extra = sources.resolve(name)
    batch_size = check_int("batch_size", batch_size, minimum=1, maximum=MAX_BATCH_SIZE)
    seed = check_int("seed", seed, minimum=0, maximum=MAX_SEED)
    validation_split = check_float("validation_split", validation_split, minimum=0, maximum=1, max_inclusive=False)
    augment = check_bool("augment", augment)
    check_choice("on_bad_image", on_bad_image, ON_BAD_IMAGE)
    preprocessor = resolve_preprocessing(preprocessing)
    unknown = sorted(set(options) - set(source.options) - {"on_bad_image"})
    if unknown:
        allowed = ", ".join(source.options) or "none"
        raise InvalidInputError(f"Unknown option(s) {', '.join(unknown)} for dataset {name!r}; its options: {allowed}.")
    if "on_bad_image" in source.options:
        options["on_bad_image"] = on_bad_image

    raw = source.read(data_dir, seed, **extra, **options)
    num_classes = source.num_classes or len(raw.class_names)
    _check_arrays(raw, name, num_classes)
    if len(raw.class_names) != num_classes:
        raw.class_names = [str(i) for i in range(num_classes)]

    train_idx, val_idx = split_validation(len(raw.x_train), validation_split, seed)
    x_train, y_train = raw.x_train[train_idx], raw.y_train[train_idx]
    x_val, y_val = raw.x_train[val_idx], raw.y_train[val_idx]
    x_test, y_test = raw.x_test, raw.y_test
    input_shape = tuple(int(d) for d in x_train.shape[1:])

    info = {
        "name": name,
        "source": raw.files,
        "synthetic": False,
        "sizes": {"train": len(x_train), "validation": len(x_val), "test": len(x_test)},
        "validation_split": validation_split,
        "seed": seed,
        "batch_size": batch_size,
        "dtype": "uint8",
        "preprocessing": "none (raw uint8 pixels 0..255; the model rescales)",
        "augmentation": None,
        "horizontal_flip_ok": source.flip,  # whether a mirrored image keeps its class (recipes read it)
    }
    info.update(raw.info)
    if info["synthetic"]:
        size = "x".join(str(side) for side in input_shape)
        info["name"] = f"synthetic (random data) {size}, {num_classes} classes"

    if preprocessor is not None:
        x_train, x_test = preprocessor.fit_transform(x_train), preprocessor.transform(x_test)
        x_val = preprocessor.transform(x_val) if len(x_val) else x_val.astype(np.float32)
        info["preprocessing"] = preprocessor.describe()
        info["dtype"] = "float32"

    augmentation = Augmentation.for_images(input_shape, flip=source.flip) if augment else None
    if augmentation is not None:
        info["augmentation"] = augmentation.describe()

    train = make_dataset(x_train, y_train, batch_size=batch_size, shuffle=True, seed=seed, augmentation=augmentation)
    validation = make_dataset(x_val, y_val, batch_size=batch_size) if len(x_val) else None
    test = make_dataset(x_test, y_test, batch_size=batch_size)
    return DatasetSplits(name=name, train=train, validation=validation, test=test, num_classes=int(num_classes),
                         class_names=list(raw.class_names), input_shape=input_shape, info=info,
                         preprocessor=preprocessor)
