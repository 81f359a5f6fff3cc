"""Reading a .tflite flatbuffer: input/output types and quantization, op codes and versions, tensors.

Uses the flatbuffer schema shipped with ai_edge_litert (no interpreter needed), so it also describes models
that this machine's runtime could not run.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ai_edge_litert import schema_py_generated as schema

from nin_keras.checks import check_path
from nin_keras.errors import InvalidInputError


def _names(enum_class) -> dict:
    return {value: name for name, value in vars(enum_class).items() if not name.startswith("_")}


def read_model(source):
    """Returns the unpacked flatbuffer (`ModelT`) of a .tflite path or bytes."""
    if isinstance(source, (bytes, bytearray)):
        data, label = bytes(source), "model bytes"
    else:
        path = Path(source)
        check_path("TFLite file", path, kind="file")
        data, label = path.read_bytes(), str(path)
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise InvalidInputError(f"{label} is not a TFLite model (no TFL3 flatbuffer identifier).")
    try:
        return schema.ModelT.InitFromPackedBuf(data, 0)
    except Exception as error:  # a truncated or damaged flatbuffer raises struct/index errors
        raise InvalidInputError(f"{label} is a damaged TFLite model: {error}") from None


def op_name(model, operator) -> str:
    code = model.operatorCodes[operator.opcodeIndex]
    # Builtin codes above 127 live in `builtinCode`; older files carry them in `deprecatedBuiltinCode`.
    value = max(code.builtinCode, code.deprecatedBuiltinCode)
    if value == schema.BuiltinOperator.CUSTOM:
        custom = code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
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
        return [float(q.scale[0]), int(q.zeroPoint[0]) if q.zeroPoint is not None else 0]
    return {"per_channel": len(q.scale), "axis": int(q.quantizedDimension)}


def is_constant(model, tensor) -> bool:
    buffer = model.buffers[tensor.buffer] if 0 <= tensor.buffer < len(model.buffers) else None
    has_data = buffer is not None and buffer.data is not None and len(buffer.data) > 0
    return bool(has_data or (buffer is not None and getattr(buffer, "size", 0)))


def io_description(tensor) -> dict:
    name = tensor.name.decode() if isinstance(tensor.name, bytes) else tensor.name
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
