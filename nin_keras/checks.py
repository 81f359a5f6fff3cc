"""Argument checks shared by every public function (and, through `nin_keras.cli.options`, the CLI).

One home for "is this a whole number in range", so the library and the command line accept and refuse the
same values with the same words. Each check returns the value converted (int/float/bool) or raises
`InvalidInputError` naming the argument, the allowed range and what was received.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path

from nin_keras.errors import InvalidInputError, MissingFileError, NotAFileError, NotAFolderError

# Upper bounds of counts, far beyond any real use and low enough that what TensorFlow makes of them fits its
# integer tensors (a count past int64 does not convert; Keras' learning-rate schedules count steps in int32).
MAX_EPOCHS = 1_000_000
MAX_BATCH_SIZE = 65_536
MAX_COUNT = 1_000_000_000  # steps, rounds, runs, samples, limits: any other count
MAX_THREADS = 1_024
MAX_SEED = 2**32 - 1  # NumPy's seed range
MAX_TRAINING_STEPS = 2**31 - 1  # epochs x steps per epoch: the schedules' int32 step counter
MAX_WIDTH_MULTIPLIER = 10_000  # far past what any machine holds (build_nin also checks the memory itself)


def check_int(name: str, value, *, minimum: int | None = None, maximum: int | None = None,
              allow_none: bool = False) -> int | None:
    """`value` as an int within [minimum, maximum]; bools and non-integral numbers are refused."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not in_range(value, minimum, maximum):
        raise InvalidInputError(f"{name} must be {describe_range('an integer', minimum, maximum)}; received {value!r}.")
    return int(value)


def check_float(name: str, value, *, minimum: float | None = None, maximum: float | None = None,
                min_inclusive: bool = True, max_inclusive: bool = True, allow_none: bool = False) -> float | None:
    """`value` as a finite float within the bounds (each inclusive unless said otherwise); bools are refused."""
    if value is None and allow_none:
        return None
    ok = (not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
          and in_range(value, minimum, maximum, min_inclusive=min_inclusive, max_inclusive=max_inclusive))
    if not ok:
        description = describe_range("a number", minimum, maximum, min_inclusive=min_inclusive,
                                max_inclusive=max_inclusive)
        raise InvalidInputError(f"{name} must be {description}; received {value!r}.")
    return float(value)


def check_bool(name: str, value) -> bool:
    """`value` if it is True or False (not 0/1, not a string)."""
    if not isinstance(value, bool):
        raise InvalidInputError(f"{name} must be True or False; received {value!r}.")
    return value


def check_choice(name: str, value, allowed):
    """`value` if it is one of `allowed` (compared with ==); the error lists the allowed values."""
    if value not in tuple(allowed):
        raise InvalidInputError(f"Unknown {name} {value!r}. Allowed: {', '.join(map(str, allowed))}.")
    return value


def check_path(what: str, path, *, kind: str) -> Path:
    """`path` as a Path if it exists and is a `kind` ("file" or "folder"); else an error that says which.

    Raises:
        FileNotFoundError: nothing at `path` ("<what> not found: <path>").
        IsADirectoryError / NotADirectoryError: a folder where a file is expected, or the other way round.
    """
    check_choice("kind", kind, ("file", "folder"))
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{what} not found: {path}")
    if kind == "file" and path.is_dir():
        raise NotAFileError(f"{what} {path} is a folder, not a file.")
    if kind == "folder" and not path.is_dir():
        raise NotAFolderError(f"{what} {path} is a file, not a folder.")
    return path


def in_range(value, minimum=None, maximum=None, *, min_inclusive=True, max_inclusive=True) -> bool:
    """True if `value` lies within the bounds (None: unbounded on that side)."""
    if minimum is not None and (value < minimum if min_inclusive else value <= minimum):
        return False
    if maximum is not None and (value > maximum if max_inclusive else value >= maximum):
        return False
    return True


def describe_range(noun: str, minimum=None, maximum=None, *, min_inclusive=True, max_inclusive=True) -> str:
    """ "an integer >= 1", "a number > 0 and < 1": how errors (library and CLI) state a range."""
    parts = []
    if minimum is not None:
        parts.append(f"{'>=' if min_inclusive else '>'} {_bound(minimum)}")
    if maximum is not None:
        parts.append(f"{'<=' if max_inclusive else '<'} {_bound(maximum)}")
    return f"{noun} {' and '.join(parts)}" if parts else noun


def _bound(value) -> str:
    """Integers in full (4294967295, not 4.29497e+09: a user copies the bound); other numbers short."""
    return str(value) if isinstance(value, numbers.Integral) else f"{value:g}"
