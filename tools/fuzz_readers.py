#!/usr/bin/env python
"""Seeded mutation fuzzer for the data-file readers of `nin_keras.data.formats`.

Run from the repository root:

    .venv/bin/python tools/fuzz_readers.py --count 3000   # docs/benchmarks/fuzz_readers.md and .json
    .venv/bin/python tools/fuzz_readers.py --count 50 --out /tmp/f.md   # smoke check

Readers fuzzed, each from small valid files in the real formats: IDX gzipped and raw (`read_idx`), a CIFAR
batch and a CIFAR meta pickle as the original (Python 2 cPickle) and Keras-era (Python 3) files are written
(`parse_cifar_batch`, `parse_cifar_meta`), and Keras' `mnist.npz` (`read_mnist_npz`). Mutations: byte flips,
truncation, insertion and deletion of random bytes, and field-level changes (IDX header counts, type and rank;
pickle opcodes replaced, dropped or doubled and their integer arguments changed; .npy header text in a
well-formed zip). The first CIFAR batch case is the exact case of issue 24: the first NONE of the numpy dtype
state turned into BINPUT, which made numpy itself segfault.

The mutants are read in a child process (numpy only, never TensorFlow) under a memory limit (RLIMIT_AS): a
case passes when the reader returns or raises the package's own error (`NinKerasError`); any other exception,
a crash of the child (restarted after the crashing case) or a peak memory above the bound is a failure.
Counts per reader: tried / rejected cleanly / accepted / failed / crashed / peak memory. Exit code 1 on any
failure or crash. tests/test_reliability_round3_readers.py runs a few hundred cases per reader in CI.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import pickle
import pickletools
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
READERS = ("idx_gz", "idx_raw", "cifar_batch", "cifar_meta", "mnist_npz")
DEFAULT_MEMORY_LIMIT = 2 << 30  # RLIMIT_AS of the child: address space, numpy's own included
DEFAULT_PEAK_BOUND = 512 << 20  # resident memory the child may reach (small files: a few MB is normal)


# ------------------------------------------------------------------------------------- valid files, real formats


class _Py2Pickler(pickle._Pickler):
    """Writes protocol 2 as Python 2's cPickle wrote the CIFAR files: every string (text or bytes) as a byte
    string (SHORT_BINSTRING / BINSTRING) and numpy's names under `numpy.core`."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str

    def save_global(self, obj, name=None):
        module = pickle.whichmodule(obj, name or obj.__qualname__)
        module = getattr(obj, "__module__", module)
        if module.startswith("numpy._core"):
            module = "numpy.core" + module[len("numpy._core"):]
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)

    dispatch[type] = save_global


def py2_pickle(obj) -> bytes:
    """`obj` pickled the way the original CIFAR python files are (Python 2 cPickle, protocol 2)."""
    buffer = io.BytesIO()
    _Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def cifar_batch(n: int = 4, *, seed: int = 0, label_key: str = "labels") -> dict:
    """A CIFAR batch dict as the original files hold it (Python 2 str keys and values, read back as bytes)."""
    rng = np.random.default_rng(seed)
    return {"batch_label": "training batch 1 of 5", label_key: [int(v) for v in rng.integers(0, 10, n)],
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "filenames": [f"image_{i:05d}.png" for i in range(n)]}


def cifar_meta() -> dict:
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    return {"num_cases_per_batch": 10000, "label_names": names, "num_vis": 3072}


def dtype_state_none_offset(data: bytes) -> int:
    """Offset of the first NONE in the numpy dtype state of a CIFAR batch pickle (issue 24's mutation point)."""
    seen_dtype = False
    for opcode, argument, position in pickletools.genops(data):
        if opcode.name in ("GLOBAL", "STACK_GLOBAL") and argument and "dtype" in str(argument):
            seen_dtype = True
        elif seen_dtype and opcode.name == "NONE":
            return position
    raise ValueError("no dtype state in this pickle")


def issue_24_mutant(data: bytes) -> bytes:
    """The exact crafted file of issue 24: the dtype state's first NONE turned into BINPUT."""
    offset = dtype_state_none_offset(data)
    return data[:offset] + pickle.BINPUT + data[offset + 1:]


def idx_bytes(array: np.ndarray) -> bytes:
    array = np.asarray(array, dtype=np.uint8)
    return struct.pack(">HBB", 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape) + \
        array.tobytes()


def npz_bytes(arrays: dict, headers: dict | None = None) -> bytes:
    """An .npz (stored zip) of `arrays`; `headers` replaces the .npy header dict text of some members."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for key, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, array, allow_pickle=False)
            data = member.getvalue()
            if headers and key in headers:
                data = npy_with_header(data, headers[key])
            archive.writestr(f"{key}.npy", data)
    return buffer.getvalue()


def npy_with_header(npy: bytes, header_text: str) -> bytes:
    """A .npy (version 1.0) whose header dict text is `header_text`, padded as numpy pads it."""
    header_length = struct.unpack("<H", npy[8:10])[0]
    body = npy[10 + header_length:]
    text = header_text.encode("latin1")
    text += b" " * ((64 - (10 + len(text) + 1) % 64) % 64) + b"\n"
    return npy[:8] + struct.pack("<H", len(text)) + text + body


def mnist_arrays(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"x_train": rng.integers(0, 256, (3, 28, 28), dtype=np.uint8), "y_train": np.array([1, 2, 3], np.uint8),
            "x_test": rng.integers(0, 256, (2, 28, 28), dtype=np.uint8), "y_test": np.array([4, 5], np.uint8)}


def base_files(reader: str) -> list[bytes]:
    """The valid files each reader's mutants start from."""
    if reader in ("idx_gz", "idx_raw"):
        rng = np.random.default_rng(0)
        files = [idx_bytes(rng.integers(0, 256, (3, 28, 28))), idx_bytes(rng.integers(0, 10, 7))]
        return [gzip.compress(f, mtime=0) for f in files] if reader == "idx_gz" else files
    if reader == "cifar_batch":
        return [py2_pickle(cifar_batch()), pickle.dumps({k.encode(): (v.encode() if isinstance(v, str) else
                                                                       [s.encode() for s in v] if k == "filenames"
                                                                       else v)
                                                         for k, v in cifar_batch(3, seed=1).items()}, protocol=2)]
    if reader == "cifar_meta":
        meta = cifar_meta()
        return [py2_pickle(meta), pickle.dumps({k.encode(): ([n.encode() for n in v] if isinstance(v, list) else v)
                                                for k, v in meta.items()}, protocol=2)]
    if reader == "mnist_npz":
        return [npz_bytes(mnist_arrays())]
    raise ValueError(f"unknown reader {reader!r}; known: {', '.join(READERS)}")


# -------------------------------------------------------------------------------------------------- mutations

_OPCODES = [op.code.encode("latin1") for op in pickletools.opcodes]
_BIG_COUNTS = [0, 1, 2**31 - 1, 2**31, 2**32 - 1, 3_000_000_000, 60000, 10**6, 47_040_000]


def _byte_mutation(rng, data: bytes) -> tuple[bytes, str]:
    kind = rng.integers(5)
    if kind == 0 or len(data) < 2:
        out = bytearray(data)
        for _ in range(int(rng.integers(1, 5))):
            if out:
                out[int(rng.integers(len(out)))] ^= int(rng.integers(1, 256))
        return bytes(out), "byte flips"
    if kind == 1:
        return data[:int(rng.integers(len(data)))], "truncation"
    if kind == 2:
        at = int(rng.integers(len(data) + 1))
        return data[:at] + rng.bytes(int(rng.integers(1, 16))) + data[at:], "insertion"
    if kind == 3:
        at = int(rng.integers(len(data)))
        return data[:at] + data[at + int(rng.integers(1, 16)):], "deletion"
    at = int(rng.integers(len(data)))
    return data[:at] + bytes([int(rng.integers(256))]) * int(rng.integers(1, 64)) + data[at + 1:], "byte run"


def _idx_field_mutation(rng, raw: bytes) -> tuple[bytes, str]:
    ndim = raw[3]
    field = int(rng.integers(3 + ndim))
    out = bytearray(raw)
    if field == 0:
        out[2] = int(rng.choice([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, int(rng.integers(256))]))
        return bytes(out), "IDX type code"
    if field == 1:
        out[3] = int(rng.integers(0, 8))
        return bytes(out), "IDX rank"
    if field == 2:
        return bytes(out[:4 + 4 * ndim]), "IDX header only"
    dim = field - 3
    value = int(rng.choice(_BIG_COUNTS)) if rng.random() < 0.6 else int(rng.integers(2**32))
    out[4 + 4 * dim: 8 + 4 * dim] = value.to_bytes(4, "big")
    return bytes(out), f"IDX count {dim} = {value}"


def _pickle_field_mutation(rng, data: bytes) -> tuple[bytes, str]:
    ops = list(pickletools.genops(data))
    opcode, argument, position = ops[int(rng.integers(len(ops)))]
    end = next((p for _, _, p in ops if p > position), len(data))
    kind = rng.integers(4)
    if kind == 0:
        new = _OPCODES[int(rng.integers(len(_OPCODES)))]
        return data[:position] + new + data[position + 1:], f"opcode {opcode.name} -> {new!r}"
    if kind == 1:
        return data[:position] + data[end:], f"dropped {opcode.name}"
    if kind == 2:
        return data[:end] + data[position:end] + data[end:], f"doubled {opcode.name}"
    ints = [(op, arg, pos) for op, arg, pos in ops if op.name in ("BININT", "BININT1", "BININT2", "BINPUT", "BINGET")]
    if not ints:
        return data, "no integer argument"
    op, arg, pos = ints[int(rng.integers(len(ints)))]
    width = {"BININT": 4, "BININT1": 1, "BININT2": 2, "BINPUT": 1, "BINGET": 1}[op.name]
    value = int(rng.integers(2 ** (8 * width)))
    return data[:pos + 1] + value.to_bytes(width, "little") + data[pos + 1 + width:], f"{op.name} {arg} -> {value}"


def _npz_field_mutation(rng) -> tuple[bytes, str]:
    arrays = mnist_arrays()
    key = ("x_train", "y_train", "x_test", "y_test")[int(rng.integers(4))]
    shapes = ["(1000000000000000000000000000000,)", "(3, 28, 28)", "(-1, 28)", "(2**64,)", "(3, 28, 29)", "()",
              "(7,)", "(3000000000, 1)", "(1, 1, 1, 1, 1, 1)", "'x'", "(3, 28, 28"]
    descrs = ["'|u1'", "'<i8'", "'|O'", "'<f8'", "'|V10'", "'>u2'", "12", "'|u1"]
    shape = shapes[int(rng.integers(len(shapes)))]
    descr = descrs[int(rng.integers(len(descrs)))] if rng.random() < 0.3 else "'|u1'"
    header = f"{{'descr': {descr}, 'fortran_order': {rng.choice(['False', 'True', '0'])}, 'shape': {shape}, }}"
    if rng.random() < 0.2:
        header = header[:int(rng.integers(len(header)))]  # unterminated: numpy's tokenizer errors
    return npz_bytes(arrays, {key: header}), f"npy header of {key}: {header}"


def mutant(reader: str, index: int, seed: int) -> tuple[bytes, str]:
    """The `index`-th mutant of `reader` (deterministic in seed and index, so a restarted child goes on)."""
    bases = base_files(reader)
    if reader == "cifar_batch" and index == 0:
        return issue_24_mutant(bases[0]), "issue 24: dtype state NONE -> BINPUT"
    rng = np.random.default_rng([seed, READERS.index(reader), index])
    base = bases[int(rng.integers(len(bases)))]
    field_level = rng.random() < 0.5
    if reader in ("idx_gz", "idx_raw") and field_level:
        raw = gzip.decompress(base) if reader == "idx_gz" else base
        data, what = _idx_field_mutation(rng, raw)
        return (gzip.compress(data, mtime=0) if reader == "idx_gz" else data), what
    if reader in ("cifar_batch", "cifar_meta") and field_level:
        data, what = base, []
        for _ in range(int(rng.integers(1, 3))):
            try:
                data, step = _pickle_field_mutation(rng, data)
            except ValueError:  # already unparsable by pickletools: a byte mutation then
                data, step = _byte_mutation(rng, data)
            what.append(step)
        return data, "; ".join(what)
    if reader == "mnist_npz" and field_level:
        return _npz_field_mutation(rng)
    return _byte_mutation(rng, base)


# ------------------------------------------------------------------------------------------------ the child


def _read(reader: str, data: bytes, scratch: Path):
    from nin_keras.data import formats

    if reader == "cifar_batch":
        return formats.parse_cifar_batch(data, source="data_batch_1", label_key="labels")
    if reader == "cifar_meta":
        return formats.parse_cifar_meta(data, source="batches.meta", names_key="label_names")
    path = scratch / {"idx_gz": "x.gz", "idx_raw": "x", "mnist_npz": "mnist.npz"}[reader]
    path.write_bytes(data)
    if reader == "mnist_npz":
        return formats.read_mnist_npz(path)
    return formats.read_idx(path)


def _peak_rss() -> int:
    """This process's peak resident memory in bytes. VmHWM, not ru_maxrss: Linux carries ru_maxrss over from
    the forking parent across exec, so a child of a big pytest process would report the parent's size."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child_main(readers: list[str], count: int, seed: int, start: int, memory_limit: int) -> None:
    """Reads the mutants, one line of JSON per case on stdout (flushed: a crash leaves the case it died on)."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    from nin_keras.errors import NinKerasError

    with tempfile.TemporaryDirectory() as scratch:
        for reader in readers:
            for index in range(start if reader == readers[0] else 0, count):
                data, what = mutant(reader, index, seed)
                print(json.dumps({"reader": reader, "index": index, "start": True}), flush=True)
                try:
                    _read(reader, data, Path(scratch))
                    outcome, detail = "accepted", ""
                except NinKerasError as error:
                    outcome, detail = "rejected", type(error).__name__
                except BaseException as error:  # noqa: BLE001 - every other exception is what we look for
                    outcome, detail = "failed", f"{type(error).__name__}: {str(error)[:300]}"
                peak = _peak_rss()
                print(json.dumps({"reader": reader, "index": index, "outcome": outcome, "detail": detail,
                                  "mutation": what[:200], "peak": peak}), flush=True)
    print(json.dumps({"tensorflow_imported": any(m.split(".")[0] == "tensorflow" for m in sys.modules)}), flush=True)


# ----------------------------------------------------------------------------------------------- the parent


def _empty_counts() -> dict:
    return {"tried": 0, "rejected": 0, "accepted": 0, "failed": 0, "crashed": 0, "peak_bytes": 0, "problems": [],
            "case_0": "not run"}


def fuzz(readers=READERS, *, count: int = 300, seed: int = 0, memory_limit: int = DEFAULT_MEMORY_LIMIT,
         peak_bound: int = DEFAULT_PEAK_BOUND, one_child: bool = True, timeout: float = 600) -> dict:
    """Fuzzes `readers` with `count` mutants each in child processes; returns {reader: counts} plus "problems".

    one_child: all readers in one child (restarted only after a crash); else one child per reader, so each
    reader's peak memory is its own.
    """
    results = {reader: _empty_counts() for reader in readers}
    python_path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": python_path, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    groups = [list(readers)] if one_child else [[reader] for reader in readers]
    tensorflow_imported = False
    for group in groups:
        pending, start = list(group), 0
        while pending:
            command = [sys.executable, str(Path(__file__).resolve()), "--child", ",".join(pending), "--count",
                       str(count), "--seed", str(seed), "--start", str(start), "--memory-limit", str(memory_limit)]
            process = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
            last_started = None
            for line in process.stdout.splitlines():
                record = json.loads(line)
                if "tensorflow_imported" in record:
                    tensorflow_imported |= record["tensorflow_imported"]
                elif record.get("start"):
                    last_started = record
                else:
                    counts = results[record["reader"]]
                    counts["tried"] += 1
                    counts[record["outcome"]] += 1
                    counts["peak_bytes"] = max(counts["peak_bytes"], record["peak"])
                    if record["index"] == 0:
                        counts["case_0"] = f"{record['outcome']} ({record['detail'] or 'no error'})"
                    if record["outcome"] == "failed":
                        counts["problems"].append(f"case {record['index']} ({record['mutation']}): {record['detail']}")
                    last_started = None
            if process.returncode == 0:
                break
            if last_started is None:  # died outside a case: nothing to resume from
                raise RuntimeError(f"fuzz child failed (exit {process.returncode}): {process.stderr[-2000:]}")
            reader, index = last_started["reader"], last_started["index"]
            counts = results[reader]
            counts["tried"] += 1
            counts["crashed"] += 1
            if index == 0:
                counts["case_0"] = f"crashed (exit {process.returncode})"
            counts["problems"].append(f"case {index} ({mutant(reader, index, seed)[1][:200]}): child died with exit "
                                      f"{process.returncode}")
            pending = pending[pending.index(reader):]
            start = index + 1
            if start >= count:
                pending, start = pending[1:], 0
    for counts in results.values():
        if counts["peak_bytes"] > peak_bound:
            counts["problems"].append(f"peak memory {counts['peak_bytes'] >> 20} MiB above the bound "
                                      f"{peak_bound >> 20} MiB")
    if tensorflow_imported:
        for counts in results.values():
            counts["problems"].append("the child imported TensorFlow (the readers must need numpy only)")
    return results


def render(results: dict) -> str:
    from _bench import header_lines

    lines = header_lines("Fuzzing the data-file readers", results)
    fuzzed = results["fuzz"]
    settings = results["settings"]
    lines += [
        f"- Mutants per reader: {settings['count']} (seed {settings['seed']}); child memory limit (RLIMIT_AS) "
        f"{settings['memory_limit_mib']} MiB; peak resident memory bound {settings['peak_bound_mib']} MiB",
        f"- Wall time: {results['seconds']:.0f} s",
        "",
        "One child process per reader reads every mutant (numpy only). *Rejected cleanly*: the package's own error "
        "(`NinKerasError`); *accepted*: the mutant still parses as a valid file; *failed*: any other exception; "
        "*crashed*: the child died (a segfault). Peak memory is the child's peak resident set size (numpy itself "
        "included). CIFAR batch case 0 is issue 24's file (the numpy dtype state's first NONE turned into BINPUT). "
        "In CI, tests/test_reliability_round3_readers.py runs 300 mutants per reader (seed 24), all in one child.",
        "",
        "| reader | tried | rejected cleanly | accepted | failed | crashed | peak memory |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for reader, counts in fuzzed.items():
        lines.append(f"| {reader} | {counts['tried']} | {counts['rejected']} | {counts['accepted']} | "
                     f"{counts['failed']} | {counts['crashed']} | {counts['peak_bytes'] / 2**20:.0f} MiB |")
    if "cifar_batch" in fuzzed:
        lines += ["", f"Issue 24's file (CIFAR batch case 0, which segfaulted numpy before the fix): "
                      f"{fuzzed['cifar_batch'].get('case_0', 'not run')}."]
    problems = [f"- {reader}: {p}" for reader, counts in fuzzed.items() for p in counts["problems"]]
    lines += ["", "Problems found: " + ("none." if not problems else ""), *problems[:50], ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=3000, help="mutants per reader (default 3000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--readers", default=",".join(READERS), help=f"comma-separated, of {', '.join(READERS)}")
    parser.add_argument("--memory-limit", type=int, default=DEFAULT_MEMORY_LIMIT, help="child RLIMIT_AS, bytes")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    known, rest = parser.parse_known_args(argv)
    if known.child:
        child_main(known.child.split(","), known.count, known.seed, known.start, known.memory_limit)
        return 0
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _bench import add_report_arguments, run

    add_report_arguments(parser, ROOT / "docs" / "benchmarks" / "fuzz_readers.md")
    args = parser.parse_args(argv)

    def measure(args) -> dict:
        readers = [r for r in args.readers.split(",") if r]
        begin = time.perf_counter()
        fuzzed = fuzz(readers, count=args.count, seed=args.seed, memory_limit=args.memory_limit, one_child=False)
        return {"fuzz": fuzzed, "seconds": time.perf_counter() - begin}

    def render_with_limits(results: dict) -> str:
        results["settings"].setdefault("memory_limit_mib", results["settings"]["memory_limit"] >> 20)
        results["settings"].setdefault("peak_bound_mib", DEFAULT_PEAK_BOUND >> 20)
        return render(results)

    results = run("tools/fuzz_readers.py", args, argv, measure, render_with_limits)
    bad = sum(c["failed"] + c["crashed"] + bool(c["problems"]) for c in results["fuzz"].values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
