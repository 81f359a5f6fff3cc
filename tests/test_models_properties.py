"""Property-based: any build_nin call returns a fitting model or raises ValueError, never anything else."""

import math

import keras
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nin_keras
from nin_keras.models import minimum_input_size

VARIANTS = ["cifar", "mnist", "imagenet", "d2l"]

num_classes = st.one_of(st.integers(-3, 40), st.floats(allow_nan=True), st.none(), st.text(max_size=3),
                        st.booleans())
variant = st.one_of(st.sampled_from(VARIANTS), st.text(max_size=8), st.none(), st.integers())
side = st.one_of(st.integers(-2, 90), st.none(), st.floats(0, 90))
input_shape = st.one_of(
    st.none(),
    st.tuples(side, side, st.integers(-1, 4)),
    st.lists(st.integers(1, 40), min_size=0, max_size=5).map(tuple),
    st.text(max_size=4),
)
width = st.one_of(st.floats(-1, 0.3), st.sampled_from([float("nan"), float("inf"), 0.05, 0, -1, True]),
                  st.none())
pooling = st.sampled_from([None, "avg", "max", "median", 3])
activation = st.sampled_from(["softmax", "sigmoid", "linear", None, "tanh", ""])
preprocessing = st.sampled_from(["rescale", "standardize", None, "zca"])
dropout = st.one_of(st.floats(-0.5, 1.5), st.sampled_from([float("nan"), 0.0, 0.5]), st.none())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(num_classes=num_classes, variant=variant, input_shape=input_shape, width=width, include_top=st.booleans(),
       pooling=pooling, activation=activation, preprocessing=preprocessing, dropout=dropout,
       batch_norm=st.booleans())
def test_build_nin_returns_a_fitting_model_or_raises_value_error(num_classes, variant, input_shape, width,
                                                                 include_top, pooling, activation, preprocessing,
                                                                 dropout, batch_norm):
    keras.backend.clear_session()
    try:
        model = nin_keras.build_nin(num_classes, variant=variant, input_shape=input_shape, width_multiplier=width,
                                    include_top=include_top, pooling=pooling, classifier_activation=activation,
                                    preprocessing=preprocessing, dropout_rate=dropout, batch_norm=batch_norm)
    except ValueError as error:
        assert str(error), "ValueError without a message"
        return
    # It built: then every argument was valid, and the output fits the request.
    assert isinstance(num_classes, int) and num_classes >= 1
    assert variant in VARIANTS
    assert width > 0 and math.isfinite(width)
    if input_shape is not None:
        assert min(input_shape[:2]) >= minimum_input_size(variant)
    if include_top:
        assert model.output_shape == (None, num_classes)
    elif pooling is None:
        assert len(model.output_shape) == 4
    else:
        assert len(model.output_shape) == 2


@pytest.mark.parametrize("variant", VARIANTS)
def test_minimum_input_size_is_positive(variant):
    assert minimum_input_size(variant) >= 1


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(num_classes=st.integers(1, 30), variant=st.sampled_from(VARIANTS), extra=st.integers(0, 20),
       channels=st.integers(1, 4), width=st.floats(0.01, 0.2), include_top=st.booleans(),
       pooling=st.sampled_from([None, "avg", "max"]), activation=st.sampled_from(["softmax", "sigmoid", None]),
       batch_norm=st.booleans())
def test_valid_arguments_always_build(num_classes, variant, extra, channels, width, include_top, pooling,
                                      activation, batch_norm):
    keras.backend.clear_session()
    side = minimum_input_size(variant) + extra
    model = nin_keras.build_nin(num_classes, variant=variant, input_shape=(side, side, channels),
                                width_multiplier=width, include_top=include_top,
                                pooling=None if include_top else pooling, classifier_activation=activation,
                                batch_norm=batch_norm)
    if include_top:
        assert model.output_shape == (None, num_classes)
    else:
        assert len(model.output_shape) == (4 if pooling is None else 2)
