"""Silent wrong input is refused (issue 24): 0..1 images, soft, fractional and negative labels, probabilities
taken for logits, and a resumed run given other data, another batch size or a damaged record."""

import json
import warnings

import numpy as np
import pytest

from helpers import random_data

SHAPE = (8, 8, 1)


def _tiny_model(softmax="layer"):
    """A 10-class classifier of 8x8x1 raw pixels, small enough to train in a second; `softmax` says how its
    probabilities are made: "layer" (Dense's activation), "op" (keras.ops.softmax, no layer), "nested" (inside a
    nested Sequential) or None (logits)."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input(SHAPE)
    flat = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    if softmax == "nested":
        inner = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, activation="softmax")])
        return keras.Model(inputs, inner(flat))
    outputs = keras.layers.Dense(10, activation="softmax" if softmax == "layer" else None)(flat)
    if softmax == "op":
        outputs = keras.ops.softmax(outputs)
    return keras.Model(inputs, outputs)


def _data(n=64, seed=0):
    return random_data(n, SHAPE, seed=seed)


def _dataset(images, labels, batch=16):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch)


# -------------------------------------------------------------------------------------------- 0..1 pixels


def test_unit_range_images_are_refused_by_every_entry(tmp_path):
    import nin_keras
    from nin_keras.errors import InvalidInputError
    from nin_keras.quantization.data import representative_images

    images, labels = _data()
    unit = images / 255.0
    model = _tiny_model()
    entries = {
        "as_splits": lambda data: nin_keras.as_splits(data),
        "train": lambda data: nin_keras.train(model, data, epochs=1, out_dir=tmp_path / "run", verbose=0),
        "int8 calibration": lambda data: representative_images(model, data),
        "export": lambda data: nin_keras.export(model, tmp_path / "export", targets=["tflite_int8"], data=data),
        "evaluate": lambda data: nin_keras.evaluate(model, data),
        "quantize_aware": lambda data: nin_keras.quantize_aware(model, data, epochs=1),
    }
    for name, entry in entries.items():
        for form in ((unit, labels), _dataset(unit, labels)):
            with pytest.raises(InvalidInputError, match=r"0\.\.1.*multiply the images by 255.*allow_unit_range"):
                entry(form)
    assert not (tmp_path / "run").exists() and not (tmp_path / "export").exists(), "refused before writing"


def test_raw_pixels_constant_images_and_declared_unit_range_pass():
    import nin_keras
    from nin_keras.errors import InvalidInputError
    from nin_keras.quantization.data import representative_images

    images, labels = _data()
    model = _tiny_model()
    for accepted in (images, images.astype(np.uint8), np.zeros_like(images), np.ones_like(images)):
        assert representative_images(model, (accepted, labels)).shape == images.shape
    dark = nin_keras.as_splits((images / 255.0, labels), allow_unit_range=True)
    assert representative_images(model, dark).max() <= 1.0, "the declared range travels with the DatasetSplits"
    assert nin_keras.as_splits(_dataset(images / 255.0, labels), allow_unit_range=True).train is not None
    with pytest.raises(InvalidInputError, match="allow_unit_range"):
        nin_keras.as_splits((images / 255.0, labels), allow_unit_range="yes")


# -------------------------------------------------------------------------------------------------- labels


@pytest.mark.parametrize("form", ["arrays", "dataset"])
def test_labels_that_are_not_class_ids_are_refused(form):
    import nin_keras
    from nin_keras.data import as_arrays
    from nin_keras.errors import InvalidInputError

    images, labels = _data()
    one_hot = np.eye(10, dtype="float32")[labels]
    cases = {
        "one-hot rows": one_hot * 0.9 + 0.01,  # label smoothing
        "whole class ids": labels + 0.5,  # 3.5 used to become 3 in a dataset
        "0 or more": labels - 5,
    }
    for fragment, bad in cases.items():
        data = (images, bad) if form == "arrays" else _dataset(images, bad)
        with pytest.raises(InvalidInputError, match=fragment):
            nin_keras.as_splits(data)
    with pytest.raises(InvalidInputError, match=r"0\.\.9"):
        nin_keras.as_splits((images, labels + 5) if form == "arrays" else _dataset(images, labels + 5),
                            num_classes=10)
    exact = nin_keras.as_splits((images, one_hot) if form == "arrays" else _dataset(images, one_hot))
    assert exact.num_classes == 10
    assert np.array_equal(as_arrays(exact, split="train")[1], labels), "exact one-hot: by argmax"


def test_a_bad_label_further_in_a_dataset_stops_training_with_the_package_error(tmp_path):
    import nin_keras
    from nin_keras.errors import InvalidInputError

    images, labels = _data()
    labels = labels.astype("float32")
    labels[50] = 2.5  # the first batch (16) is clean: only the streaming check can see it
    with pytest.raises(InvalidInputError, match="whole class ids"):
        nin_keras.train(_tiny_model(), _dataset(images, labels), epochs=1, out_dir=tmp_path / "run", verbose=0,
                        evaluate_test=False)
    with pytest.raises(InvalidInputError, match="whole class ids"):
        nin_keras.evaluate(_tiny_model(), _dataset(images, labels))


def test_one_hot_dataset_labels_train():
    import nin_keras

    images, labels = _data()
    result = nin_keras.train(_tiny_model(), _dataset(images, np.eye(10, dtype="float32")[labels]), epochs=1,
                             out_dir=None, name="one-hot", verbose=0, evaluate_test=False, overwrite=True)
    assert np.isfinite(result.history["loss"][0]) and result.history["loss"][0] < 5


# ---------------------------------------------------------------------------------------------- output kind


def test_the_loss_follows_what_the_model_outputs_not_only_its_last_layer():
    from nin_keras.training.setup import loss_and_metrics, outputs_are_probabilities

    kinds = {"layer": True, "op": True, "nested": True, None: False}
    for softmax, probabilities in kinds.items():
        model = _tiny_model(softmax)
        assert outputs_are_probabilities(model) is probabilities, softmax
        loss, _ = loss_and_metrics(model, 0.0)
        assert loss.get_config()["from_logits"] is (not probabilities), softmax


def test_a_logits_model_trains_with_a_sane_loss(tmp_path):
    import nin_keras

    images, labels = _data()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*Rescaling", category=UserWarning)  # it rescales: no warning
        result = nin_keras.train(_tiny_model(None), (images, labels), epochs=1, out_dir=tmp_path / "run",
                                 verbose=0, evaluate_test=False, batch_size=16)
    assert 0 < result.history["loss"][0] < 5, "ln(10) is 2.3 at chance; a loss of hundreds means the wrong kind"


# ---------------------------------------------------------------------------------------------------- resume


def _train(run, data, **options):
    import nin_keras

    options = {"epochs": 1, "batch_size": 16, "verbose": 0, "evaluate_test": False, "recipe": "adam", **options}
    return nin_keras.train(_tiny_model(), data, out_dir=run, **options)


def test_resume_refuses_other_data_or_batch_size_unless_asked(tmp_path):
    from nin_keras.errors import InvalidInputError

    run = tmp_path / "run"
    data = _data()
    _train(run, data)
    record = (run / "config.json").read_text()
    fingerprint = json.loads(record)["data_fingerprint"]
    assert fingerprint["batch_size"] == 16 and fingerprint["sizes"] == {"train": 64} and fingerprint["content"]

    other = _data(seed=1)  # same shape, other images and labels
    refusals = {"content": (other, {}), "batch size 16 -> 32": (data, {"batch_size": 32}),
                "split sizes": (tuple(a[:48] for a in data), {})}
    for fragment, (changed, options) in refusals.items():
        with pytest.raises(InvalidInputError, match=f"other data.*{fragment}.*allow_changed_data=True"):
            _train(run, changed, epochs=2, resume=True, **options)
        assert (run / "config.json").read_text() == record, "a refused resume leaves the record as it was"
    with pytest.raises(InvalidInputError, match="resume=True"):
        _train(tmp_path / "new", data, allow_changed_data=True)

    resumed = _train(run, other, epochs=2, resume=True, allow_changed_data=True)
    assert resumed.initial_epoch == 1
    config = json.loads((run / "config.json").read_text())
    assert [s.get("data_changed") for s in config["sessions"]][0] is None
    assert "content" in config["sessions"][1]["data_changed"][0]
    assert _train(run, other, epochs=3, resume=True).initial_epoch == 2, "the same data resumes"


def test_resume_never_replaces_a_record_it_cannot_read_and_names_a_damaged_backup(tmp_path):
    from nin_keras.errors import InvalidInputError

    run = tmp_path / "run"
    data = _data()
    _train(run, data)
    config = run / "config.json"
    good = config.read_bytes()
    for damaged, fragment in ((b"[]", "JSON list"), (good[:len(good) // 2], "not readable JSON"),
                              (b"\xff\xfe", "not readable JSON")):
        config.write_bytes(damaged)
        with pytest.raises(InvalidInputError, match=f"{fragment}.*left as it is.*overwrite=True"):
            _train(run, data, epochs=2, resume=True)
        assert config.read_bytes() == damaged, "the record is never overwritten"
    config.write_bytes(good)

    weights = next((run / "backup").glob("*.weights.h5"))
    weights.write_bytes(weights.read_bytes()[:200])  # truncated
    with pytest.raises(InvalidInputError, match="backup .* is damaged"):
        _train(run, data, epochs=2, resume=True)


def test_cli_resume_with_another_batch_size_is_one_line(tmp_path, capsys):
    from nin_keras.cli import main

    run = tmp_path / "run"
    base = ["train", "--dataset", "digits", "--variant", "mnist", "--width", "0.1", "--no-tensorboard",
            "--steps-per-epoch", "2", "--validation-split", "0", "--recipe", "adam", "--out", str(run)]
    assert main(base + ["--epochs", "1", "--batch-size", "32"]) == 0
    capsys.readouterr()
    assert main(base + ["--epochs", "2", "--batch-size", "64", "--resume"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "batch size 32 -> 64" in lines[0] and "--resume-changed-data" in lines[0], lines
    assert "content" not in lines[0], "the same dataset: only the batch size changed"
    assert main(base + ["--epochs", "2", "--batch-size", "64", "--resume-changed-data"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["data_fingerprint"]["batch_size"] == 64 and config["sessions"][-1]["data_changed"]


def test_a_logits_model_that_does_not_scale_raw_pixels_is_warned_about():
    import keras

    from nin_keras.training.setup import outputs_are_probabilities

    keras.utils.set_random_seed(0)
    inputs = keras.Input(SHAPE)
    unscaled = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(inputs)))
    with pytest.warns(UserWarning, match=r"Rescaling\(1 / 255\)"):
        assert outputs_are_probabilities(unscaled) is False
