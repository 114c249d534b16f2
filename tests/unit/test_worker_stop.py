"""A stopped idle worker leaves at once: its pubsub thread is not waited for (no Redis)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from swarmrun.execution.worker import ChunkWorker


class _PubSub:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def unsubscribe(self) -> None:
        self.calls.append("unsubscribe")

    def close(self) -> None:
        self.calls.append("close")


class _Thread:
    """redis-py 8's PubSubWorkerThread: stop() joins the thread, which may be in a 60 s wait."""

    def __init__(self) -> None:
        self.stops: list[float | None] = []

    def stop(self, timeout: float | None = None) -> None:
        self.stops.append(timeout)
        time.sleep(60 if timeout is None else timeout)

    def join(self, timeout: float | None = None) -> None:
        pass


class _OldThread(_Thread):
    """redis-py before 8: stop() takes no timeout and only clears the flag."""

    def stop(self) -> None:  # type: ignore[override]
        self.stops.append(None)


@pytest.mark.parametrize("thread", [_Thread(), _OldThread()])
def test_unsubscribe_does_not_wait_for_the_pubsub_thread(thread: _Thread) -> None:
    worker: Any = ChunkWorker.__new__(ChunkWorker)
    worker.pubsub, worker.pubsub_thread = _PubSub(), thread
    began = time.monotonic()
    ChunkWorker.unsubscribe(worker)
    assert time.monotonic() - began < 1.0
    assert worker.pubsub.calls == ["unsubscribe", "close"] and len(thread.stops) == 1
    assert thread.stops[0] is None or thread.stops[0] <= 0.05
