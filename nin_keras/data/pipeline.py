"""tf.data pipelines: cache (uint8), shuffle (seeded), batch, augment (seeded, on the CPU), prefetch.

Images stay uint8 all the way (float32 only after the paper's GCN + ZCA); augmentation is a vectorised map
over whole batches, so it is cheap and runs in tf.data's CPU threads, never inside the model.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import tensorflow as tf

from nin_keras.checks import check_float, check_int
from nin_keras.data.splits import DatasetSplits
from nin_keras.errors import InvalidInputError


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """The paper's augmentation: random translation (zero-pad then random crop back) and horizontal flip.

    Attributes:
        pad: pixels of padding on each side; the image moves by up to `pad` pixels each way.
        flip: random horizontal flips (off for digit datasets, where a mirrored digit is not that digit).
    """

    pad: int
    flip: bool

    @classmethod
    def for_images(cls, input_shape, *, flip: bool) -> "Augmentation":
        """4 pixels for 32x32 (the paper's CIFAR setting); an eighth of the smaller side in general."""
        return cls(pad=max(1, min(input_shape[0], input_shape[1]) // 8), flip=flip)

    def describe(self) -> dict:
        return {"translate_pixels": self.pad, "horizontal_flip": self.flip, "where": "tf.data (CPU), per batch"}

    def summary(self) -> str:
        """A few words: "shifts of up to 2 px + horizontal flips"."""
        parts = ([f"shifts of up to {self.pad} px"] if self.pad else []) + (["horizontal flips"] if self.flip else [])
        return " + ".join(parts) or "none"


def split_validation(n: int, validation_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic seeded hold-out: returns sorted (train_indices, validation_indices) of range(n)."""
    validation_split = check_float("validation_split", validation_split, minimum=0, maximum=1, max_inclusive=False)
    n_val = int(round(n * validation_split))
    if validation_split > 0 and n_val == 0 and n > 1:
        n_val = 1
    if n - n_val < 1:
        raise InvalidInputError(
            f"validation_split={validation_split} leaves no training examples out of {n}; use a smaller split."
        )
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def augment_batch(images, seed, augmentation: Augmentation):
    """Randomly translates (and flips) every image of an NHWC batch; `seed` is a stateless seed, shape (2,)."""
    pad = augmentation.pad
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    seeds = tf.random.experimental.stateless_split(seed, num=3)
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    dy = tf.random.stateless_uniform([batch], seeds[0], minval=0, maxval=2 * pad + 1, dtype=tf.int32)
    dx = tf.random.stateless_uniform([batch], seeds[1], minval=0, maxval=2 * pad + 1, dtype=tf.int32)
    rows = dy[:, None] + tf.range(height)[None, :]
    cols = dx[:, None] + tf.range(width)[None, :]
    if augmentation.flip:
        flip = tf.random.stateless_uniform([batch], seeds[2]) < 0.5
        cols = tf.where(flip[:, None], tf.reverse(cols, axis=[1]), cols)
    out = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(out, cols, axis=2, batch_dims=1)


def make_dataset(images: np.ndarray, labels: np.ndarray, *, batch_size: int, shuffle: bool = False,
                 seed: int = 0, augmentation: Augmentation | None = None):
    """Returns a batched `tf.data.Dataset` of (images, int32 labels) from numpy arrays."""
    autotune = tf.data.AUTOTUNE
    dataset = tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int32))).cache()
    if shuffle:
        dataset = dataset.shuffle(max(1, len(images)), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, num_parallel_calls=autotune, deterministic=True)
    if augmentation is not None:
        dataset = augment_dataset(dataset, augmentation, seed=seed)
    return dataset.prefetch(autotune)


def augment_dataset(dataset, augmentation: Augmentation, *, seed: int = 0):
    """A batched (images, labels) dataset with `augmentation` applied to every batch of images (seeded).

    Each pass draws new translations and flips, repeatably for the same seed.
    """
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip((dataset, seeds)).map(
        lambda batch, s: (augment_batch(batch[0], s, augmentation), batch[1]),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True,
    )


def measure_pipeline_throughput(dataset, *, steps: int = 50, warmup: int = 2) -> float:
    """Images per second a pipeline delivers on its own (no model): times `steps` batches after a warm-up.

    Accepts a batched `tf.data.Dataset` of (images, labels) or a DatasetSplits (its train pipeline). The
    dataset is repeated if it has fewer than `warmup + steps` batches.
    """
    if isinstance(dataset, DatasetSplits):
        dataset = dataset.train
    steps = check_int("steps", steps, minimum=1)
    warmup = check_int("warmup", warmup, minimum=0)
    iterator = iter(dataset.repeat())
    for _ in range(warmup):
        next(iterator)
    images = 0
    start = time.perf_counter()
    for _ in range(steps):
        batch = next(iterator)
        first = batch[0] if isinstance(batch, (tuple, list)) else batch
        images += int(first.shape[0])
    elapsed = time.perf_counter() - start
    return images / max(elapsed, 1e-9)
