"""Issue 24, the data-file readers: no crafted IDX, CIFAR or npz file crashes the process, balloons its memory or
escapes as anything but the package's own error; real-format files still load bit for bit.

Cases that crashed the process (segfault) or ballooned memory before the fix run in a child process under a
memory limit, so a regression fails the test instead of killing the pytest worker or the machine.
"""

import gzip
import json
import os
import pickle
import resource
import subprocess
import sys
import zlib

import numpy as np
import pytest

from helpers import REPO_ROOT, load_tool, run_cli
from nin_keras.data import formats
from nin_keras.errors import InvalidInputError

CHILD_MEMORY_LIMIT = 1 << 30  # RLIMIT_AS of the children below: the fixed readers need a small part of it


@pytest.fixture(scope="module")
def fuzz_tool():
    monkeypatch = pytest.MonkeyPatch()
    yield load_tool("fuzz_readers", monkeypatch)
    monkeypatch.undo()


def _child_env():
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY_LIMIT, CHILD_MEMORY_LIMIT))


def _read_in_child(call: str, path) -> dict:
    """Runs `formats.<call>` on `path` in a numpy-only child under CHILD_MEMORY_LIMIT: returns its exit code and the
    exception it raised ({"error": class name, "package": whether a NinKerasError, "message": ...})."""
    code = (
        "import json, sys\n"
        "from nin_keras.data import formats\n"
        "from nin_keras.errors import NinKerasError\n"
        "try:\n"
        f"    formats.{call}\n"
        "    print(json.dumps({'error': None}))\n"
        "except BaseException as error:\n"
        "    print(json.dumps({'error': type(error).__name__, 'package': isinstance(error, NinKerasError),\n"
        "                      'message': str(error)[:500]}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120,
                            env=_child_env(), preexec_fn=_limit_memory, cwd=REPO_ROOT)
    assert result.returncode == 0, f"the reader crashed the process (exit {result.returncode}): {result.stderr[-2000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def _write_cifar10(fuzz_tool, folder, *, batch=None, meta=None, n=4):
    """A CIFAR-10 folder in the original (Python 2 cPickle) format; `batch` / `meta` replace data_batch_1's dict
    and batches.meta's dict. Returns the reference arrays numpy's own unpickler reads from the files."""
    folder.mkdir(parents=True, exist_ok=True)
    reference = {}
    for seed, name in enumerate(["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                                 "test_batch"]):
        content = fuzz_tool.cifar_batch(n, seed=seed)
        if name == "data_batch_1" and batch is not None:
            content = batch
        (folder / name).write_bytes(fuzz_tool.py2_pickle(content))
        if name != "data_batch_1" or batch is None:
            reference[name] = pickle.loads((folder / name).read_bytes(), encoding="bytes")
    (folder / "batches.meta").write_bytes(fuzz_tool.py2_pickle(fuzz_tool.cifar_meta() if meta is None else meta))
    return reference


# ---------------------------------------------------------------------------------------- the segfault (issue)


@pytest.mark.parametrize("written_by", ["python2", "python3"])
def test_issue_24_crafted_dtype_state_is_a_clean_error_not_a_segfault(fuzz_tool, tmp_path, written_by):
    """The issue's file: one byte of data_batch_1 changed (the dtype state's first NONE turned into BINPUT) made
    numpy's dtype.__setstate__ segfault. It must now be InvalidInputError naming the file, in a child process."""
    base = fuzz_tool.base_files("cifar_batch")[0 if written_by == "python2" else 1]
    offset = fuzz_tool.dtype_state_none_offset(base)
    assert base[offset:offset + 1] == pickle.NONE
    path = tmp_path / "data_batch_1"
    path.write_bytes(fuzz_tool.issue_24_mutant(base))
    assert sum(a != b for a, b in zip(path.read_bytes(), base)) == 1 and len(path.read_bytes()) == len(base)
    outcome = _read_in_child("parse_cifar_batch(open(sys.argv[1], 'rb').read(), source=sys.argv[1], "
                             "label_key='labels')", path)
    assert outcome["package"] and outcome["error"] == "InvalidInputError", outcome
    assert "data_batch_1" in outcome["message"] and "dtype" in outcome["message"]


def test_the_unpickler_hands_numpy_nothing(fuzz_tool):
    """Every name the CIFAR unpickler allows resolves to a checking stand-in, never to numpy's own classes or
    functions, whose pickle protocol (`__setstate__`) trusts its input."""
    unpickler = formats.SafeUnpickler(__import__("io").BytesIO(b""), source="x")
    for module, name in formats.SafeUnpickler.ALLOWED:
        resolved = unpickler.find_class(module, name)
        assert resolved is not np.dtype and resolved is not np.ndarray
        assert not type(resolved).__module__.startswith("numpy"), (module, name)
    # BUILD on a stand-in that the format never BUILDs is refused, not applied
    with pytest.raises(InvalidInputError, match="never"):
        formats.SafeUnpickler.ALLOWED[("numpy", "ndarray")].__setstate__({"x": 1})


def test_real_format_cifar_files_load_bit_identical(fuzz_tool, tmp_path):
    """The original files (Python 2 cPickle, protocol 2) and Python 3 written ones give exactly the arrays numpy's
    own unpickler gives."""
    reference = _write_cifar10(fuzz_tool, tmp_path / "cifar-10-batches-py", n=6)
    raw = formats.read_cifar(tmp_path / "cifar-10-batches-py", formats.CIFAR10)
    images = np.concatenate([reference[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    np.testing.assert_array_equal(raw.x_train, images.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    assert raw.x_train.dtype == np.uint8 and raw.x_train.shape == (30, 32, 32, 3)
    np.testing.assert_array_equal(raw.y_train, sum((reference[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), []))
    np.testing.assert_array_equal(raw.x_test, reference["test_batch"][b"data"].reshape(-1, 3, 32, 32)
                                  .transpose(0, 2, 3, 1))
    assert raw.class_names == fuzz_tool.cifar_meta()["label_names"]
    python3 = fuzz_tool.base_files("cifar_batch")[1]
    images, labels = formats.parse_cifar_batch(python3, source="b", label_key="labels")
    expected = pickle.loads(python3, encoding="bytes")
    np.testing.assert_array_equal(images, expected[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(labels, expected[b"labels"])


# -------------------------------------------------------------------------------------------- damaged content


def _batch_with(fuzz_tool, **changes):
    batch = fuzz_tool.cifar_batch(4)
    batch.update(changes)
    return batch


@pytest.mark.parametrize("damage, fragment", [
    ("label_names_int", "label_names"),
    ("int_key", "expected keys 'data' and 'labels'"),
    ("label_2_64", "labels"),
    ("bytes_labels", "labels"),
    ("nested_labels", "labels"),
])
def test_damaged_cifar_content_is_the_package_error(fuzz_tool, tmp_path, damage, fragment):
    """Each raised a builtin error before (TypeError, TypeError while building the message, OverflowError,
    UFuncTypeError); now InvalidInputError naming the file, the problem and the fix."""
    folder = tmp_path / "cifar-10-batches-py"
    if damage == "label_names_int":
        _write_cifar10(fuzz_tool, folder, meta={"num_cases_per_batch": 4, "label_names": 7, "num_vis": 3072})
    elif damage == "int_key":
        batch = fuzz_tool.cifar_batch(4)
        batch[7] = batch.pop("labels")
        _write_cifar10(fuzz_tool, folder, batch=batch)
    elif damage == "label_2_64":
        _write_cifar10(fuzz_tool, folder, batch=_batch_with(fuzz_tool, labels=[1, 2**64, 3, 4]))
    elif damage == "bytes_labels":
        _write_cifar10(fuzz_tool, folder, batch=_batch_with(fuzz_tool, labels=[b"1", b"2", b"3", b"4"]))
    else:
        _write_cifar10(fuzz_tool, folder, batch=_batch_with(fuzz_tool, labels=[[1], [2], [3], [4]]))
    with pytest.raises(InvalidInputError, match=fragment) as error:
        formats.read_cifar(folder, formats.CIFAR10)
    message = str(error.value)
    assert str(folder) in message and "original files" in message, message


def test_cli_train_on_damaged_cifar_meta_is_one_line_exit_2(fuzz_tool, tmp_path, capfd, monkeypatch):
    _write_cifar10(fuzz_tool, tmp_path / "data" / "cifar-10-batches-py",
                   meta={"num_cases_per_batch": 4, "label_names": 7, "num_vis": 3072})
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["train", "--dataset", "cifar10", "--data-dir", tmp_path / "data", "--epochs", "1"], capfd)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert "batches.meta" in lines[0] and "label_names" in lines[0]


# ---------------------------------------------------------------------------------- sizes before allocating


def test_idx_gzip_announcing_3e9_labels_is_refused_from_its_header(tmp_path):
    """A 2.9 MB gzip of 2.9 GB of zeros whose header announces 3e9 labels: it reached 6.6 GB before its error.
    Now refused from the header (deflate cannot inflate 1032-fold), in a child under a 1 GiB memory limit."""
    block = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = gzip.compress(bytes(64 << 20), compresslevel=9, mtime=0)  # gzip members concatenate
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    with open(path, "wb") as file:
        file.write(block.compress((0x801).to_bytes(4, "big") + (3_000_000_000).to_bytes(4, "big")) + block.flush())
        for _ in range(44):
            file.write(zeros)
    assert 2_500_000 < path.stat().st_size < 3_000_000
    outcome = _read_in_child("read_idx(sys.argv[1])", path)
    assert outcome["package"] and outcome["error"] == "InvalidInputError", outcome
    assert "3000000000" in outcome["message"] and "train-labels-idx1-ubyte.gz" in outcome["message"]


def test_idx_counts_are_compared_across_files_before_reading_data(tmp_path, fuzz_tool):
    rng = np.random.default_rng(0)
    files = {}
    for key, stem in formats.IDX_FILES.items():
        array = rng.integers(0, 256, (5, 28, 28)) if key.startswith("x") else rng.integers(0, 10, 5)
        files[key] = tmp_path / stem
        files[key].write_bytes(fuzz_tool.idx_bytes(array))
    labels = bytearray(files["y_train"].read_bytes())
    labels[4:8] = (3_000_000_000).to_bytes(4, "big")
    files["y_train"].write_bytes(bytes(labels))
    with pytest.raises(InvalidInputError, match="3000000000 labels|more than a"):
        formats.read_idx_dataset(files)


def test_cifar_pickle_of_shared_references_does_not_balloon(fuzz_tool, tmp_path):
    """A small pickle whose labels are lists of lists sharing one list (memo GETs): logically 10**9 labels.
    It ballooned to gigabytes; now refused from the first label, in a child under a 1 GiB memory limit."""
    inner = [0] * 1000
    middle = [inner] * 1000
    batch = _batch_with(fuzz_tool, labels=[middle] * 1000)
    path = tmp_path / "data_batch_1"
    path.write_bytes(fuzz_tool.py2_pickle(batch))
    assert path.stat().st_size < 50_000
    outcome = _read_in_child("parse_cifar_batch(open(sys.argv[1], 'rb').read(), source=sys.argv[1], "
                             "label_key='labels')", path)
    assert outcome["package"] and outcome["error"] == "InvalidInputError", outcome


def test_cifar_pickle_announcing_a_huge_bytes_length_is_refused_before_allocating(fuzz_tool):
    """BINBYTES8 with a length of 2**40: the C unpickler allocates an announced length before reading it."""
    data = pickle.PROTO + b"\x04" + pickle.BINBYTES8 + (2**40).to_bytes(8, "little") + b"abc" + pickle.STOP
    with pytest.raises(InvalidInputError, match="cifar.pkl") as error:
        formats.parse_cifar_batch(data, source="cifar.pkl", label_key="labels")
    assert "MemoryError" not in str(error.value) and "remain" in str(error.value)


def test_cifar_array_announcing_more_bytes_than_it_holds(fuzz_tool):
    data = bytearray(fuzz_tool.base_files("cifar_batch")[0])
    at = data.index(b"M\x00\x0c")  # BININT2 3072: the array's second dimension
    data[at + 1:at + 3] = (60000).to_bytes(2, "little")
    with pytest.raises(InvalidInputError, match=r"shape \(4, 60000\)"):
        formats.parse_cifar_batch(bytes(data), source="b", label_key="labels")


@pytest.mark.parametrize("header, fragment", [
    ("{'descr': '|u1', 'fortran_order': False, 'shape': (3, 28, 28", "damaged .npy header"),  # tokenize.TokenError
    ("{'descr': '|u1', 'fortran_order': False, 'shape': (1000000000000000000000000000000,), }", "announces shape"),
    ("{'descr': '|u1', 'fortran_order': False, 'shape': (3000000000, 28, 28), }", "announces shape"),
    ("{'descr': '|O', 'fortran_order': False, 'shape': (3, 28, 28), }", "object"),
])
def test_crafted_npy_headers_in_mnist_npz(fuzz_tool, tmp_path, header, fragment):
    """A damaged header raised tokenize.TokenError and a shape of 1e30 OverflowError; now InvalidInputError,
    checked against the member's real size before anything is allocated."""
    path = tmp_path / "mnist.npz"
    path.write_bytes(fuzz_tool.npz_bytes(fuzz_tool.mnist_arrays(), {"x_train": header}))
    with pytest.raises(InvalidInputError, match=fragment) as error:
        formats.read_mnist_npz(path)
    assert "mnist.npz:x_train" in str(error.value)


def test_valid_mnist_npz_still_loads_exactly(fuzz_tool, tmp_path):
    arrays = fuzz_tool.mnist_arrays()
    np.savez_compressed(tmp_path / "c.npz", **arrays)
    np.savez(tmp_path / "s.npz", **arrays)
    for name in ("c.npz", "s.npz"):
        x_train, y_train, x_test, y_test = formats.read_mnist_npz(tmp_path / name)
        np.testing.assert_array_equal(x_train[..., 0], arrays["x_train"])
        np.testing.assert_array_equal(y_test, arrays["y_test"])


# --------------------------------------------------------------------------------------------------- fuzzing


def test_fuzzed_readers_raise_only_package_errors_in_one_child(fuzz_tool):
    """A few hundred seeded mutants per reader (byte flips, truncation, insertion, header counts, pickle opcodes,
    .npy headers), all read in ONE numpy-only child under a 2 GiB address-space limit: any exception outside
    NinKerasError, a crash or a peak above 512 MiB fails. Thousands: tools/fuzz_readers.py, docs/benchmarks."""
    results = fuzz_tool.fuzz(count=300, seed=24, one_child=True)
    assert set(results) == set(fuzz_tool.READERS)
    for reader, counts in results.items():
        assert counts["tried"] == 300, (reader, counts)
        assert counts["failed"] == 0 and counts["crashed"] == 0 and not counts["problems"], (reader, counts)
        assert counts["rejected"] > 150, (reader, counts)  # the mutants really are damaged, mostly
    assert results["cifar_batch"]["case_0"] == "rejected (InvalidInputError)"  # issue 24's file


def test_fuzz_child_catches_a_crash_as_a_failure(fuzz_tool, monkeypatch, tmp_path):
    """The harness itself: a child that dies mid-case is counted as a crash of that case, and the run goes on."""
    real_run = subprocess.run
    calls = []

    def crashing_first_child(command, **kwargs):
        calls.append(command)
        if len(calls) == 1:  # the first child dies on its third case
            lines = [json.dumps({"reader": "idx_raw", "index": 0, "start": True}),
                     json.dumps({"reader": "idx_raw", "index": 0, "outcome": "rejected", "detail": "",
                                 "mutation": "m", "peak": 1}),
                     json.dumps({"reader": "idx_raw", "index": 1, "start": True})]
            return subprocess.CompletedProcess(command, -11, "\n".join(lines), "")
        return real_run(command, **kwargs)

    monkeypatch.setattr(fuzz_tool.subprocess, "run", crashing_first_child)
    results = fuzz_tool.fuzz(["idx_raw"], count=4)
    assert results["idx_raw"]["crashed"] == 1 and results["idx_raw"]["tried"] == 4
    assert "case 1" in results["idx_raw"]["problems"][0] and "--start" in calls[1]
    assert calls[1][calls[1].index("--start") + 1] == "2"

