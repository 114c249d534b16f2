"""Result records (their compact JSON form in Redis) and their export to CSV, JSON Lines, Parquet.

Record format 2 (written since 2026-12), JSON-safe, never pickled:

- An **ok record**, in the task's result store (`swarmrun:results:{task}:{bucket}`, shared by
  every sweep of the task), is a JSON array `[origin, value, duration, attempt, time]`,
  optionally followed by ONE object of optional fields: `[origin, value, duration, attempt,
  time, {"x": 0}]`. `origin` is a small integer naming the sweep and worker that wrote it
  (interned per task in `swarmrun:results:{task}:origins`); `time` is the finish time (Unix s).
  Optional fields, left out when unset: `x` exit code (commands), `ex` the execution token and
  `f` its output files `[[name, bytes, sha256], ...]` (points with a log or files, see
  `swarmrun.execution.pointrun`). New optional fields go into
  that object (short keys; readers ignore keys they do not know), so the array never changes
  shape. No-op results take about 50 bytes of Redis memory each.
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
import itertools
import json
import math
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from swarmrun.definition.chunk import done_indices
from swarmrun.definition.sweep import Sweep, point_keys
from swarmrun.errors import SwarmrunError
from swarmrun.execution.queue import SweepQueue
from swarmrun.execution.task import Outcome, json_default

READ_BLOCK = 8192
FORMATS = ("csv", "jsonl", "parquet")
# Built once: `json.dumps` with options builds a new encoder per call, a cost paid on every point.
_RECORD_JSON = json.JSONEncoder(separators=(",", ":"), default=json_default)
_PLAIN_JSON = json.JSONEncoder(separators=(",", ":"))
# JSON Lines must be JSON: no NaN / Infinity (they become null, as pandas and jq expect).
_STRICT_JSON = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=str)
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
        return "error", _PLAIN_JSON.encode(record)


def complete_record(partial: str, origin: int) -> str:
    """The stored form of an ok record from `encode_record` (what the record script does)."""
    return f"[{int(origin)},{partial}"


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


# One decoded block: indices, their params, their records (list = format 2 ok, dict = failure or
# format 1). Export works on these directly: building a `Result` per row cost more than the rest.
Block = tuple[list[int], list[dict[str, Any]], list[Any]]


def _blocks(queue: SweepQueue, sweep: Sweep, sweep_id: str) -> Iterator[Block]:
    """Every recorded point of a sweep in index order, a block at a time (one Redis call each).

    The next block is read by a helper thread while the caller writes this one: the wait for
    Redis (which runs on another core) overlaps the writing.
    """
    starts = iter(range(0, sweep.size, READ_BLOCK))
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="swarmrun-export") as pool:
        ahead = [
            pool.submit(_read_block, queue, sweep, sweep_id, start) for start in itertools.islice(starts, 2)
        ]
        while ahead:
            block = ahead.pop(0).result()
            start = next(starts, None)
            if start is not None:
                ahead.append(pool.submit(_read_block, queue, sweep, sweep_id, start))
            if block[0]:
                yield block


def _read_block(queue: SweepQueue, sweep: Sweep, sweep_id: str, start: int) -> Block:
    return read_block(queue, sweep, sweep_id, start, min(sweep.size, start + READ_BLOCK))


def read_block(queue: SweepQueue, sweep: Sweep, sweep_id: str, start: int, stop: int) -> Block:
    """The recorded points of `[start, stop)`, decoded (one Redis call for the records)."""
    indices = done_indices(queue.done_mask(sweep_id, start, stop), start, stop)
    if not indices:
        return [], [], []
    point = sweep.point
    params = [point(i) for i in indices]
    joined = queue.records(sweep_id, sweep.task.key, indices, point_keys(sweep.param_names, params))
    records = json.loads(f"[{joined}]")
    if 0 in records:  # a done bit without a record (e.g. a purged task store): left out
        kept = [k for k, r in enumerate(records) if r != 0]
        indices = [indices[k] for k in kept]
        params = [params[k] for k in kept]
        records = [records[k] for k in kept]
    return indices, params, records


def iter_results(queue: SweepQueue, sweep: Sweep, sweep_id: str) -> Iterator[Result]:
    """Every recorded result of a sweep, in index order; points without a result are left out."""
    origins = queue.origins(sweep.task.key)
    for indices, params, records in _blocks(queue, sweep, sweep_id):
        for index, p, r in zip(indices, params, records, strict=True):
            yield Result.decode(index, p, r, sweep_id, origins)


# --------------------------------------------------------------------------------------- export


class NewColumns(Exception):
    """A dict value with keys not seen in the first block: export again with every column."""


class Rows:
    """Turns decoded records into rows: header order `index, params..., status, value columns...,
    error, duration, worker, attempt, cached`."""

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

    def learn(self, records: list[Any]) -> None:
        """Note the value columns of a block; `NewColumns` if they changed once columns are fixed."""
        before = (len(self.keys), self.scalar)
        for r in records:
            value = r[1] if isinstance(r, list) else r.get("v")
            if isinstance(value, dict):
                self.keys.update(dict.fromkeys(value))
            elif value is not None:
                self.scalar = True
        if self.fixed and (len(self.keys), self.scalar) != before:
            raise NewColumns

    def rows(self, block: Block) -> list[list[Any]]:
        """One list per row, cells as CSV and Parquet take them (dicts and lists as JSON text)."""
        indices, params, records = block
        names, origins = self.names, self.origins
        columns = self.value_columns()
        whole = len(columns) == 1 and columns[0][1] is None
        out = []
        # Params are plain scalars but for explicit lists of lists or dicts: cells only then.
        plain = all(type(v) in _SCALARS for p in params for v in p.values())
        for index, p, r in zip(indices, params, records, strict=True):
            if isinstance(r, list):
                status, value, error, duration, attempt = "ok", r[1], None, r[2], r[3]
                worker, cached = origins.get(r[0], (None, False))
            else:
                status, value, error = r.get("s", "error"), r.get("v"), r.get("e")
                duration, attempt, worker = r.get("d"), r.get("a"), r.get("w")
                cached = status == "ok" and r.get("sw") not in (None, self.sweep_id)
            row = [index, *[p[n] if plain else _cell(p[n]) for n in names], status]
            if whole:
                row.append(value if type(value) in _SCALARS else _cell(value))
            else:
                for _, key in columns:
                    if key is None:
                        row.append(None if isinstance(value, dict) else _cell(value))
                    else:
                        row.append(_cell(value.get(key)) if isinstance(value, dict) else None)
            row += [error, duration, worker, attempt, cached]
            if self.files:
                row.append(" ".join(f[0] for f in optional_fields(r).get("f") or ()))
            out.append(row)
        return out


_SCALARS = frozenset({int, float, str, bool, type(None)})


def _cell(value: Any) -> Any:
    return _PLAIN_JSON.encode(value) if isinstance(value, dict | list) else value


def _finite(value: Any) -> Any:
    """`value` with every NaN / infinity replaced by None (JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _json_line(line: dict[str, Any]) -> str:
    try:
        return _STRICT_JSON.encode(line)
    except ValueError:  # NaN or infinity somewhere: null instead (the rare path)
        return _STRICT_JSON.encode(_finite(line))


def _write_jsonl(f: IO[str], queue: SweepQueue, sweep: Sweep, sweep_id: str) -> int:
    origins = worker_origins(queue.origins(sweep.task.key), sweep_id)
    written = 0
    for block in _blocks(queue, sweep, sweep_id):
        f.write(jsonl_text(block, origins, sweep_id))
        written += len(block[0])
    return written


def worker_origins(origins: Origins, sweep_id: str) -> dict[int, tuple[str, bool]]:
    """Origin id -> (worker, cached) as the exports show them."""
    return {o: (w, s != sweep_id) for o, (s, w) in origins.items()}


def jsonl_text(block: Block, origins: Mapping[int, tuple[str, bool]], sweep_id: str) -> str:
    """A block's JSON Lines, each line ended by a newline."""
    indices, params, records = block
    lines = []
    for index, p, r in zip(indices, params, records, strict=True):
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
        lines.append(_json_line(line))
    lines.append("")
    return "\n".join(lines)


def _write_table(path: Path, fmt: str, queue: SweepQueue, sweep: Sweep, sweep_id: str) -> int:
    """CSV or Parquet; one pass unless a dict value brings keys the first block did not have."""
    origins = queue.origins(sweep.task.key)
    rows = Rows(sweep, sweep_id, origins, None)
    blocks = _blocks(queue, sweep, sweep_id)
    first = next(blocks, None)
    if first is not None:
        rows.learn(first[2])
    rows.fixed = True
    try:
        return _write_rows(path, fmt, rows, first, blocks)
    except NewColumns:
        pass
    rows = Rows(sweep, sweep_id, origins, None)
    for block in _blocks(queue, sweep, sweep_id):  # the columns first, then the rows
        rows.learn(block[2])
    rows.fixed = True
    return _write_rows(path, fmt, rows, None, _blocks(queue, sweep, sweep_id))


def _write_rows(path: Path, fmt: str, rows: Rows, first: Block | None, blocks: Iterator[Block]) -> int:
    header = rows.header()
    written = 0
    if fmt == "parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise SwarmrunError("writing Parquet needs pyarrow: pip install pyarrow") from None
        data = _columns(rows, [first, *blocks] if first is not None else blocks)
        pq.write_table(pa.table({name: pa.array(column) for name, column in data.items()}), path)
        return len(data["index"])
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for block in [first, *blocks] if first is not None else blocks:
            rows.learn(block[2])
            writer.writerows(rows.rows(block))
            written += len(block[0])
    return written


def _columns(rows: Rows, blocks: Iterable[Block]) -> dict[str, list[Any]]:
    """The blocks' rows as columns, by header name."""
    columns: list[list[Any]] = [[] for _ in rows.header()]
    for block in blocks:
        rows.learn(block[2])
        for row in rows.rows(block):
            for column, cell in zip(columns, row, strict=True):
                column.append(cell)
    return dict(zip(rows.header(), columns, strict=True))


def table_columns(queue: SweepQueue, sweep: Sweep, sweep_id: str) -> dict[str, list[Any]]:
    """Every recorded point as columns named as the CSV header (for `Results.to_arrow/to_pandas`)."""
    rows = Rows(sweep, sweep_id, queue.origins(sweep.task.key), None)
    for block in _blocks(queue, sweep, sweep_id):  # the columns first, then the rows
        rows.learn(block[2])
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
