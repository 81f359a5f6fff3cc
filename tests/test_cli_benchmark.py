"""`nin-keras evaluate` and `nin-keras benchmark train|infer`: output contracts and one-line errors."""

import json

import pytest

from nin_keras.cli import main

# `main` quiets TensorFlow for the whole process (as a CLI should); undo that for the tests after these.
pytestmark = pytest.mark.usefixtures("restore_process_state")


def _last_value(text, key):
    last = text.strip().splitlines()[-1]
    name, value = last.split("=")
    assert name == key
    return float(value)


def test_benchmark_infer_prints_a_table_and_final_latency_lines(digits_artifacts, capsys):
    code = main(["benchmark", "infer", str(digits_artifacts / "model_int8.tflite"),
                 str(digits_artifacts / "model_float32.tflite"),
                 "--runs", "3", "--warmup", "1", "--threads", "1", "--batch-size", "4"])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.strip().splitlines()
    assert "model_int8.tflite" in out and "full int8" in out and "b1 median ms" in lines[0]
    latencies = [line for line in lines if line.startswith("latency_ms_batch1_median=")]
    assert lines[-2:] == latencies and len(latencies) == 2
    assert all(float(line.split("=")[1]) > 0 for line in latencies)


def test_benchmark_infer_json(digits_artifacts, capsys):
    code = main(["benchmark", "infer", str(digits_artifacts / "saved_model"), "--runs", "2", "--warmup", "0",
                 "--json"])
    results = json.loads(capsys.readouterr().out)
    assert code == 0 and len(results) == 1
    assert results[0]["kind"] == "saved_model" and results[0]["latency_ms_batch1_median"] > 0


def test_bad_artifacts_are_one_line_errors_with_exit_2(digits_artifacts, tmp_path, capsys):
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"not a model at all" * 10)
    for argv in (["benchmark", "infer", str(garbage)],
                 ["benchmark", "infer", str(tmp_path / "missing.tflite")],
                 ["evaluate", str(garbage), "--dataset", "digits"],
                 ["evaluate", str(tmp_path), "--dataset", "digits"]):
        assert main(argv) == 2, argv
        captured = capsys.readouterr()
        assert len(captured.err.strip().splitlines()) == 1, captured.err
        assert "Traceback" not in captured.err
        assert "garbage.tflite" in captured.err or "missing.tflite" in captured.err or "SavedModel" in captured.err


def test_evaluate_on_digits(digits_artifacts, capsys):
    pytest.importorskip("sklearn")
    code = main(["evaluate", str(digits_artifacts / "model_int8.tflite"), "--dataset", "digits",
                 "--reference", str(digits_artifacts / "model.keras"), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert "agreement=" in out
    assert _last_value(out, "accuracy") > 0.8  # trained on part of the same digits

    code = main(["evaluate", str(digits_artifacts / "model_edgetpu_ready.tflite"), "--dataset", "digits",
                 "--limit", "40", "--json"])
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert code == 0 and result["num_examples"] == 40 and result["agreement"] is None
    assert "model_edgetpu_ready.tflite" in captured.err  # progress bar on stderr, stdout stays JSON


def test_evaluate_on_synthetic_data_and_on_data_of_the_wrong_shape(digits_artifacts, tmp_path, capsys):
    import nin_keras

    code = main(["evaluate", str(digits_artifacts / "model_float32.tflite"), "--dataset", "synthetic",
                 "--no-progress", "--reference", str(digits_artifacts / "model.keras"), "--limit", "8", "--json"])
    assert code == 0  # synthetic data takes the artifact's own shape and class count
    assert json.loads(capsys.readouterr().out)["agreement"] >= 0.875

    rgb = nin_keras.build_nin(10, variant="mnist", input_shape=(12, 12, 3), width_multiplier=0.05)
    nin_keras.save_model(rgb, tmp_path / "rgb.keras")
    assert main(["evaluate", str(tmp_path / "rgb.keras"), "--dataset", "digits", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "12x12x3" in err and "8x8x1" in err


@pytest.fixture
def fake_training(monkeypatch):
    """Stands in for nin_keras.training.benchmark_training (real runs take minutes)."""
    calls = []

    def benchmark_training(**kwargs):
        calls.append(kwargs)
        return {"train_images_per_s": 123.456, "precision": "mixed_bfloat16", "variant": kwargs["variant"],
                "batch_size": kwargs["batch_size"], "steps": kwargs["steps"], "device": "CPU"}

    import nin_keras.training

    monkeypatch.setattr(nin_keras.training, "benchmark_training", benchmark_training)
    return calls


def test_benchmark_train_passes_options_and_ends_with_images_per_s(fake_training, capsys):
    code = main(["benchmark", "train", "--variant", "mnist", "--batch-size", "16", "--steps", "3",
                 "--warmup-steps", "1", "--precision", "float32", "--width-multiplier", "0.5", "--no-batch-norm",
                 "--jit-compile"])
    out = capsys.readouterr().out
    assert code == 0
    assert _last_value(out, "train_images_per_s") == pytest.approx(123.5, abs=0.05)
    assert fake_training == [dict(variant="mnist", batch_size=16, steps=3, warmup_steps=1, precision="float32",
                                  width_multiplier=0.5, batch_norm=False, fused_batch_norm=True, jit_compile=True)]
    assert main(["benchmark", "train", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["train_images_per_s"] == 123.456
    assert fake_training[-1] == dict(variant="cifar", batch_size=128, steps=30, warmup_steps=5, precision="auto",
                                     width_multiplier=1.0, batch_norm=True, fused_batch_norm=True,
                                     jit_compile=False)


@pytest.mark.parametrize("argv", [["benchmark", "train", "--steps", "0"],
                                  ["benchmark", "train", "--width-multiplier", "-1"],
                                  ["benchmark", "infer", "x.tflite", "--runs", "0"],
                                  ["benchmark", "infer"]])
def test_bad_numbers_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:  # argparse: exits 2 with one line
        main(argv)
    assert exit_info.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_benchmark_train_for_real(capsys):  # benchmark_training itself, tiny: ~2 s
    code = main(["benchmark", "train", "--variant", "mnist", "--steps", "2", "--warmup-steps", "1", "--batch-size", "8",
                 "--width-multiplier", "0.05"])
    assert code == 0
    assert _last_value(capsys.readouterr().out, "train_images_per_s") > 0


def test_the_cli_trains_with_onednn_kernels_by_default():
    """TensorFlow leaves oneDNN off on AVX2-only CPUs (1.7x slower training); a fresh `nin-keras` process turns it
    on before TensorFlow loads, unless the user set TF_ENABLE_ONEDNN_OPTS."""
    import os
    import subprocess
    import sys

    from helpers import REPO_ROOT as ROOT

    env = {key: value for key, value in os.environ.items() if key != "TF_ENABLE_ONEDNN_OPTS"}
    env["PYTHONPATH"] = str(ROOT)
    argv = [sys.executable, "-m", "nin_keras", "benchmark", "train", "--variant", "mnist", "--steps", "1",
            "--warmup-steps", "0", "--batch-size", "4", "--width-multiplier", "0.05", "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["onednn"] is True
