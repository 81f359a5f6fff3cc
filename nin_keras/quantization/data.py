"""Data for quantization: representative (calibration) images and fine-tuning batches, checked against the model."""

from __future__ import annotations

import numpy as np

from nin_keras.errors import IncompatibleModelError, InvalidInputError

DEFAULT_REPRESENTATIVE_SAMPLES = 200


def model_signature(model) -> tuple[tuple[int, int, int], int]:
    """(input_shape, num_classes) of an image classifier (Keras 3 or tf_keras)."""
    if hasattr(model, "_operations"):  # Keras 3
        from nin_keras.models import check_image_classifier

        return check_image_classifier(model)
    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    return shape, int(model.outputs[0].shape[-1])


def check_data_compatible(model, data) -> None:
    """Raises `IncompatibleModelError` when `data` and `model` disagree on image shape or classes.

    `data`: a DatasetSplits, or `(images, labels)` arrays (checked here); datasets are checked when read.
    """
    from nin_keras.data import DatasetSplits, check_compatible

    if isinstance(data, (tuple, list)) and len(data) == 2:
        check_arrays(model, data[0], data[1])
    elif isinstance(data, DatasetSplits):
        check_compatible(model, data)


def training_arrays(model, data, *, limit: int | None = None, split: str = "train"):
    """`(images float32, labels)` from `data` (DatasetSplits: its `split`; dataset or arrays: all), checked.

    Raises:
        InvalidInputError: no data, or empty.
        IncompatibleModelError: image shape or labels that do not fit the model.
    """
    from nin_keras.data.splits import as_arrays

    if data is None:
        raise InvalidInputError("No data given; quantization needs images drawn from the training set.")
    check_data_compatible(model, data)
    images, labels = as_arrays(data, split=split, limit=limit)
    check_arrays(model, images, labels)
    return images.astype("float32", copy=False), labels


def check_arrays(model, images, labels=None) -> None:
    input_shape, num_classes = model_signature(model)
    images = np.asarray(images)
    if images.ndim != 4 or tuple(images.shape[1:]) != input_shape:
        raise IncompatibleModelError(
            f"Data images have shape {tuple(images.shape[1:]) if images.ndim else images.shape} but the model "
            f"takes {input_shape} (height, width, channels). Use a dataset of that shape, or a model built "
            f"for it: build_nin(num_classes=..., input_shape={tuple(images.shape[1:])})."
        )
    if len(images) == 0:
        raise InvalidInputError("The data holds no images.")
    if labels is None:
        return
    labels = np.asarray(labels)
    if labels.ndim == 2:  # one-hot
        if labels.shape[1] != num_classes:
            raise IncompatibleModelError(
                f"Data labels have {labels.shape[1]} classes (one-hot) but the model predicts {num_classes}."
            )
        return
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise IncompatibleModelError(
            f"Data labels range over {int(labels.min())}..{int(labels.max())} but the model predicts "
            f"{num_classes} classes (0..{num_classes - 1}). Build the model with num_classes="
            f"{int(labels.max()) + 1} or use the matching dataset."
        )


def representative_images(model, data, *, num_samples: int = DEFAULT_REPRESENTATIVE_SAMPLES) -> np.ndarray:
    """Up to `num_samples` raw-pixel training images (float32) for calibrating full-integer quantization."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise InvalidInputError(f"num_samples must be a positive integer; received {num_samples!r}.")
    images, _ = training_arrays(model, data, limit=num_samples)
    return images
