"""QAT for models users build on NIN: the twin translates generic Keras layers and graphs, tfmot quantizes them,
and the full-int8 .tflite classifies like the Keras model (LiteRT top-1 agreement on held-back digits)."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import nin_keras
from helpers import DIGITS_CLASSES, DIGITS_SHAPE, assert_litert_matches_keras
from nin_keras.errors import IncompatibleModelError
from nin_keras.exporting import describe_tflite, to_tflite
from nin_keras.quantization import SUPPORTED_LAYERS, TREATMENTS, quantization_plan, quantize_aware, to_tf_keras

L = keras.layers
MIN_AGREEMENT = 0.95


# ------------------------------------------------------------------------------------------- models users build


def _conv_bn_relu(x, filters, name=None):
    x = L.Conv2D(filters, 3, padding="same", name=name)(x)
    x = L.BatchNormalization(momentum=0.9)(x)  # short training: moving statistics must settle in a few epochs
    return L.ReLU()(x)


def _backbone():
    return nin_keras.build_nin(include_top=False, pooling="avg", variant="mnist", input_shape=DIGITS_SHAPE,
                               width_multiplier=0.25, dropout_rate=0.0)


def transfer_model():
    """The README's move: a NIN backbone's output into a Dense head of one's own."""
    base = _backbone()
    return keras.Model(base.input, L.Dense(DIGITS_CLASSES, activation="softmax", name="head")(base.output),
                       name="transfer")


def nested_model():
    """A backbone used as one layer of an outer model (small: the NIN backbone is covered by transfer_model)."""
    backbone_in = keras.Input(DIGITS_SHAPE)
    x = _conv_bn_relu(L.Rescaling(1 / 255)(backbone_in), 16)
    backbone = keras.Model(backbone_in, L.GlobalAveragePooling2D()(_conv_bn_relu(x, 16)), name="backbone")
    inputs = keras.Input(DIGITS_SHAPE)
    features = backbone(inputs)
    outputs = L.Dense(DIGITS_CLASSES, activation="softmax", name="head")(L.Dropout(0.1)(features))
    return keras.Model(inputs, outputs, name="nested")


def residual_model():
    inputs = keras.Input(DIGITS_SHAPE)
    x = _conv_bn_relu(L.Rescaling(1 / 255)(inputs), 16)
    y = _conv_bn_relu(x, 16)
    y = L.BatchNormalization(momentum=0.9)(L.Conv2D(16, 3, padding="same")(y))
    x = L.ReLU()(L.Add()([x, y]))
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, L.Dense(DIGITS_CLASSES, activation="softmax")(x), name="residual")


def concat_model():
    """An Inception-style block (1x1, 3x3, pooled branches concatenated) and a squeeze-excitation Multiply."""
    inputs = keras.Input(DIGITS_SHAPE)
    x = _conv_bn_relu(L.Rescaling(1 / 255)(inputs), 16)
    squeeze = L.Conv2D(16, 1, activation="sigmoid")(L.GlobalAveragePooling2D(keepdims=True)(x))
    x = L.Multiply(name="excite")([x, squeeze])
    branches = [L.Conv2D(8, 1, activation="relu")(x), _conv_bn_relu(x, 8),
                L.Conv2D(8, 1, activation="relu")(L.MaxPooling2D(3, strides=1, padding="same")(x))]
    x = L.Concatenate()(branches)
    x = L.Flatten()(L.AveragePooling2D(2)(x))
    return keras.Model(inputs, L.Dense(DIGITS_CLASSES, activation="softmax")(x), name="concat")


def bn_after_add_model():
    """A BatchNormalization after a merge: tfmot can only fold BN into the convolution right before it."""
    inputs = keras.Input(DIGITS_SHAPE)
    x = _conv_bn_relu(L.Rescaling(1 / 255)(inputs), 16)
    x = L.Add()([x, _conv_bn_relu(x, 16)])
    x = L.BatchNormalization(momentum=0.9, name="bn_after_add")(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, L.Dense(DIGITS_CLASSES, activation="softmax")(x), name="bn_after_add_model")


def _trained(make, digits, epochs=10, batch_size=64):
    """Trained with the learning rate decayed to 0, so BatchNormalization's moving statistics match the final
    weights; otherwise QAT's first steps refresh stale statistics and the int8 model rightly differs."""
    (x_train, y_train), _ = digits
    keras.utils.set_random_seed(0)
    model = make()
    steps = epochs * -(-len(x_train) // batch_size)
    model.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(3e-3, steps)),
                  loss="sparse_categorical_crossentropy")
    model.fit(x_train.astype("float32"), y_train, epochs=epochs, batch_size=batch_size, verbose=0)
    return model


def _assert_keras_3_process():
    """QAT went through tf_keras and tfmot; the user's Keras 3 session must not notice."""
    assert "TF_USE_LEGACY_KERAS" not in os.environ or os.environ["TF_USE_LEGACY_KERAS"] != "1"
    assert tf.keras.layers.Dense is keras.layers.Dense
    probe = keras.Sequential([keras.Input((3,)), L.Dense(2)])
    probe.compile("sgd", "mse")
    probe.fit(np.zeros((4, 3)), np.zeros((4, 2)), verbose=0)


def _assert_full_int8_agrees(qat, model, digits):
    (x_train, _), (x_test, y_test) = digits
    data = to_tflite(qat, "int8", representative_images=x_train[:200].astype("float32"))
    info = describe_tflite(data)
    assert info["inputs"][0]["dtype"] == "int8" and info["outputs"][0]["dtype"] == "int8"
    assert "DEQUANTIZE" not in info["ops"], info["ops"]  # no float island inside
    accuracy = float(np.mean(np.argmax(model.predict(x_test.astype("float32"), verbose=0), -1) == y_test))
    assert accuracy > 0.8, f"the float model itself is not trained ({accuracy:.2f}): agreement would mean nothing"
    found = assert_litert_matches_keras(data, model, x_test.astype("float32"), min_top1_agreement=MIN_AGREEMENT)
    return info, found


# --------------------------------------------------------------------------------- the twin: exact translation


def _every_layer_model():
    """One graph holding every layer kind the twin translates, with non-trivial weights and statistics."""
    inputs = keras.Input((8, 8, 3))
    x = L.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = L.Normalization(mean=[0.1, 0.0, -0.1], variance=[1.0, 2.0, 0.5])(x)
    x = L.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = L.Add()([L.DepthwiseConv2D(3, padding="same")(x), L.SeparableConv2D(8, 3, padding="same")(x)])
    x = L.LeakyReLU(0.1)(L.BatchNormalization()(x))
    x = L.Concatenate()([x, L.Multiply()([x, L.Activation("sigmoid")(x)])])
    x = L.Subtract()([L.Average()([x, x]), L.Maximum()([x, L.Minimum()([x, x])])])
    x = L.Cropping2D(1)(L.ZeroPadding2D(1)(x))
    x = L.Conv2DTranspose(4, 3, strides=2, padding="same")(L.UpSampling2D()(L.MaxPooling2D(2)(x)))
    x = L.Dropout(0.2)(L.SpatialDropout2D(0.1)(L.AveragePooling2D(2)(x)))
    pooled = L.Concatenate()([L.GlobalMaxPooling2D()(x), L.GlobalAveragePooling2D()(x)])
    x = L.Concatenate()([L.Reshape((-1,))(L.Flatten()(x)), pooled])
    x = L.ReLU(max_value=6.0)(L.Dense(5)(x))
    model = keras.Model(inputs, L.Softmax()(x), name="every_layer")
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.1, beta.shape),
                               rng.normal(0, 0.1, mean.shape), rng.uniform(0.5, 2, var.shape)])
    return model


def test_twin_translates_every_supported_layer_exactly():
    model = _every_layer_model()
    kinds = {type(layer).__name__ for layer in model.layers}
    # The nin_keras layers are covered by test_quantization (NIN itself, GCN+ZCA in test_whitening).
    assert set(SUPPORTED_LAYERS) - kinds == {"FusedBatchNormalization", "GCNZCAWhitening"}
    twin = to_tf_keras(model, atol=1e-5)  # the check inside compares outputs
    images = np.random.default_rng(2).uniform(0, 255, (3, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(twin(images).numpy(), model(images).numpy(), atol=1e-5)


def test_twin_of_nested_sequential_and_several_outputs():
    inputs = keras.Input(DIGITS_SHAPE)
    stem = keras.Sequential([keras.Input(DIGITS_SHAPE), L.Conv2D(1, 3, padding="same"), L.ReLU()], name="stem")
    features = _backbone()(stem(inputs))
    model = keras.Model(inputs, [L.Dense(3, name="a")(features), L.Dense(2, name="b")(features)])
    twin = to_tf_keras(model)
    images = np.random.default_rng(0).uniform(0, 255, (2, *DIGITS_SHAPE)).astype("float32")
    for ours, theirs in zip(twin(images), model(images)):
        np.testing.assert_allclose(ours.numpy(), np.asarray(theirs), atol=1e-5)
    assert not any(hasattr(layer, "layers") for layer in twin.layers), "nested models must be inlined for tfmot"


@pytest.mark.parametrize("layer, found", [
    (L.Lambda(lambda t: t * 2.0, name="doubler"), r"doubler \(Lambda\)"),
    (L.Conv2D(4, 3, activation=keras.activations.hard_silu, name="odd_act"), "odd_act.*hard_silu"),
])
def test_twin_refuses_what_it_cannot_translate_by_name(layer, found):
    inputs = keras.Input((8, 8, 3))
    x = layer(L.Conv2D(4, 3, padding="same")(inputs))
    with pytest.raises(IncompatibleModelError, match=found):
        to_tf_keras(keras.Model(inputs, L.GlobalAveragePooling2D()(x)))


def test_twin_refuses_a_custom_layer_inside_a_nested_model():
    class Twice(L.Layer):
        def call(self, inputs):
            return inputs * 2

    inner_in = keras.Input((8, 8, 3))
    inner = keras.Model(inner_in, Twice(name="twice")(inner_in), name="inner")
    inputs = keras.Input((8, 8, 3))
    with pytest.raises(IncompatibleModelError, match=r"inner/twice \(Twice\).*post-training"):
        to_tf_keras(keras.Model(inputs, L.GlobalAveragePooling2D()(inner(inputs))))


def test_twin_refuses_shared_layers():
    inputs = keras.Input((8, 8, 3))
    shared = L.Conv2D(3, 3, padding="same", name="shared")
    with pytest.raises(IncompatibleModelError, match="'shared' is called more than once"):
        to_tf_keras(keras.Model(inputs, L.GlobalAveragePooling2D()(shared(shared(inputs)))))


def test_every_layer_the_plan_quantizes_converts_to_full_int8():
    """Each kind `quantization_plan` accepts goes through tfmot and the converter to an integer-only file."""
    inputs = keras.Input((8, 8, 3))
    x = L.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = L.Normalization(mean=[0.1, 0.0, -0.1], variance=[1.0, 2.0, 0.5])(x)
    x = L.Conv2D(8, 3, padding="same", activation="relu")(x)
    d = L.BatchNormalization()(L.DepthwiseConv2D(3, padding="same")(x))
    x = L.Add()([L.ReLU()(d), L.SeparableConv2D(8, 3, padding="same", activation="relu")(x)])
    x = L.LeakyReLU(0.1)(x)
    x = L.Concatenate()([x, L.Multiply()([x, L.Activation("sigmoid")(x)])])
    x = L.Activation("swish")(L.Cropping2D(1)(L.ZeroPadding2D(1)(x)))
    x = L.Conv2DTranspose(4, 3, strides=2, padding="same", activation="gelu")(L.UpSampling2D()(L.MaxPooling2D(2)(x)))
    x = L.Dropout(0.2)(L.SpatialDropout2D(0.1)(L.AveragePooling2D(2)(x)))
    x = L.Dense(6, activation="tanh")(x)
    pooled = L.Concatenate()([L.GlobalMaxPooling2D()(x), L.GlobalAveragePooling2D()(x)])
    x = L.Concatenate()([L.Reshape((-1,))(L.Flatten()(x)), pooled])
    x = L.ReLU(max_value=6.0)(L.Dense(5)(x))
    model = keras.Model(inputs, L.Softmax()(x), name="quantizable")
    plan = quantization_plan(model)
    assert set(plan.values()) == set(TREATMENTS) - {"kept float"}, plan
    images = np.random.default_rng(0).uniform(0, 255, (64, 8, 8, 3)).astype("float32")
    qat = quantize_aware(model, (images, np.arange(64) % 5), epochs=1, batch_size=32, progress=False)
    info = describe_tflite(to_tflite(qat, "int8", representative_images=images[:32]))
    assert info["inputs"][0]["dtype"] == "int8" and "DEQUANTIZE" not in info["ops"], info["ops"]
    expected_ops = {"TRANSPOSE_CONV", "DEPTHWISE_CONV_2D", "CONCATENATION", "MUL", "RESIZE_NEAREST_NEIGHBOR"}
    assert expected_ops <= set(info["ops"])


@pytest.mark.parametrize("merge", [L.Subtract, L.Average, L.Maximum, L.Minimum])
def test_merges_tfmot_cannot_quantize_are_named_by_the_plan(merge):
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, padding="same")(inputs)
    x = merge(name="the_merge")([x, L.Conv2D(4, 3, padding="same")(inputs)])
    model = keras.Model(inputs, L.Dense(3, activation="softmax")(L.GlobalAveragePooling2D()(x)))
    with pytest.raises(IncompatibleModelError, match=rf"the_merge \({merge.__name__}: not in tfmot"):
        quantization_plan(model)
    assert quantization_plan(model, float_layers=["the_merge"])["the_merge"] == "kept float"


# ------------------------------------------------------------------------------- QAT and full-int8, end to end


def test_transfer_learning_model_through_export_with_qat(digits, tmp_path):
    """The issue's example: backbone + Dense head through `nin_keras.export(..., qat_epochs=1)`."""
    (x_train, y_train), (x_test, y_test) = digits
    model = _trained(transfer_model, digits)
    result = nin_keras.export(model, tmp_path / "custom", targets="tflite_int8,edgetpu", data=(x_train, y_train),
                              qat_epochs=1, verify=False, progress=False)
    assert result["manifest"]["qat"]["epochs"] == 1 and result["manifest"]["qat"]["kept_float"] == []
    for target in ("tflite_int8", "edgetpu"):
        path = tmp_path / "custom" / result["manifest"]["targets"][target]["file"]
        assert_litert_matches_keras(path, model, x_test.astype("float32"), min_top1_agreement=MIN_AGREEMENT)
    _assert_keras_3_process()


@pytest.mark.parametrize("make", [nested_model, residual_model, concat_model])
def test_custom_graphs_quantize_aware_to_full_int8(make, digits):
    (x_train, y_train), _ = digits
    model = _trained(make, digits)
    plan = quantization_plan(model)
    assert set(plan.values()) <= set(TREATMENTS) and "kept float" not in plan.values()
    qat = quantize_aware(model, (x_train, y_train), epochs=1, progress=False)
    assert qat.plan == plan
    info, _ = _assert_full_int8_agrees(qat, model, digits)
    expected_op = {"nested_model": "FULLY_CONNECTED", "residual_model": "ADD", "concat_model": "CONCATENATION"}
    assert expected_op[make.__name__] in info["ops"], info["ops"]
    if make is concat_model:
        assert plan["excite"] == "output" and "MUL" in info["ops"]
    _assert_keras_3_process()


def test_a_layer_tfmot_cannot_quantize_is_refused_with_both_choices(digits):
    (x_train, y_train), _ = digits
    model = _trained(bn_after_add_model, digits)
    refusal = r"bn_after_add \(BatchNormalization.*float_layers=\['bn_after_add'\].*qat_epochs=0"
    with pytest.raises(IncompatibleModelError, match=refusal):
        quantize_aware(model, (x_train, y_train), epochs=1, progress=False)
    with pytest.raises(IncompatibleModelError, match="not layers of"):
        quantization_plan(model, float_layers=["no_such_layer"])
    # The first choice: the layer trains without fake quantization; the int8 file is still integer-only.
    qat = quantize_aware(model, (x_train, y_train), epochs=1, progress=False, float_layers=["bn_after_add"])
    assert qat.plan["bn_after_add"] == "kept float"
    _assert_full_int8_agrees(qat, model, digits)
    _assert_keras_3_process()
