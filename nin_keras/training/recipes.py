"""Training recipes as data, and what one resolves to for a run: optimizer, schedule, regularisation, augmentation.

* "budget" (the default): AdamW with a short linear warm-up, then cosine decay to 0 over exactly the steps of
  the run; label smoothing; the peak learning rate scaled to the batch size; augmentation and dropout that
  grow with the epoch budget (none for short runs, where they only slow learning down) and follow the kind of
  images (no horizontal flips for digits and characters); a peak learning rate of its own for the cifar
  variant. Its numbers were chosen on a validation split of Fashion-MNIST's training files
  (docs/benchmarks/recipe_tuning.md; tools/tune_recipe.py and tools/benchmark_accuracy.py).
* "paper": the NIN paper's SGD (momentum 0.9, weight decay 1e-4, learning rate divided by 10 in steps) with
  the learning rate 0.1 that BatchNormalization allows, and the paper's augmentation at every budget.
* "paper_no_bn": the same at learning rate 0.01, for the paper's network without BatchNormalization.
  (`train(recipe="paper")` switches to it by itself when the model has no BatchNormalization layer.)
* "adam": Adam at 1e-3 with cosine decay and no augmentation.

`train` takes a recipe by name or as a `Recipe` (`dataclasses.replace(RECIPES["budget"], learning_rate=...)`;
`override` does the same with the command line's rules); its `warmup_epochs`, `augment` and `dropout` override
the recipe's for one run. Weight decay is Keras' decoupled decay (each step
`w -= lr * weight_decay * w`), which for SGD without momentum equals the paper's L2 term; with momentum or
Adam it is applied outside the optimizer's moment estimates (AdamW).
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import keras

from nin_keras.checks import check_choice, check_float
from nin_keras.choices import OPTIMIZERS, RECIPE_NAMES, SCHEDULES, check_same
from nin_keras.errors import InvalidInputError

if TYPE_CHECKING:
    from nin_keras.data.pipeline import Augmentation  # lazy: tf.data, imported where an augmentation is made

BATCH_SCALING = ("none", "linear", "sqrt")
# A warm-up starts at this fraction of the peak learning rate (the "one-cycle" convention's 1/25).
WARMUP_START = 1 / 25


@dataclasses.dataclass(frozen=True)
class BudgetLevel:
    """Augmentation and dropout for runs of at least `min_epochs` epochs.

    Short runs learn fastest without either; long runs need both to keep from over-fitting.

    Attributes:
        min_epochs: the shortest budget this level applies to.
        shift: largest random translation, as a fraction of the smaller image side (zero-pad, random crop back);
            0 turns translation off.
        flip: random horizontal flips, where the images allow them (never for digits and characters).
        dropout: the rate for every Dropout layer of the model while it trains; None keeps the model's own.
    """

    min_epochs: float
    shift: float
    flip: bool
    dropout: float | None = None


@dataclasses.dataclass(frozen=True)
class Recipe:
    """An optimizer with its hyper-parameters, learning-rate schedule, label smoothing, augmentation, dropout.

    Attributes:
        name: recipe name.
        optimizer: "sgd", "adam" or "adamw".
        learning_rate: the peak learning rate at `reference_batch_size` images per step.
        momentum: SGD momentum (ignored by Adam/AdamW).
        weight_decay: decoupled weight decay; 0 turns it off.
        schedule: "step" (multiply by `decay_factor` at each fraction of training in `decay_at`),
            "cosine" (cosine decay to 0 over the run) or "constant".
        decay_at: fractions of all training steps where the step schedule decays.
        decay_factor: factor of each step decay.
        warmup: fraction of the run's steps spent warming the learning rate up linearly to its peak (cosine
            schedule only).
        label_smoothing: in [0, 1).
        batch_scaling: how the peak learning rate follows the batch size: "none", "linear" or "sqrt".
        reference_batch_size: the batch size `learning_rate` is meant for.
        by_budget: `BudgetLevel`s (augmentation, dropout), by rising `min_epochs`; the last one a run's budget
            reaches applies.
        by_variant: NIN variant name -> {field: value}: the values this recipe was tuned to for that variant
            (`nin_keras.models.variant_of` tells a model's); they replace the recipe's own for such a model,
            except the fields a caller changed from the recipe of the same name in RECIPES (`changed_fields`).
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
    warmup: float = 0.0
    label_smoothing: float = 0.0
    batch_scaling: str = "none"
    reference_batch_size: int = 128
    by_budget: tuple = ()
    by_variant: dict = dataclasses.field(default_factory=dict)
    description: str = ""

    def __post_init__(self):
        _check_fields(self)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_fields(recipe: Recipe) -> None:
    """Refuses values no optimizer or schedule can use (a recipe is checked whenever one is made or replaced).

    Raises:
        InvalidInputError: an unknown optimizer, schedule or batch scaling; a learning rate <= 0; a negative
            weight decay or momentum; label smoothing outside [0, 1).
    """
    check_choice("optimizer", recipe.optimizer, OPTIMIZERS)
    check_choice("schedule", recipe.schedule, SCHEDULES)
    check_choice("batch_scaling", recipe.batch_scaling, BATCH_SCALING)
    check_float("learning_rate", recipe.learning_rate, minimum=0, min_inclusive=False)
    check_float("weight_decay", recipe.weight_decay, minimum=0)
    check_float("momentum", recipe.momentum, minimum=0)
    check_float("label_smoothing", recipe.label_smoothing, minimum=0, maximum=1, max_inclusive=False)


# The paper's augmentation: shift by an eighth of the side (4 pixels at 32x32), flips where allowed; the
# model's own dropout.
PAPER_LEVEL = BudgetLevel(min_epochs=0, shift=1 / 8, flip=True)

RECIPES: dict[str, Recipe] = {
    "budget": Recipe(
        name="budget", optimizer="adamw", learning_rate=3e-3, weight_decay=5e-4, schedule="cosine", warmup=0.1,
        label_smoothing=0.1, batch_scaling="sqrt",
        by_budget=(BudgetLevel(min_epochs=0, shift=0.0, flip=False, dropout=0.0),
                   BudgetLevel(min_epochs=10, shift=1 / 14, flip=True, dropout=0.25)),
        # The wider cifar variant (192 channels) learned faster at twice the peak rate, on Fashion-MNIST padded
        # to 32x32 (docs/benchmarks/recipe_tuning.md); CIFAR itself was not at hand to check.
        by_variant={"cifar": {"learning_rate": 6e-3}},
        description="AdamW, warm-up then cosine to 0 over the run, label smoothing 0.1, augmentation and dropout "
                    "by budget",
    ),
    "paper": Recipe(
        name="paper", optimizer="sgd", learning_rate=0.1, momentum=0.9, weight_decay=1e-4, schedule="step",
        by_budget=(PAPER_LEVEL,),
        description="NIN paper SGD: momentum 0.9, weight decay 1e-4, lr 0.1 (with BN), x0.1 at 50% and 75%",
    ),
    "paper_no_bn": Recipe(
        name="paper_no_bn", optimizer="sgd", learning_rate=0.01, momentum=0.9, weight_decay=1e-4,
        schedule="step", by_budget=(PAPER_LEVEL,),
        description="NIN paper SGD without BN: momentum 0.9, weight decay 1e-4, lr 0.01, x0.1 at 50% and 75%",
    ),
    "adam": Recipe(
        name="adam", optimizer="adam", learning_rate=1e-3, momentum=0.0, weight_decay=0.0, schedule="cosine",
        description="Adam lr 1e-3 with cosine decay, no augmentation, the model's dropout",
    ),
}
check_same("recipes", RECIPES, RECIPE_NAMES)
DEFAULT_RECIPE = "budget"


def get_recipe(recipe: str | Recipe) -> Recipe:
    """The recipe named `recipe` (a `Recipe` is returned as it is).

    Raises:
        InvalidInputError: an unknown name (the error lists the known ones), or neither a name nor a `Recipe`.
    """
    if isinstance(recipe, Recipe):
        return recipe
    try:
        return RECIPES[recipe]
    except (KeyError, TypeError):
        raise InvalidInputError(f"Unknown recipe {recipe!r}. Known recipes: {', '.join(RECIPES)} (or pass a "
                                "nin_keras.training.Recipe).") from None


def default_recipe(optimizer: str | None = None) -> str:
    """The recipe an optimizer alone stands for: "paper" for "sgd", "adam" for "adam", else "budget"."""
    return {"sgd": "paper", "adam": "adam"}.get(optimizer, DEFAULT_RECIPE)


def override(recipe: str | Recipe, **fields) -> Recipe:
    """`recipe` with the `fields` that are not None replaced (the command line's overrides).

    A learning rate given here is the peak rate as it is, at any batch size (no batch scaling).

    Raises:
        InvalidInputError: a value the recipe cannot take (see `Recipe`).
    """
    fields = {key: value for key, value in fields.items() if value is not None}
    if "learning_rate" in fields:
        fields["batch_scaling"] = "none"
    return dataclasses.replace(get_recipe(recipe), **fields) if fields else get_recipe(recipe)


def changed_fields(recipe: Recipe) -> dict:
    """{field: value} where `recipe` differs from the recipe of its name in RECIPES ({} for another name)."""
    registered = RECIPES.get(recipe.name)
    if registered is None:
        return {}
    return {field.name: getattr(recipe, field.name) for field in dataclasses.fields(Recipe)
            if getattr(recipe, field.name) != getattr(registered, field.name)}


@dataclasses.dataclass(frozen=True)
class Adapted:
    """A recipe adapted to a model (`adapt_recipe`), and what was adapted.

    Attributes:
        recipe: the recipe to plan.
        switched_from: the recipe asked for when another one was used instead ("paper" for a model without
            BatchNormalization), or None.
        variant: the model's NIN variant, or None.
        tuned: {field: value} the recipe's values for that variant put in.
    """

    recipe: Recipe
    switched_from: str | None = None
    variant: str | None = None
    tuned: dict = dataclasses.field(default_factory=dict)


def without_batch_norm(recipe: Recipe, has_batch_norm: bool) -> Recipe:
    """"paper" becomes "paper_no_bn" (lr 0.01) for a model without BatchNormalization, keeping what the caller
    changed; any other recipe stays as it is."""
    if recipe.name != "paper" or has_batch_norm:
        return recipe
    return dataclasses.replace(RECIPES["paper_no_bn"], **changed_fields(recipe))


def tuned_for_variant(recipe: Recipe, variant: str | None) -> dict:
    """{field: value} of `recipe.by_variant[variant]` that the caller did not change (those win)."""
    changed = changed_fields(recipe)
    return {key: value for key, value in recipe.by_variant.get(variant, {}).items() if key not in changed}


def adapt_recipe(recipe: str | Recipe, *, has_batch_norm: bool, variant: str | None = None) -> Adapted:
    """The recipe for a model: its no-BatchNormalization switch, then the values tuned for its variant."""
    asked = get_recipe(recipe)
    used = without_batch_norm(asked, has_batch_norm)
    tuned = tuned_for_variant(used, variant)
    return Adapted(dataclasses.replace(used, **tuned) if tuned else used,
                   switched_from=asked.name if used.name != asked.name else None, variant=variant, tuned=tuned)


@dataclasses.dataclass(frozen=True)
class RecipePlan:
    """A recipe resolved for one run: the numbers `fit` will use.

    Attributes:
        recipe: the recipe (after overrides).
        epochs, steps_per_epoch, batch_size: the run's budget and batch.
        total_steps: optimizer steps of the whole run; the schedule spans exactly these.
        peak_learning_rate: the recipe's rate scaled to `batch_size`.
        warmup_steps: steps of linear warm-up (0: none).
        augmentation: the `Augmentation` `train` adds to the training pipeline, or None.
        augmentation_note: why that augmentation (or none).
        dropout: the rate `train` gives every Dropout layer of the model it fits; None keeps the model's.
    """

    recipe: Recipe
    epochs: int
    steps_per_epoch: int
    batch_size: int | None
    total_steps: int
    peak_learning_rate: float
    warmup_steps: int
    augmentation: Augmentation | None
    augmentation_note: str
    dropout: float | None = None

    def describe(self) -> str:
        """One line: optimizer, peak lr, schedule, warm-up, label smoothing, weight decay, augmentation, dropout."""
        r = self.recipe
        optimizer = {"sgd": f"SGD momentum {r.momentum:g}", "adam": "Adam", "adamw": "AdamW"}[r.optimizer]
        batch = f" (batch {self.batch_size})" if self.batch_size else ""
        schedule = {"cosine": "cosine to 0", "constant": "constant",
                    "step": "x" + f"{r.decay_factor:g} at " + "/".join(f"{f:.0%}" for f in r.decay_at)}[r.schedule]
        warmup = f"{self.warmup_steps}-step warm-up then " if self.warmup_steps else ""
        augmentation = self.augmentation.summary() if self.augmentation is not None else "none"
        dropout = "the model's" if self.dropout is None else f"{self.dropout:g}"
        return (f"recipe {r.name}: {optimizer}, peak lr {self.peak_learning_rate:.3g}{batch}, {warmup}{schedule} "
                f"over {self.total_steps} steps, label smoothing {r.label_smoothing:g}, weight decay "
                f"{r.weight_decay:g}, augmentation {augmentation}, dropout {dropout}")

    def as_dict(self) -> dict:
        """The recipe part of config.json."""
        return {**self.recipe.as_dict(), "epochs": self.epochs, "steps_per_epoch": self.steps_per_epoch,
                "batch_size": self.batch_size, "total_steps": self.total_steps,
                "peak_learning_rate": self.peak_learning_rate, "warmup_steps": self.warmup_steps,
                "augmentation_used": self.augmentation.describe() if self.augmentation is not None else None,
                "augmentation_note": self.augmentation_note, "dropout_used": self.dropout,
                "summary": self.describe()}


def recipe_note(adapted: Adapted) -> str:
    """What was switched or tuned for the model, in words ("" when nothing)."""
    parts = []
    if adapted.switched_from is not None:
        parts.append(f"the model has no BatchNormalization: {adapted.switched_from} recipe at lr "
                     f"{adapted.recipe.learning_rate:g} ({adapted.recipe.name})")
    if adapted.tuned:
        parts.append(f"the {adapted.variant} variant's tuned " +
                     ", ".join(f"{key} {value:g}" for key, value in adapted.tuned.items()))
    return "; ".join(parts)


def recipe_line(plan: RecipePlan, adapted: Adapted | None = None) -> str:
    """The line that says how a run trains: the plan (`RecipePlan.describe`), then what was adapted to the
    model, in parentheses."""
    note = recipe_note(adapted) if adapted is not None else ""
    return plan.describe() + (f" ({note})" if note else "")


def plan_recipe(recipe: Recipe, *, epochs: int, steps_per_epoch: int, batch_size: int | None,
                warmup_epochs: float | None = None, augment="auto", dropout="auto", image_shape=None,
                flips_allowed: bool | None = None, data_augmented: bool = False) -> RecipePlan:
    """Resolves `recipe` for a run of `epochs` x `steps_per_epoch` steps at `batch_size` images per step.

    Args:
        warmup_epochs: overrides the recipe's warm-up (epochs; must be shorter than the run).
        augment: "auto" (the recipe's level for this budget), True (the paper's: an eighth of the side, flips
            where allowed) or False (none).
        dropout: "auto" (the recipe's rate for this budget), None (the model's own) or a rate in [0, 1).
        image_shape: (height, width, channels), for the translation in pixels.
        flips_allowed: whether horizontal flips keep the images' meaning; None (unknown) means no flips.
        data_augmented: the training data is augmented already (`load_dataset(augment=True)`): add nothing.

    Raises:
        InvalidInputError: a warm-up not shorter than the run, or `warmup_epochs` with a schedule other than cosine.
    """
    total_steps = max(1, int(epochs) * int(steps_per_epoch))
    warmup = recipe.warmup
    if warmup_epochs is not None:
        warmup_epochs = check_float("warmup_epochs", warmup_epochs, minimum=0)
        if warmup_epochs >= epochs:
            raise InvalidInputError(f"warmup_epochs={warmup_epochs:g} is not shorter than the run ({epochs} epochs): "
                                    "give a warm-up of less than the run's epochs, or 0 for none.")
        warmup = warmup_epochs / epochs
    if warmup > 0 and recipe.schedule != "cosine":
        if warmup_epochs is not None:
            raise InvalidInputError(f"A warm-up needs the cosine schedule; this run's schedule is "
                                    f"{recipe.schedule!r}: pass schedule='cosine' or no warm-up.")
        warmup = 0.0  # the recipe's warm-up belongs to its cosine schedule, which an override replaced
    recipe = dataclasses.replace(recipe, warmup=warmup)
    peak = recipe.learning_rate * _batch_factor(recipe, batch_size)
    warmup_steps = int(round(warmup * total_steps))
    level = _level(recipe, epochs)
    augmentation, note = _augmentation(recipe, level, epochs, augment, image_shape, flips_allowed, data_augmented)
    if dropout == "auto":
        dropout = level.dropout if level is not None else None
    elif dropout is not None:
        dropout = check_float("dropout", dropout, minimum=0, maximum=1, max_inclusive=False)
    return RecipePlan(recipe, int(epochs), int(steps_per_epoch), batch_size, total_steps, float(peak), warmup_steps,
                      augmentation, note, dropout)


def _level(recipe: Recipe, epochs: int) -> BudgetLevel | None:
    """The recipe's `BudgetLevel` for a run of `epochs`: the last one the budget reaches, or None."""
    levels = [level for level in recipe.by_budget if level.min_epochs <= epochs]
    return levels[-1] if levels else None


def _batch_factor(recipe: Recipe, batch_size: int | None) -> float:
    check_choice("batch_scaling", recipe.batch_scaling, BATCH_SCALING)
    if batch_size is None or recipe.batch_scaling == "none":
        return 1.0
    ratio = batch_size / recipe.reference_batch_size
    return ratio if recipe.batch_scaling == "linear" else math.sqrt(ratio)


def _augmentation(recipe: Recipe, level, epochs: int, augment, image_shape, flips_allowed, data_augmented):
    check_choice("augment", augment, ("auto", True, False))
    if augment is False:
        return None, "turned off"
    if data_augmented:
        return None, "the training data is augmented already (load_dataset(augment=True)): nothing added"
    if augment is True:
        level, why = PAPER_LEVEL, "asked for: the paper's"
    else:
        if level is None:
            return None, f"recipe {recipe.name}: none"
        why = f"recipe {recipe.name} at {epochs} epoch{'s' if epochs != 1 else ''}"
    side = min(image_shape[:2]) if image_shape else 0
    pad = int(round(level.shift * side))
    flip = bool(level.flip and flips_allowed)
    if level.flip and not flips_allowed:
        why += ("; no flips: these images are not mirror-symmetric (digits, characters)" if flips_allowed is False
                else "; no flips: the data does not say whether mirrored images keep their class")
    if pad == 0 and not flip:
        return None, why + ": none"
    from nin_keras.data.pipeline import Augmentation  # lazy: tf.data; the recipes import on any backend

    return Augmentation(pad=pad, flip=flip), why


def make_schedule(plan_or_recipe, total_steps: int | None = None):
    """A Keras learning-rate schedule (or a float for "constant") for a `RecipePlan`.

    A bare `Recipe` with `total_steps` is planned first (no batch scaling: its rate is used as written).
    """
    plan = plan_or_recipe
    if isinstance(plan, Recipe):
        plan = plan_recipe(plan, epochs=1, steps_per_epoch=total_steps, batch_size=None, augment=False)
    recipe, total_steps, peak = plan.recipe, plan.total_steps, plan.peak_learning_rate
    if recipe.schedule == "constant":
        return float(peak)
    if recipe.schedule == "cosine":
        if plan.warmup_steps:
            return keras.optimizers.schedules.CosineDecay(
                peak * WARMUP_START, decay_steps=max(1, total_steps - plan.warmup_steps), warmup_target=peak,
                warmup_steps=plan.warmup_steps)
        return keras.optimizers.schedules.CosineDecay(float(peak), decay_steps=total_steps)
    boundaries = sorted({int(round(f * total_steps)) for f in recipe.decay_at if 0 < f < 1})
    boundaries = [b for b in boundaries if 0 < b < total_steps]
    if not boundaries:
        return float(peak)
    values = [float(peak) * recipe.decay_factor ** i for i in range(len(boundaries) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def make_optimizer(plan: RecipePlan):
    """The Keras optimizer a planned recipe describes, with its schedule over the run."""
    recipe = plan.recipe
    schedule = make_schedule(plan)
    weight_decay = float(recipe.weight_decay) or None
    if recipe.optimizer == "sgd":
        return keras.optimizers.SGD(schedule, momentum=float(recipe.momentum), weight_decay=weight_decay)
    if recipe.optimizer == "adam":
        return keras.optimizers.Adam(schedule, weight_decay=weight_decay)
    if recipe.optimizer == "adamw":
        return keras.optimizers.AdamW(schedule, weight_decay=float(recipe.weight_decay))
    raise InvalidInputError(f"Unknown optimizer {recipe.optimizer!r}. Allowed: {', '.join(OPTIMIZERS)}.")
