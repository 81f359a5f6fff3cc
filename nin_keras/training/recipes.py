"""Training recipes as data, and the optimizer / learning-rate schedule they describe.

* "paper": the NIN paper's SGD (momentum 0.9, weight decay 1e-4, learning rate divided by 10 in steps) with
  the learning rate 0.1 that BatchNormalization allows.
* "paper_no_bn": the same at learning rate 0.01, for the paper's network without BatchNormalization.
  (`train(recipe="paper")` switches to it by itself when the model has no BatchNormalization layer.)
* "adam": Adam at 1e-3 with cosine decay, for quick runs.

Arguments given to `train` (optimizer, learning_rate, schedule, weight_decay, momentum) override the recipe's.
Weight decay is Keras' decoupled decay (each step `w -= lr * weight_decay * w`), which for SGD without momentum
equals the paper's L2 term; with momentum it is applied outside the momentum buffer.
"""

from __future__ import annotations

import dataclasses

import keras

from nin_keras.checks import check_choice, check_float
from nin_keras.choices import OPTIMIZERS, RECIPE_NAMES, SCHEDULES, check_same


@dataclasses.dataclass(frozen=True)
class Recipe:
    """An optimizer with its hyper-parameters and learning-rate schedule.

    Attributes:
        name: recipe name.
        optimizer: "sgd" or "adam".
        learning_rate: initial learning rate.
        momentum: SGD momentum (ignored by Adam).
        weight_decay: decoupled weight decay; 0 turns it off.
        schedule: "step" (multiply by `decay_factor` at each fraction of training in `decay_at`),
            "cosine" (cosine decay to 0 over the run) or "constant".
        decay_at: fractions of all training steps where the step schedule decays.
        decay_factor: factor of each step decay.
        description: one line for humans.
    """

    name: str
    optimizer: str
    learning_rate: float
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "step"
    decay_at: tuple = (0.5, 0.75)
    decay_factor: float = 0.1
    description: str = ""

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


RECIPES: dict[str, Recipe] = {
    "paper": Recipe(
        name="paper", optimizer="sgd", learning_rate=0.1, momentum=0.9, weight_decay=1e-4, schedule="step",
        description="NIN paper SGD: momentum 0.9, weight decay 1e-4, lr 0.1 (with BN), x0.1 at 50% and 75%",
    ),
    "paper_no_bn": Recipe(
        name="paper_no_bn", optimizer="sgd", learning_rate=0.01, momentum=0.9, weight_decay=1e-4,
        schedule="step",
        description="NIN paper SGD without BN: momentum 0.9, weight decay 1e-4, lr 0.01, x0.1 at 50% and 75%",
    ),
    "adam": Recipe(
        name="adam", optimizer="adam", learning_rate=1e-3, momentum=0.0, weight_decay=0.0, schedule="cosine",
        description="Adam lr 1e-3 with cosine decay: quick runs",
    ),
}
check_same("recipes", RECIPES, RECIPE_NAMES)


def get_recipe(name: str) -> Recipe:
    """The recipe named `name`, or ValueError listing the known ones."""
    try:
        return RECIPES[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown recipe {name!r}. Known recipes: {', '.join(RECIPES)}.") from None


def resolve_recipe(recipe: str | Recipe | None, *, has_batch_norm: bool, optimizer=None, learning_rate=None,
                   momentum=None, weight_decay=None, schedule=None) -> tuple[Recipe, str]:
    """The recipe to use after the model's BN switch and explicit overrides; returns (recipe, note).

    Without a recipe: "paper" when `optimizer` is "sgd" or not given, "adam" when it is "adam".
    """
    if optimizer is not None:
        check_choice("optimizer", optimizer, OPTIMIZERS)
    if schedule is not None:
        check_choice("schedule", schedule, SCHEDULES)
    note = ""
    if recipe is None:
        recipe = "adam" if optimizer == "adam" else "paper"
    if not isinstance(recipe, Recipe):
        recipe = get_recipe(recipe)
    if recipe.name == "paper" and not has_batch_norm:
        recipe = RECIPES["paper_no_bn"]
        note = "the model has no BatchNormalization: paper recipe at lr 0.01 (paper_no_bn)"
    overrides = {key: value for key, value in dict(
        optimizer=optimizer, learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay,
        schedule=schedule).items() if value is not None}
    for key in ("learning_rate", "weight_decay", "momentum"):
        if key in overrides:  # the learning rate must be > 0, weight decay and momentum >= 0
            overrides[key] = check_float(key, overrides[key], minimum=0, min_inclusive=key != "learning_rate")
    if overrides:
        recipe = dataclasses.replace(recipe, **overrides)
    return recipe, note


def make_schedule(recipe: Recipe, total_steps: int):
    """A Keras learning-rate schedule (or a float for "constant") over `total_steps` optimizer steps."""
    total_steps = max(1, int(total_steps))
    if recipe.schedule == "constant":
        return float(recipe.learning_rate)
    if recipe.schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(float(recipe.learning_rate), decay_steps=total_steps)
    boundaries = sorted({int(round(f * total_steps)) for f in recipe.decay_at if 0 < f < 1})
    boundaries = [b for b in boundaries if 0 < b < total_steps]
    if not boundaries:
        return float(recipe.learning_rate)
    values = [float(recipe.learning_rate) * recipe.decay_factor ** i for i in range(len(boundaries) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def make_optimizer(recipe: Recipe, total_steps: int):
    """The Keras optimizer a recipe describes, with its schedule over `total_steps`."""
    schedule = make_schedule(recipe, total_steps)
    weight_decay = float(recipe.weight_decay) or None
    if recipe.optimizer == "sgd":
        return keras.optimizers.SGD(schedule, momentum=float(recipe.momentum), weight_decay=weight_decay)
    if recipe.optimizer == "adam":
        return keras.optimizers.Adam(schedule, weight_decay=weight_decay)
    raise ValueError(f"Unknown optimizer {recipe.optimizer!r}. Allowed: {', '.join(OPTIMIZERS)}.")
