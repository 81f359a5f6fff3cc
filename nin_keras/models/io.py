"""Loading and saving NIN models safely.

`.keras` files are zip archives of a JSON config plus weights. Loading always uses `safe_mode=True`, so a
Lambda layer (arbitrary Python bytecode) is refused rather than run; unknown custom objects are refused too.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import keras

from nin_keras._atomic import atomic_path
from nin_keras.errors import InvalidInputError, UnsafeFileError
from nin_keras.models import layers as _layers  # noqa: F401  (registers FusedBatchNormalization)


def load_model(path) -> keras.Model:
    """Loads a `.keras` model with `safe_mode=True`, turning every failure into a clear error.

    Args:
        path: path to a `.keras` file.

    Returns:
        The Keras 3 model.

    Raises:
        FileNotFoundError: no file at `path`.
        InvalidInputError: not a `.keras` file, truncated or corrupt.
        UnsafeFileError: the model holds a Lambda layer or other code that safe mode refuses to run.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Model file not found: {path}")
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
    try:
        return keras.models.load_model(path, safe_mode=True, compile=False)
    except (ValueError, TypeError, OSError, KeyError, EOFError, zipfile.BadZipFile) as error:
        message = " ".join(str(error).split())
        if "safe_mode" in message or "Lambda" in message:
            raise UnsafeFileError(
                f"Refused to load {path}: it contains a Lambda layer (Python code that would run on load). "
                "Rebuild the model without Lambda layers, or load it yourself with "
                "keras.models.load_model(path, safe_mode=False) only if you trust its author."
            ) from None
        if "Could not locate" in message or "Unknown layer" in message:
            raise UnsafeFileError(
                f"Refused to load {path}: it uses a layer or object that is not a Keras or nin-keras one "
                f"({message[:160]}...). Import and register the code that defines it, if you trust it."
            ) from None
        raise InvalidInputError(f"Could not load {path} (corrupt .keras file?): {message[:300]}") from None


def save_model(model: keras.Model, path) -> Path:
    """Saves `model` to a `.keras` file atomically (a crash never leaves a half-written file)."""
    path = Path(path)
    if path.suffix != ".keras":
        raise InvalidInputError(f"Model path must end in .keras; received {path}.")
    with atomic_path(path) as tmp:
        model.save(tmp)
    return path
