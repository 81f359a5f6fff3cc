"""Quantization-aware training (tfmot's default 8-bit scheme) for Keras 3 models, through their tf_keras twin.

tfmot supports only tf_keras. `quantize_aware` rebuilds the model as a tf_keras twin (`to_tf_keras`: same
layers from the model's own configuration, same weights), annotates the layers tfmot's default scheme knows
(convolutions with their BatchNormalization folded in, ReLU, pooling, GAP, softmax), leaves the
preprocessing layers (Rescaling/Normalization, folded by the converter into the first convolution, and the
GCN + ZCA whitening, quantized after training from the calibration images) as float layers in front of the
quantized body, fine-tunes, and returns a `QATModel` that the exporter converts.

The caller's process is left as it was: `TF_USE_LEGACY_KERAS` (which importing tfmot sets to "1") is
restored, `tf.keras` stays Keras 3, and Keras 3 models keep building and training.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow as tf

from nin_keras.checks import check_float, check_int
from nin_keras.data.splits import DatasetSplits
from nin_keras.errors import InvalidInputError
from nin_keras.models.signature import check_data_fits, check_image_classifier, outputs_probabilities
from nin_keras.process_state import LEGACY_KERAS_VAR, preserve_legacy_keras_flag
from nin_keras.quantization.data import training_arrays
from nin_keras.quantization.twin import to_tf_keras

DEFAULT_LEARNING_RATE = 1e-4
# Layers kept in float in front of the quantized body (tfmot's default scheme has no config for them).
_FLOAT_LAYERS = ("InputLayer", "Rescaling", "Normalization", "GCNZCAWhitening")
# Layers whose int8 kernels require the output to share the input's scale: quantizing their output
# separately would make the converter insert a requantize (QUANTIZE int8 -> int8) op after them.
_PASS_THROUGH_LAYERS = ("AveragePooling2D", "MaxPooling2D", "Dropout")


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
    """

    model: object
    name: str
    input_shape: tuple
    num_classes: int
    history: dict
    epochs: int

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
                   batch_size: int = 64, limit: int | None = None, progress: bool = True) -> QATModel:
    """Quantization-aware fine-tuning of a Keras 3 NIN (or any model `to_tf_keras` translates).

    Args:
        model: a Keras 3 functional image classifier (built here or loaded from a `.keras` file).
        data: training data: a `DatasetSplits` (its train split), a `tf.data.Dataset` of (images, labels)
            batches, or `(images, labels)` arrays. Images are raw pixels, as the model takes them.
        epochs: fine-tuning epochs (0 only inserts the FakeQuant ops, calibrated by the converter's
            representative data). Defaults to 1.
        learning_rate: Adam learning rate; small, since the float model is already trained. Defaults to 1e-4.
        batch_size: batch size when `data` are arrays. Defaults to 64.
        limit: use at most this many training examples. Defaults to all.
        progress: show Keras' progress bar. Defaults to True.

    Returns:
        A `QATModel`; `nin_keras.export(model, ..., qat_epochs=N)` calls this and converts it.

    Raises:
        IncompatibleModelError: a layer `to_tf_keras` cannot translate, or data that does not fit the model.
    """

    epochs = check_int("epochs", epochs, minimum=0)
    learning_rate = check_float("learning_rate", learning_rate, minimum=0, min_inclusive=False)
    input_shape, num_classes = check_image_classifier(model)
    fit_data, one_hot = _training_data(model, data, limit=limit, batch_size=batch_size)

    twin = to_tf_keras(model)
    with preserve_legacy_keras_flag():
        tfmot = import_tfmot()
        import tf_keras  # lazy: only after import_tfmot, inside the guard that restores TF_USE_LEGACY_KERAS

        qat_model = _quantize_twin(twin, tfmot, tf_keras)
        history = {}
        if epochs > 0:
            probabilities = outputs_probabilities(model)
            loss_class = (tf_keras.losses.CategoricalCrossentropy if one_hot
                          else tf_keras.losses.SparseCategoricalCrossentropy)
            qat_model.compile(
                optimizer=tf_keras.optimizers.Adam(learning_rate),
                loss=loss_class(from_logits=not probabilities),
                metrics=["accuracy"],
            )
            if isinstance(fit_data, tuple):
                fit = qat_model.fit(fit_data[0], fit_data[1], epochs=epochs, batch_size=batch_size, shuffle=True,
                                    verbose=1 if progress else 0)
            else:
                fit = qat_model.fit(fit_data, epochs=epochs, verbose=1 if progress else 0)
            history = {key: [float(v) for v in values] for key, values in fit.history.items()}
    return QATModel(model=qat_model, name=model.name, input_shape=input_shape, num_classes=num_classes,
                    history=history, epochs=epochs)


def _training_data(model, data, *, limit, batch_size):
    """(fit input, labels are one-hot): arrays as `(images, labels)`, datasets streamed (never loaded whole)."""
    if data is None:
        raise InvalidInputError("quantize_aware needs training data: a DatasetSplits, a dataset or arrays.")
    if not (isinstance(data, DatasetSplits) or hasattr(data, "element_spec")):
        images, labels = training_arrays(model, data, limit=limit)
        return (images, labels), np.asarray(labels).ndim == 2
    check_data_fits(model, data)
    dataset = data.split("train") if isinstance(data, DatasetSplits) else data
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) < 2:
        raise InvalidInputError("The training dataset must yield (images, labels) pairs.")
    if len(spec[0].shape) == 4:
        dataset = dataset.unbatch() if limit is not None else dataset
    if limit is not None or len(spec[0].shape) == 3:
        dataset = (dataset.take(limit) if limit is not None else dataset).batch(batch_size)
    one_hot = len(dataset.element_spec[1].shape) == 2
    dataset = dataset.map(lambda x, y, *_: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE), one_hot


def _quantize_twin(twin, tfmot, tf_keras):
    """Annotates every layer except preprocessing, applies the default 8-bit scheme (BN folded)."""
    quantization = tfmot.quantization.keras
    pass_through = _pass_through_config(quantization)

    def annotate(layer):
        kind = type(layer).__name__
        if kind in _FLOAT_LAYERS:
            return layer
        if kind in _PASS_THROUGH_LAYERS:
            return quantization.quantize_annotate_layer(layer, quantize_config=pass_through)
        return quantization.quantize_annotate_layer(layer)

    annotated = tf_keras.models.clone_model(twin, clone_function=annotate)
    annotated.set_weights(twin.get_weights())
    with quantization.quantize_scope({"PassThroughQuantizeConfig": type(pass_through)}):
        return quantization.quantize_apply(annotated)


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
