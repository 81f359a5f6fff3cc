"""The tf_keras twin of a Keras 3 model: the bridge into tfmot (which supports only tf_keras).

The twin is rebuilt from what the Keras 3 model itself carries: its functional graph (branches, merges,
several inputs and outputs, nested functional or Sequential models, which are inlined) and each layer's
configuration, read layer by layer and translated to the tf_keras layer of the same kind; then every layer's
weights are copied. There is no second hand-written copy of the network, so a model loaded from a `.keras`
file works exactly like one built in the same process.

Only layers with an exact tf_keras counterpart are translated (`SUPPORTED_LAYERS`); anything else (custom
layers, Lambda, options without a counterpart) raises `IncompatibleModelError` naming the layer, rather than
producing a twin that computes something else. Regularizers, constraints and initializers are not carried
over: they do not change what the model computes, only how it would train from scratch.
"""

from __future__ import annotations

import functools

import keras
import numpy as np

from nin_keras.errors import IncompatibleModelError
from nin_keras.models.whitening import gcn_zca_whiten

# Keras 3 class name -> the configuration keys its tf_keras namesake takes unchanged. BatchNormalization
# subclasses (nin_keras' FusedBatchNormalization) map to tf_keras BatchNormalization: same weights, same
# inference maths. A few kinds need more than copied keys; `_translate` handles those by name.
_CONV_KEYS = ("filters", "kernel_size", "strides", "padding", "dilation_rate", "activation", "use_bias")
_POOL_KEYS = ("pool_size", "strides", "padding")
_TRANSLATED_KEYS = {
    "Conv2D": _CONV_KEYS + ("groups",),
    "DepthwiseConv2D": ("kernel_size", "strides", "padding", "depth_multiplier", "dilation_rate", "activation",
                        "use_bias"),
    "Conv2DTranspose": _CONV_KEYS + ("output_padding",),
    "Dense": ("units", "activation", "use_bias"),
    "BatchNormalization": ("axis", "momentum", "epsilon", "center", "scale"),
    "ReLU": ("max_value", "negative_slope", "threshold"),
    "Activation": ("activation",),
    "Softmax": ("axis",),
    "MaxPooling2D": _POOL_KEYS,
    "AveragePooling2D": _POOL_KEYS,
    "GlobalAveragePooling2D": ("keepdims",),
    "GlobalMaxPooling2D": ("keepdims",),
    "Add": (), "Subtract": (), "Multiply": (), "Average": (), "Maximum": (), "Minimum": (),
    "Concatenate": ("axis",),
    "Flatten": (),
    "Reshape": ("target_shape",),
    "ZeroPadding2D": ("padding",),
    "Cropping2D": ("cropping",),
    "UpSampling2D": ("size", "interpolation"),
    "Dropout": ("rate", "noise_shape", "seed"),
    "SpatialDropout2D": ("rate", "seed"),
}
# Translated by `_translate` itself (other argument names, weights passed as constants, nin_keras layers).
_SPECIAL_LAYERS = ("InputLayer", "FusedBatchNormalization", "LeakyReLU", "Rescaling", "Normalization",
                   "GCNZCAWhitening", "SeparableConv2D")
SUPPORTED_LAYERS = tuple(_TRANSLATED_KEYS) + _SPECIAL_LAYERS

# Activations that have the same name and meaning in Keras 3 and tf_keras.
_ACTIVATIONS = ("linear", "relu", "relu6", "softmax", "sigmoid", "tanh", "elu", "selu", "softplus", "swish",
                "silu", "gelu", "hard_sigmoid", "exponential", "softsign")


def to_tf_keras(model, *, check: bool = True, atol: float = 1e-5, seed: int = 0):
    """Rebuilds a Keras 3 functional (or built Sequential) model as a tf_keras model with the same layers.

    Args:
        model: a Keras 3 functional model (e.g. from `build_nin`, `nin_keras.load_model`, or your own graph
            around them) or a Sequential model with a known input shape, made of the layers in
            `SUPPORTED_LAYERS`; nested functional/Sequential models (a backbone used as a layer) are inlined.
        check: run both models on random raw-pixel inputs and require the same outputs. Defaults to True.
        atol: largest allowed absolute difference of the outputs (float32 models). Models computing in
            float16/bfloat16 are compared with a tolerance suited to that precision. Defaults to 1e-5.
        seed: seed of the check's random inputs. Defaults to 0.

    Returns:
        A float32 `tf_keras.Model` named like `model`, with the same inputs and outputs.

    Raises:
        IncompatibleModelError: a layer without a tf_keras translation (named, with the reason), a layer
            used twice (shared weights), or a twin whose outputs differ from the model's.
    """
    import tf_keras  # lazy: Keras 2, tfmot's side of the bridge; loaded only when a twin is built

    graph = _graph(model, model)
    _check_layers(model)
    twin_inputs = [tf_keras.Input(shape=tuple(tensor.shape[1:]), name=_input_name(tensor, index), dtype="float32")
                   for index, tensor in enumerate(graph.inputs)]
    builder = _TwinBuilder(tf_keras)
    twin_outputs = builder.run(graph, twin_inputs)
    twin = tf_keras.Model(twin_inputs[0] if len(twin_inputs) == 1 else twin_inputs,
                          twin_outputs[0] if len(twin_outputs) == 1 else twin_outputs, name=model.name)
    for twin_layer, weights in builder.pairs:
        _copy_weights(twin_layer, weights)
    if check:
        check_twin(model, twin, atol=atol, seed=seed)
    return twin


class _TwinBuilder:
    """Walks a Keras 3 graph in its own execution order and calls the translated layers on tf_keras tensors."""

    def __init__(self, tf_keras):
        self.tf_keras = tf_keras
        self.pairs = []  # (tf_keras twin layer, the Keras 3 weights it gets once the twin is built)
        self._names = set()
        self._translated = set()

    def run(self, graph, values: list) -> list:
        """The tf_keras tensors of `graph`'s outputs, given tf_keras tensors for its inputs."""
        tensors = {id(tensor): value for tensor, value in zip(graph.inputs, values)}
        for depth in sorted(graph._nodes_by_depth, reverse=True):  # as keras' Functional runs its graph
            for node in graph._nodes_by_depth[depth]:
                if not node.operation or node.is_input:
                    continue
                if any(id(tensor) not in tensors for tensor in node.input_tensors):
                    continue  # a node of another graph that shares this layer
                args, kwargs = node.arguments.fill_in(tensors)
                operation = node.operation
                if isinstance(operation, keras.Model):
                    # A nested model (a backbone used as a layer) is inlined: tfmot cannot quantize nested
                    # models. Its call arguments such as training=False do not carry over.
                    outputs = self.run(_graph(operation, operation), keras.tree.flatten(args))
                elif type(operation).__name__ == "SeparableConv2D":
                    outputs = self._separable(operation, graph, *args)
                else:
                    outputs = self._twin_layer(operation, graph)(*args, **kwargs)
                for tensor, value in zip(node.outputs, keras.tree.flatten(outputs)):
                    tensors[id(tensor)] = value
        missing = [tensor.name for tensor in graph.outputs if id(tensor) not in tensors]
        if missing:
            raise IncompatibleModelError(f"Could not trace {graph.name!r}'s outputs {missing} through its layers.")
        return [tensors[id(tensor)] for tensor in graph.outputs]

    def _twin_layer(self, layer, graph):
        twin_layer = _translate(layer, self.tf_keras, self._name(layer, graph))
        self.pairs.append((twin_layer, layer.get_weights()))
        return twin_layer

    def _name(self, layer, graph, suffix: str = "") -> str:
        """The twin layer's name: the layer's own, unless taken (a nested model may reuse an outer name)."""
        if not suffix:
            if id(layer) in self._translated:
                raise IncompatibleModelError(
                    f"Layer {layer.name!r} is called more than once in {graph.name!r}; the tf_keras twin supports "
                    "layers used once (shared layers cannot be quantized separately per call)."
                )
            self._translated.add(id(layer))
        name = layer.name + suffix
        if name in self._names:
            name = f"{graph.name}_{name}"
            while name in self._names:
                name += "_"
        self._names.add(name)
        return name

    def _separable(self, layer, graph, inputs):
        """A SeparableConv2D as its depthwise then pointwise convolution: the same maths, and the split tfmot's
        own transform would make, but with names of ours (tfmot's split takes fresh tf_keras names such as
        "conv2d", which can collide with the model's and mis-wire its graph)."""
        config = layer.get_config()
        _check_translatable(layer, config)
        depthwise_kernel, pointwise_kernel, *bias = layer.get_weights()
        layers = self.tf_keras.layers
        self._name(layer, graph)  # marks the layer as used
        depthwise = layers.DepthwiseConv2D(
            tuple(config["kernel_size"]), strides=tuple(config["strides"]), padding=config["padding"],
            depth_multiplier=config["depth_multiplier"], dilation_rate=tuple(config["dilation_rate"]),
            use_bias=False, name=self._name(layer, graph, "_depthwise"))
        pointwise = layers.Conv2D(config["filters"], 1, use_bias=config["use_bias"],
                                  activation=_activation_name(layer, config["activation"]),
                                  name=self._name(layer, graph, "_pointwise"))
        self.pairs += [(depthwise, [depthwise_kernel]), (pointwise, [pointwise_kernel, *bias])]
        return pointwise(depthwise(inputs))


def check_twin(model, twin, *, atol: float = 1e-5, seed: int = 0, num_images: int = 4) -> float:
    """Runs `model` and `twin` on the same random raw-pixel inputs; returns the largest output difference.

    Raises:
        IncompatibleModelError: the difference exceeds `atol` (a looser bound for float16/bfloat16 models).
    """
    rng = np.random.default_rng(seed)
    inputs = [rng.uniform(0, 255, (num_images, *(int(d) for d in tensor.shape[1:]))).astype("float32")
              for tensor in model.inputs]
    inputs = inputs[0] if len(inputs) == 1 else inputs
    expected = keras.tree.flatten(model(inputs, training=False))
    actual = keras.tree.flatten(twin(inputs, training=False))
    difference = max(float(np.max(np.abs(np.asarray(a, dtype="float32") - np.asarray(b, dtype="float32"))))
                     for a, b in zip(expected, actual))
    low_precision = any(getattr(layer, "compute_dtype", "float32") in ("float16", "bfloat16")
                        for layer in _leaf_layers(model))
    bound = max(atol, 5e-2) if low_precision else atol
    if not difference <= bound:
        raise IncompatibleModelError(
            f"The tf_keras twin of {model.name!r} differs from it by {difference:.3g} (allowed {bound:g}): "
            "some layer's configuration did not translate. Please report this with the model's summary."
        )
    return difference


def _graph(model, outer):
    """The functional graph of `model` (a built Sequential's own functional graph), or a clear refusal."""
    if isinstance(model, keras.Sequential):
        model = getattr(model, "_functional", None) or model
    if not isinstance(model, keras.Model) or not hasattr(model, "_nodes_by_depth") or not model.inputs:
        what = "" if model is outer else f" (inside {outer.name!r})"
        raise IncompatibleModelError(
            f"Expected a Keras 3 functional model; received {type(model).__name__}{what}. Sequential models "
            "built without an input shape and subclassed models cannot be rebuilt as a tf_keras twin."
        )
    return model


def leaf_layer_names(model) -> list[str]:
    """Names of a model's layers, nested models walked through: what `float_layers` may name."""
    return [layer.name for _, layer in _leaf_layers(model)]


def _leaf_layers(model, path: str = ""):
    """(path, layer) of every layer that is not itself a model, nested models walked through."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaf_layers(layer, f"{path}{layer.name}/")
        else:
            yield f"{path}{layer.name}", layer


def _check_layers(model) -> None:
    unsupported = [f"{path} ({type(layer).__name__})" for path, layer in _leaf_layers(model)
                   if type(layer).__name__ not in SUPPORTED_LAYERS]  # by class name: a subclass may differ
    if unsupported:
        raise IncompatibleModelError(
            f"Model {model.name!r} has layers that the tf_keras twin (needed for quantization-aware training) "
            f"cannot translate: {', '.join(unsupported)}. Custom layers and Lambda layers have no exact "
            f"tf_keras counterpart; for such a model export with qat_epochs=0 (post-training int8). Supported: "
            f"{', '.join(SUPPORTED_LAYERS)}."
        )


def _input_name(tensor, index: int) -> str:
    history = getattr(tensor, "_keras_history", None)
    return history[0].name if history else f"input_{index}"


def _activation_name(layer, activation) -> str:
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


def _as_tuple(value):
    """Keras 3 configs hold tuples; JSON-loaded ones hold lists. tf_keras wants tuples (nested too)."""
    if isinstance(value, list):
        return tuple(_as_tuple(item) for item in value)
    return value


def _check_translatable(layer, config) -> None:
    if config.get("data_format", "channels_last") not in (None, "channels_last"):
        _refuse(layer, "only channels_last data is supported")
    if config.get("lora_rank") or config.get("quantization_config"):
        _refuse(layer, "LoRA or Keras-quantized layers have no tf_keras counterpart")
    if config.get("renorm") or config.get("synchronized"):
        _refuse(layer, "renorm/synchronized batch normalization")


def _translate(layer, tf_keras, name: str):
    """Returns the tf_keras layer computing what Keras 3 `layer` computes (without weights)."""
    config = layer.get_config()
    layers = tf_keras.layers
    kind = type(layer).__name__
    _check_translatable(layer, config)
    if kind in _TRANSLATED_KEYS:
        arguments = {key: _as_tuple(config[key]) for key in _TRANSLATED_KEYS[kind] if key in config}
        if "activation" in arguments:
            arguments["activation"] = _activation_name(layer, arguments["activation"])
        return getattr(layers, kind)(**arguments, name=name)
    if kind == "FusedBatchNormalization":
        return layers.BatchNormalization(**{key: config[key] for key in _TRANSLATED_KEYS["BatchNormalization"]},
                                         name=name)
    if kind == "LeakyReLU":
        return layers.LeakyReLU(alpha=config["negative_slope"], name=name)
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
    if kind == "GCNZCAWhitening":
        return _whitening_twin_class(tf_keras)(image_shape=layer.image_shape, scale=config["scale"],
                                               sqrt_bias=config["sqrt_bias"], min_divisor=config["min_divisor"],
                                               name=name)
    _refuse(layer, f"no tf_keras translation (supported: {', '.join(SUPPORTED_LAYERS)})")


def _copy_weights(twin_layer, weights) -> None:
    if type(twin_layer).__name__ == "Normalization":
        return  # mean and variance were passed as constants
    weights = [np.asarray(w, dtype="float32") for w in weights]
    expected = [tuple(w.shape) for w in twin_layer.get_weights()]
    if [tuple(w.shape) for w in weights] != expected:
        raise IncompatibleModelError(
            f"Layer {twin_layer.name!r}: weight shapes {[w.shape for w in weights]} do not match its tf_keras "
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
