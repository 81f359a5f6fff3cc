#!/usr/bin/env python
"""Export benchmark: size, speed and accuracy of the exported artifacts against the project's targets.

Run from the repository root, on a quiet machine for the published numbers:

    .venv/bin/python tools/benchmark_export.py                          # docs/benchmarks/export.md and .json
    .venv/bin/python tools/benchmark_export.py --quick --out /tmp/e.md  # smoke check (a few minutes)
    .venv/bin/python tools/benchmark_export.py --render docs/benchmarks/export.json  # re-render, no measuring

Scenarios, all through the public API:

1. Paper variants, untrained (seeded) weights: `build_nin(10, variant="cifar")` and `variant="mnist"`, exported
   to every target by `nin_keras.export(..., targets="all")` (post-training quantization calibrated on random
   raw-pixel images). Measured: the export's wall time, int8/float32 file size, int8/float32 batch-1 latency
   (`nin_keras.verification.benchmark_interleaved`: the .tflite files timed in alternating rounds, compared by
   the median of `interpreter.invoke()`), and top-1 agreement of the float32 .tflite with Keras on random images.
2. Digits (scikit-learn's 8x8 digits, offline): the mnist variant at 8x8x1, width 0.5, trained by
   `nin_keras.train`, exported with post-training quantization (PTQ) and with quantization-aware training (QAT);
   accuracy of each artifact on the test split against the Keras model.

Writes the Markdown report and, beside it, the raw measurements as JSON; progress goes to stderr. Exit code 1
when a target is missed.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _bench import ROOT, add_report_arguments, fill_defaults, header_lines, log, name_list, run

# After _bench, which puts the checkout on sys.path:
from nin_keras.cli.options import non_negative_int, positive_int
from nin_keras.formatting import Column, artifact_columns, artifact_markdown, format_number, format_percent, format_size

TOOL = "tools/benchmark_export.py"
# The project's targets: each check below compares a measurement with one of these.
TARGETS = {"latency_ratio": 0.35, "size_ratio": 0.27, "agreement": 0.999, "qat_drop_pp": 0.5, "ptq_drop_pp": 1.5,
           "export_seconds": 180.0}
PAPER_VARIANTS = ("cifar", "mnist")
PARTS = (*PAPER_VARIANTS, "digits")
# float32 and int8 first: neighbours in every round (the order alternates), so load drifts hit both alike.
TIMED_TARGETS = ("tflite_float32", "tflite_int8", "tflite_float16", "tflite_dynamic")
DIGITS_SETUP = {"width_multiplier": 0.5, "recipe": "adam", "learning_rate": 3e-3, "precision": "float32",
                "batch_size": 32, "validation_split": 0.1}
# quick smoke run, full run
DEFAULTS = {"rounds": (2, 5), "runs": (10, 50), "epochs": (2, 30), "qat_epochs": (1, 3),
            "agreement_images": (64, 1000), "calibration_images": (64, 256)}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer rounds, epochs and images; the "
                                                             "numbers are NOT representative")
    parser.add_argument("--threads", type=positive_int, default=2, help="TFLite interpreter threads (default 2)")
    parser.add_argument("--rounds", type=positive_int, default=None,
                        help="interleaved latency rounds (default 5; quick 2)")
    parser.add_argument("--runs", type=positive_int, default=None,
                        help="timed batch-1 calls per model and round (default 50; quick 10)")
    parser.add_argument("--epochs", type=positive_int, default=None,
                        help="digits training epochs (default 30; quick 2)")
    parser.add_argument("--qat-epochs", type=positive_int, default=None, help="digits QAT epochs (default 3; quick 1)")
    parser.add_argument("--agreement-images", type=positive_int, default=None,
                        help="random images for the paper variants' float32 agreement (default 1000; quick 64)")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated parts to run, of {', '.join(PARTS)} (default all)")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="seed of weights, data split and images (default 0)")
    parser.add_argument("--work-dir", default=None,
                        help="keep the exports here (default: a temporary folder, removed at the end)")
    add_report_arguments(parser, ROOT / "docs" / "benchmarks" / "export.md")
    args = parser.parse_args(argv)
    fill_defaults(args, DEFAULTS)
    args.warmup = max(2, args.runs // 10)
    parts = name_list(parser, "--parts", args.parts, PARTS)
    args.parts = [p for p in PARTS if p in parts]
    return args


# -------------------------------------------------------------------------------------------- measuring


def time_tflite(paths: dict, args, label: str) -> dict:
    from nin_keras.verification import benchmark_interleaved

    log(f"{label}: batch-1 latency, {args.threads} threads, {args.rounds} interleaved rounds of {args.runs} runs")
    return benchmark_interleaved(
        paths, rounds=args.rounds, runs=args.runs, warmup=args.warmup, threads=args.threads,
        on_round=lambda index, ms: log(f"  round {index + 1}/{args.rounds}: "
                                       + ", ".join(f"{name} {value:.3f} ms" for name, value in ms.items())))


def latency_ratio(latency: dict, numerator: str, denominator: str) -> float:
    entries = latency["artifacts"]
    return entries[numerator]["latency_ms"] / entries[denominator]["latency_ms"]


def paper_variant(variant: str, args, work_dir: Path) -> dict:
    """Exports an untrained paper variant to every target: export time, sizes, latency, float32 agreement."""
    import keras
    import numpy as np

    import nin_keras

    keras.utils.set_random_seed(args.seed)
    model = nin_keras.build_nin(10, variant=variant, name=f"nin_{variant}")
    shape = tuple(model.input_shape[1:])
    data = nin_keras.load_dataset("synthetic", input_shape=shape, num_classes=10, size=args.calibration_images,
                                  batch_size=32, validation_split=0.0, seed=args.seed)
    out_dir = work_dir / f"paper_{variant}"
    log(f"{variant}: {model.count_params():,} parameters, input {shape}; exporting every target")
    started = time.perf_counter()
    manifest = nin_keras.export(model, out_dir, targets="all", data=data, verify=False,
                                progress=False).manifest.to_dict()
    export_seconds = time.perf_counter() - started
    log(f"{variant}: export of all targets took {export_seconds:.1f} s")

    latency = time_tflite({name: out_dir / manifest["targets"][name]["file"] for name in TIMED_TARGETS}, args, variant)
    rng = np.random.default_rng(args.seed + 1)
    images = rng.integers(0, 256, size=(args.agreement_images, *shape), dtype=np.uint8)
    agreement = nin_keras.evaluate(out_dir / manifest["targets"]["tflite_float32"]["file"],
                                   (images, np.zeros(len(images), dtype=np.int64)), reference=model,
                                   progress=False)["agreement"]
    log(f"{variant}: float32 TFLite vs Keras top-1 agreement {100 * agreement:.2f}% on {len(images)} random images")
    sizes = {name: entry["size_bytes"] for name, entry in manifest["targets"].items()}
    return {"input_shape": list(shape), "parameters": int(model.count_params()),
            "calibration_images": manifest.get("representative_samples"), "export_seconds": export_seconds,
            "targets": manifest["targets"], "size_ratio": sizes["tflite_int8"] / sizes["tflite_float32"],
            "latency": latency, "latency_ratio": latency_ratio(latency, "tflite_int8", "tflite_float32"),
            "agreement": agreement, "agreement_images": len(images)}


def digits(args, work_dir: Path) -> dict:
    """Trains the mnist variant on digits; accuracy of every artifact, PTQ and QAT, against the float model."""
    import keras

    import nin_keras
    from nin_keras.training import RECIPES

    data = nin_keras.load_dataset("digits", batch_size=DIGITS_SETUP["batch_size"],
                                  validation_split=DIGITS_SETUP["validation_split"], seed=args.seed)
    keras.utils.set_random_seed(args.seed)
    model = nin_keras.build_nin(data.num_classes, variant="mnist", input_shape=tuple(data.input_shape),
                                width_multiplier=DIGITS_SETUP["width_multiplier"], name="nin_digits")
    log(f"digits: training {model.count_params():,} parameters for {args.epochs} epochs")
    seconds = {}
    started = time.perf_counter()
    recipe = dataclasses.replace(RECIPES[DIGITS_SETUP["recipe"]],
                                 learning_rate=DIGITS_SETUP["learning_rate"])
    model = nin_keras.train(model, data, epochs=args.epochs, recipe=recipe, precision=DIGITS_SETUP["precision"],
                            out_dir=work_dir / "digits_train", overwrite=True, seed=args.seed, tensorboard=False,
                            verbose=0).model
    seconds["train"] = time.perf_counter() - started
    exports = {}
    for kind, targets, qat_epochs in (("ptq", "all", 0), ("qat", ["tflite_int8", "edgetpu"], args.qat_epochs)):
        started = time.perf_counter()
        exports[kind] = nin_keras.export(model, work_dir / f"digits_{kind}", targets=targets, data=data,
                                         qat_epochs=qat_epochs, verify=False, progress=False).manifest.to_dict()
        seconds[kind] = time.perf_counter() - started
        log(f"digits: {kind.upper()} export in {seconds[kind]:.1f} s")

    def file(kind, target):
        return work_dir / f"digits_{kind}" / exports[kind]["targets"][target]["file"]

    artifacts = {"keras": model, **{t: file("ptq", t) for t in ("tflite_float32", "tflite_float16", "tflite_dynamic")},
                 "ptq_int8": file("ptq", "tflite_int8"), "qat_int8": file("qat", "tflite_int8"),
                 "qat_edgetpu": file("qat", "edgetpu")}
    rows = {}
    for name, artifact in artifacts.items():
        result = nin_keras.evaluate(artifact, data, reference=None if name == "keras" else model, progress=False)
        rows[name] = {"accuracy": result["accuracy"], "agreement": result["agreement"],
                      "num_examples": result["num_examples"],
                      "size_bytes": None if name == "keras" else Path(artifact).stat().st_size}
        log(f"digits: {name:<15} accuracy {100 * result['accuracy']:.2f}%")
    float_accuracy = rows["keras"]["accuracy"]
    latency = time_tflite({name: artifacts[name] for name in ("tflite_float32", "ptq_int8", "qat_int8")}, args,
                          "digits")
    sizes = (data.info or {}).get("sizes") or {}
    return {"setup": DIGITS_SETUP, "parameters": int(model.count_params()), "seconds": seconds,
            "representative_samples": exports["ptq"].get("representative_samples"), "rows": rows,
            "ptq_drop_pp": 100 * (float_accuracy - rows["ptq_int8"]["accuracy"]),
            "qat_drop_pp": 100 * (float_accuracy - rows["qat_int8"]["accuracy"]), "latency": latency,
            "qat_targets": exports["qat"]["targets"],
            "splits": {name: int(sizes[name]) for name in ("train", "validation", "test") if sizes.get(name)}}


def measure(args) -> dict:
    started = time.perf_counter()
    paper, digits_result, stage_seconds = {}, None, {}
    with tempfile.TemporaryDirectory(prefix="nin_keras_export_bench_") as temporary:
        work_dir = Path(args.work_dir or temporary)
        for part in args.parts:
            tick = time.perf_counter()
            if part == "digits":
                digits_result = digits(args, work_dir)
            else:
                paper[part] = paper_variant(part, args, work_dir)
            stage_seconds[part] = time.perf_counter() - tick
    return {"targets": TARGETS, "paper": paper, "digits": digits_result, "stage_seconds": stage_seconds,
            "seconds": time.perf_counter() - started}


# ------------------------------------------------------------------------------------------------ report


def checks(results) -> list[dict]:
    """One row per target met or missed: what, where, measured, target, ok."""
    target, rows = results["targets"], []

    def row(what, where, measured, bound, ok):
        rows.append(dict(what=what, where=where, measured=measured, target=bound, ok=bool(ok)))

    for variant, r in results["paper"].items():
        row("int8 / float32 TFLite batch-1 latency (invoke, median of rounds)", f"{variant} variant",
            f"{r['latency_ratio']:.3f}", f"<= {target['latency_ratio']}", r["latency_ratio"] <= target["latency_ratio"])
        row("int8 / float32 TFLite size", f"{variant} variant", f"{r['size_ratio']:.3f}",
            f"<= {target['size_ratio']}", r["size_ratio"] <= target["size_ratio"])
    cifar, d = results["paper"].get("cifar"), results["digits"]
    if cifar:
        row("float32 TFLite top-1 agreement with Keras",
            f"cifar variant, {cifar['agreement_images']} random images, untrained weights",
            format_percent(cifar["agreement"]),
            f">= {100 * target['agreement']:.1f}%", cifar["agreement"] >= target["agreement"])
    if d:
        agreement = d["rows"]["tflite_float32"]["agreement"]
        row("float32 TFLite top-1 agreement with Keras",
            f"digits test split, {d['rows']['keras']['num_examples']} images, trained", format_percent(agreement),
            f">= {100 * target['agreement']:.1f}%", agreement >= target["agreement"])
        for kind in ("qat", "ptq"):
            drop = d[f"{kind}_drop_pp"]
            row(f"{kind.upper()} int8 accuracy drop vs float Keras", "digits test split", f"{drop:+.2f} pp",
                f"<= {target[f'{kind}_drop_pp']} pp", drop <= target[f"{kind}_drop_pp"])
    if cifar:
        row("export of all targets, no QAT", f"cifar variant, {results['machine']['cores']} cores",
            f"{cifar['export_seconds']:.1f} s", f"< {target['export_seconds']:.0f} s",
            cifar["export_seconds"] < target["export_seconds"])
    return rows


def render(results) -> str:
    s = results["settings"]
    rows = checks(results)
    lines = header_lines("Export benchmarks", results) + [
        f"- Latency: `nin_keras.verification.benchmark_interleaved`, {s['threads']} TFLite threads, batch 1, "
        f"{s['rounds']} rounds (order alternating) of {s['runs']} timed calls per model after {s['warmup']} warm-up "
        "calls; compared: the median over rounds of each round's median `interpreter.invoke()` time",
        f"- Parts run: {', '.join(s['parts'])}; {results['seconds']:.0f} s in all ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in results["stage_seconds"].items()) + ")",
        "", f"## Targets: {sum(r['ok'] for r in rows)} of {len(rows)} met", "",
        "| target | measured on | measured | target | result |", "|---|---|---:|---:|---|",
        *(f"| {r['what']} | {r['where']} | {r['measured']} | {r['target']} | {'PASS' if r['ok'] else '**FAIL**'} |"
          for r in rows),
        "", "An accuracy drop is float minus int8 accuracy (negative: the int8 model scored higher).", ""]
    for variant, r in results["paper"].items():
        lines += paper_section(variant, r, results)
    if results["digits"]:
        lines += digits_section(results["digits"], s)
    lines += ["## Notes", "",
              "- A shared machine is noisy, so the models are timed interleaved in one process and compared by "
              "medians; the per-round ratios show how steady a ratio was.",
              "- Random images and untrained weights check the conversion, not accuracy; accuracy is measured on "
              "digits.", "", "Reproduce: `" + results["command"] + "`", ""]
    return "\n".join(lines)


def latency_table(latency: dict, numerator: str, denominator: str) -> list[str]:
    """Per-round invoke times of each model, the median, and the numerator/denominator ratio per round."""
    entries = latency["artifacts"]
    base = entries[denominator]["latency_ms"]
    lines = ["| model | " + " | ".join(f"round {i + 1}" for i in range(latency["rounds"])) + " | median | vs "
             + denominator + " |", "|---|" + "---:|" * (latency["rounds"] + 2)]
    for name, entry in entries.items():
        lines.append(f"| {name} | " + " | ".join(f"{x:.3f}" for x in entry["latency_ms_batch1_invoke_per_round"])
                     + f" | **{entry['latency_ms']:.3f}** | {entry['latency_ms'] / base:.2f}x |")
    ratios = [n / d for n, d in zip(entries[numerator]["latency_ms_batch1_invoke_per_round"],
                                    entries[denominator]["latency_ms_batch1_invoke_per_round"])]
    lines.append(f"| {numerator} / {denominator}, per round | " + " | ".join(f"{x:.2f}" for x in ratios)
                 + f" | {statistics.median(ratios):.2f} | |")
    lines += ["", "End to end from Python (the whole `predict` call, median ms): "
              + ", ".join(f"{name} {e['latency_ms_batch1_median']:.3f}" for name, e in entries.items()) + "."]
    return lines


def paper_section(variant: str, r: dict, results: dict) -> list[str]:
    shape = "x".join(str(d) for d in r["input_shape"])
    f32, i8 = r["targets"]["tflite_float32"]["size_bytes"], r["targets"]["tflite_int8"]["size_bytes"]
    lines = [f"## Paper {variant} variant: `build_nin(10, variant=\"{variant}\")`, input {shape}", "",
             f"{r['parameters']:,} parameters, untrained (seeded) weights. `nin_keras.export(model, dir, "
             f"targets=\"all\", data=...)`, no QAT, calibrated on {r['calibration_images']} random raw-pixel images: "
             f"**{r['export_seconds']:.1f} s** in all.", "",
             "| target | file | size | conversion time | input | ops |", "|---|---|---:|---:|---|---|"]
    for name, entry in r["targets"].items():
        lines.append(f"| {name} | {entry['file']} | {format_size(entry['size_bytes'])} | {entry['seconds']:.1f} s | "
                     f"{_io(entry)} | {_ops(entry)} |")
    lines += ["", f"Batch-1 `invoke()` latency, {results['settings']['threads']} threads (ms):", ""]
    lines += latency_table(r["latency"], "tflite_int8", "tflite_float32")
    lines += ["", f"- int8 / float32 size: {i8:,} / {f32:,} bytes = **{r['size_ratio']:.3f}**.",
              f"- int8 / float32 latency: **{r['latency_ratio']:.3f}**.",
              f"- float32 TFLite top-1 agreement with Keras on {r['agreement_images']} random images: "
              f"**{format_percent(r['agreement'])}**."]
    if "edgetpu" in r["targets"]:
        edgetpu = r["targets"]["edgetpu"]
        lines.append(f"- Edge TPU check of {edgetpu['file']}: {_edgetpu_line(edgetpu)}.")
    gpu = (r["targets"].get("tflite_float16") or {}).get("gpu_compatibility")
    if gpu:
        lines.append(f"- GPU-delegate analysis of {r['targets']['tflite_float16']['file']}: {gpu.get('summary')}.")
    digits_result = results["digits"]
    if digits_result:  # the tiny digits model computes almost nothing: its time is the cost of a call
        floor = min(e["latency_ms"] for e in digits_result["latency"]["artifacts"].values())
        share = floor / r["latency"]["artifacts"]["tflite_int8"]["latency_ms"]
        lines.append(f"- Per-call floor (the fastest digits model below): {floor:.3f} ms, {100 * share:.0f}% of this "
                     "model's int8 time.")
    return lines + [""]


def digits_section(d: dict, s: dict) -> list[str]:
    setup, rows = d["setup"], d["rows"]
    splits = ", ".join(f"{name} {count}" for name, count in d["splits"].items())
    lines = ["## Digits: PTQ and QAT against the float model", "",
             f"scikit-learn's 8x8 digits, `load_dataset(\"digits\")` ({splits}; seed {s['seed']}). Model: "
             f"`build_nin(10, variant=\"mnist\", input_shape=(8, 8, 1), width_multiplier={setup['width_multiplier']})`"
             f", {d['parameters']:,} parameters, `nin_keras.train` recipe {setup['recipe']} (learning rate "
             f"{setup['learning_rate']}), {setup['precision']}, batch {setup['batch_size']}, {s['epochs']} epochs "
             f"({d['seconds']['train']:.0f} s). PTQ: `nin_keras.export(model, dir, targets=\"all\", data=splits)`, "
             f"calibrated on {d['representative_samples']} training images ({d['seconds']['ptq']:.0f} s). QAT: "
             f"`nin_keras.export(..., targets=[\"tflite_int8\", \"edgetpu\"], qat_epochs={s['qat_epochs']})` "
             f"({d['seconds']['qat']:.0f} s). Accuracy on the test split; agreement: top-1 equal to the Keras "
             "model's.", ""]
    float_accuracy = rows["keras"]["accuracy"]
    table = [{**row, "artifact": name, "vs_keras": None if name == "keras" else row["accuracy"] - float_accuracy}
             for name, row in rows.items()]
    vs_keras = Column("vs Keras (pp)", "vs_keras", lambda v: format_number(None if v is None else 100 * v, "+.2f"),
                      right=True)
    lines += artifact_markdown(table, artifact_columns(("artifact", "size", "accuracy", "agreement"), [vs_keras]))
    qat_int8 = d["qat_targets"]["tflite_int8"]
    lines += ["", f"Batch-1 `invoke()` latency, {s['threads']} threads (ms):", ""]
    lines += latency_table(d["latency"], "ptq_int8", "tflite_float32")
    lines += ["", f"- QAT model_int8.tflite ops: {_ops(qat_int8)}.",
              f"- Edge TPU check of the QAT {d['qat_targets']['edgetpu']['file']}: "
              f"{_edgetpu_line(d['qat_targets']['edgetpu'])}.", ""]
    return lines


def _io(entry) -> str:
    io = entry.get("input")
    if not io:
        return "-"
    text = f"{io.get('dtype')} [{','.join(str(d) for d in io.get('shape') or [])}]"
    q = io.get("quantization")
    return text + (f", scale {q[0]:.4g}, zp {q[1]}" if isinstance(q, list) else "")


def _ops(entry) -> str:
    ops = entry.get("ops")
    return ", ".join(f"{name} x{count}" if count > 1 else name for name, count in ops.items()) if ops else "-"


def _edgetpu_line(entry) -> str:
    check = entry.get("edgetpu") or {}
    if not check:
        return "none recorded"
    text = "compatible" if check.get("compatible") else "NOT compatible: " + "; ".join(
        str(p) for p in (check.get("problems") or [])[:5])
    compiler = check.get("compiler")
    if isinstance(compiler, dict):
        text += (f" (edgetpu_compiler exit code {compiler.get('returncode')})" if compiler.get("available")
                 else " (static flatbuffer check; edgetpu_compiler not installed)")
    return text


def main(argv=None) -> int:
    args = parse_args(argv)
    results = run(TOOL, args, argv, measure, render)
    rows = checks(results)
    for r in rows:
        print(f"{'PASS' if r['ok'] else 'FAIL'}  {r['what']} [{r['where']}]: {r['measured']} (target {r['target']})")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
