"""The run folder of `train` (default `runs/<name>/`): its files, when it may be started, resumed or replaced,
and config.json, the record of the run.

    model.keras     best model so far (by `monitor`), float32, loads with nin_keras.load_model
    history.csv     one row per completed epoch (1-based `epoch`, loss/accuracy, val_*, learning_rate)
    curves.png      loss and accuracy, train and validation
    config.json     every argument, seed, the machine (CPU, GPUs, package versions), precision and strategy
                    chosen and why, status, best and test metrics, one entry per session (call of `train`)
    backup/         training state after the last completed epoch (what `resume=True` continues from)
    logs/           TensorBoard event files (append-only logs; everything else is written atomically)

Every run is written in its folder, which never moves while training has files open in it. A run that replaces
an old one (`overwrite`) first renames the old run aside to `.<name>.previous` beside the folder, and deletes it
once the new run's first epoch has ended (history, best model and backup written). If the new run fails before
that, the old one is put back. After a kill -9 the next call on the folder does what the killed one could not
(`recover`): a new run with a backed-up epoch is kept and the old one deleted; otherwise the old run is put
back. Either way no run is lost; at most the new run's unfinished first epoch.

config.json also holds the run's `data_fingerprint` (`data_fingerprint`): the dataset's name, source, split
sizes, class count, image shape, batch size and a hash of a fixed sample of its content. A resumed run must be
given the same: other data or another batch size is refused unless `allow_changed_data` (the change is then
recorded in the session). A config.json that cannot be read is never replaced by a resumed run.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import keras

from nin_keras._atomic import write_json
from nin_keras.errors import InvalidInputError, MissingFileError, NotAFolderError, OutputExistsError, one_line
from nin_keras.machine import machine_facts
from nin_keras.process_state import silenced_native_stderr
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


FINGERPRINT_FIELDS = {  # data_fingerprint key -> what it is, in messages
    "dataset": "dataset",
    "source": "source files",
    "sizes": "split sizes",
    "split": "validation split (validation_split, seed)",
    "num_classes": "class count",
    "input_shape": "image shape",
    "batches": "training batches per pass",
    "batch_size": "batch size",
    "content": "content (a hash of a fixed sample of images and labels)",
}


FINGERPRINT_IMAGES = 64  # test images a load_dataset fingerprint hashes


def data_fingerprint(inputs, batch_size: int | None) -> dict:
    """What a resumed run must find unchanged of its data (`inputs`, a `DatasetSplits`) and batch size.

    The content hash is the arrays' (`DatasetSplits.content_digest`) or, for a `load_dataset` dataset, a hash
    of its test split's first 64 images (never shuffled); a bare tf.data dataset, whose order may be random, is
    known by its shape, class count and length only (None).
    """
    info = inputs.info or {}
    sizes = info.get("sizes") or ({"train": info["size"]} if "size" in info else None)
    batches = None  # the length of a dataset known by no size (it changes with the batch size otherwise)
    if sizes is None and inputs.train is not None and int(inputs.train.cardinality()) >= 0:
        batches = int(inputs.train.cardinality())
    fingerprint = {
        "dataset": inputs.name,
        "source": info.get("source"),
        "sizes": sizes,
        "split": ({"validation_split": info.get("validation_split"), "seed": info.get("seed")}
                  if "validation_split" in info else None),
        "num_classes": inputs.num_classes,
        "input_shape": list(inputs.input_shape or ()),
        "batches": batches,
        "batch_size": batch_size,
        "content": inputs.content_digest or _first_test_batch_digest(inputs),
    }
    return json.loads(json.dumps(fingerprint, default=str))  # as config.json will give it back


def _first_test_batch_digest(inputs) -> str | None:
    """A hash of the first images of a `load_dataset` test split (unshuffled, so the same on every call)."""
    if inputs.test is None or "dtype" not in (inputs.info or {}):
        return None
    digest = hashlib.sha256()
    with silenced_native_stderr():  # part of a cached pipeline: TensorFlow logs a C++ warning
        # the first images one by one, so the hash does not depend on the batch size (compared on its own)
        for image, label in inputs.test.unbatch().take(FINGERPRINT_IMAGES).as_numpy_iterator():
            digest.update(repr(image.shape).encode())
            digest.update(image.tobytes())
            digest.update(label.tobytes())
    return digest.hexdigest()[:32]


def fingerprint_changes(before: dict, now: dict) -> list[str]:
    """What differs between two data fingerprints, as "what: before -> now" lines (keys `before` lacks, or
    holds as None, are not compared: an older record, or a value that cannot be known)."""
    changes = []
    for key, label in FINGERPRINT_FIELDS.items():
        old, new = before.get(key), now.get(key)
        if old is not None and old != new:  # a hash is no use to read: say only that it differs
            shown = "differs" if key == "content" else f"{json.dumps(old)} -> {json.dumps(new)}"
            changes.append(f"{label} {shown}")
    return changes


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _files(folder: Path) -> dict:
    return {key: folder / name for key, name in RUN_FILES.items()}


def previous_run_path(path) -> Path:
    """Where an old run waits while a new one replaces it: `.<name>.previous` beside the run folder."""
    path = Path(path)
    return path.parent / f".{path.name}.previous"


def _discarded_path(path: Path) -> Path:
    """Where a failed new run goes on its way out, so the old one can be renamed back at once."""
    return path.parent / f".{path.name}.discarded"


def _has_backup(path: Path) -> bool:
    """Whether the run in `path` has a backed-up epoch (its first epoch ended)."""
    try:
        metadata = read_backup_metadata(path / RUN_FILES["backup"])
    except ValueError:
        return False
    return metadata is not None and int(metadata["epoch"]) >= 1


def recover(path) -> str | None:
    """Finishes what a killed call on the run folder `path` left undone; returns what it did, or None.

    With an old run set aside (`.<name>.previous`): when the new run in `path` has a backed-up epoch, the old one
    is deleted ("kept the new run"); otherwise the new run is dropped and the old one put back ("restored the
    old run"). A new run on its way out (`.<name>.discarded`) is deleted.
    """
    path = Path(path)
    previous, discarded = previous_run_path(path), _discarded_path(path)
    done = None
    if previous.is_dir() and not previous.is_symlink():
        if path.is_dir() and _has_backup(path):
            shutil.rmtree(previous)
            done = "kept the new run"
        else:
            if path.exists():
                os.replace(path, discarded)
            os.replace(previous, path)
            done = "restored the old run"
    if discarded.is_dir() and not discarded.is_symlink():
        shutil.rmtree(discarded, ignore_errors=True)
    return done


class RunFolder:
    """One run's folder: `paths` (RUN_FILES key -> path) and `config`, what config.json holds.

    A session (one call of `train`) calls `prepare`, then `start` before fitting, then `finish` (or
    `interrupted` when anything after `prepare` raised). The callback `first_epoch_callback` gives deletes the
    old run a new one replaces once the new run's first epoch has ended.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.new_run = False  # this session started the run (it did not resume one)
        self.paths = _files(self.path)
        self.previous: dict = {}  # config.json of the sessions before this one (resume)
        self.config: dict = {}
        self.fingerprint: dict | None = None  # this session's data_fingerprint
        self.data_changes: list[str] = []  # what differs from the record (resumed with allow_changed_data)

    @classmethod
    def for_worker(cls, out_dir, strategy: StrategyChoice) -> RunFolder:
        """`out_dir` for the chief (or a single process); `<out_dir>.worker-<i>` for the other workers.

        Other workers keep their own copy, backup included: every worker must resume at the same epoch.
        """
        path = Path(out_dir)
        if strategy.num_workers > 1 and not strategy.is_chief:
            path = path.parent / f"{path.name}.worker-{strategy.worker_index}"
        return cls(path)

    def prepare(self, *, resume: bool, overwrite: bool, epochs: int | None = None, fingerprint: dict | None = None,
                allow_changed_data: bool = False) -> None:
        """Makes the folder ready: an existing run is continued only with `resume`, replaced only with `overwrite`.

        What a killed call left is sorted out first (`recover`). An old run that `overwrite` replaces is renamed
        aside to `.<name>.previous` (see the module docstring); call `interrupted` if anything fails after this.
        `fingerprint` (`data_fingerprint`) is recorded by `start`; a resumed run compares it with its record.

        Raises:
            FileNotFoundError: `resume` on a folder without config.json.
            InvalidInputError: `resume` with fewer `epochs` than the run has completed; with a config.json that
                cannot be read (it is left as it is); with data or a batch size other than the run's record,
                unless `allow_changed_data`.
            NotADirectoryError: the path is a file.
            FileExistsError: a non-empty folder without `overwrite`, or one that is not a run folder.
        """
        config = self.paths["config"]
        recover(self.path)
        if resume:
            if self.path.exists() and not self.path.is_dir():
                raise NotAFolderError(f"Run folder {self.path} exists and is not a folder.")
            if not config.exists():
                raise MissingFileError(
                    f"Nothing to resume in {self.path}: it has no {RUN_FILES['config']} (not a nin-keras run folder, "
                    "or the run never finished its first epoch). Leave out resume=True to start a new run."
                )
            self.previous = self._read_record()
            if epochs is not None:
                self._check_epochs_left(epochs)
            self.fingerprint = fingerprint
            self.data_changes = self._check_same_data(fingerprint, allow_changed_data)
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
        if self.path.exists():
            os.replace(self.path, previous_run_path(self.path))  # an empty folder goes aside too: nothing is lost
        self.path.mkdir(parents=True)
        self.new_run = True
        self.fingerprint = fingerprint

    def _read_record(self) -> dict:
        """config.json of the run being resumed.

        Raises:
            InvalidInputError: it is not readable JSON holding an object (truncated, damaged, replaced): a resumed
                run would replace it and lose the run's record, so it is refused and the file left as it is.
        """
        path = self.paths["config"]
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError) as error:
            problem = f"is not readable JSON ({one_line(error, 120)}): truncated or damaged"
        else:
            if isinstance(record, dict) and isinstance(record.get("sessions", []), list):
                return record
            problem = f"holds a JSON {type(record).__name__}, not a nin-keras run record"
        raise InvalidInputError(
            f"Cannot resume the run in {self.path}: its {RUN_FILES['config']} {problem}. It is left as it is (it "
            "is the run's record). Restore it from a copy, or start a new run with overwrite=True or another "
            "out_dir=."
        )

    def _check_same_data(self, fingerprint: dict | None, allow_changed_data: bool) -> list[str]:
        """What differs between this session's data and the run's record; raises unless `allow_changed_data`."""
        before = self.previous.get("data_fingerprint")
        if fingerprint is None or not isinstance(before, dict):
            return []  # a run recorded before fingerprints existed: nothing to compare
        changes = fingerprint_changes(before, fingerprint)
        if changes and not allow_changed_data:
            raise InvalidInputError(
                f"Cannot resume the run in {self.path} on other data than it was trained on: "
                f"{'; '.join(changes)}. Resume with the run's dataset and batch size (config.json records them), "
                "pass allow_changed_data=True to continue on this data anyway (the change is recorded), or start "
                "a new run with overwrite=True or another out_dir=."
            )
        return changes

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

    def discard_previous(self) -> None:
        """Deletes the old run this one replaces (once the new run's first epoch has ended); nothing if none."""
        previous = previous_run_path(self.path)
        if self.new_run and previous.is_dir():
            shutil.rmtree(previous)

    def first_epoch_callback(self) -> keras.callbacks.Callback:
        """A callback, to run after those that write the epoch's files, that calls `discard_previous` when the
        first epoch has ended (or training ended)."""
        return _DiscardPrevious(self)

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
        if self.data_changes:
            sessions[-1]["data_changed"] = list(self.data_changes)
        self.config = {"status": "running", **record, "data_fingerprint": self.fingerprint,
                       "machine": machine_facts(), "files": dict(RUN_FILES), "sessions": sessions}
        write_json(self.paths["config"], self.config)

    def interrupted(self) -> None:
        """Records that the session failed (a kill leaves "running"); best effort, the original error matters more.

        A new run that failed before its first epoch ended is dropped: the folder gets back what it held before
        (the old run, or nothing).
        """
        if self.new_run and not _has_backup(self.path):
            if previous_run_path(self.path).is_dir():
                recover(self.path)  # puts the old run back
            else:
                shutil.rmtree(self.path, ignore_errors=True)
            self.new_run = False
            return
        if not self.config:
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


class _DiscardPrevious(keras.callbacks.Callback):
    """Calls `RunFolder.discard_previous` once an epoch has ended, or when training ends."""

    def __init__(self, folder: RunFolder):
        super().__init__()
        self.folder = folder

    def on_epoch_end(self, epoch, logs=None):
        self.folder.discard_previous()

    def on_train_end(self, logs=None):
        self.folder.discard_previous()
