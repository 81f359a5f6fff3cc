"""tools/tune_recipe.py: configurations are judged on the validation hold-out only (the test split is never
evaluated), the cifar variant sees the padded 32x32 images, and --resume keeps what was measured."""

import argparse
import json
import os
import subprocess
import sys

import pytest

from helpers import REPO_ROOT, load_tool
from nin_keras.process_state import onednn_active
from nin_keras.training.recipes import RECIPES


def test_try_takes_defaults_or_known_overrides(monkeypatch):
    tool = load_tool("tune_recipe", monkeypatch)
    assert tool.parse_try("defaults") == {}
    assert tool.parse_try("learning_rate=0.006,dropout=0.5") == {"learning_rate": 0.006, "dropout": 0.5}
    for bad in ("lr=0.1", "learning_rate=", "momentum=0.9"):
        with pytest.raises(argparse.ArgumentTypeError, match="learning_rate"):
            tool.parse_try(bad)


@pytest.mark.slow
def test_search_judges_on_validation_only_and_resumes(tmp_path, monkeypatch):
    import nin_keras.training.trainer as trainer

    tool = load_tool("tune_recipe", monkeypatch)

    def never(*args, **kwargs):
        raise AssertionError("the recipe search evaluated the test split")

    monkeypatch.setattr(trainer, "score_on_test", never)
    out = tmp_path / "tuning.md"
    common = ["--dataset", "digits", "--pad-to", "32", "--train-images", "256", "--epochs", "1", "--verbose",
              "--out", str(out), "--work-dir", str(tmp_path / "runs")]
    tool.main([*common, "--try", "defaults"])
    first = json.loads(out.with_suffix(".json").read_text())["configurations"]
    assert len(first) == 1 and len(first[0]["val_accuracy"]) == 1 and first[0]["seed"] == 0
    peak = RECIPES["budget"].by_variant["cifar"]["learning_rate"]  # the cifar variant's defaults
    assert first[0]["recipe"].startswith(f"recipe budget: AdamW, peak lr {peak:.3g}")
    config = json.loads((tmp_path / "runs" / "defaults-s0" / "config.json").read_text())
    assert config["model"]["input_shape"] == [32, 32, 1]  # digits' 8x8 zero-padded for the cifar variant

    tool.main([*common, "--try", "defaults", "--try", "learning_rate=0.001", "--resume"])
    runs = json.loads(out.with_suffix(".json").read_text())["configurations"]
    assert runs[0] == first[0]  # kept, not trained again
    assert runs[1]["name"] == "learning_rate=0.001" and "peak lr 0.001" in runs[1]["recipe"]
    report = out.read_text()
    assert "| learning_rate=0.001 | 0 | recipe budget" in report and "| defaults | 1 |" in report

    # The same configuration and seed alone in a fresh process sees the same data in the same order: a run's
    # result does not depend on what ran before it in the process.
    alone = tmp_path / "alone.md"
    # The same kernels as this process's run: oneDNN's and TensorFlow's own convolutions round differently.
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_ENABLE_ONEDNN_OPTS="1" if onednn_active() else "0")
    completed = subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "tune_recipe.py"), *common[:-4],
                                "--out", str(alone), "--work-dir", str(tmp_path / "alone"),
                                "--try", "learning_rate=0.001"], capture_output=True, text=True, env=env, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    fresh = json.loads(alone.with_suffix(".json").read_text())["configurations"][0]
    assert fresh["val_accuracy"] == pytest.approx(runs[1]["val_accuracy"], abs=0.02)
