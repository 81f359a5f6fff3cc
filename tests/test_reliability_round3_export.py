"""Issue 24, export folders and model files: an export folder holds one model's export, old or new, never a mix;
a full or read-only disk is one clear error; a damaged or crafted .keras file is the package's own error.

1. An export of another model into a folder holding an export is refused before anything is written (CLI and
   API), or replaces the folder whole with overwrite; the same model's other targets are kept; a failure while
   the new folder is moved into place leaves the old one intact.
2. Disk full (OSError ENOSPC, TensorFlow's ResourceExhaustedError) and read-only folders during export.
3. .keras files: damaged HDF5 weights, a config asking for 2**31 channels (refused before building), and a
   seeded fuzz of a few hundred mutants (tools/fuzz_keras_files.py runs thousands).
"""

import dataclasses
import errno
import io
import json
import os
import random
import shutil
import sys
import zipfile
from pathlib import Path

import h5py
import keras
import pytest
import tensorflow as tf

import nin_keras
from helpers import load_tool, random_data, run_cli, temporary_files
from nin_keras.errors import InvalidInputError, NinKerasError, OutputExistsError, StorageError
from nin_keras.exporting import EXPORT_TARGETS, export_targets
from nin_keras.models import save_model

OLD_TARGETS = "keras,saved_model"


def _listing(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def old_export(tmp_path_factory):
    """A full export of model A (10 classes, 8x8x3) with its report, as the probe found the folder."""
    model = nin_keras.build_nin(10, variant="cifar", input_shape=(8, 8, 3), width_multiplier=0.05, name="model_a")
    out = tmp_path_factory.mktemp("old") / "X"
    export_targets(model, out, targets=OLD_TARGETS, progress=False)
    (out / "report.json").write_text('{"rows": "of model A"}')
    (out / "report.md").write_text("# report of model A\n")
    return model, out


@pytest.fixture(scope="module")
def other_model():
    """Model B: 2 classes, 16x16x3."""
    return nin_keras.build_nin(2, variant="cifar", input_shape=(16, 16, 3), width_multiplier=0.05, name="model_b")


@pytest.fixture
def folder(old_export, tmp_path):
    """A fresh copy of the old export (tests change it)."""
    _, source = old_export
    out = tmp_path / "X"
    shutil.copytree(source, out)
    return out


# ------------------------------------------------------------------- 1. one model per export folder


def test_cli_export_of_another_model_is_refused_before_writing_and_overwrite_replaces_the_folder_whole(
        folder, other_model, tmp_path, capfd):
    other = save_model(other_model, tmp_path / "other.keras")
    before = _listing(folder)
    code, _, err = run_cli(["export", other, "--targets", "keras", "--out", folder], capfd)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "another model" in err and "10 classes, input 8x8x3" in err and "2 classes, input 16x16x3" in err
    assert "--overwrite" in err and "--out" in err and str(folder) in err
    assert _listing(folder) == before, "the old export, its report included, is intact"
    assert not temporary_files(tmp_path)

    code, _, err = run_cli(["export", other, "--targets", "keras", "--out", folder, "--overwrite"], capfd)
    assert code == 0, err
    assert sorted(p.name for p in folder.iterdir()) == ["labels.txt", "manifest.json", "model.keras"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert (manifest["num_classes"], manifest["input_shape"], list(manifest["targets"])) == (2, [16, 16, 3],
                                                                                             ["keras"])
    assert (folder / "labels.txt").read_text().splitlines() == ["0", "1"]
    assert not temporary_files(tmp_path)


def test_api_export_of_another_model_is_refused_before_any_work(folder, other_model, monkeypatch):
    before = _listing(folder)
    with pytest.raises(OutputExistsError, match="overwrite=True") as refused:
        export_targets(other_model, folder, targets="keras", progress=False)
    assert "another model" in str(refused.value) and str(folder) in str(refused.value)
    # nin_keras.export refuses before quantization-aware training, not after it.
    workflow = sys.modules["nin_keras.workflows.export"]
    monkeypatch.setattr(workflow, "quantize_aware", lambda *a, **k: pytest.fail("QAT ran before the refusal"))
    with pytest.raises(OutputExistsError, match="another model"):
        nin_keras.export(other_model, folder, targets="keras,tflite_int8", data=random_data(8, classes=2),
                         qat_epochs=1, progress=False)
    assert _listing(folder) == before


def test_another_model_rewriting_every_target_replaces_the_folder_whole(folder, other_model):
    shutil.rmtree(folder / "saved_model")  # the folder holds model A's keras target only
    (folder / "int8_choice.json").write_text("{}")
    manifest = export_targets(other_model, folder, targets="keras", progress=False)
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["labels.txt", "manifest.json", "model.keras"], "nothing of model A is left"
    assert manifest.num_classes == 2 and list(manifest.targets) == ["keras"]
    assert keras.models.load_model(folder / "model.keras").output_shape == (None, 2)


def test_same_model_other_targets_keeps_the_files_and_records_the_fingerprint(old_export, folder):
    model, _ = old_export
    kept = {name: (folder / name).read_bytes() for name in ("saved_model/1/saved_model.pb",)}
    (folder / "saved_model" / "2").mkdir()  # another version TF Serving serves: kept too
    (folder / "saved_model" / "2" / "saved_model.pb").write_bytes(b"version 2")
    (folder / "notes.txt").write_text("mine")
    old_manifest = json.loads((folder / "manifest.json").read_text())
    manifest = export_targets(model, folder, targets="keras", progress=False)
    assert {name: (folder / name).read_bytes() for name in kept} == kept
    assert (folder / "saved_model" / "2" / "saved_model.pb").read_bytes() == b"version 2"
    assert (folder / "notes.txt").read_text() == "mine"
    assert not (folder / "report.md").exists(), "a report of replaced artifacts is not kept"
    assert set(manifest.targets) == set(OLD_TARGETS.split(","))
    assert manifest.model_fingerprint == old_manifest["model_fingerprint"] and manifest.model_fingerprint
    assert json.loads((folder / "manifest.json").read_text())["model_fingerprint"] == manifest.model_fingerprint


@pytest.mark.parametrize("failing_rename", [1, 2])
def test_a_failure_while_moving_the_new_export_into_place_leaves_no_mix(old_export, folder, monkeypatch,
                                                                         failing_rename):
    """The first (or second) rename that moves something out of the staging folder fails: the folder is then the
    old export byte for byte, or (no such rename was left to fail) the new one complete."""
    model, _ = old_export
    before = _listing(folder)
    replace = os.replace
    calls = []

    def flaky_replace(source, destination, *args, **kwargs):
        source_path = Path(source)
        out_of_staging = source_path.name.endswith(".staging") or (  # the folder, or one entry of it
            source_path.parent.name.endswith(".staging") and ".tmp" not in source_path.name)
        if out_of_staging:
            calls.append(source)
            if len(calls) == failing_rename:
                raise OSError(errno.EIO, "injected I/O error", str(source))
        return replace(source, destination, *args, **kwargs)

    monkeypatch.setattr(os, "replace", flaky_replace)
    try:
        export_targets(model, folder, targets="keras", progress=False)
    except OSError as error:
        assert "injected" in str(error)
        assert _listing(folder) == before, "a failed move leaves the old export intact"
    else:
        assert failing_rename > 1, "the first rename out of staging cannot succeed"
        manifest = json.loads((folder / "manifest.json").read_text())
        assert all((folder / entry["file"]).exists() for entry in manifest["targets"].values())
        assert not (folder / "report.md").exists()
    monkeypatch.undo()
    assert not temporary_files(folder.parent)


# ------------------------------------------------------------------- 2. full and read-only disks


def _failing_writer(error):
    def write(context, out_dir):
        (Path(out_dir) / "model.keras").write_bytes(b"partial")
        raise error
    return write


@pytest.mark.parametrize("error, fix", [
    (OSError(errno.ENOSPC, "No space left on device"), "free some space"),
    (tf.errors.ResourceExhaustedError(None, None, "saved_model.pb; No space left on device"), "free some space"),
    (tf.errors.PermissionDeniedError(None, None, "variables.index; Read-only file system"), "writable"),
])
def test_a_full_or_read_only_disk_is_one_storage_error_and_the_folder_is_intact(old_export, folder, monkeypatch,
                                                                                 capfd, tmp_path, error, fix):
    model, _ = old_export
    before = _listing(folder)
    monkeypatch.setitem(EXPORT_TARGETS, "keras", dataclasses.replace(EXPORT_TARGETS["keras"],
                                                                     write=_failing_writer(error)))
    with pytest.raises(StorageError, match=fix) as raised:
        export_targets(model, folder, targets="keras", progress=False)
    assert isinstance(raised.value, OSError) and raised.value.errno in (errno.ENOSPC, errno.EROFS)
    assert str(folder) in str(raised.value)
    assert _listing(folder) == before and not temporary_files(tmp_path)
    saved = save_model(model, tmp_path / "a.keras")
    code, _, err = run_cli(["export", saved, "--targets", "keras", "--out", folder], capfd)
    errors = [line for line in err.splitlines() if line.startswith("nin-keras export: error:")]
    assert code == 2 and len(errors) == 1 and fix in errors[0] and "Traceback" not in err, err
    assert _listing(folder) == before


def test_a_read_only_folder_is_one_storage_error(old_export, tmp_path, monkeypatch):
    """The staging folder cannot be made beside the export (EROFS injected; a real read-only parent below)."""
    model, _ = old_export

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("nin_keras.exporting.folder.staging_dir", read_only)
    with pytest.raises(StorageError, match="read-only.*writable"):
        export_targets(model, tmp_path / "new", targets="keras", progress=False)
    monkeypatch.undo()
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        with pytest.raises(StorageError, match="permission"):
            export_targets(model, parent / "new", targets="keras", progress=False)
    finally:
        parent.chmod(0o755)


# ------------------------------------------------------------------- 3. damaged and crafted .keras files


@pytest.fixture(scope="module")
def fuzz_tool():
    with pytest.MonkeyPatch.context() as monkeypatch:
        return load_tool("fuzz_keras_files", monkeypatch)


@pytest.fixture(scope="module")
def small_keras(fuzz_tool) -> bytes:
    return fuzz_tool.model_bytes("small")


def _h5py_fails(data: bytes) -> bool:
    """Whether h5py itself raises RuntimeError walking the weights of .keras bytes `data`."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        weights = archive.read("model.weights.h5")
    try:
        with h5py.File(io.BytesIO(weights), "r") as h5:
            h5.visititems(lambda name, item: item[()] if isinstance(item, h5py.Dataset) else None)
    except RuntimeError:
        return True
    except Exception:
        return False
    return False


def test_damaged_h5_weights_are_an_invalid_input_error(fuzz_tool, small_keras, tmp_path):
    damaged = next(data for index in range(400)
                   for kind, data in [fuzz_tool.mutate(small_keras, random.Random(f"h5:{index}"))]
                   if kind.startswith("h5_") and _h5py_fails(data))
    path = tmp_path / "damaged.keras"
    path.write_bytes(damaged)
    with pytest.raises(InvalidInputError, match="is not a loadable Keras model: .*re-save it"):
        nin_keras.load_model(path)


def _with_config(data: bytes, edit) -> bytes:
    members = []
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            content = archive.read(info)
            if info.filename == "config.json":
                config = json.loads(content)
                edit(config)
                content = json.dumps(config).encode()
            members.append((info, content))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for info, content in members:
            archive.writestr(info, content)
    return buffer.getvalue()


def _layer(config, class_name):
    return next(layer for layer in config["config"]["layers"] if layer["class_name"] == class_name)["config"]


@pytest.mark.parametrize("edit, fragment", [
    (lambda c: _layer(c, "Conv2D").update(filters=2**31), "filters=2147483648"),
    (lambda c: _layer(c, "Dense").update(units=2**31), "units=2147483648"),
    (lambda c: _layer(c, "Conv2D").update(kernel_size=[2**31, 1]), "kernel_size"),
    (lambda c: (_layer(c, "Conv2D").update(filters=2**20), _layer(c, "Dense").update(units=2**20)), "weights"),
])
def test_a_config_asking_for_a_huge_network_is_refused_before_building(small_keras, tmp_path, monkeypatch,
                                                                       edit, fragment):
    path = tmp_path / "huge.keras"
    path.write_bytes(_with_config(small_keras, edit))
    monkeypatch.setattr(keras.models, "load_model", lambda *a, **k: pytest.fail("Keras was asked to build it"))
    with pytest.raises(InvalidInputError, match="is not a loadable Keras model") as refused:
        nin_keras.load_model(path)
    assert fragment in str(refused.value)


@pytest.mark.parametrize("edit", [
    lambda c: _layer(c, "Conv2D").update(filters=[]),  # the fuzz tool's mutants 1987 and 2853 of the small model
    lambda c: _layer(c, "Dense").update(units=None),
    lambda c: _layer(c, "InputLayer").update(batch_shape=[]),
])
def test_a_config_with_sizes_of_the_wrong_form_is_an_invalid_input_error(small_keras, tmp_path, edit):
    path = tmp_path / "odd.keras"
    path.write_bytes(_with_config(small_keras, edit))
    with pytest.raises(InvalidInputError, match="is not a loadable Keras model"):
        nin_keras.load_model(path)


def test_fuzzed_keras_files_load_or_raise_the_packages_error(fuzz_tool, small_keras, tmp_path):
    """150 seeded mutants of a five-layer .keras, loaded in this process (tools/fuzz_keras_files.py: thousands,
    in child processes, docs/benchmarks/fuzz_keras_files.md)."""
    outcomes = {}
    for index, kind, data in fuzz_tool.mutants(0, 0, 150, small_keras):
        path = tmp_path / f"mutant_{index}.keras"
        path.write_bytes(data)
        outcomes[index] = (kind, fuzz_tool.load_outcome(path))
        path.unlink()
    others = {index: outcome for index, outcome in outcomes.items() if outcome[1] not in ("loaded", "rejected")}
    assert not others, others
    rejected = sum(outcome == "rejected" for _, outcome in outcomes.values())
    assert rejected > 75, "the mutants reach the loader's checks"
    assert issubclass(StorageError, NinKerasError)
