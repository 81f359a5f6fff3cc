"""tools/benchmark_accuracy.py: a smoke run on digits writes the report, the JSON it renders from, the plot, and
--resume keeps finished runs instead of training them again (and refuses runs measured with other settings)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import load_tool

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "benchmark_accuracy.py"


def _run(*args, timeout=900):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


@pytest.mark.slow
def test_smoke_run_reports_every_contender_and_resumes(tmp_path):
    out = tmp_path / "accuracy.md"
    common = ["--dataset", "digits", "--width", "0.1", "--budgets", "1", "--plain-max-epochs", "1",
              "--target", "0.05", "--contenders", "nin-keras,plain Keras", "--out", out,
              "--work-dir", tmp_path / "runs"]
    completed = _run(*common)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(out.with_suffix(".json").read_text())
    runs = {run["contender"]: run for run in results["runs"]}
    assert set(runs) == {"nin-keras", "plain Keras"}
    ours, plain = runs["nin-keras"], runs["plain Keras"]
    assert 0 <= ours["test_accuracy"] <= 1 and ours["train_seconds"] > 0 and ours["peak_rss_mb"] > 100
    assert ours["recipe"].startswith("recipe budget:")  # the defaults, as `nin-keras train` printed them
    assert 0 <= ours["int8"]["int8"] <= 1 and ours["int8"]["float"] == ours["test_accuracy"]
    # The plain script records each epoch it runs, up to its cap.
    assert plain["epochs_run"] == 1 and plain["epochs"][0]["seconds"] > 0 and "test_accuracy" in plain["epochs"][0]

    text = out.read_text()
    for section in ("## Test accuracy by epoch budget", "## Targets", "int8 within 0.3 points",
                    "time to 5% test accuracy", "![test accuracy against training minutes](accuracy.png)"):
        assert section in text, section
    assert out.with_suffix(".png").stat().st_size > 10_000

    again = _run(*common, "--resume", timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("kept from") == 2 and "recipe budget" not in again.stderr  # nothing retrained
    assert json.loads(out.with_suffix(".json").read_text())["runs"] == results["runs"]

    # The report is a function of the JSON: the resumed run, which measured nothing, wrote the same tables.
    assert out.read_text().split("## Test accuracy")[1] == text.split("## Test accuracy")[1]

    # Resuming with fewer contenders (to add a budget for one of them) keeps and reports the others' runs.
    narrowed = [arg if arg != "nin-keras,plain Keras" else "nin-keras" for arg in common]
    fewer = _run(*narrowed, "--resume", timeout=300)
    assert fewer.returncode == 0, fewer.stderr[-3000:]
    resumed = json.loads(out.with_suffix(".json").read_text())
    assert sorted(map(str, resumed["runs"])) == sorted(map(str, results["runs"]))
    assert resumed["settings"]["contenders"] == ["nin-keras", "plain Keras"] and "plain Keras | 1" in out.read_text()

    other = [arg if arg != "0.1" else "0.5" for arg in common]  # another width: those runs do not count
    refused = _run(*other, "--resume", timeout=300)
    assert refused.returncode != 0 and "measured with other width" in refused.stderr


def test_resume_keeps_every_finished_run_when_interrupted_again(tmp_path, monkeypatch):
    """Runs kept from the file but planned after the one interrupted must still be in the file afterwards."""
    tool = load_tool("benchmark_accuracy", monkeypatch)
    json_path = tmp_path / "accuracy.json"
    args = tool.parse_args(["--budgets", "1,3", "--seeds", "1", "--contenders", "nin-keras,paper", "--resume",
                            "--json", str(json_path), "--out", str(tmp_path / "accuracy.md"),
                            "--work-dir", str(tmp_path / "work")])
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "render")}
    finished = [{"contender": "nin-keras", "budget": budget, "seed": 0, "test_accuracy": 0.9} for budget in (1, 3)]
    json_path.write_text(json.dumps({"settings": settings, "runs": finished}))

    def fake_run(entry, *_):
        if entry["budget"] == 3:
            raise KeyboardInterrupt  # the second run to measure: stopped
        return {**entry, "test_accuracy": 0.8}

    monkeypatch.setattr(tool, "run_nin_keras", fake_run)
    with pytest.raises(KeyboardInterrupt):
        tool.measure(args)
    saved = json.loads(json_path.read_text())
    assert sorted((run["contender"], run["budget"]) for run in saved["runs"]) == [
        ("nin-keras", 1), ("nin-keras", 3), ("paper", 1)]


def test_narrowed_resume_saves_the_settings_of_every_run_it_keeps(tmp_path, monkeypatch):
    """A resume for one contender saves, after each run, settings that still name the kept runs' contenders and
    budgets: resumed again after an interruption, the report must not leave those runs out."""
    tool = load_tool("benchmark_accuracy", monkeypatch)
    json_path = tmp_path / "accuracy.json"
    wide = tool.parse_args(["--budgets", "1,15", "--seeds", "1", "--contenders", "nin-keras,paper",
                            "--json", str(json_path), "--out", str(tmp_path / "accuracy.md")])
    finished = [{"contender": contender, "budget": 1, "seed": 0, "test_accuracy": 0.9}
                for contender in ("nin-keras", "paper")] + [
        {"contender": "nin-keras", "budget": 15, "seed": 0, "test_accuracy": 0.93}]
    json_path.write_text(json.dumps({"settings": tool.recorded_settings(wide), "runs": finished}))
    narrowed = tool.parse_args(["--budgets", "3", "--seeds", "1", "--contenders", "paper", "--resume",
                                "--json", str(json_path), "--out", str(tmp_path / "accuracy.md"),
                                "--work-dir", str(tmp_path / "work")])
    monkeypatch.setattr(tool, "run_nin_keras", lambda entry, *_: {**entry, "test_accuracy": 0.8})
    tool.measure(narrowed)
    saved = json.loads(json_path.read_text())  # what an interruption after the run would leave
    assert saved["partial"] and len(saved["runs"]) == 4
    assert saved["settings"]["budgets"] == [1, 3, 15] and saved["settings"]["contenders"] == ["nin-keras", "paper"]
