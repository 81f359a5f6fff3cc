"""Fuzzes `nin_keras.load_model` with seeded mutations of a small .keras file, and records the counts.

A .keras file is a zip of config.json, metadata.json and model.weights.h5. Each mutant changes one thing:
a value in config.json (a size of 2**31, a negative or non-integer one, a wrong type, another class name, a key
dropped), raw bytes of config.json, metadata.json or the HDF5 weights (flipped, overwritten, truncated), a
member dropped, or the zip itself (bytes flipped, truncated). Members are re-zipped with valid checksums, so
the damage reaches Keras and h5py rather than stopping at the zip check.

Every mutant must either load or be refused with the package's own error (`NinKerasError`); any other
exception, and any crash of the process loading it, is a failure. Mutants are loaded in child processes
(`--chunk` each), so a crash is counted and the run goes on. tests/test_reliability_round3_export.py runs a few
hundred of the same mutants in CI.

    python tools/fuzz_keras_files.py --model small --count 3000    # records in docs/benchmarks/fuzz_keras_files.md
    python tools/fuzz_keras_files.py --model nin --count 500       # (and .json), one row per model
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import os
import random
import resource
import shlex
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the tool runs from a checkout, the package need not be installed

DEFAULT_OUT = ROOT / "docs" / "benchmarks" / "fuzz_keras_files.md"
# Values a config edit puts in place of one field: sizes far past any network, wrong signs and types.
CONFIG_VALUES = (2**31, 2**31 - 1, 2**40, 2**63, -1, 0, -(2**31), 1e308, float("nan"), 0.5, "x", "", None, True,
                 [], {}, [2**31, 2**31], [0, 0], [-1], [[[[[]]]]], {"class_name": "Lambda", "config": {}})
CLASS_NAMES = ("Conv2D", "Dense", "Lambda", "InputLayer", "Functional", "Sequential", "NotALayer", "",
               "BatchNormalization", "FusedBatchNormalization", "TFSMLayer")
KINDS = ("config_value", "config_value", "config_value", "config_class", "config_drop", "config_bytes",
         "h5_flip", "h5_flip", "h5_header_flip", "h5_overwrite", "h5_truncate", "metadata_bytes",
         "member_drop", "zip_flip", "zip_truncate")


def model_bytes(kind: str = "nin") -> bytes:
    """The .keras file every mutant comes from, saved by `nin_keras.save_model`: "nin", a tiny NIN (3 classes,
    8x8x3, width 0.05); or "small", five layers (convolution, batch normalization, pooling, dense: the layer
    kinds a NIN has, loading in a fraction of the time, for CI)."""
    import keras

    import nin_keras

    if kind == "nin":
        model = nin_keras.build_nin(3, variant="cifar", input_shape=(8, 8, 3), width_multiplier=0.05)
    else:
        inputs = keras.Input((8, 8, 3))
        x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x), name="small")
    with tempfile.TemporaryDirectory() as tmp:
        path = nin_keras.save_model(model, Path(tmp) / "base.keras")
        return path.read_bytes()


def _members(data: bytes) -> list[tuple[zipfile.ZipInfo, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return [(info, archive.read(info)) for info in archive.infolist()]


def _zip(members) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for info, content in members:
            archive.writestr(info, content)
    return buffer.getvalue()


def _replace_member(data: bytes, name: str, change) -> bytes:
    return _zip([(info, change(content) if info.filename == name else content) for info, content in _members(data)])


def _flip(content: bytes, rng: random.Random, *, limit: int | None = None, flips: int | None = None) -> bytes:
    content = bytearray(content)
    if not content:
        return bytes(content)
    end = min(len(content), limit or len(content))
    for _ in range(flips or rng.randint(1, 16)):
        content[rng.randrange(end)] ^= 1 << rng.randrange(8)
    return bytes(content)


def _nodes(value, found):
    """Every dict inside a parsed JSON value."""
    if isinstance(value, dict):
        found.append(value)
        for item in value.values():
            _nodes(item, found)
    elif isinstance(value, list):
        for item in value:
            _nodes(item, found)
    return found


def _edit_config(content: bytes, rng: random.Random, kind: str) -> bytes:
    config = json.loads(content)
    nodes = [node for node in _nodes(config, []) if node]
    node = rng.choice(nodes)
    if kind == "config_class":
        layers = [n for n in nodes if "class_name" in n]
        rng.choice(layers)["class_name"] = rng.choice(CLASS_NAMES)
    elif kind == "config_drop":
        del node[rng.choice(list(node))]
    else:
        key = rng.choice(list(node))
        node[key] = rng.choice(CONFIG_VALUES) if rng.random() < 0.8 else rng.randint(-4, 2**33)
    return json.dumps(config).encode()


def mutate(base: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One mutant of the .keras bytes `base`: (its kind, its bytes)."""
    kind = rng.choice(KINDS)
    if kind.startswith("config_") and kind != "config_bytes":
        return kind, _replace_member(base, "config.json", lambda c: _edit_config(c, rng, kind))
    if kind == "config_bytes":
        return kind, _replace_member(base, "config.json", lambda c: _flip(c, rng))
    if kind == "metadata_bytes":
        return kind, _replace_member(base, "metadata.json", lambda c: _flip(c, rng))
    if kind == "h5_flip":
        return kind, _replace_member(base, "model.weights.h5", lambda c: _flip(c, rng))
    if kind == "h5_header_flip":  # HDF5's superblock, object headers and B-trees sit in the first few kB
        return kind, _replace_member(base, "model.weights.h5", lambda c: _flip(c, rng, limit=4096))
    if kind == "h5_overwrite":
        def overwrite(content: bytes) -> bytes:
            start = rng.randrange(len(content))
            size = rng.randint(8, 512)
            return content[:start] + rng.randbytes(size) + content[start + size:]
        return kind, _replace_member(base, "model.weights.h5", overwrite)
    if kind == "h5_truncate":
        return kind, _replace_member(base, "model.weights.h5", lambda c: c[:rng.randrange(len(c))])
    if kind == "member_drop":
        members = _members(base)
        members.pop(rng.randrange(len(members)))
        return kind, _zip(members)
    if kind == "zip_flip":
        return kind, _flip(base, rng)
    return kind, base[:rng.randrange(len(base))]  # zip_truncate


def load_outcome(path) -> str:
    """"loaded", "rejected" (a `NinKerasError`) or "other: TYPE: message" for `nin_keras.load_model(path)`."""
    import nin_keras
    from nin_keras.errors import NinKerasError, one_line

    try:
        nin_keras.load_model(path)
    except NinKerasError:
        return "rejected"
    except Exception as error:  # the fuzzer's whole point: anything else is counted, not raised
        return f"other: {type(error).__name__}: {one_line(error, 200)}"
    return "loaded"


def mutants(seed: int, start: int, count: int, base: bytes):
    """(index, kind, bytes) of mutants `start`..`start + count - 1` of run `seed`: each from its own generator,
    so a mutant is the same whichever chunk or process makes it."""
    for index in range(start, start + count):
        kind, data = mutate(base, random.Random(f"{seed}:{index}"))
        yield index, kind, data


def run_child(seed: int, start: int, count: int, model: str) -> None:
    """Loads mutants `start`.. in this process; one JSON line each on stdout, "trying N" first (for crashes)."""
    _quiet()
    base = model_bytes(model)
    with tempfile.TemporaryDirectory(prefix="fuzz_keras_") as tmp:
        for index, kind, data in mutants(seed, start, count, base):
            path = Path(tmp) / f"mutant_{index}.keras"
            path.write_bytes(data)
            print(json.dumps({"trying": index, "kind": kind}), flush=True)
            outcome = load_outcome(path)
            print(json.dumps({"index": index, "kind": kind, "outcome": outcome}), flush=True)
            path.unlink()


def _quiet() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def fuzz(count: int, seed: int, chunk: int, model: str = "nin") -> dict:
    """Loads `count` mutants in child processes of `chunk` mutants; returns the counts and every failure."""
    results, crashes = {}, []
    start = 0
    while start < count:
        size = min(chunk, count - start)
        command = [sys.executable, __file__, "--child", "--seed", str(seed), "--start", str(start),
                   "--count", str(size), "--model", model]
        process = subprocess.run(command, capture_output=True, text=True, env={**os.environ,
                                                                              "TF_CPP_MIN_LOG_LEVEL": "3"})
        trying = None
        for line in process.stdout.splitlines():
            if not line.startswith("{"):
                continue
            record = json.loads(line)
            if "trying" in record:
                trying = record
            else:
                results[record["index"]] = record
        if process.returncode != 0:  # crashed (or failed) on the mutant it was trying: count it, go past it
            crashed = trying or {"trying": start, "kind": "?"}
            crashes.append({"index": crashed["trying"], "kind": crashed["kind"], "returncode": process.returncode,
                            "stderr": process.stderr[-300:]})
            results[crashed["trying"]] = {"index": crashed["trying"], "kind": crashed["kind"], "outcome": "crashed"}
            start = crashed["trying"] + 1
        else:
            start += size
        done = len(results)
        print(f"[{time.strftime('%H:%M:%S')}] {done}/{count}", file=sys.stderr, flush=True)
    outcomes = collections.Counter(_bucket(r["outcome"]) for r in results.values())
    by_kind = collections.defaultdict(collections.Counter)
    for record in results.values():
        by_kind[record["kind"]][_bucket(record["outcome"])] += 1
    failures = [r for r in results.values() if _bucket(r["outcome"]) in ("other exception", "crashed")]
    return {"tried": len(results), "outcomes": dict(outcomes), "by_kind": {k: dict(v) for k, v in by_kind.items()},
            "failures": failures[:50], "crashes": crashes,
            "peak_child_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)}


def _bucket(outcome: str) -> str:
    if outcome.startswith("other"):
        return "other exception"
    return {"rejected": "rejected cleanly"}.get(outcome, outcome)


def render(runs: list[dict]) -> str:
    """The Markdown report of every run recorded (one table row each, then each run's counts by mutation)."""
    lines = [
        "# Fuzzing `nin_keras.load_model` with damaged .keras files",
        "",
        "Written by `tools/fuzz_keras_files.py` (mutations in its docstring); CI loads 150 of the same mutants of",
        "the five-layer model (`tests/test_reliability_round3_export.py`). A mutant must load or be refused with",
        "a `NinKerasError`; any other exception, and any crash of the loading process, is a failure. \"Loaded\"",
        "mutants changed bytes that only hold weight values, or config fields Keras ignores.",
        "",
        "| model mutated | tried | rejected cleanly | loaded | other exceptions | crashed | wall time |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        counts = run["outcomes"]
        lines.append(f"| {run['model']} | {run['tried']} | {counts.get('rejected cleanly', 0)} | "
                     f"{counts.get('loaded', 0)} | {counts.get('other exception', 0)} | {counts.get('crashed', 0)} | "
                     f"{run['seconds']:.0f} s |")
    for run in runs:
        lines += ["", f"## {run['model']}", "",
                  f"- Command: `{run['command']}`",
                  f"- Date: {run['date']}",
                  f"- Machine: {run['machine']}",
                  f"- Versions: {run['versions']}",
                  f"- Peak memory of one loading process: {run['peak_child_rss_mb']} MB",
                  "",
                  "| mutation | rejected cleanly | loaded | other exceptions | crashed |",
                  "|---|---:|---:|---:|---:|"]
        for kind, kind_counts in sorted(run["by_kind"].items()):
            lines.append(f"| {kind} | {kind_counts.get('rejected cleanly', 0)} | {kind_counts.get('loaded', 0)} | "
                         f"{kind_counts.get('other exception', 0)} | {kind_counts.get('crashed', 0)} |")
        if run["failures"]:
            lines += ["", "Failures (first 50):", ""] + [f"- mutant {f['index']} ({f['kind']}): {f['outcome']}"
                                                        for f in run["failures"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=3000, help="mutants to try (default 3000)")
    parser.add_argument("--seed", type=int, default=0, help="run seed (default 0)")
    parser.add_argument("--model", choices=("nin", "small"), default="nin",
                        help="the file mutated: a tiny NIN (default) or a five-layer model (what CI uses)")
    parser.add_argument("--chunk", type=int, default=250, help="mutants per loading process (default 250)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="Markdown report")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(args.seed, args.start, args.count, args.model)
        return 0
    import datetime
    import platform

    started = time.perf_counter()
    record = fuzz(args.count, args.seed, args.chunk, args.model)
    import h5py
    import keras
    import tensorflow as tf

    record.update(
        model=args.model,
        command="python tools/fuzz_keras_files.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        machine=f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
                f"Python {platform.python_version()}",
        versions=f"Keras {keras.__version__}, TensorFlow {tf.__version__}, h5py {h5py.__version__} "
                 f"(HDF5 {h5py.version.hdf5_version})",
        seconds=time.perf_counter() - started)
    out = Path(args.out)
    raw = out.with_suffix(".json")  # every run recorded: a new run of a model replaces that model's earlier one
    runs = json.loads(raw.read_text(encoding="utf-8"))["runs"] if raw.exists() else []
    runs = [run for run in runs if run["model"] != args.model] + [record]
    raw.write_text(json.dumps({"runs": runs}, indent=2, default=str) + "\n", encoding="utf-8")
    out.write_text(render(runs), encoding="utf-8")
    counts = record["outcomes"]
    print(f"tried {record['tried']}: rejected cleanly {counts.get('rejected cleanly', 0)}, loaded "
          f"{counts.get('loaded', 0)}, other exceptions {counts.get('other exception', 0)}, crashed "
          f"{counts.get('crashed', 0)}; wrote {out}")
    return 1 if record["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
