"""One place loads every kind of artifact: `load_artifact(path_or_model) -> runner`.

A runner gives every artifact the same face:

- `predict(images) -> float32 array (batch, classes)`: raw pixels in (uint8 or float, NHWC, or NHW for
  one-channel models), the model's own outputs (probabilities for NIN) out. Input quantization
  (`q = round(x / scale + zero_point)`, clipped to the dtype's range) and output dequantization happen here,
  so callers never see an artifact's I/O type.
- `input_details` / `output_details`: `{"dtype", "shape", "quantization": [scale, zero_point] or None}`,
  with None for a free (batch) dimension.
- `kind` ("keras", "saved_model", "tflite" or "onnx"), `name`, `path`, `input_shape` (H, W, C), `num_classes`,
  `static_batch` (the fixed batch size, e.g. 1 for an Edge TPU model; None when the batch is free; the last
  partial batch is zero-padded), `precision`, `size_bytes`, `threads`.
- `clone()`: a runner another thread may use at the same time (a new interpreter for .tflite).

A .tflite is checked before LiteRT loads it here (`nin_keras.exporting.tflite_guard`): its structure in Python,
then, unless this process' own converter wrote it, one load and run in a child process, so that a crafted file
LiteRT would crash on becomes an InvalidInputError instead of killing the caller.

Accepted artifacts: a Keras model object, a `.keras` file, a SavedModel folder (with `saved_model.pb`, or a
TF Serving model folder of numbered versions: the highest is used) and any `.tflite` (float32, float16,
dynamic-range, int8 or uint8 I/O; dynamic batch or static batch 1) and a float32 `.onnx` (run with
onnxruntime, from the [onnx] extra).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from nin_keras._atomic import folder_size
from nin_keras.errors import (IncompatibleModelError, InvalidInputError, MissingDependencyError, MissingFileError,
                              one_line)
from nin_keras.exporting.tflite_guard import check_tflite
from nin_keras.models import check_image_classifier, check_pixels, load_model
from nin_keras.process_state import silenced_native_stderr

ACCEPTED = (
    "a keras.Model, a .keras file, a SavedModel folder (holding saved_model.pb, or numbered version folders "
    "such as saved_model/1/), a .tflite file or a .onnx file"
)
# Images per interpreter/function call when a caller passes a whole array.
DEFAULT_CHUNK = 64
SIGNATURE = "serving_default"
PROBABILITIES = "probabilities"


def load_artifact(artifact, *, num_threads: int | None = None):
    """Returns a runner for `artifact` (see the module docstring for what a runner offers).

    Args:
        artifact: a Keras model (Keras 3 or tf_keras), a `.keras` path, a SavedModel folder, a `.tflite`
            path, or a runner (returned as is).
        num_threads: threads of the TFLite interpreter. Defaults to the interpreter's own choice. Keras and
            SavedModel artifacts use TensorFlow's process-wide thread pools.

    Raises:
        FileNotFoundError: no file or folder at the path.
        InvalidInputError: a file that is not a model of an accepted kind (the message names the file), a
            SavedModel without a `serving_default` signature, an unknown artifact type; a .tflite that is
            damaged or crafted: one that fails the structural check, or (a file this process did not write)
            crashes, hangs or fails LiteRT when loaded and run once in a child process
            (`nin_keras.exporting.tflite_guard`).
        IncompatibleModelError: a model that is not an image classifier (one NHWC input, one class output).
    """
    if isinstance(artifact, Runner):
        return artifact
    if _is_keras_like(artifact):
        return KerasRunner(artifact)
    if not isinstance(artifact, (str, os.PathLike)):
        raise InvalidInputError(f"Cannot evaluate an object of type {type(artifact).__name__}; expected {ACCEPTED}.")
    path = Path(artifact)
    if not path.exists():
        raise MissingFileError(f"Artifact not found: {path} (expected {ACCEPTED}).")
    if path.is_dir():
        return SavedModelRunner(path)
    suffix = path.suffix.lower()
    if suffix == ".tflite":
        return TFLiteRunner(path, num_threads=num_threads)
    if suffix == ".keras":
        return KerasRunner(load_model(path), path=path)
    if suffix == ".onnx":
        return OnnxRunner(path, num_threads=num_threads)
    raise InvalidInputError(f"Unknown artifact type: {path} (suffix {suffix or 'none'!r}). Accepted: {ACCEPTED}.")


def _is_keras_like(obj) -> bool:
    return callable(obj) and hasattr(obj, "inputs") and hasattr(obj, "outputs") and hasattr(obj, "get_weights")


def _shape_list(shape) -> list:
    return [None if d is None or int(d) < 0 else int(d) for d in shape]


def _describe_shape(shape) -> str:
    if len(shape) == 4:
        return "images of shape " + "x".join(str(d) for d in shape[1:])
    if len(shape) == 3:
        return "one image of shape " + "x".join(str(d) for d in shape)
    return f"a {len(shape)}-D array"


class Runner:
    """Base class: chunking, image checks, and the attributes every runner has."""

    kind = "?"
    thread_safe = False  # may one instance be called from several threads at once?

    def __init__(self, *, name, path, input_shape, num_classes, static_batch, precision, size_bytes,
                 input_details, output_details, threads=None):
        self.name = name
        self.path = None if path is None else Path(path)
        self.input_shape = tuple(int(d) for d in input_shape)
        self.num_classes = int(num_classes)
        self.static_batch = static_batch
        self.precision = precision
        self.size_bytes = size_bytes
        self.input_details = input_details
        self.output_details = output_details
        self.threads = threads

    def __repr__(self):
        return (f"<{type(self).__name__} {self.name!r} input {self.input_shape} classes {self.num_classes} "
                f"{self.precision}>")

    def check_images(self, images) -> np.ndarray:
        """Returns `images` as a 4-D array (N, H, W, C) matching the artifact, or raises naming both shapes.

        Complex, NaN and infinite pixels are refused (`check_pixels`): each artifact kind would answer them
        differently (NaN probabilities, finite ones, or an arbitrary int8 class).
        """
        images = np.asarray(images)
        if images.dtype == object or not (np.issubdtype(images.dtype, np.number) or images.dtype == bool):
            raise InvalidInputError(f"Images must be a numeric array; received dtype {images.dtype}.")
        h, w, c = self.input_shape
        if images.ndim == 3 and c == 1 and images.shape[1:] == (h, w):
            images = images[..., None]
        if images.ndim != 4 or images.shape[1:] != (h, w, c):
            raise IncompatibleModelError(
                f"{self.name} takes images of shape {h}x{w}x{c} (batch, {h}, {w}, {c}); received "
                f"{_describe_shape(images.shape)} (array shape {tuple(images.shape)}). Use data with {h}x{w}x{c} "
                f"images, or build and export a model for this data (build_nin(input_shape=...))."
            )
        check_pixels(images)
        return images

    def predict(self, images, *, batch_size: int = DEFAULT_CHUNK) -> np.ndarray:
        """Runs the artifact on raw-pixel `images` (N, H, W, C); returns float32 (N, classes)."""
        images = self.check_images(images)
        if len(images) == 0:
            return np.zeros((0, self.num_classes), np.float32)
        if not self.static_batch:
            step = max(1, int(batch_size))
            outputs = [self._run(images[i:i + step]) for i in range(0, len(images), step)]
            return np.concatenate(outputs).astype(np.float32, copy=False)
        step, outputs = self.static_batch, []  # a static batch: run full batches, zero-padding the last one
        for i in range(0, len(images), step):
            chunk = images[i:i + step]
            count = len(chunk)
            if count < step:
                chunk = np.concatenate([chunk, np.zeros((step - count, *chunk.shape[1:]), chunk.dtype)])
            outputs.append(self._run(chunk)[:count])
        return np.concatenate(outputs).astype(np.float32, copy=False)

    def clone(self):
        """A runner for use from another thread at the same time as this one."""
        return self

    def _run(self, batch: np.ndarray) -> np.ndarray:  # one call of the artifact on a batch it accepts
        raise NotImplementedError


class KerasRunner(Runner):
    """A Keras model (in memory, or loaded from a .keras file), called through one traced tf.function."""

    kind = "keras"
    thread_safe = True

    def __init__(self, model, *, path=None):
        input_shape, num_classes = check_image_classifier(model)
        self.model = model
        dtype = getattr(model.inputs[0], "dtype", "float32")
        self._dtype = tf.as_dtype(getattr(dtype, "name", dtype) or "float32")
        if not self._dtype.is_floating and not self._dtype.is_integer:
            self._dtype = tf.float32
        policy = getattr(getattr(model, "dtype_policy", None), "name", None) or "float32"
        self._fn = _trace_keras_model(model, tf.TensorSpec([None, *input_shape], self._dtype))
        path = None if path is None else Path(path)
        super().__init__(
            name=path.name if path is not None else f"{model.name} (in memory)",
            path=path,
            input_shape=input_shape,
            num_classes=num_classes,
            static_batch=None,
            precision="float32" if policy == "float32" else f"float32 weights ({policy})",
            size_bytes=path.stat().st_size if path is not None else None,
            input_details={"dtype": self._dtype.name, "shape": [None, *input_shape], "quantization": None},
            output_details={"dtype": "float32", "shape": [None, num_classes], "quantization": None},
        )

    def _run(self, batch):
        x = tf.convert_to_tensor(_cast_for(batch, self._dtype.as_numpy_dtype))
        return np.asarray(self._fn(x), dtype=np.float32)


def _trace_keras_model(model, spec):
    """A concrete TF function of `model` in inference mode, traced once, now.

    Traced here rather than on first call so that TensorFlow's "frequent retracing" warning (it counts traces
    of the same Python code across model objects) does not fire when several models are loaded in a process.
    """
    logger = logging.getLogger("tensorflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    finally:
        logger.setLevel(level)


def resolve_saved_model_dir(path) -> Path:
    """Returns the folder holding saved_model.pb: `path` itself, or its highest numbered version folder."""
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    versions = [p for p in path.iterdir() if p.is_dir() and p.name.isdigit() and (p / "saved_model.pb").is_file()]
    if versions:
        return max(versions, key=lambda p: int(p.name))
    inside = sorted(p.name for p in path.iterdir() if p.suffix in (".keras", ".tflite") or p.name == "saved_model")
    if inside:
        raise InvalidInputError(
            f"{path} is an export folder, not one artifact: name one of {', '.join(inside)} (or evaluate them all "
            f"with nin_keras.verification.verify_export)."
        )
    raise InvalidInputError(
        f"{path} is a folder but not a SavedModel: it holds no saved_model.pb and no numbered version folder "
        f"(1/, 2/, ...) with one. Accepted artifacts: {ACCEPTED}."
    )


class SavedModelRunner(Runner):
    """A SavedModel folder, called through its `serving_default` signature."""

    kind = "saved_model"
    thread_safe = True

    def __init__(self, path):
        given = Path(path)
        folder = resolve_saved_model_dir(given)
        try:
            loaded = tf.saved_model.load(str(folder))
        except Exception as error:  # TF raises assorted types for corrupt protobufs
            message = one_line(error, 300)
            raise InvalidInputError(f"Could not load the SavedModel in {folder} (corrupt?): {message}") from None
        signatures = dict(getattr(loaded, "signatures", {}) or {})
        if SIGNATURE not in signatures:
            raise InvalidInputError(
                f"The SavedModel in {folder} has no '{SIGNATURE}' signature (it has: "
                f"{', '.join(sorted(signatures)) or 'none'}). Export it with a serving_default endpoint "
                "(nin-keras export --targets saved_model, or keras' model.export)."
            )
        self._loaded = loaded  # keeps the variables alive
        self._signature = signatures[SIGNATURE]
        args, kwargs = self._signature.structured_input_signature
        specs = dict(kwargs or {})
        if args or len(specs) != 1:
            raise IncompatibleModelError(
                f"The '{SIGNATURE}' signature of {folder} takes {len(args) + len(specs)} inputs "
                f"({', '.join(specs) or 'positional'}); expected one image input."
            )
        (self._input_key, spec), = specs.items()
        shape = spec.shape
        if shape.rank != 4 or any(d is None for d in shape[1:]):
            raise IncompatibleModelError(
                f"The '{SIGNATURE}' input {self._input_key!r} of {folder} has shape {shape}; expected "
                "(batch, height, width, channels) with static height, width and channels."
            )
        self._dtype = spec.dtype
        outputs = self._signature.structured_outputs
        if not isinstance(outputs, dict):
            outputs = {"output_0": outputs}
        self._output_key = _pick_output(outputs, lambda s: s.shape.rank == 2 and (s.shape[-1] or 0) > 1,
                                        where=f"the '{SIGNATURE}' signature of {folder}")
        out_spec = outputs[self._output_key]
        num_classes = out_spec.shape[-1]
        input_shape = tuple(int(d) for d in shape[1:])
        super().__init__(
            name=given.name if given == folder else f"{given.name}/{folder.name}",
            path=folder,
            input_shape=input_shape,
            num_classes=num_classes,
            static_batch=shape[0],
            precision="float32" if self._dtype.is_floating else str(self._dtype.name),
            size_bytes=folder_size(folder),
            input_details={"dtype": self._dtype.name, "shape": _shape_list(shape.as_list()), "quantization": None},
            output_details={"dtype": out_spec.dtype.name, "shape": _shape_list(out_spec.shape.as_list()),
                            "quantization": None},
        )

    def _run(self, batch):
        x = tf.convert_to_tensor(_cast_for(batch, self._dtype.as_numpy_dtype))
        return np.asarray(self._signature(**{self._input_key: x})[self._output_key], dtype=np.float32)


def _pick_output(outputs: dict, looks_like_scores, *, where: str) -> str:
    """The key of the class-score output: "probabilities" if present, else the single (or only 2-D) one."""
    if PROBABILITIES in outputs:
        return PROBABILITIES
    if len(outputs) == 1:
        return next(iter(outputs))
    candidates = [key for key, spec in outputs.items() if looks_like_scores(spec)]
    if len(candidates) == 1:
        return candidates[0]
    raise IncompatibleModelError(
        f"Cannot tell which output of {where} holds the class scores: it has {', '.join(sorted(outputs))} and "
        f"none is named '{PROBABILITIES}'."
    )


def _cast_for(batch: np.ndarray, dtype) -> np.ndarray:
    """Casts raw pixels to a float or unquantized integer input dtype (integers clipped to its range)."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer) and batch.dtype != dtype:
        info = np.iinfo(dtype)
        return np.clip(np.rint(batch.astype(np.float64)), info.min, info.max).astype(dtype)
    return batch.astype(dtype, copy=False)


def quantize(values: np.ndarray, scale: float, zero_point: int, dtype) -> np.ndarray:
    """`q = round(x / scale + zero_point)`, clipped to the range of integer `dtype`."""
    info = np.iinfo(dtype)
    q = np.rint(np.asarray(values, np.float64) / scale + zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return ((np.asarray(values, np.float32) - np.float32(zero_point)) * np.float32(scale)).astype(np.float32)


def _tensor_details(detail) -> dict:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    signature = detail.get("shape_signature")
    shape = signature if signature is not None and len(signature) else detail["shape"]
    return {
        "dtype": np.dtype(detail["dtype"]).name,
        "shape": _shape_list(shape),
        "quantization": [float(scale), int(zero_point)] if scale else None,
    }


TFLITE_IDENTIFIER = b"TFL3"


class TFLiteRunner(Runner):
    """A .tflite file run with ai_edge_litert's Interpreter (one interpreter per runner: not thread-safe)."""

    kind = "tflite"
    thread_safe = False

    def __init__(self, path, *, num_threads=None, _content=None):
        path = Path(path)
        content = path.read_bytes() if _content is None else _content
        if len(content) < 8 or content[4:8] != TFLITE_IDENTIFIER:
            raise InvalidInputError(
                f"{path} is not a TFLite model: it lacks the TFL3 flatbuffer identifier ({len(content)} bytes; "
                "random bytes, a truncated download, or another format?)."
            )
        # Structure checked, and a file from elsewhere run once in a child process: a crafted file that would
        # crash LiteRT is refused here instead of killing this process.
        check_tflite(content, str(path), num_threads=num_threads)
        self._content = content
        self._interpreter = _make_interpreter(path, content, num_threads)
        interpreter = self._interpreter
        inputs = interpreter.get_input_details()
        if len(inputs) != 1:
            raise IncompatibleModelError(f"{path} has {len(inputs)} inputs; expected one image input.")
        self._in = inputs[0]
        in_details = _tensor_details(self._in)
        shape = in_details["shape"]
        if len(shape) != 4 or any(d is None for d in shape[1:]):
            raise IncompatibleModelError(
                f"{path} takes input of shape {shape}; expected (batch, height, width, channels) with static "
                "height, width and channels."
            )
        self._out = self._pick_output_detail(path)
        out_details = _tensor_details(self._out)
        if len(out_details["shape"]) != 2 or not out_details["shape"][1]:
            raise IncompatibleModelError(
                f"{path} outputs shape {out_details['shape']}; expected (batch, classes) class scores."
            )
        self._batch = int(self._in["shape"][0])
        super().__init__(
            name=path.name,
            path=path,
            input_shape=shape[1:],
            num_classes=out_details["shape"][1],
            static_batch=None if shape[0] is None else shape[0],
            precision=_tflite_precision(interpreter, in_details["dtype"]),
            size_bytes=len(content),
            input_details=in_details,
            output_details=out_details,
            threads=num_threads,
        )

    def _pick_output_detail(self, path):
        outputs = self._interpreter.get_output_details()
        by_index = {d["index"]: d for d in outputs}
        named = {}
        try:
            for signature in self._interpreter.get_signature_list():
                runner = self._interpreter.get_signature_runner(signature)
                named.update({name: by_index.get(d["index"]) for name, d in runner.get_output_details().items()})
        except (ValueError, RuntimeError, KeyError):
            named = {}
        if named.get(PROBABILITIES) is not None:
            return named[PROBABILITIES]
        if len(outputs) == 1:
            return outputs[0]
        key = _pick_output({str(d["index"]): d for d in outputs},
                           lambda d: len(d["shape"]) == 2 and d["shape"][-1] > 1, where=str(path))
        return by_index[int(key)]

    def clone(self):
        return TFLiteRunner(self.path, num_threads=self.threads, _content=self._content)

    def _resize(self, batch_size: int):
        if batch_size != self._batch:
            try:
                self._interpreter.resize_tensor_input(self._in["index"], [batch_size, *self.input_shape],
                                                      strict=True)
                self._interpreter.allocate_tensors()
            except (ValueError, RuntimeError) as error:
                raise self._failed(error, f"for a batch of {batch_size}") from None
            self._batch = batch_size

    def _failed(self, error, when: str) -> InvalidInputError:
        """LiteRT's own error (a RuntimeError: a kernel refused) as the package's, naming the file."""
        return InvalidInputError(
            f"LiteRT could not run {self.path} {when}: {one_line(error, 300)}. The file is damaged, crafted, or "
            "needs operations or shapes this runtime does not support; export the model again."
        )

    def time_invoke(self, image: np.ndarray, *, runs: int, warmup: int) -> list[float]:
        """Seconds of each `interpreter.invoke()` on one image already set: the model's own latency,
        as LiteRT's benchmark_model measures it (no Python-side quantization or copies)."""
        self._run(image)  # sizes the input to batch 1 and sets it
        for _ in range(warmup):
            self._interpreter.invoke()
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            self._interpreter.invoke()
            times.append(time.perf_counter() - start)
        return times

    def _run(self, batch):
        interpreter = self._interpreter
        self._resize(len(batch))
        quant = self.input_details["quantization"]
        dtype = np.dtype(self._in["dtype"])
        if quant is not None and np.issubdtype(dtype, np.integer):
            x = quantize(batch, quant[0], quant[1], dtype)
        else:
            x = _cast_for(batch, dtype)
        try:
            interpreter.set_tensor(self._in["index"], x)
            interpreter.invoke()
            y = interpreter.get_tensor(self._out["index"])
        except (ValueError, RuntimeError) as error:
            raise self._failed(error, f"on a batch of {len(batch)}") from None
        out_quant = self.output_details["quantization"]
        if out_quant is not None and np.issubdtype(y.dtype, np.integer):
            return dequantize(y, out_quant[0], out_quant[1])
        return y.astype(np.float32)


class OnnxRunner(Runner):
    """A .onnx file run with onnxruntime on the CPU (one session per runner; sessions allow concurrent runs)."""

    kind = "onnx"
    thread_safe = True

    def __init__(self, path, *, num_threads=None):
        try:
            import onnxruntime  # lazy: the [onnx] extra
        except ImportError:
            raise MissingDependencyError(f"{path} is an ONNX model: running it needs onnxruntime "
                                         "(pip install 'nin-keras[onnx]').") from None
        path = Path(path)
        options = onnxruntime.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = int(num_threads)
        try:
            self._session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own exception types for unreadable files
            raise InvalidInputError(f"{path} is not a loadable ONNX model: {one_line(error, 300)}") from None
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise IncompatibleModelError(f"{path.name} is not an image classifier: it needs one NHWC image input.")
        self._input = inputs[0].name
        output = next((o for o in outputs if o.name == PROBABILITIES), outputs[0])
        self._output = output.name
        input_shape = [int(d) for d in inputs[0].shape[1:]]
        num_classes = int(output.shape[-1])
        super().__init__(
            name=path.name, path=path, input_shape=input_shape, num_classes=num_classes, static_batch=None,
            precision="float32", size_bytes=path.stat().st_size, threads=num_threads,
            input_details={"dtype": "float32", "shape": [None, *input_shape], "quantization": None},
            output_details={"dtype": "float32", "shape": [None, num_classes], "quantization": None},
        )

    def _run(self, batch):
        x = np.ascontiguousarray(batch, dtype=np.float32)
        return np.asarray(self._session.run([self._output], {self._input: x})[0], dtype=np.float32)


_INTERPRETER_LOCK = threading.Lock()


def _make_interpreter(path, content, num_threads):
    try:
        # The runtime logs "Created TensorFlow Lite XNNPACK delegate" from C++: dropped when the CLI is quiet.
        with _INTERPRETER_LOCK, silenced_native_stderr():
            interpreter = Interpreter(model_content=content, num_threads=num_threads)
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as error:
        message = one_line(error, 300)
        if "custom op" in message.lower() or "edgetpu" in message.lower():
            raise InvalidInputError(
                f"{path} uses operations this CPU runtime does not have ({message}). An Edge TPU-compiled "
                "model (*_edgetpu.tflite) runs only with the Edge TPU delegate (libedgetpu) on a Coral device; "
                "evaluate model_edgetpu_ready.tflite instead."
            ) from None
        raise InvalidInputError(f"{path} is not a valid TFLite model (truncated or corrupt?): {message}") from None
    return interpreter


def _tflite_precision(interpreter, input_dtype: str) -> str:
    """Names what a .tflite really is, from its tensor types (not its file name)."""
    dtypes = {np.dtype(d["dtype"]).name for d in interpreter.get_tensor_details()}
    if "int16" in dtypes:  # int16x8, whatever its I/O (tflite_int16x8 has float32 I/O)
        return "int16 activations / int8 weights"
    if input_dtype in ("int8", "uint8"):
        return "full int8" if input_dtype == "int8" else "full int8 (uint8 I/O)"
    if "float16" in dtypes:
        return "float16 weights"
    if "int8" in dtypes:
        return "int8 weights / float activations"
    return "float32"
