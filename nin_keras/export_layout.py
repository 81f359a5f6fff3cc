"""The export targets and the export folder's file names: what the exporter writes and the verifier reads.

Exporting (which writes these files), verification (which finds and checks them) and the command line (whose
help lists them without importing TensorFlow) all read `TARGET_SPECS`, so neither stage imports the other and
none of them disagrees about a target, a file name or what a target needs. `nin_keras.exporting` attaches one
writer function to each spec (`nin_keras.EXPORT_TARGETS`).

    model.keras                  keras target
    saved_model/1/               saved_model target (TF Serving's numbered version folders)
    model.onnx                   onnx target (with the [onnx] extra)
    model_float32.tflite ...     one file per TFLite target
    model_int16x8.tflite         tflite_int16x8 target (opt-in: not in "all")
    model_edgetpu_ready.tflite   edgetpu target; edgetpu_compiler's output, where installed, is *_edgetpu.tflite
    labels.txt, manifest.json    class names; what was exported, with each artifact's I/O and ops
    gpu_compatibility.txt        the converter's GPU-delegate analysis of the float16 model
    edgetpu_check.json           the static Edge TPU check (and compiler log, where installed)
    report.json, report.md       the verification report
"""

from __future__ import annotations

import dataclasses
import unicodedata
from collections import OrderedDict
from collections.abc import Mapping
from importlib.util import find_spec
from pathlib import Path
from typing import ClassVar

from nin_keras.errors import InvalidInputError


@dataclasses.dataclass(frozen=True)
class TargetSpec:
    """The facts of one export target.

    Attributes:
        name: the target's name (`--targets`, manifest.json, report rows).
        file: its file (or folder) inside the export folder.
        description: what the file holds (manifest.json, the TFLite metadata, the CLI's help).
        clients: which clients take the file (README's table and report.md say it).
        needs_data: full-integer: needs representative (calibration) data.
        requires: modules of an optional dependency the target needs (imported by name).
        extra: the pip extra that installs `requires`.
        in_all: `--targets all` writes it (False: opt-in, named on its own).
        full_int8: int8 weights and activations: quantize-aware training converts for it, and the per-layer
            int8 report describes it.
    """

    name: str
    file: str
    description: str
    clients: str
    needs_data: bool = False
    requires: tuple[str, ...] = ()
    extra: str | None = None
    in_all: bool = True
    full_int8: bool = False

    def missing(self) -> str | None:
        """Why this target cannot be exported here (its optional dependency is not installed), or None."""
        absent = [module for module in self.requires if find_spec(module) is None]
        if not absent:
            return None
        return f"{', '.join(absent)} not installed here: pip install 'nin-keras[{self.extra}]'"


def _specs(*specs: TargetSpec) -> "OrderedDict[str, TargetSpec]":
    return OrderedDict((spec.name, spec) for spec in specs)


# Every export target, in the order exports write them and reports list them.
TARGET_SPECS: "OrderedDict[str, TargetSpec]" = _specs(
    TargetSpec("keras", "model.keras", "Keras 3 model, float32 weights",
               "Keras 3 on any backend (plain keras.saving.load_model; no nin-keras needed)"),
    TargetSpec("saved_model", "saved_model/1",
               "TF Serving SavedModel, signature serving_default: image float32 [N,H,W,C] raw pixels -> "
               "probabilities [N,classes], class_id [N]",
               "TF Serving (GPU or CPU servers), TensorFlow"),
    TargetSpec("onnx", "model.onnx", "ONNX, float32: image [N,H,W,C] raw pixels -> probabilities [N,classes]",
               "onnxruntime (CPU, CUDA, TensorRT), NVIDIA Triton, other ONNX runtimes",
               requires=("tf2onnx", "onnx", "onnxruntime"), extra="onnx"),
    TargetSpec("tflite_float32", "model_float32.tflite", "float32 weights and I/O",
               "LiteRT anywhere; MediaPipe Tasks (RGB models)"),
    TargetSpec("tflite_float16", "model_float16.tflite",
               "float16 weights, float32 I/O (GPU delegate); gpu_compatibility.txt beside it",
               "LiteRT with Android's GPU delegate; MediaPipe Tasks (RGB models)"),
    TargetSpec("tflite_dynamic", "model_dynamic.tflite", "int8 weights, float activations, float32 I/O",
               "LiteRT on CPU; MediaPipe Tasks (RGB models)"),
    TargetSpec("tflite_int8", "model_int8.tflite", "full integer, int8 input/output (QAT or PTQ)",
               "LiteRT C++/Java/Python on CPU, int8 end to end (not MediaPipe: int8 input)", needs_data=True,
               full_int8=True),
    TargetSpec("tflite_int8_mixed", "model_int8_mixed.tflite",
               "int8 except the layers named by int8_float_layers (kept in float), int8 input/output",
               "LiteRT C++/Java/Python on CPU (not the Edge TPU: float ops; not MediaPipe: int8 input); written "
               "when layers are named", needs_data=True, in_all=False),
    TargetSpec("tflite_int16x8", "model_int16x8.tflite",
               "int8 weights, int16 activations, float32 input/output (PTQ; reference kernels)",
               "LiteRT C++/Java/Python on CPU, reference kernels only (no XNNPACK, GPU delegate or Edge TPU): "
               "for models int8 loses accuracy on", needs_data=True, in_all=False),
    TargetSpec("edgetpu", "model_edgetpu_ready.tflite",
               "full integer, uint8 input/output, batch 1 static; edgetpu_check.json beside it",
               "Coral Edge TPU (after edgetpu_compiler); MediaPipe Tasks (RGB models, uint8 input)", needs_data=True,
               full_int8=True),
)
# Export target -> its file (or folder), read from TARGET_SPECS.
TARGET_FILES: "OrderedDict[str, str]" = OrderedDict((name, spec.file) for name, spec in TARGET_SPECS.items())
# edgetpu_compiler names its output after its input: model_edgetpu_ready.tflite -> model_edgetpu_ready_edgetpu.tflite.
EDGETPU_COMPILED_GLOB = "*_edgetpu.tflite"
EDGETPU_COMPILED_TARGET = "edgetpu_compiled"

LABELS_FILE = "labels.txt"
MANIFEST_FILE = "manifest.json"
GPU_COMPATIBILITY_FILE = "gpu_compatibility.txt"
EDGETPU_CHECK_FILE = "edgetpu_check.json"
REPORT_FILES = ("report.json", "report.md")
INT8_CHOICE_FILE = "int8_choice.json"  # nin_keras.export's QAT-vs-post-training comparison
# Unicode categories a class name may not hold: control characters (\n, \r, \t, \x0b, \x0c, \x1c-\x1f, \x85,
# ...), line and paragraph separators (U+2028, U+2029), and lone surrogates (a folder name that is not UTF-8).
# labels.txt holds one name a line, and other tools' label readers split lines on any of these.
_FORBIDDEN_IN_CLASS_NAMES = {"Cc": "a control character", "Zl": "a line separator", "Zp": "a paragraph separator",
                             "Cs": "bytes that are not UTF-8"}
_MAX_LABELS_BYTES = 16 * 2**20


def class_name_problem(name: str) -> str | None:
    """Why `name` cannot be a class name (it would not come back the same from labels.txt), or None."""
    if not name.strip():
        return "it is empty"
    if name != name.strip():
        return "it starts or ends with white space"
    for char in name:
        kind = _FORBIDDEN_IN_CLASS_NAMES.get(unicodedata.category(char))
        if kind:
            return f"it holds {kind} (U+{ord(char):04X} {unicodedata.name(char, '')})".replace(" )", ")")
    return None


def check_class_names(names, where: str = "") -> list[str]:
    """`names` as strings, each one `class_name_problem` accepts; else InvalidInputError naming the first bad one.

    `where` says where the names come from (a folder), for the message.
    """
    names = [str(name) for name in names]
    for name in names:
        problem = class_name_problem(name)
        if problem:
            raise InvalidInputError(
                f"Class name {name!r}{f' ({where})' if where else ''} cannot be written to {LABELS_FILE} (one name "
                f"a line) and read back: {problem}. Rename it with letters, digits, spaces and punctuation only.")
    return names


def format_labels(names) -> str:
    """The text of labels.txt: one class name a line, each ending in "\n" (names checked by `check_class_names`)."""
    return "".join(f"{name}\n" for name in check_class_names(names))


def parse_labels(text: str) -> list[str]:
    """Class names from labels.txt text: split on "\n" only, each stripped of white space, blank lines dropped.

    The one reader of labels.txt: the CLI, the predictor and the metadata summary all use it, so a name is
    never split on a character that `str.splitlines` also breaks at (which `check_class_names` refuses anyway).
    """
    return [line.strip() for line in text.split("\n") if line.strip()]


def read_labels(path) -> list[str]:
    """`parse_labels` of a labels.txt file (UTF-8), refusing one that is not text or not small."""
    path = Path(path)
    if path.stat().st_size > _MAX_LABELS_BYTES:
        raise InvalidInputError(f"{path} is {path.stat().st_size:,} bytes, too large for a class-names file (one "
                                "name a line); pass the labels.txt of the export.")
    try:
        return parse_labels(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise InvalidInputError(f"{path} is not UTF-8 text (byte {error.start}); a class-names file holds one name "
                                "a line, in UTF-8.") from None


def targets_help() -> str:
    """What `--targets` takes, from `TARGET_SPECS`: every name, which need data, which need an extra."""
    needs_data = [name for name, spec in TARGET_SPECS.items() if spec.needs_data]
    extras = [f"{name} needs the [{spec.extra}] extra" for name, spec in TARGET_SPECS.items() if spec.extra]
    opt_in = [name for name, spec in TARGET_SPECS.items() if not spec.in_all]
    return (f"comma-separated: all, {', '.join(TARGET_SPECS)} (default all: every target whose dependencies are "
            f"installed{''.join(f', except {name}' for name in opt_in)}, which is written only when named; "
            f"{', '.join(needs_data)} need --dataset; {'; '.join(extras)})")


def targets_description() -> str:
    """One line per target (name, file, description), from `TARGET_SPECS`, for the export command's help."""
    width = max(map(len, TARGET_SPECS))
    return "\n".join(f"  {name:<{width}}  {spec.file}: {spec.description}" for name, spec in TARGET_SPECS.items())


class Record(Mapping):
    """A frozen dataclass that also reads like the dict it is written as (`record["file"]`, `.get`, `in`).

    Subclasses are frozen dataclasses; `to_dict()` is their JSON form. Fields named in `_OPTIONAL` are left
    out of it while None; a field `details` (a dict) is merged into it as it is.
    """

    _OPTIONAL: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict:
        """The record as plain JSON-ready values (nested records as dicts), in field order."""
        out = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "details":
                out.update({key: _plain(item) for key, item in value.items()})
            elif value is not None or field.name not in self._OPTIONAL:
                out[field.name] = _plain(value)
        return out

    def __getitem__(self, key):
        return self.to_dict()[key]

    def __iter__(self):
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


def _plain(value):
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


@dataclasses.dataclass(frozen=True, eq=True)
class ManifestEntry(Record):
    """One target's entry in manifest.json: its file, size and I/O, and what is particular to the target.

    Attributes:
        target: the target's name.
        file: its file (or folder) in the export folder.
        size_bytes: bytes on disk (a folder: every file below it).
        description: the target's description (`TargetSpec.description`).
        input: name, dtype, shape and quantization of the input; None where not recorded (keras).
        output: the same of the output; None where not recorded.
        details: target-specific findings as written (ops, precision, metadata, GPU or Edge TPU checks, ...).
        seconds: how long writing it took.
    """

    _OPTIONAL: ClassVar[tuple[str, ...]] = ("input", "output", "seconds")

    target: str
    file: str
    size_bytes: int
    description: str
    input: dict | None = None
    output: dict | None = None
    details: dict = dataclasses.field(default_factory=dict)
    seconds: float | None = None

    @classmethod
    def from_dict(cls, entry: Mapping) -> "ManifestEntry":
        """The entry as read back from a manifest.json (keys it does not name go to `details`)."""
        named = {field.name for field in dataclasses.fields(cls)} - {"details"}
        return cls(**{key: entry.get(key) for key in named if key in entry},
                   details={key: value for key, value in entry.items() if key not in named})


@dataclasses.dataclass(frozen=True, eq=True)
class Manifest(Record):
    """manifest.json: the model, and per target what was exported (`ManifestEntry`); what "all" skipped.

    Attributes:
        model: the model's name.
        input_shape: its input shape, without the batch.
        num_classes: classes it tells apart.
        labels: the class-names file (labels.txt).
        qat: epochs, history and layers kept float of quantization-aware training; None without it.
        representative_samples: calibration images used; None without full-integer targets.
        targets: target name -> its entry (this export's and those kept from an earlier one).
        skipped: target name -> why "all" left it out here (its optional dependency is not installed).
        model_fingerprint: "sha256:..." of the model's input shape, class count and weights: which model the
            folder's files were made from (an export of another model is not mixed into the folder). None in
            manifests written before it was recorded.
    """

    model: str
    input_shape: list
    num_classes: int
    labels: str
    qat: dict | None
    representative_samples: int | None
    targets: dict
    skipped: dict
    model_fingerprint: str | None = None

# The int8 file with some layers kept in float (`int8_float_layers`): LiteRT CPU only, never for the Edge TPU.
MIXED_INT8_TARGET = "tflite_int8_mixed"
MIXED_INT8_FILE = TARGET_SPECS[MIXED_INT8_TARGET].file
INT8_LAYERS_PLOT = "int8_layers.png"
