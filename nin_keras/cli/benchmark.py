"""`nin-keras benchmark train|infer`: training speed, and inference latency/throughput of artifacts.

Output contract (for scripts):
- `benchmark train` ends with the line `train_images_per_s=<number>`; with --json stdout is exactly one JSON
  object (the dict of `nin_keras.training.benchmark_training`, which holds `train_images_per_s`).
- `benchmark infer` ends with one line `latency_ms_batch1_median=<number>` per artifact, in the order given;
  with --json stdout is exactly one JSON list (one `benchmark_inference` dict per artifact).
"""

from __future__ import annotations

import json
import sys

from nin_keras.cli.options import non_negative_int, positive_float, positive_int






def register(subparsers) -> None:
    import argparse

    parser = subparsers.add_parser("benchmark", help="training speed, or inference latency of artifacts",
                                   description=__doc__.split("\n\n", 1)[1],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="benchmark_command", metavar="{train,infer}",
                                     parser_class=type(parser))
    parser.set_defaults(handler=lambda args: _usage(parser))

    train = commands.add_parser("train", help="training images/s of a NIN on synthetic data",
                                description="Trains a NIN on synthetic data for a few steps and reports images/s "
                                            "(warm-up excluded). Last line: train_images_per_s=<number>.")
    # No `choices`: reading the presets would import Keras before the CLI quiets TensorFlow.
    train.add_argument("--variant", default="cifar", metavar="NAME",
                       help="NIN variant: cifar, mnist, imagenet or d2l (default cifar)")
    train.add_argument("--batch-size", type=positive_int, default=128, metavar="N", help="batch size (default 128)")
    train.add_argument("--steps", type=positive_int, default=30, metavar="N", help="timed steps (default 30)")
    train.add_argument("--warmup-steps", type=non_negative_int, default=5, metavar="N",
                       help="untimed steps first (default 5)")
    train.add_argument("--precision", default="auto", metavar="P",
                       help="auto, float32, mixed_bfloat16 or mixed_float16 (default auto)")
    train.add_argument("--width-multiplier", type=positive_float, default=1.0, metavar="X",
                       help="scale every hidden width (default 1.0)")
    train.add_argument("--no-batch-norm", dest="batch_norm", action="store_false", help="the paper's net, no BN")
    train.add_argument("--no-fused-batch-norm", dest="fused_batch_norm", action="store_false",
                       help="stock keras BatchNormalization (the plain-Keras baseline)")
    train.add_argument("--jit-compile", action="store_true", help="compile the train step with XLA")
    train.add_argument("--json", action="store_true", help="print the result as one JSON object")
    train.set_defaults(handler=run_train)

    infer = commands.add_parser("infer", help="batch-1 latency and throughput of .keras/SavedModel/.tflite files",
                                description="Times each ARTIFACT on random raw-pixel images: median and p90 batch-1 "
                                            "latency, batched throughput. Last lines: "
                                            "latency_ms_batch1_median=<number>, one per artifact.")
    infer.add_argument("artifacts", nargs="+", metavar="ARTIFACT", help=".keras, SavedModel folder or .tflite")
    infer.add_argument("--threads", type=positive_int, default=2, metavar="N",
                       help="TFLite interpreter threads (default 2)")
    infer.add_argument("--runs", type=positive_int, default=50, metavar="N", help="timed batch-1 calls (default 50)")
    infer.add_argument("--warmup", type=non_negative_int, default=5, metavar="N",
                       help="untimed calls first (default 5)")
    infer.add_argument("--batch-size", type=positive_int, default=32, metavar="N",
                       help="batch of the throughput measurement (default 32)")
    infer.add_argument("--json", action="store_true", help="print the results as one JSON list")
    infer.set_defaults(handler=run_infer)


def _usage(parser) -> int:
    parser.print_help(sys.stderr)
    return 2


def run_train(args) -> int:
    from nin_keras.training import benchmark_training

    result = benchmark_training(
        variant=args.variant, batch_size=args.batch_size, steps=args.steps, warmup_steps=args.warmup_steps,
        precision=args.precision, width_multiplier=args.width_multiplier, batch_norm=args.batch_norm,
        fused_batch_norm=args.fused_batch_norm, jit_compile=args.jit_compile,
    )
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return 0
    precision = result.get("precision", args.precision)
    if isinstance(precision, dict):
        precision = precision.get("policy", precision)
    print(f"{result.get('variant', args.variant)} NIN, batch {result.get('batch_size', args.batch_size)}, "
          f"{result.get('steps', args.steps)} timed steps after {args.warmup_steps} warm-up, "
          f"precision {precision}, on {result.get('device', '?')}")
    print(f"train_images_per_s={float(result['train_images_per_s']):.1f}")
    return 0


def run_infer(args) -> int:
    from nin_keras.verification import benchmark_inference, load_artifact

    runners = [load_artifact(path, num_threads=args.threads) for path in args.artifacts]  # all valid first
    results = [benchmark_inference(runner, runs=args.runs, warmup=args.warmup, threads=args.threads,
                                   batch_size=args.batch_size) for runner in runners]
    if args.json:
        for path, result in zip(args.artifacts, results):
            result["path"] = str(path)
        print(json.dumps(results, indent=2))
        return 0
    header = ("artifact", "kind", "precision", "b1 median ms", "b1 p90 ms", "img/s (batch)", "threads")
    table = [header] + [
        (r["artifact"], r["kind"], r["precision"], f"{r['latency_ms_batch1_median']:.3f}",
         f"{r['latency_ms_batch1_p90']:.3f}", f"{r['throughput_images_per_s']:.1f} ({r['throughput_batch_size']})",
         str(r["threads"]))
        for r in results
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for index, row in enumerate(table):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if index == 0:
            print("  ".join("-" * width for width in widths))
    print(f"({args.runs} timed batch-1 runs after {args.warmup} warm-up; TFLite threads {args.threads})")
    for result in results:
        print(f"latency_ms_batch1_median={result['latency_ms_batch1_median']}")
    return 0
