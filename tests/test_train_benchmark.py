"""benchmark_training (the function `nin-keras benchmark train` calls) and tools/benchmark_train.py (smoke)."""

import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest

from nin_keras.training import benchmark_training

ROOT = Path(__file__).resolve().parent.parent
KEYS = {"train_images_per_s", "precision", "variant", "batch_size", "steps", "device"}
TINY = dict(variant="mnist", batch_size=8, steps=2, warmup_steps=1, width_multiplier=0.1)


@pytest.mark.parametrize("precision, fused", [("float32", False), ("auto", True)])
def test_benchmark_training_reports_throughput(precision, fused):
    before = keras.config.dtype_policy().name
    result = benchmark_training(precision=precision, fused_batch_norm=fused, **TINY)
    assert KEYS <= set(result)
    assert result["train_images_per_s"] > 0
    assert (result["variant"], result["batch_size"], result["steps"]) == ("mnist", 8, 2)
    assert result["fused_batch_norm"] is fused
    assert result["precision"] != "auto" and result["device"]
    assert keras.config.dtype_policy().name == before


@pytest.mark.parametrize("kwargs, match", [
    (dict(steps=0), "steps"),
    (dict(batch_size=0), "batch_size"),
    (dict(variant="vgg"), "Unknown variant"),
    (dict(precision="half"), "Unknown precision"),
])
def test_benchmark_training_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        benchmark_training(**{**TINY, **kwargs})


@pytest.mark.slow
def test_benchmark_tool_smoke_run_writes_a_report(tmp_path):
    out = tmp_path / "training.md"
    command = [sys.executable, str(ROOT / "tools" / "benchmark_train.py"), "--variant", "mnist", "--batch-size", "8",
               "--steps", "1", "--warmup-steps", "1", "--rounds", "1", "--pipeline-steps", "2", "--rss-steps", "1",
               "--accuracy-epochs", "1", "--accuracy-seeds", "1", "--out", str(out)]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.strip().splitlines()[-1].startswith("train_images_per_s=")
    text = out.read_text()
    for section in ("## Training throughput", "Ratio of medians", "## Input pipeline headroom", "## Peak memory",
                    "## Accuracy: auto precision vs float32", "Command:"):
        assert section in text


def test_benchmark_training_steps_per_execution_times_whole_executions():
    result = benchmark_training(precision="float32", steps_per_execution=2, **{**TINY, "steps": 3})
    assert (result["steps_per_execution"], result["steps"], result["warmup_steps"]) == (2, 4, 2)
    assert result["train_images_per_s"] > 0
