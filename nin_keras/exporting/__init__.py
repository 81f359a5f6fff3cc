"""Stage 5 of the data flow: exporting a model to deployable artifacts.

`EXPORT_TARGETS` (`targets`) is the one registry of targets: each target's facts (file, description,
calibration data, optional dependency, clients: `nin_keras.export_layout.TARGET_SPECS`) with its writer
(`export_keras`, `export_saved_model`, `export_onnx`, `export_tflite_float32`, `export_tflite_float16`,
`export_tflite_dynamic`, `export_tflite_int8`, `export_tflite_int16x8`, `export_edgetpu`); `select_targets`
parses what the user asked for once into a `TargetSelection`; `export_targets` (`folder`) writes the selection
atomically and returns its `Manifest`; `converter` is the one home of TFLite converter flags, of post-training
quantization (a conversion mode) and of the serving SavedModel writer; `check_edgetpu` (`edgetpu`) checks any
.tflite statically for the Edge TPU; `check_tflite` (`tflite_guard`) checks a .tflite's bytes before LiteRT loads
them (structure, then one run in a child process for files this process did not write).

The user's `nin_keras.export` spans three stages (QAT, these targets, verification of what was written), so it
lives with the other cross-stage jobs in `nin_keras.workflows.export`.
"""

from nin_keras.exporting.converter import (
    FULL_INTEGER_MODES,
    MODES,
    configure_converter,
    convert,
    float32_model,
    post_training_quantize,
    to_tflite,
    write_serving_saved_model,
)
from nin_keras.exporting.edgetpu import EDGETPU_OPS, check_edgetpu, format_findings, run_edgetpu_compiler
from nin_keras.exporting.folder import check_export_data, export_targets
from nin_keras.exporting.targets import (
    EDGETPU_CHECK_FILE,
    EXPORT_TARGETS,
    GPU_COMPATIBILITY_FILE,
    LABELS_FILE,
    MANIFEST_FILE,
    ExportContext,
    ExportTarget,
    Manifest,
    ManifestEntry,
    TargetSelection,
    export_edgetpu,
    export_keras,
    export_onnx,
    export_saved_model,
    export_tflite_dynamic,
    export_tflite_float16,
    export_tflite_float32,
    export_tflite_int8,
    export_tflite_int16x8,
    select_targets,
    unavailable_targets,
)
from nin_keras.exporting.tflite_guard import check_tflite
from nin_keras.exporting.tflite_info import describe_tflite

__all__ = [
    "EDGETPU_CHECK_FILE",
    "EDGETPU_OPS",
    "EXPORT_TARGETS",
    "FULL_INTEGER_MODES",
    "MODES",
    "GPU_COMPATIBILITY_FILE",
    "LABELS_FILE",
    "MANIFEST_FILE",
    "ExportContext",
    "ExportTarget",
    "Manifest",
    "ManifestEntry",
    "TargetSelection",
    "check_edgetpu",
    "check_export_data",
    "check_tflite",
    "configure_converter",
    "convert",
    "describe_tflite",
    "export_edgetpu",
    "export_keras",
    "export_onnx",
    "export_saved_model",
    "export_targets",
    "export_tflite_dynamic",
    "export_tflite_float16",
    "export_tflite_float32",
    "export_tflite_int8",
    "export_tflite_int16x8",
    "float32_model",
    "format_findings",
    "post_training_quantize",
    "run_edgetpu_compiler",
    "select_targets",
    "to_tflite",
    "unavailable_targets",
    "write_serving_saved_model",
]
