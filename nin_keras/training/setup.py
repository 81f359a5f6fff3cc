"""The model `fit` trains: the caller's model rebuilt under the chosen precision inside the strategy's scope,
compiled with the recipe's optimizer and the loss and accuracy metric that match its outputs and labels."""

from __future__ import annotations

import keras

from nin_keras.models.signature import outputs_probabilities
from nin_keras.training.precision import PrecisionChoice, clone_with_policy
from nin_keras.training.recipes import Recipe, make_optimizer
from nin_keras.training.strategy import StrategyChoice


def loss_and_metrics(model, label_smoothing: float) -> tuple:
    """(loss, [accuracy metric]) for `model`'s outputs (probabilities or logits) and the labels.

    Labels are class ids, or one-hot when `label_smoothing` > 0 (see `nin_keras.training.inputs.for_fit`).
    """
    from_logits = not outputs_probabilities(model)
    if label_smoothing > 0:
        return (keras.losses.CategoricalCrossentropy(from_logits=from_logits, label_smoothing=label_smoothing),
                [keras.metrics.CategoricalAccuracy(name="accuracy")])
    return (keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
            [keras.metrics.SparseCategoricalAccuracy(name="accuracy")])


def compile_for_training(model, *, precision: PrecisionChoice, strategy: StrategyChoice, recipe: Recipe,
                         total_steps: int, label_smoothing: float, jit_compile) -> keras.Model:
    """A compiled copy of `model` under `precision`, its variables created in `strategy`'s scope.

    Args:
        model: the caller's model (left as it is).
        precision, strategy: the choices of the run.
        recipe: optimizer and learning-rate schedule, the schedule spread over `total_steps` optimizer steps.
        label_smoothing: see `loss_and_metrics`.
        jit_compile: passed to `compile` (True, False or "auto").
    """
    with strategy.strategy.scope():
        train_model = clone_with_policy(model, precision.policy)
        optimizer = make_optimizer(recipe, total_steps)
        if precision.policy == "mixed_float16":  # float16 gradients underflow without loss scaling
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        loss, metrics = loss_and_metrics(model, label_smoothing)
        train_model.compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=jit_compile)
    return train_model
