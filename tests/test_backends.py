"""The model core on another Keras 3 backend (JAX) in a process where TensorFlow cannot be imported.

One subprocess runs SCRIPT: build every variant, fit a few steps on arrays, save and load, confidence maps and
their figure, then the one clear error of a TensorFlow-only stage. A meta-path hook makes TensorFlow and its
companions unimportable, as on a machine with only JAX or PyTorch installed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from helpers import REPO_ROOT

pytest.importorskip("jax")

# JAX compiles every op of a new shape (weight initializers included) with XLA: unoptimised compiles are
# about 5x faster on CPU, and these tests time nothing.
FAST_XLA_COMPILES = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"

# Makes the TensorFlow-only packages unimportable in the process that runs it (first lines of every script).
BLOCK_TENSORFLOW = '''
import importlib.abc, sys
BLOCKED = ("tensorflow", "tf_keras", "tensorflow_model_optimization", "ai_edge_litert")
class _NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None
sys.meta_path.insert(0, _NoTensorFlow())
'''

SCRIPT = BLOCK_TENSORFLOW + '''
import json, sys
from pathlib import Path
import numpy as np
import keras
import nin_keras
from nin_keras.errors import MissingDependencyError
from nin_keras.models import FusedBatchNormalization, minimum_input_size

out = Path(sys.argv[1])
report = {"backend": keras.backend.backend()}
report["variants"] = {}
for variant in nin_keras.list_variants():
    side = minimum_input_size(variant)
    channels = {"mnist": 1, "d2l": 1}.get(variant, 3)
    model = nin_keras.build_nin(4, variant=variant, input_shape=(side, side, channels), width_multiplier=0.05)
    report["variants"][variant] = list(model(np.zeros((1, side, side, channels), "float32")).shape)

rng = np.random.default_rng(0)
images = rng.uniform(0, 255, (16, 16, 16, 3)).astype("float32")
labels = rng.integers(0, 10, 16)
model = nin_keras.build_nin(10, input_shape=(16, 16, 3), width_multiplier=0.05)
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
report["losses"] = [float(v) for v in model.fit(images, labels, batch_size=8, epochs=1, verbose=0).history["loss"]]
models = {}
for preprocessing in ("standardize", "gcn_zca"):  # the adapted layers, saved and loaded with their state
    adapted = nin_keras.build_nin(10, input_shape=(16, 16, 3), width_multiplier=0.05, preprocessing=preprocessing)
    (nin_keras.adapt_standardization if preprocessing == "standardize" else nin_keras.adapt_whitening)(
        adapted, images)
    models[preprocessing] = adapted
models["rescale"] = model
for name, built in models.items():
    loaded = nin_keras.load_model(nin_keras.save_model(built, out / f"{name}.keras"))
    before = keras.ops.convert_to_numpy(built(images, training=False))
    report[f"{name}_round_trip"] = float(np.abs(before - keras.ops.convert_to_numpy(loaded(images))).max())
    report[f"{name}_finite"] = bool(np.isfinite(before).all())
report["fused_after_load"] = sum(type(layer) is FusedBatchNormalization for layer in loaded.layers)

maps = nin_keras.class_confidence_maps(loaded, images[:4], upsample=False)
scores = keras.ops.convert_to_numpy(keras.Model(loaded.inputs[0], loaded.get_layer("gap").output)(images[:4]))
report["maps_shape"] = list(maps.shape)
report["maps_mean_vs_gap"] = float(np.abs(maps.mean(axis=(1, 2)) - scores).max())
from nin_keras.viz import plot_confidence_maps
figure = plot_confidence_maps(loaded, images[:2], out / "maps.png", show=False)
report["figure_bytes"] = figure.stat().st_size

try:
    nin_keras.load_dataset("digits")
except MissingDependencyError as error:
    report["stage_error"] = str(error)
from nin_keras.cli import main
report["cli_exit"] = main(["evaluate", str(out / "rescale.keras"), "--dataset", "digits", "--limit", "4"])
report["tensorflow_imported"] = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
(out / "report.json").write_text(json.dumps(report))
'''


def run_without_tensorflow(script: str, *args, backend: str = "jax", timeout: int = 240):
    """Runs `script` with `python -c` on `backend` with TensorFlow unimportable; returns the CompletedProcess."""
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(REPO_ROOT), "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": FAST_XLA_COMPILES}
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=REPO_ROOT, timeout=timeout)


def test_model_core_runs_on_jax_without_tensorflow(tmp_path):
    result = run_without_tensorflow(SCRIPT, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["backend"] == "jax"
    assert report["variants"] == {"cifar": [1, 4], "d2l": [1, 4], "imagenet": [1, 4], "mnist": [1, 4]}
    assert len(report["losses"]) == 1 and 0 < report["losses"][0] < 100
    for preprocessing in ("rescale", "standardize", "gcn_zca"):
        assert report[f"{preprocessing}_finite"], preprocessing
        assert report[f"{preprocessing}_round_trip"] < 1e-5, preprocessing
    assert report["fused_after_load"] > 0  # load_model swaps the fused layer in; it runs Keras' BN off TensorFlow
    assert report["maps_shape"][0] == 4 and report["maps_shape"][-1] == 10
    assert report["maps_mean_vs_gap"] < 1e-4
    assert report["figure_bytes"] > 1000
    # A TensorFlow-only stage: one error naming the feature and the install command, from the API and the CLI.
    assert "needs TensorFlow for nin_keras.data.load_dataset" in report["stage_error"]
    assert "pip install tensorflow" in report["stage_error"]
    assert report["cli_exit"] == 2
    assert "nin-keras evaluate: error: nin-keras needs TensorFlow" in result.stderr
    assert "Traceback" not in result.stderr
    assert report["tensorflow_imported"] == []


def write_idx_dataset(folder, train: int = 48, test: int = 16, seed: int = 0):
    """The four Fashion-MNIST files in their real format (gzipped IDX), with random 28x28 images."""
    import gzip

    import numpy as np

    rng = np.random.default_rng(seed)
    for prefix, count in (("train", train), ("t10k", test)):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, count, dtype=np.uint8)
        for kind, array, code in (("images-idx3", images, 3), ("labels-idx1", labels, 1)):
            header = bytes([0, 0, 8, code]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
            (folder / f"{prefix}-{kind}-ubyte.gz").write_bytes(gzip.compress(header + array.tobytes()))
    return folder


def test_benchmark_backends_tool_on_jax(tmp_path):
    """tools/benchmark_backends.py times steps and trains to accuracy on jax, TensorFlow blocked; no torch here."""
    tool = "import runpy, sys; sys.argv = ['benchmark_backends.py', *sys.argv[1:]]; " \
           "runpy.run_path('tools/benchmark_backends.py', run_name='__main__')"
    common = ["--backend", "jax", "--batch-size", "8", "--width", "0.05"]
    speed = run_without_tensorflow(BLOCK_TENSORFLOW + tool, *common, "--steps", "2", "--warmup-steps", "1",
                                   "--precision", "bfloat16", "--json", tmp_path / "speed.json")
    assert speed.returncode == 0, speed.stderr[-3000:]
    assert speed.stdout.strip().splitlines()[-1].startswith("train_images_per_s=")
    result = json.loads((tmp_path / "speed.json").read_text())
    assert result["mode"] == "speed" and result["train_images_per_s"] > 0 and result["peak_memory_bytes"] > 0
    assert result["precision"] == "bfloat16" and result["tensorflow_imported"] is False

    data = write_idx_dataset(tmp_path)
    accuracy = run_without_tensorflow(BLOCK_TENSORFLOW + tool, *common, "--data-dir", data, "--epochs", "2",
                                      "--json", tmp_path / "tta.json")
    assert accuracy.returncode == 0, accuracy.stderr[-3000:]
    result = json.loads((tmp_path / "tta.json").read_text())
    assert result["mode"] == "time_to_accuracy" and result["variant"] == "mnist"
    assert result["train_images"] == 48 and result["test_images"] == 16
    assert len(result["test_accuracy_by_epoch"]) == 2 and "recipe budget" in result["recipe"]
    assert "seconds_to_92" in result and "seconds_to_93" in result


JAX_HALF = BLOCK_TENSORFLOW + '''
import sys
import numpy as np
import nin_keras
model = nin_keras.build_nin(10, input_shape=(16, 16, 3), width_multiplier=0.1)
images = np.random.default_rng(0).uniform(0, 255, (8, 16, 16, 3)).astype("float32")
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
model.fit(images, np.arange(8) % 10, batch_size=8, epochs=1, verbose=0)  # moving statistics away from 0 and 1
nin_keras.save_model(model, sys.argv[1] + "/jax.keras")
np.save(sys.argv[1] + "/images.npy", images)
np.save(sys.argv[1] + "/jax_predictions.npy", np.asarray(model.predict(images, verbose=0)))
'''


@pytest.mark.slow
def test_a_jax_model_loads_and_exports_under_tensorflow(tmp_path):
    """A .keras file saved on JAX (no TensorFlow) loads here on TensorFlow and converts to TFLite, agreeing."""
    import numpy as np

    from helpers import run_tflite

    import nin_keras
    from nin_keras.exporting import to_tflite

    jax_half = run_without_tensorflow(JAX_HALF, tmp_path)
    assert jax_half.returncode == 0, jax_half.stderr[-3000:]
    images, expected = np.load(tmp_path / "images.npy"), np.load(tmp_path / "jax_predictions.npy")
    model = nin_keras.load_model(tmp_path / "jax.keras")
    np.testing.assert_allclose(model.predict(images, verbose=0), expected, atol=1e-4)
    litert = run_tflite(to_tflite(model, "float32"), images)
    assert (litert.argmax(-1) == expected.argmax(-1)).all()
    assert np.abs(litert - expected).max() <= 1e-4


def test_time_to_accuracy_figures(monkeypatch):
    """Times to 92%/93% are training time (evaluations left out) at the first epoch reaching them."""
    from types import SimpleNamespace

    from helpers import load_tool

    tool = load_tool("benchmark_backends", monkeypatch)
    # Three epochs of 10 s each, each followed by a 2 s evaluation inside the epoch; start at t=100.
    timer = SimpleNamespace(times=[100.0], evaluating=[[108, 110], [118, 120], [128, 130]],
                            epochs=[(110, {"val_accuracy": 0.90}), (120, {"val_accuracy": 0.925}),
                                    (130, {"val_accuracy": 0.95})])
    figures = tool.accuracy_figures({}, timer, 100.0, train_images=800)
    assert figures["test_accuracy_by_epoch"] == [0.90, 0.925, 0.95]
    assert figures["seconds_to_92"] == 16 and figures["wall_seconds_to_92"] == 20
    assert figures["seconds_to_93"] == 24 and figures["wall_seconds_to_93"] == 30
    assert figures["train_images_per_s"] == 100  # 800 images in 8 s, the first (compiling) epoch left out
    assert figures["final_test_accuracy"] == 0.95


TRAIN_ON_JAX = '''
import json, sys
import keras
import nin_keras
data = nin_keras.load_dataset("digits", batch_size=64)  # tf.data pipelines feed any Keras backend
model = nin_keras.build_nin(10, variant="mnist", input_shape=(8, 8, 1), width_multiplier=0.25)
result = nin_keras.train(model, data, epochs=1, out_dir=sys.argv[1] + "/run", verbose=0, tensorboard=False)
print(json.dumps({"backend": keras.backend.backend(), "test": result.test}))
'''


@pytest.mark.slow
def test_train_on_jax_with_tf_data(tmp_path):
    """nin_keras.train (tf.data input, run folder, test evaluation) on the JAX backend, TensorFlow installed."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(REPO_ROOT), "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": FAST_XLA_COMPILES}
    result = subprocess.run([sys.executable, "-c", TRAIN_ON_JAX, str(tmp_path)], capture_output=True, text=True,
                            env=env, cwd=REPO_ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["backend"] == "jax" and report["test"] is not None
    assert (tmp_path / "run").is_dir()


TRAIN_DATA_PARALLEL = '''
import dataclasses, json, sys
from pathlib import Path
import keras
import numpy as np
import nin_keras
from nin_keras.errors import InvalidInputError

out = Path(sys.argv[1])
data = nin_keras.load_dataset("digits", batch_size=64)
cut = lambda dataset, count: dataset.unbatch().take(count).batch(64)  # last batches of 63 and 37 images
data = dataclasses.replace(data, train=cut(data.train, 255), validation=cut(data.validation, 101),
                           test=cut(data.test, 101))
model = nin_keras.build_nin(10, variant="mnist", input_shape=(8, 8, 1), width_multiplier=0.1)
common = dict(out_dir=out / "run", verbose=0, tensorboard=False, seed=0)
first = nin_keras.train(model, data, epochs=1, **common)
report = {"strategy": json.loads((out / "run" / "config.json").read_text())["strategy"],
          "model_saved": Path(first.paths["model"]).is_file(), "test": first.test,
          "distribution_after": repr(keras.distribution.distribution())}
resumed = nin_keras.train(model, data, epochs=2, resume=True, **common)
report.update(initial_epoch=resumed.initial_epoch, epochs=resumed.history["epoch"],
              val_accuracy=resumed.history["val_accuracy"])
for name, data, batch_size, strategy in (("multiworker", data, 64, "multiworker"),
                                         ("odd_batch", (np.zeros((14, 8, 8, 1)), np.arange(14) % 10), 7, "auto")):
    try:
        nin_keras.train(model, data, epochs=1, out_dir=out / name, batch_size=batch_size, strategy=strategy)
    except InvalidInputError as error:
        report[name] = str(error)
report["get_strategy"] = nin_keras.training.get_strategy("auto").as_dict()  # as the CLI asks: no tf.distribute
print(json.dumps(report))
'''


@pytest.mark.slow
def test_train_data_parallel_on_two_jax_devices(tmp_path):
    """train on JAX over 2 (CPU) devices: keras.distribution.DataParallel recorded, saved, tested, resumed."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(REPO_ROOT), "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": FAST_XLA_COMPILES + " --xla_force_host_platform_device_count=2"}
    result = subprocess.run([sys.executable, "-c", TRAIN_DATA_PARALLEL, str(tmp_path)], capture_output=True,
                            text=True, env=env, cwd=REPO_ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    strategy = report["strategy"]
    assert strategy["name"] == "DataParallel" and strategy["requested"] == "auto"
    assert strategy["backend"] == "jax" and strategy["devices"] == ["cpu:0", "cpu:1"]
    assert strategy["num_replicas"] == 2
    assert report["model_saved"] and 0 <= report["test"]["accuracy"] <= 1
    assert report["distribution_after"] == "None"  # the process is left as it was found
    assert report["initial_epoch"] == 1 and report["epochs"] == [1, 2] and len(report["val_accuracy"]) == 2
    assert "'multiworker' is TensorFlow-only" in report["multiworker"]
    assert "does not divide by the 2 devices" in report["odd_batch"]
    assert report["get_strategy"]["name"] == "DataParallel" and report["get_strategy"]["backend"] == "jax"


def test_batches_fit_the_devices_of_data_parallel():
    """Under DataParallel a short training batch is filled with its own images, a short validation batch is
    padded with weight-0 images (so every image counts once), and a batch that cannot divide is refused."""
    import numpy as np
    import tensorflow as tf

    from nin_keras.data.splits import DatasetSplits
    from nin_keras.errors import InvalidInputError
    from nin_keras.training.distribution import check_global_batch, fit_on_devices
    from nin_keras.training.inputs import FitSplits
    from nin_keras.training.strategy import StrategyChoice

    images, labels = np.arange(7, dtype="float32").reshape(7, 1), np.arange(7)
    batches = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)  # 4, then 3
    inputs = FitSplits(**{field.name: None for field in dataclasses.fields(DatasetSplits)})
    inputs = dataclasses.replace(inputs, train=batches, validation=batches)
    choice = StrategyChoice(None, "DataParallel", "auto", "test", num_replicas=2, backend="jax")
    fitted = fit_on_devices(inputs, choice)
    train = [(x.numpy().ravel().tolist(), y.numpy().tolist()) for x, y in fitted.train]
    assert train == [([0, 1, 2, 3], [0, 1, 2, 3]), ([4, 5, 6, 4], [4, 5, 6, 4])]
    assert fitted.train.cardinality().numpy() == 2
    validation = [(x.numpy().ravel().tolist(), w.numpy().tolist()) for x, _, w in fitted.validation]
    assert validation == [([0, 1, 2, 3], [1, 1, 1, 1]), ([4, 5, 6, 0], [1, 1, 1, 0])]
    assert fit_on_devices(inputs, dataclasses.replace(choice, name="one")) is inputs
    check_global_batch(64, choice)
    with pytest.raises(InvalidInputError, match="multiple of 2, e.g. 6 or 8"):
        check_global_batch(7, choice)


def test_strategy_names_off_tensorflow(monkeypatch):
    """On JAX with one device "auto" is one device and "mirrored" is refused; PyTorch has one device only."""
    import keras

    from nin_keras.errors import InvalidInputError
    from nin_keras.training import distribution

    monkeypatch.setattr(distribution, "_keras_devices", lambda: ["cpu:0"])
    for backend in ("jax", "torch"):
        monkeypatch.setattr(keras.backend, "backend", lambda backend=backend: backend)
        choice = distribution.training_strategy("auto")
        assert (choice.name, choice.backend, choice.num_replicas) == ("one", backend, 1)
        with pytest.raises(InvalidInputError, match="'mirrored'"):
            distribution.training_strategy("mirrored")
        with pytest.raises(InvalidInputError, match="TensorFlow-only"):
            distribution.training_strategy("multiworker")
        with pytest.raises(InvalidInputError, match="is a TensorFlow one"):
            distribution.training_strategy(object())
