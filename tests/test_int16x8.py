"""The tflite_int16x8 target: int8 weights, int16 activations, float32 I/O, verified like every artifact.

Its reason to exist is shown on `helpers.outlier_channel_model`, whose plain int8 file is at chance: the
int16x8 file keeps the float model's accuracy on held-back digits.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import helpers
import nin_keras
from nin_keras.exporting import check_edgetpu, describe_tflite, post_training_quantize, select_targets
from nin_keras.verification import load_artifact, verify_export

pytestmark = pytest.mark.usefixtures("restore_process_state")

INT16X8_FILE = "model_int16x8.tflite"


def _accuracy(artifact, images, labels) -> float:
    return float(np.mean(load_artifact(artifact).predict(images).argmax(-1) == labels))


def test_int16x8_exports_verifies_and_agrees_with_keras(trained_digits_model, digits, tmp_path):
    (x_train, y_train), (x_test, y_test) = digits
    out = tmp_path / "out"
    manifest = nin_keras.export(trained_digits_model, out, targets="tflite_int16x8", data=(x_train, y_train),
                                class_names=[f"digit {i}" for i in range(10)], verify=False,
                                progress=False).manifest
    assert list(manifest.targets) == ["tflite_int16x8"] and (out / INT16X8_FILE).is_file()
    info = describe_tflite(out / INT16X8_FILE)
    assert info["inputs"][0]["dtype"] == "float32" and info["outputs"][0]["dtype"] == "float32"  # float I/O

    rows = verify_export(out, (x_test, y_test), reference_model=trained_digits_model, progress=False, runs=3)
    row = next(row for row in rows if row.target == "tflite_int16x8")
    assert row.error is None and row.precision == "int16 activations / int8 weights"
    assert row.agreement >= 0.95 and row.accuracy >= 0.8, row
    assert row.latency_ms_batch1_median is not None and row.latency_ms_batch1_median > 0
    assert row.details["metadata"] is not None  # TFLite metadata packed, as in every .tflite

    # The Edge TPU cannot take 16-bit activations: its static check says so instead of failing.
    findings = check_edgetpu(out / INT16X8_FILE)
    assert findings["compatible"] is False and not findings["all_tensors_8bit"]
    assert any("int16" in problem for problem in findings["problems"]), findings["problems"]


def test_int16x8_is_opt_in_not_part_of_all():
    assert "tflite_int16x8" not in select_targets("all")
    assert "tflite_int16x8" in select_targets("all,tflite_int16x8")


def test_int16x8_recovers_the_outlier_model_that_int8_ruins(digits, tmp_path):
    (x_train, y_train), (x_test, y_test) = digits
    model = helpers.outlier_channel_model(x_train, y_train)
    float_accuracy = _accuracy(model, x_test, y_test)
    int8_path = tmp_path / "int8.tflite"
    int8_path.write_bytes(post_training_quantize(model, (x_train, y_train)))
    int8_accuracy = _accuracy(int8_path, x_test, y_test)
    nin_keras.export(model, tmp_path / "out", targets="tflite_int16x8", data=(x_train, y_train), verify=False,
                     progress=False)
    int16x8_accuracy = _accuracy(tmp_path / "out" / INT16X8_FILE, x_test, y_test)
    assert float_accuracy > 0.85 and int8_accuracy < 0.3, (float_accuracy, int8_accuracy)
    assert int16x8_accuracy >= float_accuracy - 0.05, (float_accuracy, int8_accuracy, int16x8_accuracy)


def test_cli_exports_int16x8_with_the_digits_dataset(trained_digits_model, tmp_path, capsys):
    path = nin_keras.save_model(trained_digits_model, tmp_path / "m.keras")
    code, _, err = helpers.run_cli(["export", path, "--targets", "tflite_int16x8", "--dataset", "digits",
                                    "--representative-samples", "64", "--out", tmp_path / "o"], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    row = next(row for row in report["rows"] if row["target"] == "tflite_int16x8")
    assert row["artifact"] == INT16X8_FILE and row["agreement"] >= 0.95 and not row.get("error"), row


def test_qat_is_refused_for_an_int16x8_only_export(trained_digits_model, digits, tmp_path):
    """QAT's ranges are 8-bit and tflite_int16x8 is converted from the float model: training for it alone
    would spend epochs on nothing, so it is refused before any work, naming the targets QAT serves."""
    from nin_keras.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match=r"only affects the full-integer targets \(tflite_int8, edgetpu\)"):
        nin_keras.export(trained_digits_model, tmp_path / "out", targets="tflite_int16x8", data=digits[0],
                         qat_epochs=1, progress=False)
    assert not (tmp_path / "out").exists()
