"""The run folder of `train` (default `runs/<name>/`): its files, when it may be started, resumed or replaced,
and config.json, the record of the run.

    model.keras     best model so far (by `monitor`), float32, loads with nin_keras.load_model
    history.csv     one row per completed epoch (1-based `epoch`, loss/accuracy, val_*, learning_rate)
    curves.png      loss and accuracy, train and validation
    config.json     every argument, seed, the machine (CPU, GPUs, package versions), precision and strategy
                    chosen and why, status, best and test metrics, one entry per session (call of `train`)
    backup/         training state after the last completed epoch (what `resume=True` continues from)
    logs/           TensorBoard event files (append-only logs; everything else is written atomically)

A new run (fresh, or replacing an old one with `overwrite`) is written into a hidden staging folder beside the
run folder, `.<name>.<pid>.<random>.staging`, and takes the run folder's place when its first epoch has ended
(history, best model and backup written). Until then an old run stays whole: a crash or kill -9 during the
first epoch loses only the new run's first epoch, and the next start removes what it left.
"""

from __future__ import annotations

import datetime
import json
import shutil
import sys
from pathlib import Path

import keras

from nin_keras._atomic import remove_stale_staging, staging_dir, swap_dir, write_json
from nin_keras.errors import InvalidInputError, MissingFileError, NotAFolderError, OutputExistsError
from nin_keras.machine import machine_facts
from nin_keras.training.callbacks import read_backup_metadata
from nin_keras.training.strategy import StrategyChoice

RUN_FILES = {
    "model": "model.keras",
    "history": "history.csv",
    "curves": "curves.png",
    "config": "config.json",
    "backup": "backup",
    "logs": "logs",
}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _files(folder: Path) -> dict:
    return {key: folder / name for key, name in RUN_FILES.items()}


class RunFolder:
    """One run's folder: `paths` (RUN_FILES key -> path) and `config`, what config.json holds.

    A session (one call of `train`) calls `prepare`, then `start` before fitting, then `finish` (or
    `interrupted` when fitting raised). `paths` point into the staging folder of a new run until `promote`
    (run by the callback `promotion_callback` gives, at the end of the first epoch) moves it into place.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.staging: Path | None = None  # where a new run is written until its first epoch has ended
        self.paths = _files(self.path)
        self.previous: dict = {}  # config.json of the sessions before this one (resume)
        self.config: dict = {}

    @classmethod
    def for_worker(cls, out_dir, strategy: StrategyChoice) -> RunFolder:
        """`out_dir` for the chief (or a single process); `<out_dir>.worker-<i>` for the other workers.

        Other workers keep their own copy, backup included: every worker must resume at the same epoch.
        """
        path = Path(out_dir)
        if strategy.num_workers > 1 and not strategy.is_chief:
            path = path.parent / f"{path.name}.worker-{strategy.worker_index}"
        return cls(path)

    def prepare(self, *, resume: bool, overwrite: bool, epochs: int | None = None) -> None:
        """Makes the folder ready: an existing run is continued only with `resume`, replaced only with `overwrite`.

        A new run gets a staging folder (see the module docstring); an old one is not touched here.

        Raises:
            FileNotFoundError: `resume` on a folder without config.json.
            InvalidInputError: `resume` with fewer `epochs` than the run has completed.
            NotADirectoryError: the path is a file.
            FileExistsError: a non-empty folder without `overwrite`, or one that is not a run folder.
        """
        config = self.paths["config"]
        if resume:
            if self.path.exists() and not self.path.is_dir():
                raise NotAFolderError(f"Run folder {self.path} exists and is not a folder.")
            if not config.exists():
                raise MissingFileError(
                    f"Nothing to resume in {self.path}: it has no {RUN_FILES['config']} (not a nin-keras run folder, "
                    "or the run never finished its first epoch). Leave out resume=True to start a new run."
                )
            if epochs is not None:
                self._check_epochs_left(epochs)
            self.previous = self.read_config()
            return
        if self.path.exists() and not self.path.is_dir():
            raise NotAFolderError(f"Run folder {self.path} exists and is not a folder.")
        if self.path.exists() and any(self.path.iterdir()):
            if not overwrite:
                raise OutputExistsError(
                    f"Run folder {self.path} already exists. Pass resume=True to continue that run, "
                    "overwrite=True to replace it, or choose another out_dir= or name=."
                )
            if not config.exists():
                raise OutputExistsError(
                    f"Refusing to overwrite {self.path}: it is not empty and has no {RUN_FILES['config']}, so it "
                    "does not look like a nin-keras run folder. Choose another out_dir=."
                )
        # What an earlier first epoch of this run folder left: a killed process's, or a failed call's here.
        remove_stale_staging(self.path, own_process=True)
        self.staging = staging_dir(self.path)
        self.paths = _files(self.staging)

    def _check_epochs_left(self, epochs: int) -> None:
        """Refuses to resume a run with fewer epochs than its backup has completed (it would train nothing)."""
        metadata = read_backup_metadata(self.paths["backup"])
        done = int(metadata["epoch"]) if metadata else 0
        if epochs < done:
            raise InvalidInputError(
                f"The run in {self.path} already has {done} epochs, more than epochs={epochs} (epochs is the "
                f"run's total, not epochs to add): nothing to resume. Pass epochs={done + 1} or more to train "
                "it further, or overwrite=True to start a new run."
            )

    def promote(self, callbacks=()) -> None:
        """Moves a staged new run into the run folder (an old run there is replaced); nothing when not staged.

        `callbacks` that write into the folder are told: `release_files()` before the move (close open
        files), `relocate(old, new)` after it.
        """
        if self.staging is None:
            return
        for callback in callbacks:
            getattr(callback, "release_files", lambda: None)()
        staging = self.staging
        swap_dir(staging, self.path)
        self.staging = None
        self.paths = _files(self.path)
        for callback in callbacks:
            if hasattr(callback, "relocate"):
                callback.relocate(staging, self.path)

    def promotion_callback(self, callbacks) -> keras.callbacks.Callback:
        """A callback, to run after `callbacks`, that promotes the staged run when its first epoch has ended."""
        return _Promote(self, list(callbacks))

    def read_config(self) -> dict:
        """config.json as written so far, or {} when it is missing or unreadable."""
        try:
            return json.loads(self.paths["config"].read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def start(self, record: dict, *, initial_epoch: int) -> None:
        """Writes config.json for this session: status "running", `record`, the machine, the file names, and
        the earlier sessions plus this one (started, initial_epoch, argv)."""
        sessions = list(self.previous.get("sessions", []))
        sessions.append({"started": _now(), "initial_epoch": initial_epoch, "argv": list(sys.argv)})
        self.config = {"status": "running", **record, "machine": machine_facts(), "files": dict(RUN_FILES),
                       "sessions": sessions}
        write_json(self.paths["config"], self.config)

    def interrupted(self) -> None:
        """Records that fitting raised (a kill leaves "running"); best effort, the original error matters more.

        A new run still staged (no epoch ended) is dropped: the run folder keeps what it held before.
        """
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None
            self.paths = _files(self.path)
            return
        self.config["status"] = "interrupted"
        self.config["sessions"][-1]["ended"] = _now()
        try:
            write_json(self.paths["config"], self.config)
        except OSError:
            pass

    def finish(self, **fields) -> None:
        """Adds `fields` (status, best, test, ...) to config.json and closes this session."""
        self.config.update(fields)
        self.config["sessions"][-1]["ended"] = _now()
        write_json(self.paths["config"], self.config)

    def existing_paths(self) -> dict:
        """RUN_FILES key -> path, None for files this run has not written."""
        return {key: (path if path.exists() else None) for key, path in self.paths.items()}


class _Promote(keras.callbacks.Callback):
    """Promotes a staged run (`RunFolder.promote`) once an epoch has ended, or when training ends."""

    def __init__(self, folder: RunFolder, callbacks: list):
        super().__init__()
        self.folder = folder
        self.callbacks = callbacks

    def on_epoch_end(self, epoch, logs=None):
        self.folder.promote(self.callbacks)

    def on_train_end(self, logs=None):
        self.folder.promote(self.callbacks)
