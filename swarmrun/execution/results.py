"""Result records (their compact JSON form in Redis) and their export to CSV, JSON Lines, Parquet.

A record is one JSON object with short keys, to keep Redis small: `s` status, `v` value,
`e` error text, `tb` traceback tail, `d` duration (s), `w` worker, `a` attempt, `sw` the sweep
that executed it, `t` finish time, `x` exit code, `o`/`r` stdout/stderr tails.
Parameters are not stored: any process recomputes them from the sweep spec.
"""

from __future__ import annotations

import csv
import functools
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swarmrun.definition.chunk import bits
from swarmrun.definition.sweep import Sweep, point_key
from swarmrun.errors import SwarmrunError
from swarmrun.execution.queue import SweepQueue
from swarmrun.execution.task import Outcome, json_default

READ_BLOCK = 4096
FORMATS = ("csv", "jsonl", "parquet")
# Built once: `json.dumps` with options builds a new encoder per call, a cost paid on every point.
_RECORD_JSON = json.JSONEncoder(separators=(",", ":"), default=json_default)
_PLAIN_JSON = json.JSONEncoder(separators=(",", ":"))


def encode_record(outcome: Outcome, *, attempt: int, worker: str, sweep_id: str) -> tuple[str, str]:
    """(status, JSON) for an outcome; a value that is not JSON-able turns the point into an error."""
    if outcome.status == "ok":
        # The hot path (every ok point): only the value goes through the JSON encoder; the same
        # object `json.dumps` would write, spelled out (floats by repr, as json writes them).
        try:
            encoded = "null" if outcome.value is None else _RECORD_JSON.encode(outcome.value)
        except (TypeError, ValueError):
            pass  # the general path below records why
        else:
            tail = "}" if outcome.exit_code is None else f',"x":{int(outcome.exit_code)}}}'
            return "ok", (
                f'{{"s":"ok","d":{round(outcome.duration, 6)!r},"w":{_json_str(worker)},'
                f'"a":{int(attempt)},"sw":{_json_str(sweep_id)},"t":{round(time.time(), 3)!r},'
                f'"v":{encoded}{tail}'
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


@functools.lru_cache(maxsize=64)
def _json_str(text: str) -> str:
    return _PLAIN_JSON.encode(text)


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

    @classmethod
    def decode(cls, index: int, params: dict[str, Any], raw: bytes | str, sweep_id: str) -> Result:
        r = json.loads(raw)
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
        )


def iter_results(queue: SweepQueue, sweep: Sweep, sweep_id: str) -> Iterator[Result]:
    """Every recorded result of a sweep, in index order; points without a result are left out."""
    task_key = sweep.task.key
    for start in range(0, sweep.size, READ_BLOCK):
        stop = min(sweep.size, start + READ_BLOCK)
        mask = queue.done_mask(sweep_id, start, stop)
        hits = bits(mask, start, start, stop)
        indices = [i for i, hit in zip(range(start, stop), hits, strict=True) if hit]
        if not indices:
            continue
        params = [sweep.point(i) for i in indices]
        raws = queue.records(sweep_id, task_key, indices, [point_key(p) for p in params])
        for index, p, raw in zip(indices, params, raws, strict=False):
            if raw is not None:
                yield Result.decode(index, p, raw, sweep_id)


def _value_columns(results: Iterable[Result], param_names: tuple[str, ...]) -> list[tuple[str, str | None]]:
    """(column name, key in a dict value or None for the whole value), in first-seen order."""
    keys: dict[str, None] = {}
    scalar = False
    for r in results:
        if isinstance(r.value, dict):
            keys.update(dict.fromkeys(r.value))
        elif r.value is not None:
            scalar = True
    taken = set(param_names) | {"index", "status", "error", "duration", "worker", "attempt", "cached"}
    columns: list[tuple[str, str | None]] = [("value", None)] if scalar or not keys else []
    for key in keys:
        name = key if key not in taken else f"value.{key}"
        columns.append((name, key))
    return columns


def _row(r: Result, value_columns: list[tuple[str, str | None]]) -> dict[str, Any]:
    row: dict[str, Any] = {"index": r.index, **r.params, "status": r.status}
    for name, key in value_columns:
        if key is None:
            row[name] = None if isinstance(r.value, dict) else r.value
        else:
            row[name] = r.value.get(key) if isinstance(r.value, dict) else None
    row.update(error=r.error, duration=r.duration, worker=r.worker, attempt=r.attempt, cached=r.cached)
    return row


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, dict | list) else value


def export(queue: SweepQueue, sweep: Sweep, sweep_id: str, path: Path, fmt: str | None = None) -> int:
    """Write a sweep's results to `path` (format from `fmt` or the suffix); returns rows written."""
    fmt = fmt or {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}.get(
        path.suffix.lower(), ""
    )
    if fmt not in FORMATS:
        raise SwarmrunError(f"cannot tell the format of {path}: use a .csv, .jsonl or .parquet name")
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    if fmt == "jsonl":
        with path.open("w") as f:
            for r in iter_results(queue, sweep, sweep_id):
                line = {
                    "index": r.index,
                    "params": r.params,
                    "status": r.status,
                    "value": r.value,
                    "error": r.error,
                    "duration": r.duration,
                    "worker": r.worker,
                    "attempt": r.attempt,
                    "cached": r.cached,
                }
                if r.exit_code is not None:
                    line["exit_code"] = r.exit_code
                for key in ("traceback", "stdout", "stderr"):
                    if getattr(r, key):
                        line[key] = getattr(r, key)
                f.write(json.dumps(line, default=str) + "\n")
                written += 1
        return written
    # Two passes, so memory stays bounded: the first finds the columns of dict values.
    value_columns = _value_columns(iter_results(queue, sweep, sweep_id), sweep.param_names)
    header = [
        "index",
        *sweep.param_names,
        "status",
        *(n for n, _ in value_columns),
        "error",
        "duration",
        "worker",
        "attempt",
        "cached",
    ]
    if fmt == "parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise SwarmrunError("writing Parquet needs pyarrow: pip install pyarrow") from None
        rows = [_row(r, value_columns) for r in iter_results(queue, sweep, sweep_id)]
        table = pa.Table.from_pylist([{k: _cell(row.get(k)) for k in header} for row in rows])
        pq.write_table(table, path)
        return len(rows)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        for r in iter_results(queue, sweep, sweep_id):
            writer.writerow({k: _cell(v) for k, v in _row(r, value_columns).items()})
            written += 1
    return written
