"""What `fit` reads: the data `train` accepts, as a `DatasetSplits`, then ready for `fit`.

`training_splits` turns whatever `train` was given into a `DatasetSplits` with `nin_keras.data.as_splits` (the
one adapter: a `DatasetSplits`, an (images, labels) pair of arrays, or a tf.data.Dataset of (images, labels),
batched or not; bare data is the training split) and checks it fits the model; `for_fit` then adds the
recipe's augmentation, fixes the steps per epoch, one-hot encodes labels for label smoothing and shards the
pipelines across workers, and returns a `FitSplits`: the same splits plus those step counts.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from nin_keras.data.pipeline import Augmentation, augment_dataset
from nin_keras.data.splits import DatasetSplits, as_splits
from nin_keras.errors import InvalidInputError
from nin_keras.models.signature import check_data_fits, check_image_classifier


@dataclasses.dataclass
class FitSplits(DatasetSplits):
    """A run's `DatasetSplits` as `fit` reads them, with the step counts `for_fit` fixed.

    Attributes:
        steps: batches per epoch.
        fit_steps: `steps_per_epoch` for `fit`; None lets `fit` read one pass over `train`.
        validation_steps: batches per validation pass when sharded across workers, else None.
    """

    steps: int | None = None
    fit_steps: int | None = None
    validation_steps: int | None = None

    def as_dict(self) -> dict:
        """The dataset part of config.json."""
        return {"name": self.name, "num_classes": self.num_classes, "input_shape": list(self.input_shape or ()),
                "info": self.info, "steps_per_epoch": self.steps}


def training_splits(data, model, *, batch_size: int) -> DatasetSplits:
    """`data` (any form `as_splits` takes; bare data is the training split, batched by `batch_size`) for `model`.

    Raises:
        IncompatibleModelError: the data does not fit the model (image shape, classes).
        InvalidInputError: no training split, or data of another form.
    """
    _, classes = check_image_classifier(model)
    splits = as_splits(data, split="train", batch_size=batch_size, num_classes=classes)
    check_data_fits(model, splits)
    if splits.train is None:
        raise InvalidInputError(f"Dataset {splits.name!r} has no training split.")
    return splits


def count_steps(inputs: DatasetSplits, steps_per_epoch: int | None) -> int:
    """Batches per epoch: `steps_per_epoch`, or one pass over the training split.

    Raises:
        InvalidInputError: an infinite training dataset without `steps_per_epoch`.
    """
    steps = steps_per_epoch or cardinality(inputs.train)
    if steps is None:
        raise InvalidInputError("The training dataset is infinite: pass steps_per_epoch.")
    return steps


def batch_size_of(inputs: DatasetSplits, default: int | None) -> int | None:
    """Images per training batch: what load_dataset or as_splits recorded, `default` for arrays, None when unknown."""
    recorded = (inputs.info or {}).get("batch_size")
    if recorded is not None:
        return int(recorded)
    return default if inputs.name == "arrays" else None


def for_fit(inputs: DatasetSplits, *, steps_per_epoch: int | None, num_workers: int, label_smoothing: float,
            augmentation: Augmentation | None = None, seed: int | None = None,
            steps: int | None = None) -> FitSplits:
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
    fields = {field.name: getattr(inputs, field.name) for field in dataclasses.fields(DatasetSplits)}
    return FitSplits(**{**fields, "train": train, "validation": validation, "test": test}, steps=steps,
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
