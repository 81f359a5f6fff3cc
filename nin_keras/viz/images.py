"""Reading images from disk into the raw-pixel arrays NIN models (and their exports) take."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nin_keras.checks import check_path
from nin_keras.errors import InvalidInputError


def load_images(paths, input_shape) -> np.ndarray:
    """Reads PNG/JPEG (any format Pillow reads) files as uint8 raw pixels shaped for a model.

    Each image is converted to grayscale or RGB to match the channel count and resized (bilinear) to the
    model's height and width.

    Args:
        paths: image file paths.
        input_shape: (height, width, channels) the model takes; channels 1 (grayscale) or 3 (RGB).

    Returns:
        uint8 array (len(paths), height, width, channels).

    Raises:
        FileNotFoundError: a path does not exist. IsADirectoryError: a path is a folder.
        InvalidInputError: a file that is not a readable image; a channel count other than 1 or 3.
    """
    from PIL import Image, UnidentifiedImageError  # lazy: Pillow is not a declared dependency (matplotlib brings it)

    height, width, channels = (int(v) for v in input_shape)
    if channels not in (1, 3):
        raise InvalidInputError(f"Only 1-channel (grayscale) or 3-channel (RGB) models read image files; "
                                f"this one takes {channels} channels.")
    paths = [Path(p) for p in paths]
    if not paths:
        raise InvalidInputError("No image files given.")
    images = []
    for path in paths:
        check_path("Image file", path, kind="file")
        try:
            with Image.open(path) as image:
                image = image.convert("L" if channels == 1 else "RGB")
                image = image.resize((width, height), Image.Resampling.BILINEAR)
                array = np.asarray(image, dtype=np.uint8)
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise InvalidInputError(f"Cannot read image {path}: {error}") from None
        images.append(array.reshape(height, width, channels))
    return np.stack(images)
