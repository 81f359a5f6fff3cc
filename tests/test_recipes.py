"""The budget-aware default recipe: what it resolves to for a run, the schedule it builds, the augmentation it
adds, what `train` records and prints, resume keeping the schedule, and bad recipe input."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest

import nin_keras
from nin_keras.data import DatasetSplits
from nin_keras.data.pipeline import Augmentation, make_dataset
from nin_keras.errors import InvalidInputError
from nin_keras.training import choose_precision, get_strategy, train
from nin_keras.training.inputs import for_fit
from nin_keras.training.recipes import RECIPES, make_optimizer, make_schedule, plan_recipe, resolve_recipe
from nin_keras.training.setup import compile_for_training

SHAPE = (12, 12, 1)


def _plan(epochs=3, steps=100, batch_size=128, **kwargs):
    recipe, _ = resolve_recipe(kwargs.pop("recipe", None), has_batch_norm=True, **kwargs.pop("overrides", {}))
    kwargs.setdefault("image_shape", (28, 28, 1))
    kwargs.setdefault("flips_allowed", True)
    return plan_recipe(recipe, epochs=epochs, steps_per_epoch=steps, batch_size=batch_size, **kwargs)


def test_the_default_recipe_is_budget_and_sgd_or_adam_alone_keep_their_recipes():
    assert resolve_recipe(None, has_batch_norm=True)[0].name == "budget"
    assert resolve_recipe(None, has_batch_norm=True, optimizer="sgd")[0].name == "paper"
    assert resolve_recipe(None, has_batch_norm=True, optimizer="adam")[0].name == "adam"
    budget = RECIPES["budget"]
    assert budget.optimizer == "adamw" and budget.schedule == "cosine"
    assert 0 < budget.warmup < 0.5 and 0 < budget.label_smoothing < 1


def test_values_tuned_for_a_variant_apply_to_that_variant_and_overrides_still_win():
    import dataclasses

    recipe = dataclasses.replace(RECIPES["budget"], by_variant={"cifar": {"learning_rate": 0.006, "warmup": 0.2}})
    tuned, note = resolve_recipe(recipe, has_batch_norm=True, variant="cifar")
    assert (tuned.learning_rate, tuned.warmup) == (0.006, 0.2) and note == ("the cifar variant's tuned "
                                                                           "learning_rate 0.006, warmup 0.2")
    other, note = resolve_recipe(recipe, has_batch_norm=True, variant="mnist")
    assert other.learning_rate == RECIPES["budget"].learning_rate and note == ""
    given, note = resolve_recipe(recipe, has_batch_norm=True, variant="cifar", learning_rate=0.001)
    assert given.learning_rate == 0.001 and given.warmup == 0.2 and "learning_rate" not in note


def test_warm_up_then_cosine_spans_exactly_the_run():
    plan = _plan(epochs=3, steps=100)
    schedule = make_schedule(plan)
    peak, warm = plan.peak_learning_rate, plan.warmup_steps
    assert plan.total_steps == 300 and warm == round(RECIPES["budget"].warmup * 300)
    rates = np.array([float(schedule(step)) for step in range(0, 301)])
    assert rates[0] == pytest.approx(peak / 25, rel=1e-5)  # starts low,
    assert np.all(np.diff(rates[:warm + 1]) > 0)  # rises linearly during the warm-up,
    assert rates[warm] == pytest.approx(peak, rel=1e-5)  # peaks where the warm-up ends,
    assert np.all(np.diff(rates[warm:]) <= 1e-9)  # then only falls,
    assert rates[300] == pytest.approx(0, abs=1e-9)  # to 0 at the run's last step.
    assert isinstance(make_optimizer(plan), keras.optimizers.AdamW)


def test_the_peak_learning_rate_follows_the_batch_size_unless_given():
    base = _plan(batch_size=128).peak_learning_rate
    assert base == pytest.approx(RECIPES["budget"].learning_rate)
    assert _plan(batch_size=512).peak_learning_rate == pytest.approx(2 * base)  # sqrt scaling for AdamW
    assert _plan(batch_size=512, overrides={"learning_rate": 0.01}).peak_learning_rate == pytest.approx(0.01)
    assert _plan(recipe="paper", batch_size=512).peak_learning_rate == pytest.approx(0.1)  # the paper's, as is


def test_augmentation_follows_the_budget_and_the_kind_of_images():
    short, long = _plan(epochs=1), _plan(epochs=30)
    assert short.augmentation is None
    assert long.augmentation == Augmentation(pad=2, flip=True)  # 1/14 of 28 pixels, clothes may be mirrored
    digits = _plan(epochs=30, flips_allowed=False)
    assert digits.augmentation == Augmentation(pad=2, flip=False) and "no flips" in digits.augmentation_note
    assert _plan(epochs=30, flips_allowed=None).augmentation.flip is False  # unknown images: no flips
    assert _plan(epochs=30, data_augmented=True).augmentation is None  # load_dataset(augment=True) already did
    assert _plan(epochs=1, augment=True).augmentation == Augmentation(pad=4, flip=True)  # the paper's, asked for
    assert _plan(epochs=30, augment=False).augmentation is None
    assert _plan(recipe="paper", epochs=1).augmentation == Augmentation(pad=4, flip=True)


def test_dropout_follows_the_budget_and_applies_to_the_training_copy_only():
    assert _plan(epochs=3).dropout == 0.0  # short runs: dropout only slows learning down
    assert _plan(epochs=30).dropout == RECIPES["budget"].by_budget[-1].dropout > 0
    assert _plan(recipe="paper", epochs=3).dropout is None  # the paper's network keeps its own
    assert _plan(epochs=3, dropout=None).dropout is None and _plan(epochs=3, dropout=0.3).dropout == 0.3
    with pytest.raises(ValueError, match="dropout"):
        _plan(dropout=1.0)

    model = nin_keras.build_nin(10, variant="mnist", input_shape=(28, 28, 1), width_multiplier=0.1)
    train_model = compile_for_training(model, precision=choose_precision("float32"), strategy=get_strategy("one"),
                                       plan=_plan(epochs=3), jit_compile=False)
    rates = [layer.rate for layer in train_model.layers if isinstance(layer, keras.layers.Dropout)]
    assert rates == [0.0, 0.0]
    assert [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)] == [0.5, 0.5]


def test_for_fit_adds_the_augmentation_to_the_training_pipeline_only():
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (32, 8, 8, 1), dtype=np.uint8), rng.integers(0, 10, 32)
    unshuffled = make_dataset(images, labels, batch_size=32)
    inputs = DatasetSplits("arrays", unshuffled, unshuffled, unshuffled, 10, [], (8, 8, 1), {})
    plain = for_fit(inputs, steps_per_epoch=None, num_workers=1, label_smoothing=0)
    moved = for_fit(inputs, steps_per_epoch=None, num_workers=1, label_smoothing=0,
                    augmentation=Augmentation(pad=2, flip=True), seed=1)
    (x0, y0), (x1, y1) = next(iter(plain.train)), next(iter(moved.train))
    np.testing.assert_array_equal(y0.numpy(), y1.numpy())  # same order, same labels,
    assert not np.array_equal(x0.numpy(), x1.numpy())  # moved pixels,
    assert x1.dtype == x0.dtype and x1.shape == x0.shape  # still uint8 images of the same shape
    assert moved.test is inputs.test and moved.validation is inputs.validation


def test_train_prints_and_records_the_plan(tmp_path, capsys):
    data = nin_keras.load_dataset("digits", batch_size=64)
    model = nin_keras.build_nin(10, variant="mnist", input_shape=(8, 8, 1), width_multiplier=0.1)
    train(model, data, epochs=1, out_dir=tmp_path / "run", verbose=2, tensorboard=False)
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("recipe ")]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    recipe = config["recipe"]
    assert printed == [recipe["summary"]]
    for words in ("AdamW", "peak lr", "warm-up", "cosine", "label smoothing 0.1", "augmentation none", "dropout 0"):
        assert words in printed[0]
    assert recipe["name"] == "budget" and recipe["total_steps"] == recipe["steps_per_epoch"] == len(list(data.train))
    assert recipe["augmentation_used"] is None and config["arguments"]["label_smoothing"] == 0.1
    assert recipe["dropout_used"] == 0.0
    assert config["dataset"]["info"]["horizontal_flip_ok"] is False  # digits


def test_train_uses_the_values_tuned_for_the_models_variant(tmp_path, capsys):
    data = nin_keras.load_dataset("digits", batch_size=64)
    tuned = RECIPES["budget"].by_variant["cifar"]
    model = nin_keras.build_nin(10, variant="cifar", input_shape=(8, 8, 1), width_multiplier=0.1, name="renamed")
    train(model, data, epochs=1, out_dir=tmp_path / "run", verbose=2, tensorboard=False, evaluate_test=False)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["model"]["variant"] == "cifar"
    assert config["recipe"]["peak_learning_rate"] == pytest.approx(tuned["learning_rate"] * (64 / 128) ** 0.5)
    assert config["recipe"]["note"].startswith("the cifar variant's tuned learning_rate")
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("recipe ")]
    assert printed == [f"{config['recipe']['summary']} ({config['recipe']['note']})"]


class _Stop(Exception):
    pass


class _StopAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):  # epoch 1 is complete and saved: the run folder holds it
        if epoch == 1:
            raise _Stop()


def test_resume_continues_the_schedule_without_a_second_warm_up(tmp_path):
    data = nin_keras.load_dataset("digits", batch_size=256)

    def run(folder, **kwargs):
        keras.utils.set_random_seed(0)
        model = nin_keras.build_nin(10, variant="mnist", input_shape=(8, 8, 1), width_multiplier=0.1)
        return train(model, data, epochs=3, out_dir=folder, verbose=0, tensorboard=False, seed=0,
                     evaluate_test=False, **kwargs)

    whole = run(tmp_path / "whole")
    with pytest.raises(_Stop):
        run(tmp_path / "cut", callbacks=[_StopAfterFirstEpoch()])
    resumed = run(tmp_path / "cut", resume=True)
    assert resumed.initial_epoch == 1
    rates = whole.history["learning_rate"]
    assert rates[0] < rates[1] > rates[2]  # warm-up during epoch 1, then decay
    np.testing.assert_allclose(resumed.history["learning_rate"], rates, rtol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(warmup_epochs=2), "not shorter than the run"),
    (dict(warmup_epochs=1, schedule="step"), "needs the cosine schedule"),
    (dict(label_smoothing=1.0), "label_smoothing"),
    (dict(label_smoothing=-0.1), "label_smoothing"),
    (dict(learning_rate=0.0), "learning_rate"),
    (dict(augment="yes"), "augment"),
])
def test_recipe_settings_that_make_no_sense_are_refused_before_anything_is_written(tmp_path, kwargs, match):
    data = nin_keras.load_dataset("digits", batch_size=256)
    model = nin_keras.build_nin(10, variant="mnist", input_shape=(8, 8, 1), width_multiplier=0.1)
    with pytest.raises((InvalidInputError, ValueError), match=match):
        train(model, data, epochs=2, out_dir=tmp_path / "run", verbose=0, **kwargs)
    assert not (tmp_path / "run").exists()


def test_cli_refuses_a_warm_up_as_long_as_the_run_and_writes_nothing(tmp_path):
    # docs/ERRORS.md lists the other recipe errors; tests/test_cli_errors.py runs each row.
    run = tmp_path / "run"
    completed = subprocess.run(
        [sys.executable, "-m", "nin_keras", "train", "--dataset", "digits", "--epochs", "2", "--width", "0.1",
         "--warmup-epochs", "3", "--out", str(run)], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and "--warmup-epochs 3 is not shorter than the run" in lines[0]  # the flag, not the argument
    assert not run.exists() and not list(tmp_path.iterdir())
