"""GCN + ZCA whitening as a layer of the model: same numbers as the numpy transform, saved with the model,
exported to raw-pixel artifacts, and the export refusal for data whitened outside the model."""

import keras
import numpy as np
import pytest

import nin_keras
from helpers import DIGITS_SHAPE, assert_litert_matches_keras
from nin_keras.data import as_arrays
from nin_keras.data.preprocessing import GCNZCA, global_contrast_normalize
from nin_keras.errors import IncompatibleModelError, InvalidInputError
from nin_keras.exporting import export_targets
from nin_keras.models import GCNZCAWhitening, adapt_whitening

SHAPE = (8, 8, 3)


def _raw_images(n=120, seed=0):
    images = np.random.default_rng(seed).integers(0, 256, (n, *SHAPE)).astype("uint8")
    images[0] = 7  # a constant image: zero norm after mean subtraction (GCN's min_divisor branch)
    return images


def _whitening_nin(input_shape=DIGITS_SHAPE, **overrides):
    options = dict(variant="cifar", input_shape=input_shape, width_multiplier=0.1, preprocessing="gcn_zca")
    return nin_keras.build_nin(10, **{**options, **overrides})


@pytest.fixture(scope="module")
def digits_splits():
    return nin_keras.load_dataset("digits", batch_size=256)


@pytest.fixture(scope="module")
def whitening_model(digits_splits):
    model = _whitening_nin()
    adapt_whitening(model, digits_splits)
    return model


def test_layer_equals_the_numpy_transform():
    images = _raw_images()
    layer = GCNZCAWhitening()
    layer.adapt(images[:100])
    reference = GCNZCA().fit(images[:100])
    np.testing.assert_allclose(layer.mean.numpy(), reference.zca.mean, atol=1e-4)
    expected = reference.transform(images)
    actual = np.asarray(layer(images.astype("float32")))
    assert actual.shape == images.shape and actual.dtype == np.float32
    np.testing.assert_allclose(actual, expected, atol=1e-4)


def test_layer_matches_load_dataset_whitened_arrays(digits_splits):
    """The fitted object of load_dataset(preprocessing="gcn_zca") goes into the layer unchanged."""
    whitened = nin_keras.load_dataset("digits", batch_size=256, preprocessing="gcn_zca")
    layer = GCNZCAWhitening()
    layer.build((None, *DIGITS_SHAPE))
    layer.set_fitted(whitened.preprocessor)
    raw_test, labels = as_arrays(digits_splits)
    white_test, white_labels = as_arrays(whitened)
    np.testing.assert_array_equal(labels, white_labels)
    np.testing.assert_allclose(np.asarray(layer(raw_test)), white_test, atol=1e-4)


def test_layer_computes_in_float32_under_mixed_precision():
    images = _raw_images()
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        layer = GCNZCAWhitening()
        model = nin_keras.build_nin(10, input_shape=SHAPE, width_multiplier=0.1, preprocessing="gcn_zca")
    finally:
        keras.config.set_dtype_policy(previous)
    assert layer.compute_dtype == "float32"
    assert model.get_layer("gcn_zca").compute_dtype == "float32"
    layer.adapt(images)
    np.testing.assert_allclose(np.asarray(layer(images)), GCNZCA().fit(images).transform(images), atol=1e-4)


def test_config_round_trip():
    layer = GCNZCAWhitening(scale=10.0, sqrt_bias=1.0, epsilon=0.01, min_divisor=1e-6, name="white")
    clone = GCNZCAWhitening.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert (clone.scale, clone.sqrt_bias, clone.epsilon, clone.min_divisor) == (10.0, 1.0, 0.01, 1e-6)
    assert clone.name == "white" and clone.dtype_policy.name == "float32"
    with pytest.raises(InvalidInputError, match="scale"):
        GCNZCAWhitening(scale=0)


def test_unadapted_layer_is_gcn_only():
    images = _raw_images(4)
    layer = GCNZCAWhitening()
    gcn = np.asarray(layer(images))
    np.testing.assert_allclose(gcn, global_contrast_normalize(images), atol=1e-4)
    np.testing.assert_array_equal(gcn[0], 0.0)  # a constant image: zero norm, divisor replaced by 1
    assert not layer.adapted
    layer.adapt(_raw_images())
    assert layer.adapted


def test_keras_file_round_trip(whitening_model, digits_splits, tmp_path):
    images, _ = as_arrays(digits_splits, limit=32)
    path = nin_keras.save_model(whitening_model, tmp_path / "white.keras")
    loaded = nin_keras.load_model(path)
    layer = loaded.get_layer("gcn_zca")
    assert isinstance(layer, GCNZCAWhitening) and layer.adapted
    original = whitening_model.get_layer("gcn_zca")
    np.testing.assert_array_equal(layer.matrix.numpy(), original.matrix.numpy())
    np.testing.assert_array_equal(layer.mean.numpy(), original.mean.numpy())
    np.testing.assert_allclose(loaded.predict(images, verbose=0), whitening_model.predict(images, verbose=0),
                               atol=1e-6)
    # The whitening is weights (non-trainable), not trainable parameters.
    assert {w.path.split("/")[-1] for w in loaded.non_trainable_weights} >= {"mean", "matrix"}
    assert not any(w.path.startswith("gcn_zca") for w in loaded.trainable_weights)


def test_tflite_float32_export_takes_raw_pixels(whitening_model, digits_splits, tmp_path):
    images, labels = as_arrays(digits_splits, limit=48)
    result = nin_keras.export(whitening_model, tmp_path / "out", targets="keras,tflite_float32",
                              data=(images, labels), progress=False)
    target = result["manifest"]["targets"]["tflite_float32"]
    assert target["input"]["dtype"] == "float32" and "FULLY_CONNECTED" in target["ops"]  # the whitening
    assert_litert_matches_keras(tmp_path / "out" / target["file"], whitening_model, images, atol=1e-4,
                                min_top1_agreement=1.0)
    reloaded = nin_keras.load_model(tmp_path / "out" / result["manifest"]["targets"]["keras"]["file"])
    assert isinstance(reloaded.get_layer("gcn_zca"), GCNZCAWhitening)


def test_export_refuses_data_whitened_outside_the_model(tmp_path):
    whitened = nin_keras.load_dataset("digits", batch_size=256, preprocessing="gcn_zca")
    model = nin_keras.build_nin(10, input_shape=DIGITS_SHAPE, width_multiplier=0.1, preprocessing=None)
    message = r"whitened outside the model.*preprocessing='gcn_zca'.*adapt_whitening"
    with pytest.raises(InvalidInputError, match=message):
        nin_keras.export(model, tmp_path / "out", targets="keras", data=whitened, progress=False)
    with pytest.raises(InvalidInputError, match=message):
        export_targets(model, tmp_path / "out", targets="tflite_float32", data=whitened, progress=False)
    assert not (tmp_path / "out").exists()


def test_adapt_whitening_refuses_what_it_cannot_fit(digits_splits):
    with pytest.raises(InvalidInputError, match="preprocessing='gcn_zca'"):
        adapt_whitening(nin_keras.build_nin(10, input_shape=SHAPE, width_multiplier=0.1), _raw_images())
    model = _whitening_nin()
    with pytest.raises(InvalidInputError, match="augmented"):
        adapt_whitening(model, nin_keras.load_dataset("digits", augment=True))
    with pytest.raises(InvalidInputError, match="already GCN \\+ ZCA whitened"):
        adapt_whitening(model, nin_keras.load_dataset("digits", preprocessing="gcn_zca"))
    with pytest.raises(IncompatibleModelError, match=r"\(8, 8, 3\).*\(8, 8, 1\)"):
        adapt_whitening(model, _raw_images())
    assert not model.get_layer("gcn_zca").adapted


def test_adapt_whitening_accepts_datasets_of_images(digits_splits):
    images, _ = as_arrays(digits_splits, split="train")
    from_splits, from_images = _whitening_nin(), _whitening_nin()
    adapt_whitening(from_splits, digits_splits)
    adapt_whitening(from_images, digits_splits.train.map(lambda x, y: x))
    np.testing.assert_allclose(from_images.get_layer("gcn_zca").matrix.numpy(),
                               from_splits.get_layer("gcn_zca").matrix.numpy(), atol=1e-5)
    expected = GCNZCA().fit(images).zca.matrix
    np.testing.assert_allclose(from_splits.get_layer("gcn_zca").matrix.numpy(), expected, atol=1e-4)


def test_tf_keras_twin_translates_the_layer(whitening_model, digits_splits):
    from nin_keras.quantization import to_tf_keras

    images, _ = as_arrays(digits_splits, limit=8)
    twin = to_tf_keras(whitening_model)
    assert type(twin.get_layer("gcn_zca")).__name__ == "GCNZCAWhitening"
    np.testing.assert_allclose(twin(images.astype("float32")).numpy(), whitening_model(images).numpy(),
                               atol=1e-5)


def _trained_whitening_model(splits, epochs):
    keras.utils.set_random_seed(0)
    model = _whitening_nin(width_multiplier=0.5)
    adapt_whitening(model, splits)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(splits.train, epochs=epochs, verbose=0)
    return model


@pytest.mark.slow
def test_int8_with_whitening_keeps_most_top1(digits_splits):
    """Post-training int8 of the whitening (GCN sums and a 64x64 matrix) and QAT both stay close to Keras.

    Measured on digits (359 test images, 30 epochs): PTQ int8 agrees with Keras on about 98% of top-1 classes
    (100% for the same net with Rescaling); QAT (1 epoch) converts with no QUANTIZE/DEQUANTIZE ops.
    """
    from nin_keras.exporting import describe_tflite, post_training_quantize, to_tflite
    from nin_keras.quantization import quantize_aware

    model = _trained_whitening_model(digits_splits, epochs=30)
    images, labels = as_arrays(digits_splits)
    ptq = post_training_quantize(model, digits_splits, num_samples=200)
    found = assert_litert_matches_keras(ptq, model, images, min_top1_agreement=0.95)
    assert np.mean(found["litert"].argmax(-1) == labels) > 0.9
    qat = quantize_aware(model, digits_splits, epochs=1, progress=False)
    calibration, _ = as_arrays(digits_splits, split="train", limit=200)
    converted = to_tflite(qat, "int8", representative_images=calibration.astype("float32"))
    ops = describe_tflite(converted)["ops"]
    assert "QUANTIZE" not in ops and "DEQUANTIZE" not in ops, ops
    assert_litert_matches_keras(converted, qat, images, min_top1_agreement=0.95)

