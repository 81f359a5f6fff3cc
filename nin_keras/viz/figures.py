"""Training curves, confusion matrix and per-artifact comparison: PNGs readable without any report.

Figures are `matplotlib.figure.Figure` objects drawn on the Agg canvas directly; `pyplot` is never imported,
so no global figure state leaks into (or is taken from) a user's session, and no display is needed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from nin_keras._atomic import atomic_path
from nin_keras.display import show_image
from nin_keras.errors import InvalidInputError
from nin_keras.formatting import format_size

# Keras names for the accuracy metric, in the order they are looked up.
_ACCURACY_KEYS = ("accuracy", "acc", "sparse_categorical_accuracy", "categorical_accuracy")
DPI = 120


def new_figure(width: float, height: float):
    """A Figure on its own Agg canvas (no pyplot, no global state)."""
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure, path, *, show: bool | None = None) -> Path:
    """Writes `figure` as a PNG at `path` atomically (a temporary file renamed into place).

    `show`: also display it inline; None (default) does so when running in a notebook.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InvalidInputError(f"Figures are written as PNG; the path must end with .png: {path}")
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=DPI)
    if show is not False:
        show_image(path)  # shows only inside a notebook, where None and True both mean "show"
    return path


def plot_training_curves(history, path, *, title: str | None = None, show: bool | None = None) -> Path:
    """Plots loss and accuracy per epoch, train and validation, in two panels.

    Args:
        history: a Keras `History.history`-style dict of lists, e.g. {"loss": [...], "accuracy": [...],
            "val_loss": [...], "val_accuracy": [...]} (any subset; "acc"/"sparse_categorical_accuracy"
            are understood too), or a `keras.callbacks.History`.
        path: where to write the PNG (written atomically; parent folders are created).
        title: figure title. Defaults to "Training curves".
        show: also display the figure inline; None (default) does so in a notebook.

    Returns:
        The path of the PNG.

    Raises:
        InvalidInputError: `history` holds neither a loss nor an accuracy series.
    """
    history = getattr(history, "history", history)
    if not isinstance(history, dict):
        raise InvalidInputError(f"history must be a dict of metric name -> list of values; "
                                f"received {type(history).__name__}.")
    series = {key: _as_floats(key, values) for key, values in history.items()}
    accuracy_key = next((k for k in _ACCURACY_KEYS if k in series or f"val_{k}" in series), "accuracy")
    panels = [("loss", "Loss", "loss"), (accuracy_key, "Accuracy", "accuracy")]
    if not any(key in series or f"val_{key}" in series for key, _, _ in panels):
        names = ", ".join(sorted(series)) or "nothing"
        raise InvalidInputError(
            f"history has no loss or accuracy series to plot (it holds {names}); expected keys such as "
            "loss, accuracy, val_loss, val_accuracy."
        )

    figure = new_figure(10, 4)
    figure.suptitle(title or "Training curves", fontsize=13)
    for axes, (key, label, kind) in zip(figure.subplots(1, 2), panels):
        drawn = False
        for name, style, legend in ((key, "-o", "train"), (f"val_{key}", "-s", "validation")):
            values = series.get(name)
            if not values:
                continue
            epochs = np.arange(1, len(values) + 1)
            axes.plot(epochs, values, style, markersize=3, linewidth=1.5, label=f"{legend} ({values[-1]:.4g} last)")
            drawn = True
            if kind == "accuracy" and name.startswith("val_") and np.isfinite(values).any():
                best = int(np.nanargmax(values))
                axes.annotate(f"best validation {values[best]:.3f} (epoch {best + 1})", (best + 1, values[best]),
                              xytext=(0.5, 0.45), textcoords="axes fraction", ha="center", fontsize=8,
                              bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.7"},
                              arrowprops={"arrowstyle": "->", "color": "0.4"})
        axes.set_title(label)
        axes.set_xlabel("epoch")
        axes.set_ylabel(label.lower())
        axes.grid(True, alpha=0.3)
        if drawn:
            axes.legend(loc="best", fontsize=9)
            axes.xaxis.get_major_locator().set_params(integer=True)
        else:
            axes.text(0.5, 0.5, f"no {label.lower()} recorded", ha="center", va="center",
                      transform=axes.transAxes, color="0.4")
        if kind == "accuracy" and drawn:
            axes.set_ylim(top=1.0 + 0.02)
    return save_figure(figure, path, show=show)


def plot_confusion_matrix(labels, predictions, class_names, path, *, title: str | None = None,
                          normalize: bool = True, show: bool | None = None) -> Path:
    """Draws the confusion matrix of `predictions` against true `labels`.

    Cells are coloured by the share of each true class (row-normalised, so rare classes read as well as
    common ones) and annotated with counts; the title gives the accuracy.

    Args:
        labels: true class ids, shape (n,).
        predictions: predicted class ids (n,), or scores/probabilities (n, classes) (argmax is taken).
        class_names: one name per class; its length sets the number of classes. None numbers them.
        path: where to write the PNG (atomically).
        title: figure title. Defaults to "Confusion matrix (test set)".
        show: also display the figure inline; None (default) does so in a notebook.
        normalize: colour by row share (True) or by raw count (False). Defaults to True.

    Returns:
        The path of the PNG.
    """
    labels = np.asarray(labels).reshape(-1)
    predictions = np.asarray(predictions)
    if predictions.ndim == 2:
        predictions = predictions.argmax(axis=-1)
    predictions = predictions.reshape(-1)
    if labels.shape != predictions.shape:
        raise InvalidInputError(f"labels and predictions differ in length: {labels.shape[0]} vs "
                                f"{predictions.shape[0]}.")
    if labels.size == 0:
        raise InvalidInputError("No labels to draw a confusion matrix from.")
    labels, predictions = labels.astype(np.int64), predictions.astype(np.int64)
    if class_names is None:
        num_classes = int(max(labels.max(), predictions.max())) + 1
        class_names = [str(i) for i in range(num_classes)]
    class_names = [str(name) for name in class_names]
    num_classes = len(class_names)
    for name, values in (("labels", labels), ("predictions", predictions)):
        if values.min() < 0 or values.max() >= num_classes:
            raise InvalidInputError(f"{name} hold class ids outside 0..{num_classes - 1} "
                                    f"(the {num_classes} class_names).")

    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    accuracy = float(np.trace(matrix) / matrix.sum())
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1) if normalize else matrix

    side = min(max(4.5, 0.5 * num_classes + 2.5), 16)
    figure = new_figure(side + 1.2, side)
    axes = figure.subplots()
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    colorbar = figure.colorbar(image, ax=axes, shrink=0.8)
    colorbar.set_label("share of true class" if normalize else "count")
    if num_classes <= 40:
        ticks = np.arange(num_classes)
        axes.set_xticks(ticks, labels=class_names, rotation=45 if max(map(len, class_names)) > 2 else 0,
                        ha="right" if max(map(len, class_names)) > 2 else "center")
        axes.set_yticks(ticks, labels=class_names)
    if num_classes <= 25:
        threshold = (1 if normalize else max(matrix.max(), 1)) / 2
        for row in range(num_classes):
            for col in range(num_classes):
                if matrix[row, col]:
                    axes.text(col, row, str(matrix[row, col]), ha="center", va="center", fontsize=8,
                              color="white" if shares[row, col] > threshold else "black")
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(f"{title or 'Confusion matrix (test set)'}\naccuracy {accuracy:.2%} on {labels.size} images "
                   "(cell = count)", fontsize=11)
    return save_figure(figure, path, show=show)


def plot_artifact_comparison(rows, path, *, title: str | None = None, show: bool | None = None) -> Path:
    """Compares exported artifacts side by side: test accuracy, file size and batch-1 latency.

    Args:
        rows: the rows of `nin_keras.verification.verify_export` (or report.json's rows): dicts with at
            least "artifact" and any of "accuracy", "agreement", "size_bytes", "latency_ms_batch1_median",
            "precision". Missing values show as "n/a".
        path: where to write the PNG (atomically).
        title: figure title. Defaults to "Exported artifacts: accuracy, size, latency".
        show: also display the figure inline; None (default) does so in a notebook.

    Returns:
        The path of the PNG.
    """
    rows = [dict(row) for row in rows]
    if not rows:
        raise InvalidInputError("No artifact rows to plot (verify_export returned none?).")
    names = [str(row.get("artifact") or row.get("target") or f"artifact {i}") for i, row in enumerate(rows)]
    accuracy = [_number(row.get("accuracy")) for row in rows]
    agreement = [_number(row.get("agreement")) for row in rows]
    size_bytes = [_number(row.get("size_bytes")) for row in rows]
    size_mb = [None if v is None else v / 1e6 for v in size_bytes]  # decimal MB, as format_size writes sizes
    latency = [_number(row.get("latency_ms_batch1_median")) for row in rows]

    figure = new_figure(14, 0.45 * len(rows) + 2.4)
    figure.suptitle(title or "Exported artifacts: accuracy, size, latency", fontsize=13)
    panels = figure.subplots(1, 3, sharey=True)
    positions = np.arange(len(rows))
    colors = [_precision_color(row.get("precision"), row.get("artifact")) for row in rows]

    # Accuracy, in percent; the axis is zoomed to the spread so small differences are visible (stated).
    known = [100 * v for v in accuracy if v is not None]
    low = max(0.0, math.floor(min(known) - 2)) if known else 0.0
    _bars(panels[0], positions, [None if v is None else 100 * v for v in accuracy], colors,
          [_accuracy_text(a, g) for a, g in zip(accuracy, agreement)], left=low)
    panels[0].set_xlim(low, 100 + (100 - low) * 0.45)  # room for the value labels; no ticks above 100
    panels[0].set_xticks([t for t in panels[0].get_xticks() if low <= t <= 100])
    panels[0].set_xlabel("test accuracy, %" + (f" (axis starts at {low:g})" if low > 0 else ""))
    panels[0].set_title("Test accuracy (top-1 agreement with Keras)")

    _bars(panels[1], positions, size_mb, colors, [format_size(v) for v in size_bytes])
    panels[1].set_xlabel("size, MB")
    panels[1].set_title("Size on disk")

    _bars(panels[2], positions, latency, colors, [None if v is None else f"{v:.3g} ms" for v in latency])
    panels[2].set_xlabel("batch-1 median latency, ms")
    panels[2].set_title("Latency (this machine)")

    panels[0].set_yticks(positions, labels=names)
    panels[0].invert_yaxis()
    for axes in panels:
        axes.grid(True, axis="x", alpha=0.3)
    return save_figure(figure, path, show=show)


def _bars(axes, positions, values, colors, texts, *, left: float = 0.0) -> None:
    known = [v for v in values if v is not None]
    top = max(known) if known else 1.0
    for position, value, color, text in zip(positions, values, colors, texts):
        if value is None:
            axes.text(left, position, "  n/a", va="center", fontsize=9, color="0.4")
            continue
        axes.barh(position, value - left, left=left, color=color, height=0.7)
        axes.text(value, position, f" {text}", va="center", fontsize=8)
    if left == 0.0:
        axes.set_xlim(0, top * 1.45 if top > 0 else 1)


def _precision_color(precision, artifact) -> str:
    text = f"{precision or ''} {artifact or ''}".lower()
    if "edgetpu" in text:
        return "#8c564b"
    if "full int8" in text or "int8" in text and "weights /" not in text:
        return "#d62728"
    if "dynamic" in text or "weights /" in text:
        return "#ff7f0e"
    if "float16" in text:
        return "#2ca02c"
    return "#1f77b4"


def _accuracy_text(accuracy, agreement) -> str | None:
    if accuracy is None:
        return None
    text = f"{100 * accuracy:.2f}%"
    if agreement is not None:
        text += f" ({100 * agreement:.1f}%)"
    return text


def _number(value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _as_floats(key, values) -> list[float]:
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        raise InvalidInputError(f"history[{key!r}] must be a list of numbers.") from None


def plot_int8_layer_errors(rows, path, *, title: str | None = None, show: bool | None = None) -> Path:
    """Int8 error per layer in network order, the worst highlighted (`explain_int8`'s rows or their dicts).

    Args:
        rows: dicts or objects with "layer", "position" and "own_error" (and optionally "end_to_end_error").
        path: where to write the PNG (atomically).
        title: figure title. Defaults to "int8 error per layer (network order)".
        show: also display the figure inline; None (default) does so in a notebook.

    Returns:
        The path of the PNG.
    """
    rows = [row if isinstance(row, dict) else row.to_dict() for row in rows]
    if not rows:
        raise InvalidInputError("No int8 layer rows to plot (explain_int8 found no quantized tensor?).")
    rows = sorted(rows, key=lambda row: row.get("position", 0))
    names = [f"{row['layer']} ({row.get('op', '')})" if row.get("op") else str(row["layer"]) for row in rows]
    own = [float(row.get("own_error") or 0.0) for row in rows]
    inherited = [float(row.get("end_to_end_error") or 0.0) for row in rows]
    worst = int(np.argmax(own))
    figure = new_figure(max(6.0, 0.5 * len(rows) + 3), 4.5)
    axes = figure.subplots()
    positions = np.arange(len(rows))
    colors = ["tab:red" if index == worst else "tab:blue" for index in positions]
    axes.bar(positions, own, color=colors, label="own int8 error (ranks the layers)")
    axes.plot(positions, inherited, "k.--", alpha=0.6, label="end-to-end error (inherited included)")
    axes.set_xticks(positions, labels=names, rotation=60, ha="right", fontsize=8)
    axes.set_ylabel("RMSE / float std")
    axes.set_title(title or f"int8 error per layer (network order); worst: {rows[worst]['layer']}")
    axes.grid(True, axis="y", alpha=0.3)
    axes.legend(fontsize=8)
    return save_figure(figure, path, show=show)
