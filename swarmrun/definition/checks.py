"""Checks of single values in a sweep spec, each failing with one line that names where and why.

`where` is a location like `sweep.yaml: params.alpha` (`join_key` extends it by one key) or `-p
alpha=...`; every error is a `SweepFileError` of bounded length with unprintable characters escaped,
so a hostile file cannot flood or garble the terminal. Pure.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from swarmrun.errors import SweepFileError

_FLOAT_MAX = 1.7976931348623157e308


def _one_line(text: str) -> str:
    """`text` with line breaks and other unprintable characters escaped, as repr() writes them."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def fail(where: str, why: str) -> SweepFileError:
    """The error for `where` (a file and key, or an override); one line of bounded length."""
    return SweepFileError(_one_line(f"{_cut(where, 200)}: {_cut(why, 400)}"))


def show(value: Any) -> str:
    try:
        text = json.dumps(value, default=repr) if not isinstance(value, str) else repr(value)
    except (ValueError, RecursionError):  # an int past Python's digit limit; deep nesting
        text = f"a {type(value).__name__}"
    return text if len(text) <= 60 else text[:57] + "..."


def is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def scalar(where: str, x: Any) -> Any:
    """Check that `x` is a JSON scalar (number, string, boolean, null) and finite."""
    if x is None or isinstance(x, str | bool | int):
        return x
    if isinstance(x, float):
        if not math.isfinite(x):
            raise fail(where, f"non-finite number {x} is not allowed")
        return x
    if isinstance(x, list | tuple | Mapping):
        kind = "a list" if isinstance(x, list | tuple) else "a mapping"
        raise fail(where, f"values must be numbers, strings, booleans or null, got {kind}: {show(x)}")
    raise fail(
        where,
        f"values must be numbers, strings, booleans or null, got a {type(x).__name__} {show(x)} "
        "(quote it to make it a string)",
    )


def number(where: str, x: Any, what: str = "") -> float:
    """`x` as a float; `what` names it in the message when the key alone does not."""
    if not is_number(x) or abs(x) > _FLOAT_MAX or not math.isfinite(x):
        raise fail(where, f"{what} must be a finite number, got {show(x)}".lstrip())
    return float(x)


def integer(where: str, x: Any, what: str = "", minimum: int | None = None) -> int:
    if not isinstance(x, int) or isinstance(x, bool):
        raise fail(where, f"{what} must be an integer, got {show(x)}".lstrip())
    if minimum is not None and x < minimum:
        raise fail(where, f"{what} must be >= {minimum}, got {x}".lstrip())
    return x


def check_keys(where: str, data: Mapping[str, Any], allowed: Sequence[str]) -> None:
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f"; valid: {', '.join(allowed)}"
            raise fail(where, f"unknown key '{_cut(str(key), 40)}'{hint}")


def mapping(where: str, x: Any) -> Mapping[str, Any]:
    if not isinstance(x, Mapping):
        raise fail(where, f"expected a mapping, got {show(x)}")
    return x


def or_default(value: Any, default: Any) -> Any:
    """`value`, or `default` when it is null (an empty section in YAML)."""
    return default if value is None else value


def join_key(where: str, key: str) -> str:
    """Extend a `file: key.path` location by one key."""
    return f"{where}.{key}" if ": " in where else f"{where}: {key}"
