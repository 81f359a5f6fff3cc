"""The onnx target: Keras' own ONNX exporter, names clients expect, checked with onnxruntime like every artifact."""

from __future__ import annotations

import numpy as np
import pytest

import helpers
import nin_keras
from nin_keras.errors import InvalidInputError
from nin_keras import export_layout
from nin_keras.exporting import select_targets


@pytest.fixture(scope="module")
def onnx_export(tmp_path_factory):
    pytest.importorskip("tf2onnx")
    pytest.importorskip("onnxruntime")
    model = helpers.small_nin()
    images, labels = helpers.random_data(48)
    model(images[:8], training=True)  # moving statistics away from their initial values
    out = tmp_path_factory.mktemp("onnx") / "export"
    result = nin_keras.export(model, out, targets="keras,onnx", data=(images, labels), progress=False)
    return model, out, result, images


def test_onnx_matches_keras_with_image_and_probabilities(onnx_export):
    import onnxruntime

    model, out, result, images = onnx_export
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == ["probabilities"]
    assert session.get_inputs()[0].shape[0] == "batch"
    probabilities = session.run(["probabilities"], {"image": images.astype(np.float32)})[0]
    np.testing.assert_allclose(probabilities, model.predict(images, verbose=0), atol=1e-5)
    entry = result.manifest.targets["onnx"]
    assert entry.input["name"] == "image" and entry.output["name"] == "probabilities" and entry.details["opset"]
    assert result["manifest"]["targets"]["onnx"]["opset"] == entry.details["opset"]  # dict reading, as before


def test_onnx_is_verified_like_every_artifact(onnx_export):
    _, out, result, _ = onnx_export
    row = next(row for row in result.report if row.artifact == "model.onnx")
    assert row.agreement == 1.0 and row.latency_ms_batch1_median > 0
    assert "- `model.onnx`: onnxruntime" in (out / "report.md").read_text()


def test_without_the_extra_all_skips_onnx_and_naming_it_is_refused(monkeypatch):
    monkeypatch.setattr(export_layout, "find_spec", lambda name: None if name == "tf2onnx" else object())
    assert "onnx" not in select_targets("all")
    assert "tf2onnx" in select_targets("all").skipped["onnx"] and select_targets("keras").skipped == {}
    assert select_targets("keras,all").skipped == select_targets("all").skipped  # "all" anywhere in the list
    with pytest.raises(InvalidInputError, match=r"onnx target needs tf2onnx.*nin-keras\[onnx\]"):
        select_targets("keras,onnx")


def test_cli_exports_onnx_from_a_model_file(onnx_export, tmp_path, capsys):
    """A model read from a .keras file has not been called yet, which Keras' exporter refuses by default."""
    import onnxruntime

    model, _, _, images = onnx_export
    path = nin_keras.save_model(model, tmp_path / "m.keras")
    code, _, err = helpers.run_cli(["export", str(path), "--targets", "onnx", "--out", str(tmp_path / "o"),
                                    "--no-verify"], capsys)
    assert code == 0, err
    session = onnxruntime.InferenceSession(str(tmp_path / "o" / "model.onnx"), providers=["CPUExecutionProvider"])
    probabilities = session.run(["probabilities"], {"image": images[:4]})[0]
    np.testing.assert_allclose(probabilities, model.predict(images[:4], verbose=0), atol=1e-5)
