"""Process-level settings: TensorFlow's start-up chatter, and keeping `TF_USE_LEGACY_KERAS` as we found it."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings

LEGACY_KERAS_VAR = "TF_USE_LEGACY_KERAS"

# Set by the CLI: native (C++) log lines on stderr are dropped around noisy calls (import, conversion).
QUIET = False


@contextlib.contextmanager
def silenced_native_stderr():
    """Sends file descriptor 2 to /dev/null while the block runs, if the CLI asked for quiet.

    TensorFlow and the TFLite converter log from C++ before (or outside) absl's log-level settings, so
    environment variables alone do not silence them. Python-level errors still surface: they are raised,
    and printed after the descriptor is restored.
    """
    if not QUIET:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def quiet_tensorflow() -> None:
    """Silences TensorFlow's C++ info/warning logs, oneDNN notices and absl warnings, for this process.

    The CLI calls it; a notebook or script may call it too (`nin_keras.quiet_tensorflow()`), before anything
    imports TensorFlow, to get the same quiet output. The library never calls it on its own: it is the user's
    logging to change. It imports TensorFlow itself, quietly.
    """
    global QUIET
    QUIET = True
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore", category=UserWarning, module="keras")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)
    with silenced_native_stderr():
        import tensorflow  # lazy: after the log level is set (its import logs from C++)

        # The first device query probes CUDA, and on a machine without a GPU that logs "failed call to cuInit"
        # from C++ whatever the log level says: probe here, once, while stderr is silenced (the result is cached).
        tensorflow.config.list_physical_devices("GPU")


@contextlib.contextmanager
def preserve_legacy_keras_flag():
    """Restores `TF_USE_LEGACY_KERAS` to its value on entry (or absence).

    Importing tensorflow_model_optimization sets it to "1" for the whole process, which would silently turn
    a user's later `tf.keras` into Keras 2.
    """
    before = os.environ.get(LEGACY_KERAS_VAR)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(LEGACY_KERAS_VAR, None)
        else:
            os.environ[LEGACY_KERAS_VAR] = before
