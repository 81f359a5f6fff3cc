"""The export folder: `export_targets` writes the chosen targets into it, all or nothing.

Everything is built in a hidden staging folder beside `out_dir` (`.<name>.<pid>.<random>.staging`, and a
`.work` folder for intermediate files). Only when every target succeeded are the new files moved into
`out_dir`, each with one rename (a folder such as saved_model/ with two): a failure, an exception or a kill
before that point leaves `out_dir` exactly as it was. A failure or exception leaves no temporary files
behind; what a kill leaves is removed by the next export to the same folder. Files of targets not exported
this time are kept.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path

from nin_keras._atomic import remove_stale_staging, staging_dir, swap_dir, write_json
from nin_keras.display import progress_to
from nin_keras.errors import InvalidInputError
from nin_keras.export_layout import REPORT_FILES, check_class_names
from nin_keras.exporting.converter import float32_model
from nin_keras.exporting.targets import (
    EXPORT_TARGETS,
    LABELS_FILE,
    MANIFEST_FILE,
    ExportContext,
    Manifest,
    ManifestEntry,
    select_targets,
    write_labels,
)
from nin_keras.formatting import format_size
from nin_keras.models.signature import check_data_fits, check_image_classifier
from nin_keras.quantization.data import DEFAULT_REPRESENTATIVE_SAMPLES, representative_images


def export_targets(model, out_dir, *, targets="all", data=None, qat_model=None, class_names=None,
                   representative_samples: int | None = None, progress: bool = True) -> Manifest:
    """Writes `targets` of `model` into `out_dir` and returns the manifest (also written as manifest.json).

    Args:
        model: a Keras 3 image classifier taking raw pixels.
        out_dir: the export folder (created; existing files of other targets are kept).
        targets: "all", a comma-separated string, a list of names from `EXPORT_TARGETS`, or the
            `TargetSelection` `select_targets` made of one of them (used as it is). Targets "all" leaves out
            (an optional dependency missing) are logged and listed in the manifest's `skipped`.
        data: training data for full-integer calibration (`DatasetSplits`: its train split; a dataset of
            (images, labels); or arrays). Required by tflite_int8 and edgetpu.
        qat_model: a `QATModel` from `quantize_aware`; tflite_int8 and edgetpu convert it instead of
            quantizing the float model after training.
        class_names: names for labels.txt. Defaults to the dataset's, else "0", "1", ...
        representative_samples: calibration images drawn from the training data. Defaults to 200.
        progress: one line per target on stderr (True), or on this `nin_keras.display.ProgressDisplay`.
            Defaults to True.

    Returns:
        The `Manifest`: model name, input shape, classes, per target a `ManifestEntry` (file, size, input/output
        dtype/shape/quantization, ops, target-specific findings: GPU compatibility, Edge TPU check) and the
        targets skipped. `manifest.to_dict()` is manifest.json; it also reads as that dict (`manifest["targets"]`).

    Raises:
        InvalidInputError: unknown target, full-integer targets without data, data or class names that do
            not fit the model.
        ConversionError: the converter failed (its message is carried).
    """
    selection = select_targets(targets)
    names = selection.names
    input_shape, num_classes = check_image_classifier(model)
    needs_data = check_export_data(names, data)
    class_names = _class_names(class_names, data, num_classes)
    images = None
    if data is not None and needs_data:
        images = representative_images(model, data,
                                       num_samples=representative_samples or DEFAULT_REPRESENTATIVE_SAMPLES)
    elif data is not None:
        check_data_fits(model, data)

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidInputError(f"Export folder {out_dir} exists and is not a folder.")
    remove_stale_staging(out_dir)  # what an earlier, killed export of this folder left
    staging = staging_dir(out_dir)
    work_dir = staging_dir(out_dir, kind="work")
    try:
        context = ExportContext(model=model, representative_images=images, qat_model=qat_model, work_dir=work_dir,
                                float_model=float32_model(model), class_names=class_names)
        entries = _write_targets(context, names, selection.skipped, staging, progress)
        write_labels(staging, class_names)
        manifest = Manifest(
            model=model.name,
            input_shape=list(input_shape),
            num_classes=num_classes,
            labels=LABELS_FILE,
            qat=None if qat_model is None else {
                "epochs": qat_model.epochs, "history": qat_model.history,
                "kept_float": [name for name, treatment in qat_model.plan.items() if treatment == "kept float"]},
            representative_samples=None if images is None else int(len(images)),
            targets={**_previous_targets(out_dir, names), **entries},
            skipped=dict(selection.skipped),
        )
        write_json(staging / MANIFEST_FILE, manifest.to_dict())
        _move_into(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(work_dir, ignore_errors=True)
    return manifest


def _write_targets(context: ExportContext, names, skipped: dict, staging: Path, progress) -> dict:
    """Runs each target's writer into `staging`: name -> its `ManifestEntry`; one line per target, skipped too."""
    entries = {}
    with progress_to(progress, stream=sys.stderr) as display:
        for name, reason in skipped.items():
            display.log(f"  {name:<15} skipped: {reason}")
        for name in names:
            started = time.perf_counter()
            entry = EXPORT_TARGETS[name].write(context, staging)
            entries[name] = dataclasses.replace(entry, seconds=round(time.perf_counter() - started, 2))
            display.log(f"  {name:<15} {entry.file:<28} {format_size(entry.size_bytes):>10}  "
                        f"{entries[name].seconds:6.1f} s")
    return entries


def check_export_data(names, data) -> list[str]:
    """What exporting `names` needs of `data`, checked before any slow work; returns the full-integer targets.

    Raises:
        InvalidInputError: data whitened outside the model (its artifacts would take whitened floats, not raw
            pixels), or full-integer targets without the data that calibrates them.
    """
    if getattr(data, "preprocessor", None) is not None:
        raise InvalidInputError(
            "The data was GCN + ZCA whitened outside the model (load_dataset(..., preprocessing='gcn_zca')), so "
            "the model takes whitened floats, but exported artifacts take raw pixels: build the model with "
            "build_nin(..., preprocessing='gcn_zca'), adapt_whitening(model, raw training images), train it "
            "on raw pixels (load_dataset without preprocessing), and export that."
        )
    needs_data = [t for t in names if EXPORT_TARGETS[t].needs_data]
    if needs_data and data is None:
        raise InvalidInputError(
            f"Target{'s' if len(needs_data) > 1 else ''} {', '.join(needs_data)} need representative data for "
            "full-integer quantization: pass data= (the training dataset)."
        )
    return needs_data


def _class_names(class_names, data, num_classes: int) -> list[str]:
    if class_names is None and data is not None:
        class_names = getattr(data, "class_names", None)
    if class_names is None:
        return [str(i) for i in range(num_classes)]
    class_names = [str(name) for name in class_names]
    if len(class_names) != num_classes:
        raise InvalidInputError(
            f"{len(class_names)} class names given for a model with {num_classes} classes."
        )
    return check_class_names(class_names)


def _previous_targets(out_dir: Path, names) -> dict:
    """Manifest entries of targets exported earlier into `out_dir` and kept this time."""
    try:
        previous = json.loads((out_dir / MANIFEST_FILE).read_text())["targets"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    kept = {}
    for target, entry in previous.items():
        if target in EXPORT_TARGETS and target not in names and (out_dir / EXPORT_TARGETS[target].file).exists():
            try:
                kept[target] = ManifestEntry.from_dict(entry)
            except (TypeError, AttributeError):  # an entry this version cannot read: its file stays, unlisted
                continue
    return kept


def _move_into(staging: Path, out_dir: Path) -> None:
    """Moves every finished entry of `staging` into `out_dir` (renames within one filesystem)."""
    if not out_dir.exists():
        os.replace(staging, out_dir)  # the whole export appears at once
        staging.mkdir()  # so the caller's cleanup finds something to remove
        return
    for report in REPORT_FILES:  # written by verification from the artifacts; stale once one is replaced
        (out_dir / report).unlink(missing_ok=True)
    for entry in sorted(staging.iterdir()):
        target = out_dir / entry.name
        if entry.is_dir():
            if target.exists():
                _replace_tree(entry, target)
            else:
                os.replace(entry, target)
        else:
            os.replace(entry, target)


def _replace_tree(new: Path, target: Path) -> None:
    """Replaces folder `target` by `new`; nested folders (saved_model/1) are replaced leaf-folder-wise."""
    # saved_model/ may hold other versions (2/, 3/ ...): replace only the ones we wrote.
    for child in new.iterdir():
        destination = target / child.name
        if child.is_dir() and destination.exists():
            swap_dir(child, destination)
        else:
            os.replace(child, destination)
