"""Export: every target's files and I/O, SavedModel signature, atomicity on failure, bad input, the CLI."""

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest

import nin_keras
from helpers import SMALL_SHAPE as SHAPE
from helpers import (assert_litert_matches_keras, random_data, run_cli, small_nin, temporary_files,
                     tflite_io_names)
from nin_keras.errors import ConversionError, IncompatibleModelError, InvalidInputError
from nin_keras.exporting import EXPORT_TARGETS, describe_tflite, export_targets

CLASS_NAMES = [f"class_{i}" for i in range(10)]


def _listing(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = small_nin()
    out = tmp_path_factory.mktemp("export") / "nin"
    opt_in = [name for name, target in EXPORT_TARGETS.items() if not target.in_all]  # "all" leaves them out
    manifest = export_targets(model, out, targets=["all", *opt_in], data=random_data(48), class_names=CLASS_NAMES,
                              representative_samples=32, progress=False, int8_float_layers=["mlpconv3_mlp2_relu"])
    return model, out, manifest


def test_all_targets_write_their_files(exported):
    _, out, manifest = exported
    for target, info in EXPORT_TARGETS.items():
        assert (out / info.file).exists(), target
        assert target in manifest["targets"]
    for extra in ("labels.txt", "manifest.json", "gpu_compatibility.txt", "edgetpu_check.json"):
        assert (out / extra).is_file(), extra
    assert (out / "labels.txt").read_text().splitlines() == CLASS_NAMES
    assert json.loads((out / "manifest.json").read_text())["num_classes"] == 10
    assert not temporary_files(out.parent)


@pytest.fixture(scope="module")
def verified(exported):
    """The rows `verify_export` gives for the module's export of every target (one timed call each)."""
    from nin_keras.verification import verify_export

    model, out, _ = exported
    return verify_export(out, random_data(16, seed=7), reference_model=model, progress=False, runs=1)


@pytest.mark.parametrize("name", list(EXPORT_TARGETS))
def test_every_registered_target_writes_its_file_manifest_entry_and_report_row(exported, verified, name):
    """The registry's contract, for each target in it: a new target is checked the moment it is registered."""
    from nin_keras.exporting import ManifestEntry, unavailable_targets
    from nin_keras.verification import ReportRow

    _, out, manifest = exported
    spec = EXPORT_TARGETS[name]
    if name in unavailable_targets():  # "all" leaves it out here, and says so
        assert name in manifest.skipped and name not in manifest.targets
        pytest.skip(f"{name}: {manifest.skipped[name]}")
    assert (out / spec.file).exists()
    entry = manifest.targets[name]
    assert isinstance(entry, ManifestEntry)
    assert (entry.target, entry.file, entry.description) == (name, spec.file, spec.description)
    assert entry.size_bytes > 0 and entry.seconds is not None
    on_disk = json.loads((out / "manifest.json").read_text())["targets"][name]
    assert on_disk == json.loads(json.dumps(entry.to_dict())) and on_disk["file"] == manifest["targets"][name]["file"]
    rows = [row for row in verified if row.target == name]
    assert len(rows) == 1 and isinstance(rows[0], ReportRow), [row.artifact for row in verified]
    row = rows[0]
    assert row.artifact == spec.file.split("/")[0] and row.error is None and row["artifact"] == row.artifact
    assert row.accuracy is not None and row.agreement is not None and row.latency_ms_batch1_median > 0
    report = json.loads((out / "report.json").read_text())
    assert json.loads(json.dumps(row.to_dict())) in report["rows"]
    assert f"| {row.artifact} |" in (out / "report.md").read_text()
    # Every .tflite file for the CPU takes part in naming the fastest file here; the Edge TPU's does not.
    timed = {entry["artifact"] for entry in report["speed"]["ranking"]}
    assert (row.artifact in timed) == (row.artifact.endswith(".tflite") and name != "edgetpu")


def test_tflite_io_types_are_what_the_names_say(exported):
    _, out, _ = exported
    expected = {
        "model_float32.tflite": ("float32", -1),
        "model_float16.tflite": ("float32", -1),
        "model_dynamic.tflite": ("float32", -1),
        "model_int8.tflite": ("int8", -1),
        "model_edgetpu_ready.tflite": ("uint8", 1),
    }
    for name, (dtype, batch) in expected.items():
        info = describe_tflite(out / name)
        assert info["inputs"][0]["dtype"] == dtype and info["outputs"][0]["dtype"] == dtype, name
        assert info["inputs"][0]["shape"] == [batch, *SHAPE], name
        assert "FlexDelegate" not in str(info["ops"]) and not any(op.startswith("CUSTOM") for op in info["ops"])
    int8 = describe_tflite(out / "model_int8.tflite")["ops"]
    assert "QUANTIZE" not in int8 and "DEQUANTIZE" not in int8
    sizes = {n: (out / n).stat().st_size for n in expected}
    assert sizes["model_int8.tflite"] < 0.5 * sizes["model_float32.tflite"]
    assert sizes["model_float16.tflite"] < sizes["model_float32.tflite"]


def test_every_tflite_carries_metadata_and_the_serving_names(exported):
    from nin_keras.exporting.metadata import read_metadata

    _, out, manifest = exported
    for target, info in EXPORT_TARGETS.items():
        if not info.file.endswith(".tflite"):
            continue
        metadata = read_metadata((out / info.file).read_bytes())
        assert metadata["packed_files"]["labels.txt"].decode().splitlines() == CLASS_NAMES, target
        assert metadata["input"][0]["color_space"] == "RGB" and metadata["input"][0]["size"] == SHAPE[:2]
        assert metadata["input"][0]["normalization"] == {"mean": [0.0], "std": [1.0]}
        assert manifest["targets"][target]["metadata"]["output"].startswith("probabilities: 10 class"), target
        signatures = {"serving_default": {"inputs": ["image"], "outputs": ["probabilities"]}}
        assert tflite_io_names(out / info.file) == (signatures, ["image"], ["probabilities"]), target


def test_tflite_numerics_on_raw_pixels(exported):
    model, out, _ = exported
    images, _ = random_data(12, seed=3)
    assert_litert_matches_keras(out / "model_float32.tflite", model, images, atol=1e-5)
    for name in ("model_float16.tflite", "model_dynamic.tflite", "model_int8.tflite", "model_edgetpu_ready.tflite"):
        assert_litert_matches_keras(out / name, model, images, atol=0.1)


def test_saved_model_signature_for_tf_serving(exported):
    import tensorflow as tf

    model, out, manifest = exported
    loaded = tf.saved_model.load(str(out / "saved_model" / "1"))
    signature = loaded.signatures["serving_default"]
    _, inputs = signature.structured_input_signature
    assert list(inputs) == ["image"] and inputs["image"].dtype == tf.float32
    assert inputs["image"].shape.as_list() == [None, *SHAPE]
    images, _ = random_data(3, seed=4)
    result = signature(image=tf.constant(images))
    assert set(result) == {"probabilities", "class_id"}
    np.testing.assert_allclose(result["probabilities"].numpy(), model.predict(images, verbose=0), atol=1e-5)
    np.testing.assert_array_equal(result["class_id"].numpy(), result["probabilities"].numpy().argmax(-1))
    assert manifest["targets"]["saved_model"]["file"] == "saved_model/1"


def test_saved_model_carries_tf_serving_warmup_requests(exported):
    import tensorflow as tf

    prediction_log_pb2 = pytest.importorskip("tensorflow_serving.apis.prediction_log_pb2")
    _, out, manifest = exported
    version = out / "saved_model" / "1"
    assert manifest["targets"]["saved_model"]["warmup_requests"] == "assets.extra/tf_serving_warmup_requests"
    records = list(tf.data.TFRecordDataset(str(version / "assets.extra" / "tf_serving_warmup_requests"))
                   .as_numpy_iterator())
    assert len(records) == 3
    signature = tf.saved_model.load(str(version)).signatures["serving_default"]
    for record in records:
        request = prediction_log_pb2.PredictionLog.FromString(record).predict_log.request
        assert request.model_spec.signature_name == "serving_default" and list(request.inputs) == ["image"]
        image = tf.make_ndarray(request.inputs["image"])
        assert image.dtype == np.float32 and image.shape == (1, *SHAPE)
        assert signature(image=tf.constant(image))["probabilities"].shape == (1, 10)  # a request it serves


def test_warmup_records_encoded_without_tensorflow_serving_are_the_same_messages():
    import tensorflow as tf

    prediction_log_pb2 = pytest.importorskip("tensorflow_serving.apis.prediction_log_pb2")
    from nin_keras.exporting.warmup import _encode_prediction_log, warmup_records

    batch = np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
    with_package = warmup_records([batch], model_name="nin_cifar")[0]
    by_hand = _encode_prediction_log("nin_cifar", tf.make_tensor_proto(batch).SerializeToString())
    parse = prediction_log_pb2.PredictionLog.FromString
    assert parse(by_hand) == parse(with_package)
    assert parse(by_hand).predict_log.request.model_spec.name == "nin_cifar"


def test_float16_records_gpu_compatibility(exported):
    _, out, manifest = exported
    entry = manifest["targets"]["tflite_float16"]["gpu_compatibility"]
    assert entry["compatible"] is True
    assert "GPU delegate" in (out / "gpu_compatibility.txt").read_text()


def test_failure_mid_export_leaves_previous_export_untouched(exported, monkeypatch, tmp_path):
    model, _, _ = exported
    out = tmp_path / "nin"
    export_targets(model, out, targets="keras,tflite_float32", progress=False)
    before = _listing(out)

    def broken(context, out_dir):
        (Path(out_dir) / "model_dynamic.tflite").write_bytes(b"partial")
        raise ConversionError("injected converter failure")

    monkeypatch.setitem(EXPORT_TARGETS, "tflite_dynamic", dataclasses.replace(EXPORT_TARGETS["tflite_dynamic"],
                                                                              write=broken))
    with pytest.raises(ConversionError, match="injected"):
        export_targets(model, out, targets="keras,tflite_float32,tflite_dynamic", progress=False)
    assert _listing(out) == before
    assert not temporary_files(tmp_path)
    # A first export that fails leaves no folder at all.
    with pytest.raises(ConversionError):
        export_targets(model, tmp_path / "fresh", targets="tflite_dynamic", progress=False)
    assert not (tmp_path / "fresh").exists() and not temporary_files(tmp_path)


def test_reexport_replaces_only_the_chosen_targets(exported, tmp_path):
    model, _, _ = exported
    out = tmp_path / "nin"
    export_targets(model, out, targets="keras,tflite_float32", progress=False)
    keras_bytes = (out / "model.keras").read_bytes()
    manifest = export_targets(model, out, targets="tflite_dynamic", progress=False)
    assert (out / "model.keras").read_bytes() == keras_bytes
    assert {"keras", "tflite_float32", "tflite_dynamic"} <= set(manifest["targets"])
    assert not temporary_files(tmp_path)


def test_bad_input_is_refused_before_writing(exported, tmp_path):
    model, _, _ = exported
    out = tmp_path / "x"
    with pytest.raises(InvalidInputError, match="Known targets: all, keras, saved_model"):
        export_targets(model, out, targets="keras,coreml", progress=False)
    with pytest.raises(InvalidInputError, match="representative data"):
        export_targets(model, out, targets="tflite_int8", progress=False)
    with pytest.raises(IncompatibleModelError, match=r"16, 16, 3|16x16x3"):  # names the model's shape
        export_targets(model, out, targets="edgetpu", data=random_data(8, shape=(8, 8, 3)), progress=False)
    features = nin_keras.build_nin(10, input_shape=SHAPE, width_multiplier=0.1, include_top=False)
    with pytest.raises(IncompatibleModelError):
        export_targets(features, out, targets="keras", progress=False)
    assert not out.exists() and not temporary_files(tmp_path)


@pytest.mark.slow
def test_workflow_export_with_qat_and_verification(tmp_path):
    pytest.importorskip("nin_keras.verification")
    model = small_nin()
    result = nin_keras.export(model, tmp_path / "out", targets="keras,tflite_float32,tflite_int8",
                              data=random_data(64), qat_epochs=1, progress=False)
    manifest = result["manifest"]
    assert manifest["targets"]["tflite_int8"]["quantization"] == "qat"
    assert manifest["qat"]["epochs"] == 1
    signature = {"serving_default": {"inputs": ["image"], "outputs": ["probabilities"]}}
    assert tflite_io_names(tmp_path / "out" / "model_int8.tflite") == (signature, ["image"], ["probabilities"])
    assert (tmp_path / "out" / "report.json").is_file() and (tmp_path / "out" / "report.md").is_file()
    report = (tmp_path / "out" / "report.md").read_text()
    assert "- `model_int8.tflite`: LiteRT C++/Java/Python on CPU" in report  # which client takes which file
    assert "Metadata: image: RGB image 16x16, normalization mean [0.0] std [1.0]; probabilities: 10 class" in report
    assert len(result["report"]) >= 3


@pytest.mark.slow
def test_workflow_keeps_the_better_int8_model_on_validation_data(tmp_path):
    data = nin_keras.load_dataset("synthetic", input_shape=SHAPE, num_classes=10, size=80, validation_split=0.25,
                                  batch_size=16)
    model = small_nin()
    result = nin_keras.export(model, tmp_path / "out", targets="tflite_int8", data=data, qat_epochs=1,
                              verify=False, progress=False)
    choice = result["int8_choice"]
    assert choice["chosen"] in ("qat", "ptq") and choice["split"] == "validation"
    scores = choice["validation_accuracy"]
    assert all(0.0 <= scores[k] <= 1.0 for k in ("qat", "ptq"))
    assert choice["chosen"] == ("ptq" if scores["ptq"] > scores["qat"] else "qat")
    # What was exported is what was chosen, and the choice is on disk beside it.
    assert result["manifest"]["targets"]["tflite_int8"]["quantization"] == choice["chosen"]
    assert json.loads((tmp_path / "out" / "int8_choice.json").read_text()) == choice

    forced = nin_keras.export(model, tmp_path / "qat", targets="tflite_int8", data=data, qat_epochs=1,
                              verify=False, keep_better_int8=False, progress=False)
    assert forced["int8_choice"] is None
    assert forced["manifest"]["targets"]["tflite_int8"]["quantization"] == "qat"


def test_default_out_dir_is_export_model_name(exported, tmp_path, monkeypatch):
    model, _, _ = exported
    monkeypatch.chdir(tmp_path)
    result = nin_keras.export(model, targets="keras", progress=False)
    assert Path(result["out_dir"]) == Path("export") / model.name
    assert (tmp_path / "export" / model.name / "model.keras").is_file()


def test_cli_export_and_edgetpu_findings(exported, tmp_path, capsys):
    model, _, _ = exported
    path = nin_keras.save_model(model, tmp_path / "m.keras")
    code, out, err = run_cli(["export", str(path), "--targets", "keras,edgetpu", "--dataset", "synthetic",
                           "--out", str(tmp_path / "out"), "--no-verify", "--representative-samples", "16"],
                          capsys)
    assert code == 0, err
    assert "Edge TPU check of model_edgetpu_ready.tflite: compatible" in out
    assert (tmp_path / "out" / "model_edgetpu_ready.tflite").is_file()


def test_cli_export_names_the_fastest_file_here(exported, tmp_path, capsys):
    model, _, _ = exported
    path = nin_keras.save_model(model, tmp_path / "m.keras")
    code, out, err = run_cli(["export", str(path), "--targets", "tflite_float32,tflite_dynamic", "--dataset",
                              "synthetic", "--out", str(tmp_path / "out")], capsys)
    assert code == 0, err
    speed = json.loads((tmp_path / "out" / "report.json").read_text())["speed"]
    line = next(line for line in out.splitlines() if line.startswith("Fastest on this machine"))
    assert f"): {speed['fastest']} (" in line and "model_float32.tflite" in line and "model_dynamic.tflite" in line
    assert speed["isa"] in line


@pytest.mark.parametrize("argv_tail, message", [
    (["--targets", "keras,coreml"], "Known targets"),
    (["--targets", "tflite_int8"], "representative data"),
])
def test_cli_bad_targets_one_line_exit_2(exported, tmp_path, capsys, argv_tail, message):
    model, _, _ = exported
    path = nin_keras.save_model(model, tmp_path / "m.keras")
    code, _, err = run_cli(["export", str(path), "--out", str(tmp_path / "o"), *argv_tail], capsys)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("content", [None, b"not a zip", b"PK\x03\x04broken"])
def test_cli_bad_model_file_one_line_exit_2(tmp_path, capsys, content):
    path = tmp_path / "model.keras"
    if content is not None:
        path.write_bytes(content)
    code, _, err = run_cli(["export", str(path), "--targets", "keras", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_cli_data_that_does_not_fit_the_model(exported, tmp_path, capsys):
    model, _, _ = exported
    path = nin_keras.save_model(model, tmp_path / "m.keras")
    code, _, err = run_cli(["export", str(path), "--targets", "tflite_int8", "--dataset", "digits",
                         "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()
    assert os.listdir(tmp_path) == ["m.keras"]


def test_mixed_precision_model_exports_as_float32(tmp_path):
    import keras

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = small_nin()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.layers[2].compute_dtype == "bfloat16"
    out = tmp_path / "mixed"
    export_targets(model, out, targets="keras,tflite_float32,tflite_int8", data=random_data(32),
                   representative_samples=16, progress=False)
    images, _ = random_data(6, seed=5)
    assert_litert_matches_keras(out / "model_float32.tflite", model, images, atol=0.05)
    assert describe_tflite(out / "model_int8.tflite")["inputs"][0]["dtype"] == "int8"
    assert nin_keras.load_model(out / "model.keras").layers[2].compute_dtype == "bfloat16"  # saved as given


def test_a_model_of_any_size_exports_at_the_size_asked(tmp_path):
    """build_nin(input_shape=(None, None, C)) exports only at a static size: refused without one, written at it."""
    model = nin_keras.build_nin(10, input_shape=(None, None, 3), width_multiplier=0.1)
    with pytest.raises(InvalidInputError, match="input_size"):
        nin_keras.export(model, tmp_path / "refused", targets="tflite_float32", progress=False)
    assert not (tmp_path / "refused").exists()

    nin_keras.export(model, tmp_path / "out", targets="tflite_float32", input_size="20x24", progress=False)
    path = tmp_path / "out" / EXPORT_TARGETS["tflite_float32"].file
    assert describe_tflite(path)["inputs"][0]["shape"][1:] == [20, 24, 3]
    images = random_data(3, (20, 24, 3))[0]
    assert_litert_matches_keras(path, model, images, atol=1e-4)  # the weights came along
