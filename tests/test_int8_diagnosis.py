"""The int8 diagnosis (`explain_int8`) and the float fallback file, proved on a model that int8 really ruins.

`helpers.outlier_channel_model` gives two channels of `OUTLIER_CULPRIT` a 1000x range: the float model is
unchanged, plain int8 falls to about chance. The diagnosis must name the culprit first (not the layer after it,
which only inherits the damage), and keeping the culprit in float must bring the accuracy back.
"""

from __future__ import annotations

import dataclasses
import json

import helpers
import numpy as np
import pytest

from nin_keras.errors import InvalidInputError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def outlier(digits):
    (x_train, y_train), (x_test, y_test) = digits
    model = helpers.outlier_channel_model(x_train, y_train)
    float_accuracy = float(np.mean(helpers.keras_outputs(model, x_test).argmax(axis=1) == y_test))
    return model, float_accuracy


def _splits(digits):
    from nin_keras.data import as_splits

    (x_train, y_train), (x_test, y_test) = digits
    return dataclasses.replace(as_splits((x_train, y_train)), test=as_splits((x_test, y_test)).train,
                               class_names=[str(digit) for digit in range(helpers.DIGITS_CLASSES)])


def _accuracy(path, images, labels) -> float:
    from nin_keras.verification.predictor import Predictor

    return float(np.mean(Predictor(path).predict_classes(np.asarray(images, np.float32)) == labels))


def test_the_diagnosis_ranks_the_outlier_layer_first(digits, outlier):
    import nin_keras
    from nin_keras import explain_int8
    from nin_keras.verification.int8_diagnosis import format_diagnosis

    (x_train, y_train), (x_test, _) = digits
    model, _ = outlier
    diagnosis = explain_int8(model, (x_train, y_train), agreement_images=x_test)
    ranked = [row.layer for row in diagnosis.rows]
    assert ranked[0] == helpers.OUTLIER_CULPRIT, format_diagnosis(diagnosis)
    # Clearly first, not by a hair: the next layer (which inherits the damage) scores far lower.
    assert diagnosis.rows[0].own_error > 5 * diagnosis.rows[1].own_error, format_diagnosis(diagnosis)
    assert diagnosis.agreement < 0.3  # the whole int8 model disagrees with float on most test digits
    assert [row.layer for row in diagnosis.in_network_order()][0] == helpers.OUTLIER_CULPRIT
    assert f"--int8-float-layers {helpers.OUTLIER_CULPRIT}" in format_diagnosis(diagnosis)

    # The automatic mode proposes exactly the culprit: one layer is enough to come within 5 points of float.
    proposal = nin_keras.propose_int8_float_layers(model, _splits(digits), max_drop=0.05, diagnosis=diagnosis)
    assert proposal.reached and proposal.layers == (helpers.OUTLIER_CULPRIT,), proposal
    assert proposal.steps[0][1] < 0.3  # plain int8 first, at chance


def test_keeping_the_culprit_in_float_recovers_the_accuracy(digits, outlier, tmp_path):
    from nin_keras.exporting.converter import post_training_quantize
    from nin_keras.exporting.int8_layers import mixed_int8_tflite

    (x_train, y_train), (x_test, y_test) = digits
    model, float_accuracy = outlier
    int8_path, mixed_path = tmp_path / "int8.tflite", tmp_path / "mixed.tflite"
    int8_path.write_bytes(post_training_quantize(model, (x_train, y_train)))
    mixed, nodes = mixed_int8_tflite(model, x_train[:200].astype(np.float32), [helpers.OUTLIER_CULPRIT])
    mixed_path.write_bytes(mixed)
    int8_accuracy, mixed_accuracy = _accuracy(int8_path, x_test, y_test), _accuracy(mixed_path, x_test, y_test)
    assert int8_accuracy < 0.3 and mixed_accuracy >= float_accuracy - 0.05, (float_accuracy, int8_accuracy,
                                                                               mixed_accuracy)
    assert any(helpers.OUTLIER_CULPRIT in node for node in nodes)


def test_unknown_or_unquantized_fallback_layers_are_refused_with_the_valid_names(digits, outlier, tmp_path):
    import nin_keras
    from nin_keras.exporting.int8_layers import mixed_int8_tflite

    (x_train, y_train), _ = digits
    model, _ = outlier
    with pytest.raises(InvalidInputError, match="conv_a") as refused:
        nin_keras.export(model, tmp_path / "out", targets="tflite_int8", data=(x_train, y_train),
                         int8_float_layers=["no_such_layer"], progress=False)
    assert "no_such_layer" in str(refused.value) and not (tmp_path / "out").exists()
    with pytest.raises(InvalidInputError, match=r"rescaling.*choose among.*conv_a"):  # a layer the converter folds
        mixed_int8_tflite(model, x_train[:20].astype(np.float32), ["rescaling"])


def test_an_int8_export_writes_the_layer_table_the_plot_and_the_mixed_file(digits, outlier, tmp_path):
    import nin_keras

    model, float_accuracy = outlier
    out = tmp_path / "export"
    nin_keras.export(model, out, targets="tflite_int8", data=_splits(digits),
                     int8_float_layers=[helpers.OUTLIER_CULPRIT], progress=False)
    report = json.loads((out / "report.json").read_text())
    assert report["int8_layers"]["rows"][0]["layer"] == helpers.OUTLIER_CULPRIT
    assert (out / "int8_layers.png").read_bytes()[:8] == PNG_MAGIC
    assert "## int8 error per layer" in (out / "report.md").read_text()
    rows = {row["artifact"]: row for row in report["rows"]}
    assert rows["model_int8.tflite"]["accuracy"] < 0.3  # the int8 file stays fully integer, and ruined
    mixed = rows["model_int8_mixed.tflite"]
    assert mixed["accuracy"] >= float_accuracy - 0.05 and mixed["latency_ms_batch1_median"] is not None
    assert any("not for the Edge TPU" in note for note in report["notes"])
    assert mixed["metadata"] is not None and mixed["metadata"] == rows["model_int8.tflite"]["metadata"]  # labels too
    manifest = json.loads((out / "manifest.json").read_text())  # a target of the registry, listed like the others
    assert manifest["targets"]["tflite_int8_mixed"]["file"] == "model_int8_mixed.tflite"
    assert manifest["targets"]["tflite_int8_mixed"]["float_layers"] == [helpers.OUTLIER_CULPRIT]  # details, flat


def test_the_mixed_target_without_layers_is_refused_before_any_work(outlier, tmp_path):
    import nin_keras
    from nin_keras.errors import InvalidInputError

    model, _ = outlier
    with pytest.raises(InvalidInputError, match="name them with int8_float_layers="):
        nin_keras.export(model, tmp_path / "export", targets="tflite_int8_mixed", data=(np.zeros((4, 8, 8, 1)),
                         np.arange(4)), progress=False)
    assert not (tmp_path / "export").exists()


def test_the_cli_prints_the_ranked_table(outlier, tmp_path, capsys):
    model, _ = outlier
    model.save(tmp_path / "outlier.keras")
    code, out, err = helpers.run_cli(["export", tmp_path / "outlier.keras", "--targets", "tflite_int8",
                                      "--dataset", "digits", "--out", tmp_path / "export", "--explain-int8"], capsys)
    assert code == 0, err
    table = out[out.index("rank  layer"):]
    assert table.splitlines()[1].split()[:2] == ["1", helpers.OUTLIER_CULPRIT], out
    assert f"--int8-float-layers {helpers.OUTLIER_CULPRIT}" in out
