"""Callbacks of `train`: every file they write appears atomically.

* `NaNGuard` replaces `keras.callbacks.TerminateOnNaN`: it stops at the first non-finite loss and remembers the
  epoch and step, so `train` can say where it happened and what to try.
* `RunBackup` does the job of Keras' `BackupAndRestore` (resume after a crash or kill) through public hooks only,
  and its backup is always a consistent pair: weights go to a new file first, then a small JSON names that file
  and the epoch, each written atomically. It never backs up weights from a diverged epoch. The epoch a resumed
  run starts after is passed to `fit(initial_epoch=...)` (`RunCallbacks.initial_epoch`).
* `BestModelSaver` replaces `ModelCheckpoint(save_best_only=True)`: it copies the weights into a float32 twin
  of the model and saves that atomically, so model.keras predicts in float32 whatever precision trained it.
* `HistoryCSV` replaces `CSVLogger`: it rewrites history.csv atomically each epoch and, when a run resumes,
  keeps the rows of the epochs before the resumed one.

`run_callbacks` puts them together for one session of a run, starting from the backup when it resumes. Every
file is written in the run folder itself, which never moves while Keras has files open in it.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import io
import json
import math
import os
import re
import time
import warnings
from pathlib import Path

import keras

from nin_keras._atomic import atomic_path, write_json, write_text
from nin_keras.checks import check_choice
from nin_keras.errors import InvalidInputError, MissingDependencyError, one_line
from nin_keras.models.io import save_model


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


class NaNGuard(keras.callbacks.Callback):
    """Stops training at the first NaN or infinite loss and records where (1-based epoch and step)."""

    def __init__(self):
        super().__init__()
        self.event = None
        self._epoch = 0

    @property
    def tripped(self) -> bool:
        return self.event is not None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.event is not None or not logs or "loss" not in logs:
            return
        loss = float(logs["loss"])
        if not math.isfinite(loss):
            self.event = {"epoch": self._epoch + 1, "step": int(batch) + 1, "loss": loss}
            self.model.stop_training = True


BACKUP_METADATA = "training_metadata.json"


def read_backup_metadata(backup_dir) -> dict | None:
    """The metadata of the backup in `backup_dir` (see `RunBackup`), or None when there is none.

    Raises:
        InvalidInputError: the metadata file exists but is unreadable.
    """
    path = Path(backup_dir) / BACKUP_METADATA
    if not path.exists():
        return None
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
        int(metadata["epoch"])
    except (ValueError, KeyError, TypeError) as error:
        raise InvalidInputError(f"The backup in {backup_dir} is unreadable ({error}); start over with "
                                "overwrite=True.") from None
    return metadata


class RunBackup(keras.callbacks.Callback):
    """Backs up the model and optimizer after every epoch so that a run survives a kill at any moment; restores
    that state when training begins (a resumed run); skips backups after a NaN loss.

    The folder holds `training_metadata.json` (`{"epoch": N, "weights": "epoch-000N.weights.h5", ...}` plus
    whatever `extra_state()` returns, e.g. the history rows and best metric so far) and the weights file it
    names (model and optimizer state after N completed epochs). Put it after the callbacks whose state
    `extra_state` reads, so the backup of epoch N carries their epoch-N state. `fit` must be given
    `initial_epoch=restored epoch` (read with `read_backup_metadata`) to continue after the restored epoch.
    """

    def __init__(self, backup_dir, *, guard: NaNGuard | None = None, extra_state=None):
        super().__init__()
        self.backup_dir = Path(backup_dir)
        self.guard = guard
        self.extra_state = extra_state
        self.restored_epoch = 0

    def on_train_begin(self, logs=None):
        metadata = read_backup_metadata(self.backup_dir)
        if metadata is None:
            return
        weights = self.backup_dir / metadata.get("weights", "latest.weights.h5")
        if not weights.exists():
            raise InvalidInputError(f"The backup in {self.backup_dir} names {weights.name}, which is missing; "
                                    "start over with overwrite=True.")
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)  # its variables must exist to be loaded
        try:
            self.model.load_weights(str(weights))
        except (OSError, RuntimeError) as error:  # h5py on a truncated or damaged file
            raise InvalidInputError(
                f"The backup {weights} is damaged and cannot be read ({one_line(error, 200)}); the run cannot be "
                "resumed from it. Start over with overwrite=True (model.keras holds the best model so far)."
            ) from None
        except (ValueError, KeyError) as error:
            detail = one_line(error, 300)
            raise InvalidInputError(
                f"The backup in {self.backup_dir} does not fit this model/optimizer ({detail}). Resume with the "
                "same options as the original run, or start over with overwrite=True."
            ) from None
        self.restored_epoch = int(metadata["epoch"])

    def on_epoch_end(self, epoch, logs=None):
        if self.guard is not None and self.guard.tripped:
            return  # never replace the last good state with diverged weights
        done = epoch + 1
        self.backup_dir.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{done:04d}.weights.h5"
        with atomic_path(self.backup_dir / name, suffix=".weights.h5") as tmp:
            self.model.save_weights(str(tmp), overwrite=True)
        metadata = {"epoch": done, "weights": name}
        if self.extra_state is not None:
            metadata.update(self.extra_state())
        write_json(self.backup_dir / BACKUP_METADATA, metadata)
        for old in self.backup_dir.glob("epoch-*.weights.h5"):
            if old.name != name:
                old.unlink(missing_ok=True)


class BestModelSaver(keras.callbacks.Callback):
    """Saves the best model so far (by `monitor`) as a float32 model, atomically.

    An epoch that ties the best accuracy replaces it when its loss is lower (val_accuracy ties are frequent on
    small validation sets, and the later, lower-learning-rate epoch is usually the better model).

    Args:
        path: the .keras file.
        twin: a float32 model with the same layers and weight order as the trained one (what gets saved).
        monitor: metric name in the epoch logs, e.g. "val_accuracy".
        mode: "max", "min" or "auto" (max for accuracy-like names).
        guard: the run's NaNGuard; nothing is saved once it has tripped.
        best: best value of an earlier (resumed) part of the run, if any.
    """

    def __init__(self, path, twin, *, monitor="val_accuracy", mode="auto", guard=None, best=None, best_epoch=None):
        super().__init__()
        self.path = Path(path)
        self.twin = twin
        self.monitor = monitor
        if check_choice("mode", mode, ("max", "min", "auto")) == "auto":
            mode = "max" if ("acc" in monitor or "auc" in monitor) else "min"
        self.mode = mode
        # Ties of an accuracy-like metric are broken by the matching loss (val_accuracy -> val_loss).
        self.tie_breaker = re.sub(r"(accuracy|acc)$", "loss", monitor) if mode == "max" else None
        self.guard = guard
        self.best = best
        self.best_epoch = best_epoch
        self.best_logs = {}

    def _better(self, value, logs) -> bool:
        if self.best is None:
            return True
        if value == self.best and self.tie_breaker in logs and self.tie_breaker in self.best_logs:
            # Equal accuracy (common on small validation sets): the lower loss wins, which favours the
            # later, lower-learning-rate epochs over an early lucky one.
            return float(logs[self.tie_breaker]) < float(self.best_logs[self.tie_breaker])
        return value > self.best if self.mode == "max" else value < self.best

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.guard is not None and self.guard.tripped:
            return
        value = logs.get(self.monitor)
        if value is None:
            available = ", ".join(sorted(logs)) or "none"
            raise InvalidInputError(f"Cannot monitor {self.monitor!r}: the epoch logs have {available}.")
        if not all(_finite(v) for v in logs.values()) or not self._better(float(value), logs):
            return
        self.twin.set_weights(self.model.get_weights())
        save_model(self.twin, self.path)
        self.best, self.best_epoch = float(value), epoch + 1
        self.best_logs = {k: float(v) for k, v in logs.items() if _finite(v)}



def history_from_rows(rows: list[dict]) -> dict[str, list[float]]:
    """{metric: [value per epoch]} from history rows (the `epoch` column included)."""
    keys = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    return {key: [row.get(key, float("nan")) for row in rows] for key in keys}


class HistoryCSV(keras.callbacks.Callback):
    """Writes one row per epoch (1-based `epoch`, the logs, the learning rate, the epoch's
    wall-clock seconds) to `path`, atomically.

    Args:
        path: the CSV file.
        rows: rows of earlier epochs (a resumed run); those from the resumed epoch on are dropped.
    """

    def __init__(self, path, rows=None):
        super().__init__()
        self.path = Path(path)
        self.rows = list(rows or [])
        self._started = None  # when the current epoch began
        self._learning_rate = None  # the rate at its first step

    def on_epoch_begin(self, epoch, logs=None):
        # Epoch numbers in the file are 1-based: drop rows this run will redo (after a kill, they may exist).
        self.rows = [row for row in self.rows if row["epoch"] <= epoch]
        self._started = time.perf_counter()
        self._learning_rate = None
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None:
            try:  # the rate at the epoch's first step
                self._learning_rate = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
            except Exception:  # noqa: BLE001  (the learning rate is informative only)
                pass

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1}
        row.update({k: float(v) for k, v in (logs or {}).items() if k != "learning_rate"})
        if self._learning_rate is not None:
            row["learning_rate"] = self._learning_rate
        if self._started is not None:  # wall-clock of the epoch, its validation pass included
            row["epoch_seconds"] = round(time.perf_counter() - self._started, 3)
        self.rows = [r for r in self.rows if r["epoch"] < epoch + 1] + [row]
        self.write()

    def write(self):
        keys = ["epoch"]
        for row in self.rows:
            keys.extend(k for k in row if k not in keys)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=keys, lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
        write_text(self.path, buffer.getvalue())

    @property
    def history(self) -> dict[str, list[float]]:
        return history_from_rows(self.rows)



def tensorboard_callback(log_dir):
    """Keras' TensorBoard callback writing epoch summaries (no graph, no profiling) under `log_dir`."""
    os.makedirs(log_dir, exist_ok=True)
    return keras.callbacks.TensorBoard(log_dir=str(log_dir), histogram_freq=0, write_graph=False, update_freq="epoch",
                          profile_batch=0)


def tensorboard_wanted(value) -> bool:
    """Resolves `train`'s tensorboard argument: True, False, or "auto" (when the package is installed).

    Raises:
        InvalidInputError: another value, or True without the tensorboard package.
    """
    check_choice("tensorboard", value, (True, False, "auto"))
    installed = importlib.util.find_spec("tensorboard") is not None  # TensorFlow no longer depends on it
    if value is True and not installed:
        raise MissingDependencyError("tensorboard=True needs the tensorboard package: pip install tensorboard "
                                     "(or pass tensorboard=False).")
    return installed if value == "auto" else bool(value)


@dataclasses.dataclass
class RunCallbacks:
    """The callbacks of one session of a run (`callbacks`, in order) and the epoch it starts after (pass it to
    `fit(initial_epoch=...)`)."""

    guard: NaNGuard
    history: HistoryCSV
    saver: BestModelSaver
    callbacks: list
    initial_epoch: int

    @property
    def best(self) -> dict | None:
        """{"epoch", "monitor", "value", "metrics"} of the saved model, or None when none was saved."""
        saver = self.saver
        if saver.best is None:
            return None
        return {"epoch": saver.best_epoch, "monitor": saver.monitor, "value": saver.best, "metrics": saver.best_logs}


def run_callbacks(paths: dict, twin, *, monitor: str, resume: bool, early_stopping: int | None,
                  tensorboard: bool, extra=None) -> RunCallbacks:
    """NaN guard, history.csv, best model, backup (and TensorBoard, early stopping, `extra`) for a run folder.

    Args:
        paths: the run folder's paths (`RunFolder.paths`).
        twin: the float32 model `BestModelSaver` saves.
        monitor: the metric that picks the best model.
        resume: start from the backup's history and best model (a run without a backup starts at epoch 1).
        early_stopping: patience in epochs, or None.
        tensorboard: write TensorBoard logs to paths["logs"].
        extra: the caller's own callbacks, run last.
    """
    backup_meta = read_backup_metadata(paths["backup"]) if resume else None
    rows = list(backup_meta.get("history", [])) if backup_meta else []
    best_prev = (backup_meta or {}).get("best") or {}
    initial_epoch = int(backup_meta["epoch"]) if backup_meta else 0
    if resume and backup_meta is None:
        warnings.warn(f"{paths['backup'].parent} has no backup (no epoch had finished): starting the run from "
                      "epoch 1.", stacklevel=3)

    guard = NaNGuard()
    history = HistoryCSV(paths["history"], rows=rows)
    saver = BestModelSaver(paths["model"], twin, monitor=monitor, guard=guard, best=best_prev.get("value"),
                           best_epoch=best_prev.get("epoch"))
    if best_prev.get("metrics"):
        saver.best_logs = dict(best_prev["metrics"])

    def backup_state():  # read after `history` and `saver` have seen the epoch (the backup comes after them)
        return {"history": history.rows,
                "best": {"epoch": saver.best_epoch, "value": saver.best, "monitor": monitor,
                         "metrics": saver.best_logs}}

    backup = RunBackup(paths["backup"], guard=guard, extra_state=backup_state)
    callbacks = [guard, history, saver, backup]
    if tensorboard:
        callbacks.append(tensorboard_callback(paths["logs"]))
    if early_stopping:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=monitor, patience=early_stopping, mode=saver.mode))
    callbacks.extend(extra or [])
    return RunCallbacks(guard, history, saver, callbacks, initial_epoch)
