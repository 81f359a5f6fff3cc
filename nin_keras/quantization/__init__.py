"""Stage 4 of the data flow: quantization (tf_keras twin + tfmot QAT, post-training quantization).

Also the one place that decides TFLite converter settings (`converter`), since every precision choice is a
quantization choice; the exporting stage calls it for each target.
"""

from nin_keras.quantization.converter import (
    FULL_INTEGER_MODES,
    MODES,
    configure_converter,
    convert,
    to_tflite,
    write_conversion_saved_model,
)
from nin_keras.quantization.data import DEFAULT_REPRESENTATIVE_SAMPLES, representative_images
from nin_keras.quantization.ptq import post_training_quantize
from nin_keras.quantization.qat import DEFAULT_LEARNING_RATE, QATModel, quantize_aware
from nin_keras.quantization.twin import SUPPORTED_LAYERS, check_twin, to_tf_keras

__all__ = [
    "DEFAULT_LEARNING_RATE",
    "DEFAULT_REPRESENTATIVE_SAMPLES",
    "FULL_INTEGER_MODES",
    "MODES",
    "QATModel",
    "SUPPORTED_LAYERS",
    "check_twin",
    "configure_converter",
    "convert",
    "post_training_quantize",
    "quantize_aware",
    "representative_images",
    "to_tf_keras",
    "to_tflite",
    "write_conversion_saved_model",
]
