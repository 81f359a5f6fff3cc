"""Fuzzes nin-keras' one image reader (`nin_keras.data.images.read_image`) with mutated PNG, JPEG, GIF and BMP files.

Each mutant is read in a child process (a batch per child; a child that dies is restarted after the mutant that
killed it), so a decoder crash is counted, not suffered. Every outcome is one of: read (pixels came back),
refused (the package's own error), escaped (any other exception: a bug) or crashed (the child died). The counts
go to docs/benchmarks/fuzz_images.md. The suite runs the same mutations, a few hundred, in-process
(tests/test_reliability_round3_folders.py).

    python tools/fuzz_images.py --mutants 20000 --seed 1
"""

from __future__ import annotations

import argparse
import collections
import datetime
import io
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the tools run from a checkout, the package need not be installed
DEFAULT_OUT = ROOT / "docs" / "benchmarks" / "fuzz_images.md"
BATCH = 500


def seed_images() -> list[bytes]:
    """Small valid files of every format and kind the reader meets: 8-bit RGB, gray, palette, 16-bit, EXIF."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    seeds = []
    for fmt, mode in [("PNG", "RGB"), ("PNG", "L"), ("PNG", "P"), ("PNG", "RGBA"), ("JPEG", "RGB"), ("JPEG", "L"),
                      ("GIF", "P"), ("BMP", "RGB"), ("BMP", "L")]:
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).convert(mode).save(buffer, fmt)
        seeds.append(buffer.getvalue())
    buffer = io.BytesIO()
    Image.fromarray(np.arange(63, dtype=np.uint16).reshape(9, 7) * 1000).save(buffer, "PNG")
    seeds.append(buffer.getvalue())
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (8, 16, 3), dtype=np.uint8)).save(buffer, "JPEG", exif=exif)
    return [*seeds, buffer.getvalue()]


def mutate(data: bytes, rng: random.Random) -> bytes:
    """1-8 byte-level edits: a byte set, a run deleted or inserted, a 32-bit field set to an extreme."""
    data = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        pos, kind = rng.randrange(len(data)), rng.random()
        if kind < 0.5:
            data[pos] = rng.randrange(256)
        elif kind < 0.7:
            del data[pos:pos + rng.randint(1, 16)]
        elif kind < 0.85:
            data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        else:
            data[pos:pos + 4] = rng.choice([b"\xff\xff\xff\xff", b"\0\0\0\0", b"\x7f\xff\xff\xff", b"\x80\0\0\0"])
    return bytes(data or b"\0")


def mutant(seed: int, index: int, seeds: list[bytes]) -> tuple[bytes, int | None, tuple | None]:
    """Mutant `index` of run `seed` (the same on every call): (bytes, channels, size) to read it with."""
    rng = random.Random(f"{seed}:{index}")
    return mutate(rng.choice(seeds), rng), rng.choice([None, 1, 3, 4]), rng.choice([None, (8, 8)])


def child(seed: int, start: int, stop: int) -> None:
    """Reads mutants start..stop-1, printing one JSON line per outcome (flushed, so a crash shows where)."""
    from nin_keras.data.images import read_image
    from nin_keras.errors import NinKerasError

    seeds = seed_images()
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "mutant.img"
        for index in range(start, stop):
            data, channels, size = mutant(seed, index, seeds)
            path.write_bytes(data)
            try:
                read_image(path, channels, size)
                outcome = {"i": index, "outcome": "read"}
            except NinKerasError:
                outcome = {"i": index, "outcome": "refused"}
            except Exception as error:  # noqa: BLE001 - counting what escapes is the point
                outcome = {"i": index, "outcome": "escaped", "error": f"{type(error).__name__}: {error}"[:200]}
            print(json.dumps(outcome), flush=True)


def run(mutants: int, seed: int) -> dict:
    counts, escaped, crashed = collections.Counter(), [], []
    start = 0
    began = time.perf_counter()
    while start < mutants:
        stop = min(start + BATCH, mutants)
        completed = subprocess.run([sys.executable, __file__, "--child", str(seed), str(start), str(stop)],
                                   capture_output=True, text=True)
        done = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]
        for outcome in done:
            counts[outcome["outcome"]] += 1
            if outcome["outcome"] == "escaped":
                escaped.append(outcome)
        start += len(done)
        if completed.returncode != 0:  # the child died on mutant `start`
            counts["crashed"] += 1
            crashed.append({"i": start, "returncode": completed.returncode})
            start += 1
        print(f"{start}/{mutants} {dict(counts)}", file=sys.stderr, flush=True)
    return {"mutants": mutants, "seed": seed, "counts": dict(counts), "escaped": escaped[:20],
            "crashed": crashed[:20], "seconds": round(time.perf_counter() - began, 1)}


def render(result: dict, command: str) -> str:
    from PIL import __version__ as pillow_version

    from nin_keras.machine import describe_machine, machine_facts

    counts = result["counts"]
    lines = [
        "# Fuzzing the image reader",
        "",
        "`nin_keras.data.images.read_image` (folder datasets and `nin-keras maps`) fed byte-level mutants of small "
        "PNG (RGB, gray, palette, RGBA, 16-bit), JPEG (RGB, gray, EXIF-rotated), GIF and BMP files, read in child "
        "processes (500 a process, restarted after a crash). Read: pixels came back. Refused: the package's own "
        "error. Escaped: any other exception (a bug). Crashed: the child process died.",
        "",
        f"- Command: `{command}`",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {describe_machine(machine_facts(gpus=False))}; Pillow {pillow_version}",
        f"- Time: {result['seconds']} s",
        "",
        "| tried | refused cleanly | read | escaped | crashed |",
        "|---:|---:|---:|---:|---:|",
        f"| {result['mutants']:,} | {counts.get('refused', 0):,} | {counts.get('read', 0):,} | "
        f"{counts.get('escaped', 0):,} | {counts.get('crashed', 0):,} |",
        "",
    ]
    for outcome in result["escaped"] + result["crashed"]:
        lines.append(f"- mutant {outcome['i']}: {outcome.get('error') or 'exit ' + str(outcome['returncode'])}")
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(*(int(v) for v in sys.argv[2:]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=int, default=20000, help="how many mutants to read (default 20000)")
    parser.add_argument("--seed", type=int, default=1, help="the run's seed (default 1)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="Markdown report (default docs/benchmarks/...)")
    args = parser.parse_args()
    result = run(args.mutants, args.seed)
    command = f"python tools/fuzz_images.py --mutants {args.mutants} --seed {args.seed}"
    Path(args.out).write_text(render(result, command), encoding="utf-8")
    print(f"Wrote {args.out}: {result['counts']}")
    return 1 if result["counts"].get("escaped") or result["counts"].get("crashed") else 0


if __name__ == "__main__":
    sys.exit(main())
