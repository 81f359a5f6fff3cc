"""TFLite metadata: written with the published schema, read back, and invisible to LiteRT and the Edge TPU check."""

from __future__ import annotations

import numpy as np
import pytest

import helpers

LABELS = [f"digit {i}" for i in range(10)]


def _metadata(**overrides):
    from nin_keras.exporting.metadata import ClassifierMetadata

    fields = dict(name="nin_digits", description="a test", version="7", color_space="GRAYSCALE", height=8,
                  width=8, labels=LABELS)
    fields.update(overrides)
    return ClassifierMetadata(**fields)


@pytest.mark.parametrize("name", ["model_float32.tflite", "model_int8.tflite", "model_edgetpu_ready.tflite"])
def test_metadata_round_trips_and_changes_no_output(digits_artifacts, digits_test, name):
    from nin_keras.exporting.metadata import read_metadata, with_metadata

    original = (digits_artifacts / name).read_bytes()
    assert read_metadata(original) is None
    tagged = with_metadata(original, _metadata())
    metadata = read_metadata(tagged)
    assert (metadata["name"], metadata["version"], metadata["min_parser_version"]) == ("nin_digits", "7", "1.0.0")
    image, = metadata["input"]
    assert (image["name"], image["content"], image["color_space"], image["size"]) == ("image", "image",
                                                                                       "GRAYSCALE", (8, 8))
    assert image["normalization"] == {"mean": [0.0], "std": [1.0]}  # raw pixels: the model scales them
    scores, = metadata["output"]
    assert scores["name"] == "probabilities"
    assert scores["associated_files"] == [{"name": "labels.txt", "type": 2}]  # TENSOR_AXIS_LABELS
    assert metadata["packed_files"]["labels.txt"].decode().splitlines() == LABELS
    assert len(tagged) - len(original) < 4096  # the metadata costs a few kB at most

    images = digits_test[0][:24]
    np.testing.assert_array_equal(helpers.run_tflite(tagged, images), helpers.run_tflite(original, images))


def test_writing_metadata_again_replaces_it(digits_artifacts):
    from nin_keras.exporting.metadata import read_metadata, with_metadata

    original = (digits_artifacts / "model_float32.tflite").read_bytes()
    once = with_metadata(original, _metadata())
    twice = with_metadata(once, _metadata(version="8", labels=LABELS[::-1]))
    assert len(twice) == len(once)  # the metadata buffer and the packed labels are replaced, not added
    metadata = read_metadata(twice)
    assert metadata["version"] == "8" and metadata["packed_files"]["labels.txt"].decode().startswith("digit 9\n")


def test_the_edgetpu_check_still_passes_with_metadata(digits_artifacts, tmp_path):
    from nin_keras.exporting import check_edgetpu
    from nin_keras.exporting.metadata import with_metadata

    path = tmp_path / "model_edgetpu_ready.tflite"
    path.write_bytes(with_metadata((digits_artifacts / path.name).read_bytes(), _metadata()))
    before, after = check_edgetpu(digits_artifacts / path.name), check_edgetpu(path)
    assert (after["compatible"], after["problems"]) == (before["compatible"], before["problems"]), (before, after)


def test_an_unknown_color_space_is_refused(digits_artifacts):
    from nin_keras.exporting.metadata import with_metadata

    with pytest.raises(ValueError, match="color_space"):
        with_metadata((digits_artifacts / "model_float32.tflite").read_bytes(), _metadata(color_space="CMYK"))
