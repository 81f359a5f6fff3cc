"""Figures (nin_keras.viz) and class-confidence maps, plus the `nin-keras maps` command."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from helpers import is_png, temporary_files

HISTORY = {
    "loss": [2.2, 1.1, 0.6, 0.4],
    "accuracy": [0.3, 0.7, 0.85, 0.9],
    "val_loss": [2.0, 1.0, 0.7, 0.55],
    "val_accuracy": [0.35, 0.72, 0.83, 0.88],
}
ROWS = [
    {"artifact": "model.keras", "target": "keras", "precision": "float32", "size_bytes": 400_000,
     "accuracy": 0.97, "agreement": 1.0, "latency_ms_batch1_median": 9.5},
    {"artifact": "model_float16.tflite", "target": "tflite_float16", "precision": "float16 weights",
     "size_bytes": 150_000, "accuracy": 0.97, "agreement": 1.0, "latency_ms_batch1_median": 0.4},
    {"artifact": "model_int8.tflite", "target": "tflite_int8", "precision": "full int8", "size_bytes": 90_000,
     "accuracy": 0.968, "agreement": 0.994, "latency_ms_batch1_median": 0.2},
    {"artifact": "model_edgetpu_ready.tflite", "target": "edgetpu", "precision": "full int8",
     "size_bytes": 91_000, "accuracy": None, "agreement": None, "latency_ms_batch1_median": None},
]


# ----------------------------------------------------------------------------------------------- figures


def test_training_curves_writes_png(tmp_path):
    from nin_keras.viz import plot_training_curves

    out = plot_training_curves(HISTORY, tmp_path / "sub" / "curves.png")
    assert out == tmp_path / "sub" / "curves.png"
    assert is_png(out)
    assert not temporary_files(out.parent)


@pytest.mark.parametrize("keys", [("loss",), ("accuracy", "val_accuracy"), ("loss", "val_loss"),
                                  ("val_loss", "val_accuracy")])
def test_training_curves_any_subset(tmp_path, keys):
    from nin_keras.viz import plot_training_curves

    assert is_png(plot_training_curves({k: HISTORY[k] for k in keys}, tmp_path / "c.png"))


def test_training_curves_accepts_history_object_and_other_accuracy_names(tmp_path):
    from nin_keras.viz import plot_training_curves

    class History:  # what keras.callbacks.History looks like to us
        history = {"loss": [1.0, 0.5], "sparse_categorical_accuracy": [0.5, 0.8], "val_loss": [1.1, float("nan")]}

    assert is_png(plot_training_curves(History(), tmp_path / "c.png"))


@pytest.mark.parametrize("history", [{}, {"lr": [0.1, 0.01]}, [1, 2], {"loss": ["a", "b"]}])
def test_training_curves_bad_history(tmp_path, history):
    from nin_keras.viz import plot_training_curves

    with pytest.raises(ValueError):
        plot_training_curves(history, tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()


def test_figures_need_png_suffix(tmp_path):
    from nin_keras.viz import plot_training_curves

    with pytest.raises(ValueError, match="png"):
        plot_training_curves(HISTORY, tmp_path / "c.jpg")


def test_failed_write_keeps_previous_figure(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from nin_keras.viz import plot_training_curves

    path = plot_training_curves(HISTORY, tmp_path / "c.png")
    before = path.read_bytes()

    def broken_savefig(self, fname, **kwargs):
        with open(fname, "wb") as handle:
            handle.write(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        plot_training_curves({"loss": [5.0, 4.0]}, path)
    assert path.read_bytes() == before
    assert not temporary_files(tmp_path)


def test_figures_leave_pyplot_alone():
    # In a fresh interpreter: drawing every figure imports neither pyplot (global figure state) nor TF.
    code = textwrap.dedent("""
        import sys, tempfile, pathlib
        from nin_keras.viz import plot_training_curves, plot_confusion_matrix, plot_artifact_comparison
        out = pathlib.Path(tempfile.mkdtemp())
        plot_training_curves({"loss": [1, 0.5]}, out / "a.png")
        plot_confusion_matrix([0, 1, 1], [0, 1, 0], ["a", "b"], out / "b.png")
        plot_artifact_comparison([{"artifact": "m", "accuracy": 0.5}], out / "c.png")
        assert "matplotlib.pyplot" not in sys.modules
        assert "tensorflow" not in sys.modules, "figures must not import TensorFlow"
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_confusion_matrix(tmp_path):
    from nin_keras.viz import plot_confusion_matrix

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 200)
    scores = rng.random((200, 10))
    names = [f"class {i}" for i in range(10)]
    assert is_png(plot_confusion_matrix(labels, scores, names, tmp_path / "cm.png"))
    assert is_png(plot_confusion_matrix(labels, labels, None, tmp_path / "cm2.png", normalize=False))


@pytest.mark.parametrize("labels, predictions, names", [
    ([0, 1, 2], [0, 1], ["a", "b", "c"]),         # lengths differ
    ([0, 1, 3], [0, 1, 1], ["a", "b", "c"]),      # label outside the class names
    ([0, 1, 1], [0, -1, 1], ["a", "b"]),          # negative prediction
    ([], [], ["a"]),                               # nothing to draw
])
def test_confusion_matrix_bad_input(tmp_path, labels, predictions, names):
    from nin_keras.viz import plot_confusion_matrix

    with pytest.raises(ValueError):
        plot_confusion_matrix(labels, predictions, names, tmp_path / "cm.png")


def test_artifact_comparison(tmp_path):
    from nin_keras.viz import plot_artifact_comparison

    assert is_png(plot_artifact_comparison(ROWS, tmp_path / "artifacts.png"))
    with pytest.raises(ValueError):
        plot_artifact_comparison([], tmp_path / "none.png")


# ------------------------------------------------------------------------------------ confidence maps

VARIANTS = [  # (variant, input_shape, width multiplier): small but every preset's layer structure
    ("mnist", (8, 8, 1), 0.25),
    ("mnist", (28, 28, 1), 0.125),
    ("cifar", (32, 32, 3), 0.1),
    ("imagenet", (67, 67, 3), 0.05),
    ("d2l", (67, 67, 1), 0.05),
]


def _softmax(scores):
    scores = scores - scores.max(axis=-1, keepdims=True)
    exp = np.exp(scores)
    return exp / exp.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("variant, shape, width", VARIANTS)
def test_maps_average_to_the_model_scores(variant, shape, width):
    import nin_keras

    model = nin_keras.build_nin(7, variant=variant, input_shape=shape, width_multiplier=width)
    images = np.random.default_rng(1).integers(0, 256, (3, *shape)).astype(np.uint8)
    maps = nin_keras.class_confidence_maps(model, images, upsample=False)
    assert maps.dtype == np.float32
    assert maps.ndim == 4 and maps.shape[0] == 3 and maps.shape[-1] == 7
    assert maps.shape[1:3] == tuple(model.get_layer("gap").input.shape[1:3])
    probabilities = np.asarray(model(images.astype(np.float32)))
    np.testing.assert_allclose(_softmax(maps.mean(axis=(1, 2))), probabilities, atol=1e-5)

    upsampled = nin_keras.class_confidence_maps(model, images)
    assert upsampled.shape == (3, shape[0], shape[1], 7)


def test_maps_equal_logits_without_softmax():
    import nin_keras

    model = nin_keras.build_nin(5, variant="mnist", input_shape=(12, 12, 1), width_multiplier=0.25,
                                classifier_activation=None, batch_norm=False)
    images = np.random.default_rng(2).integers(0, 256, (4, 12, 12, 1))
    maps = nin_keras.class_confidence_maps(model, images, upsample=False)
    np.testing.assert_allclose(maps.mean(axis=(1, 2)), np.asarray(model(images.astype(np.float32))),
                               rtol=1e-5, atol=1e-6)


def test_maps_single_image_and_loaded_model(tmp_path, digits_model):
    import nin_keras

    image = np.random.default_rng(3).integers(0, 256, (8, 8, 1))
    direct = nin_keras.class_confidence_maps(digits_model, image)
    assert direct.shape == (1, 8, 8, 10)
    path = nin_keras.save_model(digits_model, tmp_path / "m.keras")
    loaded = nin_keras.load_model(path)
    np.testing.assert_allclose(nin_keras.class_confidence_maps(loaded, image), direct, atol=1e-5)


def test_maps_fall_back_to_last_global_average_pooling():
    import keras

    import nin_keras

    inputs = keras.Input((10, 10, 3))
    x = keras.layers.Conv2D(4, 3, name="class_layer")(inputs)
    outputs = keras.layers.Softmax()(keras.layers.GlobalAveragePooling2D(name="pool")(x))
    model = keras.Model(inputs, outputs)
    images = np.random.default_rng(4).random((2, 10, 10, 3)).astype(np.float32)
    maps = nin_keras.class_confidence_maps(model, images, upsample=False)
    assert maps.shape == (2, 8, 8, 4)
    np.testing.assert_allclose(_softmax(maps.mean(axis=(1, 2))), np.asarray(model(images)), atol=1e-5)


def test_maps_refuse_models_without_gap_and_wrong_images(digits_model):
    import keras

    import nin_keras
    from nin_keras.errors import IncompatibleModelError

    inputs = keras.Input((8, 8, 1))
    flat = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(inputs)))
    with pytest.raises(IncompatibleModelError, match="GlobalAveragePooling2D"):
        nin_keras.class_confidence_maps(flat, np.zeros((1, 8, 8, 1)))
    with pytest.raises(ValueError, match=r"\(batch, 8, 8, 1\)"):
        nin_keras.class_confidence_maps(digits_model, np.zeros((2, 9, 9, 1)))
    with pytest.raises(ValueError):
        nin_keras.class_confidence_maps(digits_model, np.zeros((0, 8, 8, 1)))


def test_plot_confidence_maps(tmp_path, digits_model):
    from nin_keras.viz import plot_confidence_maps

    images = np.random.default_rng(5).integers(0, 256, (3, 8, 8, 1))
    names = [f"digit {i}" for i in range(10)]
    out = plot_confidence_maps(digits_model, images, tmp_path / "maps.png", names, labels=[1, 2, 3])
    assert is_png(out)
    with pytest.raises(ValueError, match="class_names"):
        plot_confidence_maps(digits_model, images, tmp_path / "bad.png", ["a", "b"])


def test_confidence_map_overlay_uses_the_row_scale(tmp_path, digits_model, monkeypatch):
    """The overlaid predicted map shares its row's colour scale: autoscaled, a nearly flat map looks full range."""
    from matplotlib.axes import Axes

    from nin_keras.viz import plot_confidence_maps

    calls = []
    original = Axes.imshow
    monkeypatch.setattr(Axes, "imshow", lambda self, data, **kw: calls.append((data, kw)) or original(self, data, **kw))
    images = np.random.default_rng(5).integers(0, 256, (1, 8, 8, 1))
    plot_confidence_maps(digits_model, images, tmp_path / "maps.png", top_k=3, show=False)
    overlay = next(kw for _, kw in calls if kw.get("cmap") == "jet")
    top_maps = [kw for _, kw in calls if kw.get("cmap") == "viridis"]
    assert "vmin" in overlay and (overlay["vmin"], overlay["vmax"]) == (top_maps[0]["vmin"], top_maps[0]["vmax"])
    assert overlay["vmin"] < overlay["vmax"]


# ------------------------------------------------------------------------------- images and the CLI


def _write_images(folder):
    from PIL import Image

    rng = np.random.default_rng(6)
    rgb = folder / "rgb.png"
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(rgb)
    gray = folder / "gray.jpg"
    Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8), mode="L").save(gray)
    return rgb, gray


def test_load_images_converts_and_resizes(tmp_path):
    from nin_keras.errors import InvalidInputError
    from nin_keras.viz import load_images

    rgb, gray = _write_images(tmp_path)
    as_gray = load_images([rgb, gray], (8, 8, 1))
    assert as_gray.shape == (2, 8, 8, 1) and as_gray.dtype == np.uint8
    as_rgb = load_images([gray], (32, 32, 3))
    assert as_rgb.shape == (1, 32, 32, 3)
    np.testing.assert_array_equal(as_rgb[..., 0], as_rgb[..., 2])  # gray -> RGB repeats the channel

    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    with pytest.raises(InvalidInputError, match="junk.png"):
        load_images([junk], (8, 8, 1))
    with pytest.raises(FileNotFoundError):
        load_images([tmp_path / "missing.png"], (8, 8, 1))
    with pytest.raises(InvalidInputError, match="channels"):
        load_images([rgb], (8, 8, 4))


def test_cli_maps(tmp_path, digits_model, capsys):
    import nin_keras
    from nin_keras.cli import main

    model_path = nin_keras.save_model(digits_model, tmp_path / "model.keras")
    (tmp_path / "labels.txt").write_text("\n".join(f"digit-{i}" for i in range(10)) + "\n")
    rgb, gray = _write_images(tmp_path)
    out = tmp_path / "maps.png"
    assert main(["maps", str(model_path), str(rgb), str(gray), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert is_png(out)
    assert "rgb.png: digit-" in printed and "gray.jpg: digit-" in printed
    assert str(out) in printed


@pytest.mark.parametrize("bad", ["out_jpg", "missing_image", "missing_model", "bad_labels"])
def test_cli_maps_bad_input(tmp_path, digits_model, capsys, bad):
    import nin_keras
    from nin_keras.cli import main

    model_path = nin_keras.save_model(digits_model, tmp_path / "model.keras")
    rgb, _ = _write_images(tmp_path)
    argv = ["maps", str(model_path), str(rgb), "--out", str(tmp_path / "maps.png")]
    if bad == "out_jpg":
        argv[-1] = str(tmp_path / "maps.jpg")
    elif bad == "missing_image":
        argv[2] = str(tmp_path / "nope.png")
    elif bad == "missing_model":
        argv[1] = str(tmp_path / "nope.keras")
    else:
        (tmp_path / "labels.txt").write_text("only\ntwo\n")
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("nin-keras maps: error:") and error.count("\n") == 1
    assert "Traceback" not in error
    assert not (tmp_path / "maps.png").exists()
