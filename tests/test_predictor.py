"""`nin_keras.Predictor`: raw pixels in, probabilities out, for every artifact kind, and safe across threads."""

import threading

import numpy as np
import pytest

from helpers import DIGITS_CLASSES as NUM_CLASSES

KINDS = ("model.keras", "saved_model", "model_float32.tflite", "model_int8.tflite", "model_edgetpu_ready.tflite")


@pytest.fixture(scope="module")
def images(digits_test):
    return digits_test[0][:100]


@pytest.mark.parametrize("name", KINDS)
def test_single_images_and_batches(digits_artifacts, images, name):
    import nin_keras

    predictor = nin_keras.Predictor(digits_artifacts / name)
    batch = predictor.predict(images[:5])
    assert batch.dtype == np.float32 and batch.shape == (5, NUM_CLASSES)
    np.testing.assert_allclose(batch.sum(axis=1), 1.0, atol=0.02)  # int8 softmax outputs are steps of 1/256
    single = predictor.predict(images[0])  # HWC
    assert single.shape == (NUM_CLASSES,)
    np.testing.assert_allclose(single, batch[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(predictor.predict(images[0, ..., 0]), single, rtol=1e-5, atol=1e-6)  # HW gray
    np.testing.assert_allclose(predictor.predict(images[:5].astype(np.float32)), batch, rtol=1e-5, atol=1e-6)
    classes = predictor.predict_classes(images[:5])
    np.testing.assert_array_equal(classes, batch.argmax(axis=1))
    assert isinstance(predictor.predict_classes(images[0]), int)


def test_top_k_uses_labels_beside_the_artifact(digits_artifacts, images):
    from nin_keras import Predictor

    predictor = Predictor(digits_artifacts / "model_int8.tflite")
    assert predictor.class_names[3] == "digit 3"  # labels.txt in the export folder
    top = predictor.top_k(images[0], k=3)
    assert [set(row) for row in top] == [{"class_id", "label", "probability"}] * 3
    assert top[0]["probability"] >= top[1]["probability"] >= top[2]["probability"]
    assert top[0]["label"] == f"digit {top[0]['class_id']}"
    assert top[0]["class_id"] == predictor.predict_classes(images[0])
    batch_top = predictor.top_k(images[:4], k=2)
    assert len(batch_top) == 4 and all(len(row) == 2 for row in batch_top)
    named = Predictor(digits_artifacts / "saved_model", class_names=list("abcdefghij"))
    assert named.top_k(images[0], k=1)[0]["label"] in "abcdefghij"
    with pytest.raises(ValueError, match="class names"):
        Predictor(digits_artifacts / "model.keras", class_names=["a", "b"])
    with pytest.raises(ValueError, match="k must"):
        predictor.top_k(images[0], k=0)


def test_wrong_image_shape_names_both_shapes(digits_artifacts):
    from nin_keras import Predictor
    from nin_keras.errors import IncompatibleModelError

    predictor = Predictor(digits_artifacts / "model_float32.tflite")
    with pytest.raises(IncompatibleModelError, match=r"8x8x1.*32x32x3"):
        predictor.predict(np.zeros((32, 32, 3), np.uint8))


@pytest.mark.parametrize("name", ["model_int8.tflite", "model_edgetpu_ready.tflite", "model.keras"])
def test_eight_threads_give_the_single_thread_results_exactly(digits_artifacts, images, name):
    from nin_keras import Predictor

    predictor = Predictor(digits_artifacts / name)
    expected = [predictor.predict(images[i]) for i in range(100)]
    results = {}
    errors = []
    start = threading.Barrier(8)

    def work(thread_id):
        try:
            start.wait()
            order = np.random.default_rng(thread_id).permutation(100)  # threads interleave differently
            results[thread_id] = {int(i): predictor.predict(images[i]) for i in order}
        except Exception as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert len(results) == 8
    for per_thread in results.values():
        for i in range(100):
            np.testing.assert_array_equal(per_thread[i], expected[i])


def test_images_scaled_to_0_1_are_refused_unless_allowed(digits_artifacts, images):
    """0..1 floats run and give confident wrong answers (the models take raw 0..255 pixels): refused by
    default, named with the fix; allow_unit_range=True takes them as given."""
    from nin_keras import Predictor
    from nin_keras.errors import InvalidInputError

    unit = images[:4].astype(np.float32) / 255.0
    predictor = Predictor(digits_artifacts / "model_float32.tflite")
    with pytest.raises(InvalidInputError, match=r"0\.\.1.*multiply the images by 255.*allow_unit_range=True"):
        predictor.predict(unit)
    with pytest.raises(InvalidInputError, match=r"0\.\.1"):
        predictor.top_k(unit[0])
    np.testing.assert_allclose(predictor.predict(unit * 255.0), predictor.predict(images[:4]), rtol=1e-5, atol=1e-6)
    permissive = Predictor(digits_artifacts / "model_float32.tflite", allow_unit_range=True)
    assert permissive.predict(unit).shape == (4, NUM_CLASSES)
    assert predictor.predict(np.zeros_like(unit)).shape == (4, NUM_CLASSES)  # black images say nothing of range
