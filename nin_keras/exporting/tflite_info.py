"""Reading a .tflite flatbuffer: input/output types and quantization, op codes and versions, tensors.

Uses the flatbuffer schema shipped with ai_edge_litert (no interpreter needed), so it also describes models
that this machine's runtime could not run. `read_model` checks the structure before anything uses it
(`check_structure`): LiteRT trusts a file's indices and sizes, and a crafted file that passes the flatbuffer
verifier can still crash it (an operator reading tensor -1, a buffer shorter than its tensor).
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

from ai_edge_litert import schema_py_generated as schema

from nin_keras.checks import check_path
from nin_keras.errors import InvalidInputError, one_line


def _names(enum_class) -> dict:
    return {value: name for name, value in vars(enum_class).items() if not name.startswith("_")}


def read_model(source, *, label: str | None = None):
    """Returns the unpacked flatbuffer (`ModelT`) of a .tflite path or bytes, its structure checked.

    Raises:
        InvalidInputError: not a TFLite model, or one whose structure is damaged (`check_structure`); the
            message names `label` (default: the path, or "model bytes").
    """
    if isinstance(source, (bytes, bytearray)):
        data, label = bytes(source), label or "model bytes"
    else:
        path = Path(source)
        check_path("TFLite file", path, kind="file")
        data, label = path.read_bytes(), label or str(path)
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise InvalidInputError(f"{label} is not a TFLite model (no TFL3 flatbuffer identifier).")
    try:
        model = schema.ModelT.InitFromPackedBuf(data, 0)
    except Exception as error:  # a truncated or damaged flatbuffer raises struct/index errors
        raise InvalidInputError(f"{label} is not a valid TFLite model: its flatbuffer cannot be read "
                                f"({one_line(error, 200)}); the file is damaged or crafted. Export the model again, "
                                "or get the file again from where it came from.") from None
    check_structure(model, len(data), label)
    for graph in model.subgraphs:  # absent vectors as empty ones, so readers need not check
        graph.tensors, graph.operators = _indices(graph.tensors), _indices(graph.operators)
        graph.inputs, graph.outputs = _indices(graph.inputs), _indices(graph.outputs)
        for operator in graph.operators:
            operator.inputs, operator.outputs = _indices(operator.inputs), _indices(operator.outputs)
    return model


def flatbuffer_text(value) -> str:
    """A name from the flatbuffer (bytes, maybe not UTF-8 in a crafted file) as text."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")


def op_name(model, operator) -> str:
    code = model.operatorCodes[operator.opcodeIndex]
    # Builtin codes above 127 live in `builtinCode`; older files carry them in `deprecatedBuiltinCode`.
    value = max(code.builtinCode, code.deprecatedBuiltinCode)
    if value == schema.BuiltinOperator.CUSTOM:
        custom = flatbuffer_text(code.customCode)
        return f"CUSTOM:{custom}"
    return _names(schema.BuiltinOperator).get(value, f"BUILTIN_{value}")


def tensor_dtype(tensor) -> str:
    return _names(schema.TensorType).get(tensor.type, f"TYPE_{tensor.type}").lower()


def tensor_shape(tensor) -> list[int]:
    """The shape with -1 for dynamic dimensions (from `shape_signature` when present)."""
    signature = tensor.shapeSignature
    if signature is not None and len(signature):
        return [int(d) for d in signature]
    return [int(d) for d in (tensor.shape if tensor.shape is not None else [])]


def tensor_quantization(tensor):
    """[scale, zero_point] for per-tensor quantization, None for float tensors."""
    q = tensor.quantization
    if q is None or q.scale is None or len(q.scale) == 0:
        return None
    if len(q.scale) == 1:
        return [float(q.scale[0]), int(q.zeroPoint[0]) if q.zeroPoint is not None and len(q.zeroPoint) else 0]
    return {"per_channel": len(q.scale), "axis": int(q.quantizedDimension)}


def is_constant(model, tensor) -> bool:
    buffer = model.buffers[tensor.buffer] if 0 <= tensor.buffer < len(model.buffers) else None
    has_data = buffer is not None and buffer.data is not None and len(buffer.data) > 0
    return bool(has_data or (buffer is not None and getattr(buffer, "size", 0)))


def io_description(tensor) -> dict:
    name = flatbuffer_text(tensor.name)
    return {"name": name, "dtype": tensor_dtype(tensor), "shape": tensor_shape(tensor),
            "quantization": tensor_quantization(tensor)}


def describe_tflite(source) -> dict:
    """Summary of a .tflite: inputs, outputs (dtype, shape, quantization), op counts and versions, size.

    Returns:
        dict with keys inputs, outputs (lists of {name, dtype, shape, quantization}), ops ({name: count}),
        op_versions ({name: highest version}), num_subgraphs, size_bytes.
    """
    model = read_model(source)
    size = len(source) if isinstance(source, (bytes, bytearray)) else Path(source).stat().st_size
    graph = model.subgraphs[0]
    ops, versions = Counter(), {}
    for subgraph in model.subgraphs:
        for operator in subgraph.operators or []:
            name = op_name(model, operator)
            ops[name] += 1
            version = model.operatorCodes[operator.opcodeIndex].version
            versions[name] = max(versions.get(name, 0), int(version))
    return {
        "inputs": [io_description(graph.tensors[i]) for i in graph.inputs],
        "outputs": [io_description(graph.tensors[i]) for i in graph.outputs],
        "ops": dict(ops),
        "op_versions": versions,
        "num_subgraphs": len(model.subgraphs),
        "size_bytes": size,
    }


# ------------------------------------------------------------------------------------ structural check

# Far above any image classifier (a 224x224x192 float32 activation is 38 MB); LiteRT sizes tensors in int.
MAX_TENSOR_BYTES = 2**31 - 1
MAX_TOTAL_BYTES = 2**32  # all tensors together: a bound on what loading a file may ask of memory
MAX_RANK = 16
# Bits per element of the fixed-size tensor types (string, resource and variant tensors have no fixed size).
_TYPE_BITS = {"float32": 32, "float16": 16, "int32": 32, "uint8": 8, "int64": 64, "bool": 8, "int16": 16,
              "complex64": 64, "int8": 8, "float64": 64, "complex128": 128, "uint64": 64, "uint32": 32,
              "uint16": 16, "int4": 4, "bfloat16": 16, "int2": 2, "uint4": 4, "float8_e4m3fn": 8, "float8_e5m2": 8}
_VARIABLE_SIZE_TYPES = ("string", "resource", "variant")
# Operator inputs LiteRT's kernels allow to be absent (index -1), by position; any other -1 is refused, since
# kernels and the XNNPACK delegate read a required input without checking (a CONV_2D filter at -1 crashes).
_ALL_BUT_FIRST = range(1, 1 << 16)
OPTIONAL_INPUTS = {
    "CONV_2D": (2,), "DEPTHWISE_CONV_2D": (2,), "FULLY_CONNECTED": (2,), "TRANSPOSE_CONV": (3,),
    "CONV_3D": (2,), "CONV_3D_TRANSPOSE": (3,), "SVDF": (3,), "LSH_PROJECTION": (2,), "RESHAPE": (1,),
    "LSTM": _ALL_BUT_FIRST, "UNIDIRECTIONAL_SEQUENCE_LSTM": _ALL_BUT_FIRST,
    "BIDIRECTIONAL_SEQUENCE_LSTM": _ALL_BUT_FIRST, "BIDIRECTIONAL_SEQUENCE_RNN": _ALL_BUT_FIRST,
    "UNIDIRECTIONAL_SEQUENCE_RNN": _ALL_BUT_FIRST, "RNN": _ALL_BUT_FIRST,
}


def check_structure(model, file_size: int, label: str = "the model") -> None:
    """Raises InvalidInputError when an index or size in the unpacked .tflite `model` cannot be right.

    Checked: operator codes, operator inputs and outputs (-1 only where the op allows an absent input),
    subgraph inputs and outputs, tensor buffers, shapes (non-negative, bounded size), types and per-channel
    quantization, constant data sizes against shape and type, buffers stored outside the flatbuffer (within
    the file), subgraph references in op options, and signature tensors. These are the fields LiteRT uses as
    indices and sizes without checking them all; what passes may still be refused (or, for a crafted file,
    crash) in LiteRT itself, which is why files from elsewhere are first run in a child process
    (`nin_keras.exporting.tflite_guard`).

    Args:
        model: the `ModelT` of the file (the schema's object API).
        file_size: the file's length in bytes.
        label: the file's name, for the message.
    """
    problem = _first_problem(model, file_size)
    if problem is not None:
        raise InvalidInputError(
            f"{label} is not a valid TFLite model: {problem} (nin-keras' structural check); the file is damaged "
            "or crafted. Export the model again, or get the file again from where it came from."
        )


def _first_problem(model, file_size: int) -> str | None:
    if not model.subgraphs:
        return "it has no subgraph"
    if model.externalBuffers or model.externalBufferGroups:
        return "its weights are in external files (not loaded by nin-keras)"
    buffers = model.buffers or []
    for index, buffer in enumerate(buffers):
        offset, size = int(buffer.offset or 0), int(buffer.size or 0)
        if offset > 1 and offset + size > file_size:
            return f"buffer {index} lies at bytes {offset}..{offset + size}, past the end of the file ({file_size})"
    codes = model.operatorCodes or []
    subgraph_count = len(model.subgraphs)
    for number, graph in enumerate(model.subgraphs):
        where = f" of subgraph {number}" if subgraph_count > 1 else ""
        problem = (_tensor_problem(graph, buffers, where) or _operator_problem(model, graph, codes, where)
                   or _graph_io_problem(graph, buffers, where))
        if problem is not None:
            return problem
    for signature in model.signatureDefs or []:
        if not 0 <= signature.subgraphIndex < subgraph_count:
            return f"a signature names subgraph {signature.subgraphIndex}; there are {subgraph_count} subgraphs"
        count = len(model.subgraphs[signature.subgraphIndex].tensors or [])
        for entry in list(signature.inputs or []) + list(signature.outputs or []):
            if not 0 <= entry.tensorIndex < count:
                return f"a signature names tensor {entry.tensorIndex}; there are {count} tensors"
    return None


def _tensor_problem(graph, buffers, where: str) -> str | None:
    total = 0
    for index, tensor in enumerate(graph.tensors or []):
        name = f"tensor {index}{where}"
        if int(getattr(tensor, "externalBuffer", 0) or 0):
            return f"{name} keeps its data in an external file (not loaded by nin-keras)"
        if not 0 <= tensor.buffer < len(buffers):
            return f"{name} uses buffer {tensor.buffer}; there are {len(buffers)} buffers"
        dtype = tensor_dtype(tensor)
        if dtype not in _TYPE_BITS and dtype not in _VARIABLE_SIZE_TYPES:
            return f"{name} has an unknown type ({tensor.type})"
        shape = [int(d) for d in (tensor.shape if tensor.shape is not None else [])]
        signature = [int(d) for d in (tensor.shapeSignature if tensor.shapeSignature is not None else [])]
        if len(shape) > MAX_RANK or any(d < 0 for d in shape):
            return f"{name} has shape {shape}"
        # The signature holds -1 where a dimension is free (the shape holds 1 there), else the shape's own.
        if signature and (len(signature) != len(shape) or any(s not in (-1, d) for s, d in zip(signature, shape))):
            return f"{name} has shape {shape} but shape signature {signature}"
        elements = math.prod(shape)
        bits = _TYPE_BITS.get(dtype, 8)
        if elements * bits // 8 > MAX_TENSOR_BYTES:
            return f"{name} has shape {shape}: {elements:,} elements, more than LiteRT can hold"
        total += elements * bits // 8
        if total > MAX_TOTAL_BYTES:
            return f"its tensors{where} need more than {MAX_TOTAL_BYTES // 2**30} GiB at batch 1"
        stored = _stored_bytes(buffers[tensor.buffer])
        if stored and dtype in _TYPE_BITS and tensor.sparsity is None:
            # Sub-byte types are stored packed or one element a byte, depending on the writer.
            expected = {math.ceil(elements * bits / 8), elements} if bits < 8 else {elements * bits // 8}
            if stored not in expected:
                return (f"{name} ({dtype}, shape {shape}) holds {stored} bytes of constant data, not "
                        f"{' or '.join(str(e) for e in sorted(expected))}")
        problem = _quantization_problem(tensor.quantization, shape)
        if problem is not None:
            return f"{name} {problem}"
    return None


def _stored_bytes(buffer) -> int:
    if buffer.data is not None and len(buffer.data):
        return len(buffer.data)
    return int(buffer.size or 0) if int(buffer.offset or 0) > 1 else 0


def _quantization_problem(quantization, shape) -> str | None:
    if quantization is None or quantization.scale is None or len(quantization.scale) <= 1:
        return None
    count, axis = len(quantization.scale), int(quantization.quantizedDimension)
    zero_points = 0 if quantization.zeroPoint is None else len(quantization.zeroPoint)
    if not 0 <= axis < len(shape) or shape[axis] != count:
        return f"has {count} per-channel scales along dimension {axis} of shape {shape}"
    if zero_points not in (0, count):
        return f"has {count} per-channel scales but {zero_points} zero points"
    return None


def _operator_problem(model, graph, codes, where: str) -> str | None:
    tensors = graph.tensors or []
    count = len(tensors)
    for index, operator in enumerate(graph.operators or []):
        if not 0 <= operator.opcodeIndex < len(codes):
            return f"operator {index}{where} has operator code {operator.opcodeIndex}; there are {len(codes)} codes"
        name = op_name(model, operator)
        label = f"operator {index} ({name}){where}"
        optional = OPTIONAL_INPUTS.get(name, ())
        for position, tensor in enumerate(int(i) for i in _indices(operator.inputs)):
            if tensor == -1 and (position in optional or name.startswith("CUSTOM:")):
                continue
            if not 0 <= tensor < count:
                return f"{label} reads input {position} from tensor {tensor}" + (
                    ", but that input is required" if tensor == -1 else f"; there are {count} tensors")
        for position, tensor in enumerate(int(i) for i in _indices(operator.outputs)):
            if not 0 <= tensor < count:
                return f"{label} writes output {position} to tensor {tensor}; there are {count} tensors"
            if is_constant(model, tensors[tensor]) and not tensors[tensor].isVariable:
                return f"{label} writes its output {position} into constant tensor {tensor}"
        for tensor in (int(i) for i in _indices(operator.intermediates)):
            if not 0 <= tensor < count:
                return f"{label} has intermediate tensor {tensor}; there are {count} tensors"
        for option in (operator.builtinOptions, operator.builtinOptions2):
            for key, value in (vars(option).items() if option is not None else ()):
                if "subgraphind" in key.lower():
                    for subgraph in (value if isinstance(value, (list, tuple)) else [value]):
                        if subgraph is not None and not 0 <= int(subgraph) < len(model.subgraphs):
                            return f"{label} calls subgraph {int(subgraph)}; there are {len(model.subgraphs)} subgraphs"
    return None


def _graph_io_problem(graph, buffers, where: str) -> str | None:
    tensors = graph.tensors or []
    for kind, indices in (("input", graph.inputs), ("output", graph.outputs)):
        for position, tensor in enumerate(int(i) for i in _indices(indices)):
            if not 0 <= tensor < len(tensors):
                return f"graph {kind} {position}{where} is tensor {tensor}; there are {len(tensors)} tensors"
            if kind == "input" and _stored_bytes(buffers[tensors[tensor].buffer]) and not tensors[tensor].isVariable:
                return f"graph input {position}{where} is constant tensor {tensor}"
    for tensor in (int(i) for i in _indices(getattr(graph, "variables", None))):
        if not 0 <= tensor < len(tensors):
            return f"variable tensor {tensor}{where} does not exist; there are {len(tensors)} tensors"
    return None


def _indices(values):
    return [] if values is None else values
