"""The Redis/RQ layer: sweeps, chunk jobs, result records, progress, retry, cancel, recovery.

The done bit is the single arbiter of "first write wins": a record is stored only by the
execution that flips the bit; later executions are counted as duplicates.
Chunk jobs go through RQ with its JSON serializer; nothing is ever unpickled.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer
from rq.utils import utcparse
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from swarmrun.definition.chunk import ChunkRef, bits, first_clear, job_prefix
from swarmrun.definition.sweep import Sweep, canonical_json
from swarmrun.definition.sweepfile import sweep_from_dict
from swarmrun.errors import SweepNotFound
from swarmrun.execution.keys import SWEEPS, Keys, reply_text
from swarmrun.execution.scripts import CACHED_LUA, CLEAR_FAILED_LUA, CLEAR_POINTS_LUA, DEMOTE_LUA, RECORD_LUA
from swarmrun.execution.store import RecordStore
from swarmrun.redis_server import process_alive

CHUNK_FUNC = "swarmrun.execution.worker.run_chunk"
CHUNK_RETRIES = 10
RESULT_TTL = 600
FAILURE_TTL = 7 * 24 * 3600
BITMAP_READ = 8192


@dataclass(frozen=True)
class Progress:
    """A sweep's state and counters, as `status` and `ls` show them."""

    sweep_id: str
    name: str
    size: int
    done: int
    ok: int
    error: int
    timeout: int
    cached: int
    executions: int
    duplicates: int
    seconds: float
    processed: int
    state: str
    created: float

    @property
    def failed(self) -> int:
        return self.error + self.timeout

    @property
    def complete(self) -> bool:
        return self.done >= self.size

    @property
    def seconds_per_point(self) -> float | None:
        return self.seconds / self.processed if self.processed else None


@dataclass(frozen=True)
class Submission:
    sweep_id: str
    size: int
    done: int
    started: bool  # a new chain of chunks was enqueued
    running: bool  # chunks of this sweep were already queued or running


def worker_alive(
    hostname: str | None,
    pid: int | None,
    last_heartbeat: datetime | None,
    *,
    now: datetime,
    here: str,
    max_silence: float,
) -> bool:
    """Is a registered worker alive: its process exists (on this host), or it heartbeat lately."""
    if hostname == here and pid:
        return process_alive(pid)
    if last_heartbeat is None:
        return False
    if last_heartbeat.tzinfo is None:  # RQ writes UTC without a zone
        last_heartbeat = last_heartbeat.replace(tzinfo=UTC)
    return (now - last_heartbeat).total_seconds() <= max_silence


def _int(value: Any) -> int:
    return int(value) if value is not None else 0


class SweepQueue(RecordStore):
    """Sweeps on one Redis: what the CLI and the workers share (and their records: `RecordStore`)."""

    def __init__(self, connection: redis.Redis, queue_name: str) -> None:
        super().__init__(connection)
        self.queue = Queue(queue_name, connection=connection, serializer=JSONSerializer)
        self._record = connection.register_script(RECORD_LUA)
        self._cached = connection.register_script(CACHED_LUA)
        self._clear_failed = connection.register_script(CLEAR_FAILED_LUA)
        self._clear_points = connection.register_script(CLEAR_POINTS_LUA)
        self._demote = connection.register_script(DEMOTE_LUA)

    # --- sweeps -----------------------------------------------------------------------------
    def submit(
        self, sweep: Sweep, *, origin: Path | None = None, indexing: Callable[[int], None] | None = None
    ) -> Submission:
        """Register `sweep` (or refresh its options) and make sure chunks are on their way.

        Earlier sweeps of its task whose results are not in the key index yet (see
        `swarmrun.execution.keyindex`) are indexed first, so this one finds them as cached:
        `indexing` is told how many results that is, before it starts (a few seconds a million).
        """
        sid = sweep.id
        keys = Keys(sid)
        spec = sweep.to_dict()
        backlog = self.index_backlog(sweep.task.key, sid)
        if backlog:
            if indexing is not None:
                indexing(backlog)
            self.key_index.catch_up(sweep.task.key)
        with self._lock(sid):
            pipe = self.connection.pipeline()
            pipe.hsetnx(keys.meta, "created", time.time())
            pipe.hset(
                keys.meta,
                mapping={
                    "spec": canonical_json(spec),
                    "options": canonical_json(spec["options"]),
                    "name": sweep.name,
                    "size": sweep.size,
                    "task": sweep.task.key,
                    "origin": str(origin) if origin else "",
                    "state": "active",
                },
            )
            pipe.zadd(SWEEPS, {sid: time.time()}, nx=True)
            pipe.bitcount(keys.done)
            done = pipe.execute()[-1]
            if done >= sweep.size:
                return Submission(sid, sweep.size, done, started=False, running=False)
            if self._active_jobs(sid):
                return Submission(sid, sweep.size, done, started=False, running=True)
            self._start_chain(sid, sweep.size)
            return Submission(sid, sweep.size, done, started=True, running=False)

    def index_backlog(self, task_key: str, sweep_id: str) -> int:
        """The ok results of other sweeps of the task that must be indexed before `sweep_id`
        looks points up by key (0 almost always; the task's sole sweep is demoted unless it is
        `sweep_id`, see `swarmrun.execution.keyindex`)."""
        if not self.must_index(task_key, sweep_id):
            return 0
        waiting = [reply_text(s) for s in self.connection.smembers(Keys.unindexed(task_key))]
        pipe = self.connection.pipeline(transaction=False)
        for other in waiting:
            pipe.hget(Keys(other).counts, "ok")
        return sum(_int(ok) for other, ok in zip(waiting, pipe.execute(), strict=True) if other != sweep_id)

    def _start_chain(self, sweep_id: str, size: int) -> None:
        gen = int(self.connection.hincrby(Keys(sweep_id).meta, "gen", 1))
        self.enqueue(ChunkRef(sweep_id, gen, 0, size))

    def enqueue(self, ref: ChunkRef) -> bool:
        """Enqueue one chunk job unless a job with its id exists already."""
        try:
            self.queue.enqueue_call(
                CHUNK_FUNC,
                args=[ref.sweep_id, ref.gen, ref.start, ref.stop],
                job_id=ref.job_id,
                timeout=-1,
                result_ttl=RESULT_TTL,
                failure_ttl=FAILURE_TTL,
                retry=Retry(max=CHUNK_RETRIES),
                description=f"sweep {ref.sweep_id} points [{ref.start}, {ref.stop})",
                unique=True,
            )
        except DuplicateJobError:
            return False
        return True

    @contextmanager
    def _lock(self, sweep_id: str) -> Iterator[None]:
        with self.connection.lock(Keys(sweep_id).lock, timeout=60, blocking_timeout=60):
            yield

    def resolve(self, prefix: str | None) -> str:
        """The full id of the sweep whose id starts with `prefix`; the newest sweep when None."""
        ids = [reply_text(i) for i in self.connection.zrange(SWEEPS, 0, -1)]
        if not prefix:
            if not ids:
                raise SweepNotFound("no sweeps yet: submit one with `swarmrun submit SWEEP`")
            return ids[-1]
        matches = [i for i in ids if i.startswith(prefix)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise SweepNotFound(f"no sweep with id {prefix!r} (see `swarmrun ls`)")
        raise SweepNotFound(f"sweep id {prefix!r} is ambiguous: {', '.join(m[:12] for m in matches)}")

    def sweep_ids(self) -> list[str]:
        return [reply_text(i) for i in self.connection.zrange(SWEEPS, 0, -1)]

    def load(self, sweep_id: str) -> Sweep:
        spec = self.connection.hget(Keys(sweep_id).meta, "spec")
        if spec is None:
            raise SweepNotFound(f"no sweep with id {sweep_id!r}")
        return sweep_from_dict(json.loads(spec))

    def origin(self, sweep_id: str) -> Path | None:
        origin = self.connection.hget(Keys(sweep_id).meta, "origin")
        return Path(reply_text(origin)) if origin else None

    def progress(self, sweep_id: str) -> Progress:
        keys = Keys(sweep_id)
        pipe = self.connection.pipeline()
        pipe.hmget(keys.meta, "name", "size", "state", "created")
        pipe.bitcount(keys.done)
        pipe.hgetall(keys.counts)
        (name, size, state, created), done, counts = pipe.execute()
        if size is None:
            raise SweepNotFound(f"no sweep with id {sweep_id!r}")
        c = {k.decode(): v for k, v in counts.items()}
        return Progress(
            sweep_id=sweep_id,
            name=name.decode(),
            size=int(size),
            done=int(done),
            ok=_int(c.get("ok")),
            error=_int(c.get("error")),
            timeout=_int(c.get("timeout")),
            cached=_int(c.get("cached")),
            executions=_int(c.get("executions")),
            duplicates=_int(c.get("duplicates")),
            seconds=float(c.get("seconds", 0)),
            processed=_int(c.get("processed")),
            state=state.decode(),
            created=float(created),
        )

    # --- what workers call ------------------------------------------------------------------
    def chunk_context(self, sweep_id: str) -> tuple[str | None, dict[str, Any], float | None, int]:
        """(state, options, seconds per point, live workers) for sizing and running a chunk."""
        keys = Keys(sweep_id)
        pipe = self.connection.pipeline()
        pipe.hmget(keys.meta, "state", "options")
        pipe.hmget(keys.counts, "seconds", "processed")
        pipe.scard(WORKERS_BY_QUEUE_KEY % self.queue.name)
        (state, options), (seconds, processed), workers = pipe.execute()
        per_point = float(seconds) / int(processed) if seconds and processed and int(processed) else None
        return (
            state.decode() if state else None,
            json.loads(options) if options else {},
            per_point,
            int(workers),
        )

    def first_missing(self, sweep_id: str, start: int, stop: int) -> int | None:
        """The first index in `[start, stop)` without a result, reading the bitmap in blocks."""
        pos = start
        while pos < stop:
            end = min(stop, (pos // 8) * 8 + BITMAP_READ * 8)
            mask = self.done_mask(sweep_id, pos, end)
            found = first_clear(mask, pos, pos, end)
            if found is not None:
                return found
            pos = end
        return None

    def cached(self, task_key: str, point_keys: Sequence[str], *, sweep_id: str | None = None) -> list[bool]:
        """For each point key: does the task's result store hold a result for it already?

        With `sweep_id`, for points of that sweep without a result: when no other sweep of the
        task has results (the task's `sole` sweep is this one), none is looked up. Sweeps of the
        task whose records are not all in the key index yet are indexed first (`KeyIndex`).
        """
        if not point_keys:
            return []
        keys = [Keys.store(task_key), Keys.origins(task_key), Keys.unindexed(task_key)]
        args = ["\n".join(point_keys), Keys.buckets(task_key), sweep_id or "", ""]
        hits = self._cached(keys=keys, args=args)
        if not isinstance(hits, list):  # -1: sweeps wait to be indexed
            self.key_index.catch_up(task_key)
            args[3] = "now"
            hits = self._cached(keys=keys, args=args)
        known = [False] * len(point_keys)
        for position in hits:
            known[int(position) - 1] = True
        return known

    def record(
        self,
        sweep_id: str,
        task_key: str,
        entries: Sequence[tuple[int, str, str, str]],
        *,
        seconds: float,
        isolated: bool = False,
        worker: str = "",
    ) -> tuple[int, str]:
        """Store results `(index, point key, status, record)`; returns (new results, state).

        Records are `swarmrun.execution.results.encode_record`'s: ok ones without their origin, which is
        `sweep_id` and `worker` (interned here, in the same script as the write).
        """
        keys = Keys(sweep_id)
        blob = "".join([f"{index}\t{pkey}\t{status}\t{record}\n" for index, pkey, status, record in entries])
        fresh, state = self._record(
            keys=[
                keys.done,
                keys.counts,
                Keys.origins(task_key),
                keys.errors,
                keys.meta,
                keys.inflight,
                Keys.store(task_key),
                Keys.unindexed(task_key),
            ],
            args=[
                repr(seconds),
                "1" if isolated else "0",
                blob,
                Keys.buckets(task_key),
                f"{sweep_id} {worker or '?'}",
                sweep_id,
                min(e[0] for e in entries) if entries else "",
                max(e[0] for e in entries) if entries else "",
            ],
        )
        return int(fresh), state.decode() if isinstance(state, bytes) else str(state)

    def mark_inflight(self, sweep_id: str, index: int) -> int:
        """Count an execution start in a re-run chunk; returns how many starts this point had."""
        return int(self.connection.hincrby(Keys(sweep_id).inflight, str(index), 1))

    # --- recovery ----------------------------------------------------------------------------
    def _jobs(self, sweep_id: str) -> tuple[list[str], list[str]]:
        """(waiting, running) chunk job ids of a sweep, read in one transaction.

        Waiting covers queued jobs and jobs a worker is taking over (RQ's intermediate list).
        """
        started = StartedJobRegistry(queue=self.queue)
        pipe = self.connection.pipeline(transaction=True)
        pipe.lrange(self.queue.key, 0, -1)
        pipe.lrange(self.queue.intermediate_queue.key, 0, -1)
        pipe.zrange(started.key, 0, -1)
        queued, handing, running = pipe.execute()
        prefix = job_prefix(sweep_id)
        waiting = [raw.decode() for raw in [*queued, *handing] if raw.decode().startswith(prefix)]
        busy = [raw.decode().split(":", 1)[0] for raw in running if raw.decode().startswith(prefix)]
        return waiting, busy

    def _active_jobs(self, sweep_id: str) -> list[str]:
        waiting, running = self._jobs(sweep_id)
        return waiting + running

    def chunk_counts(self, sweep_id: str) -> tuple[int, int]:
        """(running, waiting) chunk jobs of a sweep."""
        waiting, running = self._jobs(sweep_id)
        return len(set(running)), len(set(waiting) - set(running))

    def live_workers(self, *, max_silence: float = 60.0, host: str | None = None) -> int:
        """Workers registered on this queue that are alive.

        RQ keeps a killed worker registered until its key expires (up to a minute and a half),
        so a worker counts only while it heartbeats: one on this host (its hostname is ours)
        while its process exists, any other while its last heartbeat is under `max_silence` old.
        """
        keys = list(self.connection.smembers(WORKERS_BY_QUEUE_KEY % self.queue.name))
        pipe = self.connection.pipeline()
        for key in keys:
            pipe.hmget(key, "birth", "death", "hostname", "pid", "last_heartbeat")
        here = host if host is not None else socket.gethostname()
        now = datetime.now(UTC)
        return sum(
            1
            for birth, death, hostname, pid, beat in pipe.execute()
            if birth is not None
            and death is None
            and worker_alive(
                reply_text(hostname) if hostname else None,
                int(pid) if pid else None,
                utcparse(reply_text(beat)) if beat else None,
                now=now,
                here=here,
                max_silence=max_silence,
            )
        )

    def reap(self) -> None:
        """Hand abandoned chunks (their worker stopped heartbeating) back to the queue now."""
        StartedJobRegistry(queue=self.queue).cleanup()

    def settle(self) -> int:
        """Give every point of a chunk job that failed for good an error result; returns points."""
        registry = FailedJobRegistry(queue=self.queue)
        settled = 0
        for job_id in registry.get_job_ids():
            ref = ChunkRef.parse(job_id)
            if ref is None:
                continue
            try:
                job = Job.fetch(job_id, connection=self.connection, serializer=JSONSerializer)
                split = int(job.meta.get("split", ref.stop))
                result = job.latest_result()
                reason = (result.exc_string if result else None) or "worker lost"
            except NoSuchJobError:
                split, reason = ref.stop, "chunk job lost"
            lines = [line for line in reason.strip().splitlines() if line.strip()]
            message = f"chunk failed after {CHUNK_RETRIES} retries: {lines[-1] if lines else reason}"
            settled += self.fail_range(ref.sweep_id, ref.start, split, message)
            registry.remove(job_id, delete_job=True)
        return settled

    def fail_range(self, sweep_id: str, start: int, stop: int, message: str) -> int:
        """Record `message` as the error of every point in `[start, stop)` without a result."""
        task_key = self.connection.hget(Keys(sweep_id).meta, "task")
        if task_key is None:
            return 0
        record = json.dumps({"s": "error", "e": message, "sw": sweep_id}, separators=(",", ":"))
        total = 0
        for block in range(start, stop, 4096):
            end = min(stop, block + 4096)
            mask = self.done_mask(sweep_id, block, end)
            hits = bits(mask, block, block, end)
            entries = [
                (i, "", "error", record) for i, hit in zip(range(block, end), hits, strict=True) if not hit
            ]
            if entries:
                total += self.record(sweep_id, reply_text(task_key), entries, seconds=0.0)[0]
        return total

    def repair(self, sweep_id: str) -> bool:
        """Start a new chain for a sweep with missing results and no chunk left to produce them."""
        with self._lock(sweep_id):
            progress = self.progress(sweep_id)
            if progress.complete or progress.state != "active" or self._active_jobs(sweep_id):
                return False
            self._start_chain(sweep_id, progress.size)
            return True

    def maintain(self, sweep_ids: Sequence[str] | None = None) -> None:
        """Reap abandoned chunks, settle failed ones, repair stalled sweeps (safe to run anywhere)."""
        self.reap()
        self.settle()
        for sid in sweep_ids if sweep_ids is not None else self.active_sweeps():
            self.repair(sid)

    def active_sweeps(self) -> list[str]:
        ids = self.sweep_ids()
        pipe = self.connection.pipeline()
        for sid in ids:
            pipe.hmget(Keys(sid).meta, "state", "size")
            pipe.bitcount(Keys(sid).done)
        answers = pipe.execute()
        active = []
        for sid, (state, size), done in zip(ids, answers[0::2], answers[1::2], strict=False):
            if state == b"active" and size is not None and done < int(size):
                active.append(sid)
        return active

    # --- user actions ------------------------------------------------------------------------
    def retry_failed(self, sweep_id: str, indices: Sequence[int] | None = None) -> int:
        """Forget the failed and timed-out results of a sweep (or of those of `indices` only,
        e.g. one group of the dashboard) and run those points again."""
        keys = Keys(sweep_id)
        with self._lock(sweep_id):
            if indices is None:
                cleared = int(self._clear_failed(keys=[keys.done, keys.counts, keys.errors]))
            else:
                cleared = 0
                for start in range(0, len(indices), 4096):
                    block = [str(int(i)) for i in indices[start : start + 4096]]
                    cleared += int(self._clear_points(keys=[keys.done, keys.counts, keys.errors], args=block))
            if cleared:
                self.connection.hset(keys.meta, "state", "active")
                if not self._active_jobs(sweep_id):
                    self._start_chain(sweep_id, int(self.connection.hget(keys.meta, "size") or 0))
        return cleared

    def cancel(self, sweep_id: str) -> int:
        """Stop a sweep: drop its queued chunks; running chunks stop at their next flush."""
        keys = Keys(sweep_id)
        with self._lock(sweep_id):
            self.connection.hset(keys.meta, "state", "cancelled")
            removed = 0
            prefix = job_prefix(sweep_id)
            for raw in self.connection.lrange(self.queue.key, 0, -1):
                job_id = reply_text(raw)
                if job_id.startswith(prefix):
                    removed += int(self.connection.lrem(self.queue.key, 0, job_id))
                    self.connection.delete(Job.key_for(job_id))
        return removed

    def purge(self, sweep_id: str, *, indexing: Callable[[int], None] | None = None) -> None:
        """Cancel a sweep and delete its records (shared results of its task stay).

        Its meta, done bitmap, failures and counters go; the task's stores stay: the key index
        (its records are put there first, if they were not: `indexing` is told how many), and
        this sweep's index buckets, which other sweeps' cached points may point at. Submitted
        again, the sweep finds its results cached (and its index buckets as they were)."""
        self.cancel(sweep_id)
        keys = Keys(sweep_id)
        task_key = self.connection.hget(keys.meta, "task")
        if task_key is not None:  # its results stay and must be found again, by key: index them
            task = reply_text(task_key)  # while its spec (which gives the keys) is still here
            self._demote(keys=[Keys.origins(task), Keys.unindexed(task)], args=[sweep_id])
            if self.connection.sismember(Keys.unindexed(task), sweep_id):
                if indexing is not None:
                    indexing(_int(self.connection.hget(keys.counts, "ok")))
                self.key_index.catch_up(task)
        self.connection.delete(keys.meta, keys.done, keys.errors, keys.counts, keys.inflight)
        self.connection.zrem(SWEEPS, sweep_id)
