"""Measuring what a disruption costs a running sweep, from the side (for chaos tests and benchmarks).

`Recovery` snapshots, right before each disruption, the points in flight: the ranges of every
chunk a worker had started (RQ's StartedJobRegistry, read without the cleanup that would reap
abandoned chunks and so help the recovery it measures). The disruption is recovered once every
one of those points has its result: for a killed worker that takes the heartbeat expiry, the reap
and the re-run; for a warm scale-down, the chunks the stopping workers finish.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from rq.job import Job
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from swarmrun.definition.chunk import ChunkRef
from swarmrun.execution.queue import SweepQueue


@dataclass
class Disruption:
    what: str
    at: float
    inflight: list[tuple[int, int]]
    recovered_at: float | None = None

    @property
    def seconds(self) -> float | None:
        return None if self.recovered_at is None else self.recovered_at - self.at


@dataclass
class Recovery:
    """Watches one sweep; `disrupt()` before each disruption, `report()` at the end."""

    queue: SweepQueue
    sweep_id: str
    poll: float = 0.2
    disruptions: list[Disruption] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def inflight(self) -> list[tuple[int, int]]:
        """Point ranges `[start, split)` of this sweep's chunks that workers have started."""
        registry = StartedJobRegistry(queue=self.queue.queue)
        ranges = []
        for job_id in registry.get_job_ids(cleanup=False):
            ref = ChunkRef.parse(job_id)
            if ref is None or ref.sweep_id != self.sweep_id:
                continue
            try:
                job = Job.fetch(job_id, connection=self.queue.connection, serializer=JSONSerializer)
                split = int(job.meta.get("split", ref.stop))
            except Exception:  # the job finished meanwhile: nothing of it is in flight
                continue
            ranges.append((ref.start, split))
        return ranges

    def disrupt(self, what: str) -> Disruption:
        """Record the points in flight now: call this just before disrupting."""
        d = Disruption(what, time.monotonic(), self.inflight())
        with self._lock:
            self.disruptions.append(d)
        return d

    def _recovered(self, d: Disruption) -> bool:
        return all(self.queue.first_missing(self.sweep_id, a, b) is None for a, b in d.inflight)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                pending = [d for d in self.disruptions if d.recovered_at is None]
            for d in pending:
                try:
                    if self._recovered(d):
                        d.recovered_at = time.monotonic()
                except Exception:  # Redis restarting: try again at the next poll
                    pass
            self._stop.wait(self.poll)

    def __enter__(self) -> Recovery:
        self._thread = threading.Thread(target=self._run, name="recovery-monitor", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    @property
    def worst(self) -> float:
        """Seconds the slowest disruption took to recover (every one must have recovered by now)."""
        with self._lock:
            for d in self.disruptions:  # a last look, in case the monitor has not polled since
                if d.recovered_at is None and self._recovered(d):
                    d.recovered_at = time.monotonic()
        unrecovered = [d.what for d in self.disruptions if d.seconds is None]
        assert not unrecovered, f"never recovered: {unrecovered}"
        return max((d.seconds or 0.0 for d in self.disruptions), default=0.0)
