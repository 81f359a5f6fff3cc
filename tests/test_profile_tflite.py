"""tools/profile_tflite.py: a single-op model cut from an exported .tflite computes what that op computes inside
the whole graph (same inputs, same output, bit for bit), and the op descriptions count MACs right."""

import numpy as np
import pytest
from helpers import SMALL_SHAPE, builtin_interpreter, load_tool, random_images, small_nin

from nin_keras.exporting.converter import to_tflite


@pytest.fixture(scope="module")
def int8_model_bytes():
    images = random_images(8, SMALL_SHAPE)
    return to_tflite(small_nin(), "int8", representative_images=images), images


def _whole_graph_tensors(model_bytes: bytes, image) -> tuple:
    """The whole model run once on `image` with every intermediate tensor kept; name -> tensor details."""
    interpreter = builtin_interpreter(model_bytes, keep_all_tensors=True)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image)
    interpreter.invoke()
    return interpreter, {detail["name"]: detail for detail in interpreter.get_tensor_details()}


def test_each_single_op_model_reproduces_its_op_inside_the_whole_graph(int8_model_bytes, monkeypatch):
    tool = load_tool("profile_tflite", monkeypatch)
    model_bytes, images = int8_model_bytes
    image = np.clip(np.round(images[:1] - 128), -128, 127).astype(np.int8)  # input scale 1, zero point -128
    whole, tensors = _whole_graph_tensors(model_bytes, image)
    ops = tool.describe_ops(model_bytes)
    assert [op["op"] for op in ops].count("CONV_2D") == 9
    for op in ops:
        single = builtin_interpreter(tool.single_op_model(model_bytes, op["index"]))
        assert len(single._get_ops_details()) == 1
        for detail in single.get_input_details():
            single.set_tensor(detail["index"], whole.get_tensor(tensors[detail["name"]]["index"]))
        single.invoke()
        (output,) = single.get_output_details()
        expected = whole.get_tensor(tensors[output["name"]]["index"])
        assert output["quantization"] == tensors[output["name"]]["quantization"]
        np.testing.assert_array_equal(single.get_tensor(output["index"]), expected, err_msg=f"op {op}")


def test_ops_are_described_with_their_multiply_accumulates(int8_model_bytes, monkeypatch):
    tool = load_tool("profile_tflite", monkeypatch)
    first = tool.describe_ops(int8_model_bytes[0])[0]
    filters, height, width = first["detail"].split("->")[1].split(" at ")[0], *SMALL_SHAPE[:2]
    assert first["op"] == "CONV_2D" and first["detail"].startswith("5x5 3->")
    assert first["macs"] == height * width * int(filters) * 5 * 5 * 3
    assert first["per_channel"] is True


def test_a_single_op_model_is_delegated_or_not_as_the_op_is(int8_model_bytes, monkeypatch):
    tool = load_tool("profile_tflite", monkeypatch)
    model_bytes = int8_model_bytes[0]
    conv = tool.single_op_model(model_bytes, 0)
    assert tool.delegated_nodes(tool.make_interpreter(conv, threads=1)) == 1
    assert tool.delegated_nodes(tool.make_interpreter(conv, threads=1, xnnpack=False)) == 0
