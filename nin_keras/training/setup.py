"""The model `fit` trains: the caller's model rebuilt under the chosen precision inside the strategy's scope,
compiled with the recipe's optimizer and the loss and accuracy metric that match its outputs and labels, its
Dropout layers at the recipe's rate for the budget."""

from __future__ import annotations

import warnings

import keras
import numpy as np

from nin_keras.models.signature import outputs_probabilities
from nin_keras.training.precision import PrecisionChoice, clone_with_policy
from nin_keras.training.recipes import RecipePlan, make_optimizer
from nin_keras.training.strategy import StrategyChoice


def loss_and_metrics(model, label_smoothing: float) -> tuple:
    """(loss, [accuracy metric]) for `model`'s outputs (probabilities or logits) and the labels.

    Labels are class ids, or one-hot when `label_smoothing` > 0 (see `nin_keras.training.inputs.for_fit`).
    """
    from_logits = not outputs_are_probabilities(model)
    if label_smoothing > 0:
        return (keras.losses.CategoricalCrossentropy(from_logits=from_logits, label_smoothing=label_smoothing),
                [keras.metrics.CategoricalAccuracy(name="accuracy")])
    return (keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
            [keras.metrics.SparseCategoricalAccuracy(name="accuracy")])


UNSCALED_LOGITS_SPREAD = 100.0  # logits further apart than this before training: inputs were not scaled


def outputs_are_probabilities(model) -> bool:
    """Whether `model` outputs probabilities (the loss then takes them as they are) or logits (`from_logits`).

    Its last layer answers when it ends in softmax or sigmoid (`outputs_probabilities`). Otherwise the model
    is run once on two random raw-pixel images: rows that are all non-negative and sum to 1 are probabilities
    (a softmax written as `keras.ops.softmax`, or inside a nested model, is no layer of its own). Taking one
    kind for the other trains silently badly: probabilities read as logits barely move the loss, logits read as
    probabilities give nonsense. Logits already hundreds apart on that probe are warned about: a model that
    does not rescale raw pixels starts at a loss in the hundreds whichever loss it gets.
    """
    if outputs_probabilities(model):
        return True
    shape = [32 if side is None else int(side) for side in model.input_shape[1:]]
    probe = np.random.default_rng(0).uniform(0, 255, (2, *shape)).astype("float32")
    outputs = np.asarray(keras.ops.convert_to_numpy(model(probe, training=False)), dtype="float64")
    probabilities = bool(outputs.ndim == 2 and np.all(outputs >= 0) and np.allclose(outputs.sum(axis=-1), 1,
                                                                                      atol=1e-3))
    spread = float(np.ptp(outputs)) if outputs.size else 0.0
    if not probabilities and spread > UNSCALED_LOGITS_SPREAD:
        warnings.warn(
            f"Model {model.name!r} gives logits {spread:.0f} apart on raw-pixel images before training, so its "
            "first losses will be in the hundreds: it seems not to scale its inputs (nin-keras gives models raw "
            "0..255 pixels). Add keras.layers.Rescaling(1 / 255) after its Input (build_nin does).",
            stacklevel=3)
    return probabilities


def compile_for_training(model, *, precision: PrecisionChoice, strategy: StrategyChoice, plan: RecipePlan,
                         jit_compile) -> keras.Model:
    """A compiled copy of `model` under `precision`, its variables created in `strategy`'s scope.

    Args:
        model: the caller's model (left as it is).
        precision, strategy: the choices of the run.
        plan: the recipe resolved for the run: optimizer, learning-rate schedule over the run's steps, label
            smoothing (see `loss_and_metrics`), and the dropout rate of the copy (None keeps the model's).
        jit_compile: passed to `compile` (True, False or "auto").
    """
    with strategy.strategy.scope():
        train_model = clone_with_policy(model, precision.policy)
        if plan.dropout is not None:
            set_dropout(train_model, plan.dropout)
        optimizer = make_optimizer(plan)
        if precision.policy == "mixed_float16":  # float16 gradients underflow without loss scaling
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        loss, metrics = loss_and_metrics(model, plan.recipe.label_smoothing)
        train_model.compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=jit_compile)
    return train_model


def set_dropout(model, rate: float) -> int:
    """Sets the rate of every Dropout layer in `model` (nested models included) before it is traced; returns
    how many there were. Dropout reads its rate when the training step is traced, so this must precede `fit`."""
    count = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = float(rate)
            count += 1
        elif isinstance(layer, keras.Model):
            count += set_dropout(layer, rate)
    return count
