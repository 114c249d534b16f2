"""Exporting a sweep's results: CSV, JSON Lines and Parquet, a block of points at a time.

Blocks come from `swarmrun.execution.results` in index order; a block of plain ok records is
written column by column from the stored text (`swarmrun.execution.cells`), others row by row.
The live results file of `swarmrun run -o` (`swarmrun.execution.livexport`) writes the same rows.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from swarmrun.definition.sweep import Sweep
from swarmrun.errors import SwarmrunError
from swarmrun.execution import results
from swarmrun.execution.cells import (
    CSV_OF_JSON,
    JSON_OF_JSON,
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
from swarmrun.execution.results import Block, Origins, optional_fields

FORMATS = ("csv", "jsonl", "parquet")
_FAILURE_FIELDS = (("tb", "traceback"), ("o", "stdout"), ("r", "stderr"))


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
    """JSON texts of scalars decoded: each distinct text once when they repeat (a no-op point's
    duration is one of a few, rounded to the microsecond; equal texts then share one value,
    which for a scalar is no matter), else all in one `json.loads`."""
    if texts.count(texts[0]) == len(texts):
        return [json.loads(texts[0])] * len(texts)
    if len(set(texts[:512])) * 8 <= min(512, len(texts)):  # few distinct texts, by a sample
        table = {text: json.loads(text) for text in set(texts)}
        return list(map(table.__getitem__, texts))
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
    for block in results.blocks(queue, sweep, sweep_id):
        f.write(jsonl_text(block, origins, sweep_id))
        written += len(block)
    return written


def _write_table(path: Path, fmt: str, queue: SweepQueue, sweep: Sweep, sweep_id: str) -> int:
    """CSV or Parquet; one pass unless a dict value brings keys the first block did not have."""
    origins = queue.origins(sweep.task.key)
    rows = Rows(sweep, sweep_id, origins, None)
    blocks = results.blocks(queue, sweep, sweep_id)
    first = next(blocks, None)
    if first is not None:
        rows.learn(first)
    rows.fixed = True
    try:
        return _write_rows(path, fmt, rows, first, blocks)
    except NewColumns:
        pass
    rows = Rows(sweep, sweep_id, origins, None)
    for block in results.blocks(queue, sweep, sweep_id):  # the columns first, then the rows
        rows.learn(block)
    rows.fixed = True
    return _write_rows(path, fmt, rows, None, results.blocks(queue, sweep, sweep_id))


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
    for block in results.blocks(queue, sweep, sweep_id):  # the columns first, then the rows
        rows.learn(block)
    rows.fixed = True
    return _columns(rows, results.blocks(queue, sweep, sweep_id))


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
