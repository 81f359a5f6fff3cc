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
                              check_int)
from nin_keras.data.splits import DatasetSplits, data_errors_as_input
from nin_keras.display import VERBOSITY, fit_progress
from nin_keras.errors import InvalidInputError, NinKerasError
from nin_keras.formatting import safe_name
from nin_keras.models.builder import variant_of
from nin_keras.models.signature import has_batch_norm
from nin_keras.training.callbacks import RunCallbacks, run_callbacks, tensorboard_wanted
from nin_keras.training.distribution import check_global_batch, distribution_scope, fit_on_devices, training_strategy
from nin_keras.training.inputs import batch_size_of, count_steps, for_fit, training_splits
from nin_keras.training.precision import PrecisionChoice, choose_precision, clone_with_policy
from nin_keras.training.recipes import (DEFAULT_RECIPE, Adapted, Recipe, RecipePlan, adapt_recipe, plan_recipe,
                                        recipe_line, recipe_note)
from nin_keras.training.run_folder import RunFolder, data_fingerprint
from nin_keras.training.setup import compile_for_training
from nin_keras.training.strategy import STRATEGIES, StrategyChoice, patch_for_multiworker
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


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """How one call of `train` runs, apart from its recipe: `train`'s keywords of the same names, checked.

    config.json's "arguments" are these and the recipe's fields (`_arguments`).
    """

    epochs: int
    warmup_epochs: float | None = None
    augment: object = "auto"
    dropout: object = "auto"
    out_dir: str | None = None
    name: str | None = None
    resume: bool = False
    overwrite: bool = False
    allow_changed_data: bool = False
    seed: int | None = None
    deterministic: bool = False
    monitor: str | None = None
    early_stopping: int | None = None
    tensorboard: bool = False
    jit_compile: object = "auto"
    steps_per_epoch: int | None = None
    batch_size: int = 128
    evaluate_test: bool = True


def _checked(settings: RunSettings) -> RunSettings:
    """`settings` with every value checked (and `tensorboard` resolved), before any slow work.

    Raises:
        InvalidInputError: a value out of range or of the wrong type, or both `resume` and `overwrite`.
    """
    s = settings
    resume, overwrite = check_bool("resume", s.resume), check_bool("overwrite", s.overwrite)
    if resume and overwrite:
        raise InvalidInputError("Pass either resume=True (continue the run) or overwrite=True (start over), not both.")
    if check_bool("allow_changed_data", s.allow_changed_data) and not resume:
        raise InvalidInputError("allow_changed_data=True only applies to a resumed run: pass resume=True too.")
    return dataclasses.replace(
        s, resume=resume, overwrite=overwrite, epochs=check_int("epochs", s.epochs, minimum=1, maximum=MAX_EPOCHS),
        batch_size=check_int("batch_size", s.batch_size, minimum=1, maximum=MAX_BATCH_SIZE),
        steps_per_epoch=check_int("steps_per_epoch", s.steps_per_epoch, minimum=1, maximum=MAX_COUNT,
                                  allow_none=True),
        early_stopping=check_int("early_stopping", s.early_stopping, minimum=1, allow_none=True),
        seed=check_int("seed", s.seed, minimum=0, allow_none=True),
        deterministic=check_bool("deterministic", s.deterministic),
        evaluate_test=check_bool("evaluate_test", s.evaluate_test), tensorboard=tensorboard_wanted(s.tensorboard))


@dataclasses.dataclass
class _Session:
    """What one call of `train` works with, once its arguments are resolved."""

    model: keras.Model
    inputs: DatasetSplits
    settings: RunSettings
    adapted: Adapted
    plan: RecipePlan
    precision: PrecisionChoice
    strategy: StrategyChoice
    batch_norm: bool
    folder: RunFolder | None = None


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


def _plan(recipe: Recipe, inputs: DatasetSplits, settings: RunSettings) -> RecipePlan:
    """The recipe resolved for this run's budget, batch and images (see `plan_recipe`)."""
    info = inputs.info or {}
    return plan_recipe(recipe, epochs=settings.epochs, steps_per_epoch=count_steps(inputs, settings.steps_per_epoch),
                       batch_size=batch_size_of(inputs, settings.batch_size), warmup_epochs=settings.warmup_epochs,
                       augment=settings.augment, dropout=settings.dropout, image_shape=inputs.input_shape,
                       flips_allowed=info.get("horizontal_flip_ok"), data_augmented=bool(info.get("augmentation")))


def _arguments(session: _Session) -> dict:
    """config.json's "arguments": the recipe's fields (its name as "recipe"), the run's settings, and the
    precision and strategy asked for."""
    recipe = dataclasses.asdict(session.plan.recipe)
    recipe["recipe"] = recipe.pop("name")
    return {**recipe, **dataclasses.asdict(session.settings), "precision": session.precision.requested,
            "strategy": session.strategy.requested}


def _config_record(session: _Session, variant: str | None) -> dict:
    """What config.json says of a session's set-up (`RunFolder.start` adds the machine and the sessions)."""
    model = session.model
    return {
        "arguments": _arguments(session),
        "recipe": {**session.plan.as_dict(), "note": recipe_note(session.adapted)},
        "seed": session.settings.seed,
        "deterministic": session.settings.deterministic,
        "precision": session.precision.as_dict(),
        "strategy": session.strategy.as_dict(),
        "dataset": session.inputs.as_dict(),
        "model": {"name": model.name, "variant": variant, "params": int(model.count_params()),
                  "batch_norm": session.batch_norm,
                  "input_shape": list(model.input_shape[1:]), "outputs": int(model.output_shape[-1])},
    }


def _fit(session: _Session, *, verbose, callbacks) -> RunCallbacks:
    """Fits a compiled copy of the model into the run folder; returns the run's callbacks (history, best, ...)."""
    s, folder, plan = session.settings, session.folder, session.plan
    if s.seed is not None:  # seeded first: dropout draws seeds when created
        keras.utils.set_random_seed(s.seed)
    train_model = compile_for_training(session.model, precision=session.precision, strategy=session.strategy,
                                       plan=plan, jit_compile=s.jit_compile)
    if session.strategy.num_workers > 1:
        patch_for_multiworker(train_model, session.inputs.train.element_spec)
    run = run_callbacks(folder.paths, clone_with_policy(session.model, "float32"), monitor=s.monitor, resume=s.resume,
                        early_stopping=s.early_stopping, tensorboard=s.tensorboard, extra=callbacks)
    run.callbacks.append(folder.first_epoch_callback())  # an old run this one replaces goes after epoch 1
    folder.start(_config_record(session, session.adapted.variant), initial_epoch=run.initial_epoch)

    # the first progress line says how this run will train
    progress = fit_progress(verbose, base=keras.callbacks.Callback, title=recipe_line(plan, session.adapted))
    inputs = session.inputs
    try:
        with _op_determinism(s.deterministic), data_errors_as_input():  # a bad label further in a dataset
            train_model.fit(inputs.train, validation_data=inputs.validation, epochs=s.epochs,
                            initial_epoch=run.initial_epoch, steps_per_epoch=inputs.fit_steps,
                            validation_steps=inputs.validation_steps, callbacks=run.callbacks + progress.callbacks,
                            verbose=0, shuffle=False)  # tf.data pipelines shuffle themselves
    finally:
        progress.close()
    return run


def _result(session: _Session, run: RunCallbacks) -> TrainingResult:
    """The saved model (float32, best weights; the caller's model gets them too), curves, the record finished."""
    s, folder, plan, model = session.settings, session.folder, session.plan, session.model
    saved = load_saved_model(folder.paths["model"], into=model)
    test = None
    if s.evaluate_test:
        test = score_on_test(saved, session.inputs.test, label_smoothing=plan.recipe.label_smoothing)
    curves = plot_curves(run.history, folder.paths["curves"], title=f"{model.name} on {session.inputs.name}")
    stopped, message = how_it_ended(run, epochs=s.epochs, model_path=folder.paths["model"], plan=plan,
                                    precision=session.precision, strategy=session.strategy,
                                    batch_norm=session.batch_norm)
    folder.finish(status="diverged" if run.guard.tripped else "completed", best=run.best, test=test,
                  epochs_completed=len(run.history.rows), stopped=stopped, message=message)
    return TrainingResult(
        run_dir=folder.path, paths={**folder.existing_paths(), "curves": curves}, history=run.history.history,
        precision=session.precision.policy, precision_reason=session.precision.reason,
        strategy=session.strategy.name, strategy_reason=session.strategy.reason, best=run.best, test=test,
        stopped=stopped, message=message, model=saved, initial_epoch=run.initial_epoch,
    )


def train(model, data, *, epochs: int, recipe: str | Recipe = DEFAULT_RECIPE, warmup_epochs: float | None = None,
          augment="auto", dropout="auto", out_dir=None, name: str | None = None, resume: bool = False,
          overwrite: bool = False, allow_changed_data: bool = False, precision: str = "auto", strategy="auto",
          seed: int | None = None,
          deterministic: bool = False, monitor: str | None = None, early_stopping: int | None = None,
          tensorboard="auto", jit_compile="auto", steps_per_epoch: int | None = None, batch_size: int = 128,
          evaluate_test: bool = True, verbose="auto", callbacks=None) -> TrainingResult:
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
        recipe: the optimizer, its schedule and regularisation: a name in `nin_keras.training.RECIPES`, "budget"
            (the default: AdamW, warm-up then cosine over exactly this run, label smoothing, augmentation
            chosen by the epoch budget and the kind of images), "paper" (SGD momentum 0.9, lr 0.1 with BN /
            0.01 without, weight decay 1e-4, lr x0.1 at 50% and 75% of training, the paper's augmentation),
            "paper_no_bn" or "adam" (Adam 1e-3, cosine); or a `Recipe`, e.g.
            `dataclasses.replace(RECIPES["budget"], learning_rate=1e-3)` (its learning rate is the peak at
            `reference_batch_size`, scaled to the batch size as `batch_scaling` says; the values you change win
            over those the recipe tuned for the model's variant). "paper" switches to "paper_no_bn" for a model
            without BatchNormalization.
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
        resume: continue the interrupted (or finished) run in `out_dir` from its last completed epoch, on the
            same data and batch size: config.json records them (`data_fingerprint`: dataset, source, split
            sizes, classes, image shape, batch size, a hash of a fixed sample), and other data is refused.
        overwrite: replace an existing run folder. Without `resume` or `overwrite` an existing non-empty folder
            raises FileExistsError (nothing is ever overwritten silently).
        allow_changed_data: with `resume`, continue even though the data or batch size differ from the run's
            record (the change is recorded in the session). Defaults to False.
        precision: "auto", "float32", "mixed_bfloat16" or "mixed_float16" (see `choose_precision`).
        strategy: "auto", "one", "mirrored", "multiworker" (see `get_strategy`), or a `StrategyChoice` /
            `tf.distribute.Strategy` you created. On JAX, "auto" and "mirrored" train with
            `keras.distribution.DataParallel` over several devices (see `nin_keras.training.distribution`).
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
        InvalidInputError / IncompatibleModelError: bad arguments, or a model that does not fit the data.
        FileExistsError: the run folder exists and neither `resume` nor `overwrite` was given.
        FileNotFoundError: `resume` on a folder that holds no run.
        TrainingDivergedError: the loss became NaN/Inf; names the epoch and step and what to try. The last good
            model stays in model.keras; `.result` holds the rest.
    """
    # ---- arguments, all checked before any slow work
    settings = _checked(RunSettings(
        epochs=epochs, warmup_epochs=warmup_epochs, augment=augment, dropout=dropout, out_dir=out_dir, name=name,
        resume=resume, overwrite=overwrite, allow_changed_data=allow_changed_data, seed=seed,
        deterministic=deterministic, monitor=monitor,
        early_stopping=early_stopping, tensorboard=tensorboard, jit_compile=jit_compile,
        steps_per_epoch=steps_per_epoch, batch_size=batch_size, evaluate_test=evaluate_test))
    check_choice("verbose", verbose, VERBOSITY)
    if not isinstance(model, keras.Model):
        raise InvalidInputError(f"model must be a keras.Model (e.g. nin_keras.build_nin(...)); received "
                                f"{type(model).__name__}.")
    precision_choice = precision if isinstance(precision, PrecisionChoice) else choose_precision(precision)
    if isinstance(strategy, str):
        check_choice("strategy", strategy, STRATEGIES)
    batch_norm = has_batch_norm(model)
    adapted = adapt_recipe(recipe, has_batch_norm=batch_norm, variant=variant_of(model))

    # ---- data, strategy (a MultiWorkerMirroredStrategy may exist already: it must precede any TF op), folder
    inputs = training_splits(data, model, batch_size=settings.batch_size)  # arrays are batched with it
    plan = _plan(adapted.recipe, inputs, settings)
    fingerprint = data_fingerprint(inputs, plan.batch_size)  # what a resumed run must find unchanged
    strategy_choice = training_strategy(strategy)  # tf.distribute on TensorFlow, Keras' DataParallel on JAX
    check_global_batch(plan.batch_size, strategy_choice)
    inputs = for_fit(inputs, steps_per_epoch=settings.steps_per_epoch, num_workers=strategy_choice.num_workers,
                     label_smoothing=plan.recipe.label_smoothing, augmentation=plan.augmentation, seed=settings.seed,
                     steps=plan.steps_per_epoch)
    inputs = fit_on_devices(inputs, strategy_choice)
    check_int(f"epochs x steps per epoch ({settings.epochs} x {inputs.steps}: the run's optimizer steps)",
              settings.epochs * inputs.steps, maximum=MAX_TRAINING_STEPS)
    if monitor is None:
        monitor = "val_accuracy" if inputs.validation is not None else "accuracy"
    if out_dir is None:
        name = safe_name(name or f"{model.name}-{inputs.name}")
        out_dir = Path("runs") / name
    folder = RunFolder.for_worker(out_dir, strategy_choice)
    settings = dataclasses.replace(settings, monitor=monitor, name=name, out_dir=str(folder.path))
    session = _Session(model, inputs, settings, adapted, plan, precision_choice, strategy_choice, batch_norm, folder)

    # ---- fit, then the saved model, curves and record; a failure puts back what the folder held
    folder.prepare(resume=settings.resume, overwrite=settings.overwrite, epochs=settings.epochs,
                   fingerprint=fingerprint, allow_changed_data=settings.allow_changed_data)
    try:
        with distribution_scope(strategy_choice):  # JAX: the model is cloned, compiled and fit under it
            run = _fit(session, verbose=verbose, callbacks=callbacks)
    except BaseException:
        folder.interrupted()
        raise
    result = _result(session, run)
    if run.guard.tripped:
        raise TrainingDivergedError(result.message, result=result)
    return result
