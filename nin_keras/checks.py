"""Argument checks shared by every public function (and, through `nin_keras.cli.options`, the CLI).

One home for "is this a whole number in range", so the library and the command line accept and refuse the
same values with the same words. Each check returns the value converted (int/float/bool) or raises
`InvalidInputError` naming the argument, the allowed range and what was received.
"""

from __future__ import annotations

import math
import numbers

from nin_keras.errors import InvalidInputError


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
        parts.append(f"{'>=' if min_inclusive else '>'} {minimum:g}")
    if maximum is not None:
        parts.append(f"{'<=' if max_inclusive else '<'} {maximum:g}")
    return f"{noun} {' and '.join(parts)}" if parts else noun
