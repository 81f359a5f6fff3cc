#!/usr/bin/env python
"""Training benchmark: nin-keras' training step vs plain Keras, pipeline headroom, peak memory, bf16 accuracy.

Run from the repository root, on a quiet machine for the published numbers:

    .venv/bin/python tools/benchmark_train.py                      # docs/benchmarks/training.md and .json
    .venv/bin/python tools/benchmark_train.py --steps 3 --rounds 1 --accuracy-epochs 1 --out /tmp/t.md  # smoke
    .venv/bin/python tools/benchmark_train.py --precision float32  # the fused BN layer alone, both float32
    .venv/bin/python tools/benchmark_train.py --render docs/benchmarks/training.json  # re-render, no measuring

What it measures, all in ONE process configuration (no logical-device splitting):

1. Throughput, interleaved: each round runs "plain Keras" (stock keras BatchNormalization, float32), "ours"
   (FusedBatchNormalization under `--precision`, auto = mixed_bfloat16 on AVX512_BF16 CPUs) and, when that
   precision is not float32, the same model in float32, alternating the order, via
   `nin_keras.training.benchmark_training`. Reports each round, the medians and two ratios: ours / plain Keras,
   and ours / the same model in float32 (the issue's target for auto precision: >= 1.8x on the 2-core CPU, cifar
   variant with BN, batch 128; it does not apply where auto precision is float32, i.e. without bf16 hardware).
2. Input pipeline alone (`nin_keras.data.measure_pipeline_throughput`) on the training pipeline that
   `load_dataset` builds (synthetic images of the variant's shape, augmentation on), vs what training consumes
   (target: >= 10x).
3. Peak resident memory (ru_maxrss) of a cifar-variant `nin_keras.train` run at the benchmark batch size, in a
   fresh subprocess (target: < 3 GB).
4. Accuracy on digits: the same model, seeds and recipe trained under `auto` precision and under float32; the
   mean test accuracies must be within 0.5 percentage points.

Writes the Markdown report and, beside it, the raw measurements as JSON; the last stdout line is
`train_images_per_s=<ours, median>`. The section between `<!-- profile:start -->` and `<!-- profile:end -->` of
the report (written by tools/profile_train.py) is carried over when the report is rewritten.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from _bench import ROOT, add_report_arguments, header_lines, log, run
from profile_train import keep_section

# After _bench, which puts the checkout on sys.path:
from nin_keras.choices import VARIANT_NAMES
from nin_keras.cli.options import non_negative_int, positive_int

TOOL = "tools/benchmark_train.py"
TARGETS = {"ratio": 1.8, "pipeline_headroom": 10.0, "rss_gb": 3.0, "accuracy_pp": 0.5}

RSS_SCRIPT = textwrap.dedent("""
    import json, resource, sys, tempfile
    import nin_keras
    from nin_keras.models import get_preset
    variant, batch_size, steps, precision = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    shape = get_preset(variant).input_shape
    data = nin_keras.load_dataset("synthetic", input_shape=shape, num_classes=10, size=batch_size * steps,
                                  batch_size=batch_size, augment=True)
    model = nin_keras.build_nin(10, variant=variant)
    result = nin_keras.train(model, data, epochs=1, precision=precision, out_dir=tempfile.mkdtemp() + "/run",
                             verbose=0, tensorboard=False)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print("RSS " + json.dumps({"peak_rss_mb": peak_kib / 1024, "precision": result.precision,
                               "steps": steps, "batch_size": batch_size}))
""")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="cifar", choices=VARIANT_NAMES)
    parser.add_argument("--batch-size", type=positive_int, default=128)
    parser.add_argument("--steps", type=positive_int, default=30, help="timed steps per measurement (default 30)")
    parser.add_argument("--warmup-steps", type=non_negative_int, default=5, help="untimed steps first (default 5)")
    parser.add_argument("--rounds", type=positive_int, default=5, help="interleaved baseline/ours rounds (default 5)")
    parser.add_argument("--precision", default="auto", help="precision of 'ours' (default auto)")
    parser.add_argument("--jit-compile", action="store_true", help="XLA for 'ours' (try it on GPUs)")
    parser.add_argument("--pipeline-steps", type=positive_int, default=40,
                        help="batches timed for the pipeline (default 40)")
    parser.add_argument("--rss-steps", type=positive_int, default=8,
                        help="training steps of the memory run (default 8)")
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-memory subprocess")
    parser.add_argument("--accuracy-epochs", type=positive_int, default=30, help="digits epochs per run (default 30)")
    parser.add_argument("--accuracy-seeds", type=positive_int, default=4, help="seeds for the digits check (default 4)")
    parser.add_argument("--no-accuracy", action="store_true", help="skip the digits accuracy check")
    add_report_arguments(parser, ROOT / "docs" / "benchmarks" / "training.md")
    args = parser.parse_args(argv)
    return args


SAME_MODEL_FLOAT32 = "nin-keras (FusedBatchNormalization, float32)"


def measure_throughput(args):
    from nin_keras.training import benchmark_training, choose_precision

    common = dict(variant=args.variant, batch_size=args.batch_size, steps=args.steps,
                  warmup_steps=args.warmup_steps)
    configs = {
        "plain Keras (keras BatchNormalization, float32)":
            dict(precision="float32", fused_batch_norm=False, jit_compile=False),
        f"nin-keras (FusedBatchNormalization, precision {args.precision})":
            dict(precision=args.precision, fused_batch_norm=True, jit_compile=args.jit_compile),
    }
    if choose_precision(args.precision).policy != "float32":  # else "ours" already is the float32 model
        configs[SAME_MODEL_FLOAT32] = dict(precision="float32", fused_batch_norm=True, jit_compile=args.jit_compile)
    names = list(configs)
    rounds = []
    for index in range(args.rounds):
        order = names if index % 2 == 0 else names[::-1]
        row = {}
        for name in order:
            result = benchmark_training(**common, **configs[name])
            row[name] = result
            log(f"round {index + 1}/{args.rounds}: {name}: {result['train_images_per_s']:.1f} img/s "
                f"({result['precision']})")
        rounds.append(row)
    medians = {name: statistics.median(r[name]["train_images_per_s"] for r in rounds) for name in names}
    return names, rounds, medians


def measure_pipeline(args, consumed):
    from nin_keras.data import load_dataset, measure_pipeline_throughput
    from nin_keras.models import get_preset

    shape = get_preset(args.variant).input_shape
    size = max(args.batch_size * 8, 1024)
    data = load_dataset("synthetic", input_shape=shape, num_classes=10, size=size, batch_size=args.batch_size,
                        augment=True, validation_split=0.0)
    rate = measure_pipeline_throughput(data.train, steps=args.pipeline_steps)
    return {"pipeline_images_per_s": rate, "training_images_per_s": consumed, "headroom": rate / consumed,
            "dataset": f"synthetic {shape[0]}x{shape[1]}x{shape[2]}, {size} images, augment=True (pad+crop+flip), "
                       f"batch {args.batch_size}"}


def measure_rss(args):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=os.environ.get("CUDA_VISIBLE_DEVICES", ""))
    env.pop("TF_CONFIG", None)
    command = [sys.executable, "-c", RSS_SCRIPT, args.variant, str(args.batch_size), str(args.rss_steps),
               args.precision]
    completed = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=1800)
    if completed.returncode != 0:
        raise RuntimeError(f"memory run failed: {completed.stderr[-2000:]}")
    line = next(l for l in completed.stdout.splitlines() if l.startswith("RSS "))
    return json.loads(line[4:])


def measure_accuracy(args):
    import keras

    import nin_keras
    from nin_keras.training import choose_precision, train

    auto = choose_precision(args.precision).policy
    results = {auto: [], "float32": []} if auto != "float32" else {"float32": []}
    for seed in range(args.accuracy_seeds):
        for policy in results:
            keras.utils.set_random_seed(seed)
            data = nin_keras.load_dataset("digits", batch_size=32, seed=seed)
            model = nin_keras.build_nin(10, variant="mnist", input_shape=tuple(data.input_shape), width_multiplier=0.5)
            with tempfile.TemporaryDirectory() as folder:
                result = train(model, data, epochs=args.accuracy_epochs, precision=policy, seed=seed,
                               recipe="paper", out_dir=Path(folder) / "run", verbose=0, tensorboard=False)
            results[policy].append(result.test["accuracy"])
            log(f"digits seed {seed}: {policy}: test accuracy {100 * result.test['accuracy']:.2f}%")
    means = {policy: statistics.mean(values) for policy, values in results.items()}
    gap = 100 * (means.get(auto, means["float32"]) - means["float32"])
    return {"policy": auto, "per_seed": results, "means": means, "gap_pp": gap,
            "setup": f"digits (scikit-learn 8x8), mnist variant width 0.5 with BN at 8x8x1, paper recipe "
                     f"(SGD 0.1, momentum 0.9, wd 1e-4, step decay), batch 32, {args.accuracy_epochs} epochs, "
                     f"seeds 0..{args.accuracy_seeds - 1}, best-by-val_accuracy model on the test split"}


def measure(args) -> dict:
    names, rounds, medians = measure_throughput(args)
    pipeline = measure_pipeline(args, medians[names[1]])
    log(f"pipeline: {pipeline['pipeline_images_per_s']:.0f} img/s ({pipeline['headroom']:.0f}x training)")
    rss = None if args.no_rss else measure_rss(args)
    if rss:
        log(f"peak RSS: {rss['peak_rss_mb']:.0f} MB")
    accuracy = None if args.no_accuracy else measure_accuracy(args)
    same_model = medians[names[1]] / medians[SAME_MODEL_FLOAT32] if SAME_MODEL_FLOAT32 in medians else None
    return {"targets": TARGETS, "names": names, "rounds": rounds, "medians": medians,
            "ratio": medians[names[1]] / medians[names[0]], "ratio_same_model_float32": same_model,
            "pipeline": pipeline, "rss": rss, "accuracy": accuracy}


def verdict(ok):
    return "yes" if ok else "NO"


def render(results) -> str:
    from nin_keras.machine import describe_device

    s, target = results["settings"], results["targets"]
    names, rounds, medians = results["names"], results["rounds"], results["medians"]
    ours = rounds[0][names[1]]
    lines = header_lines("Training benchmark", results) + [
        f"- Device: {describe_device(results['machine'])}",
        f"- Model: NIN `{s['variant']}` variant with BN, {ours['params']:,} parameters, batch {s['batch_size']}, "
        f"SGD momentum 0.9, synthetic data held in memory; {s['warmup_steps']} warm-up steps excluded, "
        f"{s['steps']} timed steps per measurement; {s['rounds']} interleaved rounds (order alternates).",
        f"- 'ours' precision: {ours['precision']} ({ours['precision_reason']})",
        "", "## Training throughput (images/s)", "", "| round | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names)]
    for index, row in enumerate(rounds, start=1):
        lines.append(f"| {index} | " + " | ".join(f"{row[n]['train_images_per_s']:.1f}" for n in names) + " |")
    lines.append("| **median** | " + " | ".join(f"**{medians[n]:.1f}**" for n in names) + " |")
    lines += ["", f"Ratio of medians, ours / plain Keras: **{results['ratio']:.2f}x**.", ""]
    same_model = results.get("ratio_same_model_float32")
    if same_model is not None:
        lines += [f"Ratio of medians, ours ({ours['precision']}) / the same model in float32: **{same_model:.2f}x** "
                  f"(target >= {target['ratio']}x: {verdict(same_model >= target['ratio'])}).", ""]
    elif "ratio_same_model_float32" in results and ours["precision"] == "float32":
        lines += [f"'Ours' runs in float32 here ({ours['precision_reason']}): it is the same model in float32, so "
                  f"the {target['ratio']}x target (bf16 against float32) does not apply on this machine; it needs a "
                  "CPU with AVX512_BF16 or AMX.", ""]
    pipeline, rss, accuracy = results["pipeline"], results["rss"], results["accuracy"]
    if pipeline:
        lines += ["## Input pipeline headroom", "",
                  f"Pipeline alone: {pipeline['pipeline_images_per_s']:.0f} images/s ({pipeline['dataset']}); "
                  f"training consumes {pipeline['training_images_per_s']:.1f} images/s (ours, median): "
                  f"**{pipeline['headroom']:.0f}x** (target >= {target['pipeline_headroom']:.0f}x: "
                  f"{verdict(pipeline['headroom'] >= target['pipeline_headroom'])}).", ""]
    if rss:
        lines += ["## Peak memory", "",
                  f"Peak resident memory (ru_maxrss) of a fresh process running `nin_keras.train` on the "
                  f"`{s['variant']}` variant, batch {rss['batch_size']}, {rss['steps']} steps + validation + "
                  f"test evaluation + saving, precision {rss['precision']}: **{rss['peak_rss_mb']:.0f} MB** "
                  f"(target < {target['rss_gb']:.0f} GB: {verdict(rss['peak_rss_mb'] / 1024 < target['rss_gb'])}).", ""]
    if accuracy:
        lines += accuracy_section(accuracy, target)
    lines += ["## Notes", "",
              "A shared machine is noisy, so the two configurations run interleaved in one process and the report "
              "compares medians; no logical-device splitting is used. On a GPU, `--precision auto` picks "
              "mixed_bfloat16 (compute capability >= 8.0) or mixed_float16 (7.x); try `--jit-compile` there.", ""]
    return "\n".join(lines)


def accuracy_section(accuracy, target) -> list[str]:
    means, seeds = accuracy["means"], len(accuracy["per_seed"]["float32"])
    lines = ["## Accuracy: auto precision vs float32", "", accuracy["setup"] + ".", "",
             "| precision | " + " | ".join(f"seed {i}" for i in range(seeds)) + " | mean |",
             "|---|" + "---|" * (seeds + 1)]
    for policy, values in accuracy["per_seed"].items():
        lines.append(f"| {policy} | " + " | ".join(f"{100 * v:.2f}%" for v in values)
                     + f" | {100 * means[policy]:.2f}% |")
    gap, bound = accuracy["gap_pp"], target["accuracy_pp"]
    return lines + ["", f"Difference (auto - float32): **{gap:+.2f} percentage points** (target within {bound} pp: "
                        f"{verdict(abs(gap) <= bound)}).", ""]


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    previous = out.read_text(encoding="utf-8") if out.exists() else None
    results = run(TOOL, args, argv, measure, lambda results: keep_section(previous, render(results)))
    print(f"train_images_per_s={results['medians'][results['names'][1]]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
