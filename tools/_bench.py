"""What the benchmark tools share: report arguments, progress lines, machine facts, and writing a Markdown
report together with the raw measurements (JSON) it was rendered from.

Every report is a function of its JSON: `--render FILE.json` writes the Markdown again without measuring.
"""

from __future__ import annotations

import datetime
import json
import os
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the tools run from a checkout, the package need not be installed

# CPU features that decide int8 and bfloat16 speed on x86 (VNNI: int8 dot products; BF16/AMX: bfloat16).
SIMD_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
# Arguments that name files, not the measurement: left out of the recorded settings.
_FILE_ARGUMENTS = ("out", "json_path", "render", "work_dir", "verbose")


def recorded_settings(args) -> dict:
    """The arguments that describe the measurement (file and scratch arguments left out)."""
    return {k: v for k, v in vars(args).items() if k not in _FILE_ARGUMENTS}


def add_report_arguments(parser, default_out: Path) -> None:
    """--note, --out, --json, --render and --verbose, the same in every tool."""
    parser.add_argument("--note", default="", help="a line for the report (e.g. 'machine under load')")
    parser.add_argument("--out", default=str(default_out),
                        help=f"Markdown report (default {default_out.relative_to(ROOT)})")
    parser.add_argument("--json", dest="json_path", default=None,
                        help="raw measurements, JSON (default: beside --out, same name ending .json)")
    parser.add_argument("--render", default=None, metavar="FILE.json",
                        help="measure nothing: write the Markdown again from measurements saved earlier")
    parser.add_argument("--verbose", action="store_true", help="keep TensorFlow's own log lines")


def fill_defaults(args, defaults: dict) -> None:
    """Sets each argument left at None to its (quick, full) default from `defaults`, by `args.quick`."""
    for name, (quick, full) in defaults.items():
        if getattr(args, name, None) is None:
            setattr(args, name, quick if args.quick else full)


def name_list(parser, option: str, text: str, known) -> list[str]:
    """The comma-separated names of `option`, in the order given; `parser.error` when none is given or one is
    not among `known`."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names or any(name not in known for name in names):
        parser.error(f"{option} takes names from {', '.join(known)}; received {text!r}")
    return names


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine_record(*, threads: int | None = None) -> dict:
    """`nin_keras.machine.machine_facts()` plus what a timing record also wants: SIMD flags, load, date."""
    from nin_keras.machine import cpu_flags, machine_facts

    facts = machine_facts(threads=threads)
    try:
        load = [round(value, 2) for value in os.getloadavg()]
    except OSError:
        load = None
    return {**facts, "simd": [flag for flag in SIMD_FLAGS if flag in cpu_flags()], "load_average": load,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def header_lines(title: str, results: dict) -> list[str]:
    """Title, the tool and date, the command, the machine (`describe_machine`), the note if any."""
    from nin_keras.machine import describe_machine

    facts, settings = results["machine"], results["settings"]
    machine = describe_machine(facts)
    if facts.get("simd"):
        machine += f"; CPU features: {', '.join(facts['simd'])}"
    if facts.get("load_average"):
        machine += "; load average at start " + " / ".join(str(x) for x in facts["load_average"])
    lines = [f"# {title}", "", f"Written by `{results['tool']}` on {facts['date']}"
             + (" (**quick smoke run: the numbers are NOT representative**)" if settings.get("quick") else "") + ".",
             "", f"- Command: `{results['command']}`", f"- Machine: {machine}"]
    if settings.get("note"):
        lines.append(f"- Note: {settings['note']}")
    return lines


def run(tool: str, args, argv, measure, render) -> dict:
    """Measures (or, with --render, reads saved measurements), then writes the JSON and the Markdown.

    Args:
        tool: the script's path in the repository, e.g. "tools/benchmark_export.py".
        args: the parsed arguments (with those of `add_report_arguments`).
        argv: the arguments as given (None: sys.argv[1:]), recorded as the command.
        measure: args -> dict of measurements.
        render: results -> Markdown text; results hold tool, command, settings, machine and the measurements.

    Returns:
        The results.
    """
    from nin_keras._atomic import write_json, write_text

    if not args.verbose:
        from nin_keras.process_state import quiet_tensorflow

        quiet_tensorflow()
    if args.render:
        results = json.loads(Path(args.render).read_text(encoding="utf-8"))
    else:
        raw = _without_local_options(sys.argv[1:] if argv is None else list(argv))
        settings = recorded_settings(args)
        results = {"tool": tool, "command": " ".join(["python", tool, *map(shlex.quote, raw)]), "settings": settings,
                   "machine": machine_record(threads=getattr(args, "threads", None))}
        results.update(measure(args))
        results = json.loads(json.dumps(_jsonable(results)))  # render exactly what --render would read back
        json_path = args.json_path or str(Path(args.out).with_suffix(".json"))
        write_json(json_path, results)
        log(f"wrote {json_path}")
    write_text(args.out, render(results))
    log(f"wrote {args.out}")
    return results


# Options naming this machine's scratch folder or benchmark lock: how it ran here, not the method.
_LOCAL_OPTIONS = ("--work-dir", "--lock")


def _without_local_options(argv: list[str]) -> list[str]:
    """The arguments minus `_LOCAL_OPTIONS` and their values, for the recorded command."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _LOCAL_OPTIONS:
            skip = True
        elif not arg.startswith(tuple(f"{option}=" for option in _LOCAL_OPTIONS)):
            kept.append(arg)
    return kept


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value
