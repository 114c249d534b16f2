"""Reading result records back from Redis: by index (format 3), by point key (older records).

`RecordStore` is what every reader of records uses (exports, `show`, the dashboard, the output
collector, a worker settling its files); `swarmrun.execution.queue.SweepQueue` is one, plus the
queue. The layout is in `swarmrun.execution.keys`, the Lua scripts in `swarmrun.execution.scripts`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import redis

from swarmrun.execution.connection import checkout
from swarmrun.execution.keyindex import KeyIndex
from swarmrun.execution.keys import Keys, reply_bytes, reply_text
from swarmrun.execution.scripts import EXPORT_LUA, INDEX_EXPORT_LUA, MUST_INDEX_LUA

# The point keys of points, by index (e.g. `Sweep.keys_of`): computed only when a record must be
# looked up by key (one written before format 3).
PointKeys = Sequence[str] | Callable[[Sequence[int]], Sequence[str]]


def _index_keys(sweep_id: str, task_key: str) -> list[str]:
    """The KEYS of `INDEX_EXPORT_LUA`: the sweep's failures, the task's origins, the done bitmap."""
    keys = Keys(sweep_id)
    return [keys.errors, Keys.origins(task_key), keys.done]


class RecordStore:
    """The result records on one Redis connection."""

    def __init__(self, connection: redis.Redis) -> None:
        self.connection = connection
        self._export = connection.register_script(EXPORT_LUA)
        self._index_export = connection.register_script(INDEX_EXPORT_LUA)
        self._must_index = connection.register_script(MUST_INDEX_LUA)
        self.key_index = KeyIndex(connection)

    def must_index(self, task_key: str, sweep_id: str) -> bool:
        """Must other sweeps of the task be put in its key index before `sweep_id` (or `""`, no
        sweep) looks points up by key? Demotes the task's sole sweep unless it is `sweep_id`
        (`MUST_INDEX_LUA`; `swarmrun.execution.keyindex`)."""
        keys = [Keys.origins(task_key), Keys.unindexed(task_key)]
        return bool(self._must_index(keys=keys, args=[sweep_id]))

    def done_mask(self, sweep_id: str, start: int, stop: int) -> bytes:
        """Bitmap bytes covering `[start, stop)` (from byte `start // 8`)."""
        return reply_bytes(self.connection.getrange(Keys(sweep_id).done, start // 8, (stop - 1) // 8))

    def sweep_number(self, task_key: str, sweep_id: str) -> int | None:
        """The number a sweep's index buckets carry (format 3), None before it stored any."""
        number = self.connection.hget(Keys.origins(task_key), sweep_id)
        return int(number) if number is not None else None

    def records_range(self, sweep_id: str, task_key: str, start: int, stop: int) -> str:
        """The records of points `[start, stop)` by index (format 3), joined by commas (`0` where
        none): this sweep's ok record, else its failure. `"[" + answer + "]"` is one JSON array.
        Empty when no point of the range is done. Records from before format 3 are not there:
        `records_by_key` finds them."""
        if stop <= start:
            return ""
        answer = self._index_export(
            keys=_index_keys(sweep_id, task_key),
            args=[Keys.buckets(task_key), sweep_id, "range", start, stop],
        )
        return reply_text(answer)

    def read_ranges(
        self, sweep_id: str, task_key: str, ranges: Sequence[tuple[int, int]]
    ) -> Iterator[tuple[bytes, str]]:
        """For each range `[start, stop)` in order: its `done_mask` and its `records_range`.

        Pipelined on a connection of its own: the next range is asked for before this one is
        handed over, so Redis reads it while the caller writes this one (no thread: a reader
        thread waits for the GIL while the writer runs). It is asked for only once this one's
        reply has been read whole: a reply larger than the socket's buffer (a unix socket's holds
        about 200 kB, 8,192 no-op records are 250 kB) is written in parts, and Redis, busy with
        a script asked for meanwhile, would write the rest only after it. After a Redis error the
        rest is read one call at a time, through the client (and its retries).
        """
        keys, pool = Keys(sweep_id), self.connection.connection_pool
        conn: Any = checkout(pool)  # redis-py's Connection, partly untyped
        handed, got, sent = 0, 0, 0  # ranges handed over, read, asked for
        try:
            sha = reply_text(self.connection.script_load(INDEX_EXPORT_LUA))
            fixed = (sha, 3, *_index_keys(sweep_id, task_key), Keys.buckets(task_key), sweep_id)

            def ask() -> None:
                nonlocal sent
                start, stop = ranges[sent]
                read = [
                    ("GETRANGE", keys.done, start // 8, (stop - 1) // 8),
                    ("EVALSHA", *fixed, "range", start, stop),
                ]
                conn.send_packed_command(conn.pack_commands(read))
                sent += 1

            if ranges:
                ask()
            for _ in ranges:
                mask, text = conn.read_response(), conn.read_response()
                got += 1
                if sent < len(ranges):
                    ask()
                handed += 1
                yield reply_bytes(mask), reply_text(text)
        except redis.RedisError:
            conn.disconnect()
            sent = got
            for start, stop in ranges[handed:]:
                yield (
                    self.done_mask(sweep_id, start, stop),
                    self.records_range(sweep_id, task_key, start, stop),
                )
        finally:
            if sent > got:  # abandoned with replies unread: the connection is unusable
                conn.disconnect()
            pool.release(conn)

    def records_by_key(
        self, sweep_id: str, task_key: str, indices: Sequence[int], point_keys: Sequence[str]
    ) -> str:
        """The stored records of points found by their point keys, joined by commas (`0` where
        none): this sweep's failure, else the task's ok result (what records written before
        format 3 need; a format-3 pointer is followed). `"[" + answer + "]"` is one JSON array."""
        if not indices:
            return ""
        if self.must_index(task_key, sweep_id):
            self.key_index.catch_up(task_key)  # other sweeps' records, found by key only once indexed
        answer = self._export(
            keys=[Keys(sweep_id).errors, Keys.store(task_key)],
            args=[Keys.buckets(task_key), "\n".join(map(str, indices)), "\n".join(point_keys)],
        )
        return reply_text(answer)

    def record_values(
        self, sweep_id: str, task_key: str, indices: Sequence[int], point_keys: PointKeys
    ) -> list[Any]:
        """The decoded records of points, None where a point has none: by index first (format 3),
        by point key for the others (`point_keys` of all `indices`, or a function giving those of
        the indices it is passed, called only for points not found by index)."""
        if not indices:
            return []
        answer = self._index_export(
            keys=_index_keys(sweep_id, task_key),
            args=[Keys.buckets(task_key), sweep_id, "points", "\n".join(map(str, indices))],
        )
        values: list[Any] = json.loads(f"[{reply_text(answer)}]")
        missing = [k for k, v in enumerate(values) if v == 0]
        if missing:
            wanted = [indices[k] for k in missing]
            keys = point_keys(wanted) if callable(point_keys) else [point_keys[k] for k in missing]
            found = json.loads(f"[{self.records_by_key(sweep_id, task_key, wanted, keys)}]")
            for k, v in zip(missing, found, strict=True):
                values[k] = v
        return [None if v == 0 else v for v in values]

    def origins(self, task_key: str) -> dict[int, tuple[str, str]]:
        """Origin id -> (sweep id, worker) of a task's ok records."""
        out: dict[int, tuple[str, str]] = {}
        for field, value in self.connection.hgetall(Keys.origins(task_key)).items():
            name = reply_text(field)
            if name.startswith("#") and name[1:].isdigit():
                sweep_id, _, worker = reply_text(value).partition(" ")
                out[int(name[1:])] = (sweep_id, worker)
        return out
