"""The worker: an RQ SimpleWorker that runs chunk jobs, point by point.

- Chunks run in the worker process, so a task's imports are paid once per process.
- A heartbeat thread keeps the running chunk's execution alive in RQ's StartedJobRegistry; when
  the process dies the heartbeat stops, and within `heartbeat_ttl` seconds the chunk counts as
  abandoned and is handed back to the queue by whoever reaps first (the manager, or any worker).
- SIGTERM is a warm stop: the current chunk is finished, then the worker exits. A second signal
  is a cold stop (the chunk is abandoned and re-run elsewhere).
- A chunk re-run after a crash runs in isolation mode: each point's starts are counted, and a
  point that was running during `CRASH_LIMIT` crashes is recorded as an error instead of
  taking yet another worker down with it.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from rq import get_current_job
from rq.job import Job
from rq.queue import Queue
from rq.serializers import JSONSerializer
from rq.timeouts import BaseDeathPenalty
from rq.worker import SimpleWorker, WorkerStatus

from swarmrun.definition.chunk import ChunkRef, bits, plan_size
from swarmrun.definition.sweep import Options, Sweep, point_keys
from swarmrun.errors import RedisAuthFailed, RedisUnavailable
from swarmrun.execution.connection import connect, stop_waiting
from swarmrun.execution.outputs import PointDir, parse_output_options
from swarmrun.execution.outputstore import Uploader
from swarmrun.execution.pointlog import Execution, PointLogs
from swarmrun.execution.pointrun import Extras, execute, node_name, settle
from swarmrun.execution.queue import CHUNK_RETRIES, SweepQueue
from swarmrun.execution.results import encode_record
from swarmrun.execution.sharedfs import shared_root
from swarmrun.execution.task import Outcome, Task, compile_task
from swarmrun.settings import Settings, redact

log = logging.getLogger("swarmrun.execution.worker")

BLOCK = 512
FLUSH_SECONDS = 0.5
ANNOUNCE_EVERY = 0.02  # seconds between the announcing thread's looks at the running execution
ANNOUNCE_SLOW = 0.005  # an execution after one this long (seconds) is announced when it starts
FLUSH_ENTRIES = 4096
CRASH_LIMIT = 3
MAX_BACKOFF = 300.0


class NoDeathPenalty(BaseDeathPenalty):
    """Chunks have no RQ timeout: each point carries its own."""

    def setup_death_penalty(self) -> None:
        pass

    def cancel_death_penalty(self) -> None:
        pass


@dataclass
class LoadedSweep:
    sweep: Sweep
    task: Task


@dataclass
class WorkerContext:
    """What chunks share inside one worker process: the queue, settings, compiled sweeps."""

    queue: SweepQueue
    settings: Settings
    name: str
    loaded: dict[str, LoadedSweep] = field(default_factory=dict)
    # The execution running now (sweep id, index, execution), announced so that `show` lists an
    # execution killed mid-point: at once when it is the chunk's first or the one before took
    # `ANNOUNCE_SLOW` or more, else by a thread looking every `ANNOUNCE_EVERY` s, which announces
    # only an execution that has run that long already (no cost per fast point).
    current: tuple[str, int, str, float] | None = None  # sweep id, index, token, start
    announced: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _prefix: str = field(default_factory=lambda: secrets.token_hex(2))
    _count: int = 0

    def token(self) -> str:
        """A new execution token, unique across workers: a random prefix and a counter."""
        self._count += 1
        return f"{self._prefix}{self._count:x}"

    point_dir: PointDir = field(default_factory=PointDir)
    shares_seen: dict[str, bool] = field(default_factory=dict)  # see outputstore.shared_root

    def announce(self, running_for: float = 0.0) -> None:
        """Store the running execution as `running` (once) if it started `running_for` seconds
        ago or more; its end replaces it (`ChunkRun`)."""
        with self._lock:
            current = self.current
            if current is None or current[2] == self.announced or time.time() - current[3] < running_for:
                return
            self.announced = current[2]
        sweep_id, index, token, start = current
        running = Execution(token, self.name, node_name(), start, 0.0, None, "running")
        PointLogs(self.queue.connection).store(sweep_id, [(index, running)], [])

    def finished(self) -> bool:
        """The running execution ended; True when it was announced (its end must be stored)."""
        with self._lock:
            current, self.current = self.current, None
            return current is not None and current[2] == self.announced

    def load(self, sweep_id: str) -> LoadedSweep:
        """The sweep and its compiled task, imported once per process (ids are content hashes)."""
        if sweep_id not in self.loaded:
            sweep = self.queue.load(sweep_id)
            origin = self.queue.origin(sweep_id)
            task = compile_task(sweep.task, sweep_id=sweep_id, param_names=sweep.param_names, origin=origin)
            if len(self.loaded) >= 16:
                self.loaded.pop(next(iter(self.loaded)))
            self.loaded[sweep_id] = LoadedSweep(sweep, task)
        return self.loaded[sweep_id]


_CONTEXT: ContextVar[WorkerContext | None] = ContextVar("swarmrun_worker_context", default=None)


def worker_label(base: str | None = None) -> str:
    """A unique worker name: `base` (e.g. `node-3` from a Swarm template) or the host, the pid and a
    random suffix (a restarted container reuses its pid, and RQ refuses a live name)."""
    if not base or "{{" in base:  # an unexpanded Swarm template, as under docker-compose
        base = socket.gethostname()
    return f"{base}.{os.getpid()}-{secrets.token_hex(2)}"


def run_chunk(sweep_id: str, gen: int, start: int, stop: int) -> dict[str, Any]:
    """The RQ job function of every chunk (referenced by dotted path, JSON arguments)."""
    job = get_current_job()
    assert job is not None, "run_chunk runs inside an RQ job"
    context = _CONTEXT.get()
    if context is None:  # run by a plain RQ worker: build a context from the job's connection
        settings = Settings.from_env()
        context = WorkerContext(SweepQueue(job.connection, job.origin), settings, worker_label())
    return ChunkRun(context, job, ChunkRef(sweep_id, gen, start, stop)).run()


class ChunkRun:
    """One execution of one chunk job."""

    def __init__(self, context: WorkerContext, job: Job, ref: ChunkRef) -> None:
        self.context = context
        self.queue = context.queue
        self.job = job
        self.ref = ref
        self.isolated = job.retries_left is not None and job.retries_left < CHUNK_RETRIES
        self.pending: list[tuple[int, str, str, str]] = []
        self.pending_since = time.perf_counter()
        self.summary = {"executed": 0, "cached": 0, "recorded": 0, "failed": 0}
        self.cancelled = False
        self.runs: list[tuple[int, Extras]] = []  # every execution since the last flush
        self.kept: list[tuple[int, Extras]] = []  # executions whose record carries files
        self.logs = PointLogs(self.queue.connection)
        self.uploader = Uploader(self.queue.connection)
        self.opts = Options()
        self.shared: Path | None = None  # the manager's results directory, when this worker sees it
        self.last_took: float | None = None  # the duration of the chunk's last execution

    def run(self) -> dict[str, Any]:
        ref = self.ref
        state, options, per_point, workers = self.queue.chunk_context(ref.sweep_id)
        if state is None:
            return {"skipped": "unknown sweep"}
        if state == "cancelled":
            return {"skipped": "cancelled"}
        loaded = self.context.load(ref.sweep_id)
        opts = Options(
            timeout=options.get("timeout"),
            retries=int(options.get("retries", 0)),
            backoff=float(options.get("backoff", 1.0)),
            chunk=options.get("chunk"),
            **parse_output_options("sweep options", options),
        )
        self.opts = opts
        if opts.outputs and not opts.outputs_dir:
            self.shared = shared_root(self.queue.connection, ref.sweep_id, self.context.shares_seen)
        split = self.job.meta.get("split")
        first = self.queue.first_missing(ref.sweep_id, ref.start, ref.stop)
        if split is None:
            if first is None:
                split = ref.stop
            else:
                size = plan_size(
                    ref.stop - first,
                    seconds_per_point=per_point,
                    workers=workers,
                    target=self.context.settings.chunk_seconds,
                    fixed=opts.chunk,
                )
                split = first + size
            self.job.meta["split"] = split
            self.job.save_meta()  # type: ignore[no-untyped-call]
        if split < ref.stop:
            self.queue.enqueue(ChunkRef(ref.sweep_id, ref.gen, split, ref.stop))
        began = time.perf_counter()
        if first is not None and first < split:
            self._run_range(loaded, opts, first, split)
        self._flush()
        elapsed = time.perf_counter() - began
        log.info(
            "chunk %s [%d, %d): %d executed, %d cached, %d failed in %.2fs%s",
            ref.sweep_id[:12],
            ref.start,
            split,
            self.summary["executed"],
            self.summary["cached"],
            self.summary["failed"],
            elapsed,
            " (cancelled)" if self.cancelled else "",
        )
        return {"split": split, **self.summary, "seconds": round(elapsed, 3)}

    def _run_range(self, loaded: LoadedSweep, opts: Options, start: int, stop: int) -> None:
        sweep, sid = loaded.sweep, self.ref.sweep_id
        task_key = sweep.task.key
        for block in range(start, stop, BLOCK):
            end = min(stop, block + BLOCK)
            mask = self.queue.done_mask(sid, block, end)
            hits = bits(mask, block, block, end)
            todo = [i for i, hit in zip(range(block, end), hits, strict=True) if not hit]
            if not todo:
                continue
            params = [sweep.point(i) for i in todo]
            keys = point_keys(sweep.param_names, params)
            known = self.queue.cached(task_key, keys, sweep_id=sid)
            for index, p, key, hit in zip(todo, params, keys, known, strict=False):
                if hit:
                    self.pending.append((index, key, "cached", ""))
                    self.summary["cached"] += 1
                else:
                    self._execute(loaded.task, opts, index, p, key)
                if self._due() and self._flush():
                    return

    def _execute(self, task: Task, opts: Options, index: int, params: dict[str, Any], key: str) -> None:
        if self.isolated:
            starts = self.queue.mark_inflight(self.ref.sweep_id, index)
            if starts > CRASH_LIMIT:
                why = f"the worker died {starts - 1} times while running this point"
                outcome = Outcome("error", error=why)
                self._add(index, key, outcome, attempt=starts - 1)
                return
        attempt = 1
        sweep = self.context.load(self.ref.sweep_id).sweep
        while True:
            token = self.context.token()
            self.context.current = (self.ref.sweep_id, index, token, time.time())
            if self.last_took is None or self.last_took >= ANNOUNCE_SLOW:
                self.context.announce()
            outcome, extras = execute(
                task,
                params,
                index=index,
                sweep=sweep,
                sweep_id=self.ref.sweep_id,
                options=opts,
                worker=self.context.name,
                connection=self.queue.connection,
                point_dir=self.context.point_dir,
                uploader=self.uploader,
                token=token,
                shared=self.shared,
            )
            announced = self.context.finished()
            self.last_took = outcome.duration
            self.summary["executed"] += 1
            # An ok point with nothing to show stores no execution: its record says it all
            # (worker, finish time, duration, exit code), and no-op points stay cheap. One that
            # was announced as running stores its end, which replaces that entry.
            if announced or (
                opts.logs != "none"
                and (
                    extras.log is not None
                    or bool(extras.files)
                    or outcome.status != "ok"
                    or attempt > 1
                    or self.isolated
                )
            ):
                self.runs.append((index, extras))
            if outcome.status == "ok" or attempt > opts.retries:
                break
            time.sleep(min(MAX_BACKOFF, opts.backoff * 2 ** (attempt - 1)))
            attempt += 1
        self._add(index, key, outcome, attempt, extras)
        if self.isolated:
            self._flush()

    def _add(
        self, index: int, key: str, outcome: Outcome, attempt: int, extras: Extras | None = None
    ) -> None:
        status, record = encode_record(
            outcome, attempt=attempt, worker=self.context.name, sweep_id=self.ref.sweep_id
        )
        if extras is not None:
            record = extras.extend(record)
            if extras.files or extras.staged is not None:
                self.kept.append((index, extras))
        if status != "ok":
            self.summary["failed"] += 1
        self.pending.append((index, key, status, record))

    def _due(self) -> bool:
        return len(self.pending) >= FLUSH_ENTRIES or time.perf_counter() - self.pending_since >= FLUSH_SECONDS

    def _flush(self) -> bool:
        """Store pending results; True when the sweep was cancelled meanwhile."""
        now = time.perf_counter()
        self.uploader.flush()  # files before the records that list them
        if self.runs:
            self.logs.store(
                self.ref.sweep_id,
                [(i, x.execution) for i, x in self.runs],
                [(i, x.token, x.log) for i, x in self.runs if x.log is not None],
            )
            self.runs = []
        if self.pending:
            loaded = self.context.load(self.ref.sweep_id)
            fresh, state = self.queue.record(
                self.ref.sweep_id,
                loaded.sweep.task.key,
                self.pending,
                seconds=now - self.pending_since,
                isolated=self.isolated,
                worker=self.context.name,
            )
            self.summary["recorded"] += fresh
            self.pending = []
            if self.kept:
                self._settle_outputs(loaded.sweep)
            self.cancelled = state == "cancelled"
        self.pending_since = now
        return self.cancelled

    def _settle_outputs(self, sweep: Sweep) -> None:
        """Keep the files of executions whose record won; drop the others' (see execution.pointrun)."""
        from swarmrun.execution.outputstore import record_files

        indices = [i for i, _ in self.kept]
        raws = self.queue.record_values(self.ref.sweep_id, sweep.task.key, indices, sweep.keys_of)
        winners = [record_files(raw)[0] for raw in raws]
        settle(self.queue.connection, sweep, self.ref.sweep_id, self.opts, self.kept, winners)
        self.kept = []


class _Heartbeat:
    """Calls `beat` every `interval` seconds from a daemon thread while a chunk runs."""

    def __init__(self, interval: float, beat: Callable[[], None]) -> None:
        self._stop = threading.Event()
        self._interval = interval
        self._beat = beat
        self._thread = threading.Thread(target=self._run, name="swarmrun-heartbeat", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._beat()
            except Exception:  # a missed beat is retried; a dead Redis is seen by the main thread
                log.warning("heartbeat failed", exc_info=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def stop_when_orphaned(parent: int, interval: float = 1.0) -> threading.Thread:
    """SIGTERM this process (a warm stop: the running chunk finishes) once `parent` has gone.

    Local workers run in sessions of their own (a Ctrl-C reaches only the manager), so without
    this a manager killed with SIGKILL would leave them running for ever.
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        log.warning("the manager (pid %d) is gone; stopping after the current chunk", parent)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, name="swarmrun-orphan-watch", daemon=True)
    thread.start()
    return thread


class ChunkWorker(SimpleWorker):
    """An RQ worker for chunk jobs: in-process execution, own heartbeat, swarmrun maintenance."""

    death_penalty_class = NoDeathPenalty

    def __init__(self, context: WorkerContext, **kwargs: Any) -> None:
        self.context = context
        settings = context.settings
        super().__init__(
            [context.queue.queue],
            connection=context.queue.connection,
            serializer=JSONSerializer,
            name=context.name,
            maintenance_interval=settings.maintenance_interval,
            worker_ttl=max(20, settings.maintenance_interval + 15),
            **kwargs,
        )
        self.stop_requested_by_signal = False

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        return self.context.settings.heartbeat_ttl

    def execute_job(self, job: Job, queue: Queue) -> None:
        execution = self.prepare_execution(job)
        token = _CONTEXT.set(self.context)
        interval = max(1.0, self.context.settings.heartbeat_ttl / 3)
        try:
            with (
                _Heartbeat(interval, lambda: self._beat(job, execution)),
                _Heartbeat(ANNOUNCE_EVERY, lambda: self.context.announce(ANNOUNCE_EVERY)),
            ):
                self.perform_job(job, queue, execution)
        finally:
            _CONTEXT.reset(token)
        self.set_state(WorkerStatus.IDLE)

    def unsubscribe(self) -> None:
        """As RQ's, but without waiting for its pubsub thread (a daemon) to wake: an idle worker
        told to stop exits at once (`run` and a scale-down wait for their workers to exit).

        The thread's loop is told to end BEFORE the unsubscribe, whose reply then wakes it for
        good. In the other order the thread could go back to its read (RQ's: up to 60 s) before
        the flag was cleared, and redis-py 8.2's `stop()` waits for the thread to end.
        """
        thread = self.pubsub_thread
        if thread:
            try:
                thread.stop(timeout=0)  # redis-py >= 8.2 joins the thread here
            except TypeError:  # redis-py before 8.2: stop() only clears the flag
                thread.stop()
            self.pubsub.unsubscribe()
            thread.join(timeout=0.05)
            self.pubsub.close()

    def _beat(self, job: Job, execution: Any) -> None:
        self.maintain_heartbeats(job, execution)
        self.context.announce(ANNOUNCE_EVERY)  # as the announcing thread: not a fast point

    def request_stop(self, signum: Any, frame: Any) -> None:
        self.stop_requested_by_signal = True
        stop_waiting()  # a Redis that is away no longer holds the stop up
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()  # type: ignore[no-untyped-call]  # reaps abandoned chunks
        lock = self.connection.set(
            "swarmrun:maintenance",
            self.name,
            nx=True,
            ex=max(1, self.context.settings.maintenance_interval - 1),
        )
        if lock:
            self.context.queue.settle()
            for sid in self.context.queue.active_sweeps():
                self.context.queue.repair(sid)


class _StopWaiting(BaseException):
    """Raised by the signal handler while a worker still waits for Redis."""


def _stop_waiting(signum: int, frame: object) -> None:
    raise _StopWaiting


def wait_for_redis(url: str, *, timeout: float, patience: float | None = None) -> redis.Redis:
    """Connect, retrying for up to `timeout` seconds (Redis may start after the workers); the
    connection then rides out `patience` seconds without Redis."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return connect(url, resilient=True, patience=patience)
        except RedisAuthFailed:
            raise
        except RedisUnavailable:
            if time.monotonic() >= deadline:
                raise
            log.warning("waiting for Redis at %s", redact(url))
            time.sleep(2)


def serve(
    settings: Settings,
    url: str,
    *,
    burst: bool = False,
    name: str | None = None,
    wait: float = 120.0,
    max_idle: int | None = None,
    parent: int | None = None,
) -> int:
    """Run a worker until stopped (or until the queue is empty with `burst`); returns an exit code.

    With `parent` (a pid), the worker stops once that process is no longer its parent.
    """
    logging.getLogger("swarmrun").setLevel(logging.INFO)
    # Until RQ installs its own handlers, a stop request ends the wait at once. As PID 1 in a
    # container (no init) a signal without a handler would be ignored, and `docker stop` would
    # end in SIGKILL after the whole grace period.
    previous = {sig: signal.signal(sig, _stop_waiting) for sig in (signal.SIGTERM, signal.SIGINT)}
    if parent is not None:
        stop_when_orphaned(parent)
    try:
        connection = wait_for_redis(url, timeout=wait, patience=settings.redis_patience)
    except _StopWaiting:
        log.info("stopped while waiting for Redis")
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    context = WorkerContext(SweepQueue(connection, settings.queue), settings, worker_label(name))
    worker = ChunkWorker(context)
    log.info("worker %s listening on queue %r", worker.name, settings.queue)
    try:
        worker.work(burst=burst, logging_level="WARNING", max_idle_time=max_idle)
    finally:
        context.point_dir.remove()
    if burst or worker.stop_requested_by_signal or max_idle is not None:
        return 0
    log.error("worker %s stopped unexpectedly", worker.name)
    return 1


def origin_of(path: Path) -> Path:
    return path.resolve().parent
