"""The NIN builders: shapes, paper parameter counts, options, errors, saving, and that they train."""

import keras
import numpy as np
import pytest

import nin_keras
import nin_keras.errors
from helpers import SMALL_SHAPE, random_images
from nin_keras.models import FusedBatchNormalization, minimum_input_size, variant_of

# Small but valid inputs and widths per variant keep the suite fast.
SMALL = {
    "cifar": dict(input_shape=SMALL_SHAPE, width_multiplier=0.1),
    "mnist": dict(input_shape=(16, 16, 1), width_multiplier=0.1),
    "imagenet": dict(input_shape=(67, 67, 3), width_multiplier=0.05),
    "d2l": dict(input_shape=(67, 67, 1), width_multiplier=0.05),
}
VARIANTS = sorted(SMALL)


def _conv_filters(model):
    return {layer.name: layer.filters for layer in model.layers if isinstance(layer, keras.layers.Conv2D)}


def test_list_variants_names_every_preset():
    variants = nin_keras.list_variants()
    assert set(variants) == {"cifar", "mnist", "imagenet", "d2l"}
    assert all(isinstance(d, str) and d for d in variants.values())


@pytest.mark.parametrize("variant", VARIANTS)
def test_output_shape_and_probabilities(variant):
    model = nin_keras.build_nin(7, variant=variant, **SMALL[variant])
    out = model.predict(random_images(3, SMALL[variant]["input_shape"]), verbose=0)
    assert out.shape == (3, 7)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("variant, shape", [("cifar", (32, 32, 3)), ("mnist", (28, 28, 1)),
                                            ("imagenet", (224, 224, 3)), ("d2l", (224, 224, 1))])
def test_default_input_shapes(variant, shape):
    model = nin_keras.build_nin(10, variant=variant, width_multiplier=0.05)
    assert model.input_shape == (None, *shape)
    assert model.inputs[0].name == "image"


@pytest.mark.parametrize("variant, classes, params", [("cifar", 10, 966_986), ("imagenet", 1000, 7_595_176)])
def test_paper_parameter_counts(variant, classes, params):
    model = nin_keras.build_nin(classes, variant=variant, batch_norm=False, preprocessing=None)
    assert model.count_params() == params
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == params


def test_layer_names_show_the_mlpconv_structure():
    model = nin_keras.build_nin(10)
    names = [layer.name for layer in model.layers]
    for expected in ("mlpconv1_conv5x5", "mlpconv1_mlp1", "mlpconv1_mlp2", "mlpconv2_conv5x5", "mlpconv2_mlp1",
                     "mlpconv3_conv3x3", "mlpconv3_mlp2", "mlpconv1_maxpool", "mlpconv2_avgpool", "gap"):
        assert expected in names
    filters = _conv_filters(model)
    assert [filters[n] for n in ("mlpconv1_conv5x5", "mlpconv1_mlp1", "mlpconv1_mlp2")] == [192, 160, 96]
    assert filters["mlpconv3_mlp2"] == 10


@pytest.mark.parametrize("variant", VARIANTS)
def test_width_multiplier_scales_hidden_layers_but_not_classes(variant):
    full = _conv_filters(nin_keras.build_nin(13, variant=variant))
    half = _conv_filters(nin_keras.build_nin(13, variant=variant, width_multiplier=0.5))
    assert full.keys() == half.keys()
    for name, width in full.items():
        if width == 13:  # class layers
            assert half[name] == 13, name
        else:
            assert half[name] == round(width * 0.5), name


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("pooling", [None, "avg", "max"])
def test_feature_extractor(variant, pooling):
    kwargs = SMALL[variant]
    model = nin_keras.build_nin(11, variant=variant, include_top=False, pooling=pooling, **kwargs)
    assert not any(w == 11 for w in _conv_filters(model).values()), "class layer kept with include_top=False"
    out = model.predict(random_images(2, kwargs["input_shape"]), verbose=0)
    last_width = list(_conv_filters(model).values())[-1]
    if pooling is None:
        assert out.ndim == 4 and out.shape[-1] == last_width
    else:
        assert out.shape == (2, last_width)


def test_logits_are_not_normalised():
    model = nin_keras.build_nin(4, classifier_activation=None, **SMALL["cifar"])
    out = model.predict(random_images(3, SMALL_SHAPE), verbose=0)
    assert out.shape == (3, 4)
    assert not np.allclose(out.sum(axis=1), 1.0)


def test_final_relu_defaults_to_batch_norm_and_can_be_forced():
    names = lambda m: {layer.name for layer in m.layers}  # noqa: E731
    assert "mlpconv3_mlp2_relu" in names(nin_keras.build_nin(10, **SMALL["cifar"]))
    assert "mlpconv3_mlp2_relu" not in names(nin_keras.build_nin(10, batch_norm=False, **SMALL["cifar"]))
    assert "mlpconv3_mlp2_relu" in names(nin_keras.build_nin(10, batch_norm=False, final_relu=True,
                                                             **SMALL["cifar"]))


def test_dropout_rate_zero_removes_dropout_layers():
    model = nin_keras.build_nin(10, dropout_rate=0.0, **SMALL["cifar"])
    assert not any(isinstance(layer, keras.layers.Dropout) for layer in model.layers)
    model = nin_keras.build_nin(10, dropout_rate=0.3, **SMALL["cifar"])
    assert [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)] == [0.3, 0.3]


def test_rescale_preprocessing_takes_raw_pixels():
    raw = nin_keras.build_nin(3, preprocessing="rescale", **SMALL["cifar"])
    plain = nin_keras.build_nin(3, preprocessing=None, **SMALL["cifar"])
    plain.set_weights(raw.get_weights())
    x = random_images(3, SMALL_SHAPE)
    np.testing.assert_allclose(raw.predict(x, verbose=0), plain.predict(x / 255.0, verbose=0), atol=1e-5)


def test_standardize_preprocessing_adapts_to_training_images():
    model = nin_keras.build_nin(3, preprocessing="standardize", **SMALL["cifar"])
    x = random_images(20, SMALL_SHAPE) * 0.5 + 10
    nin_keras.adapt_standardization(model, x)
    layer = model.get_layer("standardize")
    standardized = np.asarray(layer(x))
    np.testing.assert_allclose(standardized.mean(axis=(0, 1, 2)), 0.0, atol=1e-3)
    np.testing.assert_allclose(standardized.std(axis=(0, 1, 2)), 1.0, atol=1e-2)
    with pytest.raises(ValueError, match="standardize"):
        nin_keras.adapt_standardization(nin_keras.build_nin(3, **SMALL["cifar"]), x)


def test_input_tensor_is_used_as_model_input():
    tensor = keras.Input(shape=(20, 20, 3), name="my_pixels")
    model = nin_keras.build_nin(4, input_tensor=tensor, width_multiplier=0.1)
    assert model.inputs[0] is tensor
    assert model.output_shape == (None, 4)


def test_output_stays_float32_under_mixed_precision():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        for activation in ("softmax", None):
            model = nin_keras.build_nin(4, classifier_activation=activation, **SMALL["cifar"])
            assert model.get_layer("mlpconv1_conv5x5").compute_dtype == "bfloat16"
            assert model.output.dtype == "float32"
            assert model.predict(random_images(3, SMALL_SHAPE), verbose=0).dtype == np.float32
    finally:
        keras.config.set_dtype_policy(previous)


BAD_ARGUMENTS = [
    (dict(num_classes=0), "num_classes"),
    (dict(num_classes=2.5), "num_classes"),
    (dict(variant="resnet"), "Known variants: cifar, d2l, imagenet, mnist"),
    (dict(width_multiplier=0), "width_multiplier"),
    (dict(width_multiplier=-1.0), "width_multiplier"),
    (dict(width_multiplier=float("nan")), "width_multiplier"),
    (dict(dropout_rate=1.0), "dropout_rate"),
    (dict(include_top=False, pooling="median"), "pooling 'median'"),
    (dict(include_top=True, pooling="avg"), "include_top=False"),
    (dict(classifier_activation="tanh"), "classifier_activation 'tanh'"),
    (dict(preprocessing="zca"), "preprocessing 'zca'"),
    (dict(input_shape=(32, 32)), "rank 3"),
    (dict(input_shape=(1, 32, 32, 3)), "rank 4"),
    (dict(input_shape=(32, -1, 3)), "or None for any size) and channels must be an integer >= 1; received -1"),
    (dict(input_shape=(32, 32, None)), "and channels must be an integer >= 1; received None"),
    (dict(input_shape=(None, 10, 3), variant="imagenet"), "at least 11x11"),
    (dict(variant="imagenet", input_shape=(10, 10, 3)), "at least 11x11"),
    (dict(variant="d2l", input_shape=(64, 64, 1)), "at least 67x67"),
]


@pytest.mark.parametrize("kwargs, message", BAD_ARGUMENTS, ids=[str(k) for k, _ in BAD_ARGUMENTS])
def test_bad_arguments_raise_value_error_naming_the_problem(kwargs, message):
    kwargs = dict(kwargs)
    num_classes = kwargs.pop("num_classes", 10)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        nin_keras.build_nin(num_classes, **kwargs)


def test_minimum_input_size_matches_what_builds():
    for variant in ("imagenet", "d2l"):
        side = minimum_input_size(variant)
        nin_keras.build_nin(3, variant=variant, input_shape=(side, side, 3), width_multiplier=0.05)
        with pytest.raises(ValueError):
            nin_keras.build_nin(3, variant=variant, input_shape=(side - 1, side - 1, 3), width_multiplier=0.05)


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_of_reads_the_structure_at_any_width_top_or_name(variant, tmp_path):
    for options in (dict(), dict(batch_norm=False), dict(include_top=False, pooling="avg"), dict(name="renamed")):
        model = nin_keras.build_nin(6, variant=variant, **SMALL[variant], **options)
        assert variant_of(model) == variant, options
    path = tmp_path / "model.keras"
    nin_keras.save_model(model, path)
    assert variant_of(nin_keras.load_model(path)) == variant


def test_variant_of_is_none_for_other_models():
    plain = keras.Sequential([keras.Input((16, 16, 1)), keras.layers.Conv2D(4, 3, name="mlpconv1_conv3x3"),
                              keras.layers.GlobalAveragePooling2D()])
    assert variant_of(plain) is None  # a lookalike first layer is not a NIN variant
    wrapped = keras.Sequential([nin_keras.build_nin(6, variant="cifar", **SMALL["cifar"])])
    assert variant_of(wrapped) is None  # nested: its layers are not the model's own


@pytest.mark.parametrize("variant", VARIANTS)
def test_keras_file_round_trip_in_safe_mode(variant, tmp_path):
    model = nin_keras.build_nin(6, variant=variant, **SMALL[variant])
    x = random_images(3, SMALL[variant]["input_shape"])
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.parametrize("batch_norm", [True, False])
def test_one_fit_step_lowers_the_loss(batch_norm):
    keras.utils.set_random_seed(1)
    model = nin_keras.build_nin(3, dropout_rate=0.0, batch_norm=batch_norm, **SMALL["cifar"])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    x = random_images(16, SMALL_SHAPE)
    y = np.arange(16) % 3
    # train_on_batch returns the loss of the forward pass before its update.
    first = float(model.train_on_batch(x, y))
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    after = float(model.train_on_batch(x, y))
    assert np.isfinite(first) and after < first


def test_mlpconv_block_is_public_and_named():
    inputs = keras.Input((8, 8, 4))
    out = nin_keras.mlpconv_block(inputs, (16, 8, 8), 3, batch_norm=False, name="block")
    model = keras.Model(inputs, out)
    assert [l.name for l in model.layers[1:]] == ["block_conv3x3", "block_conv3x3_relu", "block_mlp1",
                                                  "block_mlp1_relu", "block_mlp2", "block_mlp2_relu"]
    with pytest.raises(ValueError, match="filters"):
        nin_keras.mlpconv_block(inputs, (), 3)


# FusedBatchNormalization must behave as Keras' BatchNormalization.

def test_fused_batch_norm_matches_keras_batch_norm():
    x = (np.random.default_rng(0).normal(size=(8, 6, 6, 5)) * 3 + 1).astype("float32")
    fused = FusedBatchNormalization(momentum=0.9)
    plain = keras.layers.BatchNormalization(momentum=0.9)
    np.testing.assert_allclose(np.asarray(fused(x, training=True)), np.asarray(plain(x, training=True)),
                               atol=1e-5)
    for _ in range(3):  # the moving averages follow Keras' (biased batch variance), step after step
        fused(x, training=True)
        plain(x, training=True)
    np.testing.assert_allclose(fused.moving_mean.numpy(), plain.moving_mean.numpy(), atol=1e-6)
    np.testing.assert_allclose(fused.moving_variance.numpy(), plain.moving_variance.numpy(), rtol=1e-6)
    plain.set_weights(fused.get_weights())
    np.testing.assert_allclose(np.asarray(fused(x)), np.asarray(plain(x)), atol=1e-5)
    assert [w.path.split("/")[-1] for w in fused.weights] == ["gamma", "beta", "moving_mean", "moving_variance"]


def test_fused_batch_norm_accepts_bfloat16_and_serialises():
    layer = FusedBatchNormalization(momentum=0.8, epsilon=1e-4, dtype="mixed_bfloat16")
    x = np.random.default_rng(1).normal(size=(4, 3, 3, 2)).astype("float32")
    y = layer(keras.ops.cast(x, "bfloat16"), training=True)
    assert y.dtype == "bfloat16"
    clone = FusedBatchNormalization.from_config(layer.get_config())
    assert clone.momentum == 0.8 and clone.epsilon == 1e-4
    assert keras.saving.get_registered_name(FusedBatchNormalization) == "nin_keras>FusedBatchNormalization"


# Loading .keras files safely.

def test_load_model_round_trip_and_atomic_save(tmp_path):
    model = nin_keras.build_nin(3, **SMALL["cifar"])
    path = nin_keras.save_model(model, tmp_path / "m.keras")
    assert [p.name for p in tmp_path.iterdir()] == ["m.keras"]  # no temporary file left behind
    loaded = nin_keras.load_model(path)
    x = random_images(3, SMALL_SHAPE)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.parametrize("content, message", [
    (b"", "not a valid .keras file"),
    (b"\x00\x01garbage" * 100, "not a valid .keras file"),
])
def test_load_model_refuses_corrupt_files(tmp_path, content, message):
    path = tmp_path / "bad.keras"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        nin_keras.load_model(path)


def test_load_model_refuses_truncated_file(tmp_path):
    path = nin_keras.save_model(nin_keras.build_nin(3, **SMALL["cifar"]), tmp_path / "m.keras")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="keras file"):
        nin_keras.load_model(path)


def test_load_model_refuses_lambda_layers_and_missing_files(tmp_path):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2)(inputs))
    path = tmp_path / "lambda.keras"
    model.save(path)
    with pytest.raises(ValueError, match="Lambda"):
        nin_keras.load_model(path)
    with pytest.raises(FileNotFoundError):
        nin_keras.load_model(tmp_path / "missing.keras")
    with pytest.raises(ValueError, match=".keras"):
        nin_keras.load_model(tmp_path)


def test_load_model_refuses_unknown_custom_objects(tmp_path):
    import json
    import zipfile

    source = nin_keras.save_model(nin_keras.build_nin(3, **SMALL["cifar"]), tmp_path / "m.keras")
    tampered = tmp_path / "tampered.keras"
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(tampered, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                layer = next(l for l in config["config"]["layers"] if l["class_name"] == "Rescaling")
                layer.update(class_name="EvilLayer", module="evil_package.layers", registered_name="evil>EvilLayer")
                data = json.dumps(config).encode()
            dst.writestr(item, data)
    with pytest.raises(nin_keras.errors.UnsafeFileError, match="not a Keras or nin-keras one"):
        nin_keras.load_model(tampered)


def test_any_input_size_as_keras_applications(tmp_path):
    """input_shape=(None, None, C) takes any size at least the minimum; export needs, and gets, a static one."""
    from nin_keras.errors import InvalidInputError
    from nin_keras.models import with_input_size

    model = nin_keras.build_nin(10, input_shape=(None, None, 3), width_multiplier=0.1)
    assert model.input_shape == (None, None, None, 3)
    small, large = random_images(2, (16, 16, 3)), random_images(2, (40, 24, 3), seed=1)
    assert model.predict(small, verbose=0).shape == model.predict(large, verbose=0).shape == (2, 10)
    with pytest.raises(InvalidInputError, match="input_size=.height, width. .CLI: --input-size HxW"):
        with_input_size(model)
    for size in (16, (16, 16), "16x16", "16"):
        static = with_input_size(model, size)
        assert static.input_shape == (None, 16, 16, 3)
        np.testing.assert_allclose(static.predict(small, verbose=0), model.predict(small, verbose=0), atol=1e-6)
    assert with_input_size(static) is static and with_input_size(static, "16x16") is static
    for bad in ("16x", 0, (16, 16, 3), "big", 16.5):
        with pytest.raises(InvalidInputError, match="input_size must be"):
            with_input_size(model, bad)
    imagenet = nin_keras.build_nin(3, variant="imagenet", input_shape=(None, None, 3), width_multiplier=0.05)
    with pytest.raises(InvalidInputError, match="at least 11x11"):
        with_input_size(imagenet, 10)


def test_build_with_weights_from_a_file(tmp_path):
    """weights= takes a .weights.h5 or .keras file of the same architecture (any input size) and refuses others."""
    from nin_keras.errors import IncompatibleModelError, InvalidInputError

    trained = nin_keras.build_nin(10, input_shape=(16, 16, 3), width_multiplier=0.1)
    trained.set_weights([w + 0.01 * i for i, w in enumerate(trained.get_weights())])
    trained.save_weights(tmp_path / "nin.weights.h5")
    nin_keras.save_model(trained, tmp_path / "nin.keras")
    images = random_images(2, (16, 16, 3))
    for source in ("nin.weights.h5", "nin.keras"):
        model = nin_keras.build_nin(10, input_shape=(None, None, 3), width_multiplier=0.1,
                                    weights=tmp_path / source)
        np.testing.assert_allclose(model.predict(images, verbose=0), trained.predict(images, verbose=0), atol=1e-5)
        with pytest.raises(IncompatibleModelError, match="do not fit"):
            nin_keras.build_nin(10, input_shape=(16, 16, 3), width_multiplier=0.2, weights=tmp_path / source)
    with pytest.raises(FileNotFoundError):
        nin_keras.build_nin(10, input_shape=(16, 16, 3), width_multiplier=0.1, weights=tmp_path / "missing.keras")
    (tmp_path / "nin.h5").write_bytes(b"")
    with pytest.raises(InvalidInputError, match=".weights.h5 or .keras"):
        nin_keras.build_nin(10, input_shape=(16, 16, 3), width_multiplier=0.1, weights=tmp_path / "nin.h5")
