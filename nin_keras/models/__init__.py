"""Stage 2 of the data flow: NIN models (presets as data, the mlpconv block, the builder), safe .keras I/O,
and the one home of "what does this classifier take and give, and does this data fit it" (`signature`).

Everything here runs on any Keras 3 backend (TensorFlow, JAX, PyTorch) without TensorFlow installed: no module
of `nin_keras.models` imports TensorFlow at its top. Only `layers.FusedBatchNormalization.call` imports it, and
only on the TensorFlow backend (its fused kernel); elsewhere the layer is Keras' BatchNormalization. The stages
that need TensorFlow (tf.data pipelines, training's input and strategy, QAT, TFLite/SavedModel/ONNX export,
LiteRT verification) raise one `MissingDependencyError` naming what to install when reached through
`nin_keras.<name>` or the CLI (`nin_keras.process_state.require_tensorflow`)."""

from nin_keras.models.blocks import mlpconv_block
from nin_keras.models.builder import (
    GAP_LAYER_NAME,
    INPUT_NAME,
    adapt_standardization,
    build_nin,
    minimum_input_size,
    variant_of,
    with_input_size,
)
from nin_keras.models.io import load_model, save_model
from nin_keras.models.layers import FusedBatchNormalization
from nin_keras.models.presets import CLASSES, PRESETS, MlpconvSpec, NINPreset, get_preset, list_variants
from nin_keras.models.signature import (
    check_arrays_fit,
    check_data_fits,
    check_image_classifier,
    check_labels_fit,
    check_pixels,
    has_batch_norm,
    outputs_probabilities,
)
from nin_keras.models.whitening import GCNZCAWhitening, adapt_whitening

__all__ = [
    "CLASSES",
    "GAP_LAYER_NAME",
    "INPUT_NAME",
    "PRESETS",
    "FusedBatchNormalization",
    "GCNZCAWhitening",
    "MlpconvSpec",
    "NINPreset",
    "adapt_standardization",
    "adapt_whitening",
    "build_nin",
    "check_arrays_fit",
    "check_data_fits",
    "check_image_classifier",
    "check_labels_fit",
    "check_pixels",
    "has_batch_norm",
    "get_preset",
    "list_variants",
    "load_model",
    "minimum_input_size",
    "mlpconv_block",
    "outputs_probabilities",
    "save_model",
    "variant_of",
    "with_input_size",
]
