"""`nin-keras benchmark train|infer`: training speed, and inference latency/throughput of artifacts.

Output contract (for scripts):
- `benchmark train` ends with the line `train_images_per_s=<number>`; with --json stdout is exactly one JSON
  object (the dict of `nin_keras.training.benchmark_training`, which holds `train_images_per_s`).
- `benchmark infer` ends with one line `latency_ms_batch1_median=<number>` per artifact, in the order given
  (the end-to-end batch-1 `predict` median; with --rounds N > 1, the median over the N interleaved rounds of
  each round's median); with --json stdout is exactly one JSON list, one dict per artifact in the order given:
  `benchmark_inference`'s dict, or with --rounds N > 1 the artifact's entry of `benchmark_interleaved` (per-round
  values, `latency_ms_batch1_median`, and for .tflite files `latency_ms_batch1_invoke_median`) plus rounds, runs,
  warmup and path; with two or more artifacts each dict also holds `fastest` (true for one) and `vs_fastest`.
- With two or more artifacts, a line `Fastest here: ...` before those last lines names the fastest (by
  `interpreter.invoke()` when all are .tflite files, else by the whole predict call).
"""

from __future__ import annotations

import json
import sys

from nin_keras.cli import CLIError
from nin_keras.cli.options import batch_size_count, non_negative_int, positive_int, thread_count, width_multiplier
from nin_keras.choices import VARIANT_NAMES


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
    # The names come from nin_keras.choices, not the presets: importing those loads Keras before the CLI
    # quiets TensorFlow.
    train.add_argument("--variant", default="cifar", choices=VARIANT_NAMES,
                       help="NIN variant (default cifar)")
    train.add_argument("--batch-size", type=batch_size_count, default=128, metavar="N", help="batch size (default 128)")
    train.add_argument("--steps", type=positive_int, default=30, metavar="N", help="timed steps (default 30)")
    train.add_argument("--warmup-steps", type=non_negative_int, default=5, metavar="N",
                       help="untimed steps first (default 5)")
    train.add_argument("--precision", default="auto", metavar="P",
                       help="auto, float32, mixed_bfloat16 or mixed_float16 (default auto)")
    train.add_argument("--width-multiplier", type=width_multiplier, default=1.0, metavar="X",
                       help="scale every hidden width (default 1.0)")
    train.add_argument("--no-batch-norm", dest="batch_norm", action="store_false", help="the paper's net, no BN")
    train.add_argument("--no-fused-batch-norm", dest="fused_batch_norm", action="store_false",
                       help="stock keras BatchNormalization instead of the fused layer (the plain-Keras baseline; "
                            "run with and without it at --precision float32 to measure the fused layer alone)")
    train.add_argument("--jit-compile", action="store_true", help="compile the train step with XLA")
    train.add_argument("--json", action="store_true", help="print the result as one JSON object")
    train.set_defaults(handler=benchmark_train_command)

    infer = commands.add_parser("infer", help="batch-1 latency and throughput of .keras/SavedModel/.tflite files",
                                description="Times each ARTIFACT on random raw-pixel images: median and p90 batch-1 "
                                            "latency, batched throughput; with --rounds N > 1, batch-1 latency "
                                            "only, the artifacts timed interleaved over N rounds (order "
                                            "alternating) and compared by medians. Last lines: "
                                            "latency_ms_batch1_median=<number>, one per artifact.")
    infer.add_argument("artifacts", nargs="+", metavar="ARTIFACT", help=".keras, SavedModel folder or .tflite")
    infer.add_argument("--threads", type=thread_count, default=2, metavar="N",
                       help="TFLite interpreter threads (default 2)")
    infer.add_argument("--runs", type=positive_int, default=50, metavar="N", help="timed batch-1 calls (default 50)")
    infer.add_argument("--warmup", type=non_negative_int, default=5, metavar="N",
                       help="untimed calls first (default 5)")
    infer.add_argument("--batch-size", type=batch_size_count, default=32, metavar="N",
                       help="batch of the throughput measurement (default 32; --rounds 1 only)")
    infer.add_argument("--rounds", type=positive_int, default=1, metavar="N",
                       help="N > 1: time the artifacts interleaved over N rounds, order alternating, and report "
                            "medians over rounds (fair comparisons on a busy machine; no throughput). Default 1")
    infer.add_argument("--json", action="store_true", help="print the results as one JSON list")
    infer.set_defaults(handler=benchmark_infer_command)


def _usage(parser) -> int:
    parser.print_help(sys.stderr)
    return 2


def benchmark_train_command(args) -> int:
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


def benchmark_infer_command(args) -> int:
    from nin_keras.verification import load_artifact

    runners = [load_artifact(path, num_threads=args.threads) for path in args.artifacts]  # all valid first
    results = _interleaved(args, runners) if args.rounds > 1 else _one_by_one(args, runners)
    ranking = _rank(args, results)
    if args.json:
        for path, result in zip(args.artifacts, results):
            result["path"] = str(path)
        print(json.dumps(results, indent=2))
        return 0
    if ranking is not None:
        print(_describe_ranking(args, ranking))
    for result in results:
        print(f"latency_ms_batch1_median={result['latency_ms_batch1_median']}")
    return 0


def _rank(args, results) -> dict | None:
    """`rank_by_latency` over the artifacts (None for one); each result gets `fastest` and `vs_fastest`."""
    from nin_keras.verification import rank_by_latency

    if len(results) < 2:
        return None
    # keyed by position: the same path may be given twice (without --rounds)
    ranking = rank_by_latency({str(index): result for index, result in enumerate(results)})
    for entry in ranking["ranking"]:
        results[int(entry["artifact"])].update(fastest=entry["artifact"] == ranking["fastest"],
                                               vs_fastest=entry["vs_fastest"])
    return ranking


def _describe_ranking(args, ranking) -> str:
    """One line: the fastest artifact here, on which measure, and how much slower each other one is."""
    from nin_keras.verification.latency import ranking_clauses

    def path(key: str) -> str:  # ranked by position (see _rank)
        return args.artifacts[int(key)]

    best = ranking["ranking"][0]
    measure = "interpreter.invoke()" if ranking["measure"] == "invoke" else "the whole predict call"
    how = (f"median of {args.rounds} interleaved rounds" if args.rounds > 1
           else "one after another: --rounds 5 is fairer")
    return (f"Fastest here: {path(best['artifact'])} ({best['latency_ms']:.3f} ms, {measure}, {how})"
            + ranking_clauses(ranking, label=path))


def _one_by_one(args, runners) -> list[dict]:
    """`benchmark_inference` of each runner in turn; prints the table unless --json."""
    from nin_keras.verification import benchmark_inference

    results = [benchmark_inference(runner, runs=args.runs, warmup=args.warmup, threads=args.threads,
                                   batch_size=args.batch_size) for runner in runners]
    if not args.json:
        _print_table(("artifact", "kind", "precision", "b1 median ms", "b1 p90 ms", "img/s (batch)", "threads"), [
            (r["artifact"], r["kind"], r["precision"], f"{r['latency_ms_batch1_median']:.3f}",
             f"{r['latency_ms_batch1_p90']:.3f}", f"{r['throughput_images_per_s']:.1f} ({r['throughput_batch_size']})",
             str(r["threads"]))
            for r in results
        ])
        print(f"({args.runs} timed batch-1 runs after {args.warmup} warm-up; TFLite threads {args.threads})")
    return results


def _interleaved(args, runners) -> list[dict]:
    """`benchmark_interleaved` over the runners (one entry per ARTIFACT, in order); prints the table unless --json."""
    from nin_keras.verification import benchmark_interleaved

    names = [str(path) for path in args.artifacts]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise CLIError(f"{', '.join(repeated)} is given more than once; --rounds compares distinct artifacts.")
    timing = benchmark_interleaved(dict(zip(names, runners)), rounds=args.rounds, runs=args.runs,
                                   warmup=args.warmup, threads=args.threads)
    results = [{**timing["artifacts"][name], "rounds": timing["rounds"], "runs": timing["runs"],
                "warmup": timing["warmup"]} for name in names]
    if not args.json:
        _print_table(("artifact", "kind", "precision", "invoke ms per round", "invoke median", "b1 median ms",
                      "threads"), [
            (r["artifact"], r["kind"], r["precision"],
             " ".join(f"{x:.3f}" for x in r["latency_ms_batch1_invoke_per_round"] or []) or "-",
             "-" if r["latency_ms_batch1_invoke_median"] is None else f"{r['latency_ms_batch1_invoke_median']:.3f}",
             f"{r['latency_ms_batch1_median']:.3f}", str(r["threads"]))
            for r in results
        ])
        print(f"({args.rounds} interleaved rounds, order alternating, of {args.runs} timed batch-1 runs after "
              f"{args.warmup} warm-up; medians over rounds; invoke = interpreter.invoke() alone (.tflite), "
              f"b1 = the whole predict call; TFLite threads {args.threads})")
    return results


def _print_table(header, rows) -> None:
    table = [header, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for index, row in enumerate(table):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if index == 0:
            print("  ".join("-" * width for width in widths))
