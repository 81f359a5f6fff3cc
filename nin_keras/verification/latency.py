"""Inference timing of artifacts on this machine.

- `benchmark_inference(artifact)`: batch-1 latency and batched throughput of one artifact.
- `benchmark_interleaved({name: artifact})`: batch-1 latency of several artifacts compared fairly on a noisy
  machine: timed in rounds, each round times every artifact once (order alternating), medians over rounds.
- `rank_by_latency({name: timing})`: which of them is fastest here, on one measure they all have.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping

import numpy as np
import tensorflow as tf

from nin_keras.checks import check_int
from nin_keras.errors import InvalidInputError
from nin_keras.machine import available_cores
from nin_keras.verification.artifacts import Runner, load_artifact

# A pause before each artifact's turn: the previous interpreter's pool threads spin on after its last call and
# slow the next model's (measured up to 2x on a 2-core machine without it, tools/profile_tflite.py).
SETTLE_SECONDS = 0.05
# Round-to-round spread of interleaved medians on a quiet machine is a few percent: closer than this is a tie.
TIE_MARGIN = 0.03


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
    runs, warmup, threads = _check_timing(runs, warmup, threads)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    runner = _runner(artifact, threads)
    times_ms, invoke_ms = _time_batch1(runner, runs=runs, warmup=warmup)

    if runner.static_batch == 1:  # sequential batch-1 throughput
        throughput = len(times_ms) / (float(np.sum(times_ms)) / 1000.0)
        throughput_batch = 1
    else:
        throughput_batch = runner.static_batch or batch_size
        batch = np.random.default_rng(0).integers(0, 256, (throughput_batch, *runner.input_shape)).astype(np.uint8)
        runner.predict(batch, batch_size=throughput_batch)  # warm-up: resizes and allocates
        rounds = max(3, runs // 5)
        start = time.perf_counter()
        for _ in range(rounds):
            runner.predict(batch, batch_size=throughput_batch)
        throughput = rounds * throughput_batch / (time.perf_counter() - start)
    return {
        **_describe(runner, threads),
        "latency_ms_batch1_median": _ms(np.median(times_ms)),
        "latency_ms_batch1_p90": _ms(np.percentile(times_ms, 90)),
        "latency_ms_batch1_mean": _ms(np.mean(times_ms)),
        "latency_ms_batch1_invoke_median": None if invoke_ms is None else _ms(np.median(invoke_ms)),
        "throughput_images_per_s": round(float(throughput), 1),
        "throughput_batch_size": throughput_batch,
        "runs": runs,
        "warmup": warmup,
    }


def benchmark_interleaved(artifacts: Mapping, *, rounds=5, runs=50, warmup=5, threads=2,
                          on_round: Callable[[int, dict], None] | None = None) -> dict:
    """Batch-1 latency of several artifacts, timed interleaved so that load drifts hit them all alike.

    Every artifact is loaded once. Each round times each artifact once (`runs` batch-1 calls after `warmup`
    untimed ones, as `benchmark_inference` does, after a `SETTLE_SECONDS` pause that lets the previous
    interpreter's threads go idle), in the given order on even rounds and reversed on odd ones;
    an artifact's latency is the median over rounds of its per-round medians. For .tflite files the time of
    `interpreter.invoke()` alone (the model's own time, as LiteRT's benchmark_model measures it) is kept
    beside the end-to-end `predict` time. Put the artifacts to compare next to each other in `artifacts`:
    neighbours run back to back in every round.

    Args:
        artifacts: name -> anything `load_artifact` accepts (a path, a Keras model, a runner); at least one.
        rounds: rounds of timing. Defaults to 5.
        runs: timed batch-1 calls per artifact and round. Defaults to 50.
        warmup: untimed calls per artifact and round. Defaults to 5.
        threads: TFLite interpreter threads (see `benchmark_inference`). Defaults to 2.
        on_round: called after each round with (round index from 0, {name: that round's latency in ms,
            invoke time where there is one}): for progress lines. Defaults to None.

    Returns:
        A dict: rounds, runs, warmup, order (the names as given) and artifacts: name -> {artifact, kind,
        precision, threads, latency_ms_batch1_median, latency_ms_batch1_per_round,
        latency_ms_batch1_invoke_median and latency_ms_batch1_invoke_per_round (None unless .tflite),
        latency_ms (the invoke median where there is one, else the end-to-end median: the figure to compare)}.

    Raises:
        InvalidInputError: no artifacts, or a count out of range.
    """
    runs, warmup, threads = _check_timing(runs, warmup, threads)
    rounds = check_int("rounds", rounds, minimum=1)
    if not isinstance(artifacts, Mapping) or not artifacts:
        raise InvalidInputError(f"artifacts must be a non-empty dict of name -> artifact; received {artifacts!r}.")
    runners = {str(name): _runner(artifact, threads) for name, artifact in artifacts.items()}  # all valid first
    names = list(runners)
    end_to_end = {name: [] for name in names}
    invoke = {name: [] for name in names}
    for index in range(rounds):
        for name in names if index % 2 == 0 else names[::-1]:
            time.sleep(SETTLE_SECONDS)
            times_ms, invoke_ms = _time_batch1(runners[name], runs=runs, warmup=warmup)
            end_to_end[name].append(_ms(np.median(times_ms)))
            invoke[name].append(None if invoke_ms is None else _ms(np.median(invoke_ms)))
        if on_round is not None:
            on_round(index, {name: end_to_end[name][-1] if invoke[name][-1] is None else invoke[name][-1]
                             for name in names})
    results = {}
    for name, runner in runners.items():
        has_invoke = invoke[name][0] is not None
        e2e_median = _ms(statistics.median(end_to_end[name]))
        invoke_median = _ms(statistics.median(invoke[name])) if has_invoke else None
        results[name] = {
            **_describe(runner, threads),
            "latency_ms_batch1_median": e2e_median,
            "latency_ms_batch1_per_round": end_to_end[name],
            "latency_ms_batch1_invoke_median": invoke_median,
            "latency_ms_batch1_invoke_per_round": invoke[name] if has_invoke else None,
            "latency_ms": invoke_median if has_invoke else e2e_median,
        }
    return {"rounds": rounds, "runs": runs, "warmup": warmup, "order": names, "artifacts": results}


def rank_by_latency(timings: Mapping, *, tie_margin: float = TIE_MARGIN) -> dict:
    """Orders timed artifacts fastest first, on the one batch-1 measure they all have.

    `interpreter.invoke()` alone (the model's own time) when every artifact has it (all .tflite), else the whole
    `predict` call (input conversion included): a Keras model and a .tflite file share only that.

    Args:
        timings: name -> a dict of `benchmark_inference`, or an entry of `benchmark_interleaved`'s "artifacts";
            at least one.
        tie_margin: artifacts at most this share slower than the fastest are named in `as_fast` (round-to-round
            spread on a quiet machine is a few percent). Defaults to `TIE_MARGIN`, 0.03.

    Returns:
        A dict: measure ("invoke" or "predict"), fastest (its name), as_fast (the others within `tie_margin`)
        and ranking: a list, fastest first, of {"artifact": name, "latency_ms": the measure's median,
        "vs_fastest": latency / the fastest's}.

    Raises:
        InvalidInputError: no timings, or one without a batch-1 latency.
    """
    if not isinstance(timings, Mapping) or not timings:
        raise InvalidInputError(f"timings must be a non-empty dict of name -> timing; received {timings!r}.")
    for name, timing in timings.items():
        if not isinstance(timing, Mapping) or timing.get("latency_ms_batch1_median") is None:
            raise InvalidInputError(f"timings[{name!r}] has no latency_ms_batch1_median: pass the dicts "
                                    "benchmark_inference or benchmark_interleaved returned.")
    invoke = all(timing.get("latency_ms_batch1_invoke_median") is not None for timing in timings.values())
    key = "latency_ms_batch1_invoke_median" if invoke else "latency_ms_batch1_median"
    ordered = sorted(timings, key=lambda name: timings[name][key])  # stable: ties keep the given order
    best = float(timings[ordered[0]][key])
    ranking = [{"artifact": str(name), "latency_ms": _ms(timings[name][key]),
                "vs_fastest": round(float(timings[name][key]) / best, 3) if best > 0 else None}
               for name in ordered]
    as_fast = [entry["artifact"] for entry in ranking[1:]
               if entry["vs_fastest"] is not None and entry["vs_fastest"] <= 1.0 + tie_margin]
    return {"measure": "invoke" if invoke else "predict", "fastest": str(ordered[0]), "as_fast": as_fast,
            "ranking": ranking}


def ranking_clauses(ranking: Mapping, *, label: Callable[[str], str] = str) -> str:
    """What follows the fastest in a line about a `rank_by_latency` result: "; as fast (within 3%): A 1.01x;
    slower: B 1.27x" (empty for one artifact). `label` turns a ranked name into the text shown."""
    def listed(entries):
        return ", ".join(f"{label(entry['artifact'])} {entry['vs_fastest']:.2f}x" for entry in entries)

    others = ranking["ranking"][1:]
    tied = [entry for entry in others if entry["artifact"] in ranking.get("as_fast", ())]
    slower = [entry for entry in others if entry not in tied]
    return ((f"; as fast (within {TIE_MARGIN:.0%}): {listed(tied)}" if tied else "")
            + (f"; slower: {listed(slower)}" if slower else ""))


def _check_timing(runs, warmup, threads) -> tuple[int, int, int]:
    return (check_int("runs", runs, minimum=1), check_int("warmup", warmup, minimum=0),
            check_int("threads", threads, minimum=1))


def _runner(artifact, threads: int) -> Runner:
    """The artifact's runner, with `threads` interpreter threads for .tflite and .onnx files."""
    if isinstance(artifact, Runner) and artifact.kind in ("tflite", "onnx") and artifact.threads != threads:
        artifact = artifact.path  # reload with the asked thread count
    return load_artifact(artifact, num_threads=threads)


def _time_batch1(runner: Runner, *, runs: int, warmup: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Milliseconds of each timed batch-1 `predict` call, and of each `invoke()` alone (.tflite, else None)."""
    one = np.random.default_rng(0).integers(0, 256, (1, *runner.input_shape)).astype(np.uint8)
    for _ in range(warmup):
        runner.predict(one)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        runner.predict(one)
        times.append(time.perf_counter() - start)
    invoke_ms = None
    if hasattr(runner, "time_invoke") and runner.static_batch in (None, 1):  # a batch-1 call exists
        invoke_ms = np.asarray(runner.time_invoke(one, runs=runs, warmup=warmup)) * 1000.0
    return np.asarray(times) * 1000.0, invoke_ms


def _describe(runner: Runner, threads: int) -> dict:
    used = threads if runner.kind in ("tflite", "onnx") else _tensorflow_threads()
    return {"artifact": runner.name, "kind": runner.kind, "precision": runner.precision, "threads": used}


def _ms(value) -> float:
    return round(float(value), 4)


def _tensorflow_threads() -> int:
    """Size of TensorFlow's intra-op pool (0 in its config means: one per available core)."""
    configured = tf.config.threading.get_intra_op_parallelism_threads()
    return int(configured) if configured else available_cores()
