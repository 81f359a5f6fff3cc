"""Training on several devices off TensorFlow: Keras' own engine, `keras.distribution.DataParallel`.

On the TensorFlow backend `train` uses tf.distribute (`nin_keras.training.strategy`). On JAX the strategy names
mean:

* "auto": `DataParallel` over every JAX device when there are several, else one device (no distribution).
* "one": one device.
* "mirrored": `DataParallel` over every JAX device (an error with only one).
* "multiworker": refused (TensorFlow only).

On PyTorch only "auto" and "one" are accepted (one device). No tf.distribute strategy is created off
TensorFlow.

Under `DataParallel` each global batch is split evenly over the devices, so every batch must divide by the
device count: `fit_on_devices` fills the training split's last short batch up to a multiple of it with
images of the same batch again (at most devices - 1 an epoch) and pads the validation split's last one with
images of weight 0, so the validation accuracy counts every image once (the validation loss of that batch is
averaged over the padded batch, a little low). The test split is scored after training, on one device.
`distribution_scope` sets the distribution for the run and puts back whatever the process had before.
"""

from __future__ import annotations

import contextlib
import dataclasses

import keras
import tensorflow as tf

from nin_keras.checks import check_choice
from nin_keras.choices import STRATEGIES
from nin_keras.errors import InvalidInputError
from nin_keras.training.inputs import FitSplits
from nin_keras.training.strategy import StrategyChoice, resolve_strategy

DATA_PARALLEL = "DataParallel"


class _OneDevice:
    """Stands in for a distribution when there is none: its scope changes nothing."""

    def scope(self):
        return contextlib.nullcontext()


def _keras_devices() -> list[str]:
    """The devices Keras' distribution API would use on this backend (e.g. ["cpu:0", "cpu:1"])."""
    return list(keras.distribution.list_devices())


def training_strategy(strategy) -> StrategyChoice:
    """`train`'s strategy argument as a `StrategyChoice` for the current Keras backend.

    On TensorFlow: `resolve_strategy` (tf.distribute). On JAX and PyTorch: a choice whose `.strategy` is a
    `keras.distribution.DataParallel` (JAX, several devices) or a stand-in with an empty scope (one device).

    Raises:
        InvalidInputError: an unknown name; "multiworker" (or a tf.distribute strategy) off TensorFlow;
            "mirrored" with one device or on PyTorch.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return resolve_strategy(strategy)
    if isinstance(strategy, StrategyChoice) and strategy.backend == backend:
        return strategy
    if not isinstance(strategy, str):
        raise InvalidInputError(
            f"strategy {type(strategy).__name__} is a TensorFlow one (tf.distribute) but Keras runs on {backend}: "
            f"pass a name, {STRATEGIES}, or set KERAS_BACKEND=tensorflow.")
    check_choice("strategy", strategy, STRATEGIES)
    if strategy == "multiworker":
        raise InvalidInputError(
            f"strategy 'multiworker' is TensorFlow-only (tf.distribute.MultiWorkerMirroredStrategy) and Keras runs "
            f"on {backend}: set KERAS_BACKEND=tensorflow for multi-machine training, or use 'auto' or 'mirrored' "
            "(several devices of this machine, JAX only).")
    if backend != "jax":
        if strategy == "mirrored":
            raise InvalidInputError(
                f"strategy 'mirrored' (several devices) is available on the tensorflow and jax backends, not on "
                f"{backend}: use 'auto' or 'one' (one device), or set KERAS_BACKEND=jax or tensorflow.")
        return StrategyChoice(_OneDevice(), "one", strategy, f"{backend} backend: one device", backend=backend)
    return _jax_strategy(strategy)


def _jax_strategy(requested: str) -> StrategyChoice:
    """"auto", "one" or "mirrored" on JAX (see the module's docstring)."""
    devices = _keras_devices()
    several = len(devices) > 1
    if requested == "mirrored" and not several:
        raise InvalidInputError(
            f"strategy 'mirrored' needs several devices but JAX sees one ({devices[0]}): use 'auto' or 'one', or "
            "give JAX more devices (on CPU: XLA_FLAGS=--xla_force_host_platform_device_count=N before it starts).")
    if requested == "one" or not several:
        reason = "asked for" if requested == "one" else "one JAX device"
        return StrategyChoice(_OneDevice(), "one", requested, f"{reason}: one device ({devices[0]})",
                              backend="jax", devices=tuple(devices[:1]))
    reason = "asked for" if requested == "mirrored" else "several JAX devices"
    distribution = keras.distribution.DataParallel(devices=devices)
    return StrategyChoice(distribution, DATA_PARALLEL, requested,
                          f"{reason}: keras.distribution.DataParallel over {len(devices)} devices "
                          f"({', '.join(devices)})", num_replicas=len(devices), backend="jax",
                          devices=tuple(devices))


def is_data_parallel(choice: StrategyChoice) -> bool:
    """Whether `choice` trains with a Keras distribution (JAX, several devices)."""
    return choice.backend is not None and choice.name == DATA_PARALLEL


@contextlib.contextmanager
def distribution_scope(choice: StrategyChoice):
    """The run's Keras distribution for the block, then the caller's (`keras.distribution.distribution()`) again.

    Keras needs the model's variables created under the distribution, so the model is cloned and compiled
    inside this block (`compile_for_training`). Nothing happens for a tf.distribute choice (its scope is
    entered where the model is built) or a single device.
    """
    if not is_data_parallel(choice):
        yield
        return
    before = keras.distribution.distribution()
    keras.distribution.set_distribution(choice.strategy)
    try:
        yield
    finally:
        keras.distribution.set_distribution(before)


def check_global_batch(batch_size: int | None, choice: StrategyChoice) -> None:
    """Raises InvalidInputError when a known global batch does not divide by the devices of a DataParallel run."""
    if batch_size is None or not is_data_parallel(choice) or batch_size % choice.num_replicas == 0:
        return
    devices = choice.num_replicas
    lower, upper = batch_size // devices * devices, (batch_size // devices + 1) * devices
    raise InvalidInputError(
        f"The global batch of {batch_size} images does not divide by the {devices} devices of "
        f"keras.distribution.DataParallel (each device takes an equal share): use a batch size that is a multiple "
        f"of {devices}, e.g. {lower or upper} or {upper}, or strategy='one'.")


def _fill(devices: int):
    """(images, labels) -> the same filled up to a multiple of `devices` with the batch's first images again."""
    def fill(images, labels):
        count = tf.shape(images)[0]
        extra = (devices - count % devices) % devices
        order = tf.range(count + extra) % count  # a map keeps the number of batches (a filter would lose it)
        return tf.gather(images, order), tf.gather(labels, order)

    return fill


def _pad(devices: int):
    """(images, labels) -> (images, labels, weights) padded to a multiple of `devices` with weight-0 images."""
    def pad_tensor(tensor, extra):
        filler = tf.zeros(tf.concat([[extra], tf.shape(tensor)[1:]], axis=0), tensor.dtype)
        return tf.concat([tensor, filler], axis=0)

    def pad(images, labels):
        count = tf.shape(images)[0]
        extra = (devices - count % devices) % devices
        weights = tf.concat([tf.ones([count]), tf.zeros([extra])], axis=0)
        return pad_tensor(images, extra), pad_tensor(labels, extra), weights

    return pad


def fit_on_devices(inputs: FitSplits, choice: StrategyChoice) -> FitSplits:
    """`inputs` with every training and validation batch a multiple of the devices (see the module's
    docstring); unchanged unless `choice` is DataParallel."""
    if not is_data_parallel(choice):
        return inputs
    devices = choice.num_replicas
    train = inputs.train.map(_fill(devices), num_parallel_calls=tf.data.AUTOTUNE)
    validation = inputs.validation
    if validation is not None:
        validation = validation.map(_pad(devices), num_parallel_calls=tf.data.AUTOTUNE)
    return dataclasses.replace(inputs, train=train, validation=validation)
