"""Static Coral Edge TPU compatibility check of a .tflite, read from its flatbuffer.

The Edge TPU compiler (`edgetpu_compiler`, x86-64 Debian only, from Coral's apt repository) is the
authority; when it is on PATH `run_edgetpu_compiler` runs it. Everywhere else `check_edgetpu` checks what the
compiler requires, from the file itself (https://coral.ai/docs/edgetpu/models-intro/):

- every op is in the Edge TPU's op list, at a version the last compiler (16.0, 2021) still parses: it
  rejects newer builtin versions outright ("Didn't find op for builtin opcode 'CONV_2D' version '6'");
- every tensor is 8-bit (int8/uint8), except int32 constants (biases, shapes, axes);
- all shapes are static (no -1 in any shape signature), batch 1.

The compiler maps ops up to the first unsupported one; the rest runs on the CPU. So the findings also name
the first op that would leave the Edge TPU.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from nin_keras._atomic import write_text
from nin_keras.exporting.tflite_info import (
    flatbuffer_text,
    io_description,
    is_constant,
    op_name,
    read_model,
    tensor_dtype,
    tensor_shape,
)

# Edge TPU op list -> highest builtin version that compiler 16.0 accepts. The versions are those of the
# TFLite runtime the compiler was built with (TF 2.5 era); CONV_2D v6 and TRANSPOSE_CONV v3/v4 are
# documented rejections (google-coral/edgetpu#631, #147, #845). Conservative: the compiler may accept more.
EDGETPU_OPS = {
    "ADD": 4,
    "AVERAGE_POOL_2D": 3,
    "CONCATENATION": 3,
    "CONV_2D": 5,
    "DEPTHWISE_CONV_2D": 6,
    "EXPAND_DIMS": 1,
    "FULLY_CONNECTED": 9,
    "L2_NORMALIZATION": 2,
    "LOGISTIC": 3,
    "MAXIMUM": 4,
    "MAX_POOL_2D": 3,
    "MEAN": 3,
    "MINIMUM": 4,
    "MUL": 4,
    "PACK": 2,
    "PAD": 2,
    "PRELU": 1,
    "QUANTIZE": 2,
    "REDUCE_MAX": 2,
    "REDUCE_MIN": 2,
    "RELU": 2,
    "RELU6": 2,
    "RELU_N1_TO_1": 1,
    "RESHAPE": 1,
    "RESIZE_BILINEAR": 3,
    "RESIZE_NEAREST_NEIGHBOR": 3,
    "RSQRT": 2,
    "SLICE": 3,
    "SOFTMAX": 3,
    "SPACE_TO_DEPTH": 2,
    "SPLIT": 3,
    "SQUARED_DIFFERENCE": 1,
    "SQUEEZE": 1,
    "STRIDED_SLICE": 4,
    "SUB": 3,
    "SUM": 1,
    "TANH": 3,
    "TRANSPOSE": 3,
    "TRANSPOSE_CONV": 2,
}
EIGHT_BIT = ("int8", "uint8")


def check_edgetpu(path) -> dict:
    """Checks a .tflite against the Edge TPU compiler's requirements (see the module docstring).

    Args:
        path: a .tflite file.

    Returns:
        dict with keys: path, compatible (bool), problems (list of one-line strings, empty when
        compatible), ops (list of {op, version, max_version, supported} in graph order),
        first_unsupported_op (index and name, or None: where the compiler would stop mapping),
        all_tensors_8bit, static_shapes, batch_size, input, output ({name, dtype, shape, quantization}),
        compiler ({available: bool} plus the run's results when it was run, see `run_edgetpu_compiler`).
    """
    model = read_model(path)
    problems = []
    if len(model.subgraphs) != 1:
        problems.append(f"{len(model.subgraphs)} subgraphs; the Edge TPU compiler handles one.")
    graph = model.subgraphs[0]

    ops, first_unsupported = [], None
    for index, operator in enumerate(graph.operators or []):
        name = op_name(model, operator)
        version = int(model.operatorCodes[operator.opcodeIndex].version)
        max_version = EDGETPU_OPS.get(name)
        supported = max_version is not None and version <= max_version
        operand_types = {tensor_dtype(graph.tensors[i]) for i in list(operator.inputs) + list(operator.outputs)
                         if i >= 0 and not is_constant(model, graph.tensors[i])}
        if supported and not operand_types <= set(EIGHT_BIT):
            supported = False
            problems.append(f"op {index} {name} runs on {', '.join(sorted(operand_types))} data; the Edge TPU "
                            "runs 8-bit ops only.")
        elif max_version is None:
            problems.append(f"op {index} {name} is not in the Edge TPU op list.")
        elif version > max_version:
            problems.append(f"op {index} {name} version {version} is newer than the Edge TPU compiler accepts "
                            f"(up to {max_version}).")
        if not supported and first_unsupported is None:
            first_unsupported = {"index": index, "op": name}
        ops.append({"op": name, "version": version, "max_version": max_version, "supported": supported})

    bad_tensors = []
    dynamic = []
    for tensor in graph.tensors:
        dtype = tensor_dtype(tensor)
        label = flatbuffer_text(tensor.name)
        constant = is_constant(model, tensor)
        if dtype not in EIGHT_BIT and not (constant and dtype == "int32"):
            bad_tensors.append(f"{label} ({dtype})")
        if any(d < 0 for d in tensor_shape(tensor)):
            dynamic.append(label)
    if bad_tensors:
        shown = ", ".join(bad_tensors[:5]) + (f" and {len(bad_tensors) - 5} more" if len(bad_tensors) > 5 else "")
        problems.append(f"{len(bad_tensors)} tensors are not 8-bit: {shown}.")
    if dynamic:
        problems.append(f"{len(dynamic)} tensors have dynamic shapes (e.g. {dynamic[0]}); export with batch 1.")

    inputs = [io_description(graph.tensors[i]) for i in graph.inputs]
    outputs = [io_description(graph.tensors[i]) for i in graph.outputs]
    batch = inputs[0]["shape"][0] if inputs and inputs[0]["shape"] else None
    if batch is not None and batch != 1 and not dynamic:
        problems.append(f"input batch size is {batch}; the Edge TPU runs batch 1.")
    return {
        "path": str(path),
        "compatible": not problems,
        "problems": problems,
        "ops": ops,
        "first_unsupported_op": first_unsupported,
        "all_tensors_8bit": not bad_tensors,
        "static_shapes": not dynamic,
        "batch_size": batch,
        "input": inputs[0] if inputs else None,
        "output": outputs[0] if outputs else None,
        "compiler": {"available": shutil.which("edgetpu_compiler") is not None},
    }


def format_findings(findings: dict) -> list[str]:
    """The findings as short lines for a terminal."""
    verdict = "compatible" if findings["compatible"] else "NOT compatible"
    lines = [f"Edge TPU check of {Path(findings['path']).name}: {verdict} (static check of the flatbuffer)"]
    counts = {}
    for op in findings["ops"]:
        key = (op["op"], op["version"], op["supported"])
        counts[key] = counts.get(key, 0) + 1
    for (name, version, supported), count in counts.items():
        lines.append(f"  {'ok ' if supported else 'NO '} {name} v{version} x{count}")
    io = findings.get("input") or {}
    lines.append(f"  input {io.get('dtype')} {io.get('shape')}, all tensors 8-bit: {findings['all_tensors_8bit']}, "
                 f"static shapes: {findings['static_shapes']}")
    for problem in findings["problems"]:
        lines.append(f"  problem: {problem}")
    compiler = findings.get("compiler") or {}
    if compiler.get("ran"):
        lines.append(f"  edgetpu_compiler: exit {compiler.get('returncode')}, log {compiler.get('log')}")
    elif not compiler.get("available"):
        lines.append("  edgetpu_compiler not on PATH (Coral's apt repository, x86-64 Debian): static check only")
    return lines


def run_edgetpu_compiler(path, out_dir, *, timeout: float = 300) -> dict:
    """Runs `edgetpu_compiler` on `path` if it is on PATH; keeps its log and the *_edgetpu.tflite in out_dir.

    Returns:
        {available: False} without the compiler; else {available, ran, returncode, log (file name),
        output (the *_edgetpu.tflite name or None), summary (its stdout's last lines)}.
    """
    compiler = shutil.which("edgetpu_compiler")
    if compiler is None:
        return {"available": False}
    out_dir = Path(out_dir)
    try:
        result = subprocess.run([compiler, "-s", "-o", str(out_dir), str(path)], capture_output=True, text=True,
                                timeout=timeout, check=False)
        output_text, returncode = result.stdout + result.stderr, result.returncode
    except (OSError, subprocess.TimeoutExpired) as error:
        output_text, returncode = f"edgetpu_compiler failed to run: {error}", None
    log_name = "edgetpu_compiler.txt"

    write_text(out_dir / log_name, output_text)
    compiled = out_dir / f"{Path(path).stem}_edgetpu.tflite"
    return {
        "available": True,
        "ran": True,
        "returncode": returncode,
        "log": log_name,
        "output": compiled.name if compiled.exists() else None,
        "summary": output_text.strip().splitlines()[-5:],
    }


__all__ = ["EDGETPU_OPS", "check_edgetpu", "format_findings", "run_edgetpu_compiler"]
