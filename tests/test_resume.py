"""Kill -9 a `nin-keras train` run after its first epoch; `--resume` continues it to the end."""

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import nin_keras
from helpers import sigkill_when

TRAIN = [sys.executable, "-m", "nin_keras", "train", "--dataset", "digits", "--variant", "mnist", "--width", "0.5",
         "--batch-size", "32", "--epochs", "4", "--recipe", "adam", "--no-tensorboard"]


def _epochs(history: Path) -> list[int]:
    try:
        with open(history, newline="") as handle:
            return [int(row["epoch"]) for row in csv.DictReader(handle)]
    except (OSError, KeyError, ValueError):
        return []


def _backed_up_epoch(run: Path) -> int:
    try:
        return int(json.loads((run / "backup" / "training_metadata.json").read_text())["epoch"])
    except (OSError, KeyError, ValueError):
        return 0


def _env():
    return dict(os.environ, PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="")


def test_sigkill_after_the_first_epoch_then_resume(tmp_path):
    run = tmp_path / "run"
    process = subprocess.Popen(TRAIN + ["--out", str(run)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env=_env(), start_new_session=True)
    sigkill_when(process, lambda: _backed_up_epoch(run) >= 1,  # the backup of epoch 1 is complete
                 waiting_for="a finished first epoch")
    assert process.returncode == -signal.SIGKILL
    done = _epochs(run / "history.csv")
    backup = json.loads((run / "backup" / "training_metadata.json").read_text())
    assert 1 <= backup["epoch"] < 4, f"the kill should land mid-run; the backup had epoch {backup['epoch']}"
    assert done[:backup["epoch"]] == list(range(1, backup["epoch"] + 1))
    before = (run / "history.csv").read_text().splitlines()

    completed = subprocess.run(TRAIN + ["--out", str(run), "--resume"], capture_output=True, text=True,
                               env=_env(), timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert f"resumed after epoch {backup['epoch']}" in completed.stdout
    assert str(run / "model.keras") in completed.stdout
    assert _epochs(run / "history.csv") == [1, 2, 3, 4]
    after = (run / "history.csv").read_text().splitlines()
    assert after[:1 + backup["epoch"]] == before[:1 + backup["epoch"]], "rows of completed epochs are kept"
    config = json.loads((run / "config.json").read_text())
    assert config["status"] == "completed"
    assert [s["initial_epoch"] for s in config["sessions"]] == [0, backup["epoch"]]
    model = nin_keras.load_model(run / "model.keras")
    assert model.output_shape == (None, 10)
    assert not list(run.glob(".*.tmp*")), "no temporary files left behind"


def _make_run(folder: Path, label: str, *, epochs_backed_up: int) -> dict:
    """A run folder with distinguishable contents; a backup of `epochs_backed_up` epochs (none if 0)."""
    (folder / "backup").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"status": "running", "label": label}))
    (folder / "model.keras").write_bytes(label.encode())
    if epochs_backed_up:
        (folder / "backup" / "training_metadata.json").write_text(
            json.dumps({"epoch": epochs_backed_up, "weights": "epoch-0001.weights.h5"}))
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_the_next_call_after_a_kill_at_any_point_of_an_overwrite_loses_neither_run(tmp_path):
    """Every state a kill -9 can leave while a new run replaces an old one, and what `recover` makes of it."""
    from nin_keras.training.run_folder import recover

    def tree(folder):
        return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}

    cases = {  # state: (new run in the folder, its backed-up epochs, a new run on its way out) -> kept
        "killed right after setting the old run aside": (False, 0, False, "old"),
        "killed during the new run's first epoch": (True, 0, False, "old"),
        "killed after the first epoch's backup, before deleting the old run": (True, 1, False, "new"),
        "killed while putting the old run back": (False, 0, True, "old"),
    }
    for number, (state, (new_there, backed_up, discarded, kept)) in enumerate(cases.items()):
        parent = tmp_path / str(number)
        run, previous = parent / "run", parent / ".run.previous"
        runs = {"old": _make_run(previous, "old", epochs_backed_up=4)}
        if new_there:
            runs["new"] = _make_run(run, "new", epochs_backed_up=backed_up)
        if discarded:
            _make_run(parent / ".run.discarded", "new", epochs_backed_up=0)
        recover(run)
        assert tree(run) == runs[kept], state
        assert sorted(p.name for p in parent.iterdir()) == ["run"], state
        assert recover(run) is None, state  # nothing left to do
