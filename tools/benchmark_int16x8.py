#!/usr/bin/env python
"""int16x8 latency: the opt-in tflite_int16x8 target against tflite_int8 and tflite_float32, batch 1.

Run from the repository root, on a quiet machine:

    .venv/bin/python tools/benchmark_int16x8.py          # docs/benchmarks/int16x8.md and .json

The paper variants with default settings and untrained (seeded) weights, `build_nin(10, variant="cifar")` and
`variant="mnist"`, are exported by `nin_keras.export(..., targets=[...])` to the three files (calibrated on
synthetic raw-pixel images), then timed by `nin_keras.verification.benchmark_interleaved` (alternating rounds,
median of `interpreter.invoke()`, batch 1). The export time of the int16x8 file alone is recorded too, and
the time per image of `predict` on 128 random images in batches of 64 (what verifying an export costs).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _bench import ROOT, add_report_arguments, header_lines, log, run

from nin_keras.cli.options import non_negative_int, positive_int

TOOL = "tools/benchmark_int16x8.py"
VARIANTS = ("mnist", "cifar")
TIMED = ("tflite_float32", "tflite_int8", "tflite_int16x8")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=positive_int, default=2, help="TFLite interpreter threads (default 2)")
    parser.add_argument("--rounds", type=positive_int, default=3, help="interleaved timing rounds (default 3)")
    parser.add_argument("--runs", type=positive_int, default=20, help="timed calls per round (default 20)")
    parser.add_argument("--calibration-images", type=positive_int, default=64, help="default 64")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    add_report_arguments(parser, ROOT / "docs" / "benchmarks" / "int16x8.md")
    return parser.parse_args(argv)


def measure(args) -> dict:
    import keras
    import numpy as np

    import nin_keras
    from nin_keras.verification import benchmark_interleaved, load_artifact

    results = {}
    with tempfile.TemporaryDirectory(prefix="nin_keras_int16x8_") as tmp:
        for variant in VARIANTS:
            keras.utils.set_random_seed(args.seed)
            model = nin_keras.build_nin(10, variant=variant, name=f"nin_{variant}")
            shape = tuple(model.input_shape[1:])
            data = nin_keras.load_dataset("synthetic", input_shape=shape, num_classes=10,
                                          size=args.calibration_images, batch_size=32, validation_split=0.0,
                                          seed=args.seed)
            out_dir = Path(tmp) / variant
            nin_keras.export(model, out_dir, targets=["tflite_float32", "tflite_int8"], data=data, verify=False,
                             progress=False)
            started = time.perf_counter()
            manifest = nin_keras.export(model, out_dir, targets=["tflite_int16x8"], data=data, verify=False,
                                        progress=False).manifest.to_dict()
            export_seconds = time.perf_counter() - started
            files = {name: out_dir / manifest["targets"][name]["file"] for name in TIMED}
            latency = benchmark_interleaved(files, rounds=args.rounds, runs=args.runs, threads=args.threads)
            ms = {name: latency["artifacts"][name]["latency_ms"] for name in TIMED}
            log(f"{variant}: " + ", ".join(f"{name} {value:.2f} ms" for name, value in ms.items()))
            images = np.random.default_rng(args.seed).integers(0, 256, size=(128, *shape), dtype=np.uint8)
            batched = {}
            for name in ("tflite_int8", "tflite_int16x8"):
                runner = load_artifact(files[name], num_threads=args.threads)
                runner.predict(images[:64])
                started = time.perf_counter()
                runner.predict(images, batch_size=64)
                batched[name] = 1000 * (time.perf_counter() - started) / len(images)
            results[variant] = {"input_shape": list(shape), "latency_ms": ms, "int16x8_export_seconds": export_seconds,
                                "batch64_ms_per_image": batched,
                                "sizes": {name: files[name].stat().st_size for name in TIMED}}
    return {"variants": results}


def render(results: dict) -> str:
    lines = header_lines("int16x8 latency (tflite_int16x8 against int8 and float32)", results)
    lines += ["", "Batch-1 median of `interpreter.invoke()` in ms (LiteRT, "
              f"{results['settings']['threads']} threads), untrained default paper variants.", "",
              "| variant | input | float32 ms | int8 ms | int16x8 ms | int16x8 / float32 | int16x8 / int8 "
              "| int16x8 export s |", "|---|---|---|---|---|---|---|---|"]
    for variant, r in results["variants"].items():
        ms = r["latency_ms"]
        lines.append(f"| {variant} | {'x'.join(map(str, r['input_shape']))} | {ms['tflite_float32']:.2f} "
                     f"| {ms['tflite_int8']:.2f} | {ms['tflite_int16x8']:.2f} "
                     f"| {ms['tflite_int16x8'] / ms['tflite_float32']:.1f}x "
                     f"| {ms['tflite_int16x8'] / ms['tflite_int8']:.1f}x | {r['int16x8_export_seconds']:.1f} |")
    lines += ["", "Evaluating (what `nin-keras export --dataset` does after writing): `predict` in batches of 64, "
              "ms per image:", "", "| variant | int8 | int16x8 | 10,000 test images in int16x8 |", "|---|---|---|---|"]
    for variant, r in results["variants"].items():
        per_image = r["batch64_ms_per_image"]
        lines.append(f"| {variant} | {per_image['tflite_int8']:.2f} | {per_image['tflite_int16x8']:.2f} "
                     f"| {per_image['tflite_int16x8'] * 10:.0f} s |")
    lines += ["", "LiteRT runs 16-bit-activation files on its reference kernels: XNNPACK (which runs the float32 "
              "and int8 files here) does not take them, nor do the GPU delegate or the Edge TPU.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    run(TOOL, args, argv, measure, render)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
