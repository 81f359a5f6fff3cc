"""Plain helpers shared by the tests; the fixtures built from them live in conftest.py.

Test modules import from here (or take conftest's fixtures), never from one another:
tests/test_suite_hygiene.py fails when a test module imports another. TensorFlow, Keras, nin_keras and LiteRT
are imported inside the functions that need them, so collecting a light test module stays light.
"""

from __future__ import annotations

import os
import signal
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# scikit-learn's digits: 8x8 gray images, 10 classes.
DIGITS_SHAPE = (8, 8, 1)
DIGITS_CLASSES = 10
# The small CIFAR-shaped NIN most export and quantization tests use (converts in seconds).
SMALL_SHAPE = (16, 16, 3)


# ------------------------------------------------------------------------------------------ data and models


def load_tool(name: str, monkeypatch):
    """tools/<name>.py imported as a module (with its neighbour _bench importable), for testing its functions."""
    import importlib.util  # lazy: only the tool tests load tools

    monkeypatch.syspath_prepend(str(REPO_ROOT / "tools"))
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "tools" / f"{name}.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def random_images(n: int, shape, seed: int = 0) -> np.ndarray:
    """`n` float32 raw-pixel images (uniform in 0..255) of `shape` (H, W, C)."""
    return np.random.default_rng(seed).uniform(0, 255, (n, *shape)).astype("float32")


def random_data(n: int, shape=SMALL_SHAPE, seed: int = 0, classes: int = 10):
    """(images, labels): `random_images(n, shape, seed)` and int labels 0..classes-1 from the same generator."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, (n, *shape)).astype("float32"), rng.integers(0, classes, n)


def small_nin(**overrides):
    """A fresh, untrained 10-class CIFAR-variant NIN on 16x16x3 at width 0.1; `overrides` go to build_nin."""
    import nin_keras

    options = dict(variant="cifar", input_shape=SMALL_SHAPE, width_multiplier=0.1)
    options.update(overrides)
    return nin_keras.build_nin(10, **options)


def digits_arrays():
    """scikit-learn's 8x8 digits as uint8 pixels 0..255 (NHWC) and int labels: (train, test), 1400 / 397."""
    from sklearn.datasets import load_digits  # dev extra

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int64)
    return (images[:1400], labels[:1400]), (images[1400:], labels[1400:])


def train_digits_model(x_train, y_train):
    """A small NIN (width 0.25, no dropout) trained 6 epochs on digits arrays, seeded: about 0.9 accuracy."""
    import keras

    import nin_keras

    keras.utils.set_random_seed(0)
    model = nin_keras.build_nin(DIGITS_CLASSES, variant="mnist", input_shape=DIGITS_SHAPE, width_multiplier=0.25,
                                dropout_rate=0.0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(np.asarray(x_train, dtype="float32"), y_train, epochs=6, batch_size=64, verbose=0)
    return model


# --------------------------------------------------------------- artifacts written without nin_keras' exporter


def serving_archive(model, batch):
    """A SavedModel writer with signature serving_default: image -> probabilities, class_id (as the exporter)."""
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    shape = tuple(model.input_shape[1:])

    @tf.function(input_signature=[tf.TensorSpec([batch, *shape], tf.float32, name="image")])
    def serve(image):
        probabilities = model(image, training=False)
        return {"probabilities": probabilities, "class_id": tf.argmax(probabilities, axis=-1, output_type=tf.int32)}

    archive.add_endpoint("serving_default", serve)
    return archive


def convert_saved_model(saved_model_dir, path, *, io_type=None, float16=False, representative=None):
    """Converts a SavedModel with TensorFlow's converter straight (float32, float16 weights or full integer)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    if float16:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    if io_type is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = io_type
        converter.inference_output_type = io_type
    with warnings.catch_warnings():  # the converter itself still uses the deprecated tf.lite.Interpreter
        warnings.simplefilter("ignore", UserWarning)
        Path(path).write_bytes(converter.convert())
    return Path(path)


def write_digits_artifacts(model, folder: Path, scratch: Path, x_train) -> Path:
    """Writes every artifact kind of a digits `model` into `folder`, as an export folder would hold them.

    model.keras, saved_model/1 (dynamic batch), float32 / float16 / int8-I/O .tflite files, a uint8-I/O batch-1
    model_edgetpu_ready.tflite and labels.txt ("digit 0".."digit 9"). `scratch` takes the batch-1 SavedModel.
    """
    import tensorflow as tf

    import nin_keras

    nin_keras.save_model(model, folder / "model.keras")
    serving_archive(model, None).write_out(str(folder / "saved_model" / "1"), verbose=False)
    serving_archive(model, 1).write_out(str(scratch), verbose=False)

    def representative():
        for i in range(0, 200, 2):
            yield {"image": x_train[i:i + 1].astype(np.float32)}

    saved_model = folder / "saved_model" / "1"
    convert_saved_model(saved_model, folder / "model_float32.tflite")
    convert_saved_model(saved_model, folder / "model_float16.tflite", float16=True)
    convert_saved_model(saved_model, folder / "model_int8.tflite", io_type=tf.int8, representative=representative)
    convert_saved_model(scratch, folder / "model_edgetpu_ready.tflite", io_type=tf.uint8,
                        representative=representative)
    (folder / "labels.txt").write_text("\n".join(f"digit {i}" for i in range(DIGITS_CLASSES)) + "\n")
    return folder


# ----------------------------------------------------------------------------------- LiteRT against Keras


def tflite_io_names(path) -> tuple:
    """(signature list, input tensor names, output tensor names) of a .tflite, as LiteRT's Interpreter sees them."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    return (interpreter.get_signature_list(), [d["name"] for d in interpreter.get_input_details()],
            [d["name"] for d in interpreter.get_output_details()])


def run_tflite(model, images) -> np.ndarray:
    """Float32 outputs of a .tflite (path or bytes) on raw-pixel `images`, one image per call.

    An independent runner (ai_edge_litert's Interpreter, not nin_keras' loader). Integer inputs are quantized
    with the model's own (scale, zero point) and integer outputs dequantized, so a float32, int8 or
    uint8/batch-1 model is compared on the same footing. Of several outputs, the (batch, classes) one is read.
    """
    from ai_edge_litert.interpreter import Interpreter

    if isinstance(model, (bytes, bytearray)):
        interpreter = Interpreter(model_content=bytes(model))
    else:
        interpreter = Interpreter(model_path=str(model))
    inp = interpreter.get_input_details()[0]
    # The (batch, classes) output: a file converted from the serving signature also has class_id, (batch,).
    out = next(detail for detail in interpreter.get_output_details() if len(detail["shape"]) == 2)
    if inp["shape_signature"][0] == -1:  # dynamic batch: size it to one image
        interpreter.resize_tensor_input(inp["index"], [1, *inp["shape"][1:]])
    interpreter.allocate_tensors()
    outputs = []
    for image in np.asarray(images):
        x = image[None].astype(np.float32)
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(inp["dtype"])
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"]).astype("float32")
        if out["dtype"] != np.float32:
            scale, zero = out["quantization"]
            y = (y - zero) * scale
        outputs.append(y[0])
    return np.stack(outputs)


def builtin_interpreter(model_bytes: bytes, *, keep_all_tensors: bool = False):
    """A LiteRT interpreter of .tflite bytes on the builtin kernels (no XNNPACK), allocated.

    `keep_all_tensors` keeps every intermediate tensor readable after `invoke()` (XNNPACK would not keep them).
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_content=bytes(model_bytes),
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                              experimental_preserve_all_tensors=keep_all_tensors)
    interpreter.allocate_tensors()
    return interpreter


def keras_outputs(model, images) -> np.ndarray:
    """Float32 outputs of a Keras model (or anything with `predict(images)`, e.g. a QATModel)."""
    import keras

    x = np.asarray(images, dtype=np.float32)
    if isinstance(model, keras.Model):
        return np.asarray(model.predict(x, verbose=0), dtype=np.float32)
    return np.asarray(model.predict(x), dtype=np.float32)


def assert_predictions_match(actual, expected, *, min_top1_agreement: float | None = None,
                             atol: float | None = None, what: str = "outputs") -> dict:
    """Fails unless `actual` agrees with `expected` (N x classes) as asked; gives both numbers on failure.

    Args:
        actual: outputs under test, e.g. a .tflite model's probabilities.
        expected: reference outputs, e.g. the Keras model's.
        min_top1_agreement: the least share of images whose top-1 class is the same. None: not checked.
        atol: the largest absolute difference allowed in any output. None: not checked.
        what: names the comparison in the failure message.

    Returns:
        {"agreement": share of equal top-1 classes, "max_abs_diff": largest absolute difference}.
    """
    if min_top1_agreement is None and atol is None:
        raise TypeError("give min_top1_agreement, atol or both: a comparison without a threshold checks nothing")
    actual, expected = np.asarray(actual, dtype=np.float32), np.asarray(expected, dtype=np.float32)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != reference shape {expected.shape}"
    agreement = float(np.mean(actual.argmax(-1) == expected.argmax(-1)))
    max_abs_diff = float(np.abs(actual - expected).max())
    problems = []
    if min_top1_agreement is not None and agreement < min_top1_agreement:
        problems.append(f"top-1 agreement {agreement:.4f} < {min_top1_agreement}")
    if atol is not None and not max_abs_diff <= atol:  # `not <=` also fails on NaN
        problems.append(f"max |diff| {max_abs_diff:.3g} > {atol}")
    assert not problems, (f"{what} on {len(actual)} images: " + "; ".join(problems)
                          + f" (agreement {agreement:.4f}, max |diff| {max_abs_diff:.3g})")
    return {"agreement": agreement, "max_abs_diff": max_abs_diff}


def assert_litert_matches_keras(tflite, keras_model, images, *, min_top1_agreement: float | None = None,
                                atol: float | None = None) -> dict:
    """Runs a .tflite (path or bytes) with LiteRT's own Interpreter and compares it with the Keras model.

    Modeled on keras-hub's `run_litert_export_test`: the same raw-pixel `images` go to both; integer I/O is
    (de)quantized with the model's own parameters (see `run_tflite`).

    Args:
        tflite: a .tflite path or its bytes.
        keras_model: the model it was converted from (or anything with `predict(images)`, e.g. a QATModel).
        images: raw-pixel images, (N, H, W, C).
        min_top1_agreement: the least share of images with the same top-1 class. None: not checked.
        atol: the largest absolute difference allowed in any output. None: not checked.

    Returns:
        {"agreement", "max_abs_diff", "litert": LiteRT outputs, "keras": Keras outputs}.
    """
    what = "LiteRT " + (Path(tflite).name if isinstance(tflite, (str, os.PathLike)) else "model") + " vs Keras"
    litert = run_tflite(tflite, images)
    reference = keras_outputs(keras_model, images)
    found = assert_predictions_match(litert, reference, min_top1_agreement=min_top1_agreement, atol=atol,
                                     what=what)
    return {**found, "litert": litert, "keras": reference}


# ------------------------------------------------------------------------------------------------ files


def is_png(path) -> bool:
    """True for an existing file that starts with the PNG signature."""
    path = Path(path)
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC


def temporary_files(root) -> list[str]:
    """Names under `root` (at any depth) that look like a writer's leftovers: *.tmp*, *.staging*, *.old*."""
    return [p.name for p in Path(root).rglob("*") if any(mark in p.name for mark in (".tmp", ".staging", ".old"))]


class PickleRunsCommand:
    """Unpickling this runs `touch <marker>`: a hostile pickle a loader must refuse."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class PickleRunsEval:
    """Unpickling this creates <marker> through eval: a hostile pickle that needs no shell."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


# -------------------------------------------------------------------------------------------------- CLI


def run_cli(argv, capture):
    """Runs `nin-keras argv` in this process: (exit code, stdout, stderr), usage errors included.

    `capture` is pytest's capsys or capfd; what was captured before the call is dropped.
    """
    from nin_keras.cli import main

    capture.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:  # argparse usage errors
        code = exit_.code
    out, err = capture.readouterr()
    return code, out, err


def sigkill_when(process, ready, *, waiting_for: str, timeout: float = 240) -> None:
    """Kills `process` (SIGKILL) as soon as `ready()` is true; fails the test if it ends or times out first."""
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if process.poll() is not None:
                pytest.fail(f"training ended before {waiting_for}: {process.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {waiting_for} within {timeout:g} s")
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        process.stderr.close()


OUTLIER_CULPRIT = "conv_a"  # the layer whose output range outlier_channel_model blows up


def outlier_channel_model(x_train, y_train, *, factor: float = 1000.0, epochs: int = 10):
    """A small digits classifier that int8 ruins for a known reason, and the float model does not notice.

    Trained (seeded, ~90% test accuracy, about as good in plain int8), then two output channels of
    `OUTLIER_CULPRIT` are scaled by `factor` and the next layer's weights reading them by 1/`factor`. ReLU is
    positively homogeneous, so the float model's outputs do not change; but the culprit's output range grows
    `factor` times, and with one int8 scale per activation tensor its other 14 channels round to zero: the
    int8 file falls to about chance. Keeping the culprit in float, or 16-bit activations, repairs it.
    """
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input(DIGITS_SHAPE), keras.layers.Rescaling(1 / 255.0),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu", name=OUTLIER_CULPRIT),
        keras.layers.Conv2D(16, 1, activation="relu", name="conv_b"),
        keras.layers.Flatten(), keras.layers.Dense(DIGITS_CLASSES, activation="softmax", name="head"),
    ], name="outlier_channels")
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(np.asarray(x_train, np.float32), y_train, epochs=epochs, batch_size=32, verbose=0)
    kernel, bias = model.get_layer(OUTLIER_CULPRIT).get_weights()
    kernel[..., :2] *= factor
    bias[:2] *= factor
    model.get_layer(OUTLIER_CULPRIT).set_weights([kernel, bias])
    kernel, bias = model.get_layer("conv_b").get_weights()
    kernel[:, :, :2, :] /= factor
    model.get_layer("conv_b").set_weights([kernel, bias])
    return model
