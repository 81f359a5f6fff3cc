"""Text the package shows people: file sizes, percentages, file-name-safe names and the artifact table, each
formatted one way.

A missing value reads `MISSING` ("n/a") wherever it is shown. `artifact_markdown` and `artifact_table` render
the one table of exported artifacts (report.md, the terminal, the notebook's `nin_keras.report_table`, the
demo's summary, the export benchmark) from the same `ARTIFACT_COLUMNS`, so every copy reads the same.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

from rich.table import Table

MISSING = "n/a"
# Sizes are decimal megabytes (10^6 bytes), as file managers and app stores show them.
_UNITS = (("GB", 1e9), ("MB", 1e6), ("kB", 1e3))


def format_size(num_bytes) -> str:
    """`1_007_856` -> "1.01 MB"; None -> "n/a". Decimal units (kB = 1000 B, MB = 10^6 B)."""
    if num_bytes is None:
        return MISSING
    for unit, scale in _UNITS:
        if num_bytes >= scale:
            return f"{num_bytes / scale:.2f} {unit}"
    return f"{int(num_bytes)} B"


def format_percent(fraction) -> str:
    """0.9294 -> "92.94%"; None -> "n/a"."""
    return MISSING if fraction is None else f"{100 * float(fraction):.2f}%"


def format_number(value, spec: str) -> str:
    """`value` formatted with `spec` ("0.100" for .3f, "5,000" for ,.0f); None -> "n/a"."""
    return MISSING if value is None else format(value, spec)


def format_io(details) -> str:
    """A tensor's dtype, shape and quantization ("int8 [?x8x8x1] q(1, -128)"); None -> "n/a"."""
    if not details:
        return MISSING
    shape = "x".join("?" if d is None else str(d) for d in details.get("shape") or [])
    text = f"{details.get('dtype')} [{shape}]"
    quant = details.get("quantization")
    if quant:
        text += f" q({quant[0]:.4g}, {quant[1]})"
    return text


def _text(value) -> str:
    return MISSING if value is None or value == "" else str(value)


@dataclasses.dataclass(frozen=True)
class Column:
    """One column of the artifact table: its header, the row key it shows, how a value reads, its alignment."""

    header: str
    key: str
    render: Callable[[object], str] = _text
    right: bool = False

    def cell(self, row) -> str:
        return self.render(row.get(self.key))


# Every column the artifact table knows; a table shows a selection of them, in this order.
ARTIFACT_COLUMNS = {column.key: column for column in (
    Column("artifact", "artifact"),
    Column("target", "target"),
    Column("size", "size_bytes", format_size, right=True),
    Column("precision", "precision"),
    Column("input", "input", format_io),
    Column("output", "output", format_io),
    Column("accuracy", "accuracy", format_percent, right=True),
    Column("agreement", "agreement", format_percent, right=True),
    Column("latency b1 (ms)", "latency_ms_batch1_median", lambda v: format_number(v, ".3f"), right=True),
    Column("throughput (img/s)", "throughput_images_per_s", lambda v: format_number(v, ",.0f"), right=True),
)}
# What the terminal, the notebook and the demo show; report.md adds each artifact's input and output.
SUMMARY_COLUMNS = ("artifact", "size", "precision", "accuracy", "agreement", "latency", "throughput")
REPORT_COLUMNS = ("artifact", "size", "precision", "input", "output", "accuracy", "agreement", "latency",
                  "throughput")
_SHORT = {"size": "size_bytes", "latency": "latency_ms_batch1_median", "throughput": "throughput_images_per_s"}
ARTIFACT_CAPTION = "agreement: top-1 equal to the Keras model's; latency: batch 1, median"


def artifact_columns(names=SUMMARY_COLUMNS, extra=()) -> list[Column]:
    """The `Column`s named (keys of `ARTIFACT_COLUMNS`, or size/latency/throughput), then `extra` columns."""
    return [ARTIFACT_COLUMNS[_SHORT.get(name, name)] for name in names] + list(extra)


def artifact_markdown(rows, columns=None) -> list[str]:
    """The artifact table as Markdown lines (header, alignment, one line per row: a mapping per artifact)."""
    columns = columns or artifact_columns()
    lines = ["| " + " | ".join(column.header for column in columns) + " |",
             "|" + "|".join("---:" if column.right else "---" for column in columns) + "|"]
    lines += ["| " + " | ".join(column.cell(row) for column in columns) + " |" for row in rows]
    return lines


def artifact_table(rows, *, title: str = "Exported artifacts", columns=None, caption: str = ARTIFACT_CAPTION):
    """The artifact table as a `rich.table.Table`: drawn text in a terminal or log, an HTML table in a notebook."""
    columns = columns or artifact_columns()
    table = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
    for column in columns:
        table.add_column(column.header, justify="right" if column.right else "left",
                         no_wrap=column.right or column.key == "artifact")
    for row in rows:
        table.add_row(*(column.cell(row) for column in columns))
    return table


def safe_name(text, *, default: str = "run") -> str:
    """`text` with every run of characters other than letters, digits, `_`, `.` and `-` replaced by `_`.

    Used for folder names made from model and dataset names ("nin_cifar-folder:/data/x" -> "nin_cifar-folder_data_x").
    """
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("._") or default
