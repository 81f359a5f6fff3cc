"""The one image reader: every image file nin-keras reads (folder datasets, `maps`) goes through `read_image`.

So what a model is trained on and what `maps` shows it are the same pixels. The reader:

- reads PNG, JPEG, GIF (first frame) and BMP only, whatever the file's extension says (Pillow finds the format
  from the content);
- refuses, from the header and before decoding, an image of more than `MAX_IMAGE_PIXELS` pixels;
- applies the EXIF orientation (a phone photo taken upright is read upright);
- scales 16-bit images to 8 bits by their high byte (65535 -> 255), as TensorFlow's decoder does;
- converts to grayscale (ITU-R 601-2 luma), RGB or RGBA (alpha dropped or added opaque), then resizes with
  Pillow's bilinear filter (antialiased when shrinking).

Any file it cannot read raises `InvalidInputError` naming the file and the reason, never Pillow's own error.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np

from nin_keras.errors import InvalidInputError

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
IMAGE_FORMATS = ("BMP", "GIF", "JPEG", "PNG")  # Pillow's names; nothing else is decoded
# Below Pillow's own decompression-bomb warning (89.5 megapixels): 80 MP is a 10000x8000 photo, 240 MB as RGB.
MAX_IMAGE_PIXELS = 80_000_000
CHANNELS = {1: "L", 3: "RGB", 4: "RGBA"}
_GRAY_MODES = ("1", "L", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
_WIDE_GRAY_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")  # 16-bit (or 32-bit int) grayscale
_EXIF_ORIENTATION = 0x0112
# What Pillow raises on a damaged or crafted file (its decoders' errors, found by fuzzing: see
# docs/benchmarks/fuzz_images.md). Pillow's UnidentifiedImageError and truncated-file errors are OSErrors.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error)


class ImageReadError(InvalidInputError):
    """An image file that cannot be read; `reason` is the why, without the path (for listings of many files)."""

    def __init__(self, path, reason: str, fix: str = "Replace or remove the file."):
        super().__init__(f"Cannot read image {path}: {reason}. {fix}")
        self.path = Path(path)
        self.reason = reason


def read_image(path, channels: int | None = None, size=None) -> np.ndarray:
    """Reads one image file as uint8 pixels (height, width, channels) (see the module docstring).

    Args:
        path: an image file (PNG, JPEG, GIF or BMP).
        channels: 1 (grayscale), 3 (RGB) or 4 (RGBA); None keeps the image's own kind: 1 for a grayscale
            image, else 3.
        size: (height, width) to resize to; None keeps the image's size (after the EXIF orientation).

    Returns:
        uint8 array (height, width, channels).

    Raises:
        ImageReadError (an InvalidInputError): a file that is not a readable image of the formats above, or
            one of more than MAX_IMAGE_PIXELS pixels, or a file that cannot be opened.
    """
    return read_image_and_size(path, channels, size)[0]


def read_image_and_size(path, channels: int | None = None, size=None) -> tuple[np.ndarray, tuple[int, int]]:
    """`read_image`, and the image's own (height, width) (after the EXIF orientation, before resizing)."""
    from PIL import Image, ImageOps  # lazy: only image readers need Pillow

    if channels is not None and channels not in CHANNELS:
        raise InvalidInputError(f"channels must be 1, 3 or 4; received {channels!r}.")
    with _open(path) as image:
        try:
            image = ImageOps.exif_transpose(image) or image
            original_size = (image.height, image.width)
            if channels is None:
                channels = 1 if image.mode in _GRAY_MODES else 3
            if image.mode in ("P", "PA"):  # through RGBA: Pillow warns converting transparent palettes otherwise
                image = image.convert("RGBA")
            if image.mode in _WIDE_GRAY_MODES:
                wide = np.asarray(image).astype(np.int64)
                image = Image.fromarray(np.clip(wide >> 8, 0, 255).astype(np.uint8), mode="L")
            if image.mode != CHANNELS[channels]:
                image = image.convert(CHANNELS[channels])
            if size is not None and original_size != (int(size[0]), int(size[1])):
                image = image.resize((int(size[1]), int(size[0])), Image.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype=np.uint8)
        except _DECODE_ERRORS as error:
            raise ImageReadError(path, f"cannot be decoded ({_describe(error)})") from None
    return pixels.reshape(pixels.shape[0], pixels.shape[1], channels), original_size


@contextlib.contextmanager
def _open(path):
    """Opens an image with Pillow, refusing other formats and, from the header, images over the pixel limit."""
    from PIL import Image  # lazy: only image readers need Pillow

    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO or a device would block or never end
            raise ImageReadError(path, "not a regular file")
        with warnings.catch_warnings():
            # Pillow warns from 89.5 MP and refuses from twice that; the limit below says it in one line.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path, formats=IMAGE_FORMATS)
    except ImageReadError:
        raise
    except Image.DecompressionBombError as error:
        pixels = re.search(r"\((\d+) pixels\)", str(error))
        raise _too_large(path, f"{int(pixels.group(1)):,} pixels" if pixels else
                         f"more than {2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels") from None
    except Image.UnidentifiedImageError:
        raise ImageReadError(path, f"not a {', '.join(IMAGE_FORMATS[:-1])} or {IMAGE_FORMATS[-1]} image "
                             "(or damaged)") from None
    except _DECODE_ERRORS as error:
        raise ImageReadError(path, f"cannot be opened ({_describe(error)})") from None
    with image:
        width, height = image.size
        if width * height > MAX_IMAGE_PIXELS:
            raise _too_large(path, f"{width}x{height} ({width * height:,} pixels)")
        yield image


def _too_large(path, size: str) -> ImageReadError:
    return ImageReadError(path, f"the image is {size}, over the {MAX_IMAGE_PIXELS:,}-pixel limit",
                          "Downscale it first (models take small images; e.g. to 1000 pixels on the longer side).")


def _describe(error: BaseException) -> str:
    text = " ".join(str(error).split())[:120]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
