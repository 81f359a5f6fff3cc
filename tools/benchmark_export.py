#!/usr/bin/env python
"""Export benchmark: size, speed and accuracy of the exported artifacts against the project's targets.

Run from the repository root (the lead runs the full version on a quiet machine):

    .venv/bin/python tools/benchmark_export.py                          # full: writes docs/benchmarks/export.md
    .venv/bin/python tools/benchmark_export.py --quick --out /tmp/e.md  # smoke check (about 2 minutes)

What it measures, all through the public API (`nin_keras.export`, `nin_keras.evaluate`,
`nin_keras.benchmark_inference`, `nin_keras.train`, `nin_keras.load_dataset`, `nin_keras.build_nin`):

1. Paper variants, untrained weights: `build_nin(10, variant="cifar")` (32x32x3) and `build_nin(10,
   variant="mnist")` (28x28x1), both with BN and width 1.0. Each is exported to every target with
   `nin_keras.export(..., targets="all")` (post-training quantization calibrated on random raw-pixel images,
   no QAT). Measured: the wall time of that export (target for cifar: < 3 min on 2 cores); the size of
   model_int8.tflite over model_float32.tflite (target <= 0.27); batch-1 latency of model_int8.tflite over
   model_float32.tflite with the same interpreter thread count, the TFLite models timed interleaved over
   `--rounds` rounds (order alternating), medians over rounds (target <= 0.35); top-1 agreement of
   model_float32.tflite with the Keras model on random images (no CIFAR data is read: SAID in the report).
2. Digits (scikit-learn's 8x8 digits, `load_dataset("digits")`, real images, offline): the mnist variant at
   input (8, 8, 1), width 0.5, trained with Adam; exported with post-training quantization (PTQ) and with
   quantization-aware training (QAT). Measured on the test split: accuracy of the Keras model, the float32
   TFLite (and its top-1 agreement with Keras: target >= 99.9%), the PTQ int8 and the QAT int8 models
   (targets: PTQ within 1.5, QAT within 0.5 percentage points of the float model).

Writes a Markdown report (default docs/benchmarks/export.md) with the machine, the versions, the command, the
date, a PASS/FAIL table and the details; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Targets (the numbers).
TARGET_LATENCY_RATIO = 0.35
TARGET_SIZE_RATIO = 0.27
TARGET_AGREEMENT = 0.999
TARGET_QAT_DROP_PP = 0.5
TARGET_PTQ_DROP_PP = 1.5
TARGET_EXPORT_SECONDS = 180.0

PAPER_VARIANTS = ("cifar", "mnist")
PARTS = (*PAPER_VARIANTS, "digits")
# float32 and int8 first: adjacent in every round (the order alternates), so load drifts hit both alike.
TIMED_TARGETS = ("tflite_float32", "tflite_int8", "tflite_float16", "tflite_dynamic")
VERSIONS = (("tensorflow", "tensorflow"), ("keras", "keras"), ("tf_keras", "tf-keras"),
            ("tfmot", "tensorflow-model-optimization"), ("ai_edge_litert", "ai-edge-litert"))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2 training epochs, 1 QAT epoch, 2 rounds of 10 runs, 64 images; the "
                             "numbers are NOT representative")
    parser.add_argument("--threads", type=int, default=2, help="TFLite interpreter threads (default 2)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved latency rounds (default 5; quick 2)")
    parser.add_argument("--runs", type=int, default=None,
                        help="timed batch-1 calls per model and round (default 50; quick 10)")
    parser.add_argument("--epochs", type=int, default=None, help="digits training epochs (default 30; quick 2)")
    parser.add_argument("--qat-epochs", type=int, default=None, help="digits QAT epochs (default 3; quick 1)")
    parser.add_argument("--agreement-images", type=int, default=None,
                        help="random images for the paper variants' float32 agreement (default 1000; quick 64)")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated parts to run, of {', '.join(PARTS)} (default all; the report holds "
                             "only the targets of the parts run)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, data split and images (default 0)")
    parser.add_argument("--note", default="", help="a line for the report (e.g. 'machine under load')")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "export.md"),
                        help="Markdown report (default docs/benchmarks/export.md)")
    parser.add_argument("--json", dest="json_path", default=None, help="also write all numbers as JSON here")
    parser.add_argument("--work-dir", default=None,
                        help="keep the exports here (default: a temporary folder, removed at the end)")
    parser.add_argument("--verbose", action="store_true", help="keep TensorFlow's own log lines")
    args = parser.parse_args(argv)
    defaults = dict(rounds=(2, 5), runs=(10, 50), epochs=(2, 30), qat_epochs=(1, 3), agreement_images=(64, 1000))
    for name, (quick, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    for name in ("threads", "rounds", "runs", "epochs", "qat_epochs", "agreement_images"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if not parts or unknown:
        parser.error(f"--parts takes names from {', '.join(PARTS)}; received {args.parts!r}")
    args.parts = [p for p in PARTS if p in parts]
    return args


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- machine


def machine():
    from nin_keras.machine import available_cores, cpu_flags, cpu_info, cpu_model, package_versions

    info = cpu_info()
    cpu = cpu_model()
    ids = [f"{k} {info[k]}" for k in ("cpu family", "model", "stepping") if info.get(k)]
    if info.get("model name") and ids:
        cpu += f" ({', '.join(ids)})"
    cores = available_cores()
    by_dist = package_versions(dist for _, dist in VERSIONS)
    versions = {name: by_dist[dist] for name, dist in VERSIONS}
    simd = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8") if f in cpu_flags()]
    return {"cpu": cpu, "cores": cores, "logical_cpus": os.cpu_count(), "simd": simd,
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "versions": versions, "load_average": _load_average(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def _load_average():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# -------------------------------------------------------------------------------------- measurements


def random_images(shape, count, seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(count, *shape), dtype=np.uint8), np.zeros(count, dtype=np.int64)


def time_interleaved(paths: dict, *, rounds: int, runs: int, threads: int) -> dict:
    """Batch-1 latency of several .tflite files, interleaved: each round times each once, in the given order
    on even rounds and reversed on odd ones. The compared figure is `interpreter.invoke()` alone (the model's
    time, as LiteRT's benchmark_model measures it); the end-to-end `predict` time (Python-side input
    quantization and copies included) is kept beside it."""
    import nin_keras

    names = list(paths)
    per_round = {name: [] for name in names}
    end_to_end = {name: [] for name in names}
    for index in range(rounds):
        order = names if index % 2 == 0 else names[::-1]
        for name in order:
            result = nin_keras.benchmark_inference(paths[name], runs=runs, warmup=max(2, runs // 10),
                                                   threads=threads)
            per_round[name].append(result["latency_ms_batch1_invoke_median"])
            end_to_end[name].append(result["latency_ms_batch1_median"])
        log(f"  latency round {index + 1}/{rounds}: "
            + ", ".join(f"{name} {per_round[name][-1]:.3f} ms" for name in names))
    medians = {name: statistics.median(values) for name, values in per_round.items()}
    return {"per_round_ms": per_round, "median_ms": medians,
            "end_to_end_median_ms": {name: statistics.median(values) for name, values in end_to_end.items()}}


def paper_variant(variant, args, work_dir: Path) -> dict:
    """Exports an untrained paper variant to every target; times it, sizes, latency, float32 agreement."""
    import keras

    import nin_keras
    from nin_keras.models import get_preset

    shape = tuple(get_preset(variant).input_shape)
    keras.utils.set_random_seed(args.seed)
    model = nin_keras.build_nin(10, variant=variant, name=f"nin_{variant}")
    calibration_size = 64 if args.quick else 256
    data = nin_keras.load_dataset("synthetic", input_shape=shape, num_classes=10, size=calibration_size,
                                  batch_size=32, validation_split=0.0, seed=args.seed)
    out_dir = work_dir / f"paper_{variant}"
    log(f"{variant}: {model.count_params():,} parameters, input {shape}; exporting every target to {out_dir}/")
    started = time.perf_counter()
    exported = nin_keras.export(model, out_dir, targets="all", data=data, verify=False, progress=False)
    export_seconds = time.perf_counter() - started
    manifest = exported["manifest"]
    for name, entry in manifest["targets"].items():
        log(f"  {name:<15} {entry['size_bytes'] / 1e6:7.2f} MB  {entry['seconds']:6.1f} s")
    log(f"{variant}: export of all targets took {export_seconds:.1f} s")

    paths = {name: out_dir / manifest["targets"][name]["file"] for name in TIMED_TARGETS}
    log(f"{variant}: batch-1 latency, {args.threads} threads, {args.rounds} interleaved rounds of {args.runs} runs")
    latency = time_interleaved(paths, rounds=args.rounds, runs=args.runs, threads=args.threads)

    images = random_images(shape, args.agreement_images, args.seed + 1)
    log(f"{variant}: float32 TFLite vs Keras top-1 agreement on {len(images[0])} random images")
    agreement = nin_keras.evaluate(paths["tflite_float32"], images, reference=model, progress=False)["agreement"]
    log(f"{variant}: agreement {100 * agreement:.2f}%")
    sizes = {name: entry["size_bytes"] for name, entry in manifest["targets"].items()}
    return {
        "variant": variant,
        "input_shape": list(shape),
        "parameters": int(model.count_params()),
        "calibration_images": manifest.get("representative_samples"),
        "export_seconds": export_seconds,
        "targets": manifest["targets"],
        "sizes": sizes,
        "size_ratio": sizes["tflite_int8"] / sizes["tflite_float32"],
        "latency": latency,
        "latency_ratio": latency["median_ms"]["tflite_int8"] / latency["median_ms"]["tflite_float32"],
        "agreement": agreement,
        "agreement_images": int(len(images[0])),
    }


DIGITS_SETUP = dict(width_multiplier=0.5, learning_rate=3e-3, batch_size=32, validation_split=0.1)


def train_digits(model, data, args, work_dir: Path):
    """Trains with `nin_keras.train` (Adam, float32); falls back to `model.fit` if train() is not usable."""
    import nin_keras

    try:
        result = nin_keras.train(model, data, epochs=args.epochs, recipe="adam",
                                 learning_rate=DIGITS_SETUP["learning_rate"], precision="float32",
                                 out_dir=work_dir / "digits_train", overwrite=True, seed=args.seed,
                                 tensorboard=False, verbose=0)
        return (result.model if getattr(result, "model", None) is not None else model), "nin_keras.train"
    except Exception as error:  # noqa: BLE001 - the report says which path trained the model
        import keras

        message = " ".join(str(error).split())[:200]
        log(f"digits: nin_keras.train failed ({type(error).__name__}: {message}); training with model.fit")
        model.compile(optimizer=keras.optimizers.Adam(DIGITS_SETUP["learning_rate"]),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(data.train, validation_data=data.validation, epochs=args.epochs, verbose=0)
        return model, f"model.fit (nin_keras.train failed: {type(error).__name__}: {message})"


def digits(args, work_dir: Path) -> dict:
    """Trains the mnist variant on digits; PTQ and QAT int8 accuracy against the float model."""
    import keras

    import nin_keras

    data = nin_keras.load_dataset("digits", batch_size=DIGITS_SETUP["batch_size"],
                                  validation_split=DIGITS_SETUP["validation_split"], seed=args.seed)
    keras.utils.set_random_seed(args.seed)
    model = nin_keras.build_nin(data.num_classes, variant="mnist", input_shape=tuple(data.input_shape),
                                width_multiplier=DIGITS_SETUP["width_multiplier"], name="nin_digits")
    log(f"digits: training {model.count_params():,} parameters for {args.epochs} epochs (Adam "
        f"{DIGITS_SETUP['learning_rate']}, float32)")
    started = time.perf_counter()
    model, trained_with = train_digits(model, data, args, work_dir)
    train_seconds = time.perf_counter() - started
    log(f"digits: trained in {train_seconds:.1f} s with {trained_with}")

    ptq_dir, qat_dir = work_dir / "digits_ptq", work_dir / "digits_qat"
    started = time.perf_counter()
    ptq = nin_keras.export(model, ptq_dir, targets="all", data=data, verify=False, progress=False)
    ptq_seconds = time.perf_counter() - started
    log(f"digits: PTQ export of all targets in {ptq_seconds:.1f} s")
    started = time.perf_counter()
    qat = nin_keras.export(model, qat_dir, targets=["tflite_int8", "edgetpu"], data=data,
                           qat_epochs=args.qat_epochs, verify=False, progress=False)
    qat_seconds = time.perf_counter() - started
    log(f"digits: QAT ({args.qat_epochs} epoch(s)) + int8/edgetpu export in {qat_seconds:.1f} s")

    rows = {}
    artifacts = {
        "keras": model,
        "tflite_float32": ptq_dir / ptq["manifest"]["targets"]["tflite_float32"]["file"],
        "tflite_float16": ptq_dir / ptq["manifest"]["targets"]["tflite_float16"]["file"],
        "tflite_dynamic": ptq_dir / ptq["manifest"]["targets"]["tflite_dynamic"]["file"],
        "ptq_int8": ptq_dir / ptq["manifest"]["targets"]["tflite_int8"]["file"],
        "qat_int8": qat_dir / qat["manifest"]["targets"]["tflite_int8"]["file"],
        "qat_edgetpu": qat_dir / qat["manifest"]["targets"]["edgetpu"]["file"],
    }
    for name, artifact in artifacts.items():
        result = nin_keras.evaluate(artifact, data, reference=None if name == "keras" else model, progress=False)
        size = None if name == "keras" else Path(artifact).stat().st_size
        rows[name] = {"accuracy": result["accuracy"], "agreement": result["agreement"],
                      "num_examples": result["num_examples"], "size_bytes": size}
        log(f"digits: {name:<15} accuracy {100 * result['accuracy']:.2f}%"
            + ("" if result["agreement"] is None else f", agreement {100 * result['agreement']:.2f}%"))
    float_accuracy = rows["keras"]["accuracy"]
    timed = {"tflite_float32": artifacts["tflite_float32"], "ptq_int8": artifacts["ptq_int8"],
             "qat_int8": artifacts["qat_int8"]}
    log(f"digits: batch-1 latency, {args.threads} threads, {args.rounds} interleaved rounds")
    latency = time_interleaved(timed, rounds=args.rounds, runs=args.runs, threads=args.threads)
    sizes = (data.info or {}).get("sizes") or {}
    splits = {name: int(sizes[name]) for name in ("train", "validation", "test") if sizes.get(name) is not None}
    return {
        "parameters": int(model.count_params()),
        "input_shape": list(data.input_shape),
        "trained_with": trained_with,
        "train_seconds": train_seconds,
        "ptq_seconds": ptq_seconds,
        "qat_seconds": qat_seconds,
        "qat_history": (qat["manifest"].get("qat") or {}).get("history"),
        "representative_samples": ptq["manifest"].get("representative_samples"),
        "rows": rows,
        "ptq_drop_pp": 100 * (float_accuracy - rows["ptq_int8"]["accuracy"]),
        "qat_drop_pp": 100 * (float_accuracy - rows["qat_int8"]["accuracy"]),
        "latency": latency,
        "qat_targets": qat["manifest"]["targets"],
        "ptq_targets": ptq["manifest"]["targets"],
        "splits": splits,
        "test_images": rows["keras"]["num_examples"],
    }


# ------------------------------------------------------------------------------------------------ report


def verdict(ok: bool) -> str:
    return "PASS" if ok else "**FAIL**"


def checks(results) -> list[dict]:
    """One row per target: what, where, measured, target, passed."""
    rows = []
    paper, dig = results["paper"], results["digits"]
    for v in paper:
        r = paper[v]
        rows.append(dict(what="int8 / float32 TFLite batch-1 latency (median of rounds, same threads)",
                         where=f"{v} variant", measured=f"{r['latency_ratio']:.3f}",
                         target=f"<= {TARGET_LATENCY_RATIO}", ok=r["latency_ratio"] <= TARGET_LATENCY_RATIO))
    for v in paper:
        r = paper[v]
        rows.append(dict(what="int8 / float32 TFLite size", where=f"{v} variant", measured=f"{r['size_ratio']:.3f}",
                         target=f"<= {TARGET_SIZE_RATIO}", ok=r["size_ratio"] <= TARGET_SIZE_RATIO))
    cifar = paper.get("cifar")
    export_rows = []
    if cifar:
        export_rows.append(dict(what="export of all targets, no QAT (`nin_keras.export(..., targets=\"all\")`)",
                                where=f"cifar variant, {results['machine']['cores']} cores",
                                measured=f"{cifar['export_seconds']:.1f} s",
                                target=f"< {TARGET_EXPORT_SECONDS:.0f} s",
                                ok=cifar["export_seconds"] < TARGET_EXPORT_SECONDS))
        rows.append(dict(what="float32 TFLite top-1 agreement with Keras",
                         where=f"cifar variant, {cifar['agreement_images']} SYNTHETIC random images (no CIFAR data "
                               "here; untrained weights)",
                         measured=_pct(cifar["agreement"]), target=f">= {100 * TARGET_AGREEMENT:.1f}%",
                         ok=cifar["agreement"] >= TARGET_AGREEMENT))
    if dig is None:
        return rows + export_rows
    agreement = dig["rows"]["tflite_float32"]["agreement"]
    rows.append(dict(what="float32 TFLite top-1 agreement with Keras",
                     where=f"mnist variant (8x8x1, trained), digits test split, {dig['test_images']} real images",
                     measured=_pct(agreement), target=f">= {100 * TARGET_AGREEMENT:.1f}%",
                     ok=agreement >= TARGET_AGREEMENT))
    rows.append(dict(what="QAT int8 accuracy drop vs float Keras", where="digits test split",
                     measured=f"{dig['qat_drop_pp']:+.2f} pp", target=f"<= {TARGET_QAT_DROP_PP} pp",
                     ok=dig["qat_drop_pp"] <= TARGET_QAT_DROP_PP))
    rows.append(dict(what="PTQ int8 accuracy drop vs float Keras", where="digits test split",
                     measured=f"{dig['ptq_drop_pp']:+.2f} pp", target=f"<= {TARGET_PTQ_DROP_PP} pp",
                     ok=dig["ptq_drop_pp"] <= TARGET_PTQ_DROP_PP))
    return rows + export_rows


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _mb(size) -> str:
    return "-" if size is None else f"{size / 1e6:.2f} MB"


def _io(entry) -> str:
    io = entry.get("input")
    if not io:
        return "-"
    shape = ",".join(str(d) for d in io.get("shape") or [])
    text = f"{io.get('dtype')} [{shape}]"
    q = io.get("quantization")
    if isinstance(q, list):
        text += f", scale {q[0]:.4g}, zp {q[1]}"
    return text


def _ops(entry) -> str:
    ops = entry.get("ops")
    if not ops:
        return "-"
    return ", ".join(f"{name} x{count}" if count > 1 else name for name, count in ops.items())


def _edgetpu_line(entry) -> str:
    check = entry.get("edgetpu") or {}
    if not check:
        return "no Edge TPU check recorded"
    text = "compatible" if check.get("compatible") else "NOT compatible: " + "; ".join(
        str(p) for p in (check.get("problems") or [])[:5])
    compiler = check.get("compiler") or {}
    if isinstance(compiler, dict) and not compiler.get("available"):
        text += " (static flatbuffer check; edgetpu_compiler is not installed here, so not compiled)"
    elif isinstance(compiler, dict):
        text += f" (edgetpu_compiler exit code {compiler.get('returncode')})"
    return text


def _call_overhead_ms(results):
    """Batch-1 invoke latency of the tiny digits model: roughly the fixed cost of one call."""
    d = results.get("digits")
    if not d:
        return None
    return min(d["latency"]["median_ms"].values())


def _has_requantize(entry) -> bool:
    ops = entry.get("ops") or {}
    return any(name in ops for name in ("QUANTIZE", "DEQUANTIZE"))


def report(args, results, command) -> str:
    facts = results["machine"]
    v = facts["versions"]
    rows = checks(results)
    passed = sum(r["ok"] for r in rows)
    load = facts.get("load_average")
    lines = [
        "# Export benchmarks",
        "",
        f"Written by `tools/benchmark_export.py` on {facts['date']}"
        + (" (**--quick smoke run: numbers are NOT representative**)" if args.quick else "") + ".",
        "",
        f"- Command: `{command}`",
        f"- Machine: {facts['cpu']}, {facts['cores']} cores available ({facts['logical_cpus']} logical CPUs"
        + (f"; {', '.join(facts['simd'])}" if facts["simd"] else "") + f"), {facts['os']}"
        + (f"; load average at start {load[0]} / {load[1]} / {load[2]}" if load else ""),
        f"- Software: Python {facts['python']}, TensorFlow {v['tensorflow']}, Keras {v['keras']}, "
        f"tf_keras {v['tf_keras']}, tfmot {v['tfmot']}, ai-edge-litert {v['ai_edge_litert']}",
        f"- TFLite interpreter threads: {args.threads}; latency: {args.rounds} interleaved rounds (order alternating) "
        f"of {args.runs} timed batch-1 calls per model after {max(2, args.runs // 10)} warm-up calls, "
        "`nin_keras.benchmark_inference`: the compared latency is `interpreter.invoke()` alone (the model's own "
        "time, as LiteRT's benchmark_model measures it); the end-to-end `predict` time from Python (input "
        "quantization and copies included) is listed beside it; a model's latency is the median over rounds of "
        "the per-round medians",
        f"- Parts run: {', '.join(args.parts)}; total benchmark time {results['seconds']:.0f} s ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in results["stage_seconds"].items()) + ")",
    ]
    if args.note:
        lines.append(f"- Note: {args.note}")
    lines += ["", f"## Targets: {passed} of {len(rows)} met", "",
              "| target | measured on | measured | target | result |", "|---|---|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['what']} | {r['where']} | {r['measured']} | {r['target']} | {verdict(r['ok'])} |")
    lines += ["",
              "An accuracy *drop* is float minus int8 accuracy: an int8 model that scores higher than the float "
              "model has a negative drop and passes.", ""]

    for variant, r in results["paper"].items():
        title = {"cifar": "Paper CIFAR variant", "mnist": "Paper MNIST variant"}.get(variant, variant)
        shape = "x".join(str(d) for d in r["input_shape"])
        lines += [f"## {title}: `build_nin(10, variant=\"{variant}\")`, BN, width 1.0, input {shape}", "",
                  f"{r['parameters']:,} parameters, untrained (seeded) weights: size, speed and conversion do not "
                  f"depend on training. `nin_keras.export(model, dir, targets=\"all\", data=...)`, no QAT; "
                  f"full-integer calibration on {r['calibration_images']} random raw-pixel images "
                  "(`load_dataset(\"synthetic\")`). Whole export: "
                  f"**{r['export_seconds']:.1f} s**.", "",
                  "| target | file | size | conversion time | input | ops |", "|---|---|---:|---:|---|---|"]
        for name, entry in r["targets"].items():
            lines.append(f"| {name} | {entry['file']} | {_mb(entry['size_bytes'])} | {entry['seconds']:.1f} s | "
                         f"{_io(entry)} | {_ops(entry) if name not in ('keras', 'saved_model') else '-'} |")
        lat = r["latency"]
        base = lat["median_ms"]["tflite_float32"]
        lines += ["", f"Batch-1 latency of `invoke()`, {args.threads} threads (ms; per round, then the median):", "",
                  "| model | " + " | ".join(f"round {i + 1}" for i in range(args.rounds)) + " | median | vs float32 |",
                  "|---|" + "---:|" * (args.rounds + 2)]
        for name, values in lat["per_round_ms"].items():
            median = lat["median_ms"][name]
            lines.append(f"| {name} | " + " | ".join(f"{x:.3f}" for x in values)
                         + f" | **{median:.3f}** | {median / base:.2f}x |")
        per_round = [i / f for i, f in zip(lat["per_round_ms"]["tflite_int8"], lat["per_round_ms"]["tflite_float32"])]
        lines.append("| int8 / float32, per round | " + " | ".join(f"{x:.2f}" for x in per_round)
                     + f" | {statistics.median(per_round):.2f} | |")
        e2e = lat.get("end_to_end_median_ms") or {}
        if e2e:
            lines += ["", "End to end from Python (`Predictor`/`evaluate` path, median ms): "
                      + ", ".join(f"{name} {value:.3f}" for name, value in e2e.items())
                      + f"; int8 / float32 {e2e['tflite_int8'] / e2e['tflite_float32']:.2f}."]
        f32, i8 = r["sizes"]["tflite_float32"], r["sizes"]["tflite_int8"]
        lines += ["",
                  f"- int8 / float32 size: {i8:,} / {f32:,} bytes = **{r['size_ratio']:.3f}** (target <= "
                  f"{TARGET_SIZE_RATIO}). BatchNormalization is folded into the convolutions, weights are int8 "
                  "(per channel), biases int32: a little over a quarter of the float32 file.",
                  f"- int8 / float32 latency: **{r['latency_ratio']:.3f}** (target <= {TARGET_LATENCY_RATIO}).",
                  f"- float32 TFLite top-1 agreement with Keras on {r['agreement_images']} random raw-pixel "
                  f"images: **{_pct(r['agreement'])}** (synthetic images, untrained weights: this checks the "
                  "conversion, not accuracy)."]
        if "edgetpu" in r["targets"]:
            lines.append(f"- Edge TPU check of model_edgetpu_ready.tflite: {_edgetpu_line(r['targets']['edgetpu'])}.")
        gpu = (r["targets"].get("tflite_float16") or {}).get("gpu_compatibility")
        if gpu:
            lines.append(f"- GPU-delegate analysis of model_float16.tflite: {gpu.get('summary')}.")
        int8 = r["targets"].get("tflite_int8") or {}
        if int8:
            lines.append("- model_int8.tflite has int8 input and output and "
                         + ("QUANTIZE/DEQUANTIZE ops inside" if _has_requantize(int8)
                            else "no QUANTIZE/DEQUANTIZE op: integer end to end")
                         + "; the Edge TPU model's uint8 I/O adds one QUANTIZE at each end.")
        overhead = _call_overhead_ms(results)
        if overhead is not None:
            lines.append(f"- Floor: the 8x8 digits model below, which computes almost nothing, takes "
                         f"{overhead:.3f} ms per `invoke()`: "
                         f"{100 * overhead / lat['median_ms']['tflite_int8']:.0f}% of this model's int8 time.")
        lines.append("")

    d = results["digits"]
    if d is not None:
        lines += digits_section(args, d)
    lines += closing_section(command)
    return "\n".join(lines)


def digits_section(args, d) -> list[str]:
    rows_d = d["rows"]
    split_text = (", ".join(f"{n} {c}" for n, c in d["splits"].items()) if d["splits"]
                  else f"{d['test_images']} test images")
    lines = [
        "## Accuracy on digits: PTQ and QAT against the float model",
        "",
        "Real images: scikit-learn's bundled 8x8 digits through `load_dataset(\"digits\")` "
        f"({split_text}; validation split {DIGITS_SETUP['validation_split']}, seed {args.seed}). Model: "
        f"`build_nin(10, variant=\"mnist\", input_shape=(8, 8, 1), width_multiplier="
        f"{DIGITS_SETUP['width_multiplier']})`, {d['parameters']:,} parameters, trained with {d['trained_with']}: "
        f"recipe adam (Adam {DIGITS_SETUP['learning_rate']}, cosine), float32, batch {DIGITS_SETUP['batch_size']}, "
        f"{args.epochs} epochs ({d['train_seconds']:.0f} s). PTQ: `nin_keras.export(model, dir, targets=\"all\", "
        f"data=splits)`, calibrated on {d['representative_samples']} training images ({d['ptq_seconds']:.0f} s). "
        f"QAT: `nin_keras.export(model, dir, targets=[\"tflite_int8\", \"edgetpu\"], data=splits, "
        f"qat_epochs={args.qat_epochs})` ({d['qat_seconds']:.0f} s, fine-tuning included).",
        "",
        "| artifact | size | test accuracy | top-1 agreement with Keras | vs Keras |",
        "|---|---:|---:|---:|---:|",
    ]
    float_accuracy = rows_d["keras"]["accuracy"]
    labels = {"keras": "Keras (float32)", "tflite_float32": "model_float32.tflite",
              "tflite_float16": "model_float16.tflite", "tflite_dynamic": "model_dynamic.tflite",
              "ptq_int8": "model_int8.tflite, PTQ", "qat_int8": "model_int8.tflite, QAT",
              "qat_edgetpu": "model_edgetpu_ready.tflite, QAT (uint8 I/O)"}
    for name, row in rows_d.items():
        diff = "-" if name == "keras" else f"{100 * (row['accuracy'] - float_accuracy):+.2f} pp"
        lines.append(f"| {labels.get(name, name)} | {_mb(row['size_bytes'])} | {_pct(row['accuracy'])} | "
                     f"{_pct(row['agreement'])} | {diff} |")
    lat = d["latency"]["median_ms"]
    qat_int8 = d["qat_targets"].get("tflite_int8") or {}
    lines += ["",
              f"Batch-1 latency of this small model ({args.threads} threads, medians): float32 "
              f"{lat['tflite_float32']:.3f} ms, PTQ int8 {lat['ptq_int8']:.3f} ms, QAT int8 {lat['qat_int8']:.3f} ms "
              "(an 8x8 model is dominated by per-call overhead; not a target).",
              "",
              f"- QAT model_int8.tflite ops: {_ops(qat_int8)}. "
              + ("It has no QUANTIZE/DEQUANTIZE: AveragePooling2D, MaxPooling2D and Dropout are annotated "
                 "pass-through in the QAT model, so the converter inserts no requantization."
                 if qat_int8 and not _has_requantize(qat_int8) else
                 "It holds QUANTIZE/DEQUANTIZE ops (requantization between layers)."),
              f"- Edge TPU check of the QAT model_edgetpu_ready.tflite: "
              f"{_edgetpu_line(d['qat_targets'].get('edgetpu') or {})}.",
              "- Digits is an easy set: these numbers check that quantization keeps a trained model's decisions. "
              "CIFAR-10 accuracy of int8 models needs a trained paper model (the lead's training run).",
              ""]
    return lines


def closing_section(command) -> list[str]:
    return [
        "## How to read this",
        "",
        "- The machine is shared and noisy: one timing can be off by 2x. The TFLite models are therefore timed "
        "interleaved in one process, several rounds, and compared by medians. Ratios are steadier than absolute "
        "times, and the \"per round\" row shows how steady a ratio was; a ratio close to its target on a loaded "
        "machine deserves a re-run on a quiet one (`--parts cifar,mnist`). On a quiet machine "
        "(/work/shared/FACTS.md) the paper CIFAR NIN ran batch 1, 2 threads, at 2.4 ms in float32, 0.9 ms "
        "dynamic-range and 0.7 ms full int8 (3.8 MB vs 0.98 MB).",
        "- Full-integer models take int8 raw pixels (scale 1.0, zero point -128) and need no QUANTIZE/DEQUANTIZE "
        "ops; the Edge TPU model takes uint8 (scale 1.0, zero point 0) at a static batch of 1, which adds a "
        "QUANTIZE at each end. `edgetpu_compiler` (Coral's apt repository, x86-64 Debian only) is not "
        "installed here: the Edge TPU check reads the flatbuffer (op codes and versions, 8-bit tensors, static "
        "shapes); when the compiler is on PATH the export also compiles the model.",
        "- model_float16.tflite keeps float32 I/O and stores float16 weights (DEQUANTIZE ops in front of the "
        "convolutions): it is the GPU-delegate model; model_dynamic.tflite has int8 weights and float "
        "activations.",
        "- A model trained under mixed_bfloat16 exports too: the SavedModel and every .tflite are made from a "
        "float32 copy (the converter cannot lower bfloat16 ops); model.keras keeps the policy it was given.",
        "",
        "## How to reproduce",
        "",
        "```",
        command,
        "```",
        "",
        "or, for one model, through the library:",
        "",
        "```python",
        "import nin_keras",
        "splits = nin_keras.load_dataset(\"digits\")",
        "model = ...  # trained, e.g. nin_keras.train(nin_keras.build_nin(10, variant=\"mnist\", "
        "input_shape=(8, 8, 1)), splits, epochs=30, recipe=\"adam\")",
        "result = nin_keras.export(model, \"export/digits\", targets=\"all\", data=splits)                 # PTQ",
        "result = nin_keras.export(model, \"export/digits_qat\", targets=\"all\", data=splits, qat_epochs=3)",
        "```",
        "",
        "or `nin-keras export model.keras --dataset digits [--qat-epochs 3]` (writes report.md beside the "
        "artifacts: accuracy, agreement and latency of each).",
        "",
    ]


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    return value


def main(argv=None):
    args = parse_args(argv)
    raw = sys.argv[1:] if argv is None else list(argv)
    command = "python tools/benchmark_export.py" + (" " + shlex.join(raw) if raw else "")
    if not args.verbose:
        from nin_keras.process_state import quiet_tensorflow

        quiet_tensorflow()
    from nin_keras._atomic import write_json, write_text

    started = time.perf_counter()
    facts = machine()
    log(f"{facts['cpu']}, {facts['cores']} cores; {'quick smoke run' if args.quick else 'full run'}; "
        f"report -> {args.out}")
    own_work_dir = args.work_dir is None
    work_dir = Path(tempfile.mkdtemp(prefix="nin_keras_export_bench_")) if own_work_dir else Path(args.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    stage_seconds = {}
    try:
        paper, digits_result = {}, None
        for variant in PAPER_VARIANTS:
            if variant in args.parts:
                tick = time.perf_counter()
                paper[variant] = paper_variant(variant, args, work_dir)
                stage_seconds[variant] = time.perf_counter() - tick
        if "digits" in args.parts:
            tick = time.perf_counter()
            digits_result = digits(args, work_dir)
            stage_seconds["digits"] = time.perf_counter() - tick
    finally:
        if own_work_dir:
            shutil.rmtree(work_dir, ignore_errors=True)
    results = {"machine": facts, "paper": paper, "digits": digits_result, "stage_seconds": stage_seconds,
               "seconds": time.perf_counter() - started, "command": command, "quick": args.quick}
    text = report(args, results, command)
    write_text(args.out, text)
    rows = checks(results)
    if args.json_path:
        write_json(args.json_path, _jsonable({**results, "checks": rows}))
    for r in rows:
        print(f"{'PASS' if r['ok'] else 'FAIL'}  {r['what']} [{r['where']}]: {r['measured']} (target {r['target']})")
    print("stages: " + ", ".join(f"{k} {v:.0f} s" for k, v in stage_seconds.items())
          + f"; total {results['seconds']:.0f} s")
    print(f"wrote {args.out}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
