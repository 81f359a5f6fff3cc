"""nin_keras.train and its parts: precision choice, recipes, the run folder, resume, NaN handling, bad input."""

import csv
import dataclasses
import json
import math
import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import nin_keras
from nin_keras.data.splits import DatasetSplits
from nin_keras.errors import IncompatibleModelError
from nin_keras.training import (RECIPES, TrainingDivergedError, choose_precision, clone_with_policy, get_strategy,
                                train)
from nin_keras.training import precision as precision_module
from nin_keras.training.recipes import adapt_recipe, default_recipe, make_schedule, override, recipe_note
from nin_keras.training.trainer import RunSettings

SHAPE = (12, 12, 1)


def _toy_split(n, seed, batch=16):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, *SHAPE), dtype=np.uint8)
    labels = (images.mean(axis=(1, 2, 3)) > 127.5).astype("int32")
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch)


@pytest.fixture(scope="module")
def toy():
    return DatasetSplits(name="toy", train=_toy_split(64, 0), validation=_toy_split(32, 1), test=_toy_split(32, 2),
                         num_classes=2, class_names=["dark", "bright"], input_shape=SHAPE, info={"synthetic": True})


def _model(classes=2, **kwargs):
    return nin_keras.build_nin(classes, variant="mnist", input_shape=SHAPE, width_multiplier=0.1, **kwargs)


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# ---------------------------------------------------------------------------------------------- precision


@pytest.mark.parametrize("flags, gpus, onednn, policy", [
    ({"avx512_bf16", "avx512f"}, [], "1", "mixed_bfloat16"),
    ({"amx_bf16", "amx_tile"}, [], "1", "mixed_bfloat16"),
    ({"avx512_bf16"}, [], "0", "float32"),
    ({"avx2"}, [], "1", "float32"),
    ({"avx2"}, [], "0", "float32"),
    (set(), [("H100", (9, 0))], "1", "mixed_bfloat16"),
    (set(), [("T4", (7, 5))], "1", "mixed_float16"),
    (set(), [("K80", (3, 7))], "1", "float32"),
])
def test_choose_precision_auto(monkeypatch, flags, gpus, onednn, policy):
    monkeypatch.setattr(precision_module, "_cpu_flags", lambda: flags)
    monkeypatch.setattr(precision_module, "_gpu_compute_capabilities", lambda: gpus)
    monkeypatch.setattr(precision_module, "onednn_active", lambda: onednn == "1")  # TensorFlow's own decision
    choice = choose_precision("auto")
    assert choice.policy == policy
    assert choice.requested == "auto"
    assert choice.reason
    # Without oneDNN on a plain CPU the reason says how to get it (1.7x faster training on AVX2).
    assert ("TF_ENABLE_ONEDNN_OPTS=1" in choice.reason) == (onednn == "0" and not gpus and policy == "float32"
                                                              and "avx512_bf16" not in flags)


def test_the_cli_turns_onednn_on_unless_the_user_chose(monkeypatch):
    from nin_keras import process_state

    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    process_state.prefer_onednn()  # TensorFlow is loaded in this process: too late, nothing changes
    assert "TF_ENABLE_ONEDNN_OPTS" not in os.environ
    assert process_state.onednn_active() is not None

    monkeypatch.delitem(sys.modules, "tensorflow")  # as in a fresh CLI process, before TensorFlow loads
    process_state.prefer_onednn()
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "1"
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    process_state.prefer_onednn()
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "0"  # the user's choice stands


def test_choose_precision_explicit_and_unknown():
    assert choose_precision("float32").policy == "float32"
    assert choose_precision("mixed_bfloat16").reason.startswith("asked for")
    with pytest.raises(ValueError, match="Unknown precision 'half'"):
        choose_precision("half")


def test_clone_with_policy_keeps_the_global_policy_and_a_float32_output():
    model = _model()
    before = keras.config.dtype_policy().name
    clone = clone_with_policy(model, "mixed_bfloat16")
    assert keras.config.dtype_policy().name == before
    assert clone.get_layer("mlpconv1_conv5x5").compute_dtype == "bfloat16"
    assert clone.get_layer("predictions").compute_dtype == "float32"
    images = np.random.default_rng(0).integers(0, 256, (4, *SHAPE)).astype("float32")
    out = clone.predict(images, verbose=0)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, model.predict(images, verbose=0), atol=0.05)


# ---------------------------------------------------------------------------------------------- recipes


def test_recipes_are_data_with_the_paper_values():
    assert set(RECIPES) >= {"budget", "paper", "paper_no_bn", "adam"}
    paper = RECIPES["paper"]
    assert (paper.optimizer, paper.learning_rate, paper.momentum, paper.weight_decay, paper.schedule) == \
        ("sgd", 0.1, 0.9, 1e-4, "step")
    assert RECIPES["paper_no_bn"].learning_rate == 0.01
    assert RECIPES["adam"].optimizer == "adam"


def test_adapt_recipe_switches_without_bn_and_recipes_refuse_bad_values():
    adapted = adapt_recipe("paper", has_batch_norm=False)
    assert adapted.recipe.name == "paper_no_bn" and "BatchNormalization" in recipe_note(adapted)
    changed = adapt_recipe(dataclasses.replace(RECIPES["paper"], weight_decay=0.0), has_batch_norm=False).recipe
    assert (changed.name, changed.learning_rate, changed.weight_decay) == ("paper_no_bn", 0.01, 0.0)
    recipe = override(default_recipe("adam"), learning_rate=0.005)
    assert (recipe.name, recipe.learning_rate) == ("adam", 0.005)
    with pytest.raises(ValueError, match="Unknown optimizer"):
        dataclasses.replace(RECIPES["budget"], optimizer="rmsprop")
    with pytest.raises(ValueError, match="Unknown schedule"):
        override("budget", schedule="linear")
    with pytest.raises(ValueError, match="Unknown recipe"):
        adapt_recipe("fast", has_batch_norm=True)
    with pytest.raises(ValueError, match="learning_rate"):
        override("budget", learning_rate=-1.0)


def test_step_schedule_divides_by_ten_at_half_and_three_quarters():
    schedule = make_schedule(RECIPES["paper"], 100)
    values = [float(schedule(step)) for step in (0, 49, 51, 74, 76, 99)]
    np.testing.assert_allclose(values, [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-6)


def test_get_strategy_one_and_unknown():
    assert get_strategy("one").num_replicas == 1
    with pytest.raises(ValueError, match="Unknown strategy"):
        get_strategy("tpu")
    with pytest.raises(ValueError, match="TF_CONFIG"):
        get_strategy("multiworker")


# ---------------------------------------------------------------------------------------------- train


def test_train_writes_a_complete_run_folder(toy, tmp_path):
    model = _model()
    policy_before = keras.config.dtype_policy().name
    result = train(model, toy, epochs=2, out_dir=tmp_path / "run", seed=3, verbose=0)

    run = tmp_path / "run"
    assert result.run_dir == run
    for name in ("model.keras", "history.csv", "curves.png", "config.json"):
        assert (run / name).is_file(), name
        assert result.paths[name.split(".")[0]] is not None
    assert (run / "backup").is_dir()
    assert not list(run.glob(".*tmp*")), "no temporary files are left behind"
    assert keras.config.dtype_policy().name == policy_before

    rows = _rows(run / "history.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"} <= set(rows[0])
    assert result.history["epoch"] == [1, 2]

    config = json.loads((run / "config.json").read_text())
    assert config["status"] == "completed"
    assert config["arguments"]["epochs"] == 2 and config["seed"] == 3
    # The record is derived from the recipe and the run's settings: every field of both is there.
    fields = {f.name for f in dataclasses.fields(RECIPES["budget"])} - {"name"} | {"recipe"}
    assert fields | {f.name for f in dataclasses.fields(RunSettings)} <= set(config["arguments"])
    assert (config["arguments"]["recipe"], config["arguments"]["out_dir"]) == ("budget", str(run))
    assert config["precision"]["policy"] == result.precision == choose_precision("auto").policy
    assert config["precision"]["reason"]
    assert config["strategy"]["name"] == "one"
    assert all(config["machine"][package] for package in ("tensorflow", "keras", "numpy", "nin_keras"))
    assert config["machine"]["cores"] >= 1
    assert config["recipe"]["name"] == "budget"  # the default
    assert config["best"]["monitor"] == "val_accuracy"
    assert 0 <= config["test"]["accuracy"] <= 1

    # The saved model is float32 (whatever trained it) and holds the weights the caller's model now has.
    saved = nin_keras.load_model(run / "model.keras")
    assert all(layer.dtype_policy.name == "float32" for layer in saved.layers if hasattr(layer, "dtype_policy"))
    images = np.random.default_rng(5).integers(0, 256, (3, *SHAPE)).astype("float32")
    predictions = saved.predict(images, verbose=0)
    assert predictions.dtype == np.float32
    np.testing.assert_allclose(predictions, model.predict(images, verbose=0), rtol=1e-5, atol=1e-6)


def test_an_existing_run_folder_is_never_overwritten_silently(toy, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="resume=True"):
        train(_model(), toy, epochs=1, out_dir=run, verbose=0)
    with pytest.raises(FileExistsError, match="not look like a nin-keras run folder"):
        train(_model(), toy, epochs=1, out_dir=run, overwrite=True, verbose=0)
    assert (run / "notes.txt").read_text() == "mine"
    with pytest.raises(FileNotFoundError, match="Nothing to resume"):
        train(_model(), toy, epochs=1, out_dir=tmp_path / "new", resume=True, verbose=0)

    class Fail(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):  # a new run that fails in its first epoch leaves nothing
        train(_model(), toy, epochs=1, out_dir=tmp_path / "new", verbose=0, tensorboard=True, callbacks=[Fail()])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_resume_continues_after_the_last_completed_epoch(toy, tmp_path):
    run = tmp_path / "run"
    first = train(_model(), toy, epochs=2, out_dir=run, recipe="adam", verbose=0, tensorboard=False)
    again = train(_model(), toy, epochs=3, out_dir=run, recipe="adam", resume=True, verbose=0, tensorboard=False)
    assert again.initial_epoch == 2
    assert again.history["epoch"] == [1, 2, 3]
    assert again.history["loss"][:2] == first.history["loss"]
    config = json.loads((run / "config.json").read_text())
    assert [s["initial_epoch"] for s in config["sessions"]] == [0, 2]
    with pytest.raises(FileExistsError):
        train(_model(), toy, epochs=1, out_dir=run, verbose=0)
    replaced = train(_model(), toy, epochs=1, out_dir=run, overwrite=True, verbose=0, tensorboard=False)
    assert replaced.history["epoch"] == [1]


class _PoisonAt(keras.callbacks.Callback):
    """Sets the first kernel to NaN before step `step` (1-based) of epoch `epoch` (1-based)."""

    def __init__(self, epoch, step):
        super().__init__()
        self.target = (epoch - 1, step - 1)
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if (self.epoch, batch) == self.target:
            kernel = self.model.trainable_weights[0]
            kernel.assign(np.full(kernel.shape, np.nan, dtype="float32"))


def test_nan_loss_stops_naming_epoch_and_step_and_keeps_the_last_good_model(toy, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(TrainingDivergedError) as caught:
        train(_model(), toy, epochs=4, out_dir=run, callbacks=[_PoisonAt(2, 3)], monitor="loss", verbose=0,
              tensorboard=False)
    message = str(caught.value)
    assert "epoch 2, step 3" in message
    assert "learning rate" in message
    result = caught.value.result
    assert result.stopped == "nan" and result.best["epoch"] == 1
    saved = nin_keras.load_model(run / "model.keras")
    images = np.random.default_rng(0).integers(0, 256, (2, *SHAPE)).astype("float32")
    assert np.isfinite(saved.predict(images, verbose=0)).all()
    config = json.loads((run / "config.json").read_text())
    assert config["status"] == "diverged" and "epoch 2, step 3" in config["message"]
    backup = json.loads((run / "backup" / "training_metadata.json").read_text())
    assert backup["epoch"] == 1, "the backup keeps the last good epoch"


def test_seed_and_determinism_make_a_run_repeatable(toy, tmp_path):
    histories = []
    for name in ("a", "b"):
        keras.utils.set_random_seed(7)
        histories.append(train(_model(), toy, epochs=2, out_dir=tmp_path / name, seed=7, deterministic=True,
                               precision="float32", verbose=0, tensorboard=False).history)
    assert histories[0]["loss"] == histories[1]["loss"]
    from tensorflow.python.framework import config as tf_config

    assert not tf_config.is_op_determinism_enabled(), "determinism is switched back off"


def test_label_smoothing_and_arrays_input(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, *SHAPE), dtype=np.uint8)
    labels = (images.mean(axis=(1, 2, 3)) > 127.5).astype("int32")
    smoothing = dataclasses.replace(RECIPES["budget"], label_smoothing=0.1)
    result = train(_model(), (images, labels), epochs=1, batch_size=8, recipe=smoothing, out_dir=tmp_path / "r",
                   verbose=0, tensorboard=False)
    assert result.best["monitor"] == "accuracy"  # no validation split: training accuracy
    assert math.isfinite(result.history["loss"][0])


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(epochs=0), ValueError, "epochs"),
    (dict(epochs=1.5), ValueError, "epochs"),
    (dict(epochs=1, precision="half"), ValueError, "Unknown precision"),
    (dict(epochs=1, strategy="tpu"), ValueError, "Unknown strategy"),
    (dict(epochs=1, recipe={"optimizer": "rmsprop"}), ValueError, "Unknown optimizer"),
    (dict(epochs=1, recipe="fast"), ValueError, "Unknown recipe"),
    (dict(epochs=1, resume=True, overwrite=True), ValueError, "not both"),
    (dict(epochs=1, recipe={"label_smoothing": 1.0}), ValueError, "label_smoothing"),
    (dict(epochs=1, steps_per_epoch=0), ValueError, "steps_per_epoch"),
])
def test_bad_arguments(toy, tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        if isinstance(kwargs.get("recipe"), dict):  # a recipe with these fields changed
            kwargs = {**kwargs, "recipe": dataclasses.replace(RECIPES["budget"], **kwargs["recipe"])}
        train(_model(), toy, out_dir=tmp_path / "run", verbose=0, **kwargs)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("model_kwargs", [dict(classes=3), dict(classes=2, input_shape=(16, 16, 1))])
def test_a_model_that_does_not_fit_the_data_is_refused(toy, tmp_path, model_kwargs):
    classes = model_kwargs.pop("classes")
    model = nin_keras.build_nin(classes, variant="mnist", width_multiplier=0.1,
                                input_shape=model_kwargs.get("input_shape", SHAPE))
    with pytest.raises(IncompatibleModelError, match="build_nin"):
        train(model, toy, epochs=1, out_dir=tmp_path / "run", verbose=0)


def test_training_takes_each_data_form_through_the_one_adapter(toy):
    from nin_keras.training.inputs import training_splits

    model = _model()
    assert training_splits(toy, model, batch_size=8) is toy
    unbatched = _toy_split(20, 3).unbatch()  # batched here by batch_size, as everywhere (no longer refused)
    splits = training_splits(unbatched, model, batch_size=8)
    assert (splits.name, splits.num_classes, splits.info) == ("dataset", 2, {"batch_size": 8})
    assert [len(y) for _, y in splits.train.as_numpy_iterator()] == [8, 8, 4]
    assert splits.validation is None and splits.test is None
    with pytest.raises(IncompatibleModelError, match="labels run from 0 to 2"):
        training_splits((np.zeros((3, *SHAPE), "uint8"), [0, 1, 2]), model, batch_size=8)
    with pytest.raises(ValueError, match="received a str"):
        training_splits("toy", model, batch_size=8)


def test_early_stopping_stops_when_the_monitored_metric_stalls(toy, tmp_path):
    # No BN and a negligible constant learning rate: predictions, hence val_accuracy, never change.
    still = dataclasses.replace(RECIPES["budget"], learning_rate=1e-12, schedule="constant")
    result = train(_model(batch_norm=False), toy, epochs=5, early_stopping=1, recipe=still,
                   out_dir=tmp_path / "run", verbose=0, tensorboard=False)
    assert result.stopped == "early_stopping"
    assert result.history["epoch"] == [1, 2]
    assert "Stopped early" in result.message
