"""Files and folders appear whole or not at all; a failure leaves what was there before."""

import os
import stat

import pytest

from nin_keras._atomic import atomic_dir, atomic_path, swap_dir, write_json, write_text


def test_atomic_path_replaces_only_on_success(tmp_path):
    target = tmp_path / "model.keras"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and tmp.name.endswith(".keras")  # writers pick formats by suffix
            tmp.write_text("half-writ")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["model.keras"]  # no temporary file left
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["model.keras"]


def test_written_files_get_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_text(tmp_path / "report.md", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # mkstemp alone would give 0600


def test_atomic_dir_and_swap_dir_replace_whole_folders(tmp_path):
    target = tmp_path / "saved_model"
    target.mkdir()
    (target / "old.pb").write_text("old")
    with pytest.raises(ValueError):
        with atomic_dir(target) as tmp:
            (tmp / "new.pb").write_text("new")
            raise ValueError("converter failed")
    assert os.listdir(target) == ["old.pb"] and os.listdir(tmp_path) == ["saved_model"]
    with atomic_dir(target) as tmp:
        write_json(tmp / "new.json", {"a": 1})
    assert os.listdir(target) == ["new.json"] and os.listdir(tmp_path) == ["saved_model"]

    replacement = tmp_path / "staging"
    replacement.mkdir()
    (replacement / "v2").write_text("2")
    swap_dir(replacement, target)
    assert os.listdir(target) == ["v2"] and sorted(os.listdir(tmp_path)) == ["saved_model"]
