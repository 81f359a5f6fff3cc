"""Per-layer int8 statistics and selective float fallback, through TensorFlow's QuantizationDebugger.

The debugger calibrates a converter configured exactly like our int8 export (`configure_converter`), then
quantizes the calibrated model with NumericVerify ops that compare each quantized tensor with its float twin.
Its tensor names ("model_1/conv_a_1/Relu;model_1/conv_a_1/BiasAdd;...") are mapped back to Keras layer names
here. The same calibrated model, quantized with some nodes denylisted, is the mixed int8/float file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import warnings

import numpy as np
import tensorflow as tf
from tensorflow.lite.python import convert as tflite_convert  # the debugger's own quantizer entry

from nin_keras.errors import ConversionError, InvalidInputError, one_line
from nin_keras.exporting.converter import (
    configure_converter,
    float32_model,
    keras_converter,
    representative_dataset,
    tf_keras_converter,
)
from nin_keras.exporting.tflite_guard import remember_own_tflite
from nin_keras.process_state import silenced_native_stderr
from nin_keras.quantization.qat import QATModel

# Ops that only move or reinterpret numbers: their error is the error of the tensor they read.
_PASS_THROUGH_OPS = ("QUANTIZE", "DEQUANTIZE", "NumericVerify")
_SUFFIX = re.compile(r"_\d+$")


@dataclasses.dataclass(frozen=True)
class QuantizedTensor:
    """One quantized activation tensor of the int8 model, as the debugger sees it.

    Attributes:
        layer: the Keras layer whose output it is (the last of the layers the converter fused into its op).
        fused: every Keras layer fused into the op that writes it, in network order.
        position: `layer`'s index in `model.layers` (network order).
        node: the converter's tensor name (what the denylist takes).
        op: the TFLite op writing it.
        consumers: indices (in the debugger's order) of the quantized tensors computed from this one.
    """

    layer: str
    fused: tuple[str, ...]
    position: int
    node: str
    op: str
    consumers: tuple[int, ...]


def _layer_names(model) -> list[str]:
    if isinstance(model, QATModel):
        model = model.model
    names = []
    for layer in model.layers:
        name = layer.name
        # tfmot wraps layers as quant_<name>; its QuantizeLayer has no Keras twin and keeps its own name.
        names.append(name.removeprefix("quant_"))
    return names


def keras_layers_of(node: str, layer_names: list[str]) -> list[str]:
    """Keras layer names mentioned in a converter tensor name, in network order (empty when none is)."""
    known = {name: index for index, name in enumerate(layer_names)}
    found = set()
    for part in node.split(";"):
        for segment in part.split("/"):
            for candidate in (segment, _SUFFIX.sub("", segment), segment.removeprefix("quant_"),
                              _SUFFIX.sub("", segment.removeprefix("quant_"))):
                if candidate in known:
                    found.add(candidate)
    return sorted(found, key=known.get)


@contextlib.contextmanager
def int8_debugger(model, calibration_images, *, debug_images=None, qat_model=None, direct_metrics=None):
    """Yields a run `tf.lite.experimental.QuantizationDebugger` for `model`'s int8 conversion.

    Args:
        model: a Keras 3 classifier (raw pixels in).
        calibration_images: float32 raw-pixel training images (they set the int8 ranges, as in our export).
        debug_images: images the statistics are computed on. Defaults to `calibration_images`.
        qat_model: a `QATModel` to convert instead (its FakeQuant ranges set the quantization).
        direct_metrics: extra `layer_direct_compare_metrics` (float tensor, quantized tensor, scale, zero point).
    """
    images = np.asarray(calibration_images, dtype="float32")
    debug_images = images if debug_images is None else np.asarray(debug_images, dtype="float32")
    options = tf.lite.experimental.QuantizationDebugOptions(layer_direct_compare_metrics=direct_metrics)
    with contextlib.ExitStack() as stack:
        if qat_model is not None:
            converter = tf_keras_converter(qat_model.model)
        else:
            converter = stack.enter_context(keras_converter(float32_model(model)))
        configure_converter(converter, "int8", representative_images=images)
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")  # the debugger runs the deprecated tf.lite.Interpreter
        try:
            with silenced_native_stderr():
                debugger = tf.lite.experimental.QuantizationDebugger(
                    converter=converter, debug_dataset=representative_dataset(debug_images), debug_options=options)
                if direct_metrics:
                    # The float twin of each tensor must survive the run to be compared directly.
                    debugger._quant_interpreter = tf.lite.Interpreter(  # noqa: SLF001 (no public switch)
                        model_content=debugger.quant_model, experimental_preserve_all_tensors=True)
                    debugger._initialize_stats()  # noqa: SLF001
                debugger.run()
        except Exception as error:  # the converter and debugger raise many types
            raise ConversionError(f"The int8 quantization debugger failed on {model.name}: "
                                  f"{one_line(error, 2000)}") from error
        yield debugger


def quantized_tensors(debugger, model) -> list[QuantizedTensor]:
    """The debugger's quantized tensors, mapped to Keras layers, in the debugger's order (network order)."""
    layer_names = _layer_names(model)
    # A graph without the XNNPACK delegate, whose DELEGATE nodes would hide the ops and their links.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deprecated tf.lite.Interpreter: the debugger's own model format
        interpreter = tf.lite.Interpreter(
            model_content=debugger.quant_model,
            experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    ops = interpreter._get_ops_details()  # noqa: SLF001 (the op graph has no public accessor)
    producer = {tensor: op for op in ops for tensor in op["outputs"]}
    readers: dict[int, list] = {}
    for op in ops:
        for tensor in op["inputs"]:
            readers.setdefault(tensor, []).append(op)
    verified = [debugger._get_operand_name_and_index(detail["name"])  # noqa: SLF001
                for detail in debugger._get_numeric_verify_tensor_details()]  # noqa: SLF001
    index_of = {tensor: index for index, (_, tensor) in enumerate(verified)}
    rows = []
    for node, tensor in verified:
        fused = keras_layers_of(node, layer_names)
        if not fused:  # the model's output tensor is named after the signature, not a layer
            fused = [layer_names[-1]] if not readers.get(tensor) or tensor == verified[-1][1] else [node]
        layer = fused[-1]
        position = layer_names.index(layer) if layer in layer_names else -1
        rows.append(QuantizedTensor(layer=layer, fused=tuple(fused), position=position, node=node,
                                    op=producer[tensor]["op_name"] if tensor in producer else "?",
                                    consumers=tuple(_consumers(tensor, readers, index_of))))
    return rows


def _consumers(tensor: int, readers: dict, index_of: dict) -> list[int]:
    """Quantized tensors computed directly from `tensor` (through quantize/dequantize ops)."""
    found, stack, seen = [], [tensor], set()
    while stack:
        current = stack.pop()
        for op in readers.get(current, []):
            for output in op["outputs"]:
                if output in seen:
                    continue
                seen.add(output)
                if op["op_name"] in _PASS_THROUGH_OPS or output not in index_of:
                    stack.append(output)
                else:
                    found.append(index_of[output])
    return sorted(set(found))


def resolve_float_layers(tensors: list[QuantizedTensor], float_layers, model_name: str) -> list[str]:
    """Denylisted node names that keep `float_layers`' outputs in float.

    A tensor stays float only if the ops reading it take float input too, so the layers computed directly
    from a fallback layer are kept float as well (their own outputs are quantized again after them).

    Raises:
        InvalidInputError: a name that is no quantized layer of the model (the valid names are listed).
    """
    names = [float_layers] if isinstance(float_layers, str) else list(float_layers or ())
    by_layer = {}
    for index, tensor in enumerate(tensors):
        for name in tensor.fused:
            by_layer.setdefault(name, []).append(index)
    unknown = [name for name in names if name not in by_layer]
    if unknown or not names:
        valid = list(dict.fromkeys(tensor.layer for tensor in tensors))
        raise InvalidInputError(
            f"int8_float_layers names {unknown or names}, which are not quantized layers of {model_name!r}; "
            f"choose among {valid} (explain_int8 ranks them).")
    chosen = set()
    for name in names:
        for index in by_layer[name]:
            chosen.add(index)
            chosen.update(tensors[index].consumers)
    return [tensors[index].node for index in sorted(chosen)]


def quantize_with_float_nodes(debugger, nodes, *, io_type: str = "int8") -> bytes:
    """The calibrated model quantized to int8 except `nodes` (denylisted: float), with `io_type` I/O."""
    if io_type != "int8":
        raise InvalidInputError(f"io_type {io_type!r}: the mixed int8/float file has int8 input and output.")
    try:
        with silenced_native_stderr():
            content = tflite_convert.mlir_quantize(
                debugger.calibrated_model, fully_quantize=True, enable_numeric_verify=False,
                denylisted_nodes=list(nodes),
                disable_per_channel=debugger.converter._experimental_disable_per_channel)  # noqa: SLF001
    except Exception as error:
        raise ConversionError(f"Quantizing with float nodes {list(nodes)} failed: {one_line(error, 2000)}") from error
    return remember_own_tflite(bytes(content))


def mixed_int8_tflite(model, calibration_images, float_layers, *, qat_model=None) -> tuple[bytes, list[str]]:
    """A .tflite quantized to int8 except `float_layers` (and the layers reading them), kept in float.

    Args:
        model: the Keras 3 classifier.
        calibration_images: float32 raw-pixel training images.
        float_layers: Keras layer names to keep in float (`explain_int8` ranks the candidates).
        qat_model: a `QATModel` to convert instead of the float model.

    Returns:
        (the .tflite bytes: int8 input and output, float ops inside; the converter nodes kept in float).
    """
    images = np.asarray(calibration_images, dtype="float32")
    with int8_debugger(model, images, debug_images=images[:1], qat_model=qat_model) as debugger:
        nodes = resolve_float_layers(quantized_tensors(debugger, model), float_layers, model.name)
        return quantize_with_float_nodes(debugger, nodes), nodes
