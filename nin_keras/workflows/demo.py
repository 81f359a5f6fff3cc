"""The end-to-end demo (`nin-keras demo`, `make demo`): every stage of the package on a real dataset, offline.

Train a width-scaled MNIST-variant NIN on scikit-learn's bundled 8x8 digits, fine-tune it with
quantization-aware training, export every target, evaluate and time every artifact, draw the figures, and
print one table. Nothing is downloaded.

The run folder (default runs/demo/):

    report.md                  the demo's summary: what ran, how long, accuracy, the table, the figures
    train/                     the training run: model.keras (best), history.csv, curves.png, config.json
    export/                    model.keras, saved_model/1/, model_*.tflite, labels.txt, report.json, report.md
    figures/                   training_curves.png, confusion_matrix.png, confidence_maps.png, artifacts.png
    demo.json                  the numbers of this run (what `run_demo` returns)
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import keras
import numpy as np
from rich.console import Console

from nin_keras._atomic import write_json, write_text
from nin_keras.data import as_arrays, load_dataset
from nin_keras.errors import NotAFolderError
from nin_keras.formatting import MISSING, artifact_markdown, format_percent
from nin_keras.models import build_nin
from nin_keras.training import RECIPES, train
from nin_keras.viz import (
    plot_artifact_comparison,
    plot_confidence_maps,
    plot_confusion_matrix,
    plot_training_curves,
)
from nin_keras.export_layout import REPORT_FILES
from nin_keras.verification import report_table
from nin_keras.verification.report import describe_speed
from nin_keras.viz.maps import predict_probabilities
from nin_keras.workflows.export import export


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    """One demo configuration: the model, its training and its quantization-aware fine-tuning."""

    width_multiplier: float
    epochs: int
    qat_epochs: int
    batch_size: int = 32
    learning_rate: float = 3e-3
    # Float test accuracy the demo promises (the target), and the int8 drop it allows (points).
    min_accuracy: float = 0.95
    max_int8_drop_points: float = 0.5


FULL = DemoSettings(width_multiplier=0.5, epochs=20, qat_epochs=3)
# --quick: a smoke run for tests: tiny model, few epochs; accuracy is only expected to beat chance.
QUICK = DemoSettings(width_multiplier=0.25, epochs=4, qat_epochs=1, min_accuracy=0.0,
                     max_int8_drop_points=100.0)

DATASET = "digits"
VARIANT = "mnist"
STAGES = ("data", "train", "export", "figures")


def run_demo(out_dir="runs/demo", *, quick: bool = False, seed: int = 0, console=None) -> dict:
    """Runs the whole pipeline on the digits set and writes a folder with the model, exports, report, figures.

    Args:
        out_dir: the demo folder; the demo's own subfolders (train/, export/, figures/) are replaced on a
            re-run. Defaults to "runs/demo".
        quick: a much shorter run (tiny model, 4 epochs, 1 QAT epoch) for smoke tests; its accuracy is only
            expected to beat chance. Defaults to False.
        seed: seed of the data split, weights and shuffling. Defaults to 0.
        console: a `rich.console.Console` for progress and the final table. Defaults to a new one (stdout).

    Returns:
        A dict: out_dir, report (path of report.md), model (trained model.keras), export_dir, figures
        (name -> path), rows (one per artifact, as in export/report.json), float_accuracy, int8_accuracy,
        int8_drop_points, targets_met, seconds (total), stage_seconds, settings, quick.
    """

    settings = QUICK if quick else FULL
    # A pipe or log file gets a table as wide as its rows (rich would squeeze it into 80 columns).
    console = console or (Console() if sys.stdout.isatty() else Console(width=132))
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotAFolderError(f"Demo folder {out_dir} is a file, not a folder: choose another out_dir=.")
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    stage_seconds: dict[str, float] = {}

    def stage(number: int, text: str) -> None:
        console.rule(f"[bold]{number}/{len(STAGES)}[/] {text}  [dim](t={time.perf_counter() - started:.0f}s)[/]",
                     align="left")

    console.print(f"[bold]nin-keras demo[/]{' (quick)' if quick else ''}: NIN ({VARIANT} variant, width "
                  f"x{settings.width_multiplier}) on {DATASET}, {settings.epochs} epochs + {settings.qat_epochs} QAT "
                  f"epoch(s), every export target; writing to {out_dir}/")

    # 1. data -------------------------------------------------------------------------------------------
    stage(1, f"Loading {DATASET} (scikit-learn's bundled 8x8 digits, offline)")
    tick = time.perf_counter()
    data = load_dataset(DATASET, batch_size=settings.batch_size, validation_split=0.1, seed=seed)
    test_images, test_labels = _test_arrays(data)
    console.print(f"{data.num_classes} classes, images {tuple(data.input_shape)}, "
                  f"{len(test_labels)} test images")
    stage_seconds["data"] = time.perf_counter() - tick

    # 2. train ------------------------------------------------------------------------------------------
    stage(2, f"Training for {settings.epochs} epochs")
    tick = time.perf_counter()
    keras.utils.set_random_seed(seed)
    model = build_nin(data.num_classes, variant=VARIANT, input_shape=tuple(data.input_shape),
                                width_multiplier=settings.width_multiplier, name="nin_digits")
    console.print(f"model {model.name}: {model.count_params():,} parameters")
    result = train(model, data, epochs=settings.epochs,
                             recipe=dataclasses.replace(RECIPES["adam"], learning_rate=settings.learning_rate),
                             out_dir=out_dir / "train", overwrite=True,
                             seed=seed, tensorboard=False)
    run_dir = Path(result.run_dir)
    history = dict(result.history)
    model_path = run_dir / "model.keras"
    trained = result.model  # train() loaded it back from model_path: the saved best model, float32
    stage_seconds["train"] = time.perf_counter() - tick

    # 3. QAT + export + verify --------------------------------------------------------------------------
    stage(3, f"Quantization-aware training ({settings.qat_epochs} epoch(s)), exporting every target, "
             "evaluating every artifact")
    tick = time.perf_counter()
    export_dir = out_dir / "export"
    exported = export(trained, export_dir, targets="all", data=data, qat_epochs=settings.qat_epochs,
                      overwrite=True)  # a new demo run replaces the last one's export, as it replaces its run
    rows = [row.to_dict() for row in exported.report]
    stage_seconds["export"] = time.perf_counter() - tick

    # 4. figures ----------------------------------------------------------------------------------------
    stage(4, "Drawing the figures")
    tick = time.perf_counter()
    figures = _draw_figures(out_dir / "figures", trained, history, rows, test_images, test_labels,
                            list(data.class_names))
    stage_seconds["figures"] = time.perf_counter() - tick

    seconds = time.perf_counter() - started
    float_accuracy = _accuracy_of(rows, "keras")
    int8_accuracy = _accuracy_of(rows, "tflite_int8")
    drop = None if float_accuracy is None or int8_accuracy is None else 100 * (float_accuracy - int8_accuracy)
    targets_met = (float_accuracy is not None and float_accuracy >= settings.min_accuracy
                   and drop is not None and drop <= settings.max_int8_drop_points)
    summary = {
        "out_dir": str(out_dir),
        "report": str(out_dir / "report.md"),
        "model": str(model_path),
        "run_dir": str(run_dir),
        "export_dir": str(export_dir),
        "figures": {name: str(path) for name, path in figures.items()},
        "rows": rows,
        "float_accuracy": float_accuracy,
        "int8_accuracy": int8_accuracy,
        "int8_drop_points": drop,
        "int8_choice": exported.int8_choice,
        "targets_met": bool(targets_met),
        "seconds": round(seconds, 1),
        "stage_seconds": {k: round(v, 1) for k, v in stage_seconds.items()},
        "settings": dataclasses.asdict(settings),
        "quick": quick,
        "dataset": DATASET,
        "variant": VARIANT,
        "parameters": int(trained.count_params()),
        "test_images": int(len(test_labels)),
        "fastest": _fastest_line(export_dir),
    }
    write_json(out_dir / "demo.json", summary)
    write_text(out_dir / "report.md", _report_markdown(summary, export_dir, out_dir))

    console.print(report_table(rows, title=f"nin-keras demo: {DATASET}, {len(test_labels)} test images"))
    _print_verdict(console, summary, settings)
    if summary["fastest"]:
        console.print(summary["fastest"], markup=False, soft_wrap=True)
    console.print(f"Done in {seconds:.0f} s. Folder: {out_dir}/  (report: {out_dir / 'report.md'}, "
                  f"figures: {out_dir / 'figures'}/)")
    return summary


# ----------------------------------------------------------------------------------------------- helpers


def _test_arrays(data):
    images, labels = as_arrays(data, split="test")
    return images, labels.reshape(-1).astype(np.int64)


def _draw_figures(folder: Path, model, history, rows, images, labels, class_names) -> dict[str, Path]:
    figures = {}
    if history:
        figures["training_curves"] = plot_training_curves(
            history, folder / "training_curves.png", title="Training curves (NIN on digits)")
    probabilities = predict_probabilities(model, images)
    figures["confusion_matrix"] = plot_confusion_matrix(
        labels, probabilities, class_names, folder / "confusion_matrix.png",
        title="Confusion matrix, Keras float model, digits test set")
    # Correct and wrong examples both teach something: take the first wrong ones, then fill with the rest.
    wrong = np.flatnonzero(probabilities.argmax(-1) != labels)[:3]
    chosen = np.concatenate([wrong, np.setdiff1d(np.arange(len(labels)), wrong)[: 8 - len(wrong)]])
    figures["confidence_maps"] = plot_confidence_maps(
        model, images[chosen], folder / "confidence_maps.png", class_names, labels=labels[chosen],
        title="Class-confidence maps on digits test images (GAP input; first rows: misclassified, if any)")
    figures["artifacts"] = plot_artifact_comparison(
        rows, folder / "artifacts.png", title="Every exported artifact on the digits test set")
    return figures


def _accuracy_of(rows, target):
    for row in rows:
        if row.get("target") == target and row.get("accuracy") is not None:
            return float(row["accuracy"])
    return None


def _print_verdict(console, summary, settings) -> None:
    accuracy, drop = summary["float_accuracy"], summary["int8_drop_points"]
    if summary["quick"]:
        console.print(f"[dim]Quick run: float accuracy {format_percent(accuracy)}, "
                      f"int8 {format_percent(summary['int8_accuracy'])}"
                      " (a smoke run; the full demo targets >= 95% and an int8 drop <= 0.5 points).[/]")
        return
    mark = "[green]met[/]" if summary["targets_met"] else "[bold red]NOT met[/]"
    console.print(f"Targets {mark}: float test accuracy {format_percent(accuracy)} (>= {settings.min_accuracy:.0%}), "
                  f"int8 {format_percent(summary['int8_accuracy'])}, drop "
                  f"{MISSING if drop is None else f'{drop:.2f}'} points (<= {settings.max_int8_drop_points}).")


def _int8_choice_line(choice) -> str:
    if not choice:
        return "- Full-int8 model: from quantization-aware training."
    scores = choice["validation_accuracy"]
    source = "quantization-aware training" if choice["chosen"] == "qat" else "post-training quantization"
    return (f"- Full-int8 model: from {source}, the better of the two on the validation split "
            f"(QAT {format_percent(scores['qat'])}, post-training {format_percent(scores['ptq'])}; "
            "see export/int8_choice.json).")


def _fastest_line(export_dir: Path) -> str | None:
    """The export report's line naming the fastest .tflite file on this machine (None without one)."""
    report_file = export_dir / REPORT_FILES[0]
    if not report_file.is_file():
        return None
    return describe_speed(json.loads(report_file.read_text(encoding="utf-8")).get("speed"))


def _report_markdown(summary, export_dir: Path, out_dir: Path) -> str:
    settings = summary["settings"]
    lines = [
        "# nin-keras demo",
        "",
        f"NIN ({summary['variant']} variant, width x{settings['width_multiplier']}, "
        f"{summary['parameters']:,} parameters) trained on `{summary['dataset']}` (scikit-learn's 8x8 digits, "
        f"{summary['test_images']} test images) for {settings['epochs']} epochs with Adam, then "
        f"{settings['qat_epochs']} epoch(s) of quantization-aware training, exported to every target and "
        "evaluated artifact by artifact." + (" **Quick smoke run: not representative.**" if summary["quick"] else ""),
        "",
        f"- Total time: {summary['seconds']:.0f} s ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in summary["stage_seconds"].items()) + ")",
        f"- Float (Keras) test accuracy: {format_percent(summary['float_accuracy'])}",
        f"- Full-int8 TFLite test accuracy: {format_percent(summary['int8_accuracy'])} (drop "
        + (MISSING if summary["int8_drop_points"] is None else f"{summary['int8_drop_points']:.2f}") + " points)",
        _int8_choice_line(summary.get("int8_choice")),
        "",
        *artifact_markdown(summary["rows"]),
    ]
    lines += ["", "Agreement: share of test images where the artifact's top-1 class equals the Keras model's.", ""]
    if summary.get("fastest"):
        lines += [summary["fastest"], ""]
    lines += ["## Figures", ""]
    for name, path in summary["figures"].items():
        relative = Path(path).relative_to(out_dir) if Path(path).is_relative_to(out_dir) else Path(path)
        lines.append(f"![{name.replace('_', ' ')}]({relative.as_posix()})")
        lines.append("")
    lines += ["## Files", "",
              f"- `{Path(summary['model']).relative_to(out_dir).as_posix()}`: the trained Keras model "
              "(training run: history.csv, config.json, curves.png beside it)",
              f"- `{export_dir.relative_to(out_dir).as_posix()}/`: every exported artifact, labels.txt, and the "
              "verification report (report.md, report.json: machine, threads, Edge TPU findings)",
              "- `demo.json`: the numbers above", ""]
    return "\n".join(lines)
