"""What a classifier takes and gives, and whether a dataset fits it: the one home of these checks.

- `check_image_classifier(model)`: (input_shape, num_classes) of a one-input, one-output image classifier
  (Keras 3 or tf_keras), or a clear error.
- `outputs_probabilities(model)`: whether its outputs are probabilities (softmax/sigmoid) or logits.
- `check_data_fits(model, data)`: raises `IncompatibleModelError` when a dataset's image shape or labels do
  not fit the model. Training, quantization, export and evaluation all call it before any slow work.
- `check_pixels(images)` (from `nin_keras.data.splits`, which checks arrays with it): refuses pixels no model
  can classify (complex numbers, NaN, infinity), which artifacts would otherwise answer each in their own way.
"""

from __future__ import annotations

import keras
import numpy as np

from nin_keras.data.splits import as_splits, check_pixels
from nin_keras.errors import IncompatibleModelError, InvalidInputError

# Final activations whose outputs are probabilities; every other (linear, None) means logits.
PROBABILITY_ACTIVATIONS = ("softmax", "sigmoid")


def check_image_classifier(model) -> tuple[tuple[int, int, int], int]:
    """Checks that `model` maps (batch, H, W, C) images to (batch, classes); returns (input_shape, classes).

    Works for Keras 3 and tf_keras models (the QAT twin).

    Raises:
        IncompatibleModelError: the model has several inputs/outputs or other shapes.
    """
    inputs, outputs = model.inputs, model.outputs
    if len(inputs) != 1 or len(outputs) != 1:
        raise IncompatibleModelError(
            f"Model {model.name!r} has {len(inputs)} inputs and {len(outputs)} outputs; expected an image "
            "classifier with one image input and one class-score output."
        )
    in_shape, out_shape = tuple(inputs[0].shape), tuple(outputs[0].shape)
    if len(in_shape) != 4 or any(d is None for d in in_shape[1:]):
        raise IncompatibleModelError(
            f"Model {model.name!r} takes input of shape {in_shape}; expected (batch, height, width, channels) "
            "with static height, width and channels."
        )
    if len(out_shape) != 2 or out_shape[1] is None:
        raise IncompatibleModelError(
            f"Model {model.name!r} outputs shape {out_shape}; expected (batch, classes). Feature extractors "
            "(include_top=False) cannot be exported or evaluated as classifiers."
        )
    return tuple(int(d) for d in in_shape[1:]), int(out_shape[1])


def outputs_probabilities(model) -> bool:
    """True when the model's last layer ends in softmax or sigmoid (probabilities), False for logits.

    A Softmax layer counts as softmax; a layer without an activation (Dense with "linear", pooling) gives
    logits. Keras 3 and tf_keras models alike.
    """
    layer = model.layers[-1] if model.layers else None
    if layer is None:
        return False
    if type(layer).__name__ == "Softmax":
        return True
    activation = layer.get_config().get("activation")
    if isinstance(activation, dict):  # a serialized activation object
        activation = activation.get("config", {}).get("name") or activation.get("class_name")
    return str(activation).lower() in PROBABILITY_ACTIVATIONS


def has_batch_norm(model) -> bool:
    """True if any layer (nested models included) is a BatchNormalization (or the fused subclass)."""
    return any(isinstance(layer, keras.layers.BatchNormalization) for layer in model._flatten_layers())


def check_data_fits(model, data) -> None:
    """Raises IncompatibleModelError unless `model` takes `data`'s images and predicts its classes.

    Args:
        model: an image classifier ((batch, H, W, C) -> (batch, classes)), Keras 3 or tf_keras.
        data: any form `nin_keras.data.as_splits` takes: a `DatasetSplits` (shape and class count must match),
            a `tf.data.Dataset` of (images, labels) (shape, one-hot width, and its first batch: reading all
            labels would cost a pass) or an `(images, labels)` pair (shape, and every label a class id of the
            model). `as_splits` refuses 0..1 float pixels and labels that are not class ids first.

    Raises:
        IncompatibleModelError: the shapes or classes differ; the message names both and the fix.
        InvalidInputError: data of another form, or empty arrays (see `as_splits`).
    """
    model_shape, model_classes = check_image_classifier(model)
    splits = as_splits(data)
    what = {"arrays": "the arrays", "dataset": "the dataset"}.get(splits.name, f"dataset {splits.name!r}")
    _check_shape(model, splits.input_shape, what)
    label_range = (splits.info or {}).get("label_range")
    if label_range is not None:
        check_labels_fit(model.name, model_classes, label_range)
    if splits.num_classes is not None and int(splits.num_classes) != model_classes:
        raise IncompatibleModelError(
            f"Model {model.name!r} predicts {model_classes} classes but {what} has "
            f"{splits.num_classes} classes. Use a model built for this data: "
            f"build_nin(num_classes={splits.num_classes}, "
            f"input_shape={tuple(splits.input_shape)})."
        )


def check_arrays_fit(model, images, labels=None) -> None:
    """`check_data_fits` for numpy arrays: (N, H, W, C) images and class-id (or one-hot) labels."""
    _, num_classes = check_image_classifier(model)
    images = np.asarray(images)
    if images.ndim != 4:
        raise IncompatibleModelError(
            f"Images must be a 4-D array (count, height, width, channels); received shape {images.shape}."
        )
    _check_shape(model, images.shape[1:], "the arrays")
    if len(images) == 0:
        raise InvalidInputError("The data holds no images.")
    check_pixels(images)
    if labels is None:
        return
    labels = np.asarray(labels)
    if len(labels) != len(images):
        raise InvalidInputError(f"The data has {len(images)} images but {len(labels)} labels.")
    if labels.ndim == 2:  # one-hot
        if labels.shape[1] != num_classes:
            raise IncompatibleModelError(
                f"Data labels have {labels.shape[1]} classes (one-hot) but model {model.name!r} predicts "
                f"{num_classes}."
            )
        return
    check_labels_fit(model.name, num_classes, labels)


def check_labels_fit(model_name: str, num_classes: int, labels) -> None:
    """Raises IncompatibleModelError when a class id falls outside 0..num_classes-1."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        low, high = int(labels.min()), int(labels.max())
        raise IncompatibleModelError(
            f"The labels run from {low} to {high} but {model_name} predicts {num_classes} classes "
            f"(ids 0..{num_classes - 1}). Use data with {num_classes} classes, or a model built with "
            f"num_classes={high + 1}."
        )


def _check_shape(model, data_shape, what: str) -> None:
    model_shape, model_classes = check_image_classifier(model)
    data_shape = tuple(None if d is None else int(d) for d in data_shape)
    if len(data_shape) == 3 and all(d is None or d == m for d, m in zip(data_shape, model_shape)):
        return
    fmt = lambda s: "x".join("?" if d is None else str(d) for d in s)  # noqa: E731
    fix = (tuple(m if d is None else d for d, m in zip(data_shape, model_shape)) if len(data_shape) == 3
           else model_shape)
    raise IncompatibleModelError(
        f"Model {model.name!r} takes {fmt(model_shape)} images but got {fmt(data_shape)} images from {what} "
        f"(height x width x channels). Use a model built for this data: build_nin(num_classes={model_classes}, "
        f"input_shape={fix})."
    )
