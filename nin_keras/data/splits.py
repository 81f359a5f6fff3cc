"""The one object every later stage receives from the data stage, and the one adapter that makes it.

`DatasetSplits` holds batched `tf.data.Dataset`s of `(images, labels)`: images are raw pixels as uint8
(0..255, NHWC; float32 only when the paper's GCN+ZCA preprocessing was asked for), labels int32 class ids.
Training, quantization, export, evaluation and the models' checks and layer adapters take a `DatasetSplits`,
an `(images, labels)` pair of arrays or a `tf.data.Dataset` of `(images, labels)`, batched or not; each turns
what it was given into a `DatasetSplits` once, with `as_splits`, and reads only that. `as_arrays` turns any
of the three forms into numpy.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from nin_keras.checks import check_int
from nin_keras.errors import IncompatibleModelError, InvalidInputError

SPLITS = ("train", "validation", "test")
DEFAULT_BATCH_SIZE = 32
ACCEPTED_FORMS = ("a DatasetSplits (nin_keras.load_dataset), an (images, labels) pair of arrays, or a "
                  "tf.data.Dataset of (images, labels), batched or not")
NO_LABEL = -1  # the label of images given alone (only the layer adapters take them: they read images only)


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
        if which not in SPLITS:
            raise InvalidInputError(f"Unknown split {which!r}. Allowed: {', '.join(map(repr, SPLITS))}.")
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


def as_splits(data, *, split: str = "train", batch_size: int | None = None, num_classes: int | None = None,
              images_only: bool = False) -> DatasetSplits:
    """Any accepted form of data as a `DatasetSplits`: the one place that tells the forms apart.

    A `DatasetSplits` is returned as it is (a split of it given as arrays or unbatched is adapted as below,
    in a copy). Bare data (arrays or a dataset) becomes split `split` of a new
    `DatasetSplits` named "arrays" or "dataset", the other splits None: data given to `train` is what it
    trains on, data given to `evaluate` is what it evaluates. One batching rule for every caller: arrays and
    unbatched datasets (images of rank 3) are batched by `batch_size`, in their order (no shuffling);
    datasets of batches are used as they come. Labels become int32 class ids (one-hot labels by argmax).

    Args:
        data: a `DatasetSplits`; an `(images, labels)` pair of array-likes, images (N, H, W, C) or (N, H, W)
            for one channel; or a `tf.data.Dataset` of `(images, labels)`, batched or not.
        split: the split bare data stands for: "train", "validation" or "test". Defaults to "train".
        batch_size: images per batch when the data is batched here. Defaults to `DEFAULT_BATCH_SIZE` (32).
        num_classes: the class count of bare data when the caller knows it (e.g. the model's); one-hot
            labels give their own. Defaults to None (unknown).
        images_only: also take images alone (an array, or a dataset of images), labelled `NO_LABEL`; for the
            layer adapters, which read images only. Defaults to False.

    Returns:
        The `DatasetSplits`. Bare data records in `info` its "batch_size" when batched here and, for arrays,
        "size" and "label_range" ([lowest, highest] class id, for the models' check of the labels).

    Raises:
        IncompatibleModelError: arrays of images that are neither 4-D nor 3-D.
        InvalidInputError: anything else (the message names what was received and the accepted forms),
            empty arrays, images and labels of different lengths, labels that are not class ids, pixels that
            are not real finite numbers.
    """
    batch_size = check_int("batch_size", DEFAULT_BATCH_SIZE if batch_size is None else batch_size, minimum=1)
    if isinstance(data, DatasetSplits):
        return _with_batched_splits(data, batch_size)
    if split not in SPLITS:
        raise InvalidInputError(f"Unknown split {split!r}. Allowed: {', '.join(map(repr, SPLITS))}.")
    if hasattr(data, "element_spec"):
        name, dataset, info, one_hot = "dataset", *_from_dataset(data, batch_size, images_only)
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        name, dataset, info, one_hot = "arrays", *_from_arrays(data[0], data[1], batch_size)
    elif images_only and isinstance(data, np.ndarray):
        name, dataset, info, one_hot = "arrays", *_from_arrays(data, None, batch_size)
    else:
        kind = f"a {type(data).__name__}" + (f" of {len(data)} items" if isinstance(data, (tuple, list)) else "")
        alone = " (or images alone)" if images_only else ""
        raise InvalidInputError(f"Expected {ACCEPTED_FORMS}{alone}; received {kind}.")
    shape = tuple(None if d is None else int(d) for d in dataset.element_spec[0].shape[1:])
    return DatasetSplits(name=name, **{which: dataset if which == split else None for which in SPLITS},
                         num_classes=one_hot or (None if num_classes is None else int(num_classes)),
                         class_names=[], input_shape=shape, info=info)


def _with_batched_splits(splits: DatasetSplits, batch_size: int) -> DatasetSplits:
    """`splits` itself when every split is a dataset of batches (or None), else a copy with the others adapted."""
    changed = {}
    for which in SPLITS:
        value = getattr(splits, which)
        spec = getattr(value, "element_spec", None)
        if value is None or (isinstance(spec, tuple) and len(spec) == 2 and len(spec[0].shape) == 4):
            continue
        changed[which] = as_splits(value, split=which, batch_size=batch_size).split(which)
    return dataclasses.replace(splits, **changed) if changed else splits


def _from_arrays(images, labels, batch_size: int):
    """(batched dataset, info, one-hot width or None) of arrays; `labels` None for images alone."""
    import tensorflow as tf  # lazy: DatasetSplits, which the models stage imports, stays TensorFlow-free

    images = np.asarray(images)
    if images.ndim == 3:  # (N, H, W): one channel
        images = images[..., None]
    if images.ndim != 4:
        raise IncompatibleModelError(  # no image classifier takes them
            f"Images must be a 4-D array (count, height, width, channels), or 3-D (count, height, width) for one "
            f"channel; received a {images.ndim}-D array of shape {images.shape}."
        )
    if images.dtype.kind not in "uifc" or len(images) == 0:
        raise InvalidInputError(f"The data holds no images (an array of shape {images.shape}, dtype "
                                f"{images.dtype}); pixels must be numbers.")
    check_pixels(images)
    info = {"size": int(len(images)), "batch_size": batch_size}
    one_hot = None
    if labels is None:
        labels = np.full(len(images), NO_LABEL, "int32")
    else:
        labels, one_hot = _class_ids(labels)
        if len(labels) != len(images):
            raise InvalidInputError(f"The data has {len(images)} images but {len(labels)} labels.")
        info["label_range"] = [int(labels.min()), int(labels.max())]
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)
    return dataset.prefetch(tf.data.AUTOTUNE), info, one_hot


def _class_ids(labels):
    """(int32 class ids, one-hot width or None) of an array of labels: ids, or one-hot rows."""
    labels = np.asarray(labels)
    one_hot = None
    if labels.ndim == 2 and labels.shape[1] > 1:
        one_hot, labels = int(labels.shape[1]), labels.argmax(axis=1)
    labels = labels.reshape(-1) if labels.ndim == 2 else labels
    whole = labels.dtype.kind in "iu" or (labels.dtype.kind == "f" and np.all(np.mod(labels, 1) == 0))
    if labels.ndim != 1 or not whole:
        raise InvalidInputError(f"Labels must be integer class ids (or one-hot rows); received an array of shape "
                                f"{labels.shape} and dtype {labels.dtype}.")
    return labels.astype("int32"), one_hot


def _from_dataset(dataset, batch_size: int, images_only: bool):
    """(batched dataset of (images, int32 ids), info, one-hot width or None) of a tf.data.Dataset."""
    import tensorflow as tf  # lazy: DatasetSplits, which the models stage imports, stays TensorFlow-free

    spec = dataset.element_spec
    pair = isinstance(spec, tuple) and len(spec) == 2
    if not pair and not (images_only and hasattr(spec, "shape")):
        raise InvalidInputError(f"The dataset must yield (images, labels) pairs; it yields {spec}. Accepted: "
                                f"{ACCEPTED_FORMS}.")
    rank = len((spec[0] if pair else spec).shape)
    if rank not in (3, 4):
        raise InvalidInputError(
            f"The dataset's images have shape {tuple((spec[0] if pair else spec).shape)}; expected (height, width, "
            "channels) images, or batches of them (batch, height, width, channels)."
        )
    info = {}
    if rank == 3:  # unbatched: the one rule, batched here
        dataset, info["batch_size"] = dataset.batch(batch_size), batch_size
    if not pair:
        return dataset.map(lambda x: (x, tf.fill(tf.shape(x)[:1], NO_LABEL))), info, None
    labels = dataset.element_spec[1]
    one_hot = len(labels.shape) == 2 and labels.shape[-1] != 1
    if one_hot:
        dataset = dataset.map(lambda x, y: (x, tf.cast(tf.argmax(y, axis=-1), tf.int32)))
    elif len(labels.shape) == 2 or (labels.dtype.is_integer and labels.dtype != tf.int32):
        dataset = dataset.map(lambda x, y: (x, tf.cast(tf.reshape(y, [-1]), tf.int32)))
    width = labels.shape[-1] if one_hot else None
    return dataset, info, None if width is None else int(width)


def as_arrays(data, *, split: str = "test", limit: int | None = None):
    """Returns `(images, labels)` numpy arrays from any form `as_splits` takes.

    Args:
        data: `DatasetSplits` (uses `split`), a `tf.data.Dataset` of `(images, labels)`, or a tuple/list
            `(images, labels)` of array-likes.
        split: which split of a `DatasetSplits` to read. Defaults to "test".
        limit: at most this many examples. Defaults to all.

    Raises:
        InvalidInputError: see `as_splits`; or the data is empty.
    """
    dataset = as_splits(data, split=split, batch_size=256).split(split)
    images, labels, count = [], [], 0
    for x, y in dataset.as_numpy_iterator():
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


def check_pixels(images, what: str = "The images") -> None:
    """Raises InvalidInputError when `images` (an array, first axis the images) hold complex, NaN or infinite
    values: a model's answer for them means nothing, and each artifact kind answers differently."""
    images = np.asarray(images)
    if np.iscomplexobj(images):
        raise InvalidInputError(
            f"{what} are complex numbers (dtype {images.dtype}); pixels must be real values (uint8 0..255 or "
            "float). Pass np.real(images) or np.abs(images) if that is what you mean."
        )
    if not np.issubdtype(images.dtype, np.floating) or np.isfinite(np.sum(images, dtype=np.float64)):
        return  # integers are always finite; a finite sum means every pixel is (checked without a mask first)
    bad = ~np.isfinite(images.reshape(len(images), -1) if images.ndim > 1 else images.reshape(-1, 1))
    per_image = bad.any(axis=1)
    if per_image.any():
        count, first = int(per_image.sum()), int(np.argmax(per_image))
        raise InvalidInputError(
            f"{what} hold NaN or infinite pixels ({count} of {len(per_image)} image(s), the first at index "
            f"{first}): no model can classify them. Fix or drop those images (np.isfinite finds them)."
        )
