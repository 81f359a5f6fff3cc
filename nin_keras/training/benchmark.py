"""`benchmark_training`: how many images per second `model.fit` trains a NIN at, on synthetic data.

The data is one fixed batch of random uint8 images held in memory and repeated, so the number measures the
model's training step (forward, backward, optimizer update), not an input pipeline. The first
`warmup_steps` steps (tracing, memory allocation, oneDNN kernel selection) are excluded. Each step's loss is
read back, so the timing covers finished work.

`fused_batch_norm=False` with `precision="float32"` is "plain Keras": the same architecture with stock
`keras.layers.BatchNormalization` in float32, which `tools/benchmark_train.py` compares against.
"""

from __future__ import annotations

import statistics
import time

import keras
import numpy as np
import tensorflow as tf

from nin_keras.checks import check_int
from nin_keras.machine import describe_device
from nin_keras.models import build_nin, get_preset
from nin_keras.process_state import onednn_active
from nin_keras.models.layers import FusedBatchNormalization
from nin_keras.training.precision import choose_precision, clone_with_policy, dtype_policy_scope


def plain_batch_norm(layer, config):
    """`clone_with_policy` hook: stock keras BatchNormalization in place of FusedBatchNormalization."""
    if isinstance(layer, FusedBatchNormalization):
        return keras.layers.BatchNormalization.from_config(config)
    return None


def benchmark_setup(*, variant="cifar", batch_size=128, precision="auto", width_multiplier=1.0, batch_norm=True,
                    fused_batch_norm=True, jit_compile=False, steps_per_execution=1):
    """The compiled model and the repeated synthetic batch that `benchmark_training` times (also profiled by
    tools/profile_train.py, so both measure the same step).

    Returns:
        (model, dataset, precision choice): the model compiled with SGD momentum 0.9 and sparse categorical
        cross-entropy, an endless `tf.data.Dataset` of one fixed batch of random uint8 images and int32 labels.
    """
    get_preset(variant)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    steps_per_execution = check_int("steps_per_execution", steps_per_execution, minimum=1)
    choice = choose_precision(precision)

    with dtype_policy_scope("float32"):
        base = build_nin(10, variant=variant, width_multiplier=width_multiplier, batch_norm=batch_norm)
    replace = None if fused_batch_norm else plain_batch_norm
    model = clone_with_policy(base, choice.policy, replace_layer=replace)
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    if choice.policy == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  jit_compile=bool(jit_compile), steps_per_execution=steps_per_execution)

    rng = np.random.default_rng(0)
    shape = tuple(model.input_shape[1:])
    images = rng.integers(0, 256, (batch_size, *shape), dtype=np.uint8)
    labels = rng.integers(0, 10, (batch_size,), dtype=np.int32)
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
    return model, dataset, choice


def benchmark_training(*, variant="cifar", batch_size=128, steps=30, warmup_steps=5, precision="auto",
                       width_multiplier=1.0, batch_norm=True, fused_batch_norm=True, jit_compile=False,
                       steps_per_execution=1) -> dict:
    """Measures training throughput of a NIN (10 classes) with `model.fit` on synthetic data.

    Args:
        variant: NIN variant ("cifar", "mnist", "imagenet", "d2l"). Defaults to "cifar".
        batch_size: images per step. Defaults to 128.
        steps: timed steps (after the warm-up). Defaults to 30.
        warmup_steps: untimed steps first (tracing, allocation). Defaults to 5.
        precision: "auto", "float32", "mixed_bfloat16" or "mixed_float16" (see `choose_precision`).
        width_multiplier: scales the hidden widths. Defaults to 1.0.
        batch_norm: BatchNormalization after every convolution. Defaults to True.
        fused_batch_norm: nin-keras' FusedBatchNormalization (True) or stock keras BatchNormalization (False).
        jit_compile: compile the train step with XLA. Defaults to False.
        steps_per_execution: training steps run per call into the compiled function (Keras'
            `compile(steps_per_execution=...)`). Defaults to 1. Above 1, `steps` and `warmup_steps` are rounded up
            to whole executions, and the result's `steps` / `warmup_steps` say how many ran.

    Returns:
        A dict: train_images_per_s, precision, precision_reason, variant, batch_size, steps, warmup_steps,
        device, step_ms_median, seconds, width_multiplier, batch_norm, fused_batch_norm, jit_compile,
        onednn (whether TensorFlow ran its oneDNN kernels), steps_per_execution, params.
    """
    steps = check_int("steps", steps, minimum=1)
    warmup_steps = check_int("warmup_steps", warmup_steps, minimum=0)
    model, dataset, choice = benchmark_setup(
        variant=variant, batch_size=batch_size, precision=precision, width_multiplier=width_multiplier,
        batch_norm=batch_norm, fused_batch_norm=fused_batch_norm, jit_compile=jit_compile,
        steps_per_execution=steps_per_execution)
    per_call = steps_per_execution
    # Keras calls on_train_batch_end once per execution: time whole executions.
    timed_calls, warmup_calls = -(-steps // per_call), -(-warmup_steps // per_call)
    steps, warmup_steps = timed_calls * per_call, warmup_calls * per_call

    times = []

    class _Timer(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            times.append(time.perf_counter())

        def on_train_batch_end(self, batch, logs=None):
            float(logs["loss"])  # wait for the step to finish
            times.append(time.perf_counter())

    model.fit(dataset, epochs=1, steps_per_epoch=warmup_steps + steps, verbose=0, callbacks=[_Timer()], shuffle=False)
    timed = times[warmup_calls:]  # times[k] = end of execution k (times[0] = start)
    elapsed = timed[-1] - timed[0]
    step_ms = [1000 * (b - a) / per_call for a, b in zip(timed, timed[1:])]
    return {
        "train_images_per_s": steps * batch_size / max(elapsed, 1e-9),
        "precision": choice.policy,
        "precision_reason": choice.reason,
        "variant": variant,
        "batch_size": batch_size,
        "steps": steps,
        "warmup_steps": warmup_steps,
        "device": describe_device(),
        "step_ms_median": statistics.median(step_ms),
        "seconds": elapsed,
        "width_multiplier": float(width_multiplier),
        "batch_norm": bool(batch_norm),
        "fused_batch_norm": bool(fused_batch_norm) and bool(batch_norm),
        "jit_compile": bool(jit_compile),
        "onednn": onednn_active(),
        "steps_per_execution": per_call,
        "params": int(model.count_params()),
    }
