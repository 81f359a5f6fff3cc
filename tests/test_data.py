"""load_dataset: digits, synthetic, image folders, splits, seeds, augmentation, GCN/ZCA, errors, the as_splits
adapter, check_data_fits, throughput, and the CLI's shared data options."""

import argparse
import subprocess
import sys
import warnings

import numpy as np
import pytest

import nin_keras
from nin_keras.data import as_arrays, as_splits, list_datasets, load_dataset, measure_pipeline_throughput
from nin_keras.models import check_data_fits
from nin_keras.data.pipeline import Augmentation, augment_batch, split_validation
from nin_keras.data.preprocessing import GCNZCA, ZCA, global_contrast_normalize
from nin_keras.errors import IncompatibleModelError, InvalidInputError


def _first_epoch(dataset):
    xs, ys = zip(*[(x, y) for x, y in dataset.as_numpy_iterator()])
    return np.concatenate(xs), np.concatenate(ys)


# ------------------------------------------------------------------------------------------ names / errors


def test_list_datasets_and_top_level_exports():
    names = list_datasets()
    for name in ("cifar10", "cifar100", "mnist", "fashion_mnist", "svhn_cropped", "digits", "synthetic", "folder:PATH"):
        assert name in names and names[name]
    assert nin_keras.load_dataset is load_dataset
    assert nin_keras.DatasetSplits is nin_keras.data.DatasetSplits


def test_unknown_dataset_lists_known():
    with pytest.raises(ValueError, match=r"Unknown dataset 'cifar11'.*cifar10.*digits.*synthetic"):
        load_dataset("cifar11")


@pytest.mark.parametrize("kwargs, match", [
    ({"batch_size": 0}, "batch_size must be an integer >= 1"),
    ({"batch_size": 2.5}, "batch_size must be an integer"),
    ({"validation_split": 1.0}, r"validation_split must be a number >= 0 and < 1"),
    ({"validation_split": -0.1}, r"validation_split"),
    ({"preprocessing": "zca"}, "Unknown preprocessing"),
    ({"size": 10, "colour": 3}, "Unknown option"),
    ({"on_bad_image": "ignore"}, "on_bad_image"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_dataset("synthetic", **kwargs)


# ------------------------------------------------------------------------------------------------ digits


def test_digits_offline():
    splits = load_dataset("digits", batch_size=64, validation_split=0.1)
    assert splits.input_shape == (8, 8, 1) and splits.num_classes == 10
    assert splits.class_names == [str(i) for i in range(10)]
    x, y = as_arrays(splits, split="test")
    assert x.dtype == np.uint8 and x.shape[1:] == (8, 8, 1) and x.max() == 255 and x.min() == 0
    assert y.dtype == np.int32 and set(np.unique(y)) <= set(range(10))
    sizes = splits.info["sizes"]
    assert sum(sizes.values()) == 1797 and sizes["validation"] == round(0.1 * (sizes["train"] + sizes["validation"]))
    spec = splits.train.element_spec
    assert spec[0].dtype.name == "uint8" and spec[0].shape.as_list() == [None, 8, 8, 1]


def test_validation_split_sizes_and_zero():
    none = load_dataset("synthetic", size=100, validation_split=0.0, batch_size=32)
    assert none.validation is None and none.info["sizes"]["train"] == 100
    with pytest.raises(ValueError, match="no validation split"):
        none.split("validation")
    quarter = load_dataset("synthetic", size=100, validation_split=0.25, batch_size=32)
    assert quarter.info["sizes"] == {"train": 75, "validation": 25, "test": 20}
    assert len(as_arrays(quarter, split="validation")[0]) == 25
    train, val = split_validation(10, 0.01, 0)
    assert len(val) == 1 and len(train) == 9 and not set(train) & set(val)


def test_validation_split_is_seeded_hold_out():
    a1, b1 = split_validation(1000, 0.1, seed=3)
    a2, b2 = split_validation(1000, 0.1, seed=3)
    _, b3 = split_validation(1000, 0.1, seed=4)
    np.testing.assert_array_equal(b1, b2)
    assert not np.array_equal(b1, b3)
    assert sorted(np.concatenate([a1, b1]).tolist()) == list(range(1000))


# --------------------------------------------------------------------------------------------- synthetic


def test_synthetic_is_labelled_and_configurable():
    splits = load_dataset("synthetic", input_shape=(12, 10, 2), num_classes=4, size=50, batch_size=16)
    assert splits.name == "synthetic" and "synthetic" in splits.info["name"]
    assert splits.info["synthetic"] is True and "SYNTHETIC" in splits.info["note"]
    assert splits.input_shape == (12, 10, 2) and splits.num_classes == 4
    x, y = _first_epoch(splits.train)
    assert x.shape[1:] == (12, 10, 2) and x.dtype == np.uint8 and y.max() < 4
    with pytest.raises(ValueError, match="num_classes"):
        load_dataset("synthetic", num_classes=0)


def test_seed_determinism_and_reshuffling():
    kwargs = dict(size=64, batch_size=16, augment=True, input_shape=(8, 8, 3))
    a = load_dataset("synthetic", seed=5, **kwargs)
    b = load_dataset("synthetic", seed=5, **kwargs)
    c = load_dataset("synthetic", seed=6, **kwargs)
    xa, ya = _first_epoch(a.train)
    xb, yb = _first_epoch(b.train)
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(ya, _first_epoch(c.train)[1]) or not np.array_equal(xa, _first_epoch(c.train)[0])
    xa2, _ = _first_epoch(a.train)  # second epoch: new order and new augmentation
    assert not np.array_equal(xa, xa2)
    # test and validation never shuffle or augment
    np.testing.assert_array_equal(_first_epoch(a.test)[0], _first_epoch(a.test)[0])


# ---------------------------------------------------------------------------------------------- augmentation


def _matches_translation(original, augmented, pad, allow_flip):
    padded = np.pad(original, ((pad, pad), (pad, pad), (0, 0)))
    h, w = original.shape[:2]
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[dy:dy + h, dx:dx + w]
            if np.array_equal(crop, augmented) or (allow_flip and np.array_equal(crop[:, ::-1], augmented)):
                return True
    return False


@pytest.mark.parametrize("flip", [True, False])
def test_augmentation_is_translation_and_optional_flip(flip):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, (64, 16, 16, 3), dtype=np.uint8)  # no zeros: padding is recognisable
    aug = Augmentation.for_images((16, 16, 3), flip=flip)
    assert aug.pad == 2
    out = augment_batch(tf.constant(images), tf.constant([7, 9], tf.int64), aug).numpy()
    assert out.dtype == np.uint8 and out.shape == images.shape
    for original, augmented in zip(images, out):
        assert _matches_translation(original, augmented, aug.pad, allow_flip=flip)
    moved = sum(not np.array_equal(o, a) for o, a in zip(images, out))
    assert moved > 40  # most images move
    if flip:
        flipped = sum(_matches_translation(o[:, ::-1], a, aug.pad, allow_flip=False) and
                      not _matches_translation(o, a, aug.pad, allow_flip=False) for o, a in zip(images, out))
        assert 10 < flipped < 54
    again = augment_batch(tf.constant(images), tf.constant([7, 9], tf.int64), aug).numpy()
    np.testing.assert_array_equal(out, again)  # stateless: same seed, same result


def test_augmentation_settings_per_dataset():
    assert Augmentation.for_images((32, 32, 3), flip=True).pad == 4  # the paper's CIFAR setting
    digits = load_dataset("digits", augment=True, batch_size=256)
    assert digits.info["augmentation"]["horizontal_flip"] is False
    synthetic = load_dataset("synthetic", augment=True, size=32)
    assert synthetic.info["augmentation"] == {"translate_pixels": 4, "horizontal_flip": True,
                                              "where": "tf.data (CPU), per batch"}
    assert load_dataset("synthetic", size=32).info["augmentation"] is None
    from nin_keras.data.sources import SOURCES

    assert [n for n, s in SOURCES.items() if not s.flip] == ["mnist", "svhn_cropped", "digits"]
    # augmented training images stay uint8 and keep their labels' multiset
    x, y = _first_epoch(digits.train)
    plain_x, plain_y = _first_epoch(load_dataset("digits", batch_size=256).train)
    assert x.dtype == np.uint8 and sorted(y) == sorted(plain_y)


# -------------------------------------------------------------------------------------------------- GCN/ZCA


def test_zca_whitens_training_covariance():
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(12, 12))
    x = rng.normal(size=(4000, 12)) @ mixing + 5.0
    zca = ZCA(epsilon=1e-8).fit(x)
    white = zca.transform(x)
    np.testing.assert_allclose(np.cov(white, rowvar=False, bias=True), np.eye(12), atol=1e-3)
    np.testing.assert_allclose(zca.matrix, zca.matrix.T, atol=1e-8)  # ZCA (not PCA): symmetric


def test_gcn_normalises_each_image():
    x = np.random.default_rng(1).integers(0, 256, (5, 4, 4, 3)).astype(np.uint8)
    g = global_contrast_normalize(x, scale=55.0).reshape(5, -1)
    np.testing.assert_allclose(g.mean(axis=1), 0, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(g, axis=1), 55.0, rtol=1e-5)


def test_gcn_zca_pipeline_fitted_on_train_only():
    from nin_keras.data.sources import _read_synthetic

    kwargs = dict(input_shape=(4, 4, 1), num_classes=3, size=3000)
    splits = load_dataset("synthetic", batch_size=500, validation_split=0.2, seed=2,
                          preprocessing=GCNZCA(epsilon=1e-6), **kwargs)
    assert splits.info["dtype"] == "float32" and splits.info["preprocessing"]["name"] == "gcn_zca"
    x, _ = _first_epoch(splits.train)
    assert x.dtype == np.float32
    eigenvalues = np.sort(np.linalg.eigvalsh(np.cov(x.reshape(len(x), -1), rowvar=False, bias=True)))
    # GCN removes each image's mean (one direction of zero variance); all others are whitened to 1
    assert eigenvalues[0] < 1e-3
    np.testing.assert_allclose(eigenvalues[1:], 1.0, atol=1e-2)
    # fitted on the training part only: not on validation or test images
    raw = _read_synthetic(None, 2, **kwargs)
    train_idx, val_idx = split_validation(len(raw.x_train), 0.2, 2)
    train_mean = global_contrast_normalize(raw.x_train[train_idx]).reshape(len(train_idx), -1).mean(axis=0)
    all_mean = global_contrast_normalize(np.concatenate([raw.x_train, raw.x_test])).reshape(-1, 16).mean(axis=0)
    np.testing.assert_allclose(splits.preprocessor.zca.mean, train_mean, atol=1e-4)
    assert not np.allclose(splits.preprocessor.zca.mean, all_mean, atol=1e-4)
    test_x, _ = _first_epoch(splits.test)
    np.testing.assert_allclose(test_x, splits.preprocessor.transform(raw.x_test), atol=1e-4)


def test_default_gcn_zca_by_name():
    splits = load_dataset("digits", preprocessing="gcn_zca", batch_size=512)
    assert splits.train.element_spec[0].dtype.name == "float32"
    assert splits.info["preprocessing"]["gcn_scale"] == 55.0 and splits.info["preprocessing"]["zca_epsilon"] == 0.1


# ------------------------------------------------------------------------------------------------ folders


def _write_png(path, array):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _image_folder(root, n_per_class=4, size=(10, 12), mode="RGB"):
    rng = np.random.default_rng(0)
    shape = (*size, 3) if mode == "RGB" else size
    for name in ("cat", "dog", "eel"):
        for i in range(n_per_class):
            _write_png(root / name / f"{i}.png", rng.integers(0, 256, shape, dtype=np.uint8))
    return root


def test_folder_dataset(tmp_path):
    root = _image_folder(tmp_path / "pets")
    splits = load_dataset(f"folder:{root}", batch_size=4, validation_split=0.0)
    assert splits.class_names == ["cat", "dog", "eel"] and splits.num_classes == 3
    assert splits.input_shape == (10, 12, 3)
    assert splits.info["sizes"]["train"] + splits.info["sizes"]["test"] == 12
    assert splits.info["skipped_files"] == []
    x, y = as_arrays(splits, split="test")
    assert x.dtype == np.uint8
    # pixels arrive unchanged (no resize needed): each test image equals one file of its class
    from PIL import Image

    files = {c: [np.asarray(Image.open(p)) for p in sorted((root / c).iterdir())] for c in splits.class_names}
    for image, label in zip(x, y):
        assert any(np.array_equal(image, f) for f in files[splits.class_names[label]])


def test_folder_with_train_and_test_subfolders_and_grayscale(tmp_path):
    _image_folder(tmp_path / "train", mode="L", size=(6, 6))
    _image_folder(tmp_path / "test", n_per_class=2, mode="L", size=(6, 6))
    splits = load_dataset(f"folder:{tmp_path}", batch_size=4, validation_split=0.0)
    assert splits.input_shape == (6, 6, 1)
    assert splits.info["sizes"] == {"train": 12, "validation": 0, "test": 6}


def test_folder_bad_image_fail_names_it(tmp_path):
    root = _image_folder(tmp_path / "pets")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png")
    (root / "eel" / "notes.txt").write_text("not an image")
    with pytest.raises(InvalidInputError, match=r"broken\.png.*notes\.txt|notes\.txt.*broken\.png") as error:
        load_dataset(f"folder:{root}")
    assert "on_bad_image='skip'" in str(error.value)


def test_folder_bad_image_skip_warns_and_records(tmp_path):
    root = _image_folder(tmp_path / "pets")
    (root / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.warns(UserWarning, match=r"broken\.jpg"):
        splits = load_dataset(f"folder:{root}", on_bad_image="skip", validation_split=0.0, batch_size=4)
    assert splits.info["skipped_files"] == [str(root / "dog" / "broken.jpg")]
    assert splits.info["sizes"]["train"] + splits.info["sizes"]["test"] == 12
    x, y = as_arrays(splits, split="train")
    assert x.shape[1:] == (10, 12, 3) and set(np.unique(y)) <= {0, 1, 2}


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset(f"folder:{tmp_path / 'missing'}")
    (tmp_path / "flat").mkdir()
    _write_png(tmp_path / "flat" / "a.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(InvalidInputError, match="no class subfolders"):
        load_dataset(f"folder:{tmp_path / 'flat'}")
    with pytest.raises(ValueError, match="lacks its path"):
        load_dataset("folder:")


# ---------------------------------------------------------------------------------------------- as_splits

_IMAGES = np.arange(10 * 4 * 4 * 1, dtype=np.uint8).reshape(10, 4, 4, 1)
_LABELS = np.arange(10, dtype=np.int64) % 3


def _pairs(images, labels):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((images, labels))


@pytest.mark.parametrize("form, batches, recorded", [
    ("arrays", [4, 4, 2], {"size": 10, "batch_size": 4, "label_range": [0, 2]}),
    ("arrays_3d", [4, 4, 2], {"size": 10, "batch_size": 4, "label_range": [0, 2]}),
    ("one_hot_arrays", [4, 4, 2], {"size": 10, "batch_size": 4, "label_range": [0, 2]}),
    ("unbatched_dataset", [4, 4, 2], {"batch_size": 4}),
    ("batched_dataset", [5, 5], {}),
    ("one_hot_dataset", [5, 5], {}),
])
@pytest.mark.parametrize("split", ["train", "test"])
def test_as_splits_takes_the_three_forms_and_batches_by_one_rule(form, batches, recorded, split):
    data = {
        "arrays": lambda: (_IMAGES, _LABELS),
        "arrays_3d": lambda: [_IMAGES[..., 0], _LABELS],
        "one_hot_arrays": lambda: (_IMAGES, np.eye(3)[_LABELS]),
        "unbatched_dataset": lambda: _pairs(_IMAGES, _LABELS),
        "batched_dataset": lambda: _pairs(_IMAGES, _LABELS).batch(5),
        "one_hot_dataset": lambda: _pairs(_IMAGES, np.eye(3, dtype="float32")[_LABELS]).batch(5),
    }[form]()
    splits = as_splits(data, split=split, batch_size=4)
    assert splits.name == ("arrays" if "arrays" in form else "dataset")
    assert splits.input_shape == (4, 4, 1) and splits.info == recorded
    assert splits.num_classes == (3 if "one_hot" in form else None)
    assert as_splits(data, num_classes=7).num_classes == (3 if "one_hot" in form else 7)
    assert [splits.train is None, splits.validation is None, splits.test is None] == [split != "train", True,
                                                                                   split != "test"]
    pairs = list(splits.split(split).as_numpy_iterator())
    assert [len(x) for x, _ in pairs] == batches
    images, labels = np.concatenate([x for x, _ in pairs]), np.concatenate([y for _, y in pairs])
    np.testing.assert_array_equal(images, _IMAGES)
    np.testing.assert_array_equal(labels, _LABELS)
    assert labels.dtype == np.int32  # class ids, whatever the form
    assert as_splits(splits) is splits  # a DatasetSplits is returned as it is
    np.testing.assert_array_equal(as_arrays(data, limit=7)[1], _LABELS[:7])


@pytest.mark.parametrize("data, error, match", [
    ("digits", InvalidInputError, r"DatasetSplits.*\(images, labels\) pair of arrays.*tf.data.*received a str"),
    (None, InvalidInputError, r"received a NoneType"),
    ((_IMAGES, _LABELS, _LABELS), InvalidInputError, r"received a tuple of 3 items"),
    (_IMAGES, InvalidInputError, r"received a ndarray"),  # images alone: only the layer adapters take them
    ((_IMAGES, _LABELS[:9]), InvalidInputError, "10 images but 9 labels"),
    ((_IMAGES[:0], _LABELS[:0]), InvalidInputError, "no images"),
    ((_IMAGES[0, 0], _LABELS), IncompatibleModelError, "4-D array.*received a 2-D array"),
    ((_IMAGES, _LABELS + 0.5), InvalidInputError, "integer class ids"),
    ((np.full((2, 4, 4, 1), np.nan), [0, 1]), InvalidInputError, "NaN or infinite"),
])
def test_as_splits_refuses_anything_else_by_name(data, error, match):
    with pytest.raises(error, match=match):
        as_splits(data)


def test_as_splits_of_images_alone_of_array_splits_and_of_bad_datasets():
    import tensorflow as tf

    with pytest.raises(InvalidInputError, match=r"\(images, labels\) pairs"):
        as_splits(tf.data.Dataset.from_tensor_slices(_IMAGES))
    with pytest.raises(InvalidInputError, match="images have shape"):
        as_splits(_pairs(_IMAGES[:, 0, 0], _LABELS))
    with pytest.raises(InvalidInputError, match="Unknown split 'val'"):
        as_splits((_IMAGES, _LABELS), split="val")
    alone = as_splits(tf.data.Dataset.from_tensor_slices(_IMAGES), images_only=True, batch_size=8)
    assert [y.tolist() for _, y in alone.train.as_numpy_iterator()] == [[-1] * 8, [-1] * 2]
    holder = nin_keras.DatasetSplits("held", None, None, (_IMAGES, _LABELS), 3, [], (4, 4, 1))
    adapted = as_splits(holder, batch_size=4)  # a split given as arrays is batched by the same rule
    assert adapted.name == "held" and [len(x) for x, _ in adapted.test.as_numpy_iterator()] == [4, 4, 2]
    assert as_splits(adapted) is adapted
    assert nin_keras.as_splits is as_splits


# ---------------------------------------------------------------------------------------- check_data_fits


def _classifier(input_shape, classes):
    import keras

    inputs = keras.Input(input_shape)
    return keras.Model(inputs, keras.layers.Dense(classes)(keras.layers.Flatten()(inputs)), name="tiny")


def test_check_data_fits():
    splits = load_dataset("digits", batch_size=256)
    check_data_fits(_classifier((8, 8, 1), 10), splits)
    with pytest.raises(IncompatibleModelError, match=r"32x32x3.*8x8x1.*build_nin\(num_classes=10, "
                                                     r"input_shape=\(8, 8, 1\)\)"):
        check_data_fits(_classifier((32, 32, 3), 10), splits)
    with pytest.raises(IncompatibleModelError, match=r"predicts 5 classes.*10 classes.*num_classes=10"):
        check_data_fits(_classifier((8, 8, 1), 5), splits)
    assert issubclass(IncompatibleModelError, ValueError)
    # datasets and arrays work too
    check_data_fits(_classifier((8, 8, 1), 10), splits.test)
    with pytest.raises(IncompatibleModelError, match="labels run from 0 to 9"):
        check_data_fits(_classifier((8, 8, 1), 5), as_arrays(splits))


# ------------------------------------------------------------------------------------------------ throughput


def test_measure_pipeline_throughput():
    splits = load_dataset("synthetic", size=64, batch_size=16, augment=True)
    rate = measure_pipeline_throughput(splits.train, steps=10)  # more steps than batches: repeats
    assert rate > 0 and np.isfinite(rate)
    assert measure_pipeline_throughput(splits, steps=2) > 0
    with pytest.raises(ValueError):
        measure_pipeline_throughput(splits.train, steps=0)


# ------------------------------------------------------------------------------------------------------ CLI


def test_cli_common_imports_without_tensorflow():
    code = "import sys, nin_keras.cli.options; assert 'tensorflow' not in sys.modules, 'tensorflow imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_data_arguments_and_loading():
    from nin_keras.cli.options import add_data_arguments, load_data_from_args

    parser = argparse.ArgumentParser()
    add_data_arguments(parser)
    args = parser.parse_args(["--dataset", "synthetic", "--batch-size", "8", "--seed", "3"])
    assert (args.data_dir, args.on_bad_image, args.batch_size, args.seed) == (None, "fail", 8, 3)
    splits = load_data_from_args(args, validation_split=0.0)
    assert splits.input_shape == (32, 32, 3) and splits.num_classes == 10 and splits.info["batch_size"] == 8
    args.variant = "mnist"
    assert load_data_from_args(args).input_shape == (28, 28, 1)
    model = _classifier((9, 9, 2), 3)
    splits = load_data_from_args(args, model=model, augment=True)
    assert splits.input_shape == (9, 9, 2) and splits.num_classes == 3 and splits.info["augmentation"]
    check_data_fits(model, splits)
    with pytest.raises(SystemExit) as exit_info, warnings.catch_warnings():
        parser.parse_args(["--dataset", "digits", "--batch-size", "0"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        parser.parse_args(["--dataset", "digits", "--on-bad-image", "maybe"])
    optional = argparse.ArgumentParser()
    add_data_arguments(optional, required=False)
    assert optional.parse_args([]).dataset is None


def test_cli_folder_skip_flag(tmp_path):
    from nin_keras.cli.options import add_data_arguments, load_data_from_args

    root = _image_folder(tmp_path / "pets", n_per_class=2)
    (root / "cat" / "bad.png").write_bytes(b"junk")
    parser = argparse.ArgumentParser()
    add_data_arguments(parser)
    with pytest.raises(InvalidInputError, match="bad.png"):
        load_data_from_args(parser.parse_args(["--dataset", f"folder:{root}"]))
    with pytest.warns(UserWarning, match="bad.png"):
        splits = load_data_from_args(parser.parse_args(["--dataset", f"folder:{root}", "--on-bad-image", "skip"]))
    assert splits.info["skipped_files"] == [str(root / "cat" / "bad.png")]


def test_info_is_json_friendly(tmp_path):
    import json

    root = _image_folder(tmp_path / "pets", n_per_class=2)
    for splits in (load_dataset("digits", augment=True),
                   load_dataset("synthetic", size=20, input_shape=(4, 4, 1), preprocessing="gcn_zca"),
                   load_dataset(f"folder:{root}")):
        assert json.loads(json.dumps(splits.info))["sizes"] == splits.info["sizes"]
