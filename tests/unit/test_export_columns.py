"""Export a column at a time, without Redis: params as columns from the axes, format-3 pointers,
cells by column, and the fast text path of simple records against the per-row writers."""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmrun.definition.axes import (
    Axis,
    Distribution,
    LinspaceAxis,
    LogspaceAxis,
    RangeAxis,
    RepeatAxis,
    RowsAxis,
    SamplesAxis,
    ValuesAxis,
    ZipAxis,
)
from swarmrun.definition.sweep import MAX_POINTS, Options, Sweep, TaskSpec, point_key
from swarmrun.execution.cells import STRICT_JSON, csv_column, json_column
from swarmrun.execution.export import Rows, _decoded, jsonl_text, worker_origins
from swarmrun.execution.results import (
    Block,
    complete_record,
    encode_record,
    parse_pointer,
    pointer,
    simple_fields,
)
from swarmrun.execution.task import Outcome

TASK = TaskSpec("m:f", None)
scalars = st.one_of(
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6),
    st.booleans(),
    st.none(),
)
any_values = st.recursive(
    scalars | st.floats(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)
# What an axis may hold: a sweep's id is canonical JSON, which has no NaN or infinity.
axis_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)


def _names(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{k}" for k in range(n)]


@st.composite
def axes(draw: Any, prefix: str) -> Axis:
    """One axis of any kind (names start with `prefix`, so axes of a sweep never share a name)."""
    kind = draw(st.sampled_from(["values", "linspace", "logspace", "range", "zip", "rows", "samples"]))
    size = draw(st.integers(1, 7))
    if kind == "values":
        return ValuesAxis(prefix, tuple(draw(st.lists(axis_values, min_size=1, max_size=7))))
    if kind == "linspace":
        return LinspaceAxis(prefix, draw(st.floats(-10, 10)), draw(st.floats(-10, 10)), size)
    if kind == "logspace":
        return LogspaceAxis(prefix, draw(st.floats(-3, 3)), draw(st.floats(-3, 3)), size, 10.0)
    if kind == "range":
        step = draw(st.sampled_from([-3, -1, 1, 2, 5]))
        start = draw(st.integers(-20, 20))
        return RangeAxis(prefix, start, start + step * size, step)
    if kind == "zip":
        return ZipAxis(
            (
                ValuesAxis(prefix + "a", tuple(draw(st.lists(scalars, min_size=size, max_size=size)))),
                RangeAxis(prefix + "b", 0, size, 1),
                LinspaceAxis(prefix + "c", 0.0, 1.0, size),
            )
        )
    if kind == "rows":
        width = draw(st.integers(1, 3))
        rows = draw(st.lists(st.tuples(*[scalars] * width), min_size=1, max_size=6))
        return RowsAxis(tuple(_names(prefix, width)), tuple(rows))
    dists = (Distribution(prefix + "u", "uniform", (0, 1)), Distribution(prefix + "c", "choice", ("a", 2)))
    return SamplesAxis(size, draw(st.integers(0, 99)), dists)


@st.composite
def sweeps(draw: Any) -> Sweep:
    count = draw(st.integers(0, 4))
    found = [draw(axes(f"p{k}_")) for k in range(count)]
    if draw(st.booleans()):
        found.append(RepeatAxis(draw(st.integers(1, 4)), draw(st.none() | st.integers(0, 9))))
    return Sweep("t", TASK, tuple(found))


@settings(max_examples=300, deadline=None)
@given(sweep=sweeps(), data=st.data())
def test_param_columns_equal_each_point(sweep: Sweep, data: st.DataObject) -> None:
    start = data.draw(st.integers(0, sweep.size))
    stop = data.draw(st.integers(start, sweep.size))
    points = [sweep.point(i) for i in range(start, stop)]
    expected = [[p[name] for p in points] for name in sweep.param_names]
    assert sweep.columns(start, stop) == expected
    assert sweep.keys_of(range(start, stop)) == [point_key(p) for p in points]


def test_param_columns_of_long_ranges_repeat_and_wrap() -> None:
    sweep = Sweep("t", TASK, (RangeAxis("a", 0, 300, 1), ValuesAxis("b", ("x", "y", "z")), RepeatAxis(5)))
    for start, stop in [(0, sweep.size), (7, 4100), (4095, 4096), (14, 15), (4499, 4500)]:
        points = [sweep.point(i) for i in range(start, stop)]
        assert sweep.columns(start, stop) == [[p[n] for p in points] for n in ("a", "b", "repeat")]
    with pytest.raises(IndexError):
        sweep.columns(0, sweep.size + 1)


@given(number=st.integers(1, 10**9), index=st.integers(0, MAX_POINTS - 1))
def test_pointer_round_trip(number: int, index: int) -> None:
    text = pointer(number, index)
    assert int(text) == number * 10**9 + index and text.isdigit()
    assert parse_pointer(text) == parse_pointer(text.encode()) == (number, index)


def test_records_are_not_pointers_and_pointers_are_bounded() -> None:
    _, partial = encode_record(Outcome("ok", value=3), attempt=1, worker="w", sweep_id="s")
    assert parse_pointer(complete_record(partial, 12345678901)) is None  # format 2/3 ok record
    assert parse_pointer('{"s":"ok","v":1}') is None  # format 1, or a failure
    assert parse_pointer("12") is None
    for number, index in [(0, 1), (1, MAX_POINTS), (1, -1)]:
        with pytest.raises(ValueError):
            pointer(number, index)


# ----------------------------------------------------------------------------- cells by column


def _csv_cells(column: list[Any]) -> list[str]:
    """What `csv.writer` writes for each value, alone between two other cells."""
    out = []
    for value in column:
        buffer = io.StringIO(newline="")
        csv.writer(buffer).writerow(["a", value, "b"])
        out.append(buffer.getvalue()[2:-4])
    return out


column_values = st.lists(scalars | st.floats() | any_values, max_size=8) | st.lists(st.integers(), max_size=8)


@given(column=column_values)
def test_csv_cells_by_column_are_what_csv_writes(column: list[Any]) -> None:
    cells = [json.dumps(v, separators=(",", ":")) if isinstance(v, dict | list) else v for v in column]
    assert csv_column(column) == _csv_cells(cells)


@given(column=column_values)
def test_json_cells_by_column_are_what_the_encoder_writes(column: list[Any]) -> None:
    def strict(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: strict(v) for k, v in value.items()}
        return [strict(v) for v in value] if isinstance(value, list) else value

    assert json_column(column) == [STRICT_JSON.encode(strict(v)) for v in column]


# --------------------------------------------------------------- the fast path of simple records

ORIGINS = {1: ("sweepA", "host.1-aa"), 2: ("sweepB", 'odd,"name"')}
record_values = st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats()


@st.composite
def simple_blocks(draw: Any) -> tuple[Sweep, Block, Block]:
    """A sweep, and one block of its ok records both ways: as stored text, and decoded."""
    sweep = draw(sweeps())
    start = draw(st.integers(0, sweep.size - 1))
    stop = draw(st.integers(start + 1, sweep.size))
    texts = []
    for _ in range(start, stop):
        outcome = Outcome("ok", value=draw(record_values), duration=draw(st.floats(0, 1e6)))
        _, partial = encode_record(outcome, attempt=draw(st.integers(1, 9)), worker="w", sweep_id="s")
        texts.append(complete_record(partial, draw(st.sampled_from([1, 2, 3]))))
    text = ",".join(texts)
    indices = list(range(start, stop))
    fast = Block(sweep.param_names, indices, sweep.columns(start, stop), text=text)
    slow = Block(sweep.param_names, indices, sweep.columns(start, stop), _records=json.loads(f"[{text}]"))
    return sweep, fast, slow


@settings(max_examples=200, deadline=None)
@given(blocks=simple_blocks(), files=st.booleans())
def test_simple_records_are_written_as_the_per_row_writers_write_them(
    blocks: tuple[Sweep, Block, Block], files: bool
) -> None:
    sweep, fast, slow = blocks
    if files:
        sweep = Sweep(sweep.name, sweep.task, sweep.axes, Options(outputs=("*.txt",)))
    assert fast.fields is not None and slow.fields is None
    rows = Rows(sweep, "sweepA", ORIGINS, None)
    rows.learn(fast)
    other = Rows(sweep, "sweepA", ORIGINS, None)
    other.learn(slow)
    assert (rows.scalar, rows.keys) == (other.scalar, other.keys)
    buffer = io.StringIO(newline="")
    csv.writer(buffer).writerows(rows.rows(slow))
    assert rows.csv_text(fast) == rows.csv_text(slow) == buffer.getvalue()
    assert _same(rows.columns(fast), rows.columns(slow))
    origins = worker_origins(ORIGINS, "sweepA")
    assert jsonl_text(fast, origins, "sweepA") == jsonl_text(slow, origins, "sweepA")
    assert fast.records == slow.records and fast.points() == slow.points()


def _same(a: list[list[Any]], b: list[list[Any]]) -> bool:
    """Equal columns, NaN equal to NaN, and of the same types (Parquet infers from them)."""
    text = json.dumps([[[type(v).__name__, v] for v in c] for c in a])
    return text == json.dumps([[[type(v).__name__, v] for v in c] for c in b])


def test_only_flat_ok_records_of_scalars_are_simple() -> None:
    ok = "[1,null,0.5,1,17.5]"
    fields = [["[1", "[1"], ["null", "null"], ["0.5", "0.5"], ["1", "1"]]  # origins keep their `[`
    assert simple_fields(",".join([ok, ok]), 2) == fields
    for text, n in [
        (f"{ok},0", 2),  # a point without a record
        ('[1,"a,b",0.5,1,17.5]', 1),  # a string
        ("[1,[2,3],0.5,1,17.5]", 1),  # a list
        ('[1,3,0.5,1,17.5,{"x":0}]', 1),  # optional fields
        ('{"s":"error","e":"boom"}', 1),  # a failure
        ("[1,[2,3,4,5,6],7,8,9],0", 2),  # as many brackets and commas, but nested
        ("", 0),
    ]:
        assert simple_fields(text, n) is None, text


@settings(max_examples=200, deadline=None)
@given(
    pool=st.lists(record_values.map(json.dumps), min_size=1, max_size=6),
    picks=st.lists(st.integers(0, 5), min_size=1, max_size=2000),
)
def test_repeated_json_texts_decode_as_one_array_would(pool: list[str], picks: list[int]) -> None:
    """A column of few distinct texts (a no-op point's duration: one of a few) is decoded a
    distinct text at a time: the same values, of the same types, as decoding it whole."""
    texts = [pool[k % len(pool)] for k in picks]
    assert _same([_decoded(texts)], [json.loads(f"[{','.join(texts)}]")])
