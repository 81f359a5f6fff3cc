"""Every script in examples/ runs, with tiny settings, in a subprocess with a timeout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
TIMEOUT = 240


def run_example(script: str, *args, timeout: float = TIMEOUT, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(EXAMPLES / script), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd or ROOT, env=env)


def _check(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, (
        f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr[-3000:]}")
    return result.stdout


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny digits-shaped NIN exported to the targets the examples read (PTQ, no verification)."""
    import keras

    import nin_keras
    from nin_keras.exporting import unavailable_targets

    out = tmp_path_factory.mktemp("export")
    keras.utils.set_random_seed(0)
    model = nin_keras.build_nin(10, variant="mnist", input_shape=(8, 8, 1), width_multiplier=0.125, name="tiny")
    data = nin_keras.load_dataset("synthetic", input_shape=(8, 8, 1), num_classes=10, size=64, batch_size=16)
    targets = ["keras", "saved_model", "tflite_float32", "tflite_int8", "edgetpu"]
    if "onnx" not in unavailable_targets():
        targets.append("onnx")
    nin_keras.export(model, out, targets=targets, data=data, verify=False, progress=False)
    return out, model


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for i, (size, mode) in enumerate([((8, 8), "L"), ((24, 16), "RGB"), ((40, 40), "L")]):
        shape = size[::-1] + ((3,) if mode == "RGB" else ())
        path = folder / (f"img{i}.png" if i != 1 else f"img{i}.jpg")
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(path)
        paths.append(path)
    return paths


def _parse_top1(stdout: str) -> list[str]:
    """First class of each 'path: name prob, ...' line."""
    lines = [line for line in stdout.splitlines() if ": " in line and line.split(": ")[0].endswith((".png", ".jpg"))]
    return [line.split(": ", 1)[1].split()[0] for line in lines]


# --------------------------------------------------------------------------------------- litert_inference


@pytest.mark.parametrize("artifact", ["model_float32.tflite", "model_int8.tflite", "model_edgetpu_ready.tflite"])
def test_litert_inference(exported, image_files, artifact):
    import nin_keras
    from nin_keras.viz import load_images

    out, model = exported
    stdout = _check(run_example("litert_inference.py", out / artifact, *image_files, "--top", "2", timeout=60))
    assert artifact in stdout
    top1 = _parse_top1(stdout)
    assert len(top1) == len(image_files)
    # The script's own pre- and post-processing gives the same classes as nin-keras' loader of the artifact.
    images = load_images(image_files, (8, 8, 1))
    expected = nin_keras.Predictor(out / artifact).predict(images).argmax(-1)
    labels = (out / "labels.txt").read_text().split("\n")
    assert top1 == [labels[i] for i in expected]
    if artifact == "model_float32.tflite":
        keras_top1 = np.asarray(model(images.astype(np.float32))).argmax(-1)
        assert top1 == [labels[i] for i in keras_top1]


def test_onnxruntime_client(exported, image_files):
    import nin_keras
    from nin_keras.viz import load_images

    out, _ = exported
    if not (out / "model.onnx").exists():
        pytest.skip("the [onnx] extra is not installed")
    stdout = _check(run_example("onnxruntime_client.py", out / "model.onnx", *image_files, "--top", "2", timeout=60))
    labels = (out / "labels.txt").read_text().split("\n")
    expected = nin_keras.Predictor(out / "model.onnx").predict(load_images(image_files, (8, 8, 1))).argmax(-1)
    assert _parse_top1(stdout) == [labels[i] for i in expected]


def test_litert_inference_missing_model(tmp_path, image_files):
    result = run_example("litert_inference.py", tmp_path / "none.tflite", image_files[0], timeout=60)
    assert result.returncode == 2 and "not found" in result.stderr


# ------------------------------------------------------------------------------ TF Serving REST client


class _StandIn(BaseHTTPRequestHandler):
    """TF Serving's REST routes, answered by the SavedModel's serving_default (set on the server)."""

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _send(self, status: int, body: dict) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self):  # noqa: N802
        if self.path != f"/v1/models/{self.server.model_name}/metadata":
            return self._send(404, {"error": f"Servable not found for request: {self.path}"})
        signature = self.server.signature

        def describe(specs):
            return {name: {"dtype": f"DT_{spec.dtype.name.upper()}", "name": f"serving_default_{name}:0",
                           "tensor_shape": {"dim": [{"size": str(-1 if d is None else d), "name": ""}
                                                    for d in spec.shape], "unknown_rank": False}}
                    for name, spec in specs.items()}

        inputs = describe(signature.structured_input_signature[1])
        outputs = describe(signature.structured_outputs)
        body = {"model_spec": {"name": self.server.model_name, "signature_name": "", "version": "1"},
                "metadata": {"signature_def": {"signature_def": {"serving_default": {
                    "inputs": inputs, "outputs": outputs, "method_name": "tensorflow/serving/predict"}}}}}
        self._send(200, body)

    def do_POST(self):  # noqa: N802
        import tensorflow as tf

        if self.path != f"/v1/models/{self.server.model_name}:predict":
            return self._send(404, {"error": f"Servable not found for request: {self.path}"})
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if request.get("signature_name", "serving_default") != "serving_default":
            return self._send(400, {"error": "unknown signature"})
        (input_name, spec), = self.server.signature.structured_input_signature[1].items()
        instances = request["instances"]
        rows = [row[input_name] if isinstance(row, dict) else row for row in instances]
        with self.server.lock:
            outputs = self.server.signature(**{input_name: tf.constant(rows, dtype=spec.dtype)})
        outputs = {name: value.numpy().tolist() for name, value in outputs.items()}
        predictions = [{name: values[i] for name, values in outputs.items()} for i in range(len(rows))]
        self._send(200, {"predictions": predictions})


@pytest.fixture
def serving(exported):
    import tensorflow as tf

    out, _ = exported
    loaded = tf.saved_model.load(str(out / "saved_model" / "1"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StandIn)
    server.model_name = "nin"
    server.loaded = loaded  # keeps the signature's variables alive
    server.signature = loaded.signatures["serving_default"]
    server.lock = threading.Lock()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_client_against_saved_model_signature(exported, image_files, serving):
    from nin_keras.viz import load_images

    out, model = exported
    labels = out / "labels.txt"
    stdout = _check(run_example("client.py", *image_files, "--url", serving, "--model-name", "nin",
                                "--labels", labels, timeout=60))
    lines = [line for line in stdout.splitlines() if line.startswith(str(image_files[0].parent))]
    assert len(lines) == len(image_files)
    names = labels.read_text().split("\n")
    expected = np.asarray(model(load_images(image_files, (8, 8, 1)).astype(np.float32))).argmax(-1)
    assert [line.split("class ")[1].split()[0] for line in lines] == [names[i] for i in expected]


def test_client_with_explicit_shape_and_bad_model_name(image_files, serving):
    ok = _check(run_example("client.py", image_files[0], "--url", serving, "--input-shape", "8,8,1", timeout=60))
    assert "class " in ok
    result = run_example("client.py", image_files[0], "--url", serving, "--model-name", "other", timeout=60)
    assert result.returncode != 0 and "HTTP 404" in result.stderr


# ------------------------------------------------------------------------------ export-based examples


def test_android_gpu_fp16_smoke(tmp_path):
    stdout = _check(run_example("android_gpu_fp16.py", "--smoke", "--out", tmp_path / "android"))
    assert (tmp_path / "android" / "model_float16.tflite").is_file()
    assert (tmp_path / "android" / "gpu_compatibility.txt").is_file()
    assert "GPU delegate: compatible" in stdout and "CONV_2D" in stdout


@pytest.mark.slow
def test_qat_to_coral_smoke(tmp_path):
    out = tmp_path / "coral"
    stdout = _check(run_example("qat_to_coral.py", "--smoke", "--out", out))
    for name in ("model_int8.tflite", "model_edgetpu_ready.tflite", "edgetpu_check.json", "report.md"):
        assert (out / name).exists(), name
    assert "Edge TPU check of model_edgetpu_ready.tflite: compatible" in stdout
    assert "edgetpu_compiler" in stdout


@pytest.mark.slow
def test_train_cifar10_smoke(tmp_path):
    stdout = _check(run_example("train_cifar10.py", "--smoke", "--recipe", "both", "--out", tmp_path / "runs"))
    assert "paper" in stdout and "bn" in stdout
    assert "not reproduced here" in (EXAMPLES / "train_cifar10.py").read_text()
    assert sorted(p.name for p in (tmp_path / "runs").iterdir() if p.is_dir()) == ["cifar10_bn", "cifar10_paper"]


def test_train_cifar10_needs_data_offline(tmp_path):
    result = run_example("train_cifar10.py", "--data-dir", tmp_path / "empty", "--epochs", "1", timeout=60)
    assert result.returncode != 0
    assert "cifar" in (result.stderr + result.stdout).lower()
