"""Post-training full-integer quantization: the alternative to QAT when no fine-tuning epochs are asked for."""

from __future__ import annotations

from nin_keras.quantization.converter import FULL_INTEGER_MODES, to_tflite
from nin_keras.quantization.data import DEFAULT_REPRESENTATIVE_SAMPLES, representative_images
from nin_keras.errors import InvalidInputError


def post_training_quantize(model, data, *, io_type: str = "int8", num_samples: int = DEFAULT_REPRESENTATIVE_SAMPLES,
                           batch_size=None) -> bytes:
    """Converts a Keras 3 model to a full-integer .tflite, calibrated on training images.

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
    if io_type not in FULL_INTEGER_MODES:
        raise InvalidInputError(f"io_type must be one of {', '.join(FULL_INTEGER_MODES)}; received {io_type!r}.")
    images = representative_images(model, data, num_samples=num_samples)
    return to_tflite(model, io_type, representative_images=images, batch_size=batch_size)
