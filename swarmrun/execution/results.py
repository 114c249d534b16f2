"""Result records (their compact JSON form in Redis) and their export to CSV, JSON Lines, Parquet.

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
  sweep's index buckets stay: pointers may name them.
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
  shape. A no-op result takes about 71 bytes of Redis memory at 10^6 (its record by index, the
  pointer and the rest of its key in the key index, the hashes' own overhead, the done bit).
- A **failure record** (error / timeout), in the sweep's own `errors` hash, is a JSON object with
  short keys: `s` status, `e` error text, `tb` traceback tail, `d` duration (s), `w` worker,
  `a` attempt, `sw` the sweep that executed it, `t` finish time, `x` exit code, `o`/`r`
  stdout/stderr tails, and `ex` / `f` as above. Failures are few, so readability wins over bytes.
- Format-1 ok records (before 2026-12) were such objects too, under `swarmrun:results:{task}`;
  they are still read (and still count as cached results), never written.

Parameters are not stored: any process recomputes them from the sweep spec.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from swarmrun.definition.chunk import done_indices
from swarmrun.definition.sweep import MAX_POINTS, Sweep
from swarmrun.errors import SwarmrunError
from swarmrun.execution.cells import (
    CSV_OF_JSON,
    JSON_OF_JSON,
    PLAIN_JSON,
    SCALARS,
    STRICT_JSON,
    cell,
    csv_column,
    csv_quote,
    json_column,
    json_text,
    lines,
    mapped,
)
from swarmrun.execution.queue import SweepQueue
from swarmrun.execution.task import Outcome, json_default

READ_BLOCK = 8192
FORMATS = ("csv", "jsonl", "parquet")
# Built once: `json.dumps` with options builds a new encoder per call, a cost paid on every point.
_RECORD_JSON = json.JSONEncoder(separators=(",", ":"), default=json_default)
_FAILURE_FIELDS = (("tb", "traceback"), ("o", "stdout"), ("r", "stderr"))


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


def _blocks(queue: SweepQueue, sweep: Sweep, sweep_id: str) -> Iterator[Block]:
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
    for block in _blocks(queue, sweep, sweep_id):
        for index, p, r in zip(block.indices, block.points(), block.records, strict=True):
            yield Result.decode(index, p, r, sweep_id, origins)


# --------------------------------------------------------------------------------------- export


class NewColumns(Exception):
    """A dict value with keys not seen in the first block: export again with every column."""


def worker_origins(origins: Origins, sweep_id: str) -> dict[int, tuple[str, bool]]:
    """Origin id -> (worker, cached) as the exports show them."""
    return {o: (w, s != sweep_id) for o, (s, w) in origins.items()}


def _by_origin(
    origin_texts: list[str], origins: Mapping[int, tuple[str, bool]], worker: Any, cached: Any
) -> tuple[list[Any], list[Any]]:
    """The worker and cached cells of records by their origin fields (`simple_fields` texts),
    through `worker` and `cached` (how the format writes a worker name or None, and a bool)."""
    n = len(origin_texts)
    one = origin_texts.count(origin_texts[0]) == n  # one worker wrote the block
    known = {
        o: origins.get(int(o[1:]) if o[1:].isdigit() else -1, (None, False))
        for o in (origin_texts[:1] if one else set(origin_texts))
    }
    workers = {o: worker(w) for o, (w, _) in known.items()}
    cached_of = {o: cached(c) for o, (_, c) in known.items()}
    if one:
        return [workers[origin_texts[0]]] * n, [cached_of[origin_texts[0]]] * n
    return list(map(workers.__getitem__, origin_texts)), list(map(cached_of.__getitem__, origin_texts))


class Rows:
    """Turns blocks into rows or columns: header order `index, params..., status, value
    columns..., error, duration, worker, attempt, cached` (and `files` with `outputs:`)."""

    META = ("index", "status", "error", "duration", "worker", "attempt", "cached")

    def __init__(self, sweep: Sweep, sweep_id: str, origins: Origins, value_keys: list[str] | None) -> None:
        self.names = sweep.param_names
        self.files = bool(sweep.options.outputs)  # a `files` column: the names of each point's files
        self.sweep_id = sweep_id
        self.origins = worker_origins(origins, sweep_id)
        self.fixed = value_keys is not None
        self.keys: dict[str, None] = dict.fromkeys(value_keys or ())
        self.scalar = False

    def value_columns(self) -> list[tuple[str, str | None]]:
        """(column name, key in a dict value or None for the whole value), in first-seen order."""
        taken = set(self.names) | set(self.META)
        columns: list[tuple[str, str | None]] = [("value", None)] if self.scalar or not self.keys else []
        columns += [(key if key not in taken else f"value.{key}", key) for key in self.keys]
        return columns

    def whole(self) -> bool:
        """One value column, holding the whole value."""
        return not self.keys

    def header(self) -> list[str]:
        return [
            "index",
            *self.names,
            "status",
            *(n for n, _ in self.value_columns()),
            "error",
            "duration",
            "worker",
            "attempt",
            "cached",
            *(["files"] if self.files else []),
        ]

    def learn(self, block: Block) -> None:
        """Note the value columns of a block; `NewColumns` if they changed once columns are fixed."""
        before = (len(self.keys), self.scalar)
        fields = block.fields
        if fields is not None:  # scalars only
            self.scalar = self.scalar or bool(set(fields[1]) - {"null"})
        else:
            for r in block.records:
                value = r[1] if isinstance(r, list) else r.get("v")
                if isinstance(value, dict):
                    self.keys.update(dict.fromkeys(value))
                elif value is not None:
                    self.scalar = True
        if self.fixed and (len(self.keys), self.scalar) != before:
            raise NewColumns

    def rows(self, block: Block) -> list[list[Any]]:
        """One list per row, cells as CSV and Parquet take them (dicts and lists as JSON text)."""
        origins = self.origins
        columns = self.value_columns()
        whole = len(columns) == 1 and columns[0][1] is None
        out = []
        # Params are plain scalars but for explicit lists of lists or dicts: cells only then.
        plain = all(set(map(type, c)) <= SCALARS for c in block.params)
        params = block.param_rows(None if plain else cell)
        for index, p, r in zip(block.indices, params, block.records, strict=True):
            if isinstance(r, list):
                status, value, error, duration, attempt = "ok", r[1], None, r[2], r[3]
                worker, cached = origins.get(r[0], (None, False))
            else:
                status, value, error = r.get("s", "error"), r.get("v"), r.get("e")
                duration, attempt, worker = r.get("d"), r.get("a"), r.get("w")
                cached = status == "ok" and r.get("sw") not in (None, self.sweep_id)
            row = [index, *p, status]
            if whole:
                row.append(value if type(value) in SCALARS else cell(value))
            else:
                for _, key in columns:
                    if key is None:
                        row.append(None if isinstance(value, dict) else cell(value))
                    else:
                        row.append(cell(value.get(key)) if isinstance(value, dict) else None)
            row += [error, duration, worker, attempt, cached]
            if self.files:
                row.append(" ".join(f[0] for f in optional_fields(r).get("f") or ()))
            out.append(row)
        return out

    def csv_text(self, block: Block) -> str:
        """A block's CSV rows, exactly as `csv.writer` writes `rows(block)`."""
        fields = block.fields
        if fields is None or not self.whole():
            buffer = io.StringIO(newline="")
            csv.writer(buffer).writerows(self.rows(block))
            return buffer.getvalue()
        origin, value, duration, attempt = fields
        workers, cached = _by_origin(
            origin, self.origins, lambda w: "" if w is None else csv_quote(w), lambda c: str(c)
        )
        pieces: list[str | list[str]] = [list(map(str, block.indices))]
        for column in block.params:
            pieces += [",", csv_column(column)]
        pieces += [",ok,", mapped(value, CSV_OF_JSON), ",,", mapped(duration, CSV_OF_JSON), ","]
        pieces += [workers, ",", mapped(attempt, CSV_OF_JSON), ",", cached, ",\r\n" if self.files else "\r\n"]
        return lines(pieces, len(block))

    def columns(self, block: Block) -> list[list[Any]]:
        """A block's cells as columns (header order), as `rows(block)` has them."""
        fields = block.fields
        if fields is None or not self.whole():
            return [list(column) for column in zip(*self.rows(block), strict=True)] or [
                [] for _ in self.header()
            ]
        origin, value, duration, attempt = fields
        n = len(block)
        workers, cached = _by_origin(origin, self.origins, lambda w: w, lambda c: c)
        plain = all(set(map(type, c)) <= SCALARS for c in block.params)
        out: list[list[Any]] = [
            block.indices,
            *(block.params if plain else [list(map(cell, c)) for c in block.params]),
            ["ok"] * n,
            _decoded(value),
            [None] * n,
            _decoded(duration),
            workers,
            _decoded(attempt),
            cached,
        ]
        if self.files:
            out.append([""] * n)
        return out


def _decoded(texts: list[str]) -> list[Any]:
    """JSON texts decoded (one `json.loads`; once when they are all the same)."""
    if texts.count(texts[0]) == len(texts):
        return [json.loads(texts[0])] * len(texts)
    return list(json.loads(f"[{','.join(texts)}]"))


def jsonl_text(block: Block, origins: Mapping[int, tuple[str, bool]], sweep_id: str) -> str:
    """A block's JSON Lines, each line ended by a newline."""
    fields = block.fields
    if fields is not None:
        return _simple_jsonl(block, fields, origins)
    lines = []
    for index, p, r in zip(block.indices, block.points(), block.records, strict=True):
        if isinstance(r, list):
            worker, cached = origins.get(r[0], (None, False))
            line = {
                "index": index,
                "params": p,
                "status": "ok",
                "value": r[1],
                "error": None,
                "duration": r[2],
                "worker": worker,
                "attempt": r[3],
                "cached": cached,
            }
            if len(r) > 5 and isinstance(r[5], dict) and r[5].get("x") is not None:
                line["exit_code"] = r[5]["x"]
        else:
            status = r.get("s", "error")
            line = {
                "index": index,
                "params": p,
                "status": status,
                "value": r.get("v"),
                "error": r.get("e"),
                "duration": r.get("d"),
                "worker": r.get("w"),
                "attempt": r.get("a"),
                "cached": status == "ok" and r.get("sw") not in (None, sweep_id),
            }
            if r.get("x") is not None:
                line["exit_code"] = r["x"]
            for key, name in _FAILURE_FIELDS:
                if r.get(key):
                    line[name] = r[key]
        files = optional_fields(r).get("f")
        if files:
            line["files"] = [{"name": n, "bytes": b, "sha256": h} for n, b, h in files]
        lines.append(json_text(line))
    lines.append("")
    return "\n".join(lines)


def _simple_jsonl(block: Block, fields: list[list[str]], origins: Mapping[int, tuple[str, bool]]) -> str:
    """`jsonl_text` of simple ok records, line by line from a template (what the encoder writes)."""
    origin, value, duration, attempt = fields
    workers, cached = _by_origin(origin, origins, json_text, json_text)
    pieces: list[str | list[str]] = ['{"index":', list(map(int.__repr__, block.indices)), ',"params":{']
    for k, (name, column) in enumerate(zip(block.names, block.params, strict=True)):
        pieces += [("," if k else "") + STRICT_JSON.encode(name) + ":", json_column(column)]
    pieces += ['},"status":"ok","value":', mapped(value, JSON_OF_JSON), ',"error":null,"duration":']
    pieces += [mapped(duration, JSON_OF_JSON), ',"worker":', workers, ',"attempt":']
    pieces += [mapped(attempt, JSON_OF_JSON), ',"cached":', cached, "}\n"]
    return lines(pieces, len(block))


def _write_jsonl(f: IO[str], queue: SweepQueue, sweep: Sweep, sweep_id: str) -> int:
    origins = worker_origins(queue.origins(sweep.task.key), sweep_id)
    written = 0
    for block in _blocks(queue, sweep, sweep_id):
        f.write(jsonl_text(block, origins, sweep_id))
        written += len(block)
    return written


def _write_table(path: Path, fmt: str, queue: SweepQueue, sweep: Sweep, sweep_id: str) -> int:
    """CSV or Parquet; one pass unless a dict value brings keys the first block did not have."""
    origins = queue.origins(sweep.task.key)
    rows = Rows(sweep, sweep_id, origins, None)
    blocks = _blocks(queue, sweep, sweep_id)
    first = next(blocks, None)
    if first is not None:
        rows.learn(first)
    rows.fixed = True
    try:
        return _write_rows(path, fmt, rows, first, blocks)
    except NewColumns:
        pass
    rows = Rows(sweep, sweep_id, origins, None)
    for block in _blocks(queue, sweep, sweep_id):  # the columns first, then the rows
        rows.learn(block)
    rows.fixed = True
    return _write_rows(path, fmt, rows, None, _blocks(queue, sweep, sweep_id))


def _with(first: Block | None, blocks: Iterator[Block]) -> Iterator[Block]:
    """`first` (read already, when not None), then the blocks still to read (read as they go)."""
    return itertools.chain([first], blocks) if first is not None else blocks


def _write_rows(path: Path, fmt: str, rows: Rows, first: Block | None, blocks: Iterator[Block]) -> int:
    header = rows.header()
    written = 0
    if fmt == "parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise SwarmrunError("writing Parquet needs pyarrow: pip install pyarrow") from None
        data = _columns(rows, _with(first, blocks))
        pq.write_table(pa.table({name: _arrow(column) for name, column in data.items()}), path)
        return len(data["index"])
    with path.open("w", newline="") as f:
        csv.writer(f).writerow(header)
        for block in _with(first, blocks):
            rows.learn(block)
            f.write(rows.csv_text(block))
            written += len(block)
    return written


def _arrow(column: list[Any]) -> Any:
    """`pyarrow.array(column)`; a column of one text throughout without converting each."""
    import pyarrow as pa

    if column and type(column[0]) is str and column.count(column[0]) == len(column):
        return pa.repeat(pa.scalar(column[0]), len(column))
    return pa.array(column)


def _columns(rows: Rows, blocks: Iterable[Block]) -> dict[str, list[Any]]:
    """The blocks' rows as columns, by header name."""
    columns: list[list[Any]] = [[] for _ in rows.header()]
    for block in blocks:
        rows.learn(block)
        for column, cells in zip(columns, rows.columns(block), strict=True):
            column += cells
    return dict(zip(rows.header(), columns, strict=True))


def table_columns(queue: SweepQueue, sweep: Sweep, sweep_id: str) -> dict[str, list[Any]]:
    """Every recorded point as columns named as the CSV header (for `Results.to_arrow/to_pandas`)."""
    rows = Rows(sweep, sweep_id, queue.origins(sweep.task.key), None)
    for block in _blocks(queue, sweep, sweep_id):  # the columns first, then the rows
        rows.learn(block)
    rows.fixed = True
    return _columns(rows, _blocks(queue, sweep, sweep_id))


SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}


def format_of(path: Path) -> str | None:
    """The export format a file name asks for (by its suffix), None when it names none we write."""
    return SUFFIXES.get(path.suffix.lower())


def export(queue: SweepQueue, sweep: Sweep, sweep_id: str, path: Path, fmt: str | None = None) -> int:
    """Write a sweep's results to `path` (format from `fmt` or the suffix); returns rows written."""
    fmt = fmt or format_of(path) or ""
    if fmt not in FORMATS:
        raise SwarmrunError(f"cannot tell the format of {path}: use a .csv, .jsonl or .parquet name")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        with path.open("w") as f:
            return _write_jsonl(f, queue, sweep, sweep_id)
    return _write_table(path, fmt, queue, sweep, sweep_id)
