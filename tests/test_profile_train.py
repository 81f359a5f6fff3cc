"""tools/profile_train.py: the trace parsing (op categories, overlap split, framework time), the oneDNN verbose
totals, and the profile section of training.md that tools/benchmark_train.py carries over byte for byte."""

import pytest

from helpers import load_tool


@pytest.fixture
def tool(monkeypatch):
    return load_tool("profile_train", monkeypatch)


@pytest.mark.parametrize("op_name, op_type, category", [
    ("StatefulPartitionedCall/nin_cifar_1/mlpconv1_conv5x5_1/convolution", "Conv2D", "conv forward"),
    ("StatefulPartitionedCall/nin_cifar_1/mlpconv1_conv5x5_1/convolution", "_MklNativeFusedConv2D", "conv forward"),
    ("StatefulPartitionedCall/gradient_tape/nin_cifar_1/mlpconv3_mlp2_1/convolution/Conv2DBackpropInput",
     "Conv2DBackpropInput", "conv backward-input"),
    ("StatefulPartitionedCall/gradient_tape/nin_cifar_1/mlpconv3_mlp2_1/convolution/Conv2DBackpropFilter",
     "_MklNativeConv2DBackpropFilter", "conv backward-filter"),
    ("StatefulPartitionedCall/nin_cifar_1/mlpconv1_mlp1_bn_1/FusedBatchNormV3", "FusedBatchNormV3",
     "batch norm forward"),
    ("StatefulPartitionedCall/gradient_tape/nin_cifar_1/mlpconv3_mlp2_bn_1/FusedBatchNormGradV3",
     "FusedBatchNormGradV3", "batch norm gradient"),
    ("StatefulPartitionedCall/nin_cifar_1/mlpconv2_mlp1_bn_1/mul_3", "Mul", "batch norm forward"),
    ("StatefulPartitionedCall/nin_cifar_1/mlpconv1_conv5x5_1/Cast", "Cast", "casts"),
    ("StatefulPartitionedCall/gradient_tape/nin_cifar_1/mlpconv1_maxpool_1/MaxPool2d/MaxPoolGrad", "MaxPoolGrad",
     "pooling gradient"),
    ("StatefulPartitionedCall/nin_cifar_1/gap_1/Mean", "Mean", "pooling forward"),
    ("StatefulPartitionedCall/nin_cifar_1/mlpconv1_dropout_1/stateless_dropout/GreaterEqual", "GreaterEqual",
     "dropout (mask + scale, fwd/grad)"),
    ("StatefulPartitionedCall/gradient_tape/nin_cifar_1/mlpconv3_mlp2_relu_1/ReluGrad", "ReluGrad",
     "activations (ReLU fwd/grad)"),
    ("StatefulPartitionedCall/sgd/AssignAddVariableOp_25", "AssignAddVariableOp", "optimizer update"),
    ("StatefulPartitionedCall/compile_loss/sparse_categorical_crossentropy/SparseSoftmaxCrossEntropyWithLogits",
     "SparseSoftmaxCrossEntropyWithLogits", "loss / softmax / metrics"),
    ("IteratorGetNext", "IteratorGetNext", "input (iterator)"),
])
def test_op_categories(tool, op_name, op_type, category):
    assert tool.categorize(op_name, op_type) == category


def _xspace(tool):
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    plane = space.planes.add(name="/host:CPU")
    names = ["multi_step_on_iterator", "ExecutorState::Process", "a/conv/Conv2D:Conv2D",
             "a/gradient_tape/m/c/Conv2DBackpropFilter:Conv2DBackpropFilter",
             "a/m/c_bn/FusedBatchNormV3:FusedBatchNormV3"]
    for index, name in enumerate(names, start=1):
        plane.event_metadata[index].id = index
        plane.event_metadata[index].name = name

    def line(name, timestamp_ns, events):
        new = plane.lines.add(name=name, timestamp_ns=timestamp_ns)
        for metadata_id, offset_ms, duration_ms in events:
            new.events.add(metadata_id=metadata_id, offset_ps=int(offset_ms * 1e9), duration_ps=int(duration_ms * 1e9))

    line("python", 0, [(1, 0, 100)])  # one step: 0..100 ms
    # thread 1: a conv 10..50 ms and a runtime event (not an op); thread 2 starts 20 ms later: filter grad 20..60 ms
    # (i.e. 0..40 ms on its own line), batch norm 70..80 ms
    line("tf_Compute/1", 0, [(2, 0, 100), (3, 10, 40)])
    line("tf_Compute/2", 20_000_000, [(4, 0, 40), (5, 50, 10)])
    return space


def test_breakdown_splits_overlap_and_counts_framework_time(tool):
    ops, steps = tool.op_events(_xspace(tool))
    assert steps == [(0, 100 * 10**9)]
    assert sorted(op[3] for op in ops) == ["Conv2D", "Conv2DBackpropFilter", "FusedBatchNormV3"]  # no runtime events
    ms = tool.breakdown(ops, steps[0])
    # conv 10..50 and filter grad 20..60 overlap for 30 ms, split evenly: 10 + 15 and 15 + 10
    assert ms["conv forward"] == pytest.approx(25)
    assert ms["conv backward-filter"] == pytest.approx(25)
    assert ms["batch norm forward"] == pytest.approx(10)
    assert ms[tool.FRAMEWORK] == pytest.approx(100 - 60)  # union of op time is 10..60 and 70..80
    assert sum(ms.values()) == pytest.approx(100)


def test_onednn_verbose_totals(tool):
    text = "\n".join([
        "onednn_verbose,v1,info,cpu,isa:Intel AVX2",
        "onednn_verbose,v1,primitive,exec,cpu,convolution,brgconv_1x1:avx2,forward_training,src:f32,,alg,mb1,3.0",
        "onednn_verbose,v1,primitive,exec,cpu,convolution,brgconv_1x1:avx2,forward_training,src:f32,,alg,mb1,2.0",
        "onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,src:f32 dst:f32,,,128x3,5.0",
        "onednn_verbose,v1,primitive,create:cache_miss,cpu,convolution,x,forward_training,,,,9.0",
        "some other line,exec,1.0",
    ])
    totals = tool.parse_onednn_verbose(text)
    assert totals["primitives"] == {"convolution | brgconv_1x1:avx2": [2, 5.0], "reorder | jit:uni": [1, 5.0]}
    assert totals["reorder_share"] == pytest.approx(0.5)


def test_profile_section_is_replaced_in_place_and_carried_over(tool):
    before = "# Training benchmark\n\nfigures | 241.1\n\n"
    after = "\n## How to read this\n\ntext\n"
    old = before + tool.SECTION_START + "\nold profile\n" + tool.SECTION_END + after
    new = tool.replace_section(old, "## Profile\n\nnew figures")
    assert new == before + tool.SECTION_START + "\n## Profile\n\nnew figures\n" + tool.SECTION_END + after
    appended = tool.replace_section("# Report\n", "new")
    assert appended.startswith("# Report\n") and appended.endswith(tool.SECTION_END + "\n")
    # a freshly rendered report (benchmark_train.py) gets the old profile section back, the rest as rendered
    rendered = "# Training benchmark\n\nnew figures\n"
    carried = tool.keep_section(new, rendered)
    assert carried.startswith(rendered) and "## Profile\n\nnew figures" in carried
    assert tool.keep_section(None, rendered) == rendered
