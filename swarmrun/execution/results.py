"""Result records: their compact JSON form in Redis, and reading a sweep's back in index order.

Writing them to CSV, JSON Lines and Parquet is `swarmrun.execution.export`.

Record format 3 (written since 2026-12-03), JSON-safe, never pickled; the records are format 2's,
stored by sweep and index so that an export reads a range of points without a key per point:

- A sweep's **ok records** are in its index buckets, `swarmrun:results:{task}:i{s}:{index // 128}`,
  field `index % 128` (`s`: the sweep's number, interned per task in the `origins` hash below).
  The task's **key index** (`swarmrun:results:{task}:{key[:4]}`, field `key[4:]`, shared by every
  sweep of the task, so a changed sweep reuses every point it shares with another) holds a
  **pointer** to the record of the first sweep that stored the point: the integer
  `s * 10**9 + index` (`pointer`; Redis keeps it as an integer, 6 bytes). A point cached from
  another sweep gets a copy of the key index entry (a pointer, or an older record) in this
  sweep's index bucket, so every done point of a sweep has an entry there. A sweep that ran a
  point itself keeps its own record, even when another sweep stored the same point first (in
  format 2 it showed the other's). Readers go by index and follow a pointer (one level); points
  whose entry is missing (recorded before format 3) are found by key, as before. A purged
  sweep's index buckets stay: pointers may name them. The records of a task's only sweep with
  results get their key index entries only when another sweep of the task comes (since
  2026-12-06; `swarmrun.execution.keyindex`): readers by key have them written first.
- Format 2 (2026-12-01 to 12-03) stored the ok record itself in the key index: still read.

Records, in format 2 and 3:

- An **ok record** is a JSON array `[origin, value, duration, attempt, time]`,
  optionally followed by ONE object of optional fields: `[origin, value, duration, attempt,
  time, {"x": 0}]`. `origin` is a small integer naming the sweep and worker that wrote it
  (interned per task in `swarmrun:results:{task}:origins`); `time` is the finish time (Unix s).
  Optional fields, left out when unset: `x` exit code (commands), `ex` the execution token and
  `f` its output files `[[name, bytes, sha256], ...]` (points with a log or files, see
  `swarmrun.execution.pointrun`). New optional fields go into
  that object (short keys; readers ignore keys they do not know), so the array never changes
  shape. A no-op result takes about 42 bytes of Redis memory at 10^6 (its record by index, the
  hashes' own overhead, the done bit), 72 once the key index holds its pointer and the rest of
  its key.
- A **failure record** (error / timeout), in the sweep's own `errors` hash, is a JSON object with
  short keys: `s` status, `e` error text, `tb` traceback tail, `d` duration (s), `w` worker,
  `a` attempt, `sw` the sweep that executed it, `t` finish time, `x` exit code, `o`/`r`
  stdout/stderr tails, and `ex` / `f` as above. Failures are few, so readability wins over bytes.
- Format-1 ok records (before 2026-12) were such objects too, under `swarmrun:results:{task}`;
  they are still read (and still count as cached results), never written.

Parameters are not stored: any process recomputes them from the sweep spec.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from swarmrun.definition.chunk import done_indices
from swarmrun.definition.sweep import MAX_POINTS, Sweep
from swarmrun.execution.cells import (
    PLAIN_JSON,
)
from swarmrun.execution.queue import SweepQueue
from swarmrun.execution.task import Outcome, json_default

READ_BLOCK = 8192
# Built once: `json.dumps` with options builds a new encoder per call, a cost paid on every point.
_RECORD_JSON = json.JSONEncoder(separators=(",", ":"), default=json_default)


def encode_record(outcome: Outcome, *, attempt: int, worker: str, sweep_id: str) -> tuple[str, str]:
    """(status, record) for an outcome; a value that is not JSON-able turns the point into an error.

    An ok record is returned without its leading `[origin,`: `SweepQueue.record` interns the
    origin (this sweep and worker) and prepends it inside Redis (see `complete_record`).
    """
    if outcome.status == "ok":
        try:
            encoded = "null" if outcome.value is None else _RECORD_JSON.encode(outcome.value)
        except (TypeError, ValueError):
            pass  # the general path below records why
        else:
            tail = "]" if outcome.exit_code is None else f',{{"x":{int(outcome.exit_code)}}}]'
            return "ok", (
                f"{encoded},{round(outcome.duration, 6)!r},{int(attempt)},{round(time.time(), 3)!r}{tail}"
            )
    record: dict[str, Any] = {
        "s": outcome.status,
        "d": round(outcome.duration, 6),
        "w": worker,
        "a": attempt,
        "sw": sweep_id,
        "t": round(time.time(), 3),
    }
    if outcome.status == "ok":
        record["v"] = outcome.value
    else:
        record["e"] = outcome.error
        for key, value in (("tb", outcome.traceback), ("o", outcome.stdout), ("r", outcome.stderr)):
            if value:
                record[key] = value
    if outcome.exit_code is not None:
        record["x"] = outcome.exit_code
    try:
        return outcome.status, _RECORD_JSON.encode(record)
    except (TypeError, ValueError) as e:
        record.pop("v", None)
        record.update(s="error", e=str(e))
        return "error", PLAIN_JSON.encode(record)


def complete_record(partial: str, origin: int) -> str:
    """The stored form of an ok record from `encode_record` (what the record script does)."""
    return f"[{int(origin)},{partial}"


def pointer(number: int, index: int) -> str:
    """The key index entry naming point `index` of sweep number `number` (format 3; what the
    record script writes): the integer `number * 10**9 + index`, as text."""
    if number < 1 or not 0 <= index < MAX_POINTS:
        raise ValueError(f"no pointer to point {index} of sweep number {number}")
    return f"{number}{index:09d}"


def parse_pointer(entry: bytes | str) -> tuple[int, int] | None:
    """(sweep number, index) of a key index entry that is a pointer; None for a record."""
    text = entry.decode() if isinstance(entry, bytes) else entry
    if len(text) < 10 or not text.isdigit():
        return None
    return int(text[:-9]), int(text[-9:])


Origins = Mapping[int, tuple[str, str]]


@dataclass(frozen=True)
class Result:
    """One point's recorded result, parameters included."""

    index: int
    params: dict[str, Any]
    status: str
    value: Any
    error: str | None
    duration: float | None
    worker: str | None
    attempt: int | None
    cached: bool
    exit_code: int | None
    traceback: str | None
    stdout: str | None
    stderr: str | None
    files: tuple[tuple[str, int, str], ...] = ()  # output files: (relative name, bytes, sha256)
    finished: float | None = None  # finish time (Unix s)

    @classmethod
    def decode(
        cls,
        index: int,
        params: dict[str, Any],
        raw: bytes | str | list[Any] | dict[str, Any],
        sweep_id: str,
        origins: Origins | None = None,
    ) -> Result:
        """A result from a stored record (text or already decoded), format 2 or format 1."""
        r = json.loads(raw) if isinstance(raw, bytes | str) else raw
        if isinstance(r, list):
            sweep, worker = (origins or {}).get(r[0], (None, None))
            extra = r[5] if len(r) > 5 and isinstance(r[5], dict) else {}
            return cls(
                index=index,
                params=params,
                status="ok",
                value=r[1],
                error=None,
                duration=r[2],
                worker=worker,
                attempt=r[3],
                cached=sweep is not None and sweep != sweep_id,
                exit_code=extra.get("x"),
                traceback=None,
                stdout=None,
                stderr=None,
                files=_files(extra),
                finished=r[4],
            )
        return cls(
            index=index,
            params=params,
            status=r.get("s", "error"),
            value=r.get("v"),
            error=r.get("e"),
            duration=r.get("d"),
            worker=r.get("w"),
            attempt=r.get("a"),
            cached=r.get("s") == "ok" and r.get("sw") not in (None, sweep_id),
            exit_code=r.get("x"),
            traceback=r.get("tb"),
            stdout=r.get("o"),
            stderr=r.get("r"),
            files=_files(r),
            finished=r.get("t"),
        )


def optional_fields(record: Any) -> dict[str, Any]:
    """The optional fields of a decoded record: a format-2 ok record's trailing object, or the
    record object itself (failures, format 1)."""
    if isinstance(record, list):
        return record[5] if len(record) > 5 and isinstance(record[5], dict) else {}
    return record if isinstance(record, dict) else {}


def with_fields(record: str, fields: str) -> str:
    """A record from `encode_record` with optional fields added; `fields` is their JSON text
    without braces (`"ex":"ab12","f":[...]`)."""
    if record.endswith("}]"):  # a format-2 ok record that has its optional object
        return record[:-2] + "," + fields + "}]"
    if record.endswith("]"):
        return record[:-1] + ",{" + fields + "}]"
    return record[:-1] + "," + fields + "}"


def _files(fields: Mapping[str, Any]) -> tuple[tuple[str, int, str], ...]:
    return tuple((str(f[0]), int(f[1]), str(f[2])) for f in fields.get("f") or ())


def simple_fields(text: str, n: int) -> list[list[str]] | None:
    """The fields `origin, value, duration, attempt` of `n` ok records joined by commas, as JSON
    texts column by column (origins with the record's opening `[`), when every record is a flat
    `[origin, value, duration, attempt, time]` of scalars (no string, list or object: nothing to
    parse but numbers); else None.

    Brackets only at the ends and in `],[` between records mean `n` flat arrays; `5n - 1` commas
    then mean five fields each (an ok record has at least five).
    """
    if (
        n == 0
        or text.count("[") != n
        or text.count("],[") != n - 1
        or text.count(",") != 5 * n - 1
        or text[0] != "["
        or text[-1] != "]"
        or any(c in text for c in '"{ ')
    ):
        return None
    fields = text.split(",")
    return [fields[k::5] for k in range(4)]


@dataclass
class Block:
    """The recorded points of one range of a sweep, in index order: their indices, their params
    (a column per param, `names` order) and their records, decoded (list = ok array, dict =
    failure or format 1) or, for a range of simple ok records only, as stored (`text`)."""

    names: tuple[str, ...]
    indices: list[int]
    params: list[list[Any]]
    text: str | None = None
    _records: list[Any] | None = field(default=None, repr=False)
    _fields: list[list[str]] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def records(self) -> list[Any]:
        if self._records is None:
            self._records = json.loads(f"[{self.text}]") if self.text else []
        return self._records

    @property
    def fields(self) -> list[list[str]] | None:
        """`simple_fields` of a block read as text (None for decoded blocks)."""
        if self._fields is None and self.text is not None:
            self._fields = simple_fields(self.text, len(self.indices))
        return self._fields

    def points(self) -> list[dict[str, Any]]:
        """The params of each point, as `Sweep.point` gives them."""
        if not self.names:
            return [{} for _ in self.indices]
        return [dict(zip(self.names, row, strict=True)) for row in zip(*self.params, strict=True)]

    def param_rows(self, convert: Any = None) -> Iterable[tuple[Any, ...]]:
        """Each point's param values in a tuple (each through `convert` when given)."""
        if not self.names:
            return itertools.repeat((), len(self.indices))
        columns = self.params if convert is None else [list(map(convert, c)) for c in self.params]
        return zip(*columns, strict=True)


def blocks(queue: SweepQueue, sweep: Sweep, sweep_id: str) -> Iterator[Block]:
    """Every recorded point of a sweep in index order, a block at a time (one Redis call each).

    Redis reads the next block while the caller writes this one (`SweepQueue.read_ranges`).
    """
    ranges = [(start, min(sweep.size, start + READ_BLOCK)) for start in range(0, sweep.size, READ_BLOCK)]
    stored = queue.read_ranges(sweep_id, sweep.task.key, ranges)
    for (start, stop), (mask, text) in zip(ranges, stored, strict=True):
        block = _block(queue, sweep, sweep_id, start, stop, mask, text)
        if block.indices:
            yield block


def read_block(queue: SweepQueue, sweep: Sweep, sweep_id: str, start: int, stop: int) -> Block:
    """The recorded points of `[start, stop)`: their records by index (format 3, one Redis call),
    and by point key only for done points without one there (records from before format 3)."""
    mask = queue.done_mask(sweep_id, start, stop)
    text = queue.records_range(sweep_id, sweep.task.key, start, stop)
    return _block(queue, sweep, sweep_id, start, stop, mask, text)


def _block(
    queue: SweepQueue, sweep: Sweep, sweep_id: str, start: int, stop: int, mask: bytes, text: str
) -> Block:
    """`read_block` from the bitmap bytes and the records by index of `[start, stop)`."""
    indices = done_indices(mask, start, stop)
    names = sweep.param_names
    if not indices:
        return Block(names, [], [[] for _ in names])
    task_key = sweep.task.key
    full = len(indices) == stop - start
    if full:
        fields = simple_fields(text, len(indices))
        if fields is not None:  # the common case: nothing to decode yet
            return Block(names, indices, sweep.columns(start, stop), text=text, _fields=fields)
    stored = json.loads(f"[{text}]") if text else []
    if len(stored) != stop - start:  # the range had no done point when Redis read it
        stored = [0] * (stop - start)
    records: list[Any] = stored if full else [stored[i - start] for i in indices]
    missing = [k for k, r in enumerate(records) if r == 0]
    if missing:
        wanted = [indices[k] for k in missing]
        found = json.loads(f"[{queue.records_by_key(sweep_id, task_key, wanted, sweep.keys_of(wanted))}]")
        for k, r in zip(missing, found, strict=True):
            records[k] = r
    kept = [k for k, r in enumerate(records) if r != 0]  # a done bit without a record: left out
    columns = sweep.columns(start, stop)
    positions = [indices[k] - start for k in kept]
    if len(positions) != stop - start:
        columns = [[column[p] for p in positions] for column in columns]
    if len(kept) != len(records):
        indices, records = [indices[k] for k in kept], [records[k] for k in kept]
    return Block(names, indices, columns, _records=records)


def iter_results(queue: SweepQueue, sweep: Sweep, sweep_id: str) -> Iterator[Result]:
    """Every recorded result of a sweep, in index order; points without a result are left out."""
    origins = queue.origins(sweep.task.key)
    for block in blocks(queue, sweep, sweep_id):
        for index, p, r in zip(block.indices, block.points(), block.records, strict=True):
            yield Result.decode(index, p, r, sweep_id, origins)
