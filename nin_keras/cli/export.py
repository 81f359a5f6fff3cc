"""`nin-keras export MODEL.keras --targets ... --dataset ...`: quantize (if asked), write the targets, verify them."""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from nin_keras.export_layout import targets_description, targets_help


def register(subparsers) -> None:
    from nin_keras.cli.options import add_data_arguments, non_negative_epoch_count, positive_int

    parser = subparsers.add_parser(
        "export", help="export a .keras model to Keras, SavedModel, ONNX, TFLite (float/int8) and Edge TPU-ready "
                       "files",
        description=textwrap.fill("Writes the chosen targets into --out (default export/<model name>/), then "
                                  "evaluates and times each artifact on the dataset's test split (report.json, "
                                  "report.md).", width=100) + "\n\nTargets:\n" + targets_description(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL.keras", help="the trained model (.keras file)")
    parser.add_argument("--targets", default="all", metavar="T[,T...]", help=targets_help())
    parser.add_argument("--out", metavar="DIR", default=None, help="export folder (default export/<model name>/)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the export folder whole (needed when it holds another model's export)")
    parser.add_argument("--qat-epochs", metavar="N", type=non_negative_epoch_count, default=0,
                        help="quantization-aware training epochs for the int8 targets (default 0: post-training "
                             "quantization)")
    parser.add_argument("--qat-float-layers", metavar="NAME[,NAME...]", default="",
                        help="layers tfmot cannot quantize that QAT may train without fake quantization (the "
                             "int8 converter calibrates them); the error for such a model names them")
    parser.add_argument("--int8-float-layers", metavar="NAME[,NAME...]", default="",
                        help="also write model_int8_mixed.tflite with these layers kept in float (LiteRT CPU; "
                             "not for the Edge TPU); --explain-int8 ranks the candidates")
    parser.add_argument("--explain-int8", action="store_true",
                        help="print the int8 per-layer error table (worst first) and what to do about it")
    parser.add_argument("--representative-samples", metavar="N", type=positive_int, default=200,
                        help="training images that calibrate full-integer quantization (default 200)")
    parser.add_argument("--no-verify", action="store_true", help="skip evaluating and timing the artifacts")
    parser.add_argument("--input-size", metavar="HxW", default=None,
                        help="export a model that takes any image size at this static size (e.g. 32x32)")
    add_data_arguments(parser, required=False)
    parser.set_defaults(handler=export_command)


def export_command(args) -> int:
    from nin_keras.cli.options import load_data_from_args
    from nin_keras.exporting import check_edgetpu, format_findings, select_targets
    from nin_keras.models import check_image_classifier, load_model, with_input_size
    from nin_keras.formatting import format_size
    from nin_keras.workflows import export
    from nin_keras.verification.report import describe_speed

    selection = select_targets(args.targets)  # parsed once; unknown targets fail before any slow work
    model = load_model(args.model)
    model = with_input_size(model, args.input_size)  # exports need a static size
    check_image_classifier(model)
    data = None
    if args.dataset:
        data = load_data_from_args(args, model=model)
    float_layers = [name.strip() for name in args.qat_float_layers.split(",") if name.strip()]
    result = export(model, args.out, targets=selection, data=data, qat_epochs=args.qat_epochs,
                    qat_float_layers=float_layers,
                    representative_samples=args.representative_samples, verify=not args.no_verify,
                    progress=True, overwrite=args.overwrite,
                    int8_float_layers=[name.strip() for name in args.int8_float_layers.split(",") if name.strip()])
    manifest = result.manifest
    print(f"Exported {manifest.model} to {result.out_dir}/")
    for name in selection.names:
        entry = manifest.targets[name]
        io_text = f"{entry.input.get('dtype')} {entry.input.get('shape')}" if entry.input else ""
        print(f"  {name:<15} {entry.file:<28} {format_size(entry.size_bytes):>10}  {io_text}")
        if entry.details.get("gpu_compatibility"):
            print(f"  {'':<15} GPU delegate: {entry.details['gpu_compatibility']['summary']}")
    for name, reason in manifest.skipped.items():
        print(f"  {name:<15} skipped: {reason}")
    if "edgetpu" in selection:
        findings = check_edgetpu(Path(result.out_dir) / manifest.targets["edgetpu"].file)
        for line in format_findings(findings):
            print(line)
    report = _saved_report(result)
    if args.explain_int8:
        _print_int8_diagnosis(model, data, report)
    if result.report is not None:
        fastest = describe_speed(report.get("speed"))
        if fastest:
            print(fastest)
        print(f"Report: {result.out_dir}/report.md")
    elif data is None and not args.no_verify:
        print("No --dataset given: artifacts were not evaluated (no report).", file=sys.stderr)
    return 0


def _saved_report(result) -> dict:
    """The report.json the export just wrote, or {} when it wrote none."""
    import json

    from nin_keras.export_layout import REPORT_FILES

    report_file = Path(result.out_dir) / REPORT_FILES[0]
    return json.loads(report_file.read_text(encoding="utf-8")) if report_file.exists() else {}


def _print_int8_diagnosis(model, data, report: dict) -> None:
    from nin_keras.errors import InvalidInputError
    from nin_keras.verification.int8_diagnosis import Int8Diagnosis, Int8LayerRow, explain_int8, format_diagnosis

    if data is None:
        raise InvalidInputError("--explain-int8 needs the training data: pass --dataset.")
    saved = report.get("int8_layers")
    if saved:  # the export already diagnosed the int8 model: print that, not a second run
        fields = ("model", "agreement", "samples", "agreement_images", "single_layer", "qat")
        rows = tuple(Int8LayerRow(**{**row, "fused": tuple(row["fused"])}) for row in saved["rows"])
        diagnosis = Int8Diagnosis(**{key: saved[key] for key in fields}, rows=rows)
    else:
        diagnosis = explain_int8(model, data)
    print(format_diagnosis(diagnosis))
