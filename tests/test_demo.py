"""`nin-keras demo --quick`: every stage end to end, and the folder it leaves."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from helpers import REPO_ROOT as ROOT
from helpers import is_png, temporary_files

FIGURES = ("training_curves.png", "confusion_matrix.png", "confidence_maps.png", "artifacts.png")
ARTIFACTS = ("model.keras", "saved_model", "model_float32.tflite", "model_float16.tflite", "model_dynamic.tflite",
             "model_int8.tflite", "model_edgetpu_ready.tflite")


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "160",
           # nothing may be downloaded: an unreachable proxy makes any attempt fail loudly
           "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}
    result = subprocess.run([sys.executable, "-m", "nin_keras", "demo", "--quick", "--out", str(out)],
                            capture_output=True, text=True, timeout=420, cwd=ROOT, env=env)
    return out, result


@pytest.mark.slow
def test_quick_demo_runs(quick_demo):
    out, result = quick_demo
    assert result.returncode == 0, f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
    stdout = result.stdout
    for stage in ("1/4", "2/4", "3/4", "4/4"):  # progress throughout
        assert stage in stdout
    for header in ("artifact", "size", "accuracy", "agreement", "latency"):
        assert header in stdout
    for artifact in ARTIFACTS:
        assert artifact in stdout
    assert "Done in" in stdout


@pytest.mark.slow
def test_quick_demo_folder(quick_demo):
    out, result = quick_demo
    assert result.returncode == 0
    assert (out / "train" / "model.keras").is_file()
    for artifact in ARTIFACTS:
        assert (out / "export" / artifact).exists(), artifact
    assert (out / "export" / "report.md").is_file()
    for figure in FIGURES:
        assert is_png(out / "figures" / figure), figure
    report = (out / "report.md").read_text()
    assert "Quick smoke run" in report
    for figure in FIGURES:
        assert f"figures/{figure}" in report
    # No temporary files left anywhere.
    assert not temporary_files(out)


@pytest.mark.slow
def test_quick_demo_numbers(quick_demo):
    out, result = quick_demo
    assert result.returncode == 0
    summary = json.loads((out / "demo.json").read_text())
    assert summary["quick"] is True
    assert summary["float_accuracy"] > 0.2  # 10 classes: better than chance (0.1); about 0.37 seen
    assert summary["int8_accuracy"] is not None
    assert {row["target"] for row in summary["rows"]} >= {"keras", "saved_model", "tflite_float32",
                                                         "tflite_float16", "tflite_dynamic", "tflite_int8",
                                                         "edgetpu"}
    assert set(summary["stage_seconds"]) == {"data", "train", "export", "figures"}
    assert summary["seconds"] > 0
    speed = json.loads((out / "export" / "report.json").read_text())["speed"]
    assert summary["fastest"].startswith("Fastest on this machine") and speed["fastest"] in summary["fastest"]
    assert summary["fastest"] in (out / "report.md").read_text() and summary["fastest"] in result.stdout


def test_demo_help():
    from nin_keras.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["demo", "--quick", "--out", "x"])
    assert args.quick and args.out == "x"
    assert parser.parse_args(["demo"]).out == "runs/demo"


def test_report_table_and_report_handle_missing_values(tmp_path):
    from rich.console import Console

    from nin_keras.verification import report_table
    from nin_keras.workflows.demo import FULL, _report_markdown

    rows = [{"artifact": "model.keras", "target": "keras", "precision": "float32", "size_bytes": 2_000_000,
             "accuracy": 0.98, "agreement": 1.0, "latency_ms_batch1_median": 3.0, "throughput_images_per_s": 900.0},
            {"artifact": "model_edgetpu_ready.tflite", "target": "edgetpu", "precision": None, "size_bytes": None,
             "accuracy": None, "agreement": None, "latency_ms_batch1_median": None, "throughput_images_per_s": None}]
    console = Console(record=True, width=160)
    console.print(report_table(rows))
    text = console.export_text()
    assert "2.00 MB" in text and "98.00%" in text and "n/a" in text  # sizes in decimal units
    summary = {"settings": FULL.__dict__, "variant": "mnist", "parameters": 10, "dataset": "digits",
               "test_images": 2, "quick": False, "seconds": 1.0, "stage_seconds": {"train": 1.0},
               "float_accuracy": 0.98, "int8_accuracy": None, "int8_drop_points": None, "rows": rows,
               "figures": {"artifacts": str(tmp_path / "figures" / "artifacts.png")},
               "model": str(tmp_path / "train" / "model.keras")}
    markdown = _report_markdown(summary, tmp_path / "export", tmp_path)
    assert "| model_edgetpu_ready.tflite |" in markdown and "figures/artifacts.png" in markdown
    # One formatter, one convention: the demo's table reads as report.md's and the terminal's.
    assert "| model.keras | 2.00 MB | float32 | 98.00% | 100.00% | 3.000 | 900 |" in markdown
    assert "| model_edgetpu_ready.tflite | n/a | n/a | n/a | n/a | n/a | n/a |" in markdown
    for cell in ("3.000", "900", "100.00%"):
        assert cell in text, cell
