"""Chunk planning: job ids, adaptive sizes and done-bitmap decoding. Pure functions only.

A sweep's work is a chain of chunk jobs. The first job covers `[0, N)`; a worker that takes a
job `[a, b)` fixes a split point `m`, enqueues the continuation `[m, b)` before running its
own share `[a, m)`, so idle workers always find the next piece. `m` comes from the measured
time per point, aiming at `target` seconds a chunk, shrinking towards the end of the sweep
(guided self-scheduling) so the last chunks spread over every worker.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

CHUNK_ID_RE = re.compile(r"^sr-(?P<sweep>[0-9a-f]+)-g(?P<gen>\d+)-(?P<start>\d+)-(?P<stop>\d+)$")
MIN_CHUNK_SECONDS = 0.2


@dataclass(frozen=True)
class ChunkRef:
    """A chunk job's identity: sweep, generation (one per submit/retry/repair) and range."""

    sweep_id: str
    gen: int
    start: int
    stop: int

    @property
    def job_id(self) -> str:
        return f"sr-{self.sweep_id}-g{self.gen}-{self.start}-{self.stop}"

    @classmethod
    def parse(cls, job_id: str) -> ChunkRef | None:
        match = CHUNK_ID_RE.match(job_id)
        if not match:
            return None
        return cls(match["sweep"], int(match["gen"]), int(match["start"]), int(match["stop"]))


def job_prefix(sweep_id: str) -> str:
    return f"sr-{sweep_id}-"


def plan_size(
    remaining: int,
    *,
    seconds_per_point: float | None,
    workers: int,
    target: float,
    fixed: int | None = None,
) -> int:
    """How many of `remaining` points the next chunk takes.

    `fixed` (the sweep's `chunk: N`) wins. Without a measurement yet, take one point: the
    first points measure the cost, and long points are never bunched blindly.
    """
    if remaining <= 0:
        return 0
    if fixed is not None:
        return min(fixed, remaining)
    if not seconds_per_point or seconds_per_point <= 0:
        return 1
    most = max(1, int(target / seconds_per_point))
    least = max(1, int(MIN_CHUNK_SECONDS / seconds_per_point))
    share = math.ceil(remaining / (2 * max(1, workers)))
    return max(1, min(remaining, most, max(least, share)))


def bits(mask: bytes, offset: int, start: int, stop: int) -> list[bool]:
    """Decode Redis bitmap bytes (bit 0 = most significant bit of byte 0) for `[start, stop)`.

    `mask` holds the bitmap's bytes from byte `offset // 8`; bytes past its end read as zero.
    """
    base = (offset // 8) * 8
    out = []
    for i in range(start, stop):
        pos = i - base
        byte = pos >> 3
        out.append(byte < len(mask) and bool(mask[byte] & (0x80 >> (pos & 7))))
    return out


def done_indices(mask: bytes, start: int, stop: int) -> list[int]:
    """The indices in `[start, stop)` whose bit is set in `mask` (bitmap bytes from `start // 8`).

    Whole bytes of set bits (a finished stretch) are taken eight at a time, and a mask of set
    bits only as one range.
    """
    base = (start // 8) * 8
    if (
        start == base
        and stop % 8 == 0
        and len(mask) >= (stop - base) // 8
        and mask.count(0xFF, 0, (stop - base) // 8) == (stop - base) // 8
    ):
        return list(range(start, stop))
    out: list[int] = []
    i = start
    while i < stop:
        pos = i - base
        byte = pos >> 3
        if byte >= len(mask):
            break
        value = mask[byte]
        if (pos & 7) == 0 and i + 8 <= stop and value in (0, 0xFF):
            if value:
                out.extend(range(i, i + 8))
            i += 8
            continue
        if value & (0x80 >> (pos & 7)):
            out.append(i)
        i += 1
    return out


def first_clear(mask: bytes, offset: int, start: int, stop: int) -> int | None:
    """The first index in `[start, stop)` whose bit is 0 in `mask` (read from `offset`), else None."""
    base = (offset // 8) * 8
    i = start
    while i < stop:
        pos = i - base
        byte = pos >> 3
        if byte >= len(mask):
            return i
        value = mask[byte]
        if value == 0xFF and (pos & 7) == 0 and i + 8 <= stop:
            i += 8
            continue
        if not value & (0x80 >> (pos & 7)):
            return i
        i += 1
    return None
