"""`check_compatible`: does a model fit a dataset (input shape and class count)?"""

from __future__ import annotations

import numpy as np

from nin_keras.data.splits import DatasetSplits
from nin_keras.errors import IncompatibleModelError


def _data_facts(data) -> tuple[tuple | None, int | None, str]:
    """(input_shape, num_classes or None, description) of a DatasetSplits, a dataset or an (images, labels) pair."""
    if isinstance(data, DatasetSplits):
        return tuple(data.input_shape), int(data.num_classes), f"dataset {data.name!r}"
    if isinstance(data, (tuple, list)) and len(data) == 2:
        images, labels = np.asarray(data[0]), np.asarray(data[1])
        classes = int(labels.max()) + 1 if labels.size else None
        return tuple(images.shape[1:]), classes, "the (images, labels) arrays"
    spec = getattr(data, "element_spec", None)
    if isinstance(spec, tuple) and len(spec) >= 2:
        shape = tuple(spec[0].shape)
        shape = shape[1:] if len(shape) == 4 else shape
        return tuple(None if d is None else int(d) for d in shape), None, "the dataset"
    raise ValueError(
        f"Expected a DatasetSplits, a tf.data.Dataset of (images, labels) or an (images, labels) tuple; "
        f"received {type(data).__name__}."
    )


def check_compatible(model, data) -> None:
    """Raises IncompatibleModelError unless `model` takes `data`'s images and predicts its classes.

    Args:
        model: a Keras image classifier ((batch, H, W, C) -> (batch, classes)).
        data: a `DatasetSplits`; also a batched `tf.data.Dataset` of (images, labels) (shape only) or an
            `(images, labels)` pair (shape, and labels below the model's class count).
    """
    from nin_keras.models import check_image_classifier

    model_shape, model_classes = check_image_classifier(model)
    data_shape, data_classes, what = _data_facts(data)
    shape_ok = len(data_shape) == 3 and all(d is None or d == m for d, m in zip(data_shape, model_shape))
    if isinstance(data, DatasetSplits):
        classes_ok = data_classes == model_classes
    else:  # labels only bound the class count from below
        classes_ok = data_classes is None or data_classes <= model_classes
    if shape_ok and classes_ok:
        return
    fmt = lambda s: "x".join("?" if d is None else str(d) for d in s)  # noqa: E731
    has = f"{fmt(data_shape)} images" + (f" and {data_classes} classes" if data_classes is not None else "")
    if not isinstance(data, DatasetSplits) and data_classes is not None:
        has = f"{fmt(data_shape)} images and labels up to {data_classes - 1}"
    fix_classes = data_classes if isinstance(data, DatasetSplits) else max(model_classes, data_classes or 0)
    fix_shape = tuple(m if d is None else d for d, m in zip(data_shape, model_shape)) if len(data_shape) == 3 \
        else model_shape
    raise IncompatibleModelError(
        f"Model {model.name!r} takes {fmt(model_shape)} images and predicts {model_classes} classes, but {what} "
        f"has {has}. Use a model built for this data: "
        f"build_nin(num_classes={fix_classes}, input_shape={fix_shape})."
    )
