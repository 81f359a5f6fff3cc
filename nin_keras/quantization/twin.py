"""The tf_keras twin of a Keras 3 model: the bridge into tfmot (which supports only tf_keras).

The twin is rebuilt from what the Keras 3 model itself carries: its functional graph and each layer's
configuration, read layer by layer and translated to the tf_keras layer of the same kind; then every layer's
weights are copied. There is no second hand-written copy of the network, so a model loaded from a `.keras`
file works exactly like one built in the same process.

Only layers with an exact tf_keras counterpart are translated (the ones NIN is made of); anything else raises
`IncompatibleModelError` naming the layer, rather than producing a twin that computes something else.
"""

from __future__ import annotations

import functools

import keras
import numpy as np

from nin_keras.errors import IncompatibleModelError
from nin_keras.models.whitening import gcn_zca_whiten

# Keras 3 class name -> function(layer, config) -> tf_keras layer. BatchNormalization subclasses (nin_keras'
# FusedBatchNormalization) map to tf_keras BatchNormalization: same weights, same inference maths.
SUPPORTED_LAYERS = (
    "InputLayer", "Rescaling", "Normalization", "Conv2D", "BatchNormalization", "FusedBatchNormalization",
    "ReLU", "Activation", "MaxPooling2D", "AveragePooling2D", "Dropout", "GlobalAveragePooling2D",
    "GCNZCAWhitening",
)

# Activations that have the same name and meaning in Keras 3 and tf_keras.
_ACTIVATIONS = ("linear", "relu", "relu6", "softmax", "sigmoid", "tanh", "elu", "selu", "softplus", "swish",
                "silu", "gelu", "hard_sigmoid", "exponential", "softsign")


def to_tf_keras(model, *, check: bool = True, atol: float = 1e-5, seed: int = 0):
    """Rebuilds a Keras 3 functional image model as a tf_keras model with the same layers and weights.

    Args:
        model: a Keras 3 functional model (e.g. from `build_nin` or `nin_keras.load_model`) with one input
            and one output, made of the layers in `SUPPORTED_LAYERS`.
        check: run both models on random raw-pixel images and require the same outputs. Defaults to True.
        atol: largest allowed absolute difference of the outputs (float32 models). Models computing in
            float16/bfloat16 are compared with a tolerance suited to that precision. Defaults to 1e-5.
        seed: seed of the check's random images. Defaults to 0.

    Returns:
        A float32 `tf_keras.Model` named like `model`.

    Raises:
        IncompatibleModelError: a layer without a tf_keras translation, a layer used twice, several inputs
            or outputs, or a twin whose outputs differ from the model's.
    """
    import tf_keras  # lazy: Keras 2, tfmot's side of the bridge; loaded only when a twin is built

    if not isinstance(model, keras.Model) or not hasattr(model, "_operations") or not model.inputs:
        raise IncompatibleModelError(
            f"Expected a Keras 3 functional model; received {type(model).__name__}. Sequential models built "
            "without an input shape and subclassed models cannot be rebuilt as a tf_keras twin."
        )
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise IncompatibleModelError(
            f"Model {model.name!r} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; the "
            "tf_keras twin supports one of each."
        )
    _check_layers(model)

    # Keras tensor id -> tf_keras tensor.
    tensors = {}
    keras_input = model.inputs[0]
    twin_input = tf_keras.Input(shape=tuple(keras_input.shape[1:]), name=_input_name(model), dtype="float32")
    tensors[id(keras_input)] = twin_input
    twin_layers = []
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        nodes = [node for node in layer._inbound_nodes if _node_in_model(node, tensors)]
        if len(nodes) != 1:
            raise IncompatibleModelError(
                f"Layer {layer.name!r} is called {len(nodes)} times in {model.name!r}; the tf_keras twin "
                "supports layers used once (no shared layers)."
            )
        node = nodes[0]
        if len(node.input_tensors) != 1 or len(node.output_tensors) != 1:
            raise IncompatibleModelError(
                f"Layer {layer.name!r} has {len(node.input_tensors)} inputs; the tf_keras twin supports "
                "single-input layers (a chain of layers, as in NIN)."
            )
        twin_layer = _translate(layer, tf_keras)
        tensors[id(node.output_tensors[0])] = twin_layer(tensors[id(node.input_tensors[0])])
        twin_layers.append((layer, twin_layer))

    output = tensors.get(id(model.outputs[0]))
    if output is None:
        raise IncompatibleModelError(f"Could not trace {model.name!r}'s output through its layers.")
    twin = tf_keras.Model(twin_input, output, name=model.name)
    for layer, twin_layer in twin_layers:
        _copy_weights(layer, twin_layer)
    if check:
        check_twin(model, twin, atol=atol, seed=seed)
    return twin


def check_twin(model, twin, *, atol: float = 1e-5, seed: int = 0, num_images: int = 4) -> float:
    """Runs `model` and `twin` on the same random raw-pixel images; returns the largest output difference.

    Raises:
        IncompatibleModelError: the difference exceeds `atol` (a looser bound for float16/bfloat16 models).
    """
    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    images = np.random.default_rng(seed).uniform(0, 255, (num_images, *shape)).astype("float32")
    expected = np.asarray(model(images, training=False), dtype="float32")
    actual = np.asarray(twin(images, training=False), dtype="float32")
    difference = float(np.max(np.abs(expected - actual)))
    low_precision = any(getattr(layer, "compute_dtype", "float32") in ("float16", "bfloat16")
                        for layer in model.layers)
    bound = max(atol, 5e-2) if low_precision else atol
    if not difference <= bound:
        raise IncompatibleModelError(
            f"The tf_keras twin of {model.name!r} differs from it by {difference:.3g} (allowed {bound:g}): "
            "some layer's configuration did not translate. Please report this with the model's summary."
        )
    return difference


def _check_layers(model) -> None:
    unsupported = [f"{layer.name} ({type(layer).__name__})" for layer in model.layers
                   if not _is_supported(layer)]
    if unsupported:
        raise IncompatibleModelError(
            f"Model {model.name!r} has layers that the tf_keras twin (needed for quantization-aware training) "
            f"cannot translate: {', '.join(unsupported)}. Supported: {', '.join(SUPPORTED_LAYERS)}."
        )


def _is_supported(layer) -> bool:
    # By class name: a subclass with another name may compute something else, so it is refused.
    return type(layer).__name__ in SUPPORTED_LAYERS


def _node_in_model(node, tensors) -> bool:
    return all(id(t) in tensors for t in node.input_tensors)


def _input_name(model) -> str:
    layer = model.inputs[0]._keras_history[0]
    return layer.name


def _activation_name(layer, config) -> str:
    activation = config.get("activation", "linear")
    if activation is None:
        return "linear"
    if not isinstance(activation, str) or activation not in _ACTIVATIONS:
        raise IncompatibleModelError(
            f"Layer {layer.name!r} uses activation {activation!r}, which the tf_keras twin does not translate. "
            f"Supported: {', '.join(_ACTIVATIONS)}."
        )
    return activation


def _refuse(layer, reason: str):
    raise IncompatibleModelError(f"Layer {layer.name!r} ({type(layer).__name__}) cannot be translated: {reason}.")


def _translate(layer, tf_keras):
    """Returns the tf_keras layer computing what Keras 3 `layer` computes (without weights)."""
    config = layer.get_config()
    layers = tf_keras.layers
    name = layer.name
    kind = type(layer).__name__
    if config.get("data_format", "channels_last") not in (None, "channels_last"):
        _refuse(layer, "only channels_last data is supported")
    if kind == "Rescaling":
        scale, offset = config["scale"], config["offset"]
        if isinstance(scale, dict) or isinstance(offset, dict):
            _refuse(layer, "tensor-valued scale/offset")
        return layers.Rescaling(scale, offset, name=name)
    if kind == "Normalization":
        if config.get("invert"):
            _refuse(layer, "invert=True")
        if not layer.built or getattr(layer, "mean", None) is None:
            _refuse(layer, "it was never adapted (no mean/variance)")
        axis = config["axis"]
        axis = tuple(axis) if isinstance(axis, (list, tuple)) else axis
        mean = np.asarray(layer.mean, dtype="float32")
        variance = np.asarray(layer.variance, dtype="float32")
        return layers.Normalization(axis=axis, mean=np.squeeze(mean), variance=np.squeeze(variance), name=name)
    if kind == "Conv2D":
        if config.get("groups", 1) != 1:
            _refuse(layer, "grouped convolution")
        return layers.Conv2D(
            config["filters"], tuple(config["kernel_size"]), strides=tuple(config["strides"]),
            padding=config["padding"], dilation_rate=tuple(config["dilation_rate"]),
            activation=_activation_name(layer, config), use_bias=config["use_bias"], name=name,
        )
    if kind in ("BatchNormalization", "FusedBatchNormalization"):
        if config.get("renorm") or config.get("synchronized"):
            _refuse(layer, "renorm/synchronized batch normalization")
        return layers.BatchNormalization(
            axis=config["axis"], momentum=config["momentum"], epsilon=config["epsilon"],
            center=config["center"], scale=config["scale"], name=name,
        )
    if kind == "ReLU":
        return layers.ReLU(max_value=config.get("max_value"), negative_slope=config.get("negative_slope", 0.0),
                           threshold=config.get("threshold", 0.0), name=name)
    if kind == "Activation":
        return layers.Activation(_activation_name(layer, config), name=name)
    if kind in ("MaxPooling2D", "AveragePooling2D"):
        pool = layers.MaxPooling2D if kind == "MaxPooling2D" else layers.AveragePooling2D
        strides = config.get("strides")
        return pool(tuple(config["pool_size"]), strides=None if strides is None else tuple(strides),
                    padding=config["padding"], name=name)
    if kind == "Dropout":
        return layers.Dropout(config["rate"], noise_shape=config.get("noise_shape"), seed=config.get("seed"),
                              name=name)
    if kind == "GlobalAveragePooling2D":
        return layers.GlobalAveragePooling2D(keepdims=config.get("keepdims", False), name=name)
    if kind == "GCNZCAWhitening":
        return _whitening_twin_class(tf_keras)(image_shape=layer.image_shape, scale=config["scale"],
                                               sqrt_bias=config["sqrt_bias"], min_divisor=config["min_divisor"],
                                               name=name)
    _refuse(layer, f"no tf_keras translation (supported: {', '.join(SUPPORTED_LAYERS)})")


def _copy_weights(layer, twin_layer) -> None:
    kind = type(layer).__name__
    if kind == "Normalization":
        return  # mean and variance were passed as constants
    weights = [np.asarray(w, dtype="float32") for w in layer.get_weights()]
    expected = [tuple(w.shape) for w in twin_layer.get_weights()]
    if [tuple(w.shape) for w in weights] != expected:
        raise IncompatibleModelError(
            f"Layer {layer.name!r}: weight shapes {[w.shape for w in weights]} do not match its tf_keras "
            f"twin's {expected}."
        )
    if weights:
        twin_layer.set_weights(weights)


@functools.cache
def _whitening_twin_class(tf_keras):
    """The tf_keras counterpart of `GCNZCAWhitening` (same weights, same maths), defined once tf_keras is loaded.

    Registered under its Keras 3 name, so tfmot's clone-and-rebuild of the twin finds it; the QAT scheme keeps it
    in float in front of the quantized body, like Rescaling.
    """

    @tf_keras.saving.register_keras_serializable(package="nin_keras")
    class GCNZCAWhitening(tf_keras.layers.Layer):
        def __init__(self, image_shape, scale, sqrt_bias, min_divisor, **kwargs):
            super().__init__(**kwargs)
            self.image_shape = tuple(int(d) for d in image_shape)
            self.scale, self.sqrt_bias, self.min_divisor = float(scale), float(sqrt_bias), float(min_divisor)

        def build(self, input_shape):
            features = int(np.prod(self.image_shape))
            self.mean = self.add_weight(name="mean", shape=(features,), initializer="zeros", trainable=False)
            self.matrix = self.add_weight(name="matrix", shape=(features, features), initializer="zeros",
                                          trainable=False)
            super().build(input_shape)

        def call(self, inputs):
            return gcn_zca_whiten(inputs, self.mean, self.matrix, image_shape=self.image_shape, scale=self.scale,
                                  sqrt_bias=self.sqrt_bias, min_divisor=self.min_divisor)

        def get_config(self):
            return {**super().get_config(), "image_shape": list(self.image_shape), "scale": self.scale,
                    "sqrt_bias": self.sqrt_bias, "min_divisor": self.min_divisor}

    return GCNZCAWhitening
