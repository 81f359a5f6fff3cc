"""Text the package shows people: file sizes, percentages and file-name-safe names, each formatted one way."""

from __future__ import annotations

import re

# Sizes are decimal megabytes (10^6 bytes), as file managers and app stores show them.
_UNITS = (("GB", 1e9), ("MB", 1e6), ("kB", 1e3))


def format_size(num_bytes) -> str:
    """`1_007_856` -> "1.01 MB"; None -> "-". Decimal units (kB = 1000 B, MB = 10^6 B)."""
    if num_bytes is None:
        return "-"
    for unit, scale in _UNITS:
        if num_bytes >= scale:
            return f"{num_bytes / scale:.2f} {unit}"
    return f"{int(num_bytes)} B"


def format_percent(fraction) -> str:
    """0.9294 -> "92.94%"; None -> "n/a"."""
    return "n/a" if fraction is None else f"{100 * float(fraction):.2f}%"


def safe_name(text, *, default: str = "run") -> str:
    """`text` with every run of characters other than letters, digits, `_`, `.` and `-` replaced by `_`.

    Used for folder names made from model and dataset names ("nin_cifar-folder:/data/x" -> "nin_cifar-folder_data_x").
    """
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("._") or default
