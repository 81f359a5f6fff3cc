"""Distributed training: MirroredStrategy over two logical CPUs, and a two-process multi-worker run on 127.0.0.1.

Both run in subprocesses: logical devices and collective ops must be configured before TensorFlow initialises.
"""

import csv
import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest

MIRRORED = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import numpy as np
    import nin_keras
    from nin_keras.data.splits import DatasetSplits
    from nin_keras.training import train

    def split(n, seed):
        rng = np.random.default_rng(seed)
        x = rng.integers(0, 256, (n, 12, 12, 1), dtype=np.uint8)
        y = (x.mean(axis=(1, 2, 3)) > 127.5).astype("int32")
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(16)

    data = DatasetSplits("toy", split(64, 0), split(32, 1), split(32, 2), 2, ["a", "b"], (12, 12, 1))
    model = nin_keras.build_nin(2, variant="mnist", input_shape=(12, 12, 1), width_multiplier=0.1)
    result = train(model, data, epochs=2, out_dir=sys.argv[1], strategy="mirrored", precision="auto",
                   verbose=0, tensorboard=False)
    print("RESULT " + json.dumps({"strategy": result.strategy, "epochs": result.history["epoch"],
                                  "loss": result.history["loss"]}))
""")


def _env(**extra):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1", **extra)
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def test_mirrored_strategy_over_two_logical_cpus(tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED)
    run = tmp_path / "run"
    completed = subprocess.run([sys.executable, str(script), str(run)], capture_output=True, text=True,
                               env=_env(), timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    line = next(l for l in completed.stdout.splitlines() if l.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    assert result["strategy"] == "mirrored" and result["epochs"] == [1, 2]
    config = json.loads((run / "config.json").read_text())
    assert config["strategy"]["num_replicas"] == 2
    assert "2 logical CPU" in config["strategy"]["reason"]
    assert (run / "model.keras").is_file()


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.mark.slow
def test_two_process_multiworker_run_on_localhost(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    command = [sys.executable, "-m", "nin_keras", "train", "--dataset", "synthetic", "--variant", "mnist",
               "--width", "0.1", "--epochs", "2", "--steps-per-epoch", "3", "--batch-size", "16",
               "--strategy", "multiworker", "--no-augment", "--no-tensorboard", "--out", str(tmp_path / "run")]
    processes = []
    try:
        for index in range(2):
            tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
            processes.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                              env=_env(TF_CONFIG=tf_config), start_new_session=True))
        deadline = time.monotonic() + 240
        outputs = []
        for process in processes:
            outputs.append(process.communicate(timeout=max(1.0, deadline - time.monotonic())))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
    for process, (out, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-3000:]
    chief = json.loads((tmp_path / "run" / "config.json").read_text())
    assert chief["strategy"]["name"] == "multiworker"
    assert chief["strategy"]["num_workers"] == 2 and chief["strategy"]["is_chief"]
    assert chief["epochs_completed"] == 2
    worker = json.loads((tmp_path / "run.worker-1" / "config.json").read_text())
    assert not worker["strategy"]["is_chief"]
    # Synchronous training: both workers saw the same (all-reduced) losses.
    assert "worker 0 (chief)" in outputs[0][0] and "worker 1" in outputs[1][0]
    history = []
    for folder in ("run", "run.worker-1"):
        with open(tmp_path / folder / "history.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        history.append([{k: v for k, v in row.items() if k != "epoch_seconds"} for row in rows])  # wall-clock differs
    assert len(history[0]) == 2 and history[0] == history[1]
