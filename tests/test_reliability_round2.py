"""Six holes a hostile-user probe found, and the rough edges beside them; each test fails without its fix.

Huge numeric options, a width too large for memory, one-class folders, `--overwrite` under kill -9, folder
modes and stale staging folders, non-finite and complex pixels; then -v's exit code, resuming with fewer
epochs, unsafe .keras files, 5-D evaluation arrays and folders of mixed image sizes. CLI checks run the
installed `nin-keras` in a subprocess.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

import helpers

SCRIPT = Path(sys.executable).with_name("nin-keras")
CLI = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "nin_keras"]
HUGE = "100000000000000000000"  # 1e20: past int64, what TensorFlow failed to convert
DIGITS_SMALL = ["--dataset", "digits", "--variant", "mnist", "--width", "0.25", "--no-tensorboard"]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "NIN_KERAS_VERBOSE", "TF_CONFIG")}
    return dict(env, CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")


def _cli(args, cwd, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                          env=_env(), cwd=cwd)


def _one_line_error(completed, *fragments) -> str:
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    assert completed.returncode == 2, completed.stderr[-3000:]
    assert "Traceback" not in completed.stderr
    assert len(lines) == 1, completed.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _tree(folder: Path) -> dict:
    """Relative path -> bytes of every file below `folder`."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _old_run(run: Path, *, epochs_done: int = 4) -> dict:
    """A finished run folder as `train` leaves one (contents made up: only the bytes are compared)."""
    (run / "backup").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"status": "completed", "arguments": {"epochs": epochs_done}}))
    (run / "model.keras").write_bytes(b"the old best model")
    (run / "history.csv").write_text("epoch,loss\n" + "".join(f"{e},0.{e}\n" for e in range(1, epochs_done + 1)))
    weights = f"epoch-{epochs_done:04d}.weights.h5"
    (run / "backup" / weights).write_bytes(b"old weights")
    (run / "backup" / "training_metadata.json").write_text(json.dumps({"epoch": epochs_done, "weights": weights}))
    return _tree(run)


def _png(path: Path, size=(12, 12), seed=0) -> None:
    from PIL import Image  # lazy: pillow comes with matplotlib

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture(scope="module")
def tiny_model():
    import nin_keras

    return nin_keras.build_nin(10, variant="mnist", input_shape=helpers.DIGITS_SHAPE, width_multiplier=0.1)


# ------------------------------------------------------------------------- 1. huge numbers: exit 2, one line


@pytest.mark.parametrize("args, option, bound", [
    (["train", "--dataset", "digits", "--epochs", HUGE], "--epochs", "<= 1000000"),
    (["train", "--dataset", "digits", "--epochs", "1", "--batch-size", HUGE], "--batch-size", "<= 65536"),
    (["train", "--dataset", "digits", "--epochs", "1", "--batch-size", "1e20"], "--batch-size", "<= 65536"),
    (["train", "--dataset", "digits", "--epochs", "1", "--steps-per-epoch", HUGE], "--steps-per-epoch",
     "<= 1000000000"),
    (["train", "--dataset", "digits", "--epochs", "1", "--early-stopping", HUGE], "--early-stopping", "<="),
    (["train", "--dataset", "digits", "--epochs", "1", "--seed", HUGE], "--seed", "<= 4294967295"),
    (["train", "--dataset", "digits", "--epochs", "1", "--width", "1e300"], "--width", "<= 10000"),
    (["export", "model.keras", "--qat-epochs", HUGE], "--qat-epochs", "<= 1000000"),
    (["export", "model.keras", "--representative-samples", HUGE], "--representative-samples", "<="),
    (["evaluate", "model.keras", "--dataset", "digits", "--limit", HUGE], "--limit", "<="),
    (["benchmark", "train", "--steps", HUGE], "--steps", "<="),
    (["benchmark", "infer", "model.keras", "--threads", "100000"], "--threads", "<= 1024"),
    (["maps", "model.keras", "cat.png", "--top", HUGE], "--top", "<="),
    (["demo", "--seed", HUGE], "--seed", "<= 4294967295"),
], ids=lambda value: value if isinstance(value, str) and value.startswith("--") else None)
def test_huge_numbers_exit_2_with_one_line_naming_the_option_and_its_bound(args, option, bound, tmp_path):
    _one_line_error(_cli(args, tmp_path, timeout=180), f"argument {option}:", bound)
    assert list(tmp_path.iterdir()) == [], "nothing is created"


def test_train_refuses_more_optimizer_steps_than_the_schedule_counts(digits, tmp_path):
    import nin_keras
    from nin_keras.errors import InvalidInputError

    model = nin_keras.build_nin(10, variant="mnist", input_shape=helpers.DIGITS_SHAPE, width_multiplier=0.1)
    with pytest.raises(InvalidInputError, match=r"epochs must be an integer >= 1 and <= 1000000"):
        nin_keras.train(model, digits[0], epochs=10**20, out_dir=tmp_path / "run", verbose=0)
    # 10^10 steps: Keras' step-decay boundaries are int32 and would silently wrap round.
    with pytest.raises(InvalidInputError, match=r"optimizer steps\) must be an integer <= 2147483647"):
        nin_keras.train(model, digits[0], epochs=1_000_000, steps_per_epoch=10_000, out_dir=tmp_path / "run",
                        verbose=0)
    assert list(tmp_path.iterdir()) == [], "nothing is created"


# ------------------------------------------------------------------ 2. a width too large for the machine


def test_a_width_too_large_for_memory_is_refused_before_building(tmp_path):
    line = _one_line_error(_cli(["train", "--dataset", "digits", "--epochs", "1", "--width", "1000"], tmp_path),
                           "--width", "this machine has")
    assert re.search(r"would need at least [\d.]+ [kMGT]B of memory \([\d,]+ parameters", line), line
    assert list(tmp_path.iterdir()) == [], "nothing is created"


@pytest.mark.parametrize("variant, shape, options", [
    ("cifar", (32, 32, 3), {}),
    ("cifar", (20, 16, 3), {"batch_norm": False, "include_top": False}),
    ("mnist", (8, 8, 1), {"preprocessing": "gcn_zca"}),
    ("mnist", (28, 28, 1), {"preprocessing": "standardize", "batch_norm": False}),
    ("imagenet", (224, 224, 3), {}),
    ("d2l", (224, 224, 1), {"include_top": False}),
])
def test_the_size_estimate_counts_every_parameter_keras_builds(variant, shape, options):
    import nin_keras
    from nin_keras.models.builder import estimate_size

    model = nin_keras.build_nin(7, variant=variant, input_shape=shape, width_multiplier=0.2, **options)
    params, activations = estimate_size(variant, shape, 7, 0.2, **options)
    assert params == model.count_params()
    assert activations > int(np.prod(shape))


def test_build_nin_refuses_a_network_the_machine_cannot_hold(monkeypatch):
    import nin_keras
    from nin_keras.errors import InvalidInputError
    from nin_keras.models import builder

    monkeypatch.setattr(builder, "total_memory_bytes", lambda: 1_000_000)
    with pytest.raises(InvalidInputError, match=r"this machine has 1.00 MB\. Use a smaller width multiplier"):
        nin_keras.build_nin(10, variant="mnist", input_shape=helpers.DIGITS_SHAPE, width_multiplier=1.0)
    model = nin_keras.build_nin(10, variant="mnist", input_shape=helpers.DIGITS_SHAPE, width_multiplier=0.1)
    assert 4 * model.count_params() < 1_000_000  # what fits is still built


# -------------------------------------------------------------------------------- 3. one-class folders


def test_a_one_class_folder_is_refused_naming_the_folder(tmp_path):
    folder = tmp_path / "pets"
    for i in range(4):
        _png(folder / "cat" / f"{i}.png", seed=i)
    completed = _cli(["train", "--dataset", f"folder:{folder}", "--epochs", "1", "--width", "0.25"], tmp_path)
    _one_line_error(completed, "at least two classes", str(folder), "(cat)")
    assert [p.name for p in tmp_path.iterdir()] == ["pets"], "no run folder is created"


def test_a_folder_with_readable_images_of_one_class_only_is_refused(tmp_path):
    from nin_keras.data import load_dataset
    from nin_keras.errors import InvalidInputError

    for i in range(3):
        _png(tmp_path / "cat" / f"{i}.png", seed=i)
    (tmp_path / "dog").mkdir()
    (tmp_path / "dog" / "0.png").write_bytes(helpers.PNG_MAGIC + b"broken")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the skipped file's own warning
        with pytest.raises(InvalidInputError, match="readable images only in cat.*at least two classes"):
            load_dataset(f"folder:{tmp_path}", on_bad_image="skip")


# ---------------------------------------------------------------- 4. --overwrite survives a kill -9


def _new_run_started(run: Path) -> bool:
    """True once a session has written config.json with status "running" in the folder."""
    try:
        return json.loads((run / "config.json").read_text()).get("status") == "running"
    except (OSError, ValueError):
        return False


def test_overwrite_keeps_the_old_run_when_killed_during_the_first_epoch(digits, tmp_path):
    import nin_keras

    run = tmp_path / "run"
    old = _old_run(run)
    process = subprocess.Popen(
        CLI + ["train", *DIGITS_SMALL, "--batch-size", "16", "--epochs", "2", "--out", str(run), "--overwrite"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env(), cwd=tmp_path, start_new_session=True)
    # Fitting starts right after the new run's config.json is written: the kill lands in epoch 1.
    helpers.sigkill_when(process, lambda: _new_run_started(run), waiting_for="a started run")
    assert process.returncode == -signal.SIGKILL
    assert _tree(tmp_path / ".run.previous") == old, "the old run waits aside, byte for byte what it was"
    assert _new_run_started(run), "the new run was being written in the folder"

    # The next call on the folder puts the old run back (no epoch of the new one ended): neither run is lost.
    with pytest.raises(FileExistsError, match="resume=True"):
        nin_keras.train(nin_keras.build_nin(10, variant="mnist", input_shape=helpers.DIGITS_SHAPE,
                                            width_multiplier=0.1), digits[0], epochs=1, out_dir=run, verbose=0)
    assert _tree(run) == old, "the old run is byte for byte what it was"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]

    # Overwriting again: after its first epoch the new run takes the place.
    old_mask = os.umask(0o022)
    try:
        (x_train, y_train), _ = digits
        model = nin_keras.build_nin(10, variant="mnist", input_shape=helpers.DIGITS_SHAPE, width_multiplier=0.1)
        result = nin_keras.train(model, (x_train[:256], y_train[:256]), epochs=1, out_dir=run, overwrite=True,
                                 verbose=0, tensorboard=False, evaluate_test=False)
    finally:
        os.umask(old_mask)
    assert result.run_dir == run and result.paths["model"] == run / "model.keras"
    assert json.loads((run / "config.json").read_text())["status"] == "completed"
    assert (run / "model.keras").read_bytes() != old["model.keras"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"], "no set-aside folder is left"
    assert stat.S_IMODE(run.stat().st_mode) == 0o755


def test_a_run_that_fails_before_its_first_epoch_ends_leaves_the_old_one(digits, tmp_path):
    import keras

    import nin_keras

    class Fail(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raise RuntimeError("boom")

    run = tmp_path / "run"
    old = _old_run(run)
    (x_train, y_train), _ = digits
    model = nin_keras.build_nin(10, variant="mnist", input_shape=helpers.DIGITS_SHAPE, width_multiplier=0.1)
    with pytest.raises(RuntimeError, match="boom"):
        nin_keras.train(model, (x_train[:64], y_train[:64]), epochs=1, out_dir=run, overwrite=True, verbose=0,
                        tensorboard=False, callbacks=[Fail()])
    assert _tree(run) == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_failure_before_fitting_leaves_the_old_run_and_the_next_run_cleans_up(digits, tmp_path, monkeypatch):
    import nin_keras
    from nin_keras.training.run_folder import RunFolder

    run = tmp_path / "run"
    old = _old_run(run)
    (x_train, y_train), _ = digits
    data = (x_train[:64], y_train[:64])
    start = RunFolder.start

    def disk_full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(RunFolder, "start", disk_full)
    model = nin_keras.build_nin(10, variant="mnist", input_shape=helpers.DIGITS_SHAPE, width_multiplier=0.1)
    with pytest.raises(OSError, match="No space"):
        nin_keras.train(model, data, epochs=1, out_dir=run, overwrite=True, verbose=0, tensorboard=False)
    assert _tree(run) == old
    monkeypatch.setattr(RunFolder, "start", start)
    nin_keras.train(model, data, epochs=1, out_dir=run, overwrite=True, verbose=0, tensorboard=False,
                    evaluate_test=False)
    assert json.loads((run / "config.json").read_text())["status"] == "completed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"], "the old run was put back, nothing is left"


# ------------------------------------------------------- 5. folder modes; stale staging folders removed


def test_export_folders_get_normal_modes_and_stale_staging_is_removed(tmp_path):
    from nin_keras.exporting import export_targets

    dead, alive = _dead_pid(), os.getppid()
    stale = [tmp_path / f".export.{dead}.abcd1234.staging", tmp_path / f".export.{dead}.abcd1234.work"]
    kept = [tmp_path / f".export.{alive}.abcd1234.staging", tmp_path / f".other.{dead}.abcd1234.staging",
            tmp_path / "export.txt"]
    for folder in stale + kept[:2]:
        folder.mkdir()
        (folder / "model.keras").write_bytes(b"half-written")
    kept[2].write_text("mine")
    old_mask = os.umask(0o022)
    try:
        export_targets(helpers.small_nin(width_multiplier=0.05), tmp_path / "export", targets="keras",
                       progress=False)
    finally:
        os.umask(old_mask)
    out = tmp_path / "export"
    assert stat.S_IMODE(out.stat().st_mode) == 0o755, oct(out.stat().st_mode)
    assert stat.S_IMODE((out / "model.keras").stat().st_mode) == 0o644
    assert not any(folder.exists() for folder in stale), "a killed export's leftovers are removed"
    assert all(path.exists() for path in kept), "another export's folders, other names and files are kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["export", *(p.name for p in kept)])


def test_remove_stale_staging_keeps_a_set_aside_folder_while_the_target_is_missing(tmp_path):
    from nin_keras._atomic import remove_stale_staging

    set_aside = tmp_path / ".run.abcd1234.old"  # a kill between swap_dir's two renames: the only copy
    set_aside.mkdir()
    assert remove_stale_staging(tmp_path / "run") == [] and set_aside.exists()
    (tmp_path / "run").mkdir()  # the swap completed: the set-aside copy is an old one being removed
    assert remove_stale_staging(tmp_path / "run") == [set_aside] and not set_aside.exists()


# ------------------------------------------------------------------ 6. non-finite and complex pixels


@pytest.fixture(scope="module")
def float32_tflite(tiny_model, tmp_path_factory):
    from nin_keras.exporting import export_targets

    out = tmp_path_factory.mktemp("tflite")
    export_targets(tiny_model, out, targets="tflite_float32", progress=False)
    return out / "model_float32.tflite"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_predictor_refuses_non_finite_pixels_for_every_artifact_kind(tiny_model, float32_tflite, bad):
    from nin_keras.errors import InvalidInputError
    from nin_keras.verification import Predictor

    images = np.full((3, *helpers.DIGITS_SHAPE), 100, np.float32)
    images[1, 2, 3, 0] = bad
    for artifact in (tiny_model, float32_tflite):
        predictor = Predictor(artifact)
        assert predictor.predict(images[0]).shape == (10,)  # finite pixels still work
        with pytest.raises(InvalidInputError, match=r"NaN or infinite pixels \(1 of 3 image\(s\), the first at "
                                                    r"index 1\)"):
            predictor.predict(images)
        with pytest.raises(InvalidInputError, match="NaN or infinite"):
            predictor.predict(np.full(helpers.DIGITS_SHAPE, bad, np.float32))


def test_evaluate_refuses_a_nan_pixel_instead_of_scoring_it(float32_tflite, digits_test):
    from nin_keras.errors import InvalidInputError
    from nin_keras.verification import evaluate

    images, labels = digits_test
    poisoned = images[:64].astype(np.float32)
    poisoned[:, 0, 0, 0] = np.nan  # one NaN pixel per image
    with pytest.raises(InvalidInputError, match="NaN or infinite pixels"):
        evaluate(float32_tflite, (poisoned, labels[:64]), progress=False)
    assert evaluate(float32_tflite, (images[:64], labels[:64]), progress=False)["num_examples"] == 64


def test_complex_pixels_are_refused(tiny_model, digits, tmp_path):
    import nin_keras
    from nin_keras.errors import InvalidInputError
    from nin_keras.verification import Predictor

    image = np.full(helpers.DIGITS_SHAPE, 100, np.complex64)
    with pytest.raises(InvalidInputError, match="complex numbers"):
        Predictor(tiny_model).predict(image)
    (x_train, y_train), _ = digits
    with pytest.raises(InvalidInputError, match="complex numbers"):
        nin_keras.train(tiny_model, (x_train[:32].astype(np.complex64), y_train[:32]), epochs=1,
                        out_dir=tmp_path / "run", verbose=0)
    assert list(tmp_path.iterdir()) == []


def test_training_arrays_with_nan_pixels_are_refused_before_anything_is_written(tiny_model, digits, tmp_path):
    import nin_keras
    from nin_keras.errors import InvalidInputError

    (x_train, y_train), _ = digits
    images = x_train[:32].astype(np.float32)
    images[5, 1, 1, 0] = np.nan
    with pytest.raises(InvalidInputError, match=r"NaN or infinite pixels \(1 of 32 image\(s\), the first at index 5"):
        nin_keras.train(tiny_model, (images, y_train[:32]), epochs=1, out_dir=tmp_path / "run", verbose=0)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------- rough edges


def test_verbose_errors_show_the_traceback_and_still_exit_2(tmp_path):
    completed = _cli(["-v", "export", tmp_path / "missing.keras", "--targets", "keras"], tmp_path)
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert "Traceback" in completed.stderr
    last = completed.stderr.strip().splitlines()[-1]
    assert last.startswith("nin-keras export: error: Model file not found"), last


def test_resume_with_fewer_epochs_than_done_is_refused_and_the_run_left_alone(tmp_path):
    run = tmp_path / "run"
    before = _old_run(run, epochs_done=6)
    completed = _cli(["train", *DIGITS_SMALL, "--epochs", "3", "--resume", "--out", run], tmp_path)
    _one_line_error(completed, "already has 6 epochs", "--epochs 3", "--epochs 7")
    assert _tree(run) == before, "config.json and the rest are untouched"


def _keras_file_calling(path: Path, activation: dict) -> Path:
    """A .keras file whose Dense layer's activation is `activation` (a crafted config, as an attacker would)."""
    import keras

    plain = path.with_name("plain.keras")
    inputs = keras.Input((4,))
    keras.Model(inputs, keras.layers.Dense(2, activation="relu")(inputs)).save(plain)
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(path, "w") as crafted:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                for layer in config["config"]["layers"]:
                    if layer["class_name"] == "Dense":
                        layer["config"]["activation"] = activation
                data = json.dumps(config).encode()
            crafted.writestr(item, data)
    return path


@pytest.mark.parametrize("activation, named", [
    ({"module": "keras.models", "class_name": "function", "config": "load_model", "registered_name": "load_model"},
     "keras.models.load_model"),
    ({"module": "keras.src.utils.file_utils", "class_name": "get_file", "config": {}, "registered_name": None},
     "get_file"),
])
def test_a_keras_file_refused_for_safety_is_called_unsafe_not_corrupt(activation, named, tmp_path):
    import nin_keras
    from nin_keras.errors import UnsafeFileError

    path = _keras_file_calling(tmp_path / "crafted.keras", activation)
    with pytest.raises(UnsafeFileError) as caught:
        nin_keras.load_model(path)
    message = str(caught.value)
    assert "(unsafe)" in message and named in message and "corrupt" not in message


def test_evaluate_names_the_shape_of_a_5d_image_array(tiny_model, digits_test):
    from nin_keras.errors import IncompatibleModelError
    from nin_keras.verification import evaluate

    images, labels = digits_test
    with pytest.raises(IncompatibleModelError, match=r"5-D array of shape \(1, 64, 8, 8, 1\)"):
        evaluate(tiny_model, (images[None, :64], labels[:64]), progress=False)


def test_a_folder_of_mixed_image_sizes_says_once_that_it_resizes(tmp_path):
    from nin_keras.data import load_dataset

    for label in ("cat", "dog"):
        for i in range(3):
            _png(tmp_path / label / f"{i}.png", size=(10, 14) if (label, i) == ("dog", 2) else (12, 12), seed=i)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_dataset(f"folder:{tmp_path}", validation_split=0.0)
    said = [str(w.message) for w in caught if "resized" in str(w.message)]
    assert len(said) == 1 and "1 of 6 images" in said[0] and "12x12" in said[0], said
    assert data.input_shape == (12, 12, 3)
