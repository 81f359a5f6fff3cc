"""Stage 5 of the data flow: exporting a model to deployable artifacts.

One function per target (`export_keras`, `export_saved_model`, `export_tflite_float32`, `export_tflite_float16`,
`export_tflite_dynamic`, `export_tflite_int8`, `export_edgetpu`), `export_targets` to write several atomically,
and `check_edgetpu`, a static Edge TPU compatibility check of any .tflite. Converter flags live in one place,
`nin_keras.quantization.converter`. `nin_keras.export` (in `nin_keras.workflows`) adds QAT and verification.
"""

from nin_keras.exporting.edgetpu import EDGETPU_OPS, check_edgetpu, format_findings, run_edgetpu_compiler
from nin_keras.exporting.export import export_targets
from nin_keras.exporting.targets import (
    EDGETPU_CHECK_FILE,
    EXPORT_TARGETS,
    GPU_COMPATIBILITY_FILE,
    LABELS_FILE,
    MANIFEST_FILE,
    TARGET_FUNCTIONS,
    ExportContext,
    TargetInfo,
    export_edgetpu,
    export_keras,
    export_saved_model,
    export_tflite_dynamic,
    export_tflite_float16,
    export_tflite_float32,
    export_tflite_int8,
    parse_targets,
)
from nin_keras.exporting.tflite_info import describe_tflite

__all__ = [
    "EDGETPU_CHECK_FILE",
    "EDGETPU_OPS",
    "EXPORT_TARGETS",
    "GPU_COMPATIBILITY_FILE",
    "LABELS_FILE",
    "MANIFEST_FILE",
    "TARGET_FUNCTIONS",
    "ExportContext",
    "TargetInfo",
    "check_edgetpu",
    "describe_tflite",
    "export_edgetpu",
    "export_keras",
    "export_saved_model",
    "export_targets",
    "export_tflite_dynamic",
    "export_tflite_float16",
    "export_tflite_float32",
    "export_tflite_int8",
    "format_findings",
    "parse_targets",
    "run_edgetpu_compiler",
]
