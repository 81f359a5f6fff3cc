"""MediaPipe Tasks' ImageClassifier, a client nobody here wrote, takes the exported .tflite files as they are.

MediaPipe cannot share a venv with TensorFlow + tfmot (it needs a newer absl-py), so the test builds its own
(.venv-mediapipe beside .venv, kept between runs) and runs examples/mediapipe_classify.py there. It reads the
metadata nin-keras packs into each file: the input normalization (raw pixels: mean 0, std 1) and the class
names. Top-1 must agree with ai_edge_litert running the same files here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import helpers

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "examples" / "mediapipe_classify.py"
MEDIAPIPE_VENV = Path(os.environ.get("NIN_KERAS_MEDIAPIPE_VENV", ROOT / ".venv-mediapipe"))
MEDIAPIPE_REQUIREMENT = "mediapipe>=1.2"
# The files MediaPipe takes: float input (normalized by the metadata) or uint8 input.
MEDIAPIPE_FILES = ("model_float32.tflite", "model_float16.tflite", "model_dynamic.tflite",
                   "model_edgetpu_ready.tflite")


def _mediapipe_python() -> Path:
    python = MEDIAPIPE_VENV / "bin" / "python"
    probe = [str(python), "-c", "import mediapipe"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(MEDIAPIPE_VENV)], check=True)
    install = subprocess.run([str(python), "-m", "pip", "install", "--quiet", MEDIAPIPE_REQUIREMENT],
                             capture_output=True, text=True)
    assert install.returncode == 0, f"could not install {MEDIAPIPE_REQUIREMENT}:\n{install.stderr[-3000:]}"
    return python


def _classify(python, model, images_file, out):
    return subprocess.run([str(python), str(CLIENT), str(model), "--npy", str(images_file), "--json", str(out),
                           "--top", "3"], capture_output=True, text=True)


@pytest.fixture(scope="module")
def rgb_export(tmp_path_factory):
    """A small RGB classifier, trained a little on synthetic data so its scores differ, exported."""
    import nin_keras

    folder = tmp_path_factory.mktemp("mediapipe")
    data = nin_keras.load_dataset("synthetic", input_shape=(32, 32, 3), size=512, batch_size=64, seed=1)
    model = nin_keras.build_nin(data.num_classes, width_multiplier=0.25)
    nin_keras.train(model, data, epochs=2, out_dir=folder / "run", verbose=0, tensorboard=False,
                    evaluate_test=False)
    names = [f"kind {i}" for i in range(data.num_classes)]
    nin_keras.export(model, folder / "export", targets="tflite_float32,tflite_float16,tflite_dynamic,"
                     "tflite_int8,edgetpu", data=data, class_names=names, verify=False, progress=False)
    images = helpers.random_images(16, (32, 32, 3), seed=3).astype(np.uint8)
    np.save(folder / "images.npy", images)
    return folder, images, names


@pytest.mark.parametrize("name", MEDIAPIPE_FILES)
def test_mediapipe_classifies_like_litert_with_class_names(rgb_export, name):
    folder, images, names = rgb_export
    model = folder / "export" / name
    out = folder / f"{name}.json"
    completed = _classify(_mediapipe_python(), model, folder / "images.npy", out)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(out.read_text())
    litert = helpers.run_tflite(model, images)
    mediapipe_top1 = np.array([found[0]["index"] for found in results])
    # MediaPipe's top class must hold LiteRT's top score. A uint8 output (steps of 1/256) often ties two
    # classes at the top, and the two clients may break a tie differently.
    agrees = litert[np.arange(len(images)), mediapipe_top1] >= litert.max(axis=-1) - 1e-6
    assert np.mean(agrees) >= 15 / 16, (mediapipe_top1, np.round(litert, 3))
    assert all(c["name"] == names[c["index"]] for found in results for c in found)  # from the packed labels


def test_mediapipe_refuses_the_int8_input_file_as_documented(rgb_export):
    folder, _, _ = rgb_export
    completed = _classify(_mediapipe_python(), folder / "export" / "model_int8.tflite", folder / "images.npy",
                          folder / "int8.json")
    assert completed.returncode == 2 and "INT8" in completed.stderr, completed.stderr[-2000:]
