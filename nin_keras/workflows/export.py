"""`nin_keras.export`: (quantization-aware training) -> write the export targets -> verify every artifact.

It spans three stages, so it lives here rather than in one of them: quantization (`quantize_aware`), exporting
(`export_targets`, the converter for the QAT-vs-post-training comparison) and verification (`verify_export`,
`evaluate`).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
from pathlib import Path

from nin_keras._atomic import write_json, write_text
from nin_keras.checks import check_int
from nin_keras.display import progress_to
from nin_keras.errors import InvalidInputError
from nin_keras.export_layout import (
    INT8_CHOICE_FILE,
    INT8_LAYERS_PLOT,
    REPORT_FILES,
    TARGET_SPECS,
    Record,
)
from nin_keras.exporting import Manifest, check_export_data, export_targets, select_targets, to_tflite
from nin_keras.exporting.folder import check_export_folder, with_int8_float_layers
from nin_keras.models import check_data_fits, check_image_classifier, load_model, with_input_size
from nin_keras.quantization import (
    DEFAULT_LEARNING_RATE,
    DEFAULT_REPRESENTATIVE_SAMPLES,
    leaf_layer_names,
    quantize_aware,
    representative_images,
)
from nin_keras.verification import ReportRow, evaluate, verify_export
from nin_keras.verification.int8_diagnosis import explain_int8 as diagnose_int8
from nin_keras.verification.int8_diagnosis import format_diagnosis
from nin_keras.viz.figures import plot_int8_layer_errors

DEFAULT_EXPORT_ROOT = "export"


@dataclasses.dataclass(frozen=True, eq=True)
class ExportResult(Record):
    """What `nin_keras.export` returns. It also reads as the dict of earlier versions (`result["manifest"]`).

    Attributes:
        out_dir: the export folder.
        manifest: what was written (manifest.json), a `nin_keras.exporting.Manifest`.
        report: one `nin_keras.verification.ReportRow` per artifact (report.json's rows), or None without data
            or with verify=False.
        int8_choice: the QAT-vs-post-training int8 comparison (int8_choice.json), or None when none was made.
    """

    out_dir: str
    manifest: Manifest
    report: tuple[ReportRow, ...] | None = None
    int8_choice: dict | None = None


def export(model, out_dir=None, *, targets="all", data=None, qat_epochs: int = 0, learning_rate: float | None = None,
           qat_float_layers=(), representative_samples: int | None = None, class_names=None, verify: bool = True,
           keep_better_int8: bool = True, progress=True, input_size=None,
           overwrite: bool = False, int8_float_layers=(), explain_int8: bool = True) -> ExportResult:
    """Exports a model to the chosen targets, quantizing and verifying as asked.

    Args:
        model: a Keras 3 image classifier, or a path to a `.keras` file (loaded safely).
        out_dir: export folder. Defaults to `export/<model name>/`.
        targets: "all" or names from `nin_keras.EXPORT_TARGETS` (list or comma-separated), or a
            `nin_keras.exporting.TargetSelection` (used as it is). "all" leaves out targets whose optional
            dependency is not installed (onnx without the [onnx] extra) and names them in the manifest's
            `skipped`. Defaults to "all".
        data: a `DatasetSplits` (or (images, labels) arrays / a dataset of them). Its training split
            calibrates full-integer quantization (needed by tflite_int8 and edgetpu) and feeds QAT; its test
            split (DatasetSplits) or the arrays themselves evaluate every artifact (report.json/report.md).
        qat_epochs: quantization-aware fine-tuning epochs for the full-integer targets; 0 uses
            post-training quantization. Defaults to 0.
        learning_rate: QAT learning rate. Defaults to `nin_keras.quantization.DEFAULT_LEARNING_RATE`.
        qat_float_layers: layers tfmot cannot quantize that QAT may leave without fake quantization (their
            int8 ranges then come from calibration); see `nin_keras.quantization.quantize_aware`. Defaults to
            none: such a model is refused with the choices it has.
        representative_samples: calibration images. Defaults to 200.
        class_names: names for labels.txt. Defaults to the dataset's.
        verify: evaluate and time every artifact when data is given. Defaults to True.
        keep_better_int8: with QAT and a validation split, also make the post-training int8 model and keep
            whichever of the two scores better on validation data (never the test split); on a small,
            already well-fitted model, a QAT fine-tune can cost a little accuracy. The choice is returned as
            `int8_choice` and written to int8_choice.json. False always uses QAT. Defaults to True.
        progress: show progress on stderr (True; one display for QAT, writing and checking), or draw it on
            this `nin_keras.display.ProgressDisplay`. Defaults to True.
        input_size: the static (height, width) (or side, or "HxW") to export a model built with None height
            and width at; its weights are copied. Required for such a model. Defaults to the model's size.
        overwrite: replace `out_dir` whole. Without it, files of other targets an earlier export of the same
            model left there are kept, and a folder holding another model's export is refused before any work
            (unless this export rewrites every target it holds). Defaults to False.

        int8_float_layers: Keras layers to keep in float in a separate model_int8_mixed.tflite (int8 elsewhere;
            the layers reading them are kept float too); model_int8.tflite and the Edge TPU file stay fully
            integer. Needs a full-integer target and data. Defaults to none.
        explain_int8: with a full-integer target and data, diagnose the int8 model per layer
            (`nin_keras.explain_int8`, without the per-layer agreement) into report.json/report.md and
            int8_layers.png. Defaults to True.

    Returns:
        An `ExportResult`: out_dir, manifest (see `nin_keras.exporting.export_targets`), report (the
        verification rows, or None without data / with verify=False) and int8_choice (None unless QAT was
        compared). `result.to_dict()` is its JSON form.
    """
    if isinstance(model, (str, Path)):
        model = load_model(model)
    model = with_input_size(model, input_size)  # exports need a static size
    check_image_classifier(model)
    # parsed once (tflite_int8_mixed added when layers are named): export_targets takes it as it is
    selection = with_int8_float_layers(select_targets(targets), int8_float_layers)
    check_export_data(selection.names, data)
    integer_targets = [name for name in selection.names if TARGET_SPECS[name].full_int8]  # what QAT is for
    if data is not None:
        check_data_fits(model, data)  # before any slow work
    qat_epochs = check_int("qat_epochs", qat_epochs, minimum=0)
    float_layers = _check_float_layers(model, qat_float_layers, qat_epochs)
    out_dir = Path(out_dir) if out_dir is not None else Path(DEFAULT_EXPORT_ROOT) / model.name
    check_export_folder(out_dir, model, selection, overwrite=overwrite)  # before QAT, not after it

    if qat_epochs > 0 and not integer_targets:
        raise InvalidInputError(
            f"qat_epochs={qat_epochs} only affects the full-integer targets (tflite_int8, edgetpu), and none of "
            f"them is among targets {list(selection.names)}; add one or leave qat_epochs at 0."
        )
    if qat_epochs > 0 and data is None:
        raise InvalidInputError("qat_epochs > 0 needs training data: pass data= (the training dataset).")

    fallback = [int8_float_layers] if isinstance(int8_float_layers, str) else list(int8_float_layers or ())
    unknown = [name for name in fallback if name not in {layer.name for layer in model.layers}]
    if unknown:  # before any slow work; which of them the converter quantizes is checked on conversion
        raise InvalidInputError(f"int8_float_layers names {unknown}, which are not layers of {model.name!r}; "
                                f"choose among {[layer.name for layer in model.layers]}.")
    # One display for the whole job: QAT's epochs, the targets written and the checks show in one place.
    with progress_to(progress, stream=sys.stderr) as display:
        qat_model, int8_choice = None, None
        if qat_epochs > 0:
            qat_model = quantize_aware(model, data, epochs=qat_epochs,
                                       learning_rate=learning_rate or DEFAULT_LEARNING_RATE,
                                       float_layers=float_layers, progress=display)
        if qat_model is not None and keep_better_int8 and getattr(data, "validation", None) is not None:
            int8_choice = _compare_qat_with_ptq(model, qat_model, data, representative_samples, display=display)
            if int8_choice["chosen"] == "ptq":
                qat_model = None
        display.log(f"Exporting {model.name} to {out_dir}/")
        manifest = export_targets(model, out_dir, targets=selection, data=data, qat_model=qat_model,
                                  class_names=class_names, representative_samples=representative_samples,
                                  progress=display, overwrite=overwrite, int8_float_layers=fallback)
        diagnosis = None
        if integer_targets and data is not None:
            diagnosis = _int8_diagnosis(model, out_dir, data, qat_model, representative_samples,
                                        explain=explain_int8, display=display)
        report = None
        if verify and data is not None:
            report = tuple(verify_export(out_dir, data, reference_model=model, progress=display))
            if diagnosis is not None:
                _add_diagnosis_to_report(out_dir, diagnosis)
    if int8_choice is not None:
        write_json(out_dir / INT8_CHOICE_FILE, int8_choice)
    return ExportResult(str(out_dir), manifest, report, int8_choice)


def _check_float_layers(model, names, qat_epochs: int) -> list[str]:
    names = [names] if isinstance(names, str) else list(names or ())
    if names and qat_epochs == 0:
        raise InvalidInputError("qat_float_layers only matters with quantization-aware training: pass "
                                "qat_epochs= (1 or more) or leave it out.")
    unknown = sorted(set(names) - set(leaf_layer_names(model)))
    if unknown:
        raise InvalidInputError(f"qat_float_layers names {unknown}, which are not layers of {model.name!r} "
                                "(model.summary() lists them).")
    return names


def _compare_qat_with_ptq(model, qat_model, data, representative_samples, *, display) -> dict:
    """Validation accuracy of the QAT and the post-training int8 models; the better one is chosen (QAT on a tie)."""
    images = representative_images(model, data, num_samples=representative_samples or DEFAULT_REPRESENTATIVE_SAMPLES)
    scores = {}
    with tempfile.TemporaryDirectory(prefix="nin_int8_choice_") as tmp:
        for source, quantized in (("qat", qat_model), ("ptq", model)):
            path = Path(tmp) / f"{source}.tflite"
            path.write_bytes(to_tflite(quantized, "int8", representative_images=images))
            scores[source] = evaluate(path, data.validation, progress=False)["accuracy"]
    chosen = "ptq" if scores["ptq"] > scores["qat"] else "qat"
    display.log(f"int8 on the validation split: QAT {scores['qat']:.2%}, post-training {scores['ptq']:.2%}: "
                f"exporting the {'QAT' if chosen == 'qat' else 'post-training'} model")
    return {"chosen": chosen, "validation_accuracy": scores, "split": "validation"}


def _int8_diagnosis(model, out_dir: Path, data, qat_model, representative_samples, *, explain, display):
    """The per-layer int8 diagnosis, its plot written into `out_dir`; None when not asked for."""
    if not explain:
        return None
    diagnosis = diagnose_int8(model, data, qat_model=qat_model,
                              calibration_samples=representative_samples or DEFAULT_REPRESENTATIVE_SAMPLES)
    plot_int8_layer_errors(diagnosis.rows, out_dir / INT8_LAYERS_PLOT, show=False)
    display.log(f"int8 per-layer error: worst {diagnosis.worst.layer} ({diagnosis.worst.own_error:.3f}); "
                f"see {INT8_LAYERS_PLOT}" if diagnosis.worst else "int8 per-layer error: no quantized tensor")
    return diagnosis


def _add_diagnosis_to_report(out_dir: Path, diagnosis) -> None:
    json_file, markdown_file = REPORT_FILES
    report = json.loads((out_dir / json_file).read_text(encoding="utf-8"))
    report["int8_layers"] = diagnosis.to_dict()
    write_json(out_dir / json_file, report)
    markdown = (out_dir / markdown_file).read_text(encoding="utf-8")
    section = (f"\n## int8 error per layer\n\n![int8 error per layer]({INT8_LAYERS_PLOT})\n\n```\n"
               f"{format_diagnosis(diagnosis)}\n```\n")
    write_text(out_dir / markdown_file, markdown.rstrip("\n") + "\n" + section)
