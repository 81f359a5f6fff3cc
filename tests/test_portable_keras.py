"""Every .keras file the project writes opens in plain Keras 3, in a Python that cannot import nin_keras.

The files say "BatchNormalization" where the model ran FusedBatchNormalization (the two behave alike:
test_batch_norm_peer.py); nin_keras.load_model brings the fused layer back.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import numpy as np

import helpers

# Loads each file with plain Keras while `import nin_keras` is impossible, and writes its predictions.
PLAIN_KERAS_LOAD = """
import sys
sys.modules["nin_keras"] = None  # any attempt to import nin_keras now fails
import json, numpy as np, keras
paths, images, out = sys.argv[1].split(","), np.load(sys.argv[2]), sys.argv[3]
np.savez(out, *[keras.saving.load_model(p).predict(images, verbose=0) for p in paths])
"""


def test_model_files_load_in_plain_keras_without_nin_keras(tmp_path, digits):
    import nin_keras

    (x_train, y_train), (x_test, y_test) = digits
    cifar = nin_keras.build_nin(10, width_multiplier=0.25)  # the default variant, fused BN throughout
    cifar_images = helpers.random_images(4, (32, 32, 3))
    cifar(cifar_images, training=True)  # moving statistics away from their initial values
    saved = nin_keras.save_model(cifar, tmp_path / "cifar.keras")

    small = helpers.small_nin(variant="mnist", input_shape=(8, 8, 1))
    run = nin_keras.train(small, (x_train[:256], y_train[:256]), epochs=1, out_dir=tmp_path / "run", verbose=0,
                          tensorboard=False, evaluate_test=False)
    exported = nin_keras.export(run.model, tmp_path / "export", targets="keras", progress=False)
    files = [saved, run.paths["model"], tmp_path / "export" / "model.keras"]
    for path in files:
        config = zipfile.ZipFile(path).read("config.json").decode()
        assert "FusedBatchNormalization" not in config and "nin_keras" not in config, path
        assert '"BatchNormalization"' in config, path

    digits_images = x_test[:16].astype("float32")
    np.save(tmp_path / "cifar.npy", cifar_images)
    np.save(tmp_path / "digits.npy", digits_images)
    predictions = {}
    for paths, images in (([saved], "cifar.npy"), (files[1:], "digits.npy")):
        out = tmp_path / f"{images}.out.npz"
        completed = subprocess.run([sys.executable, "-c", PLAIN_KERAS_LOAD, ",".join(map(str, paths)),
                                    str(tmp_path / images), str(out)], capture_output=True, text=True, cwd=tmp_path)
        assert completed.returncode == 0, completed.stderr[-3000:]
        with np.load(out) as arrays:
            predictions.update({str(p): arrays[f"arr_{i}"] for i, p in enumerate(paths)})

    np.testing.assert_allclose(predictions[str(saved)], cifar.predict(cifar_images, verbose=0), atol=1e-5)
    for path in files[1:]:
        np.testing.assert_allclose(predictions[str(path)], run.model.predict(digits_images, verbose=0), atol=1e-5)
    assert exported["manifest"]["targets"]["keras"]["file"] == "model.keras"


def test_load_model_brings_the_fused_layer_back(tmp_path):
    import keras

    import nin_keras

    # Adapted standardization too: its tensors come from its weights only once Keras is told to derive them.
    model = helpers.small_nin(preprocessing="standardize")
    images = helpers.random_images(3, helpers.SMALL_SHAPE)
    nin_keras.adapt_standardization(model, helpers.random_images(32, helpers.SMALL_SHAPE, seed=1))
    path = nin_keras.save_model(model, tmp_path / "m.keras")
    plain = keras.saving.load_model(path)
    loaded = nin_keras.load_model(path)
    kinds = {type(layer) for layer in loaded.layers}
    assert nin_keras.FusedBatchNormalization in kinds and keras.layers.BatchNormalization not in kinds
    assert {type(layer) for layer in plain.layers} >= {keras.layers.BatchNormalization}
    for copy in (loaded, plain):
        np.testing.assert_allclose(copy.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-5)
    assert [w.path.split("/")[-1] for w in loaded.weights] == [w.path.split("/")[-1] for w in model.weights]
    assert json.loads(zipfile.ZipFile(path).read("metadata.json"))["keras_version"]
