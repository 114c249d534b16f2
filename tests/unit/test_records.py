"""The result record format (format 2 and reading format 1), without Redis."""

from __future__ import annotations

import json
import math

from hypothesis import given
from hypothesis import strategies as st

from swarmrun.definition.chunk import bits, done_indices
from swarmrun.execution.results import Result, complete_record, encode_record
from swarmrun.execution.task import Outcome

ORIGINS = {1: ("sweepA", "host.1-aa"), 2: ("sweepB", "host.2-bb")}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(
    value=json_values, duration=st.floats(0, 1e6), attempt=st.integers(1, 50), origin=st.sampled_from([1, 2])
)
def test_ok_record_round_trip(value: object, duration: float, attempt: int, origin: int) -> None:
    status, partial = encode_record(
        Outcome("ok", value=value, duration=duration), attempt=attempt, worker="ignored", sweep_id="sweepA"
    )
    raw = complete_record(partial, origin)
    assert status == "ok" and "\n" not in raw and "\t" not in raw
    r = Result.decode(7, {"p": 1}, raw, "sweepA", ORIGINS)
    assert (r.index, r.params, r.status, r.value, r.attempt) == (7, {"p": 1}, "ok", value, attempt)
    assert r.duration == round(duration, 6)
    assert (r.worker, r.cached) == (ORIGINS[origin][1], origin == 2)
    assert r.error is None and r.exit_code is None


def test_ok_record_is_a_short_array_and_optional_fields_go_in_a_trailing_object() -> None:
    _, partial = encode_record(Outcome("ok", duration=0.000125), attempt=1, worker="w", sweep_id="s")
    record = json.loads(complete_record(partial, 12))
    assert record[:4] == [12, None, 0.000125, 1] and len(record) == 5
    assert len(complete_record(partial, 12)) <= 40
    _, partial = encode_record(Outcome("ok", value=3, exit_code=0), attempt=2, worker="w", sweep_id="s")
    record = json.loads(complete_record(partial, 1))
    assert record[5] == {"x": 0}
    assert Result.decode(0, {}, record, "sweepA", ORIGINS).exit_code == 0
    # readers ignore optional fields they do not know (how new fields are added)
    future = [1, 3, 0.5, 1, 1.0, {"x": 2, "files": [["out.txt", 3, "ab" * 32]]}]
    assert Result.decode(0, {}, json.dumps(future), "sweepA", ORIGINS).exit_code == 2


def test_failure_records_stay_objects_with_context() -> None:
    status, raw = encode_record(
        Outcome("timeout", error="took too long", stdout="x" * 5, duration=2.0),
        attempt=3,
        worker="w9",
        sweep_id="sweepA",
    )
    r = Result.decode(1, {}, raw, "sweepA")
    assert (status, r.status, r.error, r.stdout, r.worker, r.attempt, r.cached) == (
        "timeout",
        "timeout",
        "took too long",
        "xxxxx",
        "w9",
        3,
        False,
    )
    status, raw = encode_record(Outcome("ok", value=math.nan), attempt=1, worker="w", sweep_id="s")
    assert status == "ok" and math.isnan(Result.decode(0, {}, complete_record(raw, 1), "s", ORIGINS).value)


def test_format1_ok_records_are_still_read() -> None:
    raw = json.dumps({"s": "ok", "d": 0.1, "w": "h", "a": 1, "sw": "sweepB", "t": 1.0, "v": {"r": 2}, "x": 0})
    r = Result.decode(3, {"x": 1}, raw, "sweepA")
    assert (r.status, r.value, r.worker, r.cached, r.exit_code) == ("ok", {"r": 2}, "h", True, 0)
    assert not Result.decode(3, {}, raw, "sweepB").cached


@given(mask=st.binary(max_size=12), start=st.integers(0, 40), length=st.integers(0, 90))
def test_done_indices_agrees_with_bits(mask: bytes, start: int, length: int) -> None:
    stop = start + length
    expected = [i for i, hit in zip(range(start, stop), bits(mask, start, start, stop), strict=True) if hit]
    assert done_indices(mask, start, stop) == expected
