"""The run folder of `train` (default `runs/<name>/`): its files, when it may be started, resumed or replaced,
and config.json, the record of the run.

    model.keras     best model so far (by `monitor`), float32, loads with nin_keras.load_model
    history.csv     one row per completed epoch (1-based `epoch`, loss/accuracy, val_*, learning_rate)
    curves.png      loss and accuracy, train and validation
    config.json     every argument, seed, the machine (CPU, GPUs, package versions), precision and strategy
                    chosen and why, status, best and test metrics, one entry per session (call of `train`)
    backup/         training state after the last completed epoch (what `resume=True` continues from)
    logs/           TensorBoard event files (append-only logs; everything else is written atomically)
"""

from __future__ import annotations

import datetime
import json
import shutil
import sys
from pathlib import Path

from nin_keras._atomic import write_json
from nin_keras.machine import machine_facts
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


class RunFolder:
    """One run's folder: `paths` (RUN_FILES key -> path) and `config`, what config.json holds.

    A session (one call of `train`) calls `prepare`, then `start` before fitting, then `finish` (or
    `interrupted` when fitting raised).
    """

    def __init__(self, path):
        self.path = Path(path)
        self.paths = {key: self.path / name for key, name in RUN_FILES.items()}
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

    def prepare(self, *, resume: bool, overwrite: bool) -> None:
        """Makes the folder ready: an existing run is continued only with `resume`, replaced only with `overwrite`.

        Raises:
            FileNotFoundError: `resume` on a folder without config.json.
            NotADirectoryError: the path is a file.
            FileExistsError: a non-empty folder without `overwrite`, or one that is not a run folder.
        """
        config = self.paths["config"]
        if resume:
            if not config.exists():
                raise FileNotFoundError(
                    f"Nothing to resume in {self.path}: it has no {RUN_FILES['config']} (not a nin-keras run folder, "
                    "or the run never started). Drop --resume to start a new run."
                )
            self.previous = self.read_config()
            return
        if self.path.exists() and not self.path.is_dir():
            raise NotADirectoryError(f"Run folder {self.path} exists and is not a folder.")
        if self.path.exists() and any(self.path.iterdir()):
            if not overwrite:
                raise FileExistsError(
                    f"Run folder {self.path} already exists. Pass --resume (resume=True) to continue that run, "
                    "--overwrite (overwrite=True) to replace it, or choose another --out/--name."
                )
            if not config.exists():
                raise FileExistsError(
                    f"Refusing to overwrite {self.path}: it is not empty and has no {RUN_FILES['config']}, so it "
                    "does not look like a nin-keras run folder. Choose another --out."
                )
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)

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
        """Records that fitting raised (a kill leaves "running"); best effort, the original error matters more."""
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
