"""Reliability round 3, folder datasets and image files: one listing and one image reader for training and `maps`.

Each test is a case of the round-3 probe: hidden files read by a second loader, links that duplicate a class,
empty classes, class names labels.txt cannot hold, 16-bit and resized images that training and `maps` read
differently, EXIF orientation, an image too large to decode, and a small fuzz of the reader.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

import helpers
from nin_keras.data.folder import read_folder
from nin_keras.errors import InvalidInputError, NinKerasError


def _png(path: Path, pixels) -> Path:
    from PIL import Image  # lazy: pillow comes with matplotlib

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels)).save(path)
    return path


def _noise(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _pets(root: Path, per_class=3, size=(8, 8)) -> Path:
    for label, name in enumerate(("cat", "dog")):
        for i in range(per_class):
            _png(root / name / f"{i}.png", _noise((*size, 3), seed=10 * label + i))
    return root


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _header_only_png(path: Path, width: int, height: int) -> Path:
    """A PNG whose header announces width x height 1-bit pixels, with a token of image data (a few bytes)."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + _chunk(b"IEND", b""))
    return path


# ------------------------------------------------------------------------------------- 1. hidden entries


def test_hidden_files_and_folders_are_neither_read_nor_trained_on(tmp_path):
    root = _pets(tmp_path / "pets")
    (root / "cat" / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble resource fork")  # macOS metadata
    (root / "dog" / ".ipynb_checkpoints").mkdir()
    (root / "dog" / ".ipynb_checkpoints" / "bad.png").write_bytes(helpers.PNG_MAGIC + b"broken")
    _png(root / "cat" / ".thumbs" / "thumb.png", _noise((8, 8, 3), seed=99))  # a readable image, not a sample
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    data = read_folder(root)
    assert len(data.y_train) + len(data.y_test) == 6  # the 6 visible images, no thumbnail
    assert data.info["hidden_entries_ignored"] == 3 and data.info["skipped_files"] == []
    thumb = _noise((8, 8, 3), seed=99)
    assert not any(np.array_equal(image, thumb) for image in np.concatenate([data.x_train, data.x_test]))


def test_skip_leaves_out_a_bad_visible_image_beside_hidden_ones(tmp_path):
    root = _pets(tmp_path / "pets")
    (root / "cat" / "._1.png").write_bytes(b"\x00\x05\x16\x07")
    (root / "dog" / "torn.png").write_bytes(helpers.PNG_MAGIC + b"torn")
    with pytest.warns(UserWarning, match="torn.png"):
        data = read_folder(root, on_bad_image="skip")
    assert data.info["skipped_files"] == [str(root / "dog" / "torn.png")]
    assert len(data.y_train) + len(data.y_test) == 6


# ---------------------------------------------------------------------------- 2. links and empty classes


def test_a_class_linked_to_the_root_is_refused(tmp_path):
    root = _pets(tmp_path / "pets")
    os.symlink(root, root / "all")
    with pytest.raises(InvalidInputError, match=r"all.*holds the image folder .*pets itself.*Remove the link"):
        read_folder(root)


def test_a_class_linked_to_another_class_is_refused(tmp_path):
    root = _pets(tmp_path / "pets")
    os.symlink(root / "cat", root / "kitten")
    with pytest.raises(InvalidInputError, match=r"kitten and .*cat are the same folder"):
        read_folder(root)


def test_a_link_loop_inside_a_class_is_refused(tmp_path):
    root = _pets(tmp_path / "pets")
    os.symlink(root / "cat", root / "cat" / "again")
    with pytest.raises(InvalidInputError, match=r"again and .*cat are the same folder.*link loop"):
        read_folder(root)


def test_one_file_reached_twice_is_refused(tmp_path):
    root = _pets(tmp_path / "pets")
    os.symlink(root / "cat" / "0.png", root / "dog" / "cat0.png")
    with pytest.raises(InvalidInputError, match=r"cat0.png and .*0.png are the same file.*as two classes"):
        read_folder(root)


def test_a_test_split_linked_to_the_train_split_is_refused(tmp_path):
    _pets(tmp_path / "train")
    os.symlink(tmp_path / "train", tmp_path / "test")
    with pytest.raises(InvalidInputError, match="in both .*train and .*test.*Keep the splits apart"):
        read_folder(tmp_path)


def test_an_empty_class_folder_is_refused_naming_it(tmp_path):
    root = _pets(tmp_path / "pets")
    (root / "eel").mkdir()
    (root / "eel" / "._x.png").write_bytes(b"\0")
    with pytest.raises(InvalidInputError, match=r"Class folder .*eel holds no files \(hidden ones are ignored\).*"
                                                r"Remove it, or add images of class 'eel'"):
        read_folder(root)


# ------------------------------------------------------------------------------- 3. class names, labels.txt


@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\t"])
def test_a_class_name_labels_txt_cannot_hold_is_refused_at_load(tmp_path, char):
    root = _pets(tmp_path / "pets")
    (root / "dog").rename(root / f"hot{char}dog")
    with pytest.raises(InvalidInputError, match=rf"Class name 'hot.*dog' .*U\+{ord(char):04X}.*Rename it"):
        read_folder(root)


def test_labels_txt_is_written_checked_and_read_one_name_a_line(tmp_path):
    from nin_keras.export_layout import parse_labels, read_labels
    from nin_keras.exporting.targets import write_labels

    with pytest.raises(InvalidInputError, match="U\\+2028"):
        write_labels(tmp_path, ["cat\u2028dog", "eel"])
    assert not (tmp_path / "labels.txt").exists()
    names = ["chat noir", "猫 🐱", "a|b,c", "dog"]
    assert read_labels(write_labels(tmp_path, names)) == names
    # The one reader splits on "\n" only: characters str.splitlines also breaks at stay inside a name.
    assert parse_labels("a\x85b\nc\u2028d\r\n\n") == ["a\x85b", "c\u2028d"]
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9\n")
    with pytest.raises(InvalidInputError, match="not UTF-8"):
        read_labels(tmp_path / "latin1.txt")


@pytest.mark.filterwarnings("ignore:Glyph .* missing from font")  # matplotlib draws \\x85 as a box
def test_maps_reads_labels_txt_with_the_one_reader(tmp_path, digits_model, capsys):
    import nin_keras

    model_path = nin_keras.save_model(digits_model, tmp_path / "model.keras")
    # Hand-written names holding characters str.splitlines breaks at: still 10 lines, so 10 names.
    (tmp_path / "labels.txt").write_text("".join(f"digit\x85{i}\x1c\n" for i in range(10)), encoding="utf-8")
    image = _png(tmp_path / "seven.png", _noise((8, 8), seed=7))
    code, out, err = helpers.run_cli(["maps", model_path, image, "--out", tmp_path / "maps.png"], capsys)
    assert code == 0, err
    assert "seven.png: digit\x85" in out


# ------------------------------------------------------------------------- 4. one reader: 16-bit, resize


def _agrees_with_maps(data, path, shape) -> float:
    """The smallest largest-pixel difference between `maps`' reading of `path` and any image of `data`."""
    from nin_keras.viz import load_images

    shown = load_images([path], shape)[0].astype(int)
    trained = np.concatenate([data.x_train, data.x_test]).astype(int)
    return min(int(np.abs(image - shown).max()) for image in trained)


def test_a_16_bit_png_reads_the_same_in_training_and_maps(tmp_path):
    root = tmp_path / "scans"
    wide = np.random.default_rng(3).integers(0, 65536, (8, 8)).astype(np.uint16)
    deep = _png(root / "a" / "deep.png", wide)
    for i in range(2):
        _png(root / "a" / f"{i}.png", _noise((8, 8), seed=i))
        _png(root / "b" / f"{i}.png", _noise((8, 8), seed=5 + i))
    data = read_folder(root)
    assert data.info["color_mode"] == "grayscale"
    assert _agrees_with_maps(data, deep, (8, 8, 1)) <= 1
    from nin_keras.data.images import read_image

    np.testing.assert_allclose(read_image(deep)[..., 0], wide >> 8, atol=1)  # scaled, not clipped to white


def test_a_resized_image_reads_the_same_in_training_and_maps(tmp_path):
    root = _pets(tmp_path / "pets", size=(8, 8))
    large = _png(root / "dog" / "large.png", _noise((20, 30, 3), seed=42))
    data = read_folder(root, image_size=(8, 8))
    assert data.info["resized_images"] == 1
    assert _agrees_with_maps(data, large, (8, 8, 3)) <= 1


@pytest.mark.filterwarnings("error")
def test_a_palette_png_with_transparency_reads_without_a_warning(tmp_path):
    from PIL import Image

    from nin_keras.data.images import read_image

    path = tmp_path / "palette.png"
    Image.fromarray(_noise((8, 8, 3))).convert("P").save(path, transparency=bytes(range(256)))
    with Image.open(path) as image:
        gray = np.asarray(image.convert("RGBA").convert("L"))
    np.testing.assert_array_equal(read_image(path, 1)[..., 0], gray)
    assert read_image(path).shape == (8, 8, 3)


# ---------------------------------------------------------------------------------------------- 5. EXIF


def test_the_exif_orientation_is_applied_by_training_and_maps_alike(tmp_path):
    from PIL import Image

    stored = np.zeros((8, 16, 3), np.uint8)
    stored[:, 8:] = 255  # right half white, as stored
    root = _pets(tmp_path / "photos", size=(16, 8))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    photo = root / "cat" / "photo.jpg"
    Image.fromarray(stored).save(photo, quality=95, exif=exif)
    data = read_folder(root)
    assert data.info["resized_images"] == 0  # the photo, upright, is 16x8 like the others
    assert _agrees_with_maps(data, photo, (16, 8, 3)) <= 1
    from nin_keras.data.images import read_image

    upright = np.rot90(stored, k=-1)  # 16 high, 8 wide: white at the bottom
    read = read_image(photo).astype(int)
    assert read.shape == (16, 8, 3) and np.abs(read - upright).mean() < 8


# ------------------------------------------------------------------------------------------- 6. size


def test_an_image_over_the_pixel_limit_is_refused_from_its_header(tmp_path):
    from nin_keras.data.images import MAX_IMAGE_PIXELS, read_image

    side = int(MAX_IMAGE_PIXELS ** 0.5) + 100  # over our limit, under Pillow's own bomb error
    with pytest.raises(InvalidInputError, match=rf"{side}x{side} .*over the 80,000,000-pixel limit.*Downscale"):
        read_image(_header_only_png(tmp_path / "large.png", side, side))
    root = _pets(tmp_path / "pets")
    _header_only_png(root / "cat" / "huge.png", 30000, 30000)
    with pytest.raises(InvalidInputError, match=r"huge.png: .*900,000,000 pixels, over the"):
        read_folder(root)


def test_maps_refuses_a_30000x30000_png_in_one_line(tmp_path, digits_model, capsys):
    import nin_keras

    model_path = nin_keras.save_model(digits_model, tmp_path / "model.keras")
    big = _header_only_png(tmp_path / "big.png", 30000, 30000)
    code, out, err = helpers.run_cli(["maps", model_path, big, "--out", tmp_path / "maps.png"], capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "big.png" in err and "900,000,000 pixels" in err and "Downscale" in err
    assert not (tmp_path / "maps.png").exists()


# ------------------------------------------------------------------------------------------- 7. fuzz


def test_fuzzed_images_give_the_packages_error_or_pixels(tmp_path, monkeypatch):
    from nin_keras.data.images import read_image

    # The tool's own mutants (seed 24), in-process: Pillow's PNG/JPEG/GIF/BMP decoders did not crash on
    # 20,000 of them in child processes (tools/fuzz_images.py, docs/benchmarks/fuzz_images.md).
    tool = helpers.load_tool("fuzz_images", monkeypatch)
    seeds, outcomes = tool.seed_images(), {"read": 0, "refused": 0}
    path = tmp_path / "mutant.png"
    for index in range(300):
        content, channels, size = tool.mutant(24, index, seeds)
        path.write_bytes(content)
        try:
            pixels = read_image(path, channels, size)
        except NinKerasError:
            outcomes["refused"] += 1
        else:
            assert pixels.dtype == np.uint8 and pixels.ndim == 3
            outcomes["read"] += 1
    assert outcomes["read"] > 10 and outcomes["refused"] > 100, outcomes
