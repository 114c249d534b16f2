"""Output files of results cached from another sweep of the same task (a resumed or changed sweep).

A point whose result was recorded by another sweep (same task, same parameters) has that
sweep's files: the record names its execution (`ex`) and files (`f`). `fetch_cached` copies them
into this sweep's `points/<index>/`, each checked against its sha256: from the other sweep's
pieces still in Redis (left there for its own collector), or from where its files were fetched
or moved (`outdirs`, directories on the manager; its `outputs_dir:` mount) when this machine
sees them. A file found nowhere gets one line saying where it is. Files already in place (same
size) are not copied again.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from swarmrun.definition.chunk import done_indices
from swarmrun.definition.sweep import Sweep, point_key
from swarmrun.errors import SwarmrunError
from swarmrun.execution.outputs import OutputFile
from swarmrun.execution.outputstore import (
    Collected,
    OutputCollector,
    file_dirs,
    piece_key,
    pieces,
    queue_key,
    record_files,
)

BLOCK = 4096

Wanted = tuple[int, str, list[OutputFile]]  # this sweep's index, the execution token, its files


def _origin(raw: Any, origins: dict[int, tuple[str, str]]) -> str | None:
    if isinstance(raw, list):
        return origins.get(raw[0], (None, None))[0] if raw else None
    return raw.get("sw") if isinstance(raw, dict) else None


def cached_with_files(collector: OutputCollector) -> dict[str, list[Wanted]]:
    """This sweep's points whose result (with files) came from another sweep, by that sweep,
    leaving out those whose files are in place already."""
    queue, sweep, sid = collector.queue, collector.sweep, collector.sweep_id
    origins = queue.origins(sweep.task.key)
    wanted: dict[str, list[Wanted]] = {}
    for start in range(0, sweep.size, BLOCK):
        stop = min(sweep.size, start + BLOCK)
        indices = done_indices(queue.done_mask(sid, start, stop), start, stop)
        if not indices:
            continue
        raws = queue.record_values(sid, sweep.task.key, indices, sweep.keys_of)
        for index, raw in zip(indices, raws, strict=True):
            origin = _origin(raw, origins)
            if origin is None or origin == sid:
                continue
            token, files = record_files(raw)
            if not files or token is None:
                continue
            here = collector.dest / "points" / str(index)
            if all(_size(here / f.name) == f.size for f in files):
                continue
            wanted.setdefault(origin, []).append((index, token, files))
    return wanted


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _origin_indices(origin: Sweep, keys: set[str]) -> Iterator[tuple[str, int]]:
    """(point key, index) in the origin sweep for `keys`, stopping once all are found."""
    left = set(keys)
    for index in range(origin.size):
        key = point_key(origin.point(index))
        if key in left:
            left.discard(key)
            yield key, index
            if not left:
                return


def fetch_cached(collector: OutputCollector) -> Collected:
    """Copy the files of cached results into `collector.dest` (see the module docstring)."""
    queue, sweep = collector.queue, collector.sweep
    connection = queue.connection
    out = Collected()
    problems: list[str] = []
    for origin_id, points in cached_with_files(collector).items():
        try:
            origin = queue.load(origin_id)
        except SwarmrunError:  # purged: its records may outlive it
            problems += [
                f"point {i}: its files come from sweep {origin_id[:12]}, which is gone" for i, *_ in points
            ]
            continue
        by_key = {point_key(sweep.point(i)): (i, token, files) for i, token, files in points}
        bases = file_dirs(connection, origin, origin_id)
        for key, origin_index in _origin_indices(origin, set(by_key)):
            index, token, files = by_key[key]
            if connection.sismember(queue_key(origin_id), f"{origin_index}:{token}"):
                problem = _from_pieces(collector, origin_id, origin_index, index, token, files)
            else:
                problem = _from_dirs(collector, bases, origin_id, origin_index, index, files)
            if problem:
                problems.append(problem)
            else:
                out.files += len(files)
                out.bytes += sum(f.size for f in files)
    out.problems = tuple(problems)
    return out


def _from_pieces(
    collector: OutputCollector,
    origin_id: str,
    origin_index: int,
    index: int,
    token: str,
    files: list[OutputFile],
) -> str | None:
    """The files from the origin's pieces in Redis (left there: they are the origin's to collect)."""
    for file_no, f in enumerate(files):
        keys = [piece_key(origin_id, origin_index, token, file_no, p) for p in range(pieces(f.size))]
        blocks = [
            b if b is None or isinstance(b, bytes) else str(b).encode()
            for b in collector.connection.mget(keys)
        ]
        problem = collector.write_file(index, token, f, blocks)
        if problem:
            return problem
    return None


def _from_dirs(
    collector: OutputCollector,
    bases: list[Path],
    origin_id: str,
    origin_index: int,
    index: int,
    files: list[OutputFile],
) -> str | None:
    """The files copied from where the origin's files were put, when this machine sees them."""
    for f in files:
        sources = [b / "points" / str(origin_index) / f.name for b in bases]
        source = next((s for s in sources if _size(s) == f.size), None)
        if source is None:
            where = ", ".join(str(b) for b in bases) or "nowhere recorded (its files were never fetched)"
            return (
                f"point {index}: {f.name} is from sweep {origin_id[:12]} (its point {origin_index}) "
                f"and not on this machine; that sweep's files went to: {where}"
            )
        with source.open("rb") as src:
            problem = collector.write_stream(index, "cached", f, iter(lambda: src.read(1 << 20), b""))
        if problem:
            return f"{problem} (copied from {source})"
    return None
