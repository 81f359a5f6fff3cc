#!/usr/bin/env python
"""Fuzzes nin-keras' .tflite loading with crafted files: no file, however crafted, may crash the process.

Run from the repository root (a few minutes per thousand mutants on 2 cores):

    .venv/bin/python tools/fuzz_tflite.py                      # 2,000 mutants -> docs/benchmarks/fuzz_tflite.md
    .venv/bin/python tools/fuzz_tflite.py --mutants 200 --out /tmp/f.md   # smoke run

Two small models are built with `nin_keras.build_nin` (the mnist variant on 8x8x1 digits, the cifar variant on
16x16x3, both at small widths) and exported by `nin_keras.exporting.export_targets` to tflite_float32 and
tflite_int8 (calibrated on data). Each mutant is one seeded change of one of those files: a field of the
flatbuffer changed through the schema's object API and the model packed again (operator code, operator
input/output, subgraph input/output, tensor buffer, shape, type and quantization, builtin code, signature
tensor, buffer data, an op option), or raw bytes flipped. Every mutant then goes through the public entry
point, `nin_keras.verification.load_artifact(path)` followed by `predict` on a few images, in a worker process
that keeps TensorFlow loaded across mutants and is started again when it dies.

Counted per mutant: rejected by the structural checker (`nin_keras.exporting.tflite_info.check_structure`),
rejected by the child-process guard (LiteRT crashed or failed in the child), refused later with another
package error, ran, and "parent crashed": the worker, a process calling nin-keras' API, died. That count
must be 0; the exit code is 1 otherwise. The tests reuse `mutants` (tests/test_reliability_round3_tflite.py).
"""

from __future__ import annotations

import argparse
import collections
import copy
import datetime
import io
import os
import platform
import shlex
import struct
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the tool runs from a checkout; the package need not be installed

TOOL = "tools/fuzz_tflite.py"
DEFAULT_OUT = ROOT / "docs" / "benchmarks" / "fuzz_tflite.md"
FIELD_MUTATIONS = ("opcode_index", "op_input", "op_output", "graph_io", "tensor_buffer", "tensor_shape",
                   "tensor_type", "quantization", "builtin_code", "signature_tensor", "buffer_data", "op_option")
MUTATIONS = (*FIELD_MUTATIONS, "byte_flip")
OUTCOMES = ("rejected by the checker", "rejected by the guard", "refused later (package error)", "ran",
            "parent crashed", "other exception")


# ------------------------------------------------------------------------------------------------ mutants


def _split_tail(data: bytes) -> tuple[bytes, bytes]:
    """(flatbuffer, appended archive): the metadata's label file is a zip after the model."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
            if infos:
                end = min(info.header_offset for info in infos)
                return data[:end], data[end:]
    except zipfile.BadZipFile:
        pass
    return data, b""


def _index_value(rng, size: int, *, signed: bool = True) -> int:
    """An index worth trying against a table of `size` entries: out of range, at the edge, or another valid one."""
    choices = [size, size + 1, 2**31 - 1, int(rng.integers(0, max(size, 1)))]
    if signed:
        choices += [-1, -1, -2, -(2**31)]
    else:
        choices += [2**32 - 1]
    return int(choices[int(rng.integers(len(choices)))])


def _dimension_value(rng) -> int:
    return int(rng.choice([-1, -2, 0, 1, 2, 3, 7, 64, 1 << 16, 1 << 20, 2**31 - 1]))


def _pick(rng, items):
    return items[int(rng.integers(len(items)))] if items else None


def _mutate_fields(model, schema, rng, kind: str) -> bool:
    """Applies one `kind` change to the unpacked `model`; False when the model has nothing of that kind."""
    graph = _pick(rng, model.subgraphs)
    tensors = graph.tensors or []
    operators = graph.operators or []
    if kind == "opcode_index":
        op = _pick(rng, operators)
        if op is None:
            return False
        op.opcodeIndex = _index_value(rng, len(model.operatorCodes or []), signed=False)
    elif kind in ("op_input", "op_output"):
        op = _pick(rng, operators)
        field = "inputs" if kind == "op_input" else "outputs"
        if op is None or getattr(op, field) is None or len(getattr(op, field)) == 0:
            return False
        values = [int(v) for v in getattr(op, field)]
        values[int(rng.integers(len(values)))] = _index_value(rng, len(tensors))
        setattr(op, field, values)
    elif kind == "graph_io":
        field = "inputs" if rng.integers(2) else "outputs"
        values = [int(v) for v in (getattr(graph, field) if getattr(graph, field) is not None else [])]
        if not values:
            return False
        values[int(rng.integers(len(values)))] = _index_value(rng, len(tensors))
        setattr(graph, field, values)
    elif kind == "tensor_buffer":
        tensor = _pick(rng, tensors)
        if tensor is None:
            return False
        tensor.buffer = _index_value(rng, len(model.buffers or []), signed=False)
    elif kind == "tensor_shape":
        tensor = _pick(rng, tensors)
        if tensor is None:
            return False
        shape = [int(d) for d in (tensor.shape if tensor.shape is not None else [])]
        action = int(rng.integers(4))
        if action == 0 and shape:  # one dimension changed
            shape[int(rng.integers(len(shape)))] = _dimension_value(rng)
        elif action == 1 and shape:  # one dimension dropped
            del shape[int(rng.integers(len(shape)))]
        elif action == 2:  # one added
            shape.insert(int(rng.integers(len(shape) + 1)), _dimension_value(rng))
        else:  # the shape signature changed instead (or made up)
            signature = [int(d) for d in (tensor.shapeSignature if tensor.shapeSignature is not None else shape)]
            if not signature:
                return False
            signature[int(rng.integers(len(signature)))] = _dimension_value(rng)
            tensor.shapeSignature = signature
        tensor.shape = shape
    elif kind == "tensor_type":
        tensor = _pick(rng, tensors)
        if tensor is None:
            return False
        tensor.type = int(rng.integers(0, 26))
    elif kind == "quantization":
        quantized = [t for t in tensors if t.quantization is not None and t.quantization.scale is not None
                     and len(t.quantization.scale)]
        tensor = _pick(rng, quantized)
        if tensor is None:
            return False
        q = tensor.quantization
        action = int(rng.integers(4))
        if action == 0:
            q.quantizedDimension = int(rng.choice([-1, 1, 2, 3, 4, 7, 2**31 - 1]))
        elif action == 1:
            q.scale = list(q.scale)[:-1] if len(q.scale) > 1 else list(q.scale) * int(rng.integers(2, 9))
        elif action == 2:
            q.zeroPoint = [] if q.zeroPoint is not None and len(q.zeroPoint) else [int(rng.integers(-300, 300))]
        else:
            q.scale = [float(rng.choice([0.0, -1.0, np.inf, np.nan, 1e-30, 1e30]))] * len(q.scale)
    elif kind == "builtin_code":
        code = _pick(rng, model.operatorCodes)
        if code is None:
            return False
        value = int(rng.integers(0, 220))
        code.builtinCode = value
        code.deprecatedBuiltinCode = min(value, 127)
        if rng.integers(3) == 0:
            code.version = int(rng.choice([0, 99, 2**31 - 1]))
    elif kind == "signature_tensor":
        signature = _pick(rng, model.signatureDefs)
        if signature is None:
            return False
        maps = list(signature.inputs or []) + list(signature.outputs or [])
        if not maps or rng.integers(4) == 0:
            signature.subgraphIndex = _index_value(rng, len(model.subgraphs), signed=False)
        else:
            _pick(rng, maps).tensorIndex = _index_value(rng, len(tensors), signed=False)
    elif kind == "buffer_data":
        filled = [b for b in (model.buffers or []) if b.data is not None and len(b.data)]
        buffer = _pick(rng, filled)
        if buffer is None:
            return False
        data = np.asarray(buffer.data, np.uint8)
        action = int(rng.integers(3))
        if action == 0:
            buffer.data = data[:int(rng.integers(len(data)))]
        elif action == 1:
            buffer.data = np.concatenate([data, np.zeros(int(rng.integers(1, 64)), np.uint8)])
        else:
            buffer.data = rng.integers(0, 256, len(data)).astype(np.uint8)
    elif kind == "op_option":
        with_options = [op for op in operators if op.builtinOptions is not None]
        op = _pick(rng, with_options)
        if op is None:
            return False
        fields = [name for name, value in vars(op.builtinOptions).items() if isinstance(value, (int, float))]
        if not fields:
            return False
        setattr(op.builtinOptions, _pick(rng, fields), int(rng.choice([-1, 0, 2, 7, 255, 2**31 - 1])))
    else:
        raise ValueError(f"unknown mutation {kind!r}")
    return True


def mutate(data: bytes, rng, kind: str | None = None, *, unpacked=None) -> tuple[str, bytes]:
    """One mutant of the .tflite `data`: (mutation kind, bytes). `kind` None draws one of MUTATIONS;
    `unpacked` is `data`'s flatbuffer unpacked once by the caller (copied here, never changed)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    flatbuffer, tail = _split_tail(data)
    for _ in range(100):
        chosen = kind or _pick(rng, MUTATIONS)
        if chosen == "byte_flip":
            flipped = bytearray(data)
            for _ in range(int(rng.integers(1, 5))):
                position = int(rng.integers(8, len(flipped)))  # past the root offset and identifier
                flipped[position] ^= 1 << int(rng.integers(8))
            return chosen, bytes(flipped)
        if unpacked is None:
            unpacked = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
        model = copy.deepcopy(unpacked)
        if not _mutate_fields(model, schema, rng, chosen):
            continue
        builder = flatbuffers.Builder(len(flatbuffer) + 1024)
        try:
            builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        except (struct.error, OverflowError, TypeError, ValueError):  # a value the field's type cannot hold
            continue
        return chosen, bytes(builder.Output()) + tail  # the packed label file stays after the model
    raise RuntimeError(f"no mutant of kind {kind!r} after 100 tries")


def mutants(base: dict, count: int, seed: int):
    """`count` seeded mutants of the files in `base` (name -> bytes), taken in turn: yields (number, base name,
    mutation kind, bytes). The same seed gives the same mutants."""
    from ai_edge_litert import schema_py_generated as schema

    rng = np.random.default_rng(seed)
    names = sorted(base)
    unpacked = {name: schema.ModelT.InitFromPackedBuf(bytearray(_split_tail(base[name])[0]), 0) for name in names}
    for number in range(count):
        name = names[number % len(names)]
        kind, data = mutate(base[name], rng, unpacked=unpacked[name])
        yield number, name, kind, data


# ------------------------------------------------------------------------------------------ base models


def build_bases(work: Path) -> dict[str, bytes]:
    """Two small models exported by nin-keras to tflite_float32 and tflite_int8: name -> file bytes."""
    import keras

    import nin_keras
    from nin_keras.exporting import export_targets

    bases = {}
    for name, variant, shape, width in (("mnist 8x8x1", "mnist", (8, 8, 1), 0.25),
                                        ("cifar 16x16x3", "cifar", (16, 16, 3), 0.1)):
        keras.utils.set_random_seed(0)
        model = nin_keras.build_nin(10, variant=variant, input_shape=shape, width_multiplier=width)
        rng = np.random.default_rng(0)
        data = (rng.uniform(0, 255, (64, *shape)).astype("float32"), rng.integers(0, 10, 64))
        folder = work / variant
        export_targets(model, folder, targets="tflite_float32,tflite_int8", data=data, progress=False)
        for kind in ("float32", "int8"):
            bases[f"{name} {kind}"] = (folder / f"model_{kind}.tflite").read_bytes()
    return bases


# ------------------------------------------------------------------------------------------------ worker


def check_one(path: Path, baseline: bool) -> dict:
    """What nin-keras' public entry points make of one file: {"outcome": one of OUTCOMES, ...}."""
    from nin_keras.errors import NinKerasError
    from nin_keras.exporting import check_edgetpu, describe_tflite
    from nin_keras.exporting.metadata import describe_metadata, read_metadata
    from nin_keras.exporting.tflite_guard import _run_in_child
    from nin_keras.verification import load_artifact

    result = {}
    if baseline:  # what LiteRT does with the file unchecked (in a child of this worker)
        verdict = _run_in_child(path.read_bytes(), None)
        result["baseline"] = "ran" if verdict is None else "crashed" if "crashed" in verdict else "refused"
    data = path.read_bytes()
    readers = (("describe_tflite", lambda: describe_tflite(path)), ("check_edgetpu", lambda: check_edgetpu(path)),
               ("read_metadata", lambda: describe_metadata(read_metadata(data))))
    for name, call in readers:  # pure-Python readers: nothing but the package's own errors
        try:
            call()
        except NinKerasError:
            pass
        except Exception as error:  # the failure this tool looks for
            return {**result, "outcome": "other exception", "message": f"{name}: {type(error).__name__}: {error}"}
    try:
        runner = load_artifact(path)
        runner.predict(np.zeros((3, *runner.input_shape), np.uint8))
        runner.predict(np.random.default_rng(0).integers(0, 256, (2, *runner.input_shape)).astype(np.uint8))
    except NinKerasError as error:
        message = " ".join(str(error).split()).replace(f"{path.parent}{os.sep}", "")  # no scratch paths in docs
        if "structural check" in message or "flatbuffer cannot be read" in message:
            outcome = "rejected by the checker"
        elif message.startswith(("LiteRT crashed", "LiteRT cannot run", "LiteRT did not finish")):
            outcome = "rejected by the guard"
            result["guard"] = "crashed" if message.startswith("LiteRT crashed") else "refused"
        else:
            outcome = "refused later (package error)"
        return {**result, "outcome": outcome, "message": message}
    except Exception as error:  # the failure this tool looks for
        return {**result, "outcome": "other exception", "message": f"{type(error).__name__}: {error}"}
    return {**result, "outcome": "ran"}


def worker_main(baseline: bool) -> None:
    """Reads mutant paths from stdin, one a line; writes one JSON result a line to stdout."""
    import json

    from nin_keras.process_state import quiet_tensorflow

    quiet_tensorflow()
    out = os.fdopen(os.dup(1), "w")
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # LiteRT and TensorFlow print on fd 1 too: keep it clean
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        out.write(json.dumps(check_one(Path(line.strip()), baseline)) + "\n")
        out.flush()


class Worker:
    """A worker process (`--worker`) that keeps TensorFlow loaded; started again when it dies."""

    def __init__(self, baseline: bool):
        self.baseline = baseline
        self.process = None
        self.restarts = 0

    def _start(self):
        import subprocess

        command = [sys.executable, str(Path(__file__).resolve()), "--worker"]
        command += [] if self.baseline else ["--no-baseline"]
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3")
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True, env=env)
        self.process.stdout.readline()  # {"ready": true}

    def check(self, path: Path) -> dict:
        import json

        if self.process is None or self.process.poll() is not None:
            self._start()
        self.process.stdin.write(f"{path}\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if line:
            return json.loads(line)
        code = self.process.wait()
        self.process, self.restarts = None, self.restarts + 1
        return {"outcome": "parent crashed", "message": f"worker exit code {code}"}

    def close(self):
        if self.process is not None and self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=60)


# ------------------------------------------------------------------------------------------------ run


def run_fuzz(count: int, seed: int, *, baseline: bool, workers: int, keep: Path | None) -> dict:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    started = time.time()
    with tempfile.TemporaryDirectory(prefix="fuzz_tflite_") as tmp:
        tmp = Path(tmp)
        bases = build_bases(tmp / "bases")
        generator = mutants(bases, count, seed)
        lock = threading.Lock()
        records = []

        def drive(worker: Worker):
            while True:
                with lock:
                    item = next(generator, None)
                if item is None:
                    return
                number, name, kind, data = item
                path = tmp / f"mutant_{number}.tflite"
                path.write_bytes(data)
                record = {"number": number, "base": name, "kind": kind, **worker.check(path)}
                if keep is not None and record["outcome"] in ("parent crashed", "other exception"):
                    keep.mkdir(parents=True, exist_ok=True)
                    (keep / path.name).write_bytes(data)
                path.unlink()
                with lock:
                    records.append(record)
                    if len(records) % 100 == 0:
                        print(f"{len(records)} of {count} mutants, {time.time() - started:.0f} s", file=sys.stderr)

        pool = [Worker(baseline) for _ in range(workers)]
        try:
            with ThreadPoolExecutor(workers) as executor:
                list(executor.map(drive, pool))
        finally:
            for worker in pool:
                worker.close()
    return {"records": sorted(records, key=lambda r: r["number"]), "seconds": time.time() - started,
            "bases": {name: len(data) for name, data in bases.items()}}


def render(result: dict, args, command: str) -> str:
    records = result["records"]
    outcomes = collections.Counter(r["outcome"] for r in records)
    by_kind = collections.defaultdict(collections.Counter)
    for r in records:
        by_kind[r["kind"]][r["outcome"]] += 1
    guard = collections.Counter(r.get("guard") for r in records if r["outcome"] == "rejected by the guard")
    lines = [
        "# Fuzzing .tflite loading",
        "",
        f"Written by `{TOOL}` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.",
        "",
        f"- Command: `{command}`",
        f"- Machine: {_machine()}",
        f"- Seed {args.seed}; {len(records):,} mutants in {result['seconds']:.0f} s with {args.workers} worker "
        "processes",
        "- Base files (exported by `nin_keras.exporting.export_targets` from untrained seeded models): "
        + ", ".join(f"{name} ({size:,} bytes)" for name, size in result["bases"].items()),
        "- Each mutant: one field of the flatbuffer changed through the schema's object API and packed again, or "
        "1-4 bits flipped; then `describe_tflite`, `check_edgetpu`, `read_metadata` and "
        "`load_artifact(path).predict(...)` in a worker process that keeps TensorFlow loaded",
        "",
        "## Outcomes",
        "",
        "| outcome | mutants |",
        "|---|---:|",
        f"| tried | {len(records):,} |",
    ]
    for outcome in OUTCOMES:
        label = outcome
        if outcome == "rejected by the guard" and guard:
            label += f" (LiteRT crashed in the child: {guard.get('crashed', 0)}, refused: {guard.get('refused', 0)})"
        if outcome in ("parent crashed", "other exception"):
            label += " (must be 0)"
        lines.append(f"| {label} | {outcomes.get(outcome, 0):,} |")
    if any("baseline" in r for r in records):
        base = collections.Counter(r["baseline"] for r in records)
        lines += ["", f"Without nin-keras' checks (the same bytes given to LiteRT in a child process: load, allocate, "
                      f"one invoke on zeros at batch 1 and 2): {base.get('crashed', 0):,} crashed the process, "
                      f"{base.get('refused', 0):,} were refused with an exception, {base.get('ran', 0):,} ran."]
    lines += ["", "## By mutation", "", "| mutation | " + " | ".join(OUTCOMES) + " |",
              "|---|" + "---:|" * len(OUTCOMES)]
    for kind in MUTATIONS:
        counts = by_kind.get(kind, {})
        lines.append(f"| {kind} | " + " | ".join(f"{counts.get(o, 0):,}" for o in OUTCOMES) + " |")
    lines += ["", "## A message of each kind", ""]
    for outcome in OUTCOMES:
        example = next((r for r in records if r["outcome"] == outcome and r.get("message")), None)
        if example is not None:
            lines.append(f"- {outcome} ({example['kind']} of {example['base']}): {example['message'][:400]}")
    return "\n".join(lines) + "\n"


def _machine() -> str:
    import importlib.metadata

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    versions = []
    for package in ("tensorflow", "ai-edge-litert", "numpy"):
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return (f"{cpu}, {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()} cores; "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}, " + ", ".join(versions))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mutants", type=int, default=2000, help="mutants to try (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the mutations (default 0)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false",
                        help="skip running each mutant through LiteRT unchecked (the baseline count)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="Markdown report (default docs/benchmarks/"
                                                                "fuzz_tflite.md)")
    parser.add_argument("--keep", default=None, help="folder to keep mutants that crashed a worker or raised "
                                                     "a non-package exception")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker_main(args.baseline)
        return 0
    command = "python " + " ".join([TOOL, *map(shlex.quote, sys.argv[1:] if argv is None else argv)])
    result = run_fuzz(args.mutants, args.seed, baseline=args.baseline, workers=args.workers,
                      keep=Path(args.keep) if args.keep else None)
    text = render(result, args, command)
    Path(args.out).write_text(text, encoding="utf-8")
    print(text)
    bad = sum(1 for r in result["records"] if r["outcome"] in ("parent crashed", "other exception"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
