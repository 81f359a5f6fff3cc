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
