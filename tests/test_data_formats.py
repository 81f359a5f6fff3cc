"""The original file formats read from data_dir: IDX, mnist.npz, CIFAR pickles (folder and tar.gz), and
what happens with hostile, truncated, random-byte or missing files."""

import gzip
import pickle
import struct
import sys
import tarfile

import numpy as np
import pytest

import nin_keras
from helpers import PickleRunsCommand, PickleRunsEval
from nin_keras.data import formats
from nin_keras.errors import InvalidInputError, UnsafeFileError

RNG = np.random.default_rng(1234)


# ------------------------------------------------------------------------------------ writers (real formats)


def _idx_bytes(array: np.ndarray) -> bytes:
    array = np.asarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.tobytes()


def write_idx_dir(folder, *, n_train=12, n_test=6, shape=(28, 28), max_label=10, gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "x_train": RNG.integers(0, 256, (n_train, *shape), dtype=np.uint8),
        "y_train": RNG.integers(0, max_label, n_train).astype(np.uint8),
        "x_test": RNG.integers(0, 256, (n_test, *shape), dtype=np.uint8),
        "y_test": RNG.integers(0, max_label, n_test).astype(np.uint8),
    }
    for key, stem in formats.IDX_FILES.items():
        data = _idx_bytes(arrays[key])
        if gz:
            with gzip.open(folder / f"{stem}.gz", "wb") as file:
                file.write(data)
        else:
            (folder / stem).write_bytes(data)
    return arrays


def write_mnist_npz(path, *, n_train=12, n_test=6):
    arrays = {
        "x_train": RNG.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": RNG.integers(0, 10, n_train).astype(np.uint8),
        "x_test": RNG.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": RNG.integers(0, 10, n_test).astype(np.uint8),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return arrays


def _cifar_batch(n, label_key, num_classes, label_values=None):
    labels = list(label_values) if label_values is not None else [int(v) for v in RNG.integers(0, num_classes, n)]
    return {
        b"batch_label": b"testing batch 1 of 1",
        label_key.encode(): labels,
        b"data": RNG.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


def _dump(obj, path):
    with open(path, "wb") as file:
        pickle.dump(obj, file, protocol=2)


def write_cifar10_dir(folder, *, per_batch=4, n_test=5, bad_labels=False):
    folder.mkdir(parents=True, exist_ok=True)
    batches = []
    for i in range(1, 6):
        labels = [10, 3, 1, 0][:per_batch] if bad_labels and i == 2 else None
        batch = _cifar_batch(per_batch, "labels", 10, labels)
        batches.append(batch)
        _dump(batch, folder / f"data_batch_{i}")
    test = _cifar_batch(n_test, "labels", 10)
    _dump(test, folder / "test_batch")
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _dump({b"num_cases_per_batch": per_batch, b"label_names": [n.encode() for n in names], b"num_vis": 3072},
          folder / "batches.meta")
    return batches, test


def write_cifar100_dir(folder, *, n_train=8, n_test=4):
    folder.mkdir(parents=True, exist_ok=True)
    train = _cifar_batch(n_train, "fine_labels", 100)
    train[b"coarse_labels"] = [0] * n_train
    test = _cifar_batch(n_test, "fine_labels", 100)
    test[b"coarse_labels"] = [0] * n_test
    _dump(train, folder / "train")
    _dump(test, folder / "test")
    _dump({b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
           b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]}, folder / "meta")
    return train, test


def make_tar_gz(source_dir, archive):
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source_dir, arcname=source_dir.name)
    return archive


def _images_of(batch):
    return batch[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _load(name, data_dir, **kwargs):
    kwargs.setdefault("validation_split", 0.0)
    kwargs.setdefault("batch_size", 4)
    return nin_keras.load_dataset(name, data_dir=data_dir, **kwargs)


# ------------------------------------------------------------------------------------------------- IDX/npz


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_load_for_fashion_mnist(tmp_path, gz):
    arrays = write_idx_dir(tmp_path, gz=gz)
    splits = _load("fashion_mnist", tmp_path)
    assert splits.input_shape == (28, 28, 1) and splits.num_classes == 10
    assert splits.class_names[0] == "T-shirt/top"
    x, y = nin_keras.data.as_arrays(splits, split="test")
    assert x.dtype == np.uint8 and y.dtype == np.int32
    np.testing.assert_array_equal(x[..., 0], arrays["x_test"])
    np.testing.assert_array_equal(y, arrays["y_test"])


def test_idx_files_load_for_mnist_and_keras_cache_layout(tmp_path):
    write_idx_dir(tmp_path / "fashion-mnist")  # Keras' cache: ~/.keras/datasets/fashion-mnist/*.gz
    assert _load("fashion_mnist", tmp_path).info["sizes"]["train"] == 12
    write_idx_dir(tmp_path / "idx")
    assert _load("mnist", tmp_path / "idx").info["sizes"]["test"] == 6


def test_mnist_npz(tmp_path):
    arrays = write_mnist_npz(tmp_path / "mnist.npz")
    splits = _load("mnist", tmp_path)
    x, y = nin_keras.data.as_arrays(splits, split="test")
    np.testing.assert_array_equal(x[..., 0], arrays["x_test"])
    np.testing.assert_array_equal(y, arrays["y_test"])
    assert splits.info["source"] == [str(tmp_path / "mnist.npz")]


def test_idx_labels_out_of_range_are_refused(tmp_path):
    write_idx_dir(tmp_path, max_label=13)  # labels 0..12 for a 10-class dataset
    with pytest.raises(InvalidInputError, match=r"0\.\.9"):
        _load("mnist", tmp_path)


def test_idx_bad_magic_and_truncation(tmp_path):
    write_idx_dir(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])  # truncated data
    with pytest.raises(InvalidInputError, match="train-images-idx3-ubyte.*truncated"):
        _load("mnist", tmp_path)
    path.write_bytes(b"\x12\x34" + data[2:])
    with pytest.raises(InvalidInputError, match="train-images-idx3-ubyte.*magic"):
        _load("mnist", tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "random"])
def test_damaged_gz_idx_names_the_file(tmp_path, damage):
    write_idx_dir(tmp_path)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x1f\x8b" + RNG.bytes(300))
    with pytest.raises(InvalidInputError, match="t10k-labels-idx1-ubyte.gz"):
        _load("fashion_mnist", tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "random"])
def test_damaged_npz_names_the_file(tmp_path, damage):
    write_mnist_npz(tmp_path / "mnist.npz")
    path = tmp_path / "mnist.npz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else RNG.bytes(2000))
    with pytest.raises(InvalidInputError, match="mnist.npz"):
        _load("mnist", tmp_path)


def test_npz_with_wrong_keys(tmp_path):
    np.savez(tmp_path / "mnist.npz", images=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(InvalidInputError, match="x_train"):
        _load("mnist", tmp_path)


def test_npz_with_pickled_objects_is_not_loaded(tmp_path):
    np.savez(tmp_path / "mnist.npz", x_train=np.array([object()], dtype=object), y_train=np.zeros(1),
             x_test=np.zeros(1), y_test=np.zeros(1))
    with pytest.raises(InvalidInputError, match="mnist.npz"):
        _load("mnist", tmp_path)


# --------------------------------------------------------------------------------------------------- CIFAR


def test_cifar10_folder(tmp_path):
    batches, test = write_cifar10_dir(tmp_path / "cifar-10-batches-py")
    splits = _load("cifar10", tmp_path)
    assert splits.input_shape == (32, 32, 3) and splits.num_classes == 10
    assert splits.class_names[:2] == ["airplane", "automobile"]
    assert splits.info["sizes"] == {"train": 20, "validation": 0, "test": 5}
    x, y = nin_keras.data.as_arrays(splits, split="test")
    np.testing.assert_array_equal(x, _images_of(test))
    np.testing.assert_array_equal(y, test[b"labels"])
    # the folder itself works as data_dir too
    assert _load("cifar10", tmp_path / "cifar-10-batches-py").info["sizes"]["train"] == 20


def test_cifar10_tar_gz_and_keras_cache_layout(tmp_path):
    folder = tmp_path / "src" / "cifar-10-batches-py"
    batches, test = write_cifar10_dir(folder)
    (tmp_path / "archive").mkdir()
    make_tar_gz(folder, tmp_path / "archive" / "cifar-10-python.tar.gz")
    splits = _load("cifar10", tmp_path / "archive")
    x, y = nin_keras.data.as_arrays(splits, split="test")
    np.testing.assert_array_equal(x, _images_of(test))
    assert not (tmp_path / "archive" / "cifar-10-batches-py").exists()  # read in place, never extracted
    # Keras 3 caches CIFAR-10 as ~/.keras/datasets/cifar-10-batches-py-target/cifar-10-batches-py
    cache = tmp_path / "keras_cache"
    write_cifar10_dir(cache / "cifar-10-batches-py-target" / "cifar-10-batches-py")
    assert _load("cifar10", cache).info["sizes"]["train"] == 20


def test_cifar100_folder_and_tar(tmp_path):
    train, test = write_cifar100_dir(tmp_path / "cifar-100-python")
    splits = _load("cifar100", tmp_path)
    assert splits.num_classes == 100 and splits.class_names[:2] == ["fine0", "fine1"]
    _, y = nin_keras.data.as_arrays(splits, split="test")
    np.testing.assert_array_equal(y, test[b"fine_labels"])
    (tmp_path / "t").mkdir()
    make_tar_gz(tmp_path / "cifar-100-python", tmp_path / "t" / "cifar-100-python.tar.gz")
    assert _load("cifar100", tmp_path / "t").info["sizes"]["train"] == 8


def test_cifar_labels_out_of_range(tmp_path):
    write_cifar10_dir(tmp_path, bad_labels=True)
    with pytest.raises(InvalidInputError, match=r"outside.*10|0\.\.9"):
        _load("cifar10", tmp_path)


@pytest.mark.parametrize("payload", [PickleRunsCommand, PickleRunsEval])
@pytest.mark.parametrize("member", ["data_batch_3", "batches.meta"])
def test_hostile_cifar_pickle_is_refused_and_never_runs(tmp_path, payload, member):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10_dir(folder)
    marker = tmp_path / "PWNED"
    batch = _cifar_batch(4, "labels", 10)
    batch[b"labels"] = payload(marker)  # code hidden inside an otherwise ordinary batch
    _dump(batch, folder / member)
    with pytest.raises(UnsafeFileError, match=member):
        _load("cifar10", tmp_path)
    assert not marker.exists()
    # the same from inside the tar.gz
    (tmp_path / "t").mkdir()
    make_tar_gz(folder, tmp_path / "t" / "cifar-10-python.tar.gz")
    with pytest.raises(UnsafeFileError, match="cifar-10-python.tar.gz"):
        _load("cifar10", tmp_path / "t")
    assert not marker.exists()


def test_safe_unpickler_refuses_globals_directly():
    marker_code = pickle.dumps(print, protocol=2)
    with pytest.raises(UnsafeFileError, match=r"builtin\w*\.print"):
        formats.safe_unpickle(marker_code, source="x.pkl")
    # the numpy/bytes types the real files contain still load
    data = {b"data": np.arange(6, dtype=np.uint8), b"name": b"abc", b"labels": [1, 2]}
    out = formats.safe_unpickle(pickle.dumps(data, protocol=2), source="ok.pkl")
    np.testing.assert_array_equal(out[b"data"], data[b"data"])
    assert out[b"name"] == b"abc" and out[b"labels"] == [1, 2]


@pytest.mark.parametrize("damage", ["truncate", "random"])
def test_damaged_cifar_pickle_names_the_file(tmp_path, damage):
    write_cifar10_dir(tmp_path)
    path = tmp_path / "data_batch_4"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else RNG.bytes(4000))
    with pytest.raises(InvalidInputError, match="data_batch_4") as error:
        _load("cifar10", tmp_path)
    assert not isinstance(error.value, UnsafeFileError) or damage == "random"


@pytest.mark.parametrize("damage", ["truncate", "random"])
def test_damaged_cifar_tar_names_the_file(tmp_path, damage):
    folder = tmp_path / "src" / "cifar-10-batches-py"
    write_cifar10_dir(folder, per_batch=40)
    archive = make_tar_gz(folder, tmp_path / "cifar-10-python.tar.gz")
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2] if damage == "truncate" else RNG.bytes(5000))
    with pytest.raises(InvalidInputError, match="cifar-10-python.tar.gz"):
        _load("cifar10", tmp_path)


# ------------------------------------------------------------------------------------------ missing files


@pytest.mark.parametrize("name, expected", [
    ("mnist", "mnist.npz"),
    ("fashion_mnist", "train-images-idx3-ubyte.gz"),
    ("cifar10", "cifar-10-batches-py"),
    ("cifar100", "cifar-100-python.tar.gz"),
])
def test_data_dir_lacking_files_names_them(tmp_path, name, expected):
    (tmp_path / "unrelated.txt").write_text("hello")
    with pytest.raises(FileNotFoundError, match=expected):
        _load(name, tmp_path)


def test_missing_data_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _load("cifar10", tmp_path / "nope")


def test_cifar_folder_missing_a_batch_names_expected_files(tmp_path):
    write_cifar10_dir(tmp_path)
    (tmp_path / "data_batch_5").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_5"):
        _load("cifar10", tmp_path)


def test_svhn_without_tensorflow_datasets_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # makes `import tensorflow_datasets` fail
    with pytest.raises(ImportError, match=r"pip install nin-keras\[svhn\]") as error:
        nin_keras.load_dataset("svhn_cropped")
    assert isinstance(error.value, ValueError)  # the CLI turns it into one line + exit 2


def test_svhn_mat_files(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    x = RNG.integers(0, 256, (32, 32, 3, 5), dtype=np.uint8)
    for split, labels in (("train", [1, 10, 3, 4, 5]), ("test", [10, 2, 2, 9, 1])):
        scipy_io.savemat(tmp_path / f"{split}_32x32.mat", {"X": x, "y": np.array(labels)[:, None]})
    splits = _load("svhn_cropped", tmp_path)
    images, labels = nin_keras.data.as_arrays(splits, split="test")
    np.testing.assert_array_equal(labels, [0, 2, 2, 9, 1])  # label 10 is digit 0
    np.testing.assert_array_equal(images[0], x[..., 0])
    assert splits.info["augmentation"] is None


def test_safe_unpickler_limits_codecs_to_latin1():
    import codecs

    class _Rot13:
        def __reduce__(self):
            return (codecs.encode, ("abc", "rot13"))

    with pytest.raises(UnsafeFileError, match="evil.pkl.*rot13"):
        formats.safe_unpickle(pickle.dumps({b"x": _Rot13()}, protocol=2), source="evil.pkl")


def test_keras_download_path_shapes_and_network_errors(monkeypatch):
    import keras

    from nin_keras.data import sources

    fake = ((RNG.integers(0, 256, (6, 28, 28), dtype=np.uint8), np.arange(6, dtype=np.uint8)),
            (RNG.integers(0, 256, (3, 28, 28), dtype=np.uint8), np.array([1, 2, 3], np.uint8)))
    monkeypatch.setattr(keras.datasets.mnist, "load_data", lambda: fake)
    splits = nin_keras.load_dataset("mnist", validation_split=0.0, batch_size=4)
    x, y = nin_keras.data.as_arrays(splits, split="test")
    assert x.shape == (3, 28, 28, 1)
    np.testing.assert_array_equal(y, [1, 2, 3])
    assert splits.info["source"] == ["keras.datasets.mnist"]

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://...: None -- [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    with pytest.raises(InvalidInputError, match=r"Could not download.*data_dir.*mnist\.npz"):
        nin_keras.load_dataset("mnist")
    monkeypatch.setattr(sources.keras.utils, "get_file", offline)  # CIFAR: Keras downloads, we read
    with pytest.raises(InvalidInputError, match=r"Could not download.*data_dir.*cifar-10-batches-py"):
        nin_keras.load_dataset("cifar10")


def test_fashion_mnist_without_data_dir_reads_the_system_package_then_keras(monkeypatch, tmp_path):
    import keras

    from nin_keras.data import sources

    package_dir = tmp_path / "usr-share-datasets-fashion-mnist"
    monkeypatch.setitem(sources.SYSTEM_PACKAGES, "fashion_mnist", ("dataset-fashion-mnist", package_dir))

    def offline():
        raise Exception("URL fetch failure: [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data", offline)
    # Neither the package nor the network: the error names both ways to get the files.
    with pytest.raises(InvalidInputError, match=r"data_dir.*apt-get install dataset-fashion-mnist"):
        nin_keras.load_dataset("fashion_mnist")

    arrays = write_idx_dir(package_dir)  # the package's layout: the four original IDX .gz files
    splits = nin_keras.load_dataset("fashion_mnist", validation_split=0.0)
    assert splits.info["system_package"] == "dataset-fashion-mnist"
    assert splits.info["source"][0].startswith(str(package_dir))
    _, y = nin_keras.data.as_arrays(splits, split="test")
    np.testing.assert_array_equal(y, arrays["y_test"])
    assert splits.info["horizontal_flip_ok"] is True  # clothes may be mirrored (recipes read this)


def test_cifar_download_is_read_with_the_checked_reader(tmp_path, monkeypatch):
    """Without data_dir, Keras only downloads: its load_data would pickle.load the cached batches unchecked, so
    a tampered cache is read (and refused) by our reader, not Keras'."""
    from nin_keras.data import sources

    cache = tmp_path / "cifar-10-batches-py-target"
    batches, _ = write_cifar10_dir(cache / "cifar-10-batches-py")
    asked = {}

    def fake_get_file(fname, origin, extract):
        asked.update(fname=fname, origin=origin, extract=extract)
        return str(cache)

    monkeypatch.setattr(sources.keras.utils, "get_file", fake_get_file)
    splits = nin_keras.load_dataset("cifar10", batch_size=8)
    assert asked == {"fname": "cifar-10-batches-py-target", "extract": True,
                     "origin": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"}
    assert splits.info["sizes"]["train"] + splits.info["sizes"]["validation"] == 20
    _dump({b"num_cases_per_batch": 4, b"label_names": 7, b"num_vis": 3072}, cache / "cifar-10-batches-py" /
          "batches.meta")
    with pytest.raises(InvalidInputError, match="label_names"):
        nin_keras.load_dataset("cifar10", batch_size=8)
