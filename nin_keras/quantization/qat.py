"""Quantization-aware training (tfmot's default 8-bit scheme) for Keras 3 models, through their tf_keras twin.

tfmot supports only tf_keras. `quantize_aware` rebuilds the model as a tf_keras twin (`to_tf_keras`: same
layers from the model's own configuration, same weights), plans how tfmot's default 8-bit scheme treats each
layer (`quantization_plan`: convolutions and Dense with their BatchNormalization folded in, activations,
merges, pooling), leaves the preprocessing layers (Rescaling/Normalization, folded by the converter into the
first convolution, and the GCN + ZCA whitening, quantized after training from the calibration images) as
float layers in front of the quantized body, fine-tunes, and returns a `QATModel` that the exporter converts.

A layer the scheme cannot quantize is never left as a silent float island: `quantize_aware` refuses it by
name unless the caller lists it in `float_layers`. Such a layer then trains without fake quantization and the
full-integer converter gives it int8 ranges from the calibration images, so the int8 files stay integer-only.

The caller's process is left as it was: `TF_USE_LEGACY_KERAS` (which importing tfmot sets to "1") is
restored, `tf.keras` stays Keras 3, and Keras 3 models keep building and training.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow as tf

from nin_keras.checks import check_float, check_int
from nin_keras.data.splits import as_splits, data_errors_as_input
from nin_keras.display import ProgressDisplay, fit_progress
from nin_keras.errors import IncompatibleModelError, InvalidInputError
from nin_keras.models.signature import check_data_fits, check_image_classifier
from nin_keras.process_state import LEGACY_KERAS_VAR, preserve_legacy_keras_flag
from nin_keras.quantization.twin import to_tf_keras
from nin_keras.training.setup import outputs_are_probabilities

DEFAULT_LEARNING_RATE = 1e-4
# Layers kept in float in front of the quantized body (tfmot's default scheme has no config for them).
_FLOAT_LAYERS = ("InputLayer", "Rescaling", "Normalization", "GCNZCAWhitening")
# Layers whose int8 kernels require the output to share the input's scale: quantizing their output
# separately would make the converter insert a requantize (QUANTIZE int8 -> int8) op after them.
_PASS_THROUGH_LAYERS = ("AveragePooling2D", "MaxPooling2D", "Dropout")
# Merges that tfmot's registry lacks but TFLite runs in int8 with an output scale of their own, as tfmot
# quantizes Add: only the output is quantized.
_OUTPUT_QUANTIZED_LAYERS = ("Multiply",)
# tfmot folds a BatchNormalization into one of these when it has no activation of its own.
_BN_FOLDS_INTO = ("Conv2D", "DepthwiseConv2D", "Dense")
# Activations tfmot's QuantizeAwareActivation knows (others raise inside tfmot).
_QAT_ACTIVATIONS = ("linear", "relu", "swish", "gelu", "softmax", "sigmoid", "tanh")
# How `quantization_plan` says each layer is treated.
TREATMENTS = {
    "float": "float preprocessing in front of the quantized body (folded or calibrated by the converter)",
    "quantized": "fake-quantized by tfmot's default 8-bit scheme",
    "folded": "BatchNormalization folded into the layer before it",
    "pass-through": "keeps its input's quantization (no scale of its own)",
    "output": "output fake-quantized (weights-free merge)",
    "kept float": "trained without fake quantization (float_layers); int8 ranges from the calibration images",
}


@dataclasses.dataclass
class QATModel:
    """A quantization-aware tf_keras model, ready for full-integer conversion.

    Attributes:
        model: the tfmot-quantized tf_keras model (FakeQuant ops hold the learned ranges).
        name: name of the Keras 3 model it came from.
        input_shape: (height, width, channels).
        num_classes: number of classes.
        history: per-epoch metrics of the fine-tuning (loss, accuracy).
        epochs: fine-tuning epochs run.
        plan: layer name -> its treatment (a key of `TREATMENTS`), from `quantization_plan`.
    """

    model: object
    name: str
    input_shape: tuple
    num_classes: int
    history: dict
    epochs: int
    plan: dict = dataclasses.field(default_factory=dict)

    def predict(self, images, batch_size: int = 64) -> np.ndarray:
        """Float probabilities of the QAT model (fake-quantized) on raw-pixel images."""
        return np.asarray(self.model.predict(np.asarray(images, dtype="float32"), batch_size=batch_size,
                                             verbose=0))


def import_tfmot():
    """Imports tensorflow_model_optimization without changing the process (see the module docstring)."""
    with preserve_legacy_keras_flag():
        if os.environ.get(LEGACY_KERAS_VAR, "").lower() not in ("1", "true", "yes"):
            # tf.keras is resolved once, on first access, from TF_USE_LEGACY_KERAS. tfmot's import sets the
            # variable and touches tf.keras, which would pin tf.keras to tf_keras for the rest of the process.
            # Resolving it first (to Keras 3, as the user's environment says) keeps it Keras 3. This is the
            # only place the package touches tf.keras, and it never uses it.
            getattr(tf.keras, "layers", None)
        import tensorflow_model_optimization as tfmot  # lazy: its import sets TF_USE_LEGACY_KERAS
    return tfmot


def quantize_aware(model, data, *, epochs: int = 1, learning_rate: float = DEFAULT_LEARNING_RATE,
                   batch_size: int = 64, limit: int | None = None, float_layers=(),
                   progress=True) -> QATModel:
    """Quantization-aware fine-tuning of a Keras 3 NIN (or any model `to_tf_keras` translates).

    Args:
        model: a Keras 3 functional image classifier (built here or loaded from a `.keras` file).
        data: training data: a `DatasetSplits` (its train split), a `tf.data.Dataset` of (images, labels)
            (batched or not), or `(images, labels)` arrays (`nin_keras.data.as_splits`: used in their order).
            Images are raw pixels, as the model takes them.
        epochs: fine-tuning epochs (0 only inserts the FakeQuant ops, calibrated by the converter's
            representative data). Defaults to 1.
        learning_rate: Adam learning rate; small, since the float model is already trained. Defaults to 1e-4.
        batch_size: batch size when `data` are arrays or an unbatched dataset, or when `limit` is given.
            Defaults to 64.
        limit: use at most this many training examples. Defaults to all.
        float_layers: names of layers tfmot's scheme cannot quantize that may train without fake
            quantization (see `quantization_plan`); the converter then calibrates them. Defaults to none:
            such layers are refused with the choices at hand.
        progress: show the fine-tuning's progress as `train` does (True), or draw it on this
            `nin_keras.display.ProgressDisplay`. Defaults to True.

    Returns:
        A `QATModel`; `nin_keras.export(model, ..., qat_epochs=N)` calls this and converts it.

    Raises:
        IncompatibleModelError: a layer `to_tf_keras` cannot translate, a layer tfmot cannot quantize that
            is not in `float_layers`, or data that does not fit the model.
    """

    epochs = check_int("epochs", epochs, minimum=0)
    learning_rate = check_float("learning_rate", learning_rate, minimum=0, min_inclusive=False)
    input_shape, num_classes = check_image_classifier(model)
    fit_data, one_hot = _training_data(model, data, limit=limit, batch_size=batch_size)

    twin = to_tf_keras(model)
    with preserve_legacy_keras_flag():
        tfmot = import_tfmot()
        import tf_keras  # lazy: only after import_tfmot, inside the guard that restores TF_USE_LEGACY_KERAS

        plan = _plan_twin(twin, tfmot, float_layers=float_layers)
        qat_model = _quantize_twin(twin, plan, tfmot, tf_keras)
        history = {}
        if epochs > 0:
            probabilities = outputs_are_probabilities(model)
            loss_class = (tf_keras.losses.CategoricalCrossentropy if one_hot
                          else tf_keras.losses.SparseCategoricalCrossentropy)
            qat_model.compile(
                optimizer=tf_keras.optimizers.Adam(learning_rate),
                loss=loss_class(from_logits=not probabilities),
                metrics=["accuracy"],
            )
            # The same progress display as `train` (tf_keras' own bar is the old Keras 2 one).
            display = fit_progress(1 if progress else 0, title=f"QAT fine-tuning of {model.name}",
                                   base=tf_keras.callbacks.Callback,
                                   display=progress if isinstance(progress, ProgressDisplay) else None)
            try:
                with data_errors_as_input():  # a bad label further in a dataset: the package's error
                    fit = qat_model.fit(fit_data, epochs=epochs, verbose=0, callbacks=display.callbacks)
            finally:
                display.close()
            history = {key: [float(v) for v in values] for key, values in fit.history.items()}
    return QATModel(model=qat_model, name=model.name, input_shape=input_shape, num_classes=num_classes,
                    history=history, epochs=epochs, plan=plan)


_SHUFFLE_BUFFER = 10_000  # images; bounds the copy a shuffle of large arrays holds


def _training_data(model, data, *, limit, batch_size):
    """(fit dataset, labels are one-hot): the training split of any accepted form, streamed (never loaded whole)."""
    if data is None:
        raise InvalidInputError("quantize_aware needs training data: a DatasetSplits, a dataset or arrays.")
    batch_size = check_int("batch_size", batch_size, minimum=1)
    splits = as_splits(data, batch_size=batch_size)
    check_data_fits(model, splits)
    dataset = splits.split("train")
    limit = check_int("limit", limit, minimum=1, allow_none=True)
    shuffle = splits.name == "arrays"  # arrays come in their order (often sorted by class): reshuffle, as fit does
    if limit is not None or shuffle:
        dataset = dataset.unbatch()
        if limit is not None:
            dataset = dataset.take(limit)
        if shuffle:
            buffer = min(int(splits.info.get("size", 0)), limit or _SHUFFLE_BUFFER, _SHUFFLE_BUFFER)
            dataset = dataset.shuffle(max(buffer, 1), seed=0, reshuffle_each_iteration=True)
        dataset = dataset.batch(batch_size)
    one_hot = len(dataset.element_spec[1].shape) == 2
    dataset = dataset.map(lambda x, y, *_: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE), one_hot


def quantization_plan(model, *, float_layers=()) -> dict:
    """How quantization-aware training will treat each layer of a Keras 3 model, before any training.

    Args:
        model: what `quantize_aware` takes (layers of nested models appear under their own names).
        float_layers: as in `quantize_aware`.

    Returns:
        dict layer name -> a key of `TREATMENTS` (whose value says what it means).

    Raises:
        IncompatibleModelError: as `quantize_aware` would, before it trains.
    """
    twin = to_tf_keras(model)
    with preserve_legacy_keras_flag():
        return _plan_twin(twin, import_tfmot(), float_layers=float_layers)


def _plan_twin(twin, tfmot, *, float_layers=()) -> dict:
    """`quantization_plan` of a tf_keras twin.

    Raises:
        IncompatibleModelError: layers the scheme cannot quantize and `float_layers` does not name (the
            message names them, says why, and gives the two choices), or `float_layers` naming no layer.
    """
    float_layers = [float_layers] if isinstance(float_layers, str) else list(float_layers or ())
    names = {layer.name for layer in twin.layers}
    unknown = sorted(set(float_layers) - names)
    if unknown:
        raise IncompatibleModelError(f"float_layers names {unknown}, which are not layers of {twin.name!r}.")
    registry = tfmot.quantization.keras.default_8bit.Default8BitQuantizeRegistry()
    plan, refused = {}, {}  # refused: layer name -> why
    for layer in twin.layers:
        treatment = _treatment(twin, layer, registry)
        if treatment.startswith("cannot: "):
            if layer.name not in float_layers:
                refused[layer.name] = f"{type(layer).__name__}: {treatment.removeprefix('cannot: ')}"
                continue
            treatment = "kept float"
        plan[layer.name] = treatment
    if refused:
        reasons = "; ".join(f"{name} ({why})" for name, why in refused.items())
        raise IncompatibleModelError(
            f"tfmot's 8-bit scheme cannot quantization-aware train these layers of {twin.name!r}: "
            f"{reasons}. Choose one: let them train without fake quantization, with "
            f"float_layers=[{', '.join(map(repr, refused))}] - the int8 converter then "
            "gives them ranges from the calibration images, so the int8 files stay integer-only; or use post-training "
            "int8 for the whole model (qat_epochs=0)."
        )
    return plan


def _treatment(twin, layer, registry) -> str:
    """One layer's `TREATMENTS` key, or "cannot: <why>"."""
    kind = type(layer).__name__
    activation = getattr(layer, "activation", None)
    activation = getattr(activation, "__name__", None) if activation is not None else None
    if kind in _FLOAT_LAYERS:
        return "float"
    if kind == "Activation" or activation is not None:
        if activation not in _QAT_ACTIVATIONS:
            return f"cannot: activation {activation!r} (tfmot knows {', '.join(_QAT_ACTIVATIONS)})"
    if kind in _PASS_THROUGH_LAYERS:
        return "pass-through"
    if kind in _OUTPUT_QUANTIZED_LAYERS:
        return "output"
    if kind == "BatchNormalization":
        inbound = _inbound_names(twin, layer)
        before = twin.get_layer(inbound[0]) if len(inbound) == 1 else None
        if type(before).__name__ in _BN_FOLDS_INTO and getattr(before.activation, "__name__", "") == "linear":
            return "folded"
        return "cannot: only folded into a Conv2D, DepthwiseConv2D or Dense without activation right before it"
    if registry.supports(layer):
        return "quantized"
    return "cannot: not in tfmot's default 8-bit scheme"


def _quantize_twin(twin, plan: dict, tfmot, tf_keras):
    """Annotates the layers as `plan` says and applies the default 8-bit scheme (BN folded)."""
    quantization = tfmot.quantization.keras
    pass_through = _pass_through_config(quantization)
    output_only = _output_config(quantization, pass_through)
    configs = {"pass-through": pass_through, "output": output_only}

    def annotate(layer):
        treatment = plan[layer.name]
        if treatment in ("float", "kept float"):
            return layer
        return quantization.quantize_annotate_layer(layer, quantize_config=configs.get(treatment))

    # The clone reuses the twin's layers (annotations wrap them), so each keeps its own weights. Copying the
    # weights list over instead would pair them by position, and a branched clone may order its layers
    # differently: same-shaped convolutions of parallel branches would silently swap weights.
    annotated = tf_keras.models.clone_model(twin, clone_function=annotate)
    with quantization.quantize_scope({"PassThroughQuantizeConfig": type(pass_through),
                                      "OutputQuantizeConfig": type(output_only)}):
        quantized = quantization.quantize_apply(annotated)
    return _restore_merge_order(twin, quantized, tf_keras)


def _inbound_names(model, layer) -> list[str]:
    """Names of the layers feeding `layer` in `model`, in argument order.

    A layer kept in float is the same object in the twin and the QAT model, called in each: its node in
    `model` is the one tf_keras lists in the model's own node keys ("<layer>_ib-<index>").
    """
    for index, node in enumerate(layer._inbound_nodes):
        if f"{layer.name}_ib-{index}" in model._network_nodes:
            inbound = node.inbound_layers
            return [other.name for other in (inbound if isinstance(inbound, list) else [inbound])]
    return []


def _restore_merge_order(twin, quantized, tf_keras):
    """The QAT model, with every merge (Concatenate, Add, ...) taking its inputs in the twin's order.

    tfmot rebuilds the graph while applying its layout transforms, and a merge fed by a transformed layer
    (a Conv2D + BatchNormalization + ReLU branch of an Inception-style Concatenate, say) gets that input moved
    to the end: the QAT model would compute something else. The graph is wired again from the same layers
    (same weights, same quantizers), with each merge's inputs in the original order.
    """
    expected = {layer.name: _inbound_names(twin, layer) for layer in twin.layers}
    inputs, reordered = {}, False  # QAT layer name -> names of its input layers, in the twin's order
    for layer in quantized.layers:
        names = _inbound_names(quantized, layer)
        plain = [name.removeprefix("quant_") for name in names]
        want = expected.get(layer.name.removeprefix("quant_"))
        if want and want != plain and sorted(want) == sorted(plain):
            names, reordered = [names[plain.index(name)] for name in want], True
        inputs[layer.name] = names
    if not reordered:
        return quantized  # the usual case: nothing to wire again
    tensors = {}
    for layer in quantized.layers:
        if type(layer).__name__ == "InputLayer":
            tensors[layer.name] = layer.output
            continue
        arguments = [tensors[name] for name in inputs[layer.name]]
        tensors[layer.name] = layer(arguments if len(arguments) > 1 else arguments[0])
    outputs = [tensors[name] for name in quantized.output_names]
    rewired = tf_keras.Model(quantized.inputs, outputs[0] if len(outputs) == 1 else outputs, name=quantized.name)
    for layer in twin.layers:  # what was rewired must now match
        if len(expected[layer.name]) > 1:
            name = f"quant_{layer.name}" if f"quant_{layer.name}" in tensors else layer.name
            found = _inbound_names(rewired, rewired.get_layer(name))
            if [other.removeprefix("quant_") for other in found] != expected[layer.name]:
                raise IncompatibleModelError(
                    f"Could not restore the input order of {layer.name!r} after tfmot's layout transforms; "
                    "use post-training int8 (qat_epochs=0) for this model."
                )
    return rewired


def _pass_through_config(quantization):
    class PassThroughQuantizeConfig(quantization.QuantizeConfig):
        """No weights or activations to quantize; the output keeps its input's quantization."""

        def get_weights_and_quantizers(self, layer):
            return []

        def get_activations_and_quantizers(self, layer):
            return []

        def set_quantize_weights(self, layer, quantize_weights):
            pass

        def set_quantize_activations(self, layer, quantize_activations):
            pass

        def get_output_quantizers(self, layer):
            return []

        def get_config(self):
            return {}

    return PassThroughQuantizeConfig()


def _output_config(quantization, pass_through):
    class OutputQuantizeConfig(type(pass_through)):
        """No weights; the output gets its own 8-bit range (moving averages, asymmetric), as tfmot does for Add."""

        def get_output_quantizers(self, layer):
            return [quantization.quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False,
                                                                   narrow_range=False)]

    return OutputQuantizeConfig()
