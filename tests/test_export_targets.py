"""The export-target registry: one writer per spec, the selection parsed once, what "all" skips said on screen
and in manifest.json, the CLI's help made from the registry, and the typed export result.

The per-target contract (each registered target writes its file, a manifest entry and a report row) is in
test_exporting.py, on that module's one export of every target, so no second export of every target is made.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

import helpers
import nin_keras
from nin_keras import export_layout
from nin_keras.errors import InvalidInputError
from nin_keras.export_layout import TARGET_SPECS, ManifestEntry
from nin_keras.exporting import EXPORT_TARGETS, TargetSelection, select_targets, unavailable_targets
from nin_keras.verification import ReportRow

pytestmark = pytest.mark.usefixtures("restore_process_state")


def test_registry_attaches_one_writer_to_each_spec():
    assert list(EXPORT_TARGETS) == list(TARGET_SPECS) == list(nin_keras.EXPORT_TARGETS)
    for name, target in EXPORT_TARGETS.items():
        assert target.write.__name__ == f"export_{name}", name
        assert {f.name: getattr(target, f.name) for f in dataclasses.fields(TARGET_SPECS[name])} == \
            dataclasses.asdict(TARGET_SPECS[name])
        assert target.file == export_layout.TARGET_FILES[name] and target.description and target.clients
    assert [name for name, target in EXPORT_TARGETS.items() if target.needs_data] == [
        "tflite_int8", "tflite_int8_mixed", "tflite_int16x8", "edgetpu"]
    assert [name for name, target in EXPORT_TARGETS.items() if not target.in_all] == ["tflite_int8_mixed",
                                                                                      "tflite_int16x8"]
    assert EXPORT_TARGETS["onnx"].requires == ("tf2onnx", "onnx", "onnxruntime")


def test_export_result_is_typed_and_reads_as_before(digits_model, digits, tmp_path):
    (x_train, y_train), _ = digits
    result = nin_keras.export(digits_model, tmp_path / "out", targets="keras", data=(x_train[:16], y_train[:16]),
                              progress=False)
    assert result.out_dir == result["out_dir"] == str(tmp_path / "out")
    assert isinstance(result.report[0], ReportRow) and result["report"] == [row.to_dict() for row in result.report]
    as_json = json.loads(json.dumps(result.to_dict()))
    assert as_json["manifest"] == json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert as_json["report"] == json.loads((tmp_path / "out" / "report.json").read_text())["rows"]
    assert set(as_json) == {"out_dir", "manifest", "report", "int8_choice"} and as_json["int8_choice"] is None
    assert "targets" in result["manifest"] and result.manifest["targets"]["keras"]["file"] == "model.keras"
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.manifest.targets["keras"].file = "other"


def test_selection_is_parsed_once_and_kept():
    selection = select_targets(" keras , tflite_int8")
    assert selection == TargetSelection(("keras", "tflite_int8")) and select_targets(selection) is selection
    assert select_targets(["edgetpu", "keras"]).names == ("keras", "edgetpu")  # registry order
    assert select_targets("all").names == tuple(t for t in EXPORT_TARGETS if t not in unavailable_targets()
                                                and EXPORT_TARGETS[t].in_all)
    assert "tflite_int16x8" in select_targets("all,tflite_int16x8") and "keras" in select_targets("all,tflite_int16x8")
    for bad, message in (("", "No export targets"), ("keras,coreml", "Known targets: all, keras, saved_model, "
                                                                     "onnx")):
        with pytest.raises(InvalidInputError, match=message):
            select_targets(bad)


def _without_onnx(monkeypatch):
    real = export_layout.find_spec
    monkeypatch.setattr(export_layout, "find_spec", lambda name: None if name == "tf2onnx" else real(name))


def _stub_writer(name):
    """A writer that writes a placeholder file at once (the real conversions are checked above)."""
    def write(context, out_dir):
        path = Path(out_dir) / TARGET_SPECS[name].file
        path.parent.mkdir(parents=True, exist_ok=True)
        if name == "saved_model":
            path.mkdir()
            path = path / "saved_model.pb"
        path.write_bytes(b"stub")
        return ManifestEntry(name, TARGET_SPECS[name].file, 4, TARGET_SPECS[name].description)

    return write


def test_cli_all_without_the_onnx_extra_names_it_skipped(digits_model, tmp_path, capsys, monkeypatch):
    _without_onnx(monkeypatch)
    for name in EXPORT_TARGETS:  # the selection's way down is what is tested, not the conversions
        monkeypatch.setitem(EXPORT_TARGETS, name, dataclasses.replace(EXPORT_TARGETS[name],
                                                                      write=_stub_writer(name)))
    monkeypatch.setattr(nin_keras.exporting, "check_edgetpu", lambda path: {})
    monkeypatch.setattr(nin_keras.exporting, "format_findings", lambda findings: [])
    path = nin_keras.save_model(digits_model, tmp_path / "m.keras")
    code, out, err = helpers.run_cli(["export", path, "--targets", "all", "--dataset", "digits", "--no-verify",
                                      "--representative-samples", "16", "--out", tmp_path / "o"], capsys)
    assert code == 0, err
    assert re.search(r"onnx +skipped: tf2onnx not installed here: pip install 'nin-keras\[onnx\]'", out), out
    assert "skipped: tf2onnx" in err  # the display's log of the export, too
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert list(manifest["skipped"]) == ["onnx"] and "tf2onnx" in manifest["skipped"]["onnx"]
    assert list(manifest["targets"]) == [name for name in EXPORT_TARGETS if name != "onnx"
                                         and EXPORT_TARGETS[name].in_all]
    assert not (tmp_path / "o" / "model.onnx").exists()


@pytest.mark.parametrize("targets", ["onnx", "keras,onnx"])
def test_cli_onnx_named_without_the_extra_is_one_line_exit_2(tmp_path, capsys, monkeypatch, targets):
    _without_onnx(monkeypatch)
    code, _, err = helpers.run_cli(["export", tmp_path / "m.keras", "--targets", targets, "--out", tmp_path / "o"],
                                   capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "onnx target needs tf2onnx" in err and "nin-keras[onnx]" in err
    assert not (tmp_path / "o").exists()


def test_cli_help_lists_every_registered_target(capsys):
    from nin_keras.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["export", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name, spec in TARGET_SPECS.items():
        assert f"{name} {spec.file}:" in text, name
    assert "all, " + ", ".join(TARGET_SPECS) + " (default all" in text
