"""Export cells a column at a time: values as CSV cells and as JSON texts. Pure.

Exports write a block of thousands of rows at once; converting a column with list operations
(`map` over a type's own method, a table for repeated values) costs a fraction of a per-cell
call. Every function gives exactly what the per-row writers give (`csv.writer` for CSV, the
compact JSON encoder for JSON Lines), which tests/unit/test_cells.py checks.

Record fields also arrive as JSON texts (see `swarmrun.execution.results.simple_fields`): a
scalar's text becomes its cell through `CSV_OF_JSON` / `JSON_OF_JSON` without decoding it. This
relies on records being written by Python's `json` (numbers as `repr` writes them), as every
swarmrun record is.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from typing import Any

# The default `csv` dialect quotes a cell holding any of these (QUOTE_MINIMAL), doubling quotes.
_CSV_SPECIAL = (",", '"', "\r", "\n")
# JSON Lines must be JSON: no NaN / Infinity (they become null, as pandas and jq expect).
STRICT_JSON = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=str)
PLAIN_JSON = json.JSONEncoder(separators=(",", ":"))
SCALARS = frozenset({int, float, str, bool, type(None)})

# A scalar field's JSON text -> its CSV cell (numbers are their own: `str`/`repr` of the number).
CSV_OF_JSON = {
    "null": "",
    "true": "True",
    "false": "False",
    "NaN": "nan",
    "Infinity": "inf",
    "-Infinity": "-inf",
}
# A scalar field's JSON text -> its text in strict JSON (numbers are their own).
JSON_OF_JSON = {"NaN": "null", "Infinity": "null", "-Infinity": "null"}


def csv_quote(text: str) -> str:
    """A cell's text as the default `csv` dialect writes it inside a row."""
    if any(c in text for c in _CSV_SPECIAL):
        return '"' + text.replace('"', '""') + '"'
    return text


def cell(value: Any) -> Any:
    """A value as CSV and Parquet take it: dicts and lists as JSON text, scalars as they are."""
    return PLAIN_JSON.encode(value) if isinstance(value, dict | list) else value


def csv_text(value: Any) -> str:
    """One cell as `csv.writer` writes it (after `cell`)."""
    if value is None:
        return ""
    if type(value) is float:
        return repr(value)
    return csv_quote(str(cell(value)))


def csv_column(column: Sequence[Any]) -> list[str]:
    """`csv_text` of every value of a column."""
    kinds = set(map(type, column))
    if kinds <= {int}:
        return list(map(int.__repr__, column))
    if kinds == {float}:
        return list(map(float.__repr__, column))
    if kinds <= {str, bool, type(None)}:  # few distinct values, usually: each converted once
        return _by_value(column, csv_text)
    return list(map(csv_text, column))


def finite(value: Any) -> Any:
    """`value` with every NaN / infinity replaced by None (JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def json_text(value: Any) -> str:
    """One value as strict JSON (NaN and infinities as null)."""
    try:
        return STRICT_JSON.encode(value)
    except ValueError:  # NaN or infinity somewhere: null instead (the rare path)
        return STRICT_JSON.encode(finite(value))


def json_column(column: Sequence[Any]) -> list[str]:
    """`json_text` of every value of a column."""
    kinds = set(map(type, column))
    if kinds <= {int}:
        return list(map(int.__repr__, column))
    if kinds == {float} and all(map(math.isfinite, column)):
        return list(map(float.__repr__, column))
    if kinds <= {str, bool, type(None)}:
        return _by_value(column, json_text)
    return list(map(json_text, column))


def _by_value(column: Sequence[Any], convert: Any) -> list[str]:
    table = {v: convert(v) for v in set(column)}
    return list(map(table.__getitem__, column))


def mapped(column: list[str], table: dict[str, str]) -> list[str]:
    """Each text through `table`, or itself where the table has no entry (at C speed)."""
    if column and column.count(column[0]) == len(column):  # one text throughout (e.g. all null)
        return [table.get(column[0], column[0])] * len(column)
    return list(map(table.get, column, column))


def lines(pieces: Sequence[str | list[str]], n: int) -> str:
    """`n` lines of text, each the concatenation of `pieces`: a text, the same on every line, or
    a column (its texts, one a line). Columns holding one text throughout are merged into the
    texts around them, and the whole is one `join` (no formatting per line)."""
    merged: list[str | list[str]] = []
    for piece in pieces:
        if not isinstance(piece, str) and piece and piece.count(piece[0]) == len(piece):
            piece = piece[0]
        if isinstance(piece, str) and merged and isinstance(merged[-1], str):
            merged[-1] += piece
        else:
            merged.append(piece)
    if all(isinstance(piece, str) for piece in merged):
        return "".join(map(str, merged)) * n
    columns = [itertools.repeat(piece) if isinstance(piece, str) else piece for piece in merged]
    # strict=False: the texts repeat for ever, the columns end the lines
    return "".join(itertools.chain.from_iterable(zip(*columns, strict=False)))
