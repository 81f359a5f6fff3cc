"""Stage 4 of the data flow: quantization-aware training (tf_keras twin + tfmot) and calibration data.

This stage decides *what* is quantized: the QAT model with its learned ranges (`quantize_aware`), and the
representative images that calibrate full-integer conversion. Turning either into a .tflite, post-training
quantization included, is the exporting stage's job (`nin_keras.exporting.converter`).
"""

from nin_keras.quantization.data import DEFAULT_REPRESENTATIVE_SAMPLES, representative_images, training_arrays
from nin_keras.quantization.qat import (
    DEFAULT_LEARNING_RATE,
    TREATMENTS,
    QATModel,
    import_tfmot,
    quantization_plan,
    quantize_aware,
)
from nin_keras.quantization.twin import SUPPORTED_LAYERS, check_twin, leaf_layer_names, to_tf_keras

__all__ = [
    "DEFAULT_LEARNING_RATE",
    "DEFAULT_REPRESENTATIVE_SAMPLES",
    "QATModel",
    "SUPPORTED_LAYERS",
    "check_twin",
    "import_tfmot",
    "leaf_layer_names",
    "quantization_plan",
    "quantize_aware",
    "TREATMENTS",
    "representative_images",
    "to_tf_keras",
    "training_arrays",
]
