"""Loading and saving NIN models safely, in files any Keras 3 can read.

`.keras` files are zip archives of a JSON config plus weights. Loading always uses `safe_mode=True`, so a
Lambda layer (arbitrary Python bytecode) is refused rather than run; unknown custom objects are refused too.

`save_model` writes every `FusedBatchNormalization` as Keras' own `BatchNormalization` (same config, same
weights, and the two behave alike: tests/test_batch_norm_peer.py), so `keras.saving.load_model` opens the file
in a Python that never imported nin_keras. `load_model` swaps the fused layer back in, for training speed.
"""

from __future__ import annotations

import json
import math
import re
import zipfile
from pathlib import Path

import keras

from nin_keras._atomic import atomic_path
from nin_keras.errors import InvalidInputError, MissingFileError, UnsafeFileError, one_line
from nin_keras.models.layers import FusedBatchNormalization


def load_model(path) -> keras.Model:
    """Loads a `.keras` model with `safe_mode=True`, turning every failure into a clear error.

    Args:
        path: path to a `.keras` file.

    Returns:
        The Keras 3 model.

    Raises:
        FileNotFoundError: no file at `path`.
        InvalidInputError: not a `.keras` file, truncated or corrupt (damaged weights included), or a config
            asking for a network too large to build (checked before anything is built).
        UnsafeFileError: the model holds a Lambda layer or other code that safe mode refuses to run, or asks
            Keras to call a function that is no part of a model; the message says which and why.
    """
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"Model file not found: {path}")
    if path.is_dir():
        raise InvalidInputError(
            f"{path} is a folder; expected a .keras file (a SavedModel folder is an export artifact: "
            "evaluate it with `nin-keras evaluate`)."
        )
    if path.suffix != ".keras":
        raise InvalidInputError(f"{path} is not a .keras file; save models with model.save('name.keras').")
    if not zipfile.is_zipfile(path):
        raise InvalidInputError(f"{path} is not a valid .keras file (not a zip archive: truncated or corrupt?).")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise InvalidInputError(f"{path} is a corrupt .keras file: {error}") from None
    if bad is not None:
        raise InvalidInputError(f"{path} is a corrupt .keras file: member {bad!r} fails its checksum.")
    if "config.json" not in names:
        raise InvalidInputError(f"{path} is not a Keras 3 model file (no config.json inside).")
    check_model_config(path)
    try:
        model = keras.models.load_model(path, safe_mode=True, compile=False)
    except Exception as error:  # h5py, Keras and TensorFlow fail on damaged files in many types
        message = one_line(error)
        unsafe = _unsafe_reason(message)
        if unsafe is not None:
            reason, trusted_fix = unsafe
            fix = ("Load it only if you trust its author, with keras.models.load_model(path, safe_mode=False)."
                   if trusted_fix else "Keras refuses such files in any mode: rebuild the model.")
            raise UnsafeFileError(f"Refused to load {path} (unsafe): {reason}. {fix}") from None
        if "Could not locate" in message or "Unknown layer" in message:
            raise UnsafeFileError(
                f"Refused to load {path}: it uses a layer or object that is not a Keras or nin-keras one "
                f"({message[:160]}...). Import and register the code that defines it, if you trust it."
            ) from None
        raise InvalidInputError(
            f"{path} is not a loadable Keras model: {type(error).__name__}: {message[:300]}; the file is damaged "
            "or was not written by Keras 3: re-save it from the model (model.save('name.keras')) or export it again."
        ) from None
    return with_batch_norm(model, FusedBatchNormalization)


# Bounds on what a .keras config may ask for, far past any NIN (the largest preset has ~1e6 weights) and low
# enough that building never tries to allocate more than the weights of a few GB: a crafted config asking for
# 2**31 channels is refused before Keras allocates anything.
MAX_CONFIG_BYTES = 64 * 2**20
MAX_LAYER_SIZE = 2**20  # filters, units, kernel sides, input sides ...
MAX_PARAMETERS = 2**28  # weights of the whole network (1 GiB as float32)
# Layer config keys that size a layer's weights or tensors.
_SIZE_KEYS = ("filters", "units", "kernel_size", "pool_size", "strides", "dilation_rate", "depth_multiplier",
              "batch_shape", "batch_input_shape", "input_dim", "output_dim", "size", "target_shape", "dims",
              "num_heads", "key_dim", "value_dim", "n", "cropping", "padding", "axis", "groups")


def check_model_config(path) -> dict:
    """Reads config.json of the .keras file `path` and refuses a network too large to build, before building it.

    Every size a layer config names (filters, units, kernel sides, input sides, ...) must be a whole number up
    to `MAX_LAYER_SIZE`, and the weights the convolutions and dense layers imply (each layer's input channels
    taken from the layer before it, in the config's order) at most `MAX_PARAMETERS`.

    Returns:
        The config, as parsed.

    Raises:
        InvalidInputError: config.json unreadable, not JSON, or asking for more than the bounds.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo("config.json")
            if info.file_size > MAX_CONFIG_BYTES:
                raise InvalidInputError(f"{path} is not a loadable Keras model: its config.json declares "
                                        f"{info.file_size} bytes (at most {MAX_CONFIG_BYTES}); re-save it.")
            raw = archive.read(info)
        config = json.loads(raw.decode("utf-8"))
    except (zipfile.BadZipFile, KeyError, OSError, EOFError, ValueError, RecursionError) as error:
        if isinstance(error, InvalidInputError):
            raise
        raise InvalidInputError(f"{path} is not a loadable Keras model: its config.json cannot be read "
                                f"({type(error).__name__}: {one_line(error, 200)}); re-save it.") from None
    if not isinstance(config, dict):
        raise InvalidInputError(f"{path} is not a loadable Keras model: its config.json is not an object; re-save it.")
    parameters = _count_parameters(config, path)
    if parameters > MAX_PARAMETERS:
        raise InvalidInputError(
            f"{path} is not a loadable Keras model: its config asks for about {parameters:.3g} weights (at most "
            f"{MAX_PARAMETERS:.3g} are loaded); the file is crafted or damaged: re-save it from the model."
        )
    return config


def _count_parameters(config: dict, path: Path) -> int:
    """Weights the config's convolutions and dense layers imply; checks every size on the way."""
    total, channels = 0, None
    stack = [config]
    seen = 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > 1_000_000:
            raise InvalidInputError(f"{path} is not a loadable Keras model: its config is too large; re-save it.")
        if isinstance(node, list):
            stack.extend(reversed(node))
            continue
        if not isinstance(node, dict):
            continue
        layer = node.get("config") if isinstance(node.get("class_name"), str) else None
        if isinstance(layer, dict):
            sizes = {key: _sizes(layer[key], key, node["class_name"], path) for key in _SIZE_KEYS if key in layer}
            kernel = math.prod(sizes.get("kernel_size") or [1])
            if node["class_name"] == "InputLayer":
                shape = sizes.get("batch_shape") or sizes.get("batch_input_shape")
                channels = shape[-1] if shape else channels
            elif (width := _largest(sizes, "filters", "units")) is not None:
                total += (channels or 1) * kernel * width + width
                channels = width
            elif (multiplier := _largest(sizes, "depth_multiplier")) is not None:
                channels = (channels or 1) * multiplier
                total += channels * kernel
            else:
                total += (_largest(sizes, "input_dim") or 0) * (_largest(sizes, "output_dim") or 0)  # Embedding
        stack.extend(reversed([value for value in node.values() if isinstance(value, (dict, list))]))
    return total


def _largest(sizes: dict, *keys: str) -> int | None:
    """The largest number the size fields `keys` hold, or None when they hold none (absent, None, [])."""
    values = [value for key in keys for value in sizes.get(key) or ()]
    return max(values) if values else None


def _sizes(value, key: str, class_name: str, path: Path) -> list[int]:
    """The whole numbers of one size field (a number or a list of them; None and strings are skipped), bounded."""
    values = value if isinstance(value, list) else [value]
    numbers = []
    for item in values:
        if isinstance(item, list):  # padding=((1, 1), (2, 2))
            numbers += _sizes(item, key, class_name, path)
            continue
        if item is None or isinstance(item, (str, bool, dict)):
            continue
        if not isinstance(item, (int, float)) or not math.isfinite(item) or abs(item) > MAX_LAYER_SIZE:
            raise InvalidInputError(
                f"{path} is not a loadable Keras model: layer {class_name} asks for {key}={item!r} (at most "
                f"{MAX_LAYER_SIZE}); the file is crafted or damaged: re-save it from the model."
            )
        numbers.append(abs(int(item)))
    return numbers


# What Keras says when it refuses a file for safety (matched on the innermost message: Keras wraps it in
# "could not be deserialized properly ... Exception encountered: ..."), what that means for the user, and
# whether safe_mode=False would load it.
_UNSAFE_MESSAGES = (
    ("Lambda", "it contains a Lambda layer, Python code that would run on load (rebuild the model without "
               "Lambda layers)", True),
    ("Python lambda", "it contains a Python lambda, code that would run on load", True),
    ("TFSMLayer", "it contains a TFSMLayer, which loads an external SavedModel (a program that would run)", True),
    ("vocabulary file outside", "it reads a vocabulary file from outside the archive (any file on this machine)",
     True),
    ("Non-modeling APIs", "it asks Keras to call {detail} while loading, a function that is no part of a model "
                          "(a known way to make a model file read, download or write files)", False),
    ("not a KerasSaveable", "it names {detail}, a Keras object that is no part of a model", False),
    ("safe_mode", "it holds something Keras' safe mode does not load ({detail})", True),
)


def _unsafe_reason(message: str) -> tuple[str, bool] | None:
    """(why Keras refused a file for safety, whether safe_mode=False would load it), or None for other errors."""
    inner = message.rsplit("Exception encountered: ", 1)[-1]
    named = re.search(r"[`'](\w[\w.]*)[`']", inner)
    detail = named.group(1) if named else inner[:160]
    for marker, reason, trusted_fix in _UNSAFE_MESSAGES:
        if marker in inner:
            return reason.format(detail=detail), trusted_fix
    return None


def save_model(model: keras.Model, path) -> Path:
    """Saves `model` to a `.keras` file atomically (a crash never leaves a half-written file).

    Fused batch normalization is written as Keras' `BatchNormalization`, so the file loads in any Keras 3
    (`keras.saving.load_model`), with or without nin_keras; `nin_keras.load_model` restores the fused layer.
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise InvalidInputError(f"Model path must end in .keras; received {path}.")
    portable = with_batch_norm(model, keras.layers.BatchNormalization)
    with atomic_path(path) as tmp:
        portable.save(tmp)
    return path


def with_batch_norm(model: keras.Model, kind: type) -> keras.Model:
    """`model` with every batch normalization layer of the other kind turned into `kind`
    (`keras.layers.BatchNormalization` or `FusedBatchNormalization`): a copy with the same config and
    weights, or `model` itself when there is nothing to turn (or it cannot be cloned: a subclassed model).
    """
    other = FusedBatchNormalization if kind is keras.layers.BatchNormalization else keras.layers.BatchNormalization
    if not any(type(layer) is other for layer in _all_layers(model)):
        return model

    def clone_layer(layer):
        cls = kind if type(layer) is other else type(layer)
        return cls.from_config(layer.get_config())

    try:
        clone = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
    except (ValueError, TypeError):  # a subclassed model: Keras cannot rebuild it from its layers
        return model
    clone.set_weights(model.get_weights())  # same layers in the same order: the weights line up
    for layer in _all_layers(clone):
        # Adapted preprocessing (Normalization) derives its tensors from its weights only when told to, as
        # Keras' loader does; set_weights alone would leave the clone standardizing with the initial values.
        if hasattr(layer, "finalize_state"):
            layer.finalize_state()
    return clone


def _all_layers(model):
    """Every layer of `model`, nested models' layers included."""
    for layer in getattr(model, "layers", ()):
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)
