"""`train`: fit a model on a dataset into a run folder (best model, history, curves, config), resumable.

Each step has its own module: the data (`inputs`), the run folder and its record (`run_folder`), the model
under the chosen precision and strategy (`setup`), the callbacks that make a run resumable (`callbacks`), and
how the run ended (`summary`). This module puts them in order.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import keras
import tensorflow as tf
from tensorflow.python.framework import config as tf_framework_config  # (is_/disable_op_determinism)

from nin_keras.checks import (MAX_BATCH_SIZE, MAX_COUNT, MAX_EPOCHS, MAX_TRAINING_STEPS, check_bool, check_choice,
                              check_float, check_int)
from nin_keras.data.splits import DatasetSplits
from nin_keras.display import VERBOSITY, fit_progress
from nin_keras.errors import InvalidInputError, NinKerasError
from nin_keras.formatting import safe_name
from nin_keras.models.builder import variant_of
from nin_keras.models.signature import has_batch_norm
from nin_keras.training.callbacks import run_callbacks, tensorboard_wanted
from nin_keras.training.inputs import FitSplits, batch_size_of, count_steps, for_fit, training_splits
from nin_keras.training.precision import PrecisionChoice, choose_precision, clone_with_policy
from nin_keras.training.recipes import Recipe, RecipePlan, plan_recipe, resolve_recipe
from nin_keras.training.run_folder import RunFolder
from nin_keras.training.setup import compile_for_training
from nin_keras.training.strategy import STRATEGIES, StrategyChoice, patch_for_multiworker, resolve_strategy
from nin_keras.training.summary import how_it_ended, load_saved_model, plot_curves, score_on_test


class TrainingDivergedError(NinKerasError, RuntimeError):
    """The loss became NaN or infinite. `.result` holds the run (last good model, history) as far as it got."""

    def __init__(self, message: str, result=None):
        super().__init__(message)
        self.result = result


@dataclasses.dataclass
class TrainingResult:
    """What `train` returns.

    Attributes:
        run_dir: the run folder.
        paths: file name key ("model", "history", "curves", "config", "backup", "logs") -> path (None when
            that file was not written, e.g. no curves when no epoch finished).
        history: {metric: [value per epoch]} over the whole run (resumed parts included), with "epoch".
        precision: the dtype policy trained under; precision_reason: why.
        strategy: the tf.distribute strategy name; strategy_reason: why.
        best: {"epoch", "monitor", "value", "metrics"} of the saved model, or None.
        test: {"loss", "accuracy"} of the saved model on the test split, or None.
        stopped: None (all epochs ran), "early_stopping" or "nan".
        message: a human summary of how it ended.
        model: the saved (best) model, float32, or None when no epoch finished.
        initial_epoch: epochs already done before this call (resume), 0 for a fresh run.
    """

    run_dir: Path
    paths: dict
    history: dict
    precision: str
    precision_reason: str
    strategy: str
    strategy_reason: str
    best: dict | None = None
    test: dict | None = None
    stopped: str | None = None
    message: str = ""
    model: object = None
    initial_epoch: int = 0

    def __getitem__(self, key):  # dict-style access for convenience: result["run_dir"]
        return getattr(self, key)


@contextlib.contextmanager
def _op_determinism(enabled: bool):
    """TensorFlow op determinism for the block when `enabled`, then as it was before."""
    switch = enabled and not tf_framework_config.is_op_determinism_enabled()
    if switch:
        tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if switch:
            tf_framework_config.disable_op_determinism()


def _plan(recipe: Recipe, inputs: DatasetSplits, *, epochs: int, steps_per_epoch: int | None, batch_size: int,
          warmup_epochs, augment, dropout) -> RecipePlan:
    """The recipe resolved for this run's budget, batch and images (see `plan_recipe`)."""
    info = inputs.info or {}
    return plan_recipe(recipe, epochs=epochs, steps_per_epoch=count_steps(inputs, steps_per_epoch),
                       batch_size=batch_size_of(inputs, batch_size), warmup_epochs=warmup_epochs, augment=augment,
                       dropout=dropout, image_shape=inputs.input_shape, flips_allowed=info.get("horizontal_flip_ok"),
                       data_augmented=bool(info.get("augmentation")))


def _config_record(model, inputs: FitSplits, *, plan: RecipePlan, recipe_note: str, precision: PrecisionChoice,
                   strategy: StrategyChoice, batch_norm: bool, variant: str | None, arguments: dict) -> dict:
    """What config.json says of a session's set-up (`RunFolder.start` adds the machine and the sessions)."""
    recipe = plan.recipe
    arguments = {"epochs": arguments.pop("epochs"), "recipe": recipe.name, "optimizer": recipe.optimizer,
                 "learning_rate": recipe.learning_rate, "momentum": recipe.momentum, "schedule": recipe.schedule,
                 "weight_decay": recipe.weight_decay, "label_smoothing": recipe.label_smoothing,
                 "precision": precision.requested, "strategy": strategy.requested, **arguments}
    return {
        "arguments": arguments,
        "recipe": {**plan.as_dict(), "note": recipe_note},
        "seed": arguments["seed"],
        "deterministic": arguments["deterministic"],
        "precision": precision.as_dict(),
        "strategy": strategy.as_dict(),
        "dataset": inputs.as_dict(),
        "model": {"name": model.name, "variant": variant, "params": int(model.count_params()),
                  "batch_norm": batch_norm,
                  "input_shape": list(model.input_shape[1:]), "outputs": int(model.output_shape[-1])},
    }


def train(model, data, *, epochs: int, recipe: str | Recipe | None = None, optimizer: str | None = None,
          learning_rate: float | None = None, momentum: float | None = None, schedule: str | None = None,
          weight_decay: float | None = None, label_smoothing: float | None = None,
          warmup_epochs: float | None = None, augment="auto", dropout="auto", out_dir=None, name: str | None = None,
          resume: bool = False, overwrite: bool = False, precision: str = "auto", strategy="auto",
          seed: int | None = None, deterministic: bool = False, monitor: str | None = None,
          early_stopping: int | None = None, tensorboard="auto", jit_compile="auto",
          steps_per_epoch: int | None = None, batch_size: int = 128, evaluate_test: bool = True,
          verbose="auto", callbacks=None) -> TrainingResult:
    """Trains `model` on `data` with `model.fit`, writing a run folder; resumable after a crash or kill.

    The model is rebuilt (cloned, weights copied) under the chosen precision inside the chosen strategy's scope;
    Keras' global dtype policy is left as it was. When training ends, `model` holds the weights of the saved
    best model (like `fit`, it is updated in place). The run folder's files are listed in
    `nin_keras.training.run_folder`.

    Args:
        model: a Keras image classifier, e.g. `nin_keras.build_nin(...)` (functional or Sequential).
        data: a `DatasetSplits` (`nin_keras.load_dataset`; validation and test splits are used), a
            `tf.data.Dataset` of (images, labels) (batched or not), or an (images, labels) pair of arrays.
        epochs: total epochs of the run (a resumed run continues up to this number).
        recipe: "budget" (AdamW, warm-up then cosine over exactly this run, label smoothing, augmentation
            chosen by the epoch budget and the kind of images), "paper" (SGD momentum 0.9, lr 0.1 with BN /
            0.01 without, weight decay 1e-4, lr x0.1 at 50% and 75% of training, the paper's augmentation),
            "paper_no_bn" or "adam" (Adam 1e-3, cosine). Defaults to "budget" ("paper" when
            `optimizer="sgd"`, "adam" when `optimizer="adam"`). See `nin_keras.training.RECIPES`.
        optimizer, learning_rate, momentum, schedule, weight_decay, label_smoothing: override the recipe's
            ("sgd"|"adam"|"adamw"; schedule "step"|"cosine"|"constant"; label smoothing in [0, 1)). A
            learning rate given here is the peak rate as it is; the recipe's own is scaled to the batch size.
        warmup_epochs: override the recipe's warm-up, in epochs (shorter than the run; 0 for none).
        augment: "auto" (the recipe's augmentation for this budget; nothing is added when `data` was loaded
            with `augment=True`), True (the paper's translation, and flips where the images allow them) or
            False. Augmentation runs in the tf.data pipeline, never in the model.
        dropout: the rate of the model's Dropout layers while it trains: "auto" (the recipe's for this budget;
            "budget" turns dropout off for short runs, where it only slows learning), None (the model's own) or a
            rate in [0, 1). The saved model keeps the model's own configuration; at inference dropout does
            nothing either way.
        out_dir: the run folder. Defaults to `runs/<name>`.
        name: run name for the default folder. Defaults to "<model name>-<dataset name>".
        resume: continue the interrupted (or finished) run in `out_dir` from its last completed epoch.
        overwrite: replace an existing run folder. Without `resume` or `overwrite` an existing non-empty folder
            raises FileExistsError (nothing is ever overwritten silently).
        precision: "auto", "float32", "mixed_bfloat16" or "mixed_float16" (see `choose_precision`).
        strategy: "auto", "one", "mirrored", "multiworker" (see `get_strategy`), or a `StrategyChoice` /
            `tf.distribute.Strategy` you created.
        seed: seeds Python, NumPy and TensorFlow (weight init of layers created here, dropout). Note the model's
            own initial weights come from when you built it: seed before building for a repeatable run.
        deterministic: turn on TensorFlow op determinism for the run (slower; restored afterwards).
        monitor: metric that picks the best model. Defaults to "val_accuracy" with a validation split, else
            "accuracy".
        early_stopping: stop after this many epochs without improvement of `monitor`. Defaults to None (off).
        tensorboard: write TensorBoard logs to `logs/`: True, False, or "auto" (default: when the
            `tensorboard` package is installed; TensorFlow no longer depends on it).
        jit_compile: XLA compilation, passed to `compile` ("auto" uses it on GPUs only). Defaults to "auto".
        steps_per_epoch: batches per epoch. Defaults to one pass over the training split.
        batch_size: only for (images, labels) arrays. Defaults to 128.
        evaluate_test: evaluate the saved model on the test split and record it. Defaults to True.
        verbose: "auto" or 1: a progress display that fits where the run shows (a notebook output updated in
            place, a bar in a terminal, one line per epoch in logs; see `nin_keras.display`); 2: one line per
            epoch; 0: silent.
        callbacks: extra Keras callbacks.

    Returns:
        A `TrainingResult` (run_dir, paths, history, precision and strategy chosen with reasons, best and test
        metrics, stopped, message, model).

    Raises:
        ValueError / IncompatibleModelError: bad arguments, or a model that does not fit the data.
        FileExistsError: the run folder exists and neither `resume` nor `overwrite` was given.
        FileNotFoundError: `resume` on a folder that holds no run.
        TrainingDivergedError: the loss became NaN/Inf; names the epoch and step and what to try. The last good
            model stays in model.keras; `.result` holds the rest.
    """
    # ---- arguments, all checked before any slow work
    epochs = check_int("epochs", epochs, minimum=1, maximum=MAX_EPOCHS)
    batch_size = check_int("batch_size", batch_size, minimum=1, maximum=MAX_BATCH_SIZE)
    steps_per_epoch = check_int("steps_per_epoch", steps_per_epoch, minimum=1, maximum=MAX_COUNT, allow_none=True)
    early_stopping = check_int("early_stopping", early_stopping, minimum=1, allow_none=True)
    resume, overwrite = check_bool("resume", resume), check_bool("overwrite", overwrite)
    if resume and overwrite:
        raise InvalidInputError("Pass either resume=True (continue the run) or overwrite=True (start over), not both.")
    seed = check_int("seed", seed, minimum=0, allow_none=True)
    deterministic = check_bool("deterministic", deterministic)
    evaluate_test = check_bool("evaluate_test", evaluate_test)
    check_choice("verbose", verbose, VERBOSITY)
    if not isinstance(model, keras.Model):
        raise InvalidInputError(f"model must be a keras.Model (e.g. nin_keras.build_nin(...)); received "
                                f"{type(model).__name__}.")
    precision_choice = precision if isinstance(precision, PrecisionChoice) else choose_precision(precision)
    tensorboard = tensorboard_wanted(tensorboard)
    if isinstance(strategy, str):
        check_choice("strategy", strategy, STRATEGIES)
    batch_norm, variant = has_batch_norm(model), variant_of(model)
    recipe_used, recipe_note = resolve_recipe(recipe, has_batch_norm=batch_norm, variant=variant,
                                              optimizer=optimizer, learning_rate=learning_rate, momentum=momentum,
                                              weight_decay=weight_decay, schedule=schedule,
                                              label_smoothing=label_smoothing)

    # ---- data, strategy (a MultiWorkerMirroredStrategy may exist already: it must precede any TF op), folder
    inputs = training_splits(data, model, batch_size=batch_size)
    plan = _plan(recipe_used, inputs, epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=batch_size,
                 warmup_epochs=warmup_epochs, augment=augment, dropout=dropout)
    strategy_choice = resolve_strategy(strategy)
    inputs = for_fit(inputs, steps_per_epoch=steps_per_epoch, num_workers=strategy_choice.num_workers,
                     label_smoothing=plan.recipe.label_smoothing, augmentation=plan.augmentation, seed=seed,
                     steps=plan.steps_per_epoch)
    check_int(f"epochs x steps per epoch ({epochs} x {inputs.steps}: the run's optimizer steps)",
              epochs * inputs.steps, maximum=MAX_TRAINING_STEPS)
    if monitor is None:
        monitor = "val_accuracy" if inputs.validation is not None else "accuracy"
    if out_dir is None:
        name = safe_name(name or f"{model.name}-{inputs.name}")
        out_dir = Path("runs") / name
    folder = RunFolder.for_worker(out_dir, strategy_choice)
    folder.prepare(resume=resume, overwrite=overwrite, epochs=epochs)

    # ---- the model to fit, a float32 twin to save, callbacks (seeded first: dropout draws seeds when created)
    if seed is not None:
        keras.utils.set_random_seed(seed)
    train_model = compile_for_training(model, precision=precision_choice, strategy=strategy_choice,
                                       plan=plan, jit_compile=jit_compile)
    if strategy_choice.num_workers > 1:
        patch_for_multiworker(train_model, inputs.train.element_spec)
    run = run_callbacks(folder.paths, clone_with_policy(model, "float32"), monitor=monitor, resume=resume,
                        early_stopping=early_stopping, tensorboard=tensorboard, extra=callbacks)
    run.callbacks.append(folder.promotion_callback(run.callbacks))  # a new run replaces the folder after epoch 1

    folder.start(_config_record(
        model, inputs, plan=plan, recipe_note=recipe_note, precision=precision_choice,
        strategy=strategy_choice, batch_norm=batch_norm, variant=variant,
        arguments=dict(epochs=epochs, warmup_epochs=warmup_epochs, augment=augment, dropout=dropout,
                       out_dir=str(folder.path), name=name, resume=resume, overwrite=overwrite, seed=seed,
                       deterministic=deterministic, monitor=monitor,
                       early_stopping=early_stopping, tensorboard=tensorboard, jit_compile=jit_compile,
                       steps_per_epoch=steps_per_epoch, batch_size=batch_size, evaluate_test=evaluate_test),
    ), initial_epoch=run.initial_epoch)

    # ---- fit (the first progress line says how this run will train)
    title = plan.describe() + (f" ({recipe_note})" if recipe_note else "")
    progress = fit_progress(verbose, base=keras.callbacks.Callback, title=title)
    try:
        with _op_determinism(deterministic):
            train_model.fit(inputs.train, validation_data=inputs.validation, epochs=epochs,
                            steps_per_epoch=inputs.fit_steps, validation_steps=inputs.validation_steps,
                            callbacks=run.callbacks + progress.callbacks, verbose=0,
                            shuffle=False)  # tf.data pipelines shuffle themselves
    except BaseException:
        folder.interrupted()
        raise
    finally:
        progress.close()

    # ---- the saved model (float32, best weights; the caller's model gets them too), curves, record
    saved = load_saved_model(folder.paths["model"], into=model)
    test = score_on_test(saved, inputs.test, label_smoothing=plan.recipe.label_smoothing) if evaluate_test else None
    curves = plot_curves(run.history, folder.paths["curves"], title=f"{model.name} on {inputs.name}")
    stopped, message = how_it_ended(run, epochs=epochs, model_path=folder.paths["model"], plan=plan,
                                    precision=precision_choice, strategy=strategy_choice, batch_norm=batch_norm)
    folder.finish(status="diverged" if run.guard.tripped else "completed", best=run.best, test=test,
                  epochs_completed=len(run.history.rows), stopped=stopped, message=message)

    result = TrainingResult(
        run_dir=folder.path, paths={**folder.existing_paths(), "curves": curves}, history=run.history.history,
        precision=precision_choice.policy, precision_reason=precision_choice.reason, strategy=strategy_choice.name,
        strategy_reason=strategy_choice.reason, best=run.best, test=test, stopped=stopped, message=message,
        model=saved, initial_epoch=run.initial_epoch,
    )
    if run.guard.tripped:
        raise TrainingDivergedError(message, result=result)
    return result
