"""Quantization: the tf_keras twin, QAT through tfmot, PTQ, and that the user's process is left as it was."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import nin_keras
from helpers import assert_litert_matches_keras, random_data, small_nin
import helpers
from nin_keras.errors import IncompatibleModelError, InvalidInputError
from nin_keras.exporting import post_training_quantize, to_tflite
from nin_keras.quantization import quantize_aware, to_tf_keras


def _ops(data: bytes):
    from nin_keras.exporting import describe_tflite

    return describe_tflite(data)["ops"]


@pytest.mark.parametrize("options", [
    dict(),
    dict(batch_norm=False, preprocessing=None),
    dict(classifier_activation=None, dropout_rate=0.0),
])
def test_twin_reproduces_keras_outputs(options):
    model = small_nin(**options)
    # Non-trivial BN statistics, so a wrong BN translation would show.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            rng = np.random.default_rng(1)
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.1, beta.shape),
                               rng.normal(0, 0.1, mean.shape), rng.uniform(0.5, 2, var.shape)])
    twin = to_tf_keras(model)
    import tf_keras

    assert isinstance(twin, tf_keras.Model)
    images, _ = random_data(4)
    np.testing.assert_allclose(twin(images).numpy(), model(images).numpy(), atol=1e-5)
    assert [l.name for l in twin.layers[1:]] == [l.name for l in model.layers[1:]]


def test_twin_of_standardize_and_of_a_loaded_model(tmp_path):
    model = small_nin(preprocessing="standardize")
    images, _ = random_data(32)
    nin_keras.adapt_standardization(model, images)
    path = nin_keras.save_model(model, tmp_path / "m.keras")
    loaded = nin_keras.load_model(path)
    twin = to_tf_keras(loaded)
    np.testing.assert_allclose(twin(images[:4]).numpy(), model(images[:4]).numpy(), atol=1e-5)


def test_twin_refuses_unknown_layers_by_name():  # more refusals: test_qat_custom_models
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)
    x = keras.layers.LayerNormalization(name="my_norm")(x)
    x = keras.layers.Dense(3, name="head")(keras.layers.Flatten()(x))
    with pytest.raises(IncompatibleModelError, match="my_norm.*LayerNormalization"):
        to_tf_keras(keras.Model(inputs, x))


def test_ptq_is_full_integer_and_close_to_float():
    model = small_nin()
    images, labels = random_data(64)
    data = post_training_quantize(model, (images, labels), num_samples=32)
    ops = _ops(data)
    assert "QUANTIZE" not in ops and "DEQUANTIZE" not in ops
    from nin_keras.exporting import describe_tflite

    info = describe_tflite(data)
    assert info["inputs"][0]["dtype"] == "int8" and info["outputs"][0]["dtype"] == "int8"
    # Raw pixels: scale about 1, zero point -128.
    scale, zero = info["inputs"][0]["quantization"]
    assert abs(scale - 1.0) < 0.01 and zero == -128
    assert_litert_matches_keras(data, model, images[:16], atol=0.1)


def test_ptq_needs_matching_data():
    model = small_nin()
    with pytest.raises(IncompatibleModelError, match=r"16, 16, 3|16x16x3"):  # names the model's shape
        post_training_quantize(model, random_data(8, shape=(8, 8, 3)))
    images, labels = random_data(8)
    with pytest.raises(IncompatibleModelError, match="classes"):
        post_training_quantize(model, (images, labels + 10))
    with pytest.raises(InvalidInputError, match="representative"):
        to_tflite(model, "int8")


def test_qat_converts_to_clean_full_int8(tmp_path):
    before = os.environ.get("TF_USE_LEGACY_KERAS")
    model = small_nin()
    path = nin_keras.save_model(model, tmp_path / "m.keras")
    loaded = nin_keras.load_model(path)  # QAT must work on a model loaded from a file
    images, labels = random_data(64)
    qat = quantize_aware(loaded, (images, labels), epochs=1, batch_size=32, progress=False)
    assert qat.epochs == 1 and len(qat.history["loss"]) == 1
    data = to_tflite(qat, "int8", representative_images=images[:16])
    ops = _ops(data)
    assert "QUANTIZE" not in ops and "DEQUANTIZE" not in ops, ops
    assert ops.get("CONV_2D") == 9
    # The fake-quantized model and its int8 conversion agree.
    assert_litert_matches_keras(data, qat, images[:8], atol=0.1)
    assert os.environ.get("TF_USE_LEGACY_KERAS") == before


def test_qat_leaves_the_process_as_it_was(tmp_path):
    """In a fresh process: after QAT, tf.keras is Keras 3, the variable is as before, Keras 3 still trains."""
    script = textwrap.dedent("""
        import os, sys
        before = os.environ.get("TF_USE_LEGACY_KERAS")
        import numpy as np, keras
        import nin_keras
        model = nin_keras.build_nin(10, input_shape=(16, 16, 3), width_multiplier=0.05)
        x = np.random.default_rng(0).uniform(0, 255, (16, 16, 16, 3)).astype("float32")
        y = np.arange(16) % 10
        nin_keras.quantize_aware(model, (x, y), epochs=1, progress=False)
        assert os.environ.get("TF_USE_LEGACY_KERAS") == before, os.environ.get("TF_USE_LEGACY_KERAS")
        import tensorflow as tf
        assert tf.keras.layers.Dense is keras.layers.Dense, tf.keras.layers.Dense
        assert keras.__version__.startswith("3")
        fresh = nin_keras.build_nin(10, input_shape=(16, 16, 3), width_multiplier=0.05)
        fresh.compile("adam", "sparse_categorical_crossentropy")
        fresh.fit(x, y, epochs=1, verbose=0)
        print("PROCESS-OK")
    """)
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert "PROCESS-OK" in result.stdout, result.stderr[-3000:]


def test_converter_failures_become_conversion_error():
    from nin_keras.errors import ConversionError
    from nin_keras.exporting import convert

    class Broken:
        def convert(self):
            raise RuntimeError("op FOO is not supported")

    with pytest.raises(ConversionError, match="op FOO is not supported"):
        convert(Broken(), what="m")


def test_qat_streams_a_tf_data_dataset():
    import tensorflow as tf

    images, labels = random_data(40)
    dataset = tf.data.Dataset.from_tensor_slices((images.astype("uint8"), labels.astype("int32"))).batch(16)
    qat = quantize_aware(small_nin(), dataset, epochs=1, limit=32, progress=False)
    assert len(qat.history["loss"]) == 1 and np.isfinite(qat.history["loss"][0])
    bad = tf.data.Dataset.from_tensor_slices((np.zeros((4, 8, 8, 3), "uint8"), np.zeros(4, "int32"))).batch(2)
    with pytest.raises(IncompatibleModelError):
        quantize_aware(small_nin(), bad, epochs=1, progress=False)


def test_qat_reshuffles_arrays_each_epoch():
    """Arrays sorted by class (a common layout) must not reach QAT fine-tuning in their order, as fit would
    shuffle them; datasets the user built keep the order they chose."""
    from nin_keras.quantization.qat import _training_data

    model = small_nin()
    images = np.zeros((64, *model.inputs[0].shape[1:]), "uint8")
    labels = np.repeat(np.arange(4), 16).astype("int32")  # sorted: 16 of class 0, then 16 of class 1, ...

    dataset, _ = _training_data(model, (images, labels), limit=None, batch_size=16)
    first, second = ([int(y) for _, batch in dataset for y in batch] for _ in range(2))
    assert sorted(first) == sorted(labels.tolist())  # every image, once an epoch
    assert first != labels.tolist() and first != second  # not in the given order, and anew each epoch


def test_the_outlier_channel_model_keeps_its_float_accuracy_and_loses_it_in_int8(digits):
    """The model tests of the int8 diagnosis rely on: float accuracy as trained, plain int8 near chance."""
    from nin_keras.exporting.converter import post_training_quantize

    (x_train, y_train), (x_test, y_test) = digits
    model = helpers.outlier_channel_model(x_train, y_train)
    float_accuracy = float(np.mean(helpers.keras_outputs(model, x_test).argmax(axis=1) == y_test))
    int8 = post_training_quantize(model, (x_train, y_train))
    int8_accuracy = float(np.mean(helpers.run_tflite(int8, x_test).argmax(axis=1) == y_test))
    assert float_accuracy > 0.8 and int8_accuracy < 0.3, (float_accuracy, int8_accuracy)
