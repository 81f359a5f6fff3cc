"""`benchmark_inference(artifact)`: batch-1 latency and batched throughput of any artifact on this machine."""

from __future__ import annotations

import time

import numpy as np

from nin_keras.machine import available_cores
from nin_keras.errors import InvalidInputError
from nin_keras.verification.artifacts import Runner, load_artifact


def benchmark_inference(artifact, *, runs=50, warmup=5, threads=2, batch_size=32) -> dict:
    """Times an artifact on random raw-pixel images.

    Batch-1 latency is the time of one `predict` call on one image (input quantization and output
    dequantization included, as a caller would see it); `runs` calls after `warmup` untimed ones. For .tflite
    files `latency_ms_batch1_invoke_median` is also given: `interpreter.invoke()` alone, the model's own time
    as LiteRT's benchmark_model reports it (on a small model the Python-side work is a large share).
    Throughput is images per second at `batch_size` (a model with a static batch of 1 runs its images one
    after another: sequential batch-1 throughput; another static batch size is used as it is).

    Args:
        artifact: anything `load_artifact` accepts (a path is loaded with `threads` interpreter threads).
        runs: timed batch-1 calls. Defaults to 50.
        warmup: untimed calls first. Defaults to 5.
        threads: TFLite interpreter threads. Keras and SavedModel artifacts use TensorFlow's process-wide
            pools, set when TensorFlow starts; `threads` then reports that pool's size. Defaults to 2.
        batch_size: batch of the throughput measurement. Defaults to 32.

    Returns:
        A dict: latency_ms_batch1_median, latency_ms_batch1_p90, latency_ms_batch1_mean,
        latency_ms_batch1_invoke_median (.tflite only, else None),
        throughput_images_per_s, throughput_batch_size, threads, runs, warmup, artifact, kind, precision.
    """
    for name, value, low in (("runs", runs, 1), ("warmup", warmup, 0), ("threads", threads, 1),
                             ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise InvalidInputError(f"{name} must be a whole number >= {low}; received {value!r}.")
    if isinstance(artifact, Runner) and artifact.kind == "tflite" and artifact.threads != threads:
        artifact = artifact.path  # reload with the asked thread count
    runner = load_artifact(artifact, num_threads=threads)
    rng = np.random.default_rng(0)
    one = rng.integers(0, 256, (1, *runner.input_shape)).astype(np.uint8)

    for _ in range(warmup):
        runner.predict(one)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        runner.predict(one)
        times.append(time.perf_counter() - start)
    times_ms = np.asarray(times) * 1000.0
    invoke_ms = None
    if hasattr(runner, "time_invoke") and runner.static_batch in (None, 1):  # a batch-1 call exists
        invoke_ms = float(np.median(runner.time_invoke(one, runs=runs, warmup=warmup))) * 1000.0

    if runner.static_batch == 1:  # sequential batch-1 throughput
        throughput = len(times) / float(np.sum(times))
        throughput_batch = 1
    else:
        throughput_batch = runner.static_batch or batch_size
        batch = rng.integers(0, 256, (throughput_batch, *runner.input_shape)).astype(np.uint8)
        runner.predict(batch, batch_size=throughput_batch)  # warm-up: resizes and allocates
        rounds = max(3, runs // 5)
        start = time.perf_counter()
        for _ in range(rounds):
            runner.predict(batch, batch_size=throughput_batch)
        throughput = rounds * throughput_batch / (time.perf_counter() - start)
    if runner.kind == "tflite":
        used_threads = threads
    else:
        used_threads = _tensorflow_threads()
    return {
        "artifact": runner.name,
        "kind": runner.kind,
        "precision": runner.precision,
        "latency_ms_batch1_median": round(float(np.median(times_ms)), 4),
        "latency_ms_batch1_p90": round(float(np.percentile(times_ms, 90)), 4),
        "latency_ms_batch1_mean": round(float(np.mean(times_ms)), 4),
        "latency_ms_batch1_invoke_median": None if invoke_ms is None else round(invoke_ms, 4),
        "throughput_images_per_s": round(float(throughput), 1),
        "throughput_batch_size": throughput_batch,
        "threads": used_threads,
        "runs": int(runs),
        "warmup": int(warmup),
    }


def _tensorflow_threads() -> int:
    """Size of TensorFlow's intra-op pool (0 in its config means: one per available core)."""
    import tensorflow as tf

    configured = tf.config.threading.get_intra_op_parallelism_threads()
    return int(configured) if configured else available_cores()

