"""Verification: one loader for every artifact kind, evaluate, benchmark_inference, verify_export.

The artifacts are conftest's `digits_artifacts`: a small NIN trained for a few seconds on scikit-learn's digits,
saved as .keras, a SavedModel and float32 / float16 / int8-I/O / uint8-I/O batch-1 .tflite files with
TensorFlow's converter directly, so these tests do not depend on the exporter.
"""

import json
import shutil

import numpy as np
import pytest

from helpers import DIGITS_CLASSES as NUM_CLASSES
from helpers import DIGITS_SHAPE as SHAPE
from helpers import assert_litert_matches_keras, assert_predictions_match, convert_saved_model, serving_archive
from nin_keras.errors import IncompatibleModelError, InvalidInputError

def test_load_artifact_describes_each_kind(digits_artifacts, trained_digits_model):
    from nin_keras.verification import load_artifact

    expected = {
        "model.keras": ("keras", "float32", "float32", None),
        "saved_model": ("saved_model", "float32", "float32", None),
        "model_float32.tflite": ("tflite", "float32", "float32", None),
        "model_float16.tflite": ("tflite", "float16 weights", "float32", None),
        "model_int8.tflite": ("tflite", "full int8", "int8", None),
        "model_edgetpu_ready.tflite": ("tflite", "full int8 (uint8 I/O)", "uint8", 1),
    }
    for name, (kind, precision, in_dtype, static_batch) in expected.items():
        runner = load_artifact(digits_artifacts / name)
        assert (runner.kind, runner.precision, runner.input_details["dtype"]) == (kind, precision, in_dtype), name
        assert runner.static_batch == static_batch, name
        assert runner.input_shape == SHAPE and runner.num_classes == NUM_CLASSES, name
        assert runner.input_details["shape"] == [static_batch, *SHAPE], name
        assert runner.size_bytes > 0
        if in_dtype in ("int8", "uint8"):
            scale, zero_point = runner.input_details["quantization"]
            assert scale == pytest.approx(1.0, rel=0.05)  # raw pixels 0..255 in, 8 bits: ~1 per step
            assert zero_point == (-128 if in_dtype == "int8" else 0)
            assert runner.output_details["quantization"] is not None
        else:
            assert runner.input_details["quantization"] is None
    in_memory = load_artifact(trained_digits_model)
    assert in_memory.kind == "keras" and in_memory.path is None and in_memory.size_bytes is None


def test_saved_model_parent_folder_uses_the_highest_version(digits_artifacts, tmp_path):
    from nin_keras.verification import load_artifact

    parent = tmp_path / "saved_model"
    shutil.copytree(digits_artifacts / "saved_model" / "1", parent / "3")
    shutil.copytree(digits_artifacts / "saved_model" / "1", parent / "12")
    (parent / "20").mkdir()  # no saved_model.pb: not a version
    runner = load_artifact(parent)
    assert runner.kind == "saved_model" and runner.path.name == "12"
    assert load_artifact(parent / "3").path.name == "3"


def test_quantize_formula_rounds_and_clips():
    from nin_keras.verification.artifacts import dequantize, quantize

    x = np.array([-10.0, 0.0, 0.4, 0.6, 127.0, 300.0])
    np.testing.assert_array_equal(quantize(x, 1.0, -128, np.int8), [-128, -128, -128, -127, -1, 127])
    np.testing.assert_array_equal(quantize(x, 2.0, 0, np.uint8), [0, 0, 0, 0, 64, 150])
    np.testing.assert_allclose(dequantize(np.array([-128, 0, 127], np.int8), 0.5, -128), [0.0, 64.0, 127.5])


def test_float32_tflite_agrees_with_keras(digits_artifacts, digits_test):
    from nin_keras.verification import evaluate

    keras_result = evaluate(digits_artifacts / "model.keras", digits_test, progress=False)
    assert keras_result["accuracy"] > 0.85  # the tiny model did learn something
    for name in ("model_float32.tflite", "saved_model", "model_float16.tflite"):
        result = evaluate(digits_artifacts / name, digits_test, reference=digits_artifacts / "model.keras",
                          progress=False)
        assert result["num_examples"] == len(digits_test[1])
        assert result["agreement"] >= 0.995, name
        assert abs(result["accuracy"] - keras_result["accuracy"]) <= 0.005, name
    assert keras_result["agreement"] is None
    assert 0 < keras_result["mean_confidence"] <= 1 and 0 < keras_result["top5_accuracy"] <= 1


def test_integer_models_quantize_raw_pixels_correctly(digits_artifacts, trained_digits_model, digits_test):
    from nin_keras.verification import evaluate, load_artifact

    images, _ = digits_test
    float_probs = trained_digits_model.predict(images[:64].astype("float32"), verbose=0)
    for name in ("model_int8.tflite", "model_edgetpu_ready.tflite"):
        # The file itself is right (LiteRT's own Interpreter), so a failure below is nin_keras' runner's.
        assert_litert_matches_keras(digits_artifacts / name, trained_digits_model, images[:64],
                                    min_top1_agreement=0.9, atol=0.2)
        runner = load_artifact(digits_artifacts / name)
        probs = runner.predict(images[:64])
        assert probs.dtype == np.float32 and probs.shape == (64, NUM_CLASSES)
        # Wrongly quantized inputs (e.g. pixels cast without scale/zero point) would wreck these.
        assert_predictions_match(probs, float_probs, min_top1_agreement=0.9, atol=0.2,
                                 what=f"nin_keras' runner of {name} vs Keras")
        result = evaluate(digits_artifacts / name, digits_test, reference=trained_digits_model, progress=False)
        assert result["agreement"] >= 0.9, name
    int8 = evaluate(digits_artifacts / "model_int8.tflite", digits_test, progress=False)
    keras_result = evaluate(trained_digits_model, digits_test, progress=False)
    assert abs(int8["accuracy"] - keras_result["accuracy"]) <= 0.05
    # what reaches the interpreter is q = round(x / scale + zero_point), clipped
    runner = load_artifact(digits_artifacts / "model_edgetpu_ready.tflite")
    sent = []
    set_tensor = runner._interpreter.set_tensor
    runner._interpreter.set_tensor = lambda index, value: (sent.append(value.copy()), set_tensor(index, value))[1]
    runner.predict(images[:1])
    scale, zero_point = runner.input_details["quantization"]
    expected = np.clip(np.rint(images[:1] / scale + zero_point), 0, 255).astype(np.uint8)
    assert sent[0].dtype == np.uint8
    np.testing.assert_array_equal(sent[0], expected)
    # float pixels give the same answers as uint8 pixels
    runner = load_artifact(digits_artifacts / "model_int8.tflite")
    np.testing.assert_array_equal(runner.predict(images[:16]), runner.predict(images[:16].astype(np.float32)))


def test_evaluate_accepts_every_data_form(digits_artifacts, digits_test, capsys):
    import tensorflow as tf

    from nin_keras.data.splits import DatasetSplits
    from nin_keras.verification import evaluate

    images, labels = digits_test
    tflite = digits_artifacts / "model_float32.tflite"
    base = evaluate(tflite, (images, labels), progress=False)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(50)
    assert evaluate(tflite, dataset, progress=False)["accuracy"] == base["accuracy"]
    splits = DatasetSplits(name="digits-test", train=dataset, validation=None, test=dataset,
                           num_classes=NUM_CLASSES, class_names=[str(i) for i in range(10)], input_shape=SHAPE)
    assert evaluate(tflite, splits, progress=False)["accuracy"] == base["accuracy"]
    limited = evaluate(tflite, dataset, limit=120, batch_size=7, progress=True)  # crosses dataset batches
    assert limited["num_examples"] == 120
    unbatched = tf.data.Dataset.from_tensor_slices((images, labels))
    assert evaluate(tflite, unbatched, progress=False)["accuracy"] == base["accuracy"]
    one_hot = np.eye(NUM_CLASSES, dtype=np.float32)[labels]
    assert evaluate(tflite, (images, one_hot), progress=False)["accuracy"] == base["accuracy"]
    assert "model_float32.tflite" in capsys.readouterr().err  # the progress bar went to stderr
    # one channel models also take (N, H, W) images
    assert evaluate(tflite, (images[..., 0], labels), progress=False)["accuracy"] == base["accuracy"]


def test_bad_files_are_refused_clearly(digits_artifacts, tmp_path):
    from nin_keras.verification import load_artifact

    random_file = tmp_path / "random.tflite"
    random_file.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(InvalidInputError, match="random.tflite is not a TFLite model"):
        load_artifact(random_file)
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes((digits_artifacts / "model_float32.tflite").read_bytes()[:3000])
    with pytest.raises(InvalidInputError, match="truncated.tflite is not a valid TFLite model"):
        load_artifact(truncated)
    with pytest.raises(FileNotFoundError, match="missing.tflite"):
        load_artifact(tmp_path / "missing.tflite")
    other = tmp_path / "weights.h5"
    other.write_bytes(b"\x89HDF")
    with pytest.raises(InvalidInputError, match=r"Unknown artifact type.*\.keras.*SavedModel.*\.tflite"):
        load_artifact(other)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match="not a SavedModel"):
        load_artifact(tmp_path / "empty")
    with pytest.raises(InvalidInputError, match="export folder, not one artifact: name one of random.tflite"):
        load_artifact(tmp_path)
    with pytest.raises(InvalidInputError):
        load_artifact(42)


def test_saved_model_without_serving_default_is_refused(tmp_path):
    import tensorflow as tf

    from nin_keras.verification import load_artifact

    module = tf.Module()
    module.scale = tf.Variable(2.0)
    module.double = tf.function(lambda x: x * module.scale, input_signature=[tf.TensorSpec([None], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"double": module.double})
    with pytest.raises(InvalidInputError, match=r"no 'serving_default' signature \(it has: double\)"):
        load_artifact(tmp_path / "sm")


def test_data_that_does_not_fit_names_both_shapes_and_class_counts(digits_artifacts, digits_test):
    from nin_keras.data.splits import DatasetSplits
    from nin_keras.verification import evaluate

    images, labels = digits_test
    wrong_images = np.zeros((4, 28, 28, 1), np.uint8)
    with pytest.raises(IncompatibleModelError, match=r"8x8x1.*\(4, 28, 28, 1\)"):
        evaluate(digits_artifacts / "model_int8.tflite", (wrong_images, labels[:4]), progress=False)
    with pytest.raises(IncompatibleModelError, match=r"labels run from 0 to 12 .* 10 classes"):
        evaluate(digits_artifacts / "model.keras", (images[:3], np.array([0, 5, 12])), progress=False)
    splits = DatasetSplits(name="x", train=None, validation=None, test=(images, labels), num_classes=3,
                           class_names=["a", "b", "c"], input_shape=SHAPE)
    with pytest.raises(IncompatibleModelError, match="3 classes .* 10 class scores"):
        evaluate(digits_artifacts / "model_float32.tflite", splits, progress=False)
    with pytest.raises(ValueError, match="limit"):
        evaluate(digits_artifacts / "model_float32.tflite", digits_test, limit=0, progress=False)


def test_benchmark_inference_reports_latency_and_throughput(digits_artifacts):
    from nin_keras.verification import benchmark_inference

    keys = {"latency_ms_batch1_median", "latency_ms_batch1_p90", "throughput_images_per_s", "threads", "runs"}
    for name, batch in (("model_int8.tflite", 8), ("model_edgetpu_ready.tflite", 1), ("model.keras", 8)):
        result = benchmark_inference(digits_artifacts / name, runs=5, warmup=1, threads=1, batch_size=8)
        assert keys <= set(result), name
        assert 0 < result["latency_ms_batch1_median"] <= result["latency_ms_batch1_p90"]
        assert result["throughput_images_per_s"] > 0 and result["throughput_batch_size"] == batch
        assert result["runs"] == 5
        # invoke() alone is timed for .tflite files only (the model's own time, no Python-side work).
        invoke = result["latency_ms_batch1_invoke_median"]
        assert (invoke is None) == name.endswith(".keras") and (invoke is None or invoke > 0)
    assert benchmark_inference(digits_artifacts / "model_int8.tflite", runs=2, warmup=0, threads=1)["threads"] == 1
    with pytest.raises(ValueError, match="runs"):
        benchmark_inference(digits_artifacts / "model_int8.tflite", runs=0)


def test_verify_export_writes_both_reports(digits_artifacts, digits_test, tmp_path):
    from nin_keras.verification import ROW_KEYS, verify_export

    out = tmp_path / "export"
    shutil.copytree(digits_artifacts, out)
    (out / "edgetpu_check.json").write_text(json.dumps({"compatible": True, "problems": []}))
    (out / "model_edgetpu.tflite").write_bytes(b"\x00" * 64)  # stands in for a compiled Edge TPU file
    with pytest.warns(UserWarning, match="model_edgetpu.tflite"):
        rows = verify_export(out, digits_test, progress=False, runs=3)

    names = [row["artifact"] for row in rows]
    assert names == ["model.keras", "saved_model", "model_float32.tflite", "model_float16.tflite",
                     "model_int8.tflite", "model_edgetpu_ready.tflite", "model_edgetpu.tflite"]
    report = json.loads((out / "report.json").read_text())
    assert report["rows"] == json.loads(json.dumps([row.to_dict() for row in rows]))
    for row in rows:
        assert set(ROW_KEYS) <= set(row), row["artifact"]
        assert row["size_bytes"] > 0
    by_name = {row["artifact"]: row for row in rows}
    assert by_name["model.keras"]["agreement"] == 1.0
    assert by_name["model_float32.tflite"]["agreement"] >= 0.995
    assert by_name["model_int8.tflite"]["input"]["dtype"] == "int8"
    assert by_name["model_edgetpu_ready.tflite"]["edgetpu"] == {"compatible": True, "problems": []}
    assert by_name["model_edgetpu_ready.tflite"]["input"]["shape"] == [1, 8, 8, 1]
    assert by_name["model_float32.tflite"]["edgetpu"] is None
    assert by_name["model_edgetpu.tflite"]["accuracy"] is None and by_name["model_edgetpu.tflite"]["error"]
    assert all(row["latency_ms_batch1_median"] > 0 for row in rows[:-1])
    assert report["machine"]["cores"] >= 1 and report["dataset"]["num_examples"] == len(digits_test[1])
    assert report["dataset"]["name"] == "arrays" and "num_classes" not in report["dataset"]  # what as_splits knows
    # The fastest .tflite here, timed interleaved: the files for the CPU, not the Edge TPU's.
    speed = report["speed"]
    ranked = {entry["artifact"]: entry for entry in speed["ranking"]}
    assert set(ranked) == {"model_float32.tflite", "model_float16.tflite", "model_int8.tflite"}
    assert speed["fastest"] == min(ranked, key=lambda name: ranked[name]["latency_ms"])
    assert ranked["model_float32.tflite"]["vs_float32"] == 1.0 and speed["isa"] and speed["rounds"] >= 2
    assert report["notes"][0].startswith(f"Fastest on this machine ({speed['cpu']}") and speed["fastest"] in report[
        "notes"][0]

    markdown = (out / "report.md").read_text()
    assert "| artifact | size | precision |" in markdown
    for name in names:
        assert f"| {name} |" in markdown
    assert "## Machine" in markdown and "## Dataset" in markdown and "Edge TPU check: compatible" in markdown
    assert "## Fastest file on this machine" in markdown and f"| `{speed['fastest']}` |" in markdown
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_verify_export_refuses_an_empty_folder(tmp_path, digits_test):
    from nin_keras.verification import verify_export

    with pytest.raises(FileNotFoundError, match="No artifacts"):
        verify_export(tmp_path, digits_test, progress=False)
    with pytest.raises(FileNotFoundError, match="not found"):
        verify_export(tmp_path / "nope", digits_test, progress=False)


def test_static_batch_of_four_pads_the_last_batch(digits_artifacts, trained_digits_model, digits_test, tmp_path):
    from nin_keras.verification import benchmark_inference, load_artifact

    serving_archive(trained_digits_model, 4).write_out(str(tmp_path / "sm4"), verbose=False)
    path = convert_saved_model(tmp_path / "sm4", tmp_path / "batch4.tflite")
    images = digits_test[0][:6]
    for artifact in (path, tmp_path / "sm4"):
        runner = load_artifact(artifact)
        assert runner.static_batch == 4
        np.testing.assert_allclose(runner.predict(images), load_artifact(digits_artifacts / "model_float32.tflite")
                                   .predict(images), atol=1e-5)
    assert benchmark_inference(path, runs=2, warmup=0)["throughput_batch_size"] == 4


def test_verify_export_without_timing_or_reference(digits_artifacts, trained_digits_model, digits_test, tmp_path):
    from nin_keras.verification import verify_export

    out = tmp_path / "export"
    out.mkdir()
    shutil.copy(digits_artifacts / "model_int8.tflite", out)
    rows = verify_export(out, digits_test, progress=False, runs=0)
    assert [row["artifact"] for row in rows] == ["model_int8.tflite"]
    assert rows[0]["agreement"] is None and rows[0]["latency_ms_batch1_median"] is None
    assert rows[0]["accuracy"] > 0.8
    assert "No reference model" in (out / "report.md").read_text()
    assert json.loads((out / "report.json").read_text())["speed"] is None  # nothing timed, nothing named fastest
    rows = verify_export(out, digits_test, reference_model=trained_digits_model, progress=False, runs=0)
    assert rows[0]["agreement"] >= 0.9
