"""Where swarmrun keeps things in Redis: every key, by sweep and by task, and reply helpers.

Keys (prefix `swarmrun:`):
- `sweeps`                 zset of sweep ids by submit time
- `sweep:{id}`             hash: spec, options, name, size, task, origin, state, gen, created
- `sweep:{id}:done`        bitmap: bit i set once point i has its one result
- `sweep:{id}:errors`      hash: index -> failed/timed-out record of this sweep
- `sweep:{id}:counts`      hash: ok, error, timeout, cached, executions, duplicates, seconds, processed
- `sweep:{id}:inflight`    hash: index -> executions started in a re-run (crashed) chunk
- `results:{task}:i{s}:{b}` hash per block of 128 indices of sweep number `s` (format 3): the point
                           index's last 7 bits (`index % 128`, `b = index // 128`) -> the sweep's
                           ok record (a compact JSON array, see `swarmrun.execution.results`), or,
                           for a point cached from another sweep, a copy of the key index entry.
                           128 entries keep each a listpack on a Redis with default settings.
                           Kept by `purge` (other sweeps' pointers may name them)
- `results:{task}:{kkkk}`  hash per bucket (`kkkk`: the first 4 hex chars of a point key), the key
                           index shared by every sweep of the task, so a changed sweep only runs
                           its new points: the rest of the point key -> a pointer `<s><index as 9
                           digits>` (the integer `s * 10**9 + index`, format 3) to the record of
                           the first sweep that stored this point, or the ok record itself
                           (format 2, before format 3: still read). 65,536 buckets of small
                           hashes, which Redis keeps as listpacks (a few bytes per entry). The
                           records of a task's `sole` sweep are not in it (nobody looks them up)
                           until another sweep comes: `swarmrun.execution.keyindex`
- `results:{task}:origins` hash: `SWEEP WORKER` -> small id and `#id` -> `SWEEP WORKER`: who wrote
                           an ok record (interned, so a record carries a number, not two names);
                           `SWEEP` -> its number `s` for index buckets (the same counter, `#next`);
                           `sole` -> the task's only sweep with results, while there is one
- `results:{task}:unindexed` set: sweeps demoted from `sole` whose earlier records are not in the
                           key index yet (`swarmrun.execution.keyindex` puts them there)
- `results:{task}:indexing` the lock of whoever does that
- `results:{task}`         hash: point key -> ok record as a JSON object (records written before
                           the bucketed store, format 1): still read, never written

Written by `swarmrun.execution.queue` (sweeps, chunks, records) and read back by
`swarmrun.execution.store` (records by index or by key).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PREFIX = "swarmrun:"
SWEEPS = PREFIX + "sweeps"
INDEX_BUCKET = 128  # indices per format-3 index bucket (Redis's default hash-max-listpack-entries)


@dataclass(frozen=True)
class Keys:
    """The Redis keys of one sweep."""

    sweep_id: str

    @property
    def meta(self) -> str:
        return f"{PREFIX}sweep:{self.sweep_id}"

    @property
    def done(self) -> str:
        return f"{self.meta}:done"

    @property
    def errors(self) -> str:
        return f"{self.meta}:errors"

    @property
    def counts(self) -> str:
        return f"{self.meta}:counts"

    @property
    def inflight(self) -> str:
        return f"{self.meta}:inflight"

    @property
    def lock(self) -> str:
        return f"{self.meta}:lock"

    @staticmethod
    def store(task_key: str) -> str:
        """The format-1 result store of a task (read, never written)."""
        return f"{PREFIX}results:{task_key}"

    @staticmethod
    def buckets(task_key: str) -> str:
        """The prefix of a task's result buckets: add the first 4 hex chars of a point key."""
        return f"{PREFIX}results:{task_key}:"

    @staticmethod
    def origins(task_key: str) -> str:
        return f"{PREFIX}results:{task_key}:origins"

    @staticmethod
    def unindexed(task_key: str) -> str:
        """The task's sweeps with ok records not in its key index yet (see `SweepQueue.cached`)."""
        return f"{PREFIX}results:{task_key}:unindexed"

    @staticmethod
    def index_lock(task_key: str) -> str:
        return f"{PREFIX}results:{task_key}:indexing"

    @staticmethod
    def index_bucket(task_key: str, number: int, index: int) -> str:
        """The format-3 bucket of sweep number `number` holding point `index` (field `index % 128`)."""
        return f"{PREFIX}results:{task_key}:i{number}:{index // INDEX_BUCKET}"


def reply_text(value: Any) -> str:
    """A Redis reply as text (replies are bytes: connections are opened without decoding)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def reply_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()
