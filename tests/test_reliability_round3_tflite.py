"""Crafted .tflite files: no file, however crafted, may crash the process that loads it.

LiteRT trusts a file's indices and sizes: a CONV_2D whose filter is tensor -1 kills `nin-keras evaluate` with
SIGSEGV. Files are now checked in Python first (`tflite_info.check_structure`), and a file this process did not
write is loaded, allocated and run once in a child process (`tflite_guard.check_tflite`), so a crash there
becomes one clear error. Damaged metadata is an error of its own and no longer hides a runnable model. A few
hundred seeded mutants (tools/fuzz_tflite.py's) go through the checker here; the tool runs thousands.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import helpers

SCRIPT = Path(sys.executable).with_name("nin-keras")
CLI = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "nin_keras"]
TARGETS = ("tflite_float32", "tflite_float16", "tflite_dynamic", "tflite_int8", "edgetpu")
CRAFTED = "the file is damaged or crafted"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A small digits-shaped NIN exported by nin-keras to every .tflite target (with metadata): the folder."""
    import keras

    import nin_keras
    from nin_keras.exporting import export_targets

    keras.utils.set_random_seed(0)
    model = nin_keras.build_nin(10, variant="mnist", input_shape=helpers.DIGITS_SHAPE, width_multiplier=0.25)
    images, labels = helpers.random_data(48, helpers.DIGITS_SHAPE)
    folder = tmp_path_factory.mktemp("exported") / "export"
    export_targets(model, folder, targets=",".join(TARGETS), data=(images, labels), progress=False,
                   class_names=[f"digit {i}" for i in range(10)])
    return folder


def _file(folder: Path, target: str) -> Path:
    from nin_keras.exporting.targets import TARGET_SPECS

    return folder / TARGET_SPECS[target].file


def _split_tail(data: bytes) -> tuple[bytes, bytes]:
    """(flatbuffer, the label archive packed after it)."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        start = min(info.header_offset for info in archive.infolist())
    return data[:start], data[start:]


def _repacked(data: bytes, change) -> bytes:
    """`data` with `change(model)` applied to its unpacked flatbuffer, packed again (label archive kept)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    flatbuffer, tail = _split_tail(data)
    model = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    change(model)
    builder = flatbuffers.Builder(len(flatbuffer) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()) + tail


def _operators(model, name: str) -> list:
    from nin_keras.exporting.tflite_info import op_name

    return [op for op in model.subgraphs[0].operators if op_name(model, op) == name]


def _conv_filter_at_minus_one(model) -> None:
    """The probe's crasher: the second CONV_2D reads its (required) filter from tensor -1."""
    conv = _operators(model, "CONV_2D")[1]
    conv.inputs = [int(conv.inputs[0]), -1, *map(int, conv.inputs[2:])]


def _max_pool_as_fake_quant(model) -> None:
    """MAX_POOL_2D's operator code turned into FAKE_QUANT on int8 tensors: every index stays in range, so the
    structural check passes, and LiteRT 2.3's FAKE_QUANT kernel corrupts the heap (SIGABRT)."""
    from ai_edge_litert import schema_py_generated as schema

    for code in model.operatorCodes:
        if max(code.builtinCode, code.deprecatedBuiltinCode) == schema.BuiltinOperator.MAX_POOL_2D:
            code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.FAKE_QUANT


def _foreign(data: bytes, tag: str) -> bytes:
    """`data` with a few bytes appended (LiteRT ignores them): bytes this process did not write, of their own hash."""
    return data + tag.encode()


def _child_runs(monkeypatch) -> list:
    """Counts the guard's child processes from now on."""
    from nin_keras.exporting import tflite_guard

    runs, real = [], tflite_guard._run_in_child
    monkeypatch.setattr(tflite_guard, "_run_in_child", lambda *args: runs.append(1) or real(*args))
    return runs


# ------------------------------------------------------------------------------------ real files pass


def test_every_tflite_the_exporter_writes_passes_the_structural_check_and_the_child_run(exported):
    from nin_keras.exporting.metadata import describe_metadata, read_metadata
    from nin_keras.exporting.tflite_guard import _run_in_child
    from nin_keras.exporting.tflite_info import read_model

    for target in TARGETS:
        data = _file(exported, target).read_bytes()
        read_model(data)  # no false positive on float32, float16, dynamic-range, int8 and Edge TPU files
        assert _run_in_child(data, None) is None, target  # what another process's guard concludes
        assert describe_metadata(read_metadata(data))["output"].startswith("probabilities: 10 class"), target


# ------------------------------------------------------------------------------------ crafted files


def test_a_required_input_at_minus_one_is_refused_before_litert_sees_it(exported, tmp_path):
    from nin_keras.errors import InvalidInputError
    from nin_keras.exporting import check_edgetpu, describe_tflite
    from nin_keras.verification import load_artifact

    crafted = tmp_path / "F.tflite"
    crafted.write_bytes(_repacked(_file(exported, "tflite_int8").read_bytes(), _conv_filter_at_minus_one))
    for reader in (load_artifact, describe_tflite, check_edgetpu):  # before: SIGSEGV in allocate_tensors
        with pytest.raises(InvalidInputError, match=CRAFTED) as error:
            reader(crafted)
        assert "F.tflite" in str(error.value) and "CONV_2D" in str(error.value)


def test_the_guard_turns_a_litert_crash_into_the_package_error(exported):
    from nin_keras.errors import InvalidInputError
    from nin_keras.exporting.tflite_guard import _run_in_child, check_tflite

    int8 = _file(exported, "tflite_int8").read_bytes()
    # The crasher, given to LiteRT without the structural check: the child dies, this process does not.
    verdict = _run_in_child(_repacked(int8, _conv_filter_at_minus_one), None)
    assert verdict is not None and verdict.startswith("LiteRT crashed on") and "signal 11" in verdict
    # A file the structural check cannot fault, which still crashes LiteRT: refused through the public guard.
    with pytest.raises(InvalidInputError, match=f"LiteRT crashed on G.tflite: {CRAFTED}"):
        check_tflite(_repacked(int8, _max_pool_as_fake_quant), "G.tflite")


def test_a_child_killed_by_a_signal_is_reported_with_the_signal(exported, monkeypatch):
    from nin_keras.errors import InvalidInputError
    from nin_keras.exporting import tflite_guard

    monkeypatch.setattr(tflite_guard, "_CHILD", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    data = _foreign(_file(exported, "tflite_float32").read_bytes(), "signal test")
    with pytest.raises(InvalidInputError, match=r"LiteRT crashed on H.tflite: .*signal 11, SIGSEGV"):
        tflite_guard.check_tflite(data, "H.tflite")


def test_files_from_elsewhere_run_in_a_child_once_and_own_converter_output_never(exported, tmp_path, monkeypatch):
    from nin_keras.verification import load_artifact

    runs = _child_runs(monkeypatch)
    own = _file(exported, "tflite_float32")
    load_artifact(own).predict(np.zeros((2, *helpers.DIGITS_SHAPE), np.uint8))
    assert runs == []  # written by this process' own converter (the export above)
    other = tmp_path / "other.tflite"
    other.write_bytes(_foreign(own.read_bytes(), "from elsewhere"))
    runner = load_artifact(other)
    load_artifact(other, num_threads=None).clone().predict(np.zeros((1, *helpers.DIGITS_SHAPE), np.uint8))
    assert len(runs) == 1 and runner.num_classes == 10  # checked once: the verdict is kept per sha256


def test_a_tflite_that_loads_but_fails_at_invoke_is_a_package_error(exported, monkeypatch):
    from nin_keras.errors import InvalidInputError
    from nin_keras.verification import load_artifact

    runner = load_artifact(_file(exported, "tflite_float32"))

    def failing_invoke():
        raise RuntimeError("Node number 3 (CONV_2D) failed to invoke.")

    monkeypatch.setattr(runner._interpreter, "invoke", failing_invoke)  # as LiteRT reports a kernel's failure
    with pytest.raises(InvalidInputError, match="LiteRT could not run .*model_float32.tflite.*CONV_2D"):
        runner.predict(np.zeros((1, *helpers.DIGITS_SHAPE), np.uint8))


def test_check_edgetpu_on_an_out_of_range_operator_code_is_a_package_error(exported, tmp_path):
    from nin_keras.errors import InvalidInputError
    from nin_keras.exporting import check_edgetpu

    def out_of_range(model):
        model.subgraphs[0].operators[0].opcodeIndex = len(model.operatorCodes) + 5

    crafted = tmp_path / "E.tflite"
    crafted.write_bytes(_repacked(_file(exported, "edgetpu").read_bytes(), out_of_range))
    with pytest.raises(InvalidInputError, match=f"operator 0 has operator code .*{CRAFTED}"):  # was IndexError
        check_edgetpu(crafted)


# ------------------------------------------------------------------------------------ damaged metadata


def _with_metadata_bytes(data: bytes, content: bytes) -> bytes:
    from nin_keras.exporting.metadata import METADATA_BUFFER_NAME

    def replace(model):
        entry = next(e for e in model.metadata if e.name in (METADATA_BUFFER_NAME, METADATA_BUFFER_NAME.encode()))
        model.buffers[entry.buffer].data = np.frombuffer(content, np.uint8)

    return _repacked(data, replace)


def test_damaged_metadata_raises_the_package_error_only(exported):
    from nin_keras.errors import InvalidInputError, NinKerasError
    from nin_keras.exporting.metadata import describe_metadata, metadata_flatbuffer, read_metadata

    data = _file(exported, "tflite_float32").read_bytes()
    good = bytearray(_metadata_of(data, metadata_flatbuffer))
    rng = np.random.default_rng(0)
    refused = 0
    for _ in range(60):  # seeded damage of the metadata flatbuffer (its identifier kept)
        damaged = bytearray(good)
        for position in rng.integers(8, len(damaged), int(rng.integers(1, 6))):
            damaged[position] = int(rng.integers(256))
        if rng.integers(4) == 0:
            damaged[:4] = int(rng.integers(2**31)).to_bytes(4, "little")  # the root table anywhere
        try:
            describe_metadata(read_metadata(_with_metadata_bytes(data, bytes(damaged)), label="M.tflite"))
        except NinKerasError as error:  # before: struct.error, IndexError, UnicodeDecodeError, TypeError...
            assert isinstance(error, InvalidInputError) and "metadata of M.tflite is damaged" in str(error)
            refused += 1
    assert refused >= 10


def _metadata_of(data: bytes, metadata_flatbuffer) -> bytes:
    from ai_edge_litert import schema_py_generated as schema

    from nin_keras.exporting.metadata import METADATA_BUFFER_NAME

    model = schema.ModelT.InitFromPackedBuf(bytearray(_split_tail(data)[0]), 0)
    entry = next(e for e in model.metadata if e.name in (METADATA_BUFFER_NAME, METADATA_BUFFER_NAME.encode()))
    return np.asarray(model.buffers[entry.buffer].data, np.uint8).tobytes()


def test_a_runnable_file_with_damaged_metadata_is_evaluated_and_its_metadata_reported_damaged(exported, tmp_path):
    from nin_keras.verification import verify_export

    folder = tmp_path / "export"
    folder.mkdir()
    data = _file(exported, "tflite_float32").read_bytes()
    (folder / "model_float32.tflite").write_bytes(_with_metadata_bytes(data, b"\xff\xff\xff\x7fM001" + bytes(40)))
    images, labels = helpers.random_data(16, helpers.DIGITS_SHAPE)
    rows = verify_export(folder, (images, labels), runs=0, progress=False)
    assert rows[0].error is None and rows[0].accuracy is not None  # before: "could not be evaluated"
    assert "damaged" in rows[0].details["metadata"]["damaged"]
    report = (folder / "report.md").read_text()
    assert "could not be evaluated" not in report and "Metadata: damaged" in report


# ------------------------------------------------------------------------------------ fuzz


def test_seeded_mutants_raise_only_package_errors_and_the_guard_keeps_the_process_alive(exported, tmp_path,
                                                                                         monkeypatch):
    from nin_keras.errors import NinKerasError
    from nin_keras.exporting import check_edgetpu, describe_tflite
    from nin_keras.exporting.metadata import describe_metadata, read_metadata
    from nin_keras.exporting.tflite_guard import check_tflite

    fuzz = helpers.load_tool("fuzz_tflite", monkeypatch)
    base = {target: _file(exported, target).read_bytes() for target in ("tflite_float32", "tflite_int8")}
    outcomes, passed = {"rejected": 0, "passed": 0}, []
    path = tmp_path / "mutant.tflite"
    for number, name, kind, data in fuzz.mutants(base, 240, seed=1):
        try:
            describe_tflite(data)
        except NinKerasError as error:  # anything else fails the test
            assert CRAFTED in str(error), (kind, str(error))
            outcomes["rejected"] += 1
        else:
            outcomes["passed"] += 1
            passed.append(data)
        try:
            describe_metadata(read_metadata(data))
        except NinKerasError:
            pass
        if number % 8 == 0:
            path.write_bytes(data)
            try:
                check_edgetpu(path)
            except NinKerasError:
                pass
    assert outcomes["rejected"] > 60 and outcomes["passed"] > 30, outcomes
    for data in passed[:5]:  # through the child guard: refused with the package's error or found safe
        try:
            check_tflite(data, "mutant.tflite")
        except NinKerasError as error:
            assert str(error).startswith(("LiteRT crashed on", "LiteRT cannot run")), str(error)


def test_cli_evaluate_on_a_crafted_file_exits_2_with_one_line(exported, tmp_path):
    crafted = tmp_path / "F.tflite"
    crafted.write_bytes(_repacked(_file(exported, "tflite_int8").read_bytes(), _conv_filter_at_minus_one))
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "NIN_KERAS_VERBOSE")}
    completed = subprocess.run(CLI + ["evaluate", str(crafted), "--dataset", "digits"], capture_output=True,
                               text=True, timeout=300, env=dict(env, CUDA_VISIBLE_DEVICES=""), cwd=tmp_path)
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    assert completed.returncode == 2, completed.stderr[-3000:]  # before: -11 (SIGSEGV), no message
    assert len(lines) == 1 and "Traceback" not in completed.stderr, completed.stderr[-3000:]
    assert "F.tflite" in lines[0] and CRAFTED in lines[0]
