"""Process-level settings: TensorFlow's start-up chatter, keeping `TF_USE_LEGACY_KERAS` as we found it, and
whether TensorFlow is there at all (the model core runs on any Keras 3 backend without it; `require_tensorflow`
turns its absence into one clear error naming what to install)."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import warnings

from nin_keras.errors import MissingDependencyError

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
    with silenced_native_stderr(), contextlib.suppress(ImportError):  # no TensorFlow: nothing to quiet
        import tensorflow  # lazy: after the log level is set (its import logs from C++)

        # The first device query probes CUDA, and on a machine without a GPU that logs "failed call to cuInit"
        # from C++ whatever the log level says: probe here, once, while stderr is silenced (the result is cached).
        tensorflow.config.list_physical_devices("GPU")


ONEDNN_VAR = "TF_ENABLE_ONEDNN_OPTS"


def prefer_onednn() -> None:
    """Turns TensorFlow's oneDNN kernels on for this process, unless `TF_ENABLE_ONEDNN_OPTS` is already set.

    TensorFlow turns them on by itself only on CPUs with AVX512_VNNI, AVX512_BF16 or AMX; on an AVX2-only CPU
    they trained the cifar NIN 1.71x faster than its default Eigen kernels (docs/benchmarks/training_profile.md).
    TensorFlow reads the setting once, when it loads: after that this does nothing. The CLI calls it; the library
    never does (it is the user's process): a script sets the variable itself, before importing TensorFlow.
    """
    if "tensorflow" not in sys.modules:
        os.environ.setdefault(ONEDNN_VAR, "1")


def onednn_active() -> bool | None:
    """Whether TensorFlow runs its oneDNN kernels in this process; None when TensorFlow is not loaded yet or
    cannot say."""
    if "tensorflow" not in sys.modules:
        return None
    # Private, but the one place that knows TensorFlow's decision (its CPU default and the variable together).
    try:
        from tensorflow.python.util import _pywrap_util_port  # lazy: only once TensorFlow is loaded anyway
    except ImportError:
        return None
    return bool(_pywrap_util_port.IsMklEnabled())


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


# The TensorFlow-only packages (import name -> pip name): the model core runs on any Keras 3 backend without them.
TENSORFLOW_PACKAGES = {"tensorflow": "tensorflow", "tf_keras": "tf-keras",
                       "tensorflow_model_optimization": "tensorflow-model-optimization",
                       "ai_edge_litert": "ai-edge-litert", "tensorflow_datasets": "tensorflow-datasets"}


def missing_dependency(error: ImportError, feature: str) -> MissingDependencyError | None:
    """The clear error for an `ImportError` of a TensorFlow-only package, else None (another import failed).

    Args:
        error: the ImportError an import raised.
        feature: what needed the package, for the message ("export", "tf.data pipelines", ...).

    Returns:
        A `MissingDependencyError` naming the package and the pip command, or None.
    """
    if isinstance(error, MissingDependencyError):
        return error
    root = (getattr(error, "name", None) or "").split(".")[0]
    if root not in TENSORFLOW_PACKAGES:
        return None
    return MissingDependencyError(
        f"nin-keras needs TensorFlow for {feature}, and {root!r} cannot be imported here ({error}). Install it "
        f"with `pip install {TENSORFLOW_PACKAGES[root]}` (or `pip install nin-keras` for every TensorFlow part). "
        "Building, training on arrays, saving and loading models and their confidence maps work on any Keras "
        "backend without it."
    )


@contextlib.contextmanager
def explain_missing_tensorflow(feature: str):
    """Turns an `ImportError` of a TensorFlow-only package raised in the block into a `MissingDependencyError`.

    Raises:
        MissingDependencyError: the block failed to import TensorFlow or one of its companions.
    """
    try:
        yield
    except ImportError as error:
        clear = missing_dependency(error, feature)
        if clear is None or clear is error:
            raise
        raise clear from None


def require_tensorflow(feature: str):
    """Imports and returns TensorFlow, or raises one clear error naming `feature` and what to install.

    Args:
        feature: what needs TensorFlow, for the message.

    Returns:
        The `tensorflow` module.

    Raises:
        MissingDependencyError: TensorFlow is not installed (or cannot be imported).
    """
    with explain_missing_tensorflow(feature):
        return importlib.import_module("tensorflow")
