"""The key index, caught up: putting a sweep's earlier ok records into its task's key index.

The key index (`results:{task}:{kkkk}`, see `swarmrun.execution.keys`) lets a sweep find the
results other sweeps of its task already have, by point key. While a sweep is the task's only one
with results (its `sole` sweep), nobody looks its points up, so the record script writes it no
entry: that is about half of Redis's work per result and most of its memory on sweeps under a
few million points. When another sweep of the task appears (its first result, its first cached
check, or a `purge`), the sole sweep is demoted into the task's `unindexed` set, the record
script indexes its later records, and `catch_up` its earlier ones, before anyone looks up:
`SweepQueue.cached` calls it when the check answers that sweeps are waiting.

The point keys come from the sweep's spec (expanded by index, as a worker does), a block at a
time: 10^5 records take about a second. Builders of one task take turns (a lock that each block
renews); entries are written first-wins (HSETNX), so a record indexed twice, by the record script
and here, is harmless. A sweep whose spec is gone (purged by a version before this one) cannot
be indexed: it leaves the set, and its records are found by index only.
"""

from __future__ import annotations

import json

import redis

from swarmrun.definition.sweepfile import sweep_from_dict
from swarmrun.execution.keys import INDEX_BUCKET, Keys, reply_text
from swarmrun.execution.scripts import INDEX_LUA, OWN_RECORDS_LUA

BLOCK = INDEX_BUCKET * 128  # points a round trip: 128 index buckets
LOCK_SECONDS = 60  # a builder that dies frees the task after this; each block renews it


def indexing_message(results: int) -> str:
    """What `run`, `submit` and `purge` (and the Python API with `progress=True`) say before
    they index earlier results."""
    return (
        f"Indexing {results:,} results of earlier sweeps of this task by their parameters, "
        "so that other sweeps reuse them (once; a few seconds a million)..."
    )


class KeyIndex:
    """Catching up the key index of a task's demoted sweeps, on one Redis."""

    def __init__(self, connection: redis.Redis) -> None:
        self.connection = connection
        self._own = connection.register_script(OWN_RECORDS_LUA)
        self._index = connection.register_script(INDEX_LUA)

    def catch_up(self, task_key: str) -> int:
        """Index the earlier ok records of every sweep in the task's `unindexed` set; returns the
        entries written (0 when another builder had done it)."""
        unindexed = Keys.unindexed(task_key)
        written = 0
        lock = self.connection.lock(Keys.index_lock(task_key), timeout=LOCK_SECONDS, blocking_timeout=None)
        with lock:
            for raw in sorted(self.connection.smembers(unindexed)):
                sweep_id = reply_text(raw)
                written += self._sweep(task_key, sweep_id, lock)
                self.connection.srem(unindexed, sweep_id)
        return written

    def _sweep(self, task_key: str, sweep_id: str, lock: redis.lock.Lock) -> int:
        spec = self.connection.hget(Keys(sweep_id).meta, "spec")
        raw = self.connection.hget(Keys.origins(task_key), sweep_id)
        if spec is None or raw is None:
            return 0
        number = reply_text(raw)
        sweep = sweep_from_dict(json.loads(spec))
        prefix, written = Keys.buckets(task_key), 0
        for start in range(0, sweep.size, BLOCK):
            stop = min(sweep.size, start + BLOCK)
            found = reply_text(self._own(args=[prefix, number, start, stop]))
            if found:
                indices = [int(i) for i in found.split(",")]
                pointers = [f"{number}{i:09d}" for i in indices]  # as the record script writes them
                lines = "".join(f"{p}\t{k}\n" for p, k in zip(pointers, sweep.keys_of(indices), strict=True))
                written += int(self._index(args=[prefix, lines]))
            lock.reacquire()
        return written
