"""Moving output files from workers to the manager: through Redis in pieces, or on a shared mount.

Through Redis (the default, works from any node):
- `swarmrun:sweep:{id}:out:{index}:{token}:{file}:{piece}`: pieces of at most `PIECE` bytes,
  written by the execution `token` before its result is recorded, so a recorded file list is
  always complete; they expire after `PIECE_TTL` if nobody collects them.
- `swarmrun:sweep:{id}:outq`: set of `index:token` uploads not yet collected.
- `swarmrun:sweep:{id}:outbytes`: bytes sent by the sweep's executions (the per-sweep cap).
The manager (`OutputCollector`) fetches the files of winning executions (the record's `ex` token)
into `points/<index>/`, writing a temporary file and renaming it once its sha256 matches, then
deletes the pieces. A losing or killed execution's pieces are deleted, never written out.

On a shared mount (`outputs_dir:`), files are moved to `<outputs_dir>/<name>-<id>/.staging/
<index>.<token>/` and renamed to `points/<index>/` by the execution that won; only names travel.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import redis

from swarmrun.definition.sweep import Sweep, point_key
from swarmrun.execution.outputs import OutputFile, OutputTooLarge, sweep_dir_name
from swarmrun.execution.queue import SweepQueue
from swarmrun.execution.results import optional_fields

PIECE = 512 * 1024
PIECE_TTL = 7 * 24 * 3600
PIPELINE_BYTES = 4 * 1024 * 1024
PREFIX = "swarmrun:sweep:"


def queue_key(sweep_id: str) -> str:
    return f"{PREFIX}{sweep_id}:outq"


def bytes_key(sweep_id: str) -> str:
    return f"{PREFIX}{sweep_id}:outbytes"


def piece_key(sweep_id: str, index: int, token: str, file_no: int, piece: int) -> str:
    return f"{PREFIX}{sweep_id}:out:{index}:{token}:{file_no}:{piece}"


def pieces(size: int) -> int:
    return max(1, -(-size // PIECE))


class OutputsDirMissing(OutputTooLarge):
    """`outputs_dir` is not a directory on this worker; the message is the point's error."""


def reserve(connection: redis.Redis, sweep_id: str, total: int, cap: int | None) -> None:
    """Count `total` bytes against the sweep's cap; OutputTooLarge (and nothing counted) when over it."""
    if cap is None or total == 0:
        return
    reached = int(connection.incrby(bytes_key(sweep_id), total))
    if reached > cap:
        connection.decrby(bytes_key(sweep_id), total)
        raise OutputTooLarge(
            f"the sweep's outputs would reach {reached} bytes, over max_sweep_output_bytes ({cap})"
        )


class Uploader:
    """Sends output files as pieces, batched: one round trip per `PIPELINE_BYTES`, not per point.

    Call `flush()` before recording the results whose files were added: a recorded file list is
    then always complete in Redis. Each upload is registered (in `outq`) before its pieces, so a
    worker killed mid-upload leaves pieces that the manager finds and deletes.
    """

    def __init__(self, connection: redis.Redis) -> None:
        self.connection = connection
        self._pipe = connection.pipeline(transaction=False)
        self._queued = 0

    def add(self, sweep_id: str, index: int, token: str, files: Sequence[tuple[Path, OutputFile]]) -> None:
        self._pipe.sadd(queue_key(sweep_id), f"{index}:{token}")
        for file_no, (path, _) in enumerate(files):
            with path.open("rb") as f:
                piece = 0
                while True:
                    block = f.read(PIECE)
                    if not block and piece:
                        break
                    self._pipe.set(piece_key(sweep_id, index, token, file_no, piece), block, ex=PIECE_TTL)
                    self._queued += len(block) + 64
                    piece += 1
                    if self._queued >= PIPELINE_BYTES:
                        self.flush()
                    if len(block) < PIECE:
                        break

    def flush(self) -> None:
        if len(self._pipe):
            self._pipe.execute()
        self._queued = 0


def discard(
    connection: redis.Redis, sweep_id: str, index: int, token: str, files: Sequence[OutputFile]
) -> None:
    """Delete an upload's pieces (a losing execution's, or once collected) and unregister it."""
    pipe = connection.pipeline(transaction=False)
    _discard(pipe, sweep_id, index, token, files)
    pipe.execute()


def _discard(pipe: Any, sweep_id: str, index: int, token: str, files: Sequence[OutputFile]) -> None:
    keys = [
        piece_key(sweep_id, index, token, n, p) for n, f in enumerate(files) for p in range(pieces(f.size))
    ]
    if keys:
        pipe.delete(*keys)
    pipe.srem(queue_key(sweep_id), f"{index}:{token}")


def discard_unknown(connection: redis.Redis, sweep_id: str, index: int, token: str) -> None:
    """Delete the pieces of an upload whose file list is unknown (its execution died or lost)."""
    keys = list(connection.scan_iter(match=f"{PREFIX}{sweep_id}:out:{index}:{token}:*", count=1000))
    if keys:
        connection.delete(*keys)
    connection.srem(queue_key(sweep_id), f"{index}:{token}")


# --------------------------------------------------------------------------------------- shared mount


def staging_dir(outputs_dir: str, sweep: Sweep, sweep_id: str, index: int, token: str) -> Path:
    return Path(outputs_dir) / sweep_dir_name(sweep.name, sweep_id) / ".staging" / f"{index}.{token}"


def final_dir(outputs_dir: str, sweep: Sweep, sweep_id: str, index: int) -> Path:
    return Path(outputs_dir) / sweep_dir_name(sweep.name, sweep_id) / "points" / str(index)


def stage(outputs_dir: str, target: Path, files: Sequence[tuple[Path, OutputFile]]) -> None:
    """Move files into an execution's staging directory on the shared mount."""
    if not Path(outputs_dir).is_dir():
        raise OutputsDirMissing(
            f"outputs_dir {outputs_dir} is not a directory on this worker (is it mounted?)"
        )
    for path, f in files:
        dest = target / f.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(path), str(dest))


def promote(staged: Path, final: Path) -> None:
    """Make the winning execution's staged files the point's files (one rename)."""
    if final.exists():
        shutil.rmtree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, final)


# ------------------------------------------------------------------------------------------ manager


def record_files(record: Any) -> tuple[str | None, list[OutputFile]]:
    """(execution token, files) named by a stored result record (text or decoded; None: none)."""
    if record is None:
        return None, []
    fields = optional_fields(json.loads(record) if isinstance(record, bytes | str) else record)
    return fields.get("ex"), [OutputFile.from_json(f) for f in fields.get("f") or ()]


@dataclass
class Collected:
    files: int = 0
    bytes: int = 0
    discarded: int = 0
    problems: tuple[str, ...] = ()


class OutputCollector:
    """Fetches the winning executions' files of one sweep into `dest/points/<index>/`."""

    def __init__(self, queue: SweepQueue, sweep: Sweep, sweep_id: str, dest: Path) -> None:
        self.queue = queue
        self.connection = queue.connection
        self.sweep = sweep
        self.sweep_id = sweep_id
        self.dest = dest
        self._made: set[Path] = set()

    def collect(self) -> Collected:
        """One pass over the uploads not collected yet; uploads of unfinished points wait.

        Batched: per 256 uploads one read of their records, one `MGET` round trip per
        `PIPELINE_BYTES` of small files, one pipeline deleting what was fetched.
        """
        out = Collected()
        problems: list[str] = []
        members = [m.decode() for m in self.connection.sscan_iter(queue_key(self.sweep_id), count=1000)]
        uploads = [(int(m.split(":")[0]), m.split(":")[1]) for m in members]
        for start in range(0, len(uploads), 256):
            batch = uploads[start : start + 256]
            indices = [i for i, _ in batch]
            keys = [point_key(self.sweep.point(i)) for i in indices]
            raws = self.queue.record_values(self.sweep_id, self.sweep.task.key, indices, keys)
            ready: list[tuple[int, str, list[OutputFile]]] = []
            for (index, token), raw in zip(batch, raws, strict=True):
                if raw is None:
                    continue  # not recorded yet: still running, or to be re-run
                winner, files = record_files(raw)
                if winner != token:
                    discard_unknown(self.connection, self.sweep_id, index, token)
                    out.discarded += 1
                else:
                    ready.append((index, token, files))
            done: list[tuple[int, str, list[OutputFile]]] = []
            group: list[tuple[int, str, list[OutputFile]]] = []
            size = 0
            for upload in [*ready, None]:
                if upload is not None and sum(f.size for f in upload[2]) > PIPELINE_BYTES:
                    problem = self._fetch_large(*upload)
                    problems += [problem] if problem else []
                    done += [] if problem else [upload]
                    continue
                if upload is None or size + sum(f.size for f in upload[2]) > PIPELINE_BYTES:
                    fetched, failed = self._fetch_group(group)
                    done += fetched
                    problems += failed
                    group, size = [], 0
                if upload is not None:
                    group.append(upload)
                    size += sum(f.size for f in upload[2])
            pipe = self.connection.pipeline(transaction=False)
            for index, token, files in done:
                _discard(pipe, self.sweep_id, index, token, files)
                out.files += len(files)
                out.bytes += sum(f.size for f in files)
            pipe.execute()
        out.problems = tuple(problems)
        return out

    def _point_dir(self, index: int) -> Path:
        return self.dest / "points" / str(index)

    def _target(self, index: int, f: OutputFile) -> Path | None:
        """Where a file lands; None for a name that could leave the point's directory."""
        name = PurePosixPath(f.name)
        if name.is_absolute() or ".." in name.parts or not name.parts or "\\" in f.name:
            return None
        dest = self._point_dir(index).joinpath(*name.parts)
        if dest.parent not in self._made:
            dest.parent.mkdir(parents=True, exist_ok=True)
            self._made.add(dest.parent)
        return dest

    def _write(self, index: int, token: str, f: OutputFile, blocks: Sequence[bytes | None]) -> str | None:
        """Write one file under a temporary name, rename it into place once its sha256 matches."""
        dest = self._target(index, f)
        if dest is None:
            return f"point {index}: refused output name {f.name!r}"
        if any(b is None for b in blocks):
            return f"point {index}: a piece of {f.name} is missing from Redis (expired?)"
        data = b"".join(b for b in blocks if b is not None)
        if hashlib.sha256(data).hexdigest() != f.sha256:
            return f"point {index}: {f.name} arrived with a different sha256"
        part = dest.with_name(f".{dest.name}.part-{token}")
        part.write_bytes(data)
        os.replace(part, dest)
        return None

    def _fetch_group(
        self, group: list[tuple[int, str, list[OutputFile]]]
    ) -> tuple[list[tuple[int, str, list[OutputFile]]], list[str]]:
        """Small uploads: every piece of every file of the group in one round trip."""
        if not group:
            return [], []
        pipe = self.connection.pipeline(transaction=False)
        for index, token, files in group:
            for file_no, f in enumerate(files):
                pipe.mget([piece_key(self.sweep_id, index, token, file_no, p) for p in range(pieces(f.size))])
        answers = iter(pipe.execute())
        fetched, problems = [], []
        for index, token, files in group:
            failed = [self._write(index, token, f, next(answers)) for f in files]
            problem = next((p for p in failed if p), None)
            if problem:
                problems.append(problem)
            else:
                fetched.append((index, token, files))
        return fetched, problems

    def _fetch_large(self, index: int, token: str, files: Sequence[OutputFile]) -> str | None:
        """A large upload, a few pieces at a time (bounded memory), streamed to a temporary file."""
        for file_no, f in enumerate(files):
            dest = self._target(index, f)
            if dest is None:
                return f"point {index}: refused output name {f.name!r}"
            part = dest.with_name(f".{dest.name}.part-{token}")
            digest = hashlib.sha256()
            with part.open("wb") as handle:
                for first in range(0, pieces(f.size), 8):
                    keys = [
                        piece_key(self.sweep_id, index, token, file_no, p)
                        for p in range(first, min(pieces(f.size), first + 8))
                    ]
                    for block in self.connection.mget(keys):
                        if block is None:
                            part.unlink()
                            return f"point {index}: a piece of {f.name} is missing from Redis (expired?)"
                        data = block if isinstance(block, bytes) else str(block).encode()
                        digest.update(data)
                        handle.write(data)
            if digest.hexdigest() != f.sha256:
                part.unlink()
                return f"point {index}: {f.name} arrived with a different sha256"
            os.replace(part, dest)
        return None

    def purge(self) -> None:
        """Delete every upload of the sweep still in Redis, and its counters."""
        for member in list(self.connection.sscan_iter(queue_key(self.sweep_id))):
            index, token = member.decode().split(":")
            discard_unknown(self.connection, self.sweep_id, int(index), token)
        self.connection.delete(queue_key(self.sweep_id), bytes_key(self.sweep_id))
