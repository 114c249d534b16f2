"""Running a sweep to completion from the manager: Redis, live progress, recovery, export.

The CLI's `run`, `status --watch` and the autoscaler share `watch`, which also does the
manager's share of recovery: it reaps abandoned chunks, settles failed ones and repairs a
stalled sweep every few seconds, so a killed worker costs seconds, not RQ's ten minutes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from swarmrun.backends import Replicas
from swarmrun.execution.outputs import sweep_dir_name
from swarmrun.execution.progress import RateMeter
from swarmrun.execution.queue import Progress, SweepQueue
from swarmrun.redis_server import EmbeddedRedis
from swarmrun.settings import Settings

ProgressCallback = Callable[[Progress, float | None, Replicas | None], None]


@contextlib.contextmanager
def redis_url(settings: Settings, on_restart: Callable[[str], None] | None = None) -> Iterator[str]:
    """The configured Redis URL, or the embedded server's for as long as the block runs.

    With `on_restart`, an embedded server that dies meanwhile is restarted (and `on_restart` told).
    """
    if settings.url:
        yield settings.url
        return
    server = EmbeddedRedis(settings.home)
    url = server.acquire()
    if on_restart is not None:
        server.watch(on_restart)
    try:
        yield url
    finally:
        server.release()


def default_output(sweep_name: str, sweep_id: str, directory: Path = Path("swarmrun-results")) -> Path:
    return directory / f"{sweep_dir_name(sweep_name, sweep_id)}.csv"


def watch(
    queue: SweepQueue,
    sweep_id: str,
    *,
    on_progress: ProgressCallback,
    replicas: Callable[[], Replicas] | None = None,
    supervise: Callable[[], object] | None = None,
    poll: float = 0.5,
    maintain_every: float = 5.0,
    until_complete: bool = True,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Progress:
    """Report progress until the sweep is complete (or cancelled); recover stuck chunks meanwhile.

    Polls quickly at first (from 20 ms, then never more than an eighth of the time since the start,
    up to `poll`): a small sweep is over in well under a second, and a half-second wait would be
    most of its wall time. Near the end it polls when the current rate says the sweep is over
    (`_until_next_poll`): a steady sweep's end is seen within 1 % of its wall time (or 20 ms).
    """
    meter = RateMeter()
    started = last_maintain = clock()
    interval = min(poll, 0.02)
    while True:
        now = clock()
        progress = queue.progress(sweep_id)
        meter.add(now, progress.done)
        on_progress(progress, meter.rate, replicas() if replicas else None)
        if progress.complete or progress.state != "active" or not until_complete:
            return progress
        if now - last_maintain >= maintain_every:
            queue.maintain([sweep_id])
            if supervise is not None:
                supervise()
            last_maintain = now
        sleep(_until_next_poll(interval, progress, meter.rate, now - started))
        interval = min(poll, interval * 2, max(0.02, (clock() - started) / 8))


def _until_next_poll(interval: float, progress: Progress, rate: float | None, elapsed: float) -> float:
    """`interval`, or less when the sweep should be over sooner at its current rate: the poll
    lands on the expected end, and from there comes every hundredth of the time so far (20 ms at
    least), so a sweep of a few seconds is seen to end within tens of milliseconds."""
    left = progress.size - progress.done
    if rate is None or rate <= 0 or left <= 0:
        return interval
    return min(interval, max(left / rate, 0.02, elapsed / 100))
