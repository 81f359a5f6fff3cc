"""Data for quantization: representative (calibration) images and fine-tuning arrays, checked against the model."""

from __future__ import annotations

import numpy as np

from nin_keras.checks import check_int
from nin_keras.data.splits import as_arrays, as_splits
from nin_keras.errors import InvalidInputError
from nin_keras.models.signature import check_arrays_fit, check_data_fits

DEFAULT_REPRESENTATIVE_SAMPLES = 200


def training_arrays(model, data, *, limit: int | None = None, split: str = "train"):
    """`(images float32, labels)` from `data` (DatasetSplits: its `split`; dataset or arrays: all), checked.

    Args:
        model: the classifier the images are for.
        data: any form `nin_keras.data.as_splits` takes.
        limit: at most this many images. Defaults to all.
        split: which split of a `DatasetSplits` to read. Defaults to "train".

    Returns:
        `(images, labels)`: float32 raw pixels and int32 class ids.

    Raises:
        InvalidInputError: no data, or empty.
        IncompatibleModelError: image shape or labels that do not fit the model.
    """
    if data is None:
        raise InvalidInputError("No data given; quantization needs images drawn from the training set.")
    splits = as_splits(data, split=split)
    check_data_fits(model, splits)
    images, labels = as_arrays(splits, split=split, limit=limit)
    check_arrays_fit(model, images, labels)
    return images.astype("float32", copy=False), labels


def representative_images(model, data, *, num_samples: int = DEFAULT_REPRESENTATIVE_SAMPLES) -> np.ndarray:
    """Up to `num_samples` raw-pixel training images (float32) for calibrating full-integer quantization.

    Args:
        model: the classifier to calibrate.
        data: any form `nin_keras.data.as_splits` takes (a `DatasetSplits`: its train split).
        num_samples: at most this many images. Defaults to `DEFAULT_REPRESENTATIVE_SAMPLES`.

    Returns:
        float32 images (N, H, W, C).

    Raises:
        InvalidInputError, IncompatibleModelError: see `training_arrays`.
    """
    num_samples = check_int("num_samples", num_samples, minimum=1)
    images, _ = training_arrays(model, data, limit=num_samples)
    return images
