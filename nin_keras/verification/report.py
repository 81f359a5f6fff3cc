"""`verify_export(out_dir, data)`: evaluate and time every artifact of an export; write report.json/report.md.

report.json holds `{"rows": [...], "dataset": {...}, "machine": {...}, "reference": ..., "speed": ...,
"notes": [...], "created": ...}`; each row is a `ReportRow` written with the keys in `ROW_KEYS` (plus its
`details`: the tflite metadata, the timing's spread, `error` when an artifact could not run). "speed" names the
fastest .tflite file on the machine that verified the export: which file is fastest depends on the CPU (int8
wins only where it has 8-bit dot products), so it is measured, not assumed.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import sys
import warnings
from pathlib import Path

from nin_keras import _atomic
from nin_keras.checks import check_path
from nin_keras.display import progress_to
from nin_keras.errors import IncompatibleModelError, InvalidInputError, MissingFileError, one_line
from nin_keras.export_layout import (
    EDGETPU_CHECK_FILE,
    EDGETPU_COMPILED_GLOB,
    EDGETPU_COMPILED_TARGET,
    MIXED_INT8_FILE,
    MIXED_INT8_TARGET,
    REPORT_FILES,
    TARGET_SPECS,
    Record,
)
from nin_keras.exporting.metadata import describe_metadata, read_metadata
from nin_keras.formatting import REPORT_COLUMNS, artifact_columns, artifact_markdown, artifact_table
from nin_keras.machine import machine_facts
from nin_keras.verification.artifacts import load_artifact
from nin_keras.verification.evaluate import EvalData, evaluate_runner, run_over
from nin_keras.verification.latency import (benchmark_inference, benchmark_interleaved, rank_by_latency,
                                            ranking_clauses)

# File (or folder) name -> target, in report order (saved_model/1 is found as its folder saved_model/).
ARTIFACTS = tuple((spec.file.split("/")[0], target) for target, spec in TARGET_SPECS.items())
# Files made for an accelerator: their CPU time says nothing about where they run.
_ACCELERATOR_TARGETS = ("edgetpu", EDGETPU_COMPILED_TARGET)
SPEED_ROUNDS = 3  # interleaved rounds of the fastest-file comparison (medians over rounds)
ROW_KEYS = ("artifact", "target", "path", "size_bytes", "precision", "input", "output", "accuracy", "agreement",
            "latency_ms_batch1_median", "throughput_images_per_s", "edgetpu")


@dataclasses.dataclass(frozen=True, eq=True)
class ReportRow(Record):
    """One artifact's row of the verification report; it also reads as the dict report.json holds.

    Attributes:
        artifact: the file (or folder) name.
        target: the export target it belongs to (`edgetpu_compiled` for edgetpu_compiler's output).
        path: its path.
        size_bytes: bytes on disk.
        precision: what it computes in ("float32", "full int8", ...); None if it could not be loaded.
        input: dtype, shape and quantization of its input; None if it could not be loaded.
        output: the same of its output.
        accuracy: top-1 accuracy on the test data; None if it could not run.
        agreement: share of images whose top-1 class is the reference model's; None without a reference.
        latency_ms_batch1_median: median batch-1 latency; None without timing.
        throughput_images_per_s: batched throughput; None without timing.
        edgetpu: the Edge TPU check (edgetpu_check.json) for Edge TPU files, else None.
        details: the rest as written: tflite `metadata`, `mean_confidence`, the timing's p90, batch and
            threads, and `error` when the artifact could not be evaluated.
    """

    artifact: str
    target: str
    path: str
    size_bytes: int | None
    precision: str | None = None
    input: dict | None = None
    output: dict | None = None
    accuracy: float | None = None
    agreement: float | None = None
    latency_ms_batch1_median: float | None = None
    throughput_images_per_s: float | None = None
    edgetpu: dict | None = None
    details: dict = dataclasses.field(default_factory=dict)

    @property
    def error(self) -> str | None:
        """Why the artifact could not be evaluated, or None."""
        return self.details.get("error")


def discover_artifacts(out_dir) -> list[tuple[Path, str]]:
    """(path, target) of every known artifact in `out_dir`, in report order."""
    out_dir = Path(out_dir)
    found = [(out_dir / name, target) for name, target in ARTIFACTS if (out_dir / name).exists()]
    found += [(path, EDGETPU_COMPILED_TARGET) for path in sorted(out_dir.glob(EDGETPU_COMPILED_GLOB))]
    return found


def verify_export(out_dir, data, *, reference_model=None, progress=True, runs=30, threads=2) -> list[ReportRow]:
    """Evaluates and times every artifact in an export folder and writes report.json and report.md there.

    Args:
        out_dir: the export folder (model.keras, saved_model/, model_*.tflite, ...).
        data: test data: a `DatasetSplits`, a batched dataset of (images, labels) or numpy (images, labels).
        reference_model: the model whose top-1 predictions define "agreement". Defaults to model.keras in
            `out_dir` (no agreement if there is none).
        progress: show progress on stderr (True), or draw on this `nin_keras.display.ProgressDisplay`.
            Defaults to True.
        runs: timed batch-1 calls per artifact; 0 skips timing (latency and throughput None). Defaults to 30.
        threads: TFLite interpreter threads for evaluation and timing. Defaults to 2.

    Returns:
        The rows (one `ReportRow` per artifact), as written to report.json (`row.to_dict()`).

    Raises:
        FileNotFoundError: `out_dir` does not exist or holds no known artifact.
        IncompatibleModelError: the data does not fit the models (image shape, class count).
    """
    out_dir = Path(out_dir)
    check_path("Export folder", out_dir, kind="folder")
    found = discover_artifacts(out_dir)
    if not found:
        names = ", ".join(name for name, _ in ARTIFACTS)
        raise MissingFileError(f"No artifacts in {out_dir}: expected some of {names}, *_edgetpu.tflite.")
    source = EvalData(data)
    with progress_to(progress, stream=sys.stderr) as display:  # one display for every artifact
        reference_name, reference_top1 = _reference_pass(reference_model, out_dir, source, display)
        edgetpu_check = _read_edgetpu_check(out_dir)
        checked = [_check_artifact(path, target, out_dir, source, reference_top1, edgetpu_check, display=display,
                                   runs=runs, threads=threads) for path, target in found]
        rows = [row for row, _, _ in checked]
        machine = machine_facts(threads=threads, gpus=False)
        speed = _compare_speed(rows, [runner for _, _, runner in checked], runs=runs, threads=threads,
                               machine=machine, display=display) if runs else None
    counts = [count for _, count, _ in checked if count is not None]
    num_examples = len(reference_top1) if reference_top1 is not None else (counts[-1] if counts else None)

    report = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "folder": str(out_dir),
        "dataset": _describe_data(source, num_examples),
        "machine": machine,
        "reference": reference_name,
        "timing": {"runs": runs, "threads": threads},
        "speed": speed,
        "notes": _notes(rows, edgetpu_check, reference_name, speed),
        "rows": [row.to_dict() for row in rows],
    }
    json_file, markdown_file = REPORT_FILES
    _atomic.write_json(out_dir / json_file, report)
    _atomic.write_text(out_dir / markdown_file, render_markdown(report))
    return rows


def _reference_pass(reference_model, out_dir: Path, source: EvalData, display):
    """(name, top-1 per image) of the reference model (the export's model.keras by default), or (None, None)."""
    if reference_model is None and (out_dir / TARGET_SPECS["keras"].file).exists():
        reference_model = out_dir / TARGET_SPECS["keras"].file
    if reference_model is None:
        return None, None
    ref = load_artifact(reference_model)
    source.check(ref)
    return ref.name, run_over(source, [ref], progress=display, description=f"reference {ref.name}")[0].top1()


def _check_artifact(path: Path, target: str, out_dir: Path, source: EvalData, reference_top1, edgetpu_check, *,
                    display, runs: int, threads: int):
    """(report row, images evaluated or None, its runner or None) of one artifact; an artifact that cannot run
    gets `error`."""
    row, count, runner = _empty_row(path, target), None, None
    if target in ("edgetpu", EDGETPU_COMPILED_TARGET):
        row["edgetpu"] = edgetpu_check
    try:
        runner = load_artifact(path, num_threads=threads)
        row.update(precision=runner.precision, input=runner.input_details, output=runner.output_details)
        if path.suffix == ".tflite":
            row["metadata"] = _tflite_metadata(path)
        result = evaluate_runner(runner, source, reference_top1=reference_top1, progress=display)
        count = result["num_examples"]
        row.update(accuracy=result["accuracy"], agreement=result["agreement"],
                   mean_confidence=result["mean_confidence"])
        if runs:
            timing = benchmark_inference(runner, runs=runs, warmup=max(1, min(5, runs // 5)), threads=threads)
            row.update(latency_ms_batch1_median=timing["latency_ms_batch1_median"],
                       latency_ms_batch1_p90=timing["latency_ms_batch1_p90"],
                       throughput_images_per_s=timing["throughput_images_per_s"],
                       throughput_batch_size=timing["throughput_batch_size"], threads=timing["threads"])
    except IncompatibleModelError:
        raise
    except Exception as error:  # one artifact that cannot run must not hide the others' results
        message = one_line(error)
        row["error"] = message
        warnings.warn(f"verify_export: {path.name}: {message}", stacklevel=3)
        runner = None
    return ReportRow(**{key: row.pop(key) for key in ROW_KEYS}, details=row), count, runner


def _compare_speed(rows, runners, *, runs: int, threads: int, machine: dict, display) -> dict | None:
    """Which .tflite file for the CPU is fastest here: `benchmark_interleaved` over them (the time of
    `interpreter.invoke()`, medians of `SPEED_ROUNDS` rounds sharing `runs` calls per file), ranked by
    `rank_by_latency`, each file's time also as a multiple of model_float32.tflite's. None with fewer than two
    such files."""
    timed = {row.artifact: runner for row, runner in zip(rows, runners)
             if runner is not None and runner.kind == "tflite" and row.target not in _ACCELERATOR_TARGETS}
    if len(timed) < 2:
        return None
    display.log(f"Timing {len(timed)} .tflite files interleaved ({SPEED_ROUNDS} rounds) to name the fastest here")
    per_round = max(1, -(-runs // SPEED_ROUNDS))  # `runs` calls in all, as each row's own timing
    try:
        timing = benchmark_interleaved(timed, rounds=SPEED_ROUNDS, runs=per_round,
                                       warmup=max(1, min(5, per_round // 5)), threads=threads)
    except Exception as error:  # the rows are already measured: a failed comparison must not lose them
        return {"error": one_line(error)}
    ranked = rank_by_latency(timing["artifacts"])
    float32 = next((entry["latency_ms"] for entry in ranked["ranking"]
                    if entry["artifact"] == TARGET_SPECS["tflite_float32"].file), None)
    for entry in ranked["ranking"]:
        entry["vs_float32"] = round(entry["latency_ms"] / float32, 3) if float32 else None
    return {**ranked, "rounds": timing["rounds"], "runs": timing["runs"], "threads": threads,
            "cpu": machine["cpu"], "isa": machine["isa"], "batch_size": 1}


def describe_speed(speed: dict | None) -> str | None:
    """One line naming the fastest .tflite file of a report's "speed" and how the others compare; None when the
    report has no comparison."""
    if not isinstance(speed, dict) or not speed.get("ranking"):
        return None
    best = speed["ranking"][0]
    return (f"Fastest on this machine ({speed['cpu']}; {speed['isa']}; {speed['threads']} threads, batch 1): "
            f"{best['artifact']} ({best['latency_ms']:.3f} ms per invoke){ranking_clauses(speed)}. Which file is "
            "fastest depends on the CPU: time it where it will run (nin-keras benchmark infer FILE... --rounds 5).")


def report_table(rows, *, title: str = "Exported artifacts"):
    """A `rich.table.Table` of `verify_export` rows: artifact, size, precision, accuracy, agreement, latency,
    throughput (`nin_keras.formatting.artifact_table`, the same table as report.md's).

    Print it with `rich.print`; as a notebook cell's last value it shows as an HTML table.
    """
    return artifact_table(rows, title=title)


def _empty_row(path: Path, target: str) -> dict:
    row = dict.fromkeys(ROW_KEYS)
    row.update(artifact=path.name, target=target, path=str(path), size_bytes=_atomic.folder_size(path))
    return row


def _read_edgetpu_check(out_dir: Path):
    path = out_dir / EDGETPU_CHECK_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return {"error": f"unreadable {EDGETPU_CHECK_FILE}: {error}"}


def _describe_data(source: EvalData, count: int) -> dict:
    """report.json's "dataset": what `EvalData` (the one adapter behind it) knows of the data."""
    described = {"name": source.name, "split": "test", "num_examples": count}
    if source.num_classes is not None:
        described.update(num_classes=source.num_classes, input_shape=list(source.input_shape))
    return described


def _edgetpu_summary(check) -> str | None:
    """One line from edgetpu_check.json, whatever its exact layout (written by nin_keras.exporting)."""
    if not isinstance(check, dict):
        return None
    if "error" in check and len(check) == 1:
        return check["error"]
    verdict = None
    for key in ("compatible", "ok", "edgetpu_compatible", "passed"):
        if key in check:
            verdict = "compatible" if check[key] else "NOT compatible"
            break
    parts = [f"Edge TPU check: {verdict or 'see edgetpu_check.json'}"]
    for key in ("problems", "issues", "findings", "errors"):
        value = check.get(key)
        if value:
            items = value if isinstance(value, list) else [value]
            parts.append("; ".join(str(item) for item in items[:5]) + (" ..." if len(items) > 5 else ""))
            break
    compiler = check.get("compiler") or check.get("edgetpu_compiler")
    if isinstance(compiler, dict):
        if not compiler.get("available"):
            parts.append("edgetpu_compiler is not installed here: static flatbuffer check only")
        else:
            parts.append(f"edgetpu_compiler exit code {compiler.get('returncode')}, compiled model: "
                         f"{compiler.get('output') or 'none'} (log: {compiler.get('log') or '-'})")
    elif compiler:
        parts.append(f"compiler: {compiler}")
    return ". ".join(parts)


def _notes(rows, edgetpu_check, reference_name, speed=None) -> list[str]:
    notes = []
    fastest = describe_speed(speed)
    if fastest:
        notes.append(fastest)
    elif isinstance(speed, dict) and speed.get("error"):
        notes.append(f"The .tflite files could not be timed against each other: {speed['error']}")
    if reference_name is None:
        notes.append("No reference model: agreement is not reported.")
    else:
        notes.append(f"Agreement: share of test images whose top-1 class is the reference model's ({reference_name}).")
    summary = _edgetpu_summary(edgetpu_check)
    if summary:
        notes.append(summary)
    elif any(row["target"] == "edgetpu" for row in rows):
        notes.append(f"No {EDGETPU_CHECK_FILE} beside the Edge TPU model: its compatibility was not checked.")
    for row in rows:
        if row["target"] == EDGETPU_COMPILED_TARGET and row.get("error"):
            notes.append(f"{row['artifact']} is compiled for the Edge TPU and runs only on a Coral device "
                         "(libedgetpu delegate); not evaluated on the CPU.")
        elif row.get("error"):
            notes.append(f"{row['artifact']} could not be evaluated: {row['error']}")
    if any(row["target"] == MIXED_INT8_TARGET for row in rows):
        notes.append(f"{MIXED_INT8_FILE} keeps the layers named by int8_float_layers in float (int8 elsewhere, int8 "
                     "input and output): for LiteRT on the CPU only, not for the Edge TPU (its static check "
                     "would list the float ops); model_int8.tflite and the Edge TPU file stay fully integer.")
    notes.append("Latency: median of batch-1 calls, input quantization included; throughput: images/s at "
                 "batch 32, or one by one for static batch-1 models. The machine may be shared: timings vary.")
    return notes


def _tflite_metadata(path: Path) -> dict | None:
    """The metadata a .tflite carries, described; None when it has none, {"damaged": why} when it cannot be
    read (the model is evaluated all the same: damaged metadata says nothing about whether the model runs)."""
    try:
        return describe_metadata(read_metadata(path.read_bytes(), label=path.name), label=path.name)
    except (InvalidInputError, OSError) as error:
        return {"damaged": one_line(error)}


def _clients_section(rows) -> list[str]:
    """Which client takes which file, and the metadata each .tflite carries (what MediaPipe reads)."""
    lines = ["", "## Clients and metadata", ""]
    for row in rows:
        info = TARGET_SPECS.get(row["target"])
        if info is None:
            continue
        lines.append(f"- `{row['artifact']}`: {info.clients}.")
        metadata = row.get("metadata")
        if row["artifact"].endswith(".tflite"):
            if metadata and metadata.get("damaged"):
                lines.append(f"  Metadata: damaged, not readable: {metadata['damaged']}")
            else:
                lines.append(f"  Metadata: {metadata['input']}; {metadata['output']} ({metadata['version']})."
                             if metadata else "  Metadata: none.")
    channels = next((row["input"]["shape"][-1] for row in rows if isinstance(row.get("input"), dict)
                     and row["input"].get("shape")), None)
    if channels not in (None, 3, 4):
        lines.append(f"- MediaPipe Tasks takes 3- or 4-channel images; this model's input has {channels}: its "
                     ".tflite files are for LiteRT (examples/litert_inference.py).")
    return lines


def _speed_section(speed) -> list[str]:
    """The fastest-file comparison as a table, fastest first; nothing when the report has none."""
    if not isinstance(speed, dict) or not speed.get("ranking"):
        return []
    lines = ["", "## Fastest file on this machine", "",
             f"{speed['cpu']} ({speed['isa']}), {speed['threads']} threads, batch 1: `interpreter.invoke()`, median "
             f"of {speed['rounds']} interleaved rounds of {speed['runs']} calls.", "",
             "| file | ms per invoke | vs fastest | vs float32 |", "|---|---:|---:|---:|"]
    for entry in speed["ranking"]:
        vs_float32 = "-" if entry.get("vs_float32") is None else f"{entry['vs_float32']:.2f}x"
        lines.append(f"| `{entry['artifact']}` | {entry['latency_ms']:.3f} | {entry['vs_fastest']:.2f}x | "
                     f"{vs_float32} |")
    lines += ["", "Another CPU can order them differently (int8 is fastest where the CPU has 8-bit dot products, "
                  "e.g. AVX-512 VNNI): time the files where they will run, `nin-keras benchmark infer FILE... "
                  "--rounds 5`."]
    return lines


def render_markdown(report: dict) -> str:
    """report.md: the table, the machine, the dataset, the notes."""
    data, machine = report["dataset"], report["machine"]
    lines = [
        f"# Export report: {Path(report['folder']).name}",
        "",
        f"Created {report['created']} from `{report['folder']}`.",
        "",
        *artifact_markdown(report["rows"], artifact_columns(REPORT_COLUMNS)),
    ]
    lines += _clients_section(report["rows"])
    lines += _speed_section(report.get("speed"))
    lines += [
        "",
        "## Machine",
        "",
        f"- CPU: {machine['cpu']} ({machine.get('isa', 'instruction sets not recorded')}), {machine['cores']} cores "
        f"available ({machine['logical_cpus']} logical CPUs)",
        f"- Threads used: {machine['threads']} (TFLite interpreter); Keras/SavedModel use TensorFlow's pool",
        f"- {machine['os']}, Python {machine['python']}, TensorFlow {machine.get('tensorflow')}, "
        f"Keras {machine.get('keras')}, ai-edge-litert {machine.get('ai_edge_litert')}",
        "",
        "## Dataset",
        "",
        f"- {data['name']} ({data['split']} split): {data['num_examples']} examples"
        + (f", {data['num_classes']} classes" if data.get("num_classes") else ""),
        "",
        "## Notes",
        "",
    ]
    lines += [f"- {note}" for note in report["notes"]]
    return "\n".join(lines) + "\n"
