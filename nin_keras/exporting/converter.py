"""The one place that decides TFLite converter settings, and the one writer of serving SavedModels.

Post-training quantization is a conversion mode here (`post_training_quantize`); the quantization stage
decides what is quantized (QAT fine-tuning, calibration images) and this module turns it into a .tflite.

Modes (what the numbers in the .tflite are):

- "float32": float weights and activations.
- "float16": float16 weights, float32 I/O (the GPU delegate's format).
- "dynamic": int8 weights, float activations and I/O (dynamic-range quantization).
- "int8": full integer, int8 input and output; needs representative data (or a QAT model).
- "uint8": full integer, uint8 input and output (the Edge TPU's format; the converter adds QUANTIZE ops
  at both ends); needs representative data (or a QAT model).
- "int16x8": int8 weights, int16 activations (`EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8`),
  float32 input and output (a QUANTIZE op in front, a DEQUANTIZE behind); needs representative data. For
  models whose activation ranges int8 cannot resolve; LiteRT runs it on its reference kernels only.

Supported ops are always set explicitly: never SELECT_TF_OPS (flex ops), which the LiteRT runtimes on
devices do not run and which break full-integer and Edge TPU conversion.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from nin_keras.checks import check_choice
from nin_keras.errors import ConversionError, InvalidInputError, one_line
from nin_keras.exporting.tflite_guard import remember_own_tflite
from nin_keras.process_state import silenced_native_stderr
from nin_keras.quantization.data import DEFAULT_REPRESENTATIVE_SAMPLES, representative_images
from nin_keras.quantization.qat import QATModel

MODES = ("float32", "float16", "dynamic", "int8", "uint8", "int16x8")
FULL_INTEGER_MODES = ("int8", "uint8")
# Modes that calibrate activation ranges on representative images.
CALIBRATED_MODES = (*FULL_INTEGER_MODES, "int16x8")
# Name of the probabilities output of every SavedModel and .tflite written here, and of the input.
OUTPUT_NAME = "probabilities"
CLASS_ID_NAME = "class_id"
INPUT_NAME = "image"


def configure_converter(converter, mode: str, *, representative_images=None):
    """Sets `converter`'s flags for `mode` (see the module docstring); returns the converter.

    Args:
        converter: a `tf.lite.TFLiteConverter`.
        mode: one of `MODES`.
        representative_images: float32 raw-pixel images (N, H, W, C) used to calibrate activation ranges;
            required for "int8"/"uint8" (also for a QAT model, whose FakeQuant ranges then set the
            quantization of everything but the float preprocessing in front) and "int16x8".
    """
    check_choice("conversion mode", mode, MODES)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if mode == "float32":
        return converter
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
        return converter
    if mode == "dynamic":
        return converter
    # Full integer. Calibration data is needed also for a QAT model: without it the converter keeps the
    # float preprocessing in front (float32 input), which is not full integer.
    if representative_images is None:
        raise InvalidInputError(
            f"Full-integer ({mode}) conversion needs representative data: pass data (a dataset or "
            "(images, labels) arrays) drawn from the training set."
        )
    converter.representative_dataset = representative_dataset(representative_images)
    if mode == "int16x8":
        # float32 I/O: callers feed raw pixels and read probabilities as from the float model (int16 I/O
        # would only move the QUANTIZE/DEQUANTIZE ops into every caller, for no accuracy gain).
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        return converter
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    io_type = tf.int8 if mode == "int8" else tf.uint8
    converter.inference_input_type = io_type
    converter.inference_output_type = io_type
    return converter


def representative_dataset(images):
    """Returns the converter's `representative_dataset` callable: one float32 image (batch 1) a step."""
    images = np.asarray(images, dtype="float32")

    def generate():
        for image in images:
            yield [image[None]]

    return generate


def convert(converter, *, what: str = "model") -> bytes:
    """Runs `converter`; any failure becomes `ConversionError` carrying the converter's own message.

    The bytes are remembered as this process' own (`tflite_guard.remember_own_tflite`): loading them later
    skips the child-process check that files from elsewhere get.
    """
    try:
        with silenced_native_stderr():
            return remember_own_tflite(bytes(converter.convert()))
    except ConversionError:
        raise
    except Exception as error:  # the converter raises many types (ConverterError, ValueError, RuntimeError)
        message = one_line(error, 2000)
        raise ConversionError(f"TFLite conversion of {what} failed: {message}") from error


def is_float32(model) -> bool:
    """True if every layer of `model` computes in float32 (no mixed-precision policy)."""
    return all(getattr(layer, "compute_dtype", "float32") in ("float32", None) for layer in model.layers)


def float32_model(model):
    """`model` itself if it computes in float32, else a float32 copy (same layers, same weights).

    Models trained with a mixed-precision policy ("mixed_bfloat16", "mixed_float16") compute in 16 bits; the
    TFLite converter cannot lower bfloat16 ops, and deployed artifacts should not depend on the training
    precision. The copy is rebuilt from the model's own config with every layer's dtype policy set to
    float32, then the (float32) weights are copied.
    """
    if is_float32(model):
        return model
    config = model.get_config()
    for layer in config.get("layers", []):
        layer_config = layer.get("config", {})
        if "dtype" in layer_config and layer.get("class_name") != "InputLayer":
            layer_config["dtype"] = "float32"
    try:
        copy = keras.Model.from_config(config)
        copy.set_weights(model.get_weights())
    except Exception as error:
        raise InvalidInputError(
            f"Could not make a float32 copy of mixed-precision model {model.name!r} for export: {error}"
        ) from None
    return copy


def write_serving_saved_model(model, directory, *, batch_size=None, class_id: bool = False) -> Path:
    """Writes `model` as a SavedModel whose `serving_default` maps float32 `image` to `probabilities`.

    The one serving-signature writer: the `saved_model` export target (with `class_id=True`, for TF Serving
    clients) and every .tflite conversion (probabilities only) use it.

    Args:
        model: a Keras 3 image classifier.
        directory: where to write (created; the caller makes it atomic).
        batch_size: None (free batch) or 1 (static, as the Edge TPU needs).
        class_id: also output `class_id` (int64 argmax). Defaults to False.

    The input signature is explicit: float32 raw pixels whatever dtype the model's input layer declares.
    """
    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(image):
        probabilities = tf.cast(model(image, training=False), tf.float32)
        outputs = {OUTPUT_NAME: probabilities}
        if class_id:
            outputs[CLASS_ID_NAME] = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
        return outputs

    archive.add_endpoint(
        "serving_default",
        tf.function(serve, input_signature=[tf.TensorSpec((batch_size, *shape), tf.float32, name=INPUT_NAME)]),
    )
    with silenced_native_stderr():
        archive.write_out(str(directory), verbose=False)
    return Path(directory)


@contextlib.contextmanager
def keras_converter(model, *, batch_size=None):
    """Yields a `TFLiteConverter` for a Keras 3 model (via a temporary SavedModel, removed afterwards)."""
    directory = Path(tempfile.mkdtemp(prefix="nin_keras_convert_"))
    try:
        write_serving_saved_model(model, directory / "saved_model", batch_size=batch_size)
        yield tf.lite.TFLiteConverter.from_saved_model(str(directory / "saved_model"))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def tf_keras_converter(tf_keras_model, *, batch_size=None):
    """Returns a `TFLiteConverter` for a tf_keras (e.g. tfmot QAT) model; `batch_size=1` makes it static.

    Its serving_default signature takes `image` and gives `probabilities`, as the Keras 3 conversions do
    (`from_keras_model` would name the output after the model's last layer).
    """
    shape = tuple(int(d) for d in tf_keras_model.inputs[0].shape[1:])

    @tf.function(input_signature=[tf.TensorSpec((batch_size, *shape), tf.float32, name=INPUT_NAME)])
    def serve(image):
        return {OUTPUT_NAME: tf_keras_model(image, training=False)}

    return tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], tf_keras_model)


def to_tflite(model, mode: str, *, representative_images=None, batch_size=None, saved_model_dir=None) -> bytes:
    """Converts a Keras 3 model or a `QATModel` to .tflite bytes in `mode` (see `MODES`).

    Args:
        model: a Keras 3 model, or a `nin_keras.quantization.QATModel` (its FakeQuant ranges set the
            quantization).
        mode: one of `MODES`.
        representative_images: raw-pixel calibration images for "int8"/"uint8"/"int16x8".
        batch_size: None (free batch) or 1 (static shape, for the Edge TPU).
        saved_model_dir: a SavedModel of `model` already written by `write_serving_saved_model` with the
            same `batch_size` (saves writing one per conversion). Defaults to a temporary one.
    """
    if isinstance(model, QATModel):
        converter = tf_keras_converter(model.model, batch_size=batch_size)
        configure_converter(converter, mode, representative_images=representative_images)
        return convert(converter, what=f"{model.name} (QAT, {mode})")
    model = float32_model(model)
    if saved_model_dir is not None:
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
        configure_converter(converter, mode, representative_images=representative_images)
        return convert(converter, what=f"{model.name} ({mode})")
    with keras_converter(model, batch_size=batch_size) as converter:
        configure_converter(converter, mode, representative_images=representative_images)
        return convert(converter, what=f"{model.name} ({mode})")


def post_training_quantize(model, data, *, io_type: str = "int8", num_samples: int = DEFAULT_REPRESENTATIVE_SAMPLES,
                           batch_size=None) -> bytes:
    """Converts a Keras 3 model to a full-integer .tflite, calibrated on training images.

    The alternative to QAT when no fine-tuning epochs are asked for.

    Args:
        model: a Keras 3 image classifier taking raw pixels.
        data: training data (`DatasetSplits`: its train split; a dataset of (images, labels); or arrays).
        io_type: "int8" (int8 input and output) or "uint8" (uint8 input and output, for the Edge TPU).
            Defaults to "int8".
        num_samples: representative images drawn from the training data. Defaults to 200.
        batch_size: None (free batch dimension) or 1 (static, for the Edge TPU). Defaults to None.

    Returns:
        The .tflite flatbuffer bytes: every op int8, input and output `io_type`, taking raw pixels in the
        input's quantization (scale about 1: the quantized value is the pixel, shifted by the zero point).
    """
    check_choice("io_type", io_type, FULL_INTEGER_MODES)
    images = representative_images(model, data, num_samples=num_samples)
    return to_tflite(model, io_type, representative_images=images, batch_size=batch_size)
