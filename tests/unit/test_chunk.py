"""Chunk planning and bitmap decoding: pure, table-driven, no servers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarmrun.definition.chunk import ChunkRef, bits, first_clear, plan_size


def test_chunk_ids_round_trip_and_are_valid_rq_ids() -> None:
    ref = ChunkRef("0123456789abcdef", 3, 100, 2500)
    assert ref.job_id == "sr-0123456789abcdef-g3-100-2500"
    assert ChunkRef.parse(ref.job_id) == ref
    assert ChunkRef.parse("something-else") is None
    assert all(c.isalnum() or c in "-_" for c in ref.job_id)


@pytest.mark.parametrize(
    ("remaining", "per_point", "workers", "fixed", "expected", "why"),
    [
        (100, None, 4, None, 1, "unmeasured: one point probes the cost"),
        (100, 10.0, 4, None, 1, "long points: one per chunk"),
        (1_000_000, 1e-5, 2, None, 250_000, "tiny points, many left: a quarter each for 2 workers"),
        (1_000_000, 1e-5, 8, None, 62_500, "the share shrinks with more workers"),
        (1_000_000, 1e-5, 32, None, 20_000, "but a chunk holds at least 0.2 s of work"),
        (1_000_000, 1e-3, 2, None, 3_000, "capped by the target: 3 s of work"),
        (10, 1e-5, 2, None, 10, "never shorter than 0.2 s of work while points remain"),
        (100, 1e-3, 8, None, 100, "0.2 s floor: 200 points, but only 100 left"),
        (50, 1e-3, 2, 7, 7, "a fixed chunk size wins"),
        (5, 1e-3, 2, 7, 5, "but not past the end"),
        (0, 1e-3, 2, None, 0, "nothing left"),
    ],
)
def test_plan_size(
    remaining: int, per_point: float | None, workers: int, fixed: int | None, expected: int, why: str
) -> None:
    assert (
        plan_size(remaining, seconds_per_point=per_point, workers=workers, target=3.0, fixed=fixed)
        == expected
    ), why


@given(st.integers(1, 10**7), st.floats(1e-7, 100), st.integers(1, 64))
def test_plan_size_bounds(remaining: int, per_point: float, workers: int) -> None:
    size = plan_size(remaining, seconds_per_point=per_point, workers=workers, target=3.0)
    assert 1 <= size <= remaining
    assert size * per_point <= 3.0 or size == 1


def _bitmap(done: set[int], length: int) -> bytes:
    out = bytearray((length + 7) // 8)
    for i in done:
        out[i // 8] |= 0x80 >> (i % 8)
    return bytes(out)


@given(st.sets(st.integers(0, 199)), st.integers(0, 199), st.integers(0, 200))
def test_bits_and_first_clear_match_a_set(done: set[int], start: int, stop: int) -> None:
    full = _bitmap(done, 200)
    offset_bytes = start // 8
    mask = full[offset_bytes:]
    assert bits(mask, start, start, stop) == [i in done for i in range(start, stop)]
    expected = next((i for i in range(start, stop) if i not in done), None)
    assert first_clear(mask, start, start, stop) == expected


def test_bits_past_the_end_read_as_zero() -> None:
    assert bits(b"\xff", 0, 6, 10) == [True, True, False, False]
    assert first_clear(b"\xff\xff", 0, 0, 40) == 16
