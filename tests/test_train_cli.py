"""`nin-keras train`: a real run, and bad input as one line on stderr with exit code 2 (no traceback)."""

import json
import os
import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "nin_keras"]
SMALL = ["--dataset", "digits", "--variant", "mnist", "--width", "0.25", "--no-tensorboard"]


def _run(args, timeout=300):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    return subprocess.run(CLI + args, capture_output=True, text=True, timeout=timeout, env=env)


def _one_line_error(completed, *fragments):
    assert completed.returncode == 2, (completed.stdout[-1000:], completed.stderr[-2000:])
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert lines[0].startswith("nin-keras")
    assert "Traceback" not in completed.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("extra, fragment", [
    (["--epochs", "0"], "--epochs"),
    (["--epochs", "1", "--batch-size", "0"], "--batch-size"),
    (["--epochs", "1", "--precision", "half"], "--precision"),
    (["--epochs", "1", "--strategy", "tpu"], "--strategy"),
    (["--epochs", "1", "--optimizer", "rmsprop"], "--optimizer"),
    (["--epochs", "1", "--resume", "--overwrite"], "--overwrite"),
])
def test_bad_arguments_fail_fast(extra, fragment):
    _one_line_error(_run(["train", "--dataset", "digits"] + extra, timeout=60), fragment)


def test_train_prints_where_everything_went_and_refuses_to_overwrite(tmp_path):
    run = tmp_path / "run"
    completed = _run(["train"] + SMALL + ["--epochs", "1", "--out", str(run), "--seed", "1"])
    assert completed.returncode == 0, completed.stderr[-2000:]
    for name in ("model.keras", "history.csv", "curves.png", "config.json"):
        assert str(run / name) in completed.stdout
        assert (run / name).is_file()
    assert "precision:" in completed.stdout and "test accuracy:" in completed.stdout
    config = json.loads((run / "config.json").read_text())
    assert config["arguments"]["seed"] == 1 and config["dataset"]["name"] == "digits"

    again = _run(["train"] + SMALL + ["--epochs", "1", "--out", str(run)])
    _one_line_error(again, "already exists", "--resume", "--overwrite")
    assert json.loads((run / "config.json").read_text()) == config, "the run folder is untouched"


def test_nan_loss_exits_nonzero_naming_epoch_step_and_what_to_try(tmp_path):
    run = tmp_path / "run"
    completed = _run(["train"] + SMALL + ["--epochs", "2", "--no-batch-norm", "--lr", "1e30", "--out", str(run)])
    assert completed.returncode == 1, completed.stderr[-2000:]
    assert "Traceback" not in completed.stderr
    message = completed.stderr.strip().splitlines()[-1]
    assert "diverged" in message and "epoch 1, step" in message and "--lr" in message
    config = json.loads((run / "config.json").read_text())
    assert config["status"] == "diverged"
