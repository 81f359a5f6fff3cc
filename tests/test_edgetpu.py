"""The static Edge TPU check: a ready model passes; float, dynamic-batch and too-new-op models are named."""

import json

import pytest

import nin_keras
from helpers import SMALL_SHAPE, random_images, small_nin
from nin_keras.errors import InvalidInputError
from nin_keras.exporting import check_edgetpu, format_findings, to_tflite
from nin_keras.exporting.edgetpu import EDGETPU_OPS


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("edgetpu")
    model = small_nin()
    images = random_images(16, SMALL_SHAPE)
    paths = {}
    for name, mode, batch in [("ready", "uint8", 1), ("int8_dynamic", "int8", None), ("float", "float32", None)]:
        paths[name] = folder / f"{name}.tflite"
        paths[name].write_bytes(to_tflite(model, mode, representative_images=images, batch_size=batch))
    return paths


def test_ready_model_is_compatible(files):
    findings = check_edgetpu(files["ready"])
    assert findings["compatible"], findings["problems"]
    assert findings["all_tensors_8bit"] and findings["static_shapes"] and findings["batch_size"] == 1
    assert findings["input"]["dtype"] == "uint8" and findings["first_unsupported_op"] is None
    assert {op["op"] for op in findings["ops"]} <= set(EDGETPU_OPS)
    json.dumps(findings)  # serialisable, as edgetpu_check.json


def test_float_model_is_refused_with_reasons(files):
    findings = check_edgetpu(files["float"])
    assert not findings["compatible"]
    assert not findings["all_tensors_8bit"] and not findings["static_shapes"]
    assert findings["first_unsupported_op"]["index"] == 0
    text = " ".join(findings["problems"])
    assert "not 8-bit" in text and "dynamic shapes" in text


def test_dynamic_batch_int8_is_refused_for_its_shape(files):
    findings = check_edgetpu(files["int8_dynamic"])
    assert findings["all_tensors_8bit"] and not findings["static_shapes"] and not findings["compatible"]


def test_too_new_op_version_is_named(files, tmp_path):
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(files["ready"].read_bytes(), 0)
    for code in model.operatorCodes:
        if max(code.builtinCode, code.deprecatedBuiltinCode) == schema.BuiltinOperator.CONV_2D:
            code.version = 6
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path = tmp_path / "new_conv.tflite"
    path.write_bytes(bytes(builder.Output()))
    findings = check_edgetpu(path)
    assert not findings["compatible"]
    assert any("CONV_2D version 6" in p for p in findings["problems"])
    assert any(line.startswith("  NO  CONV_2D v6") for line in format_findings(findings))


@pytest.mark.parametrize("content", [b"", b"random bytes, not a model", b"\x18\x00\x00\x00TFL3\x00\x00"])
def test_damaged_files_are_refused(tmp_path, content):
    path = tmp_path / "bad.tflite"
    path.write_bytes(content)
    with pytest.raises(InvalidInputError, match="bad.tflite"):
        check_edgetpu(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        check_edgetpu(tmp_path / "none.tflite")


def test_public_name():
    assert nin_keras.check_edgetpu is check_edgetpu
