#!/usr/bin/env python
"""Time-to-accuracy benchmark: what `nin-keras train` gives in the time a user has, on real data.

Run from the repository root, on a quiet machine for the published numbers (Fashion-MNIST is read from the
system package dataset-fashion-mnist when installed, else from --data-dir or keras.datasets):

    .venv/bin/python tools/benchmark_accuracy.py                    # budgets 1 and 3 epochs, 3 seeds at 3
    .venv/bin/python tools/benchmark_accuracy.py --budgets 1,3,15   # the 15-epoch budget too
    .venv/bin/python tools/benchmark_accuracy.py --resume           # go on where an interrupted run stopped
    .venv/bin/python tools/benchmark_accuracy.py --dataset digits --width 0.25 --budgets 1 --seeds 1 \\
        --plain-max-epochs 1 --out smoke/accuracy.md                # smoke run (minutes)
    .venv/bin/python tools/benchmark_accuracy.py --render docs/benchmarks/accuracy.json  # re-render only

Contenders, trained on the same data, splits, seeds and machine, interleaved (the order rotates per seed):

- "nin-keras": `nin-keras train --dataset D --epochs E --seed S`, nothing else: the defaults a user gets.
- "paper": the same with `--recipe paper` (the NIN paper's step-SGD and augmentation).
- "plain Keras": the same network written with stock Keras 3 layers (BatchNormalization, float32), Adam 2e-3,
  no schedule, no augmentation, `model.fit` on numpy arrays, as a user would write it; it runs until its test
  accuracy reaches --target (0.90) or --plain-max-epochs (10), and at least the largest budget up to that cap.

Each run is a fresh subprocess. Recorded per run: test accuracy of the saved model, validation accuracy,
training wall-clock (the sum of the epochs' wall-clock, validation passes included; test evaluation and
start-up excluded), images/s, peak resident memory (ru_maxrss), and accuracy after every epoch. For the
nin-keras contender (seed 0) the tool also runs `nin-keras export --targets tflite_int8` and records the int8
model's test accuracy next to the float one.

Recipe choices are made on validation accuracy; the report shows test accuracy, once per configuration.
Writes docs/benchmarks/accuracy.md, its measurements as JSON, and docs/benchmarks/accuracy.png (test
accuracy against training minutes, one line per contender).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from _bench import ROOT, add_report_arguments, header_lines, log, recorded_settings, run

# After _bench, which puts the checkout on sys.path:
from nin_keras.choices import VARIANT_NAMES
from nin_keras.cli.options import positive_float, positive_int

TOOL = "tools/benchmark_accuracy.py"
CONTENDERS = ("nin-keras", "paper", "plain Keras")
# Fashion-MNIST test accuracy per budget (epochs): (must, aim).
ACCURACY_TARGETS = {1: (0.885, 0.895), 3: (0.920, 0.925), 15: (0.925, 0.935)}
TARGETS = {"int8_gap_pp": 0.3, "time_ratio": 1 / 3, "rss_gb": 3.0}
# Settings a resumed benchmark must share with the runs it keeps.
RESUME_MUST_MATCH = ("dataset", "data_dir", "variant", "width", "target", "plain_max_epochs")

PLAIN_SCRIPT = textwrap.dedent("""
    # The same NIN written with stock Keras 3 layers, trained the way a user would: Adam, no schedule.
    import json, sys, time
    import numpy as np
    import keras
    from nin_keras.models import get_preset

    data_path, variant, width, seed, target, min_epochs, max_epochs = sys.argv[1:8]
    width, seed, target = float(width), int(seed), float(target)
    min_epochs, max_epochs = int(min_epochs), int(max_epochs)
    keras.utils.set_random_seed(seed)
    data = np.load(data_path)
    x_train, y_train, x_val, y_val, x_test, y_test = (data[k] for k in
        ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"))
    classes = int(data["num_classes"])

    def conv(x, filters, kernel, relu=True):
        x = keras.layers.Conv2D(filters, kernel, padding="same", use_bias=False, kernel_initializer="he_normal")(x)
        x = keras.layers.BatchNormalization()(x)
        return keras.layers.ReLU()(x) if relu else x

    inputs = keras.Input(x_train.shape[1:])
    x = keras.layers.Rescaling(1 / 255)(inputs)
    blocks = get_preset(variant).blocks
    for index, spec in enumerate(blocks):
        widths = [classes if w == "classes" else max(1, int(round(w * width))) for w in spec.widths]
        x = conv(x, widths[0], spec.kernel_size)
        for w in widths[1:]:
            x = conv(x, w, 1)
        if spec.pool:
            pool = keras.layers.MaxPooling2D if spec.pool == "max" else keras.layers.AveragePooling2D
            x = pool(spec.pool_size, strides=spec.pool_strides, padding=spec.pool_padding)(x)
        if spec.dropout:
            x = keras.layers.Dropout(0.5)(x)
    outputs = keras.layers.Activation("softmax")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.perf_counter() - self.started  # training + validation; the test pass below is not
            test = self.model.evaluate(x_test, y_test, batch_size=256, verbose=0, return_dict=True)["accuracy"]
            print("EPOCH " + json.dumps({"epoch": epoch + 1, "seconds": seconds, "test_accuracy": test,
                                         "val_accuracy": logs["val_accuracy"]}), flush=True)
            if epoch + 1 >= min_epochs and test >= target:
                self.model.stop_training = True

    model.fit(x_train, y_train, batch_size=128, epochs=max_epochs, validation_data=(x_val, y_val),
              callbacks=[Record()], verbose=2)
""")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion_mnist", help="dataset name (default fashion_mnist)")
    parser.add_argument("--data-dir", default=None, help="folder with the dataset's original files")
    parser.add_argument("--variant", default="mnist", choices=VARIANT_NAMES, help="NIN variant (default mnist)")
    parser.add_argument("--width", type=positive_float, default=1.0, help="width multiplier (default 1.0)")
    parser.add_argument("--budgets", default="1,3", help="comma-separated epoch budgets (default 1,3)")
    parser.add_argument("--seeds", type=positive_int, default=3,
                        help="seeds for the 3-epoch budget (others get one; default 3)")
    parser.add_argument("--contenders", default=",".join(CONTENDERS),
                        help=f"comma-separated, of: {', '.join(CONTENDERS)} (default all)")
    parser.add_argument("--target", type=positive_float, default=0.90,
                        help="the accuracy of the time-to-accuracy comparison (default 0.90)")
    parser.add_argument("--plain-max-epochs", type=positive_int, default=10,
                        help="most epochs the plain Keras script runs to reach --target (default 10)")
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 export of the nin-keras runs")
    parser.add_argument("--resume", action="store_true",
                        help="keep the runs already in the JSON file (same dataset, variant, width, target) and run "
                             "only the rest; --budgets, --seeds and --contenders may grow")
    parser.add_argument("--work-dir", default=None, help="run folders (default: a temporary folder)")
    add_report_arguments(parser, ROOT / "docs" / "benchmarks" / "accuracy.md")
    args = parser.parse_args(argv)
    try:
        args.budgets = sorted({positive_int(b) for b in args.budgets.split(",")})
        args.contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    except (argparse.ArgumentTypeError, ValueError) as error:
        parser.error(f"--budgets: {error}")
    unknown = [c for c in args.contenders if c not in CONTENDERS]
    if unknown or not args.contenders:
        parser.error(f"--contenders: unknown {', '.join(unknown) or '(none given)'}; known: {', '.join(CONTENDERS)}")
    return args


# ------------------------------------------------------------------------------------------------ runs


def plan_runs(args) -> list[dict]:
    """Every run, interleaved: by budget, then seed, contenders in an order that rotates with the seed."""
    plain_epochs = {}  # plain Keras has no schedule: one run per seed covers every budget (up to its cap)
    runs = []
    for budget in args.budgets:
        seeds = range(args.seeds) if budget == 3 else range(1)
        for seed in seeds:
            order = args.contenders[seed % len(args.contenders):] + args.contenders[:seed % len(args.contenders)]
            for contender in order:
                if contender == "plain Keras":
                    if seed in plain_epochs:
                        continue
                    plain_epochs[seed] = True
                runs.append({"contender": contender, "budget": budget, "seed": seed})
    for entry in runs:
        if entry["contender"] == "plain Keras":
            own = [b for b in args.budgets if b <= args.plain_max_epochs and (b == 3 or entry["seed"] == 0)]
            entry["budget"] = None
            entry["min_epochs"] = max(own or [1])
            entry["max_epochs"] = args.plain_max_epochs if entry["seed"] == 0 else entry["min_epochs"]
    return runs


def run_key(entry: dict) -> str:
    return f"{entry['contender']}|{entry['budget']}|{entry['seed']}"


def _stream(command: list[str], prefix: str, env: dict) -> tuple[int, list[str], float]:
    """Runs `command`, echoing its output lines; returns (exit code, lines, peak RSS in MB of that child)."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                               cwd=ROOT)
    lines = []
    for line in process.stdout:
        lines.append(line.rstrip("\n"))
        if line.strip() and not line.startswith("EPOCH "):
            print(f"    {prefix} | {line.rstrip()}", file=sys.stderr, flush=True)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, lines, usage.ru_maxrss / 1024  # ru_maxrss is KiB on Linux


def run_nin_keras(entry: dict, args, work: Path, env: dict) -> dict:
    """`nin-keras train` with defaults (or --recipe paper), then, for seed 0 of nin-keras, the int8 export."""
    folder = work / f"{entry['contender'].replace(' ', '_')}-e{entry['budget']}-s{entry['seed']}"
    data = ["--dataset", args.dataset] + (["--data-dir", args.data_dir] if args.data_dir else [])
    command = [sys.executable, "-m", "nin_keras", "train", *data, "--epochs", str(entry["budget"]),
               "--seed", str(entry["seed"]), "--out", str(folder), "--overwrite"]
    if args.variant != "mnist" or args.width != 1.0:
        command += ["--variant", args.variant, "--width", str(args.width)]
    if entry["contender"] == "paper":
        command += ["--recipe", "paper"]
    code, lines, rss_mb = _stream(command, f"{entry['contender']} e{entry['budget']} s{entry['seed']}", env)
    if code != 0:
        raise RuntimeError(f"{' '.join(command)} exited {code}:\n" + "\n".join(lines[-20:]))
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    with open(folder / "history.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    seconds = [float(row["epoch_seconds"]) for row in rows]
    record = {**entry, "test_accuracy": config["test"]["accuracy"], "val_accuracy": float(rows[-1]["val_accuracy"]),
              "train_seconds": sum(seconds), "epochs_run": len(rows), "peak_rss_mb": rss_mb,
              "train_images": config["dataset"]["info"]["sizes"]["train"], "recipe": config["recipe"]["summary"],
              "epochs": [{"epoch": int(row["epoch"]), "seconds": float(row["epoch_seconds"]),
                          "val_accuracy": float(row["val_accuracy"])} for row in rows]}
    if entry["contender"] == "nin-keras" and entry["seed"] == 0 and not args.no_int8:
        record["int8"] = {"float": record["test_accuracy"], **export_int8(folder, data, entry, env)}
    return record


def export_int8(folder: Path, data: list[str], entry: dict, env: dict) -> dict:
    """`nin-keras export --targets tflite_int8` of a run's model: the int8 model's test accuracy."""
    out = folder / "export"
    command = [sys.executable, "-m", "nin_keras", "export", str(folder / "model.keras"), "--targets", "tflite_int8",
               *data, "--seed", str(entry["seed"]), "--out", str(out)]
    code, lines, _ = _stream(command, f"export e{entry['budget']}", env)
    if code != 0:
        raise RuntimeError(f"{' '.join(command)} exited {code}:\n" + "\n".join(lines[-20:]))
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    row = next(row for row in report["rows"] if row["target"] == "tflite_int8")
    return {"int8": row["accuracy"], "agreement": row["agreement"], "size_bytes": row["size_bytes"],
            "latency_ms_batch1": row.get("latency_ms_batch1_median")}


def run_plain(entry: dict, args, data_path: Path, env: dict) -> dict:
    """The plain Keras script for one seed, through every epoch it runs."""
    script = data_path.parent / "plain_keras.py"  # beside its data, in the work folder
    script.write_text(PLAIN_SCRIPT, encoding="utf-8")
    command = [sys.executable, str(script), str(data_path), args.variant, str(args.width), str(entry["seed"]),
               str(args.target), str(entry["min_epochs"]), str(entry["max_epochs"])]
    code, lines, rss_mb = _stream(command, f"plain Keras s{entry['seed']}", env)
    if code != 0:
        raise RuntimeError(f"the plain Keras script exited {code}:\n" + "\n".join(lines[-20:]))
    epochs = [json.loads(line[len("EPOCH "):]) for line in lines if line.startswith("EPOCH ")]
    return {**entry, "epochs": epochs, "peak_rss_mb": rss_mb, "epochs_run": len(epochs),
            "train_images": int(json.loads(Path(str(data_path) + ".json").read_text())["train"])}


def write_split(args, seed: int, work: Path) -> Path:
    """The train/validation/test arrays `nin-keras train --seed seed` uses, for the plain script (npz)."""
    import numpy as np

    from nin_keras.data import as_arrays, load_dataset

    data = load_dataset(args.dataset, data_dir=args.data_dir, seed=seed, batch_size=512)
    arrays = {f"{kind}_{split}": value for split in ("train", "validation", "test")
              for kind, value in zip(("x", "y"), as_arrays(data, split=split))}
    path = work / f"split-seed{seed}.npz"
    np.savez(path, x_train=arrays["x_train"], y_train=arrays["y_train"], x_val=arrays["x_validation"],
             y_val=arrays["y_validation"], x_test=arrays["x_test"], y_test=arrays["y_test"],
             num_classes=data.num_classes)
    Path(str(path) + ".json").write_text(json.dumps({"train": len(arrays["y_train"])}))
    return path


def measure(args) -> dict:
    json_path = Path(args.json_path or Path(args.out).with_suffix(".json"))
    done, saved = {}, {}
    if args.resume and json_path.exists():
        saved = json.loads(json_path.read_text(encoding="utf-8"))
        changed = [key for key in RESUME_MUST_MATCH if saved.get("settings", {}).get(key) != getattr(args, key)]
        if changed:
            raise SystemExit(f"--resume: {json_path} was measured with other {', '.join(changed)}; run without "
                             "--resume (or with --json elsewhere) to start over.")
        done = {run_key(r): r for r in saved.get("runs", [])}
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="nin_accuracy_"))
    work.mkdir(parents=True, exist_ok=True)
    log(f"run folders and exports go to {work}")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    runs, records = plan_runs(args), []
    started = time.perf_counter()
    for index, entry in enumerate(runs, start=1):
        key = run_key(entry)
        if key in done:
            records.append(done[key])
            log(f"[{index}/{len(runs)}] {key}: kept from {json_path}")
            continue
        log(f"[{index}/{len(runs)}] {entry['contender']}, budget {entry['budget'] or 'until target'}, "
            f"seed {entry['seed']} ({(time.perf_counter() - started) / 60:.0f} min so far)")
        if entry["contender"] == "plain Keras":
            records.append(run_plain(entry, args, write_split(args, entry["seed"], work), env))
        else:
            records.append(run_nin_keras(entry, args, work, env))
        # Kept runs that come later in the plan stay in the file: an interruption must not lose them.
        _save_partial(json_path, _settings(args, saved), records + _not_repeated(done, records))
    results = {"runs": records, "targets": {"accuracy": ACCURACY_TARGETS, **TARGETS},
               "figure": Path(args.out).with_suffix(".png").name}
    kept = _not_repeated(done, records)
    if kept:  # a resume that named fewer budgets or contenders keeps, and reports, the runs it did not plan
        results["runs"] = records + kept
        results["settings"] = _settings(args, saved)
    return results


def _settings(args, saved: dict) -> dict:
    """The recorded settings, with the budgets and contenders of the runs a resume keeps from `saved`."""
    before = saved.get("settings", {})
    return {**recorded_settings(args),
            "budgets": sorted(set(args.budgets) | set(before.get("budgets", []))),
            "contenders": [c for c in CONTENDERS if c in {*args.contenders, *before.get("contenders", [])}]}


def _not_repeated(done: dict, records: list) -> list:
    """The runs kept from the file that this invocation has not recorded (again)."""
    recorded = {run_key(run) for run in records}
    return [run for key, run in done.items() if key not in recorded]


def _save_partial(json_path: Path, settings: dict, records: list) -> None:
    """The runs so far, so that --resume can go on after an interruption (and report them all after it)."""
    from nin_keras._atomic import write_json

    write_json(json_path, {"settings": settings, "runs": records, "partial": True})


# ---------------------------------------------------------------------------------------------- report


def budget_results(results) -> dict:
    """{contender: {budget: {"test": [per seed], "seconds": [...], "rss": [...], "int8": ...}}}."""
    table = {}
    budgets = results["settings"]["budgets"]
    for record in results["runs"]:
        contender = record["contender"]
        if contender == "plain Keras":
            for budget in budgets:
                if budget <= record["epochs_run"]:
                    epoch = record["epochs"][budget - 1]
                    row = table.setdefault(contender, {}).setdefault(budget, _empty())
                    row["test"].append(epoch["test_accuracy"])
                    row["val"].append(epoch["val_accuracy"])
                    row["seconds"].append(sum(e["seconds"] for e in record["epochs"][:budget]))
                    row["images"].append(record["train_images"] * budget)
                    row["rss"].append(record["peak_rss_mb"])
            continue
        row = table.setdefault(contender, {}).setdefault(record["budget"], _empty())
        row["test"].append(record["test_accuracy"])
        row["val"].append(record["val_accuracy"])
        row["seconds"].append(record["train_seconds"])
        row["images"].append(record["train_images"] * record["epochs_run"])
        row["rss"].append(record["peak_rss_mb"])
        if record.get("int8"):
            row["int8"] = record["int8"]
    return table


def _empty() -> dict:
    return {"test": [], "val": [], "seconds": [], "images": [], "rss": [], "int8": None}


def time_to_target(results, table) -> dict:
    """Training seconds each contender needs to reach the target test accuracy (seed 0), or None."""
    target = results["settings"]["target"]
    found = {}
    for contender, budgets in table.items():
        if contender == "plain Keras":
            record = next(r for r in results["runs"] if r["contender"] == contender and r["seed"] == 0)
            elapsed, hit = 0.0, None
            for epoch in record["epochs"]:
                elapsed += epoch["seconds"]
                if epoch["test_accuracy"] >= target:
                    hit = {"seconds": elapsed, "epochs": epoch["epoch"], "reached": True}
                    break
            found[contender] = hit or {"seconds": elapsed, "epochs": len(record["epochs"]), "reached": False}
            continue
        hits = [(b, row) for b, row in sorted(budgets.items()) if row["test"][0] >= target]
        found[contender] = ({"seconds": hits[0][1]["seconds"][0], "epochs": hits[0][0], "reached": True}
                            if hits else None)
    return found


def _mean_spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.2f}%"
    return (f"{100 * statistics.mean(values):.2f}% ± {100 * statistics.stdev(values):.2f} "
            f"(min {100 * min(values):.2f}, max {100 * max(values):.2f}, {len(values)} seeds)")


def verdict(value: float, must: float, aim: float | None = None) -> str:
    if aim is not None and value >= aim:
        return "**aim met**"
    return "must met" if value >= must else "**NOT met**"


def render(results) -> str:
    table = budget_results(results)
    settings, targets = results["settings"], results["targets"]
    lines = header_lines("Time to accuracy", results) + [
        f"- Data: `{settings['dataset']}`, validation split 0.1 of the training files (seeded like the run), "
        f"test split reported once per configuration; NIN `{settings['variant']}` variant, width "
        f"{settings['width']}.", "",
        "## Test accuracy by epoch budget", "",
        "| contender | budget (epochs) | test accuracy | validation accuracy | training time | images/s | "
        "peak memory |", "|---|---|---|---|---|---|---|"]
    for contender, budgets in table.items():
        for budget, row in sorted(budgets.items()):
            speed = sum(row["images"]) / max(sum(row["seconds"]), 1e-9)
            lines.append(f"| {contender} | {budget} | {_mean_spread(row['test'])} | "
                         f"{100 * statistics.mean(row['val']):.2f}% | {statistics.mean(row['seconds']) / 60:.1f} min "
                         f"| {speed:.0f} | {max(row['rss']):.0f} MB |")
    lines += ["", "Training time is the sum of the epochs' wall-clock (validation passes included; start-up, "
              "data loading and the test pass excluded). Peak memory is the run's process (ru_maxrss).", ""]
    lines += _targets_section(results, table, targets)
    runs = {run_key(r): r.get("recipe") for r in results["runs"] if r.get("recipe")}
    if runs:
        lines += ["## Recipes as the runs printed them", ""] + [f"- `{key}`: {text}" for key, text in runs.items()]
    lines += ["", f"![test accuracy against training minutes]({results.get('figure', 'accuracy.png')})", ""]
    return "\n".join(lines)


def _targets_section(results, table, targets) -> list[str]:
    lines = ["## Targets", "", "| target | measured | verdict |", "|---|---|---|"]
    ours = table.get("nin-keras", {})
    for budget, row in sorted(ours.items()):
        must, aim = targets["accuracy"].get(str(budget), (None, None))
        if must is not None:
            mean = statistics.mean(row["test"])
            lines.append(f"| {budget} epoch(s): test accuracy >= {must:.3f} (aim {aim:.3f}) | {100 * mean:.2f}% | "
                         f"{verdict(mean, must, aim)} |")
        if row["int8"] and row["int8"].get("int8") is not None:
            gap = round(100 * (row["int8"]["float"] - row["int8"]["int8"]), 2) + 0.0  # no "-0.00"
            lines.append(f"| {budget} epoch(s): int8 within {targets['int8_gap_pp']} points of float | "
                         f"float {100 * row['int8']['float']:.2f}%, int8 {100 * row['int8']['int8']:.2f}% "
                         f"(gap {gap:+.2f}) | {verdict(-abs(gap), -targets['int8_gap_pp'])} |")
        if budget == 3:
            lines.append(f"| 3 epochs: peak memory < {targets['rss_gb']:.0f} GB | {max(row['rss']):.0f} MB | "
                         f"{verdict(-max(row['rss']) / 1024, -targets['rss_gb'])} |")
    reach = time_to_target(results, table)
    mine, plain = reach.get("nin-keras"), reach.get("plain Keras")
    if mine and plain:
        ratio = mine["seconds"] / plain["seconds"]
        plain_text = (f"plain Keras {plain['seconds'] / 60:.1f} min ({plain['epochs']} epochs"
                      + ("" if plain["reached"] else ", never reached: its time at the cap") + ")")
        lines.append(f"| time to {100 * results['settings']['target']:.0f}% test accuracy <= 1/3 of plain Keras | "
                     f"nin-keras {mine['seconds'] / 60:.1f} min ({mine['epochs']}-epoch run), {plain_text}: "
                     f"ratio {ratio:.2f} | {verdict(-ratio, -targets['time_ratio'])} |")
    elif plain:
        lines.append(f"| time to {100 * results['settings']['target']:.0f}% test accuracy | nin-keras: no budget run "
                     "reached it | **NOT met** |")
    return lines + [""]


def plot(results, path: Path) -> None:
    """Test accuracy against training minutes: budget runs (seed means) per recipe, the plain script per epoch."""
    from nin_keras.viz.figures import new_figure, save_figure

    table = budget_results(results)
    figure = new_figure(7, 4.2)
    axes = figure.add_subplot(1, 1, 1)
    for contender, budgets in table.items():
        if contender == "plain Keras":
            record = next(r for r in results["runs"] if r["contender"] == contender and r["seed"] == 0)
            minutes = [sum(e["seconds"] for e in record["epochs"][:i + 1]) / 60 for i in range(len(record["epochs"]))]
            axes.plot(minutes, [100 * e["test_accuracy"] for e in record["epochs"]], "s--", label=f"{contender} "
                      "(after each epoch, seed 0)")
            continue
        points = sorted((statistics.mean(r["seconds"]) / 60, 100 * statistics.mean(r["test"]), b)
                        for b, r in budgets.items())
        axes.plot([p[0] for p in points], [p[1] for p in points], "o-", label=f"{contender} (one run per budget)")
        for x, y, budget in points:
            axes.annotate(f"{budget} ep", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=8)
    axes.axhline(100 * results["settings"]["target"], color="grey", lw=0.8, ls=":")
    axes.set_xlabel("training wall-clock (minutes)")
    axes.set_ylabel("test accuracy (%)")
    axes.set_title(f"{results['settings']['dataset']}: accuracy in the time you have")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    save_figure(figure, path)


def main(argv=None) -> int:
    args = parse_args(argv)
    results = run(TOOL, args, argv, measure, render)
    figure = Path(args.out).with_suffix(".png")
    plot(results, figure)
    log(f"wrote {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
