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
import hashlib

import numpy as np

from nin_keras.checks import check_bool, check_int
from nin_keras.errors import IncompatibleModelError, InvalidInputError

SPLITS = ("train", "validation", "test")
DEFAULT_BATCH_SIZE = 32
ACCEPTED_FORMS = ("a DatasetSplits (nin_keras.load_dataset), an (images, labels) pair of arrays, or a "
                  "tf.data.Dataset of (images, labels), batched or not")
NO_LABEL = -1  # the label of images given alone (only the layer adapters take them: they read images only)
PIXELS_CHECKED = "checked: not 0..1 floats"  # DatasetSplits.pixel_range of data as_splits checked
UNIT_RANGE_ALLOWED = "0..1 floats allowed (allow_unit_range=True)"


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
        pixel_range: how `as_splits` found the pixels: `PIXELS_CHECKED`, `UNIT_RANGE_ALLOWED`
            (`allow_unit_range=True`), or None (not looked at yet).
        content_digest: for data given as arrays, a hash of a fixed sample of its images and all its labels
            (a resumed run compares it to tell the same data from other data of the same shape), else None.
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
    pixel_range: str | None = dataclasses.field(default=None, repr=False, compare=False)
    content_digest: str | None = dataclasses.field(default=None, repr=False, compare=False)

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
              images_only: bool = False, allow_unit_range: bool = False) -> DatasetSplits:
    """Any accepted form of data as a `DatasetSplits`: the one place that tells the forms apart.

    A `DatasetSplits` is returned as it is (a split of it given as arrays or unbatched is adapted as below,
    in a copy). Bare data (arrays or a dataset) becomes split `split` of a new
    `DatasetSplits` named "arrays" or "dataset", the other splits None: data given to `train` is what it
    trains on, data given to `evaluate` is what it evaluates. One batching rule for every caller: arrays and
    unbatched datasets (images of rank 3) are batched by `batch_size`, in their order (no shuffling);
    datasets of batches are used as they come. Labels become int32 class ids: whole numbers, or exact one-hot
    rows (0s and one 1 each, converted by argmax); soft labels, fractional, negative or (with `num_classes`)
    too large ids are refused.

    The models take raw pixels (0..255): float images whose values all lie in 0..1 (the `images / 255` habit
    of many Keras tutorials) are refused, since a model would silently see near-black images (int8
    calibrated on them agrees with the float model on about a fifth of the images). Arrays are checked
    whole; a dataset of float images by its first batch, read once more before use (a dataset is
    re-iterable; its later batches are not read), and its labels as they stream. Integer images, constant
    images (all zero, say) and a `DatasetSplits` from `load_dataset` (which records its pixels' dtype) are not
    checked for range.

    Args:
        data: a `DatasetSplits`; an `(images, labels)` pair of array-likes, images (N, H, W, C) or (N, H, W)
            for one channel; or a `tf.data.Dataset` of `(images, labels)`, batched or not.
        split: the split bare data stands for: "train", "validation" or "test". Defaults to "train".
        batch_size: images per batch when the data is batched here. Defaults to `DEFAULT_BATCH_SIZE` (32).
        num_classes: the class count of bare data when the caller knows it (e.g. the model's); one-hot
            labels give their own. Defaults to None (unknown).
        images_only: also take images alone (an array, or a dataset of images), labelled `NO_LABEL`; for the
            layer adapters, which read images only. Defaults to False.
        allow_unit_range: take float images in 0..1 as they are (a model that really takes 0..1 inputs, or a
            truly dark dataset). The returned `DatasetSplits` records it (its `pixel_range`), so every
            entry it is then given (train, export, evaluate, quantize_aware) takes it too. Defaults to False.

    Returns:
        The `DatasetSplits`. Bare data records in `info` its "batch_size" when batched here and, for arrays,
        "size" and "label_range" ([lowest, highest] class id, for the models' check of the labels).

    Raises:
        IncompatibleModelError: arrays of images that are neither 4-D nor 3-D.
        InvalidInputError: anything else (the message names what was received and the accepted forms),
            empty arrays, images and labels of different lengths, labels that are not class ids, pixels that
            are not real finite numbers, float pixels in 0..1 (without `allow_unit_range`).
    """
    batch_size = check_int("batch_size", DEFAULT_BATCH_SIZE if batch_size is None else batch_size, minimum=1)
    allow_unit_range = check_bool("allow_unit_range", allow_unit_range)
    if isinstance(data, DatasetSplits):
        return _checked_range(_with_batched_splits(data, batch_size, allow_unit_range), allow_unit_range)
    if split not in SPLITS:
        raise InvalidInputError(f"Unknown split {split!r}. Allowed: {', '.join(map(repr, SPLITS))}.")
    num_classes = check_int("num_classes", num_classes, minimum=1, allow_none=True)
    rules = _Rules(split, num_classes, allow_unit_range)
    if hasattr(data, "element_spec"):
        name, dataset, info, one_hot = "dataset", *_from_dataset(data, batch_size, images_only, rules)
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        name, dataset, info, one_hot = "arrays", *_from_arrays(data[0], data[1], batch_size, rules)
    elif images_only and isinstance(data, np.ndarray):
        name, dataset, info, one_hot = "arrays", *_from_arrays(data, None, batch_size, rules)
    else:
        kind = f"a {type(data).__name__}" + (f" of {len(data)} items" if isinstance(data, (tuple, list)) else "")
        alone = " (or images alone)" if images_only else ""
        raise InvalidInputError(f"Expected {ACCEPTED_FORMS}{alone}; received {kind}.")
    digest = info.pop("content_digest", None)
    shape = tuple(None if d is None else int(d) for d in dataset.element_spec[0].shape[1:])
    return DatasetSplits(name=name, **{which: dataset if which == split else None for which in SPLITS},
                         num_classes=one_hot or (None if num_classes is None else int(num_classes)),
                         class_names=[], input_shape=shape, info=info, content_digest=digest,
                         pixel_range=UNIT_RANGE_ALLOWED if allow_unit_range else PIXELS_CHECKED)


def _with_batched_splits(splits: DatasetSplits, batch_size: int, allow_unit_range: bool) -> DatasetSplits:
    """`splits` itself when every split is a dataset of batches (or None), else a copy with the others adapted."""
    changed = {}
    for which in SPLITS:
        value = getattr(splits, which)
        spec = getattr(value, "element_spec", None)
        if value is None or (isinstance(spec, tuple) and len(spec) == 2 and len(spec[0].shape) == 4):
            continue
        changed[which] = as_splits(value, split=which, batch_size=batch_size,
                                   allow_unit_range=allow_unit_range or splits.pixel_range == UNIT_RANGE_ALLOWED
                                   ).split(which)
    return dataclasses.replace(splits, **changed) if changed else splits


@dataclasses.dataclass(frozen=True)
class _Rules:
    """What bare data is checked against: the split it stands for (named in messages), the class count when
    the caller knows it, and whether 0..1 float pixels were declared intended."""

    split: str
    num_classes: int | None
    allow_unit_range: bool


def _unit_range_fix(split: str, opt_out: str | None = None) -> str:
    opt_out = opt_out or f"pass the data as nin_keras.data.as_splits(data, split={split!r}, allow_unit_range=True)"
    return (f"The models take raw pixels 0..255: multiply the images by 255 (images * 255, or a "
            f"Rescaling(255) map on a dataset), or give uint8 pixels. If 0..1 really is what the model takes (or "
            f"the images really are this dark), {opt_out}.")


def check_pixel_range(images, *, what: str = "The images", split: str = "train", opt_out: str | None = None) -> None:
    """Raises InvalidInputError when float `images` all lie in 0..1 and are not constant (see `as_splits`).

    `opt_out` names the caller's own way to take such images (default: `as_splits(..., allow_unit_range=True)`).
    """
    images = np.asarray(images)
    if images.dtype.kind != "f" or images.size == 0:
        return
    high = float(np.max(images))
    if high > 1.0:
        return
    low = float(np.min(images))
    if low >= 0.0 and high > low:  # all zeros (or any constant) says nothing about the range
        raise InvalidInputError(
            f"{what} are floats from {low:.3g} to {high:.3g}: pixels scaled to 0..1, as many Keras tutorials "
            f"do. {_unit_range_fix(split, opt_out)}"
        )


def _checked_range(splits: DatasetSplits, allow_unit_range: bool) -> DatasetSplits:
    """`splits` with its float splits checked for 0..1 pixels (by their first batch), once: the result records
    it in `pixel_range`. Splits `load_dataset` made (it records their dtype) are not read."""
    floats = [which for which in SPLITS
              if getattr(splits, which) is not None and _float_images(getattr(splits, which).element_spec)]
    if splits.pixel_range is not None or "dtype" in (splits.info or {}) or not floats:
        return splits  # integer pixels are never 0..1 floats: nothing to read
    if not allow_unit_range:
        for which in floats:
            images, _ = _first_batch(getattr(splits, which))
            check_pixel_range(images, what=f"The images of the {which} split of {splits.name!r}", split=which)
    return dataclasses.replace(splits, pixel_range=UNIT_RANGE_ALLOWED if allow_unit_range else PIXELS_CHECKED)


def _float_images(spec) -> bool:
    images = spec[0] if isinstance(spec, tuple) else spec
    return bool(getattr(images.dtype, "is_floating", False))


def _first_batch(dataset):
    """(images, labels or None) of `dataset`'s first element as numpy, read through a fresh iterator.

    One element of a cached pipeline leaves its cache part-read, and TensorFlow logs a C++ warning for it:
    silenced, so the CLI's output stays one line.
    """
    from nin_keras.process_state import silenced_native_stderr  # lazy: only datasets are read here

    with silenced_native_stderr():
        for element in dataset.take(1).as_numpy_iterator():
            if isinstance(element, tuple):
                return element[0], element[1]
            return element, None
    return None, None


def _from_arrays(images, labels, batch_size: int, rules: _Rules):
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
    if not rules.allow_unit_range:
        check_pixel_range(images, split=rules.split)
    info = {"size": int(len(images)), "batch_size": batch_size}
    one_hot = None
    if labels is None:
        labels = np.full(len(images), NO_LABEL, "int32")
    else:
        labels, one_hot = _class_ids(labels, rules.num_classes)
        if len(labels) != len(images):
            raise InvalidInputError(f"The data has {len(images)} images but {len(labels)} labels.")
        info["label_range"] = [int(labels.min()), int(labels.max())]
        info["content_digest"] = _content_digest(images, labels)  # moved to DatasetSplits.content_digest
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)
    return dataset.prefetch(tf.data.AUTOTUNE), info, one_hot


def _content_digest(images, labels) -> str:
    """A hash of 64 evenly spaced images (as float32, so uint8 and float copies of the same pixels agree) and of
    all labels: cheap, and different for other data of the same shape."""
    picks = np.unique(np.linspace(0, len(images) - 1, num=min(len(images), 64)).astype(np.int64))
    digest = hashlib.sha256(repr(tuple(images.shape)).encode())
    digest.update(np.ascontiguousarray(images[picks], dtype=np.float32).tobytes())
    digest.update(np.ascontiguousarray(labels, dtype=np.int32).tobytes())
    return digest.hexdigest()[:32]


def _class_ids(labels, num_classes: int | None = None):
    """(int32 class ids, one-hot width or None) of an array of labels: whole-number ids, or exact one-hot rows."""
    labels = np.asarray(labels)
    one_hot = None
    if labels.dtype.kind not in "uifb" or labels.ndim == 0 or labels.ndim > 2:
        raise InvalidInputError(f"Labels must be integer class ids (or one-hot rows); received an array of shape "
                                f"{labels.shape} and dtype {labels.dtype}.")
    if labels.ndim == 2 and labels.shape[1] > 1:
        _check_one_hot_rows(labels)
        one_hot, labels = int(labels.shape[1]), labels.argmax(axis=1)
    labels = labels.reshape(-1) if labels.ndim == 2 else labels
    if labels.dtype.kind == "f":
        fractional = ~np.isfinite(labels) | (np.mod(labels, 1) != 0)
        if fractional.any():
            first = int(np.argmax(fractional))
            raise InvalidInputError(
                f"Labels must be whole class ids; label {first} is {float(labels[first]):g} "
                f"({int(fractional.sum())} of {len(labels)} are not whole numbers). Pass integer class ids "
                "(0..classes-1); fractions are never rounded or truncated here."
            )
    _check_id_range(labels, one_hot or num_classes)
    return labels.astype("int32"), one_hot


def _check_one_hot_rows(rows) -> None:
    """Refuses 2-D labels that are not exact one-hot rows (soft labels, label smoothing, mixup)."""
    rows = np.asarray(rows)
    exact = np.isin(rows, (0, 1)).all(axis=1) & (np.sum(rows, axis=1) == 1)
    if not exact.all():
        first = int(np.argmax(~exact))
        raise InvalidInputError(
            f"2-D labels must be one-hot rows (0s and a single 1); row {first} is "
            f"{np.array2string(rows[first], precision=3, threshold=12)}. Soft labels (label smoothing, mixup) "
            "are not taken: pass class ids (labels.argmax(axis=1) if that is the class) and let the recipe apply "
            "label smoothing (Recipe.label_smoothing, --label-smoothing)."
        )


def _check_id_range(ids, num_classes: int | None) -> None:
    """Refuses negative class ids (InvalidInputError), and ids >= `num_classes` when it is known (the model's,
    as `check_labels_fit` words it: IncompatibleModelError)."""
    ids = np.asarray(ids)
    if ids.size == 0:
        return
    low, high = ids.min(), ids.max()
    if low < 0:
        raise InvalidInputError(
            f"Labels must be class ids 0 or more; they run from {low} to {high}. Map the labels to 0..classes-1 "
            "(np.unique(labels, return_inverse=True)[1] does it)."
        )
    if num_classes is not None and high >= num_classes:
        raise IncompatibleModelError(
            f"The labels run from {low} to {high} but there are {num_classes} classes (ids 0..{num_classes - 1}). "
            f"Use data with {num_classes} classes, or a model built with num_classes={int(high) + 1}."
        )


def _from_dataset(dataset, batch_size: int, images_only: bool, rules: _Rules):
    """(batched dataset of (images, int32 ids), info, one-hot width or None) of a tf.data.Dataset.

    Float images are checked for 0..1 by their first batch; labels by their first batch here (so the error
    comes before any work), then every batch as it streams (`LABEL_ERROR_MARK`, see `data_errors_as_input`).
    """
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
    if pair and not (spec[1].dtype.is_integer or spec[1].dtype.is_floating or spec[1].dtype == tf.bool):
        raise InvalidInputError(f"The dataset's labels are {spec[1].dtype.name}; expected integer class ids (or "
                                "one-hot rows).")
    info = {}
    if rank == 3:  # unbatched: the one rule, batched here
        dataset, info["batch_size"] = dataset.batch(batch_size), batch_size
    check_range = _float_images(dataset.element_spec) and not rules.allow_unit_range
    images, first = _first_batch(dataset) if (pair or check_range) else (None, None)  # one read for both
    if check_range and images is not None:
        check_pixel_range(images, what="The dataset's images (its first batch)", split=rules.split)
    if not pair:
        return dataset.map(lambda x: (x, tf.fill(tf.shape(x)[:1], NO_LABEL))), info, None
    labels = dataset.element_spec[1]
    one_hot = len(labels.shape) == 2 and labels.shape[-1] != 1
    width = int(labels.shape[-1]) if one_hot and labels.shape[-1] is not None else None
    if first is not None:  # the same checks as arrays get, on the first batch: an error before any work
        _class_ids(first if one_hot or np.ndim(first) != 2 else np.reshape(first, -1), width or rules.num_classes)
    limit = width or rules.num_classes
    dataset = dataset.map(lambda x, y: (x, _checked_ids(tf, y, one_hot, limit)), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset, info, width


LABEL_ERROR_MARK = "nin-keras labels:"  # starts the message of the pipeline's label assertion


def _checked_ids(tf, labels, one_hot: bool, num_classes: int | None):
    """int32 class ids of one batch of a dataset's labels, asserting what `_class_ids` checks of arrays."""
    checks = []
    if one_hot:
        values = tf.cast(labels, tf.float32)
        exact = tf.reduce_all(tf.logical_or(tf.equal(values, 0), tf.equal(values, 1)), axis=-1)
        exact = tf.logical_and(exact, tf.equal(tf.reduce_sum(values, axis=-1), 1))
        checks.append(tf.debugging.assert_equal(
            tf.reduce_all(exact), True,
            message=f"{LABEL_ERROR_MARK} 2-D labels must be one-hot rows (0s and a single 1); soft labels are not "
                    "taken: pass class ids and let the recipe apply label smoothing."))
        with tf.control_dependencies(checks):
            return tf.cast(tf.argmax(labels, axis=-1), tf.int32)
    ids = tf.reshape(labels, [-1])
    if ids.dtype.is_floating:
        checks.append(tf.debugging.assert_equal(
            tf.reduce_all(tf.equal(ids, tf.round(ids))), True,
            message=f"{LABEL_ERROR_MARK} labels must be whole class ids; the dataset holds fractional labels "
                    "(never rounded or truncated here): pass integer class ids."))
    ids_wide = tf.cast(ids, tf.float64) if ids.dtype.is_floating else tf.cast(ids, tf.int64)
    checks.append(tf.debugging.assert_greater_equal(
        ids_wide, tf.cast(0, ids_wide.dtype),
        message=f"{LABEL_ERROR_MARK} class ids must be 0 or more; the dataset holds a negative label: map the "
                "labels to 0..classes-1."))
    if num_classes is not None:
        checks.append(tf.debugging.assert_less(
            ids_wide, tf.cast(num_classes, ids_wide.dtype),
            message=f"{LABEL_ERROR_MARK} class ids must be below {num_classes} (the class count); the dataset "
                    "holds a larger one: map the labels to 0..classes-1, or use a model built for more classes."))
    with tf.control_dependencies(checks):
        return tf.cast(ids, tf.int32)


def data_errors_as_input():
    """A context manager that turns the pipeline's label assertion (TensorFlow's InvalidArgumentError, raised
    mid-fit or mid-evaluation) into the package's InvalidInputError with the same message."""
    return _DataErrorsAsInput()


class _DataErrorsAsInput:
    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if error is None or LABEL_ERROR_MARK not in str(error):
            return False
        import tensorflow as tf  # lazy: DatasetSplits stays TensorFlow-free, as above

        if not isinstance(error, tf.errors.OpError):
            return False
        message = str(error)
        message = message[message.index(LABEL_ERROR_MARK) + len(LABEL_ERROR_MARK):]
        message = message.split("]")[0].split("\n")[0].strip()
        raise InvalidInputError(f"The dataset's labels: {message}") from None


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
    with data_errors_as_input():  # a bad label further in a dataset: the package's error
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
