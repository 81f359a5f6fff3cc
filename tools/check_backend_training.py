"""Checks `nin_keras.train` end to end on one Keras backend: budget recipe, run folder, resume, test score.

The suite runs this path on JAX (tests/test_backends.py); PyTorch's wheel from the package registry brings about
3 GB of CUDA libraries, so the suite leaves it out and this tool checks it where torch is installed:

    KERAS_BACKEND=torch python tools/check_backend_training.py --out /tmp/nin_torch_run

It trains the mnist variant on digits (scikit-learn's, shipped offline) for 2 epochs, resumes the run to 3,
and fails (exit 1) unless the run folder, the recorded backend, the resumed epochs and a better-than-chance test
accuracy are all there. The last line is `backend=... test_accuracy=...`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="run folder (replaced)")
    parser.add_argument("--width", type=float, default=0.25, help="width multiplier (default 0.25)")
    args = parser.parse_args(argv)

    import keras

    import nin_keras

    data = nin_keras.load_dataset("digits", batch_size=32)
    model = nin_keras.build_nin(data.num_classes, variant="mnist", input_shape=data.input_shape,
                                width_multiplier=args.width)
    started = time.perf_counter()
    first = nin_keras.train(model, data, epochs=2, out_dir=args.out, overwrite=True, seed=0, verbose=0)
    seconds = time.perf_counter() - started
    resumed = nin_keras.train(nin_keras.load_model(first.paths["model"]), data, epochs=3, out_dir=args.out,
                              resume=True, seed=0, verbose=0)
    config = json.loads(first.paths["config"].read_text())
    backend = keras.backend.backend()
    checks = {
        "run folder has model.keras, history.csv, config.json": all(
            first.paths[k].exists() for k in ("model", "history", "config")),
        # the strategy record names the backend off TensorFlow (TensorFlow's record is unchanged)
        f"config.json records the {backend} backend": config["strategy"].get("backend", "tensorflow") == backend,
        "resume went on from epoch 2 to 3": resumed.history.get("epoch", [])[-1:] == [3],
        "test accuracy above chance (10 classes)": resumed.test["accuracy"] > 0.3,
    }
    for what, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {what}")
    print(f"backend={backend} first_two_epochs_s={seconds:.1f} test_accuracy={resumed.test['accuracy']:.4f}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
