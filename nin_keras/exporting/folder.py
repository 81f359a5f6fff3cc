"""The export folder: `export_targets` writes the chosen targets into it, all or nothing.

Everything is built in a hidden staging folder beside `out_dir` (`.<name>.<pid>.<random>.staging`, and a
`.work` folder for intermediate files). Only when every target succeeded does the staging folder become the
export: the files of other targets an earlier export of the same model left are linked (or copied) into it,
then it replaces `out_dir` with two renames (`swap_dir`), so `out_dir` holds either the old export intact or
the new one complete, never a mix. A failure, an exception or a kill before that point leaves `out_dir` exactly
as it was. A failure or exception leaves no temporary files behind; what a kill leaves is removed by the next
export to the same folder.

manifest.json records the model's fingerprint (input shape, classes, weights). An export of another model
into a folder holding one is refused before anything is written, unless it rewrites every target the folder
holds or `overwrite=True` is passed: then the folder is replaced whole, nothing of the old model kept.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from nin_keras._atomic import remove_stale_staging, staging_dir, swap_dir, write_json
from nin_keras.display import progress_to
from nin_keras.errors import InvalidInputError, NinKerasError, NotAFolderError, OutputExistsError, StorageError
from nin_keras.export_layout import (
    EDGETPU_COMPILED_GLOB,
    INT8_CHOICE_FILE,
    MIXED_INT8_TARGET,
    REPORT_FILES,
    TARGET_SPECS,
    check_class_names,
)
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
                   representative_samples: int | None = None, progress: bool = True,
                   overwrite: bool = False, int8_float_layers=()) -> Manifest:
    """Writes `targets` of `model` into `out_dir` and returns the manifest (also written as manifest.json).

    Args:
        model: a Keras 3 image classifier taking raw pixels.
        out_dir: the export folder (created). Files of other targets an earlier export of the same model
            wrote there are kept; a folder holding another model's export is refused (see `overwrite`).
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
        overwrite: replace `out_dir` whole (nothing of what it held is kept). Without it, a folder holding an
            export of another model (other weights, input shape or classes) is refused before anything is
            written, unless this export rewrites every target it holds. Defaults to False.
        int8_float_layers: Keras layer names the tflite_int8_mixed target keeps in float (it is added to the
            targets when layers are named). `nin_keras.explain_int8` ranks the candidates.

    Returns:
        The `Manifest`: model name, input shape, classes, per target a `ManifestEntry` (file, size, input/output
        dtype/shape/quantization, ops, target-specific findings: GPU compatibility, Edge TPU check) and the
        targets skipped. `manifest.to_dict()` is manifest.json; it also reads as that dict (`manifest["targets"]`).

    Raises:
        InvalidInputError: unknown target, full-integer targets without data, data or class names that do
            not fit the model.
        OutputExistsError: `out_dir` holds an export of another model (and overwrite is False).
        ConversionError: the converter failed (its message is carried).
        StorageError: the folder could not be written (no space left, read-only); `out_dir` is unchanged.
    """
    selection = with_int8_float_layers(select_targets(targets), int8_float_layers)
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
    fingerprint = model_fingerprint(model)
    keep_previous = check_export_folder(out_dir, model, names, overwrite=overwrite, fingerprint=fingerprint)
    folder = _real_folder(out_dir)
    with disk_errors_named(out_dir):
        remove_stale_staging(folder)  # what an earlier, killed export of this folder left
        staging, work_dir = staging_dir(folder), None
        try:
            work_dir = staging_dir(folder, kind="work")
            context = ExportContext(model=model, representative_images=images, qat_model=qat_model,
                                    work_dir=work_dir, float_model=float32_model(model), class_names=class_names,
                                    int8_float_layers=tuple(_layer_names(int8_float_layers)))
            entries = _write_targets(context, names, selection.skipped, staging, progress)
            write_labels(staging, class_names)
            manifest = Manifest(
                model=model.name,
                input_shape=list(input_shape),
                num_classes=num_classes,
                labels=LABELS_FILE,
                qat=None if qat_model is None else {
                    "epochs": qat_model.epochs, "history": qat_model.history,
                    "kept_float": [name for name, treatment in qat_model.plan.items()
                                   if treatment == "kept float"]},
                representative_samples=None if images is None else int(len(images)),
                targets={**(_previous_targets(folder, names) if keep_previous else {}), **entries},
                skipped=dict(selection.skipped),
                model_fingerprint=fingerprint,
            )
            write_json(staging / MANIFEST_FILE, manifest.to_dict())
            if keep_previous:
                _carry_over(folder, staging, names)
            _move_into(staging, folder)
        finally:
            for scratch in (staging, work_dir):
                if scratch is not None:
                    shutil.rmtree(scratch, ignore_errors=True)
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


def _layer_names(layers) -> list[str]:
    return [layers] if isinstance(layers, str) else [str(name) for name in layers or ()]


def with_int8_float_layers(selection, int8_float_layers):
    """`selection` with tflite_int8_mixed added when `int8_float_layers` names layers; refused the other way
    round (the target selected with no layers to keep in float)."""
    layers = _layer_names(int8_float_layers)
    if layers and MIXED_INT8_TARGET not in selection.names:
        wanted = set(selection.names) | {MIXED_INT8_TARGET}
        return dataclasses.replace(selection, names=tuple(name for name in EXPORT_TARGETS if name in wanted))
    if not layers and MIXED_INT8_TARGET in selection.names:
        raise InvalidInputError(f"{MIXED_INT8_TARGET} keeps chosen layers in float: name them with "
                                "int8_float_layers= (nin_keras.explain_int8 ranks the candidates), or leave the "
                                "target out.")
    return selection


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
    """Makes the finished `staging` folder `out_dir`: one rename, or two when `out_dir` exists (`swap_dir`)."""
    if not out_dir.exists():
        os.replace(staging, out_dir)  # the whole export appears at once
        return
    shutil.copymode(out_dir, staging)  # the folder keeps the mode its owner gave it
    swap_dir(staging, out_dir)


# Files an export writes besides its targets' own, and when one of this export's targets makes them stale.
_STALE_WITH = {INT8_CHOICE_FILE: ("tflite_int8", "edgetpu"), "edgetpu_compiler.txt": ("edgetpu",)}


def _carry_over(out_dir: Path, staging: Path, names) -> None:
    """Links (or copies) into `staging` what `out_dir` holds that this export does not rewrite: other targets'
    files, and other versions in saved_model/. The reports are left out (verification rewrites them from the
    folder's artifacts), as is what this export's targets make stale (int8_choice.json, edgetpu_compiler's output).
    """
    stale = set(REPORT_FILES) | {name for name, targets in _STALE_WITH.items() if set(targets) & set(names)}
    if "edgetpu" in names:
        stale |= {path.name for path in out_dir.glob(EDGETPU_COMPILED_GLOB)}
    for entry in sorted(out_dir.iterdir()):
        destination = staging / entry.name
        if entry.name in stale or _is_temporary(entry.name):
            continue
        if not destination.exists() and not destination.is_symlink():
            _link_or_copy_tree(entry, destination)
        elif entry.is_dir() and not entry.is_symlink() and destination.is_dir():
            # saved_model/ may hold other versions (2/, 3/ ...): keep those this export did not write.
            for child in sorted(entry.iterdir()):
                if not (destination / child.name).exists():
                    _link_or_copy_tree(child, destination / child.name)


def _is_temporary(name: str) -> bool:
    """An atomic writer's temporary file or folder (`.<name>.<random>.tmp...`) left by a killed process."""
    return name.startswith(".") and ".tmp" in name


def _link_or_copy(source, destination) -> None:
    """A hard link (instant, no space), or a copy where the filesystem has none."""
    try:
        os.link(source, destination, follow_symlinks=False)
    except OSError as error:
        if error.errno in _DISK_ERRNOS:
            raise
        shutil.copy2(source, destination, follow_symlinks=False)


def _link_or_copy_tree(source: Path, destination: Path) -> None:
    if source.is_dir() and not source.is_symlink():
        shutil.copytree(source, destination, symlinks=True, copy_function=_link_or_copy)
    else:
        _link_or_copy(source, destination)


def _real_folder(out_dir: Path) -> Path:
    """`out_dir` with symlinks resolved: the folder is replaced where it really is, and a link to it stays."""
    return out_dir.resolve() if out_dir.is_symlink() else out_dir


# ----------------------------------------------------------------- which model a folder holds


def model_fingerprint(model) -> str:
    """"sha256:<hex>" of `model`'s input shape, class count and weights (dtype, shape and bytes, in order).

    Two models with the same fingerprint compute the same function: an export folder's files can be kept
    beside new ones only when both come from the same fingerprint.
    """
    digest = hashlib.sha256()
    shapes = [list(model.inputs[0].shape[1:]), list(model.outputs[0].shape[1:])]
    digest.update(json.dumps(shapes, default=str).encode())
    for array in model.get_weights():
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return f"sha256:{digest.hexdigest()}"


def check_export_folder(out_dir, model, targets="all", *, overwrite: bool = False, fingerprint=None) -> bool:
    """Checks, before anything is written, that exporting `targets` of `model` into `out_dir` mixes no two models.

    Args:
        out_dir: the export folder.
        model: the model to export.
        targets: what `select_targets` takes, or its names.
        overwrite: the folder will be replaced whole: nothing to check. Defaults to False.
        fingerprint: `model_fingerprint(model)`, when already computed.

    Returns:
        Whether files `out_dir` holds are kept beside the new ones (same model, or a folder without an
        export); False when the folder is new or replaced whole.

    Raises:
        NotAFolderError: `out_dir` is a file.
        OutputExistsError: `out_dir` holds an export of another model, or export files whose model cannot be
            told (no readable manifest.json), that this export would not all rewrite; or `out_dir` holds the
            working directory (a folder replaced by renames cannot be the one this process is in).
    """
    out_dir = Path(out_dir)
    names = set(select_targets(targets).names)
    if not out_dir.exists():
        return False
    if not out_dir.is_dir():
        raise NotAFolderError(f"Export folder {out_dir} exists and is not a folder: choose another out_dir=.")
    if Path.cwd().resolve().is_relative_to(out_dir.resolve()):
        raise OutputExistsError(
            f"Export folder {out_dir} holds the current working directory; an export replaces its folder with a "
            "rename, so it cannot be the folder you are in: pass another out_dir= (e.g. a subfolder)."
        )
    if overwrite:
        return False
    held = {name for name, spec in TARGET_SPECS.items() if (out_dir / spec.file).exists()}
    previous = _read_manifest(out_dir)
    if previous is None and not held and not (out_dir / MANIFEST_FILE).exists():
        return True  # a folder of other files, no export: they stay
    fingerprint = fingerprint or model_fingerprint(model)
    if previous is not None and _same_model(previous, model, fingerprint):
        return True
    if held <= names:
        return False  # every file of the old export is rewritten: the folder is replaced whole
    if previous is None:
        what = (f"export files ({', '.join(sorted(TARGET_SPECS[name].file for name in held))}) without a readable "
                f"{MANIFEST_FILE}, so which model they come from cannot be told")
    else:
        new = {"model": model.name, "input_shape": [int(d) for d in model.inputs[0].shape[1:]],
               "num_classes": int(model.outputs[0].shape[-1])}
        what = f"an export of another model ({_describe(previous)}; exporting {_describe(new)})"
    kept = ", ".join(sorted(held - names))
    raise OutputExistsError(
        f"Export folder {out_dir} holds {what}; the files of its {kept} would be left beside the new ones, "
        "mixing two models in one folder. Nothing was written. Choose another out_dir=, or pass overwrite=True "
        "to replace the folder whole."
    )


def _read_manifest(out_dir: Path) -> dict | None:
    try:
        manifest = json.loads((out_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _same_model(previous: dict, model, fingerprint: str) -> bool:
    recorded = previous.get("model_fingerprint")
    if recorded is not None:
        return recorded == fingerprint
    # A manifest from before fingerprints: the same name, input shape and classes is the best it can tell.
    return (previous.get("model") == model.name
            and previous.get("input_shape") == [int(d) for d in model.inputs[0].shape[1:]]
            and previous.get("num_classes") == int(model.outputs[0].shape[-1]))


def _describe(manifest: dict) -> str:
    shape = manifest.get("input_shape")
    shape_text = "x".join(str(d) for d in shape) if isinstance(shape, list) else "?"
    return f"{manifest.get('model')!r}, {manifest.get('num_classes')} classes, input {shape_text}"


# ----------------------------------------------------------------- disk errors


# errno -> what it means for the folder, and the fix.
_DISK_ERRNOS = {
    errno.ENOSPC: ("no space is left on its disk", "free some space or choose another out_dir="),
    errno.EDQUOT: ("the disk quota is exceeded", "free some space or choose another out_dir="),
    errno.EROFS: ("its filesystem is read-only", "choose a writable out_dir="),
    errno.EACCES: ("permission was denied", "choose a folder you can write to (out_dir=)"),
    errno.EPERM: ("the operation was not permitted", "choose a folder you can write to (out_dir=)"),
}
# How TensorFlow's C++ file writers (SavedModel, checkpoints) say the same: they raise tf.errors.OpError
# subclasses (ResourceExhaustedError, PermissionDeniedError, ...), not OSError.
_DISK_MESSAGES = {
    "No space left on device": errno.ENOSPC, "Disk quota exceeded": errno.EDQUOT,
    "Read-only file system": errno.EROFS, "Permission denied": errno.EACCES,
}


def _disk_errno(error: BaseException) -> int | None:
    """The errno of a full, read-only or unwritable disk behind `error` (or what caused it), else None."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in _DISK_ERRNOS:
            return error.errno
        if isinstance(error, (OSError, tf.errors.OpError, NinKerasError)):
            text = str(error)
            found = next((number for message, number in _DISK_MESSAGES.items() if message in text), None)
            if found is not None:
                return found
        error = error.__cause__ or error.__context__
    return None


class disk_errors_named:
    """Turns a full, read-only or unwritable disk met inside the block into one `StorageError` naming `folder`.

    TensorFlow reports a full disk as `tf.errors.ResourceExhaustedError` (not an OSError), a read-only one as
    another `OpError`; both become the same error with the fix. Other exceptions pass unchanged.
    """

    def __init__(self, folder):
        self.folder = Path(folder)

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if error is None or isinstance(error, StorageError) or not isinstance(error, Exception):
            return False
        number = _disk_errno(error)
        if number is None:
            return False
        problem, fix = _DISK_ERRNOS[number]
        storage_error = StorageError(f"Could not write the export {self.folder}: {problem} "
                                     f"({os.strerror(number)}); {fix}. The folder was left as it was.")
        storage_error.errno = number
        raise storage_error from error
