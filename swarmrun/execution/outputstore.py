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

On a shared file system (`outputs_dir:`, or local workers sharing the manager's disk) files are
moved instead and only names, sizes and sha256 travel: `swarmrun.execution.sharedfs`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import redis

from swarmrun.definition.sweep import Sweep
from swarmrun.execution.outputs import OutputFile, OutputTooLarge
from swarmrun.execution.queue import SweepQueue
from swarmrun.execution.results import optional_fields
from swarmrun.execution.sharedfs import (
    SHARE_MARKER,
    SHARE_TTL,
    STAGED_AGE,
    final_dir,
    promote,
    share_key,
    staging_dir,
    sweep_root,
)

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


def moved_key(sweep_id: str) -> str:
    return f"{PREFIX}{sweep_id}:outmoved"


def count_moved(connection: redis.Redis, sweep_id: str, files: int) -> None:
    """Count files that workers promoted on a shared file system (`run` reports them)."""
    if files:
        connection.incrby(moved_key(sweep_id), files)


def dirs_key(sweep_id: str) -> str:
    """The directories (absolute, on the manager) a sweep's files were fetched or moved into."""
    return f"{PREFIX}{sweep_id}:outdirs"


def file_dirs(connection: redis.Redis, sweep: Sweep, sweep_id: str) -> list[Path]:
    """Where a sweep's files are, each point's under `points/<index>/`: the directories they were
    fetched or moved into (on the manager), and the sweep's directory on its `outputs_dir:` mount."""
    dirs = [Path(d.decode() if isinstance(d, bytes) else d) for d in connection.smembers(dirs_key(sweep_id))]
    if sweep.options.outputs_dir:
        dirs.append(sweep_root(sweep.options.outputs_dir, sweep, sweep_id))
    return dirs


def pieces(size: int) -> int:
    return max(1, -(-size // PIECE))


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

    def add(self, sweep_id: str, index: int, token: str, files: Sequence[tuple[str, OutputFile]]) -> None:
        self._pipe.sadd(queue_key(sweep_id), f"{index}:{token}")
        for file_no, (path, _) in enumerate(files):
            with open(path, "rb") as f:
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
    waiting: int = 0  # uploads and staged directories whose point has no result yet
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
        self._nonce: str | None = None
        self._moved_before = 0
        self._noted = False

    def note_dest(self) -> None:
        """Remember where this sweep's files are (a later sweep resuming from its results
        finds them there: `swarmrun.execution.cachedoutputs`)."""
        if not self._noted:
            self.connection.sadd(dirs_key(self.sweep_id), str(self.dest.resolve()))
            self._noted = True

    def share(self) -> None:
        """Tell workers that see this file system to move files straight into `dest` (see the
        module docstring); refreshed by every `collect`, withdrawn by `unshare`."""
        self.dest.mkdir(parents=True, exist_ok=True)
        self.note_dest()
        self._nonce = secrets.token_hex(16)
        (self.dest / SHARE_MARKER).write_text(self._nonce)
        where = json.dumps({"dir": str(self.dest.resolve()), "nonce": self._nonce})
        self.connection.set(share_key(self.sweep_id), where, ex=SHARE_TTL)
        self._moved_before = int(self.connection.get(moved_key(self.sweep_id)) or 0)

    @property
    def shared_files(self) -> int:
        """Files that workers moved into `dest` since `share`."""
        return int(self.connection.get(moved_key(self.sweep_id)) or 0) - self._moved_before

    def unshare(self) -> None:
        if self._nonce is not None:
            self.connection.delete(share_key(self.sweep_id))
            (self.dest / SHARE_MARKER).unlink(missing_ok=True)
            self._nonce = None
            with contextlib.suppress(OSError):  # removed when empty: nothing was left in flight
                (self.dest / ".staging").rmdir()

    def staging_roots(self) -> list[Path]:
        """Where this manager sees staged files of the sweep: its shared `dest`, the sweep's
        directory on an `outputs_dir:` mount when mounted here too."""
        roots = [self.dest]
        if self.sweep.options.outputs_dir:
            roots.append(sweep_root(self.sweep.options.outputs_dir, self.sweep, self.sweep_id))
        return [r for r in roots if (r / ".staging").is_dir()]

    def _settle_staged(self, out: Collected, final: bool) -> None:
        """Promote staged files whose record won (their worker died before it did), remove the
        others' once their point has a result. A worker promotes its own within milliseconds of
        its record, so only entries older than `STAGED_AGE` are taken over (all when `final`:
        the workers have stopped), and the two do not race."""
        now = time.time()
        for root in self.staging_roots():
            entries: list[tuple[int, str]] = []
            with os.scandir(root / ".staging") as listing:
                for entry in listing:
                    number, _, token = entry.name.partition(".")
                    if not (
                        number.isdigit() and token and "." not in token and int(number) < self.sweep.size
                    ):
                        continue
                    try:
                        young = now - entry.stat(follow_symlinks=False).st_mtime < STAGED_AGE
                    except OSError:
                        continue
                    if young and not final:
                        out.waiting += 1
                    else:
                        entries.append((int(number), token))
            for start in range(0, len(entries), 256):
                batch = entries[start : start + 256]
                indices = [i for i, _ in batch]
                raws = self.queue.record_values(
                    self.sweep_id, self.sweep.task.key, indices, self.sweep.keys_of
                )
                for (index, token), raw in zip(batch, raws, strict=True):
                    staged = staging_dir(root, index, token)
                    if raw is None:
                        out.waiting += 1
                        continue
                    winner, files = record_files(raw)
                    if winner == token:
                        if promote(staged, final_dir(root, index)):
                            out.files += len(files)
                            out.bytes += sum(f.size for f in files)
                    else:
                        shutil.rmtree(staged, ignore_errors=True)
                        out.discarded += 1

    def collect(self, *, final: bool = False) -> Collected:
        """One pass over the uploads not collected yet; uploads of unfinished points wait.
        `final`: no worker is running any more (see `_settle_staged`).

        Batched: per 256 uploads one read of their records, one `MGET` round trip per
        `PIPELINE_BYTES` of small files, one pipeline deleting what was fetched.
        """
        out = Collected()
        problems: list[str] = []
        if self._nonce is not None:
            self.connection.expire(share_key(self.sweep_id), SHARE_TTL)
        self._settle_staged(out, final)
        members = [m.decode() for m in self.connection.sscan_iter(queue_key(self.sweep_id), count=1000)]
        uploads = [(int(m.split(":")[0]), m.split(":")[1]) for m in members]
        for start in range(0, len(uploads), 256):
            batch = uploads[start : start + 256]
            indices = [i for i, _ in batch]
            raws = self.queue.record_values(self.sweep_id, self.sweep.task.key, indices, self.sweep.keys_of)
            ready: list[tuple[int, str, list[OutputFile]]] = []
            for (index, token), raw in zip(batch, raws, strict=True):
                if raw is None:
                    out.waiting += 1  # not recorded yet: still running, or to be re-run
                    continue
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
            if done:
                self.note_dest()
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

    def target(self, index: int, f: OutputFile) -> Path | None:
        """Where a file lands; None for a name that could leave the point's directory."""
        name = PurePosixPath(f.name)
        if name.is_absolute() or ".." in name.parts or not name.parts or "\\" in f.name:
            return None
        dest = self._point_dir(index).joinpath(*name.parts)
        if dest.parent not in self._made:
            dest.parent.mkdir(parents=True, exist_ok=True)
            self._made.add(dest.parent)
        return dest

    def write_file(self, index: int, token: str, f: OutputFile, blocks: Sequence[bytes | None]) -> str | None:
        """Write one file under a temporary name, rename it into place once its sha256 matches."""
        dest = self.target(index, f)
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
            failed = [self.write_file(index, token, f, next(answers)) for f in files]
            problem = next((p for p in failed if p), None)
            if problem:
                problems.append(problem)
            else:
                fetched.append((index, token, files))
        return fetched, problems

    def _fetch_large(self, index: int, token: str, files: Sequence[OutputFile]) -> str | None:
        """A large upload, a few pieces at a time (bounded memory), streamed to a temporary file."""
        for file_no, f in enumerate(files):
            problem = self.write_stream(index, token, f, self._stream(index, token, file_no, f.size))
            if problem:
                return problem
        return None

    def _stream(self, index: int, token: str, file_no: int, size: int) -> Iterator[bytes | None]:
        for first in range(0, pieces(size), 8):
            keys = [
                piece_key(self.sweep_id, index, token, file_no, p)
                for p in range(first, min(pieces(size), first + 8))
            ]
            for block in self.connection.mget(keys):
                yield block if block is None or isinstance(block, bytes) else str(block).encode()

    def write_stream(self, index: int, tag: str, f: OutputFile, blocks: Iterable[bytes | None]) -> str | None:
        """Write a file from `blocks` under a temporary name (`tag` in it), hashing as it goes;
        rename it into place once its sha256 matches. None (a block missing) stops it."""
        dest = self.target(index, f)
        if dest is None:
            return f"point {index}: refused output name {f.name!r}"
        part = dest.with_name(f".{dest.name}.part-{tag}")
        digest = hashlib.sha256()
        with part.open("wb") as handle:
            for block in blocks:
                if block is None:
                    part.unlink()
                    return f"point {index}: a piece of {f.name} is missing from Redis (expired?)"
                digest.update(block)
                handle.write(block)
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
        self.connection.delete(
            queue_key(self.sweep_id),
            bytes_key(self.sweep_id),
            dirs_key(self.sweep_id),
            moved_key(self.sweep_id),
            share_key(self.sweep_id),
        )
