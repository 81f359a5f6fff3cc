"""`train`: fit a model on a dataset into a run folder (best model, history, curves, config), resumable.

The run folder (default `runs/<name>/`):

    model.keras     best model so far (by `monitor`), float32, loads with nin_keras.load_model
    history.csv     one row per completed epoch (1-based `epoch`, loss/accuracy, val_*, learning_rate)
    curves.png      loss and accuracy, train and validation
    config.json     every argument, seed, package versions, device, precision and strategy chosen and why,
                    status, best and test metrics
    backup/         training state after the last completed epoch (what `resume=True` continues from)
    logs/           TensorBoard event files (append-only logs; everything else is written atomically)
"""

from __future__ import annotations

import dataclasses
import datetime
import numbers
import os
import platform
import re
import shutil
import sys
import warnings
from pathlib import Path

from nin_keras._atomic import write_json
from nin_keras.errors import NinKerasError
from nin_keras.training.precision import PRECISIONS, PrecisionChoice, choose_precision, clone_with_policy
from nin_keras.training.recipes import Recipe, make_optimizer, resolve_recipe
from nin_keras.training.strategy import STRATEGIES, StrategyChoice, describe_strategy, get_strategy

RUN_FILES = {
    "model": "model.keras",
    "history": "history.csv",
    "curves": "curves.png",
    "config": "config.json",
    "backup": "backup",
    "logs": "logs",
}


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
            that file was not written, e.g. no curves without nin_keras.viz).
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


def _check_positive_int(name, value, *, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1; received {value!r}.")
    return int(value)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("._") or "run"


def _has_batch_norm(model) -> bool:
    import keras

    return any(isinstance(layer, keras.layers.BatchNormalization) for layer in model._flatten_layers())


def _output_is_probabilities(model) -> bool:
    """True unless the output layer's activation is linear (logits)."""
    import keras

    layer = model.layers[-1] if model.layers else None
    activation = getattr(layer, "activation", None)
    if activation is None:
        return True
    name = getattr(activation, "__name__", str(activation))
    return name not in ("linear",) and activation is not keras.activations.linear


def _resolve_tensorboard(value) -> bool:
    import importlib.util

    if value not in (True, False, "auto"):
        raise ValueError(f"tensorboard must be True, False or 'auto'; received {value!r}.")
    installed = importlib.util.find_spec("tensorboard") is not None
    if value is True and not installed:
        raise ValueError("tensorboard=True needs the tensorboard package: pip install tensorboard "
                         "(or pass tensorboard=False / --no-tensorboard).")
    return installed if value == "auto" else bool(value)


# --------------------------------------------------------------------------------------------------- data


@dataclasses.dataclass
class _Data:
    train: object
    validation: object
    test: object
    name: str
    num_classes: int | None
    input_shape: tuple | None
    info: dict


def _prepare_data(data, model, batch_size: int) -> _Data:
    import numpy as np
    import tensorflow as tf

    from nin_keras.data.splits import DatasetSplits

    from nin_keras.models import check_data_fits, check_image_classifier

    check_data_fits(model, data)
    if isinstance(data, DatasetSplits):
        if data.train is None:
            raise ValueError(f"Dataset {data.name!r} has no training split.")
        return _Data(data.train, data.validation, data.test, str(data.name), int(data.num_classes),
                     tuple(data.input_shape), dict(data.info or {}))
    if isinstance(data, (tuple, list)) and len(data) == 2 and not hasattr(data[0], "element_spec"):
        images, labels = np.asarray(data[0]), np.asarray(data[1]).astype("int32")
        if len(images) != len(labels) or len(images) == 0:
            raise ValueError(f"images and labels must be non-empty and of the same length; received "
                             f"{len(images)} images and {len(labels)} labels.")
        dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size).prefetch(tf.data.AUTOTUNE)
        _, classes = check_image_classifier(model)
        return _Data(dataset, None, None, "arrays", classes, tuple(images.shape[1:]),
                     {"size": int(len(images))})
    if hasattr(data, "element_spec"):
        spec = data.element_spec
        if not isinstance(spec, tuple) or len(spec) != 2:
            raise ValueError("The dataset must yield (images, labels) batches.")
        if len(spec[0].shape) != 4:
            raise ValueError(f"The dataset must be batched: (batch, height, width, channels) images; its images "
                             f"have shape {tuple(spec[0].shape)}. Call .batch(n) on it.")
        _, classes = check_image_classifier(model)
        return _Data(data, None, None, "dataset", classes, tuple(spec[0].shape[1:]), {})
    raise ValueError(
        f"data must be a DatasetSplits (nin_keras.load_dataset), a batched tf.data.Dataset of (images, labels) "
        f"or an (images, labels) pair of arrays; received {type(data).__name__}."
    )


def _one_hot(dataset, num_classes):
    import tensorflow as tf

    return dataset.map(lambda x, y: (x, tf.one_hot(tf.cast(y, tf.int32), num_classes)),
                       num_parallel_calls=tf.data.AUTOTUNE)


def _cardinality(dataset) -> int | None:
    import tensorflow as tf

    n = int(dataset.cardinality().numpy())
    if n == tf.data.INFINITE_CARDINALITY:
        return None
    if n == tf.data.UNKNOWN_CARDINALITY:
        n = sum(1 for _ in dataset)  # one pass over a finite dataset of unknown length
    return n


def _shard(dataset, steps: int | None):
    """Multi-worker: shard batches across workers (AutoShardPolicy.DATA) and repeat, for a fixed step count.

    Each batch is a global batch: the strategy splits it across all replicas, so an epoch is still `steps`
    steps. Repeating keeps every worker at the same number of steps (a worker that ran out of data first
    would leave the others waiting in a collective).
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options).repeat(), steps


def _patch_for_multiworker(model, element_spec) -> None:
    """Works around two Keras 3 problems under MultiWorkerMirroredStrategy (Keras 3.15, TF 2.21).

    1. `fit`/`evaluate` first all-reduce one input batch across workers to build the model symbolically
       (`TFTrainer._maybe_symbolic_build`); the collective reduce of the nested (images, labels) structure
       fails ("Attempt to convert a value (PerReplica...) to a Tensor"). We build from the dataset's element
       spec instead and skip that step.
    2. The step's logs are reduced with `strategy.reduce("MEAN", v, axis=0)`, which fails on scalars
       ("Invalid reduction dimension 0 for input with 0 dimensions"). The steps return each log as a
       1-element vector, which that reduction turns back into a scalar (the mean over workers).
    """
    import tensorflow as tf

    with model.distribute_strategy.scope():
        model._symbolic_build(data_batch=element_spec)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None

    def vector_logs(step):
        def wrapped(data):
            logs = step(data)
            return {key: tf.reshape(value, [1]) for key, value in logs.items()}

        return wrapped

    model.train_step = vector_logs(model.train_step)
    model.test_step = vector_logs(model.test_step)


# --------------------------------------------------------------------------------------------------- folder


def _prepare_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    config = run_dir / RUN_FILES["config"]
    if resume:
        if not config.exists():
            raise FileNotFoundError(
                f"Nothing to resume in {run_dir}: it has no {RUN_FILES['config']} (not a nin-keras run folder, or "
                "the run never started). Drop --resume to start a new run."
            )
        return
    if run_dir.exists() and not run_dir.is_dir():
        raise NotADirectoryError(f"Run folder {run_dir} exists and is not a folder.")
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"Run folder {run_dir} already exists. Pass --resume (resume=True) to continue that run, "
                "--overwrite (overwrite=True) to replace it, or choose another --out/--name."
            )
        if not config.exists():
            raise FileExistsError(
                f"Refusing to overwrite {run_dir}: it is not empty and has no {RUN_FILES['config']}, so it does not "
                "look like a nin-keras run folder. Choose another --out."
            )
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


def _read_config(run_dir: Path) -> dict:
    import json

    try:
        return json.loads((run_dir / RUN_FILES["config"]).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


# --------------------------------------------------------------------------------------------------- facts


def _versions() -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    from nin_keras import __version__

    return {"python": platform.python_version(), "nin_keras": __version__, "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": np.__version__}


def device_facts() -> dict:
    """CPU model, core count and GPUs of this machine (for run configs and benchmark reports)."""
    import tensorflow as tf

    from nin_keras.machine import cpu_model

    gpus = []
    for device in tf.config.list_physical_devices("GPU"):
        try:
            gpus.append(tf.config.experimental.get_device_details(device).get("device_name", device.name))
        except Exception:  # noqa: BLE001
            gpus.append(device.name)
    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "gpus": gpus, "platform": platform.platform()}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------------- train


def train(model, data, *, epochs: int, recipe: str | Recipe | None = None, optimizer: str | None = None,
          learning_rate: float | None = None, momentum: float | None = None, schedule: str | None = None,
          weight_decay: float | None = None, label_smoothing: float = 0.0, out_dir=None, name: str | None = None,
          resume: bool = False, overwrite: bool = False, precision: str = "auto", strategy="auto",
          seed: int | None = None, deterministic: bool = False, monitor: str | None = None,
          early_stopping: int | None = None, tensorboard="auto", jit_compile="auto",
          steps_per_epoch: int | None = None, batch_size: int = 128, evaluate_test: bool = True,
          verbose="auto", callbacks=None) -> TrainingResult:
    """Trains `model` on `data` with `model.fit`, writing a run folder; resumable after a crash or kill.

    The model is rebuilt (cloned, weights copied) under the chosen precision inside the chosen strategy's scope;
    Keras' global dtype policy is left as it was. When training ends, `model` holds the weights of the saved
    best model (like `fit`, it is updated in place).

    Args:
        model: a Keras image classifier, e.g. `nin_keras.build_nin(...)` (functional or Sequential).
        data: a `DatasetSplits` (`nin_keras.load_dataset`; validation and test splits are used), a batched
            `tf.data.Dataset` of (images, labels), or an (images, labels) pair of arrays.
        epochs: total epochs of the run (a resumed run continues up to this number).
        recipe: "paper" (SGD momentum 0.9, lr 0.1 with BN / 0.01 without, weight decay 1e-4, lr x0.1 at 50%
            and 75% of training), "paper_no_bn" or "adam" (Adam 1e-3, cosine). Defaults to "paper", or "adam"
            when `optimizer="adam"`. See `nin_keras.training.RECIPES`.
        optimizer, learning_rate, momentum, schedule, weight_decay: override the recipe's ("sgd"|"adam";
            schedule "step"|"cosine"|"constant").
        label_smoothing: in [0, 1). Defaults to 0.
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
        verbose: Keras' fit verbosity ("auto"/1 progress bar, 2 one line per epoch, 0 silent).
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
    import keras
    import tensorflow as tf

    from nin_keras.models.io import check_image_classifier
    from nin_keras.training import callbacks as cb

    # ---- arguments
    epochs = _check_positive_int("epochs", epochs)
    batch_size = _check_positive_int("batch_size", batch_size)
    steps_per_epoch = _check_positive_int("steps_per_epoch", steps_per_epoch, allow_none=True)
    early_stopping = _check_positive_int("early_stopping", early_stopping, allow_none=True)
    if resume and overwrite:
        raise ValueError("Pass either resume=True (continue the run) or overwrite=True (start over), not both.")
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, numbers.Real) \
            or not 0 <= label_smoothing < 1:
        raise ValueError(f"label_smoothing must be a number in [0, 1); received {label_smoothing!r}.")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
        raise ValueError(f"seed must be an integer >= 0 or None; received {seed!r}.")
    if not isinstance(model, keras.Model):
        raise ValueError(f"model must be a keras.Model (e.g. nin_keras.build_nin(...)); received "
                         f"{type(model).__name__}.")
    if isinstance(precision, PrecisionChoice):
        precision_choice = precision
    else:
        if precision not in PRECISIONS:
            raise ValueError(f"Unknown precision {precision!r}. Allowed: {', '.join(PRECISIONS)}.")
        precision_choice = choose_precision(precision)
    tensorboard = _resolve_tensorboard(tensorboard)
    if isinstance(strategy, str) and strategy not in STRATEGIES:
        raise ValueError(f"Unknown strategy {strategy!r}. Allowed: {', '.join(STRATEGIES)}.")
    has_bn = _has_batch_norm(model)
    recipe_used, recipe_note = resolve_recipe(recipe, has_batch_norm=has_bn, optimizer=optimizer,
                                              learning_rate=learning_rate, momentum=momentum,
                                              weight_decay=weight_decay, schedule=schedule)
    check_image_classifier(model)
    prepared = _prepare_data(data, model, batch_size)

    # ---- strategy (may already exist: MultiWorkerMirroredStrategy must be created before any TF op)
    if isinstance(strategy, StrategyChoice):
        strategy_choice = strategy
    elif isinstance(strategy, tf.distribute.Strategy):
        strategy_choice = describe_strategy(strategy)
    else:
        strategy_choice = get_strategy(strategy)

    train_ds, val_ds, test_ds = prepared.train, prepared.validation, prepared.test
    steps = steps_per_epoch or _cardinality(train_ds)
    if steps is None:
        raise ValueError("The training dataset is infinite: pass steps_per_epoch.")

    # ---- run folder
    if out_dir is None:
        name = _safe_name(name or f"{model.name}-{prepared.name}")
        out_dir = Path("runs") / name
    run_dir = Path(out_dir)
    if strategy_choice.num_workers > 1 and not strategy_choice.is_chief:
        # Other workers keep their own copy (backup included: every worker must resume at the same epoch).
        run_dir = run_dir.parent / f"{run_dir.name}.worker-{strategy_choice.worker_index}"
    _prepare_run_dir(run_dir, resume=resume, overwrite=overwrite)
    paths = {key: run_dir / value for key, value in RUN_FILES.items()}
    previous_config = _read_config(run_dir) if resume else {}

    # ---- seed (before the clone: dropout layers draw their seeds when created)
    if seed is not None:
        keras.utils.set_random_seed(int(seed))

    # ---- data for this strategy / loss
    num_classes = prepared.num_classes or check_image_classifier(model)[1]
    validation_steps = None
    if steps_per_epoch is not None:
        train_ds = train_ds.repeat()
    if strategy_choice.num_workers > 1:
        train_ds, steps = _shard(train_ds, steps)
        if val_ds is not None:
            val_ds, validation_steps = _shard(val_ds, _cardinality(val_ds))
    if label_smoothing > 0:
        train_ds = _one_hot(train_ds, num_classes)
        val_ds = _one_hot(val_ds, num_classes) if val_ds is not None else None
        test_ds = _one_hot(test_ds, num_classes) if test_ds is not None else None
    if monitor is None:
        monitor = "val_accuracy" if val_ds is not None else "accuracy"

    def make_loss_and_metrics():
        from_logits = not _output_is_probabilities(model)
        if label_smoothing > 0:
            return (keras.losses.CategoricalCrossentropy(from_logits=from_logits, label_smoothing=label_smoothing),
                    [keras.metrics.CategoricalAccuracy(name="accuracy")])
        return (keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
                [keras.metrics.SparseCategoricalAccuracy(name="accuracy")])

    # ---- the model under the chosen precision and strategy, and a float32 twin to save
    policy = precision_choice.policy
    with strategy_choice.strategy.scope():
        train_model = clone_with_policy(model, policy)
        optimizer_obj = make_optimizer(recipe_used, steps * epochs)
        if policy == "mixed_float16":
            optimizer_obj = keras.optimizers.LossScaleOptimizer(optimizer_obj)
        loss, metrics = make_loss_and_metrics()
        train_model.compile(optimizer=optimizer_obj, loss=loss, metrics=metrics, jit_compile=jit_compile)
    if strategy_choice.num_workers > 1:
        _patch_for_multiworker(train_model, train_ds.element_spec)
    twin = clone_with_policy(model, "float32")

    # ---- resume state
    backup_meta = cb.read_backup_metadata(paths["backup"]) if resume else None
    rows = list(backup_meta.get("history", [])) if backup_meta else []
    best_prev = (backup_meta or {}).get("best") or {}
    initial_epoch = int(backup_meta["epoch"]) if backup_meta else 0
    if resume and backup_meta is None:
        warnings.warn(f"{run_dir} has no backup (no epoch had finished): starting the run from epoch 1.",
                      stacklevel=2)

    guard = cb.NaNGuard()
    history_cb = cb.HistoryCSV(paths["history"], rows=rows)
    saver = cb.BestModelSaver(paths["model"], twin, monitor=monitor, guard=guard,
                              best=best_prev.get("value"), best_epoch=best_prev.get("epoch"))
    if best_prev.get("metrics"):
        saver.best_logs = dict(best_prev["metrics"])

    def backup_state():
        return {"history": history_cb.rows,
                "best": {"epoch": saver.best_epoch, "value": saver.best, "monitor": monitor,
                         "metrics": saver.best_logs}}

    backup = cb.AtomicBackupAndRestore(paths["backup"], guard=guard, extra_state=backup_state)
    callback_list = [guard, history_cb, saver, backup]
    if tensorboard:
        callback_list.append(cb.tensorboard_callback(paths["logs"]))
    if early_stopping:
        callback_list.append(keras.callbacks.EarlyStopping(monitor=monitor, patience=early_stopping,
                                                           mode=saver.mode))
    callback_list.extend(callbacks or [])

    # ---- config
    arguments = {
        "epochs": epochs, "recipe": recipe_used.name, "optimizer": recipe_used.optimizer,
        "learning_rate": recipe_used.learning_rate, "momentum": recipe_used.momentum,
        "schedule": recipe_used.schedule, "weight_decay": recipe_used.weight_decay,
        "label_smoothing": float(label_smoothing), "out_dir": str(run_dir), "name": name, "resume": bool(resume),
        "overwrite": bool(overwrite), "precision": precision_choice.requested, "strategy": strategy_choice.requested,
        "seed": seed, "deterministic": bool(deterministic), "monitor": monitor, "early_stopping": early_stopping,
        "tensorboard": bool(tensorboard), "jit_compile": jit_compile, "steps_per_epoch": steps_per_epoch,
        "batch_size": batch_size, "evaluate_test": bool(evaluate_test),
    }
    sessions = list(previous_config.get("sessions", []))
    sessions.append({"started": _now(), "initial_epoch": initial_epoch, "argv": list(sys.argv)})
    config = {
        "status": "running",
        "arguments": arguments,
        "recipe": {**recipe_used.as_dict(), "note": recipe_note},
        "seed": seed,
        "deterministic": bool(deterministic),
        "precision": {**precision_choice.as_dict()},
        "strategy": strategy_choice.as_dict(),
        "dataset": {"name": prepared.name, "num_classes": num_classes,
                    "input_shape": list(prepared.input_shape or ()), "info": prepared.info,
                    "steps_per_epoch": steps},
        "model": {"name": model.name, "params": int(model.count_params()), "batch_norm": has_bn,
                  "input_shape": list(model.input_shape[1:]), "outputs": int(model.output_shape[-1])},
        "versions": _versions(),
        "device": device_facts(),
        "files": {key: value for key, value in RUN_FILES.items()},
        "sessions": sessions,
    }
    write_json(paths["config"], config)

    # ---- fit
    from tensorflow.python.framework import config as tf_framework_config  # (is_/disable_op_determinism)

    determinism_before = tf_framework_config.is_op_determinism_enabled()
    status = "interrupted"
    try:
        if deterministic and not determinism_before:
            tf.config.experimental.enable_op_determinism()
        train_model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=epochs,
            steps_per_epoch=steps if (steps_per_epoch is not None or strategy_choice.num_workers > 1) else None,
            validation_steps=validation_steps,
            callbacks=callback_list,
            verbose=verbose,
            shuffle=False,  # tf.data pipelines shuffle themselves
        )
        status = "diverged" if guard.tripped else "completed"
    finally:
        if deterministic and not determinism_before:
            tf_framework_config.disable_op_determinism()
        if status == "interrupted":
            config["status"] = "interrupted"
            config["sessions"][-1]["ended"] = _now()
            try:
                write_json(paths["config"], config)
            except OSError:
                pass

    stopped = None
    if guard.tripped:
        stopped = "nan"
    elif len(history_cb.rows) < epochs and history_cb.rows and history_cb.rows[-1]["epoch"] < epochs:
        stopped = "early_stopping"

    # ---- the saved model: float32, best weights; the caller's model gets them too
    best_model = None
    test_metrics = None
    if paths["model"].exists():
        from nin_keras.models.io import load_model

        best_model = load_model(paths["model"])
        try:
            model.set_weights(best_model.get_weights())
        except ValueError:
            pass
        if evaluate_test and test_ds is not None:
            loss, metrics = make_loss_and_metrics()
            best_model.compile(loss=loss, metrics=metrics)
            values = best_model.evaluate(test_ds, verbose=0, return_dict=True)
            best_model.compiled = False
            test_metrics = {"loss": float(values["loss"]), "accuracy": float(values["accuracy"])}

    history = history_cb.history
    curves = None
    if history_cb.rows:
        try:
            from nin_keras.viz import plot_training_curves
        except ImportError:
            warnings.warn("nin_keras.viz is not available: curves.png not written.", stacklevel=2)
        else:
            curves = plot_training_curves({k: v for k, v in history.items() if k not in ("epoch", "learning_rate")},
                                          paths["curves"], title=f"{model.name} on {prepared.name}")
    result_paths = {key: (path if path.exists() else None) for key, path in paths.items()}
    result_paths["curves"] = Path(curves) if curves else None

    best = None
    if saver.best is not None:
        best = {"epoch": saver.best_epoch, "monitor": monitor, "value": saver.best, "metrics": saver.best_logs}
    config["status"] = status
    config["best"] = best
    config["test"] = test_metrics
    config["epochs_completed"] = len(history_cb.rows)
    config["stopped"] = stopped
    config["sessions"][-1]["ended"] = _now()

    if guard.tripped:
        event = guard.event
        kept = (f"Kept the last good model: {paths['model']} (epoch {best['epoch']}, {monitor} {best['value']:.4f})."
                if best and paths["model"].exists() else
                "No epoch finished before that, so there is no saved model.")
        tips = [f"a lower learning rate (this run: {recipe_used.learning_rate:g}; try "
                f"{recipe_used.learning_rate / 10:g} with --lr / learning_rate=)"]
        if precision_choice.mixed:
            tips.append(f"--precision float32 (this run used {precision_choice.policy})")
        if not has_bn:
            tips.append("a model with batch normalization")
        message = (f"Training diverged: the loss became {event['loss']} at epoch {event['epoch']}, step "
                   f"{event['step']}. {kept} Try {' or '.join(tips)}.")
    elif stopped == "early_stopping":
        message = f"Stopped early after epoch {history_cb.rows[-1]['epoch']} ({monitor} stopped improving)."
    else:
        message = (f"Trained {len(history_cb.rows)} epochs ({precision_choice.policy}, "
                   f"{strategy_choice.name} strategy).")
    config["message"] = message
    write_json(paths["config"], config)

    result = TrainingResult(
        run_dir=run_dir, paths=result_paths, history=history, precision=precision_choice.policy,
        precision_reason=precision_choice.reason, strategy=strategy_choice.name,
        strategy_reason=strategy_choice.reason, best=best, test=test_metrics, stopped=stopped, message=message,
        model=best_model, initial_epoch=initial_epoch,
    )
    if guard.tripped:
        raise TrainingDivergedError(message, result=result)
    return result
