"""Fixtures shared by the test modules; plain helpers (and the LiteRT-vs-Keras assertion) are in helpers.py.

Slow-to-build things are session-scoped and built once, on first use: the digits arrays, a small NIN trained
on them and an export-like folder of every artifact kind made from it with TensorFlow's converter directly
(so the verification, predictor and CLI tests do not depend on nin_keras' exporter). Session-scoped models
are shared: a test may predict with them, save or export them, but must not train or change them.
"""

from __future__ import annotations

import logging
import warnings

import pytest
# Loaded first, so the suite's own process runs TensorFlow's default kernels whatever the test order: an in-process
# `nin_keras.cli.main` before TensorFlow loads would otherwise turn oneDNN on for every later test of its worker
# (the CLI's default, tested in a fresh process).
import tensorflow  # noqa: F401

import helpers


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's digits as uint8 pixels (N, 8, 8, 1) and int labels: ((x_train, y_train), (x_test, y_test))."""
    pytest.importorskip("sklearn")
    return helpers.digits_arrays()


@pytest.fixture(scope="session")
def digits_test(digits):
    """The digits test split, (images, labels): 397 images."""
    return digits[1]


@pytest.fixture(scope="session")
def digits_model():
    """A small untrained digits NIN (8x8x1, 10 classes, width 0.25)."""
    import nin_keras

    return nin_keras.build_nin(helpers.DIGITS_CLASSES, variant="mnist", input_shape=helpers.DIGITS_SHAPE,
                               width_multiplier=0.25)


@pytest.fixture(scope="session")
def trained_digits_model(digits):
    """The same small digits NIN, trained 6 seeded epochs on the digits train split (about 0.9 accuracy)."""
    (x_train, y_train), _ = digits
    return helpers.train_digits_model(x_train, y_train)


@pytest.fixture(scope="session")
def digits_artifacts(trained_digits_model, digits, tmp_path_factory):
    """An export-like folder of `trained_digits_model`: model.keras, saved_model/1, model_float32 / _float16 /
    _int8 .tflite, a uint8-I/O batch-1 model_edgetpu_ready.tflite and labels.txt ("digit 0".."digit 9")."""
    folder = tmp_path_factory.mktemp("digits_artifacts")
    scratch = tmp_path_factory.mktemp("saved_model_batch1")
    return helpers.write_digits_artifacts(trained_digits_model, folder, scratch, digits[0][0])


@pytest.fixture
def restore_process_state():
    """`nin_keras.cli.main` quiets TensorFlow for the whole process (as a CLI should); undo that afterwards.

    Use it in modules that call `main` in-process: `pytestmark = pytest.mark.usefixtures("restore_process_state")`.
    """
    from nin_keras import process_state

    quiet = process_state.QUIET
    levels = {name: logging.getLogger(name).level for name in ("tensorflow", "absl")}
    with warnings.catch_warnings():
        yield
    process_state.QUIET = quiet
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
