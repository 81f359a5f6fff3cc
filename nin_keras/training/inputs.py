"""What `fit` reads: the data `train` accepts, adapted to train/validation/test pipelines.

`adapt_data` takes a `DatasetSplits`, an (images, labels) pair of arrays or a batched tf.data.Dataset of
(images, labels); `for_fit` then adds the recipe's augmentation, fixes the steps per epoch, one-hot encodes
labels for label smoothing and shards the pipelines across workers. Whether the data fits the model is
`nin_keras.models.signature`'s check.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from nin_keras.data.pipeline import Augmentation, augment_dataset
from nin_keras.data.splits import DatasetSplits
from nin_keras.errors import InvalidInputError
from nin_keras.models.signature import check_data_fits, check_image_classifier


@dataclasses.dataclass
class Inputs:
    """The pipelines of a run and what its record says about them.

    Attributes:
        train, validation, test: batched tf.data pipelines of (images, labels); validation and test may be None.
        name: the dataset's name ("arrays" or "dataset" for data passed as such).
        num_classes, input_shape, info: the dataset's classes, image shape and description.
        steps: batches per epoch (set by `for_fit`).
        fit_steps: `steps_per_epoch` for `fit`; None lets `fit` read one pass over `train`.
        validation_steps: batches per validation pass when sharded across workers, else None.
    """

    train: object
    validation: object
    test: object
    name: str
    num_classes: int
    input_shape: tuple
    info: dict
    steps: int | None = None
    fit_steps: int | None = None
    validation_steps: int | None = None

    def as_dict(self) -> dict:
        """The dataset part of config.json."""
        return {"name": self.name, "num_classes": self.num_classes, "input_shape": list(self.input_shape or ()),
                "info": self.info, "steps_per_epoch": self.steps}


def adapt_data(data, model, *, batch_size: int) -> Inputs:
    """`data` as pipelines for `model`; arrays are batched by `batch_size`.

    Raises:
        IncompatibleModelError: the data does not fit the model (image shape, classes).
        InvalidInputError: no training split, or a dataset that does not yield batches of (images, labels).
    """
    _, classes = check_image_classifier(model)
    check_data_fits(model, data)  # also refuses anything but the three kinds below
    if isinstance(data, DatasetSplits):
        if data.train is None:
            raise InvalidInputError(f"Dataset {data.name!r} has no training split.")
        return Inputs(data.train, data.validation, data.test, str(data.name), int(data.num_classes),
                      tuple(data.input_shape), dict(data.info or {}))
    if isinstance(data, (tuple, list)):  # (images, labels), same length and non-empty (checked above)
        images, labels = np.asarray(data[0]), np.asarray(data[1]).astype("int32")
        dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size).prefetch(tf.data.AUTOTUNE)
        return Inputs(dataset, None, None, "arrays", classes, tuple(images.shape[1:]), {"size": int(len(images))})
    spec = data.element_spec
    if len(spec) != 2:
        raise InvalidInputError("The dataset must yield (images, labels) batches.")
    if len(spec[0].shape) != 4:
        raise InvalidInputError(f"The dataset must be batched: (batch, height, width, channels) images; its images "
                                f"have shape {tuple(spec[0].shape)}. Call .batch(n) on it.")
    return Inputs(data, None, None, "dataset", classes, tuple(spec[0].shape[1:]), {})


def count_steps(inputs: Inputs, steps_per_epoch: int | None) -> int:
    """Batches per epoch: `steps_per_epoch`, or one pass over the training split.

    Raises:
        InvalidInputError: an infinite training dataset without `steps_per_epoch`.
    """
    steps = steps_per_epoch or cardinality(inputs.train)
    if steps is None:
        raise InvalidInputError("The training dataset is infinite: pass steps_per_epoch.")
    return steps


def batch_size_of(inputs: Inputs, default: int | None) -> int | None:
    """Images per training batch: what load_dataset recorded, `default` for arrays, None when unknown."""
    recorded = (inputs.info or {}).get("batch_size")
    if recorded is not None:
        return int(recorded)
    return default if inputs.name == "arrays" else None


def for_fit(inputs: Inputs, *, steps_per_epoch: int | None, num_workers: int, label_smoothing: float,
            augmentation: Augmentation | None = None, seed: int | None = None, steps: int | None = None) -> Inputs:
    """`inputs` ready for `fit`: augmented (if asked), steps per epoch fixed, labels one-hot under label
    smoothing, sharded for workers. `steps`: the batches per epoch when already counted (`count_steps`), so
    a dataset of unknown length is not read through twice.

    Raises:
        InvalidInputError: an infinite training dataset without `steps_per_epoch`.
    """
    steps = steps or count_steps(inputs, steps_per_epoch)
    train, validation, test = inputs.train, inputs.validation, inputs.test
    if augmentation is not None:
        train = augment_dataset(train, augmentation, seed=seed or 0).prefetch(tf.data.AUTOTUNE)
    validation_steps = None
    if steps_per_epoch is not None:
        train = train.repeat()
    if num_workers > 1:
        train = shard(train)
        if validation is not None:
            validation, validation_steps = shard(validation), cardinality(validation)
    if label_smoothing > 0:
        train = one_hot(train, inputs.num_classes)
        validation = one_hot(validation, inputs.num_classes) if validation is not None else None
        test = one_hot(test, inputs.num_classes) if test is not None else None
    fit_steps = steps if (steps_per_epoch is not None or num_workers > 1) else None
    return dataclasses.replace(inputs, train=train, validation=validation, test=test, steps=steps,
                               fit_steps=fit_steps, validation_steps=validation_steps)


def one_hot(dataset, num_classes: int):
    """(images, class ids) -> (images, one-hot labels), which label smoothing needs."""
    return dataset.map(lambda x, y: (x, tf.one_hot(tf.cast(y, tf.int32), num_classes)),
                       num_parallel_calls=tf.data.AUTOTUNE)


def cardinality(dataset) -> int | None:
    """Batches in `dataset`; None when it is infinite (an unknown length costs one pass to count)."""
    n = int(dataset.cardinality().numpy())
    if n == tf.data.INFINITE_CARDINALITY:
        return None
    if n == tf.data.UNKNOWN_CARDINALITY:
        n = sum(1 for _ in dataset)  # one pass over a finite dataset of unknown length
    return n


def shard(dataset):
    """Multi-worker: shard batches across workers (AutoShardPolicy.DATA) and repeat, for a fixed step count.

    Each batch is a global batch: the strategy splits it across all replicas, so an epoch is still the same
    number of steps. Repeating keeps every worker at the same number of steps (a worker that ran out of data
    first would leave the others waiting in a collective).
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options).repeat()
