"""Stage 2 of the data flow: NIN models (presets as data, the mlpconv block, the builder)."""

from nin_keras.models.blocks import mlpconv_block
from nin_keras.models.builder import (
    GAP_LAYER_NAME,
    INPUT_NAME,
    adapt_standardization,
    build_nin,
    minimum_input_size,
)
from nin_keras.models.io import check_image_classifier, load_model, save_model
from nin_keras.models.layers import FusedBatchNormalization
from nin_keras.models.presets import CLASSES, PRESETS, MlpconvSpec, NINPreset, get_preset, list_variants

__all__ = [
    "CLASSES",
    "GAP_LAYER_NAME",
    "INPUT_NAME",
    "PRESETS",
    "FusedBatchNormalization",
    "MlpconvSpec",
    "NINPreset",
    "adapt_standardization",
    "build_nin",
    "check_image_classifier",
    "get_preset",
    "list_variants",
    "load_model",
    "minimum_input_size",
    "mlpconv_block",
    "save_model",
]
