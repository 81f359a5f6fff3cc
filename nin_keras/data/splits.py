"""The one object every later stage receives from the data stage.

`DatasetSplits` holds batched `tf.data.Dataset`s of `(images, labels)`: images are raw pixels as uint8
(0..255, NHWC; float32 only when the paper's GCN+ZCA preprocessing was asked for), labels int32 class ids.
Training, quantization, export and verification take a `DatasetSplits`, a batched dataset of
`(images, labels)`, or a tuple of numpy arrays `(images, labels)`; `as_arrays` turns any of them into numpy.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from nin_keras.errors import InvalidInputError


@dataclasses.dataclass
class DatasetSplits:
    """Train/validation/test pipelines of one dataset, plus what a model needs to know about it.

    Attributes:
        name: dataset name as given to `load_dataset` ("cifar10", "digits", "folder:/path", ...).
        train: batched, shuffled (and augmented, if asked) `(images, labels)` dataset.
        validation: batched `(images, labels)` dataset, or None when `validation_split=0`.
        test: batched `(images, labels)` dataset, never shuffled or augmented.
        num_classes: number of classes.
        class_names: one name per class id.
        input_shape: (height, width, channels) of one image.
        info: extra facts worth recording in a run config (sizes, source files, preprocessing); JSON-friendly.
        preprocessor: the fitted `GCNZCA` when `preprocessing="gcn_zca"` was asked for (apply its
            `transform` to new uint8 images before giving them to the model, or copy it into a model's
            `GCNZCAWhitening` layer with `set_fitted`), else None.
    """

    name: str
    train: object
    validation: object | None
    test: object
    num_classes: int
    class_names: list
    input_shape: tuple
    info: dict = dataclasses.field(default_factory=dict)
    preprocessor: object | None = dataclasses.field(default=None, repr=False, compare=False)

    def split(self, which: str):
        """Returns the dataset of split `which` ("train", "validation" or "test")."""
        if which not in ("train", "validation", "test"):
            raise InvalidInputError(f"Unknown split {which!r}. Allowed: 'train', 'validation', 'test'.")
        dataset = getattr(self, which)
        if dataset is None:
            raise InvalidInputError(f"Dataset {self.name!r} has no {which} split (validation_split was 0?).")
        return dataset

    def take(self, *, train: int | None = None, validation: int | None = None, test: int | None = None):
        """A copy that uses at most this many images of each split given (whole batches), for quick runs.

        The training split is shuffled each epoch, so each epoch draws its `train` images anew from all of it;
        validation and test keep their first images, the same ones every time. Other splits are as they were.

        Example: `nin_keras.load_dataset("fashion_mnist").take(train=6000, test=2000)`.
        """
        batch_size = self.info.get("batch_size")
        if not batch_size:
            raise InvalidInputError("take() needs the batch size in info['batch_size'] (load_dataset records it).")
        changed, sizes = {}, dict(self.info.get("sizes", {}))
        for which, count in (("train", train), ("validation", validation), ("test", test)):
            if count is None:
                continue
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise InvalidInputError(f"{which} must be a whole number of images >= 1; received {count!r}.")
            batches = -(-count // batch_size)  # whole batches: the pipelines are batched already
            changed[which] = self.split(which).take(batches)
            if which in sizes:
                sizes[which] = min(sizes[which], batches * batch_size)
        return dataclasses.replace(self, **changed, info={**self.info, "sizes": sizes, "subset": True})


def as_arrays(data, *, split: str = "test", limit: int | None = None):
    """Returns `(images, labels)` numpy arrays from a DatasetSplits, a dataset of (images, labels) or a tuple.

    Args:
        data: `DatasetSplits` (uses `split`), a `tf.data.Dataset` yielding `(images, labels)` batches, or a
            tuple/list `(images, labels)` of array-likes.
        split: which split of a `DatasetSplits` to read. Defaults to "test".
        limit: at most this many examples. Defaults to all.
    """
    if isinstance(data, DatasetSplits):
        data = data.split(split)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        images, labels = np.asarray(data[0]), np.asarray(data[1])
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        return images, labels
    if not hasattr(data, "element_spec"):
        raise InvalidInputError(
            f"Expected a DatasetSplits, a tf.data.Dataset of (images, labels) or an (images, labels) tuple; "
            f"received {type(data).__name__}."
        )
    spec = data.element_spec
    if not isinstance(spec, tuple) or len(spec) < 2:
        raise InvalidInputError("The dataset must yield (images, labels) pairs.")
    unbatched = len(spec[0].shape) == 3
    images, labels, count = [], [], 0
    for x, y in data.as_numpy_iterator() if not unbatched else data.batch(256).as_numpy_iterator():
        images.append(x)
        labels.append(y)
        count += len(x)
        if limit is not None and count >= limit:
            break
    if not images:
        raise InvalidInputError("The dataset is empty.")
    images, labels = np.concatenate(images), np.concatenate(labels)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return images, labels
