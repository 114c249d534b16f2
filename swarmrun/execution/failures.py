"""Errors as they happen: failed points grouped by error text, first occurrences, `--fail-fast`.

`group` is pure; `FailureFeed` reads a sweep's failed records from Redis as they are recorded
(only when their number changed since the last look).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from swarmrun.execution.keys import Keys
from swarmrun.execution.queue import SweepQueue


def group(errors: Iterable[str]) -> list[tuple[str, int]]:
    """(error text, count), most frequent first, then alphabetically."""
    counts = Counter(errors)
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def grown(counts: Mapping[str, int], shown: Mapping[str, int], limit: int = 5) -> tuple[list[str], int]:
    """The running-count lines of the error groups that grew since `shown` (most frequent first,
    at most `limit`), and how many other groups grew too."""
    up = [(m, c) for m, c in counts.items() if c > shown.get(m, 0)]
    up.sort(key=lambda item: (-item[1], item[0]))
    lines = [f"errors so far: {c} x {m} (+{c - shown.get(m, 0)})" for m, c in up[:limit]]
    return lines, max(0, len(up) - limit)


@dataclass(frozen=True)
class NewError:
    """The first point failing with this error text, and how many points have it so far."""

    message: str
    index: int
    count: int


@dataclass
class FailureFeed:
    """Follows a sweep's failures; `poll` returns the errors not seen before."""

    queue: SweepQueue
    sweep_id: str
    counts: Counter[str] = field(default_factory=Counter)
    seen: set[int] = field(default_factory=set)
    first: dict[str, int] = field(default_factory=dict)
    _length: int = 0

    def poll(self) -> list[NewError]:
        key = Keys(self.sweep_id).errors
        length = int(self.queue.connection.hlen(key))
        if length == self._length:
            return []
        self._length = length
        fresh: list[NewError] = []
        for raw_index, raw in self.queue.connection.hscan_iter(key, count=1000):
            index = int(raw_index)
            if index in self.seen:
                continue
            self.seen.add(index)
            message = str(json.loads(raw).get("e") or "error")
            self.counts[message] += 1
            if message not in self.first:
                self.first[message] = index
                fresh.append(NewError(message, index, 0))
        return [NewError(e.message, e.index, self.counts[e.message]) for e in fresh]

    @property
    def failed(self) -> int:
        return sum(self.counts.values())


def failure_lines(queue: SweepQueue, sweep_id: str, limit: int = 10) -> list[str]:
    """`status`'s failure summary: error texts with counts, most frequent first."""
    texts = [
        str(json.loads(raw).get("e") or "error")
        for _, raw in queue.connection.hscan_iter(Keys(sweep_id).errors, count=1000)
    ]
    if not texts:
        return []
    grouped = group(texts)
    lines = [f"failures by error ({len(texts)} points):"]
    lines += [f"  {count:>6} x {message}" for message, count in grouped[:limit]]
    if len(grouped) > limit:
        lines.append(f"  ... and {len(grouped) - limit} other errors")
    return lines
