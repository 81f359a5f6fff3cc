"""Every row of docs/ERRORS.md, run through the real CLI: exit code 2, one line on stderr, no traceback.

The table in docs/ERRORS.md is the single source: a row added there is tested here. Placeholders in the
arguments ({model}, {corrupt_keras}, ...) are files this module makes.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from helpers import REPO_ROOT, PickleRunsCommand, run_cli

ERRORS_MD = REPO_ROOT / "docs" / "ERRORS.md"
ROW = re.compile(r"^\|\s*`nin-keras ([^`]*)`\s*\|\s*([^|]+?)\s*\|\s*(.+?)\s*\|\s*$")


def _rows():
    rows = []
    for line in ERRORS_MD.read_text().splitlines():
        match = ROW.match(line)
        if match:
            arguments, problem, message = match.groups()
            fragment = re.search(r"`([^`]+)`", message)
            assert fragment, f"ERRORS.md row without a `quoted` message fragment: {line}"
            rows.append(pytest.param(arguments, fragment.group(1), id=f"{arguments[:60]}"))
    return rows


ROWS = _rows()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import keras

    import nin_keras

    tmp = tmp_path_factory.mktemp("cli_errors")
    made = {"tmp": tmp, "missing": tmp / "missing.keras", "missing_image": tmp / "missing.png"}

    model = nin_keras.build_nin(10, input_shape=(16, 16, 3), width_multiplier=0.05)
    made["model"] = nin_keras.save_model(model, tmp / "model16.keras")
    digits_model = nin_keras.build_nin(10, variant="mnist", input_shape=(8, 8, 1), width_multiplier=0.05)
    made["digits_model"] = nin_keras.save_model(digits_model, tmp / "digits.keras")
    features = nin_keras.build_nin(10, input_shape=(16, 16, 3), width_multiplier=0.05, include_top=False)
    made["feature_model"] = nin_keras.save_model(features, tmp / "features.keras")

    inputs = keras.Input((4,))
    keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2)(inputs)).save(tmp / "lambda.keras")
    made["lambda_keras"] = tmp / "lambda.keras"

    rng = np.random.default_rng(0)
    (tmp / "corrupt.keras").write_bytes(rng.bytes(2048))
    made["corrupt_keras"] = tmp / "corrupt.keras"
    data = made["model"].read_bytes()
    (tmp / "truncated.keras").write_bytes(data[: len(data) // 2])
    made["truncated_keras"] = tmp / "truncated.keras"
    (tmp / "random.tflite").write_bytes(rng.bytes(4096))
    made["random_tflite"] = tmp / "random.tflite"
    (tmp / "notes.txt").write_text("not a model\n")
    made["text_file"] = tmp / "notes.txt"

    (tmp / "empty").mkdir()
    made["empty_dir"] = tmp / "empty"

    # mnist IDX files whose image file is cut short.
    idx = tmp / "idx_truncated"
    idx.mkdir()
    header = np.array([0x803, 10, 28, 28], ">i4").tobytes()
    for prefix, count in (("train", 10), ("t10k", 10)):
        with gzip.open(idx / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(header + bytes(100))  # far fewer than 10*28*28 pixels
        with gzip.open(idx / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(np.array([0x801, count], ">i4").tobytes() + bytes(count))
    made["idx_truncated"] = idx

    # A CIFAR-10 folder whose first batch is a pickle with a code payload.
    hostile = tmp / "hostile" / "cifar-10-batches-py"
    hostile.mkdir(parents=True)
    marker = tmp / "PWNED"
    made["marker"] = marker
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch",
                 "batches.meta"]:
        (hostile / name).write_bytes(pickle.dumps(PickleRunsCommand(marker), protocol=2))
    made["hostile_cifar"] = hostile.parent

    bad_images = tmp / "images"
    for label in ("cat", "dog"):
        (bad_images / label).mkdir(parents=True)
    from PIL import Image  # noqa: PLC0415 (pillow comes with matplotlib)

    for label in ("cat", "dog"):
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(bad_images / label / f"{i}.png")
    (bad_images / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + rng.bytes(64))
    made["bad_images"] = bad_images
    one_class = tmp / "one_class"
    (one_class / "cat").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(one_class / "cat" / f"{i}.png")
    made["one_class"] = one_class

    # A .keras whose config makes Keras call keras.models.load_model while loading (refused in any mode).
    with zipfile.ZipFile(made["digits_model"]) as source, zipfile.ZipFile(tmp / "unsafe.keras", "w") as crafted:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                layer = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Conv2D")
                layer["config"]["activation"] = {"module": "keras.models", "class_name": "function",
                                                 "config": "load_model", "registered_name": "load_model"}
                data = json.dumps(config).encode()
            crafted.writestr(item, data)
    made["unsafe_keras"] = tmp / "unsafe.keras"

    run = tmp / "existing_run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    made["existing_run"] = run

    six = tmp / "six_epoch_run"  # a run whose backup holds 6 completed epochs
    (six / "backup").mkdir(parents=True)
    (six / "config.json").write_text('{"status": "completed"}')
    (six / "backup" / "training_metadata.json").write_text('{"epoch": 6, "weights": "epoch-0006.weights.h5"}')
    made["six_epoch_run"] = six
    return made


def test_errors_table_has_rows_for_every_command():
    commands = {str(p.values[0]).split()[0] for p in ROWS}
    assert {"train", "export", "evaluate", "benchmark", "maps", "demo", "variants"} <= commands


@pytest.mark.parametrize("arguments, fragment", ROWS)
def test_bad_input_gets_one_clear_line_and_exit_code_2(arguments, fragment, files, capfd, monkeypatch):
    monkeypatch.chdir(files["tmp"])  # a row that wrongly succeeds must not write runs/ into the repo
    code, out, err = run_cli([part.format(**files) for part in arguments.split()], capfd)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, f"exit code {code}; stderr: {err[-2000:]}"
    assert "Traceback" not in err
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err[-2000:]}"
    assert fragment.lower() in lines[0].lower(), lines[0]
    assert not files["marker"].exists(), "a hostile pickle ran code"


@pytest.mark.parametrize("argv, fragment", [
    (["export", "{missing}", "--targets", "keras"], "not found"),
    (["evaluate", "{random_tflite}", "--dataset", "digits"], "random.tflite"),
])
def test_console_script_is_quiet_and_exits_2(argv, fragment, files):
    """The installed `nin-keras` (a fresh process: TensorFlow's start-up logs must not show)."""
    script = Path(sys.executable).with_name("nin-keras")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "nin_keras"]
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "NIN_KERAS_VERBOSE")}
    result = subprocess.run(command + [a.format(**files) for a in argv], capture_output=True, text=True,
                            timeout=180, env=env)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1, result.stderr[-2000:]
    assert fragment in lines[0]
