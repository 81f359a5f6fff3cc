"""The export folder's file names: what the exporter writes and the verifier reads, named in one place.

Exporting (which writes these files) and verification (which finds and checks them) both read this table, so
neither stage imports the other and the two never disagree about a name.

    model.keras                  keras target
    saved_model/1/               saved_model target (TF Serving's numbered version folders)
    model.onnx                   onnx target (with the [onnx] extra)
    model_float32.tflite ...     one file per TFLite target
    model_edgetpu_ready.tflite   edgetpu target; edgetpu_compiler's output, where installed, is *_edgetpu.tflite
    labels.txt, manifest.json    class names; what was exported, with each artifact's I/O and ops
    gpu_compatibility.txt        the converter's GPU-delegate analysis of the float16 model
    edgetpu_check.json           the static Edge TPU check (and compiler log, where installed)
    report.json, report.md       the verification report
"""

from __future__ import annotations

from collections import OrderedDict

# Export target -> its file (or folder) inside the export folder, in the order reports list them.
TARGET_FILES: "OrderedDict[str, str]" = OrderedDict(
    keras="model.keras",
    saved_model="saved_model/1",
    onnx="model.onnx",
    tflite_float32="model_float32.tflite",
    tflite_float16="model_float16.tflite",
    tflite_dynamic="model_dynamic.tflite",
    tflite_int8="model_int8.tflite",
    edgetpu="model_edgetpu_ready.tflite",
)
# edgetpu_compiler names its output after its input: model_edgetpu_ready.tflite -> model_edgetpu_ready_edgetpu.tflite.
EDGETPU_COMPILED_GLOB = "*_edgetpu.tflite"
EDGETPU_COMPILED_TARGET = "edgetpu_compiled"

LABELS_FILE = "labels.txt"
MANIFEST_FILE = "manifest.json"
GPU_COMPATIBILITY_FILE = "gpu_compatibility.txt"
EDGETPU_CHECK_FILE = "edgetpu_check.json"
REPORT_FILES = ("report.json", "report.md")
