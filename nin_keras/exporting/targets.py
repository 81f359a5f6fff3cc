"""The export-target registry: one writer per target, attached to its facts (`nin_keras.export_layout.TARGET_SPECS`).

Each writer writes its files into a folder (atomically) and returns its manifest entry. Every writer has the
signature `export_<target>(context, out_dir) -> ManifestEntry` and is attached once, by `@_writes(name)`, to
make `EXPORT_TARGETS`; `select_targets` turns what the user asked for into the targets to write, once.
`ExportContext` carries the model, the calibration images, the QAT model and a cache of the SavedModels the
converter reads. Converter flags are set in one place, `nin_keras.exporting.converter`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import sys
import tempfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf

from nin_keras._atomic import atomic_dir, folder_size, write_bytes, write_json, write_text
from nin_keras.errors import InvalidInputError
from nin_keras.export_layout import (
    EDGETPU_CHECK_FILE,
    GPU_COMPATIBILITY_FILE,
    LABELS_FILE,
    MANIFEST_FILE,  # noqa: F401 (re-exported: exporting/__init__.py and folder.py import it from here)
    TARGET_SPECS,
    Manifest,
    ManifestEntry,
    TargetSpec,
    format_labels,
)
from nin_keras.exporting.converter import CLASS_ID_NAME, INPUT_NAME, OUTPUT_NAME, to_tflite, write_serving_saved_model
from nin_keras.exporting.edgetpu import check_edgetpu, run_edgetpu_compiler
from nin_keras.exporting.int8_layers import mixed_int8_tflite
from nin_keras.exporting.metadata import (
    ClassifierMetadata,
    describe_metadata,
    package_version,
    read_metadata,
    with_metadata,
)
from nin_keras.exporting.tflite_info import describe_tflite
from nin_keras.exporting.warmup import WARMUP_FILE, write_warmup_requests
from nin_keras.models.io import save_model
from nin_keras.process_state import silenced_native_stderr


@dataclasses.dataclass(frozen=True)
class ExportTarget(TargetSpec):
    """A target's facts (`TargetSpec`, from `nin_keras.export_layout`) and the function that writes it.

    Attributes:
        write: `write(context, out_dir) -> ManifestEntry`, writing the target's files into `out_dir`.
    """

    write: Callable[..., ManifestEntry] | None = None


# target name -> its writer; filled once, by @_writes on each writer below.
_WRITERS: dict[str, Callable[..., ManifestEntry]] = {}


def _writes(name: str):
    """Attaches the decorated function to target `name` of `TARGET_SPECS` as its writer."""
    if name not in TARGET_SPECS:
        raise ImportError(f"export writer for {name!r}, which export_layout.TARGET_SPECS does not list")

    def attach(function):
        _WRITERS[name] = function
        return function

    return attach


@dataclasses.dataclass
class ExportContext:
    """What the target functions share.

    Attributes:
        model: the Keras 3 model as given (saved as model.keras).
        float_model: the same model computing in float32 (a copy if `model` uses mixed precision): what
            the SavedModel and every .tflite are made from. Defaults to `model`.
        representative_images: raw-pixel training images for full-integer calibration, or None.
        qat_model: a `QATModel` (full-integer targets use it when given), or None.
        work_dir: a scratch folder (outside the export) for the SavedModels the converter reads.
        class_names: one name per class, packed into every .tflite with its metadata (None: no metadata).
        int8_float_layers: Keras layer names tflite_int8_mixed keeps in float.
    """

    model: object
    float_model: object = None
    representative_images: np.ndarray | None = None
    qat_model: object = None
    work_dir: Path | None = None
    class_names: list | None = None
    int8_float_layers: tuple = ()
    _saved_models: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.float_model is None:
            self.float_model = self.model

    def conversion_saved_model(self, batch_size=None) -> Path:
        """The model as a SavedModel with a float32 `image` input of batch `batch_size` (written once)."""
        if batch_size not in self._saved_models:
            directory = Path(self.work_dir) / f"convert_batch_{batch_size or 'any'}"
            self._saved_models[batch_size] = write_serving_saved_model(self.float_model, directory,
                                                                        batch_size=batch_size)
        return self._saved_models[batch_size]

    def tflite(self, mode: str, *, batch_size=None, use_qat: bool = False) -> bytes:
        if use_qat and self.qat_model is not None:
            return to_tflite(self.qat_model, mode, representative_images=self.representative_images,
                             batch_size=batch_size)
        return to_tflite(self.float_model, mode, representative_images=self.representative_images,
                         batch_size=batch_size, saved_model_dir=self.conversion_saved_model(batch_size))


def _entry(target: str, size_bytes: int, **fields) -> ManifestEntry:
    """`target`'s manifest entry; `fields` are `input`, `output` and the target's own findings (`details`)."""
    io_fields = {key: fields.pop(key) for key in ("input", "output") if key in fields}
    spec = TARGET_SPECS[target]
    return ManifestEntry(target=target, file=spec.file, size_bytes=size_bytes, description=spec.description,
                         **io_fields, details=fields)


def _write_tflite(target: str, data: bytes, out_dir: Path, context: ExportContext, **extra) -> ManifestEntry:
    """Writes a .tflite with its metadata (what MediaPipe and the LiteRT support library read) and labels."""
    metadata = classifier_metadata(context.float_model, target, context.class_names)
    if metadata is not None:
        data = with_metadata(data, metadata)
    path = write_bytes(Path(out_dir) / TARGET_SPECS[target].file, data)
    info = describe_tflite(path)
    return _entry(target, info["size_bytes"], input=info["inputs"][0], output=info["outputs"][0],
                  ops=info["ops"], op_versions=info["op_versions"], **extra,
                  metadata=None if metadata is None else describe_metadata(read_metadata(data)))


def classifier_metadata(model, target: str, class_names) -> ClassifierMetadata | None:
    """The metadata of `model`'s .tflite for `target`: an RGB or grayscale image in (raw pixels, so mean 0 and
    std 1), class probabilities out, the class names packed; None for other channel counts or without names."""
    height, width, channels = (int(d) for d in model.inputs[0].shape[1:4])
    color_space = {1: "GRAYSCALE", 3: "RGB"}.get(channels)
    if color_space is None or not class_names:
        return None
    return ClassifierMetadata(
        name=model.name, version=f"nin-keras {package_version()}", color_space=color_space, height=height,
        width=width, labels=list(class_names), input_name=INPUT_NAME, output_name=OUTPUT_NAME,
        description=f"Network In Network image classifier ({model.name}), {TARGET_SPECS[target].description}. "
                    "Takes raw pixels 0..255; gives one probability per class.")


@_writes("keras")
def export_keras(context: ExportContext, out_dir) -> ManifestEntry:
    """model.keras: the float Keras 3 model."""
    path = save_model(context.model, Path(out_dir) / TARGET_SPECS["keras"].file)
    return _entry("keras", path.stat().st_size)


@_writes("saved_model")
def export_saved_model(context: ExportContext, out_dir) -> ManifestEntry:
    """saved_model/1/: TF Serving's versioned layout, signature serving_default (image -> probabilities, class_id),
    with warm-up requests in assets.extra/."""
    model = context.float_model
    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    target_dir = Path(out_dir) / TARGET_SPECS["saved_model"].file
    with atomic_dir(target_dir) as tmp:
        write_serving_saved_model(model, tmp, class_id=True)
        write_warmup_requests(tmp, model)  # TF Serving replays these when it loads the version
    return _entry("saved_model", folder_size(target_dir), signature="serving_default",
                  warmup_requests=WARMUP_FILE,
                  input={"name": INPUT_NAME, "dtype": "float32", "shape": [-1, *shape], "quantization": None},
                  outputs={OUTPUT_NAME: "float32 [N, classes]", CLASS_ID_NAME: "int64 [N]"})


@_writes("onnx")
def export_onnx(context: ExportContext, out_dir) -> ManifestEntry:
    """model.onnx: float32, made by Keras' own exporter (tf2onnx), input `image` and output `probabilities`."""
    import onnx  # lazy: the [onnx] extra (select_targets refuses the target without it)

    path = Path(out_dir) / TARGET_SPECS["onnx"].file
    with tempfile.TemporaryDirectory(prefix="nin_keras_onnx_") as tmp:
        raw = Path(tmp) / "model.onnx"
        with silenced_native_stderr(), contextlib.redirect_stdout(io.StringIO()):  # tf2onnx prints its steps
            # An explicit signature: Keras' exporter otherwise refuses a model that was loaded or cloned but
            # not called yet ("has never called"), which is every model `nin-keras export` reads from a file.
            model = context.float_model
            spec = tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32, name=INPUT_NAME)
            model.export(str(raw), format="onnx", verbose=False, input_signature=[spec])
        graph = onnx.load(str(raw))
    _name_onnx_io(graph)
    write_bytes(path, graph.SerializeToString())
    shape = [-1, *(int(d) for d in context.float_model.inputs[0].shape[1:])]
    return _entry("onnx", path.stat().st_size, opset=_onnx_opset(graph),
                  input={"name": INPUT_NAME, "dtype": "float32", "shape": shape, "quantization": None},
                  output={"name": OUTPUT_NAME, "dtype": "float32", "shape": [-1, _num_classes(context)]})


def _name_onnx_io(graph) -> None:
    """Input `image` (Keras' name already), output `probabilities` (the exporter says "Identity:0"), batch."""
    graph.graph.input[0].name = INPUT_NAME
    old = graph.graph.output[0].name
    for node in graph.graph.node:
        node.output[:] = [OUTPUT_NAME if name == old else name for name in node.output]
        node.input[:] = [OUTPUT_NAME if name == old else name for name in node.input]
    graph.graph.output[0].name = OUTPUT_NAME
    for value in (graph.graph.input[0], graph.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"


def _onnx_opset(graph) -> int | None:
    return next((int(entry.version) for entry in graph.opset_import if entry.domain in ("", "ai.onnx")), None)


def _num_classes(context: ExportContext) -> int:
    return int(context.float_model.outputs[0].shape[-1])


@_writes("tflite_float32")
def export_tflite_float32(context: ExportContext, out_dir) -> ManifestEntry:
    """model_float32.tflite: float32 weights and I/O."""
    return _write_tflite("tflite_float32", context.tflite("float32"), out_dir, context, precision="float32")


@_writes("tflite_float16")
def export_tflite_float16(context: ExportContext, out_dir) -> ManifestEntry:
    """model_float16.tflite plus gpu_compatibility.txt (the converter's GPU-delegate analysis)."""
    data = context.tflite("float16")
    text = gpu_compatibility_report(data)
    write_text(Path(out_dir) / GPU_COMPATIBILITY_FILE, text)
    return _write_tflite("tflite_float16", data, out_dir, context, precision="float16 weights",
                         gpu_compatibility=summarize_gpu_compatibility(text))


@_writes("tflite_dynamic")
def export_tflite_dynamic(context: ExportContext, out_dir) -> ManifestEntry:
    """model_dynamic.tflite: dynamic-range quantization (int8 weights, float activations and I/O)."""
    return _write_tflite("tflite_dynamic", context.tflite("dynamic"), out_dir, context,
                         precision="int8 weights / float activations")


@_writes("tflite_int8")
def export_tflite_int8(context: ExportContext, out_dir) -> ManifestEntry:
    """model_int8.tflite: full integer with int8 I/O; from the QAT model when there is one, else PTQ."""
    _require_data(context, "tflite_int8")
    data = context.tflite("int8", use_qat=True)
    return _write_tflite("tflite_int8", data, out_dir, context, precision="full int8",
                         quantization="qat" if context.qat_model is not None else "ptq")


@_writes("tflite_int8_mixed")
def export_tflite_int8_mixed(context: ExportContext, out_dir) -> ManifestEntry:
    """model_int8_mixed.tflite: int8 except `int8_float_layers` (and the ops reading them), kept in float."""
    _require_data(context, "tflite_int8_mixed")
    layers = list(context.int8_float_layers)  # never empty: export_targets refuses the target without layers
    data, nodes = mixed_int8_tflite(context.float_model, context.representative_images, layers,
                                    qat_model=context.qat_model)
    return _write_tflite("tflite_int8_mixed", data, out_dir, context, precision=f"int8, float: {', '.join(layers)}",
                         quantization="qat" if context.qat_model is not None else "ptq", float_layers=layers,
                         float_nodes=len(nodes))


@_writes("tflite_int16x8")
def export_tflite_int16x8(context: ExportContext, out_dir) -> ManifestEntry:
    """model_int16x8.tflite: int8 weights, int16 activations, float32 I/O, calibrated on the training images.

    Always post-training from the float model: a QAT model's FakeQuant ranges are 8-bit ranges.
    """
    _require_data(context, "tflite_int16x8")
    return _write_tflite("tflite_int16x8", context.tflite("int16x8"), out_dir, context,
                         precision="int16 activations / int8 weights", quantization="ptq")


@_writes("edgetpu")
def export_edgetpu(context: ExportContext, out_dir) -> ManifestEntry:
    """model_edgetpu_ready.tflite (uint8 I/O, batch 1), edgetpu_check.json, and the compiler's output if present."""
    _require_data(context, "edgetpu")
    data = context.tflite("uint8", batch_size=1, use_qat=True)
    entry = _write_tflite("edgetpu", data, out_dir, context, precision="full int8 (uint8 I/O)",
                          quantization="qat" if context.qat_model is not None else "ptq")
    path = Path(out_dir) / TARGET_SPECS["edgetpu"].file
    findings = check_edgetpu(path)
    findings["path"] = path.name
    compiler = run_edgetpu_compiler(path, out_dir)
    findings["compiler"] = compiler
    write_json(Path(out_dir) / EDGETPU_CHECK_FILE, findings)
    edgetpu = {"compatible": findings["compatible"], "problems": findings["problems"], "compiler": compiler,
               "check_file": EDGETPU_CHECK_FILE}
    return dataclasses.replace(entry, details={**entry.details, "edgetpu": edgetpu})


def _require_data(context: ExportContext, target: str) -> None:
    if context.representative_images is None:
        raise InvalidInputError(
            f"Target {target!r} is full-integer and needs representative data: pass data= (the training "
            "dataset)."
        )


def gpu_compatibility_report(model_content: bytes) -> str:
    """The text of `tf.lite.experimental.Analyzer.analyze(..., gpu_compatibility=True)`.

    The analyzer prints (from Python and from C++) instead of returning its findings: both are captured.
    """
    python_output = io.StringIO()
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 1)
        try:
            with contextlib.redirect_stdout(python_output):
                tf.lite.experimental.Analyzer.analyze(model_content=model_content, gpu_compatibility=True)
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        capture.seek(0)
        native_output = capture.read().decode("utf-8", errors="replace")
    return python_output.getvalue() + native_output


def summarize_gpu_compatibility(text: str) -> dict:
    compatible = "looks compatible with GPU delegate" in text
    warnings = [line.strip() for line in text.splitlines() if "GPU COMPATIBILITY WARNING" in line
                or "not supported by GPU" in line.lower()]
    summary = ("compatible with the GPU delegate (static analysis)" if compatible and not warnings
               else f"{len(warnings)} GPU compatibility warnings" if warnings else "analysis gave no verdict")
    return {"compatible": compatible and not warnings, "summary": summary, "warnings": warnings[:20],
            "file": GPU_COMPATIBILITY_FILE}


def write_labels(out_dir, class_names) -> Path:
    return write_text(Path(out_dir) / LABELS_FILE, format_labels(class_names))


# Every target with its writer: `TARGET_SPECS`' facts, in its order (what `nin_keras.EXPORT_TARGETS` is).
EXPORT_TARGETS: "OrderedDict[str, ExportTarget]" = OrderedDict(
    (name, ExportTarget(**{field.name: getattr(spec, field.name) for field in dataclasses.fields(spec)},
                        write=_WRITERS[name]))
    for name, spec in TARGET_SPECS.items()
)


@dataclasses.dataclass(frozen=True)
class TargetSelection:
    """The targets an export writes, chosen once from what the user asked for (see `select_targets`).

    Attributes:
        names: the targets to write, in `EXPORT_TARGETS`' order.
        skipped: targets "all" left out here -> why (an optional dependency is not installed).
    """

    names: tuple[str, ...]
    skipped: dict = dataclasses.field(default_factory=dict)

    def __iter__(self):
        return iter(self.names)

    def __contains__(self, name) -> bool:
        return name in self.names

    def __len__(self) -> int:
        return len(self.names)


def select_targets(targets="all") -> TargetSelection:
    """The targets to export: "all", a comma-separated string or a list of names; a selection is kept as is.

    "all" is every target whose optional dependencies are installed, except opt-in targets (`in_all` False:
    tflite_int16x8), which are written only when named ("all,tflite_int16x8"); targets whose dependencies are
    not installed are named in `skipped`. A target named on its own whose dependency is missing is refused.

    Args:
        targets: "all", "keras,tflite_int8", ["keras", "tflite_int8"], or a `TargetSelection`. None is "all".

    Returns:
        A `TargetSelection`: the names in `EXPORT_TARGETS`' order and the skipped targets with the reason.

    Raises:
        InvalidInputError: no targets, an unknown target, or a target whose optional dependency is missing.
    """
    if isinstance(targets, TargetSelection):
        return targets
    if targets is None:
        targets = "all"
    parts = targets.split(",") if isinstance(targets, str) else [str(t) for t in targets]
    names = [name.strip() for name in parts if name.strip()]
    known = f"Known targets: all, {', '.join(EXPORT_TARGETS)}."
    if not names:
        raise InvalidInputError(f"No export targets given. {known}")
    unknown = [name for name in names if name != "all" and name not in EXPORT_TARGETS]
    if unknown:
        raise InvalidInputError(
            f"Unknown export target{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}. {known}")
    missing = unavailable_targets()
    for name in names:
        if name != "all" and name in missing:
            raise InvalidInputError(f"The {name} target needs {missing[name]} (or leave it out of targets=).")
    if "all" in names:  # "all,tflite_int16x8": every default target and the opt-in ones named
        return TargetSelection(tuple(t for t in EXPORT_TARGETS if t not in missing
                                     and (EXPORT_TARGETS[t].in_all or t in names)), missing)
    return TargetSelection(tuple(t for t in EXPORT_TARGETS if t in names))


def unavailable_targets() -> dict[str, str]:
    """Targets whose optional dependencies are not installed here -> what is missing and how to install it."""
    return {name: reason for name, target in EXPORT_TARGETS.items() if (reason := target.missing()) is not None}


__all__ = ["EXPORT_TARGETS", "ExportContext", "ExportTarget", "Manifest", "ManifestEntry", "TargetSelection",
           "select_targets", "unavailable_targets"]
