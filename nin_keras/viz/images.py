"""Reading images from disk into the raw-pixel arrays NIN models (and their exports) take."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nin_keras.checks import check_path
from nin_keras.data.images import read_image
from nin_keras.errors import InvalidInputError


def load_images(paths, input_shape) -> np.ndarray:
    """Reads PNG, JPEG, GIF or BMP files as uint8 raw pixels shaped for a model.

    Each file is read with `nin_keras.data.images.read_image`, the reader folder datasets use, so a model sees
    here the pixels it was trained on: EXIF orientation applied, 16-bit images scaled to 8 bits, converted to
    grayscale or RGB to match the channel count, resized (bilinear) to the model's height and width.

    Args:
        paths: image file paths.
        input_shape: (height, width, channels) the model takes; channels 1 (grayscale) or 3 (RGB).

    Returns:
        uint8 array (len(paths), height, width, channels).

    Raises:
        FileNotFoundError: a path does not exist. IsADirectoryError: a path is a folder.
        InvalidInputError: a file that is not a readable image (or is over the pixel limit); a channel count
            other than 1 or 3.
    """
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
        images.append(read_image(path, channels, (height, width)))
    return np.stack(images)
