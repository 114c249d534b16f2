"""`watch` polls quickly at first (a small sweep is over in well under a second), then every `poll`,
and near the end when the current rate says the sweep is over: a steady sweep's end is seen within
a hundredth of its time (or 20 ms), any sweep's within an eighth of the time so far."""

from __future__ import annotations

from typing import Any

from swarmrun.execution.queue import Progress
from swarmrun.execution.watch import watch


class FakeQueue:
    """Progress that completes after `polls_left` more reads."""

    def __init__(self, polls_left: int) -> None:
        self.polls_left = polls_left

    def progress(self, sweep_id: str) -> Progress:
        self.polls_left -= 1
        done = 10 if self.polls_left <= 0 else 0
        return Progress(sweep_id, "s", 10, done, done, 0, 0, 0, done, 0, 0.0, done, "active", 0.0)

    def maintain(self, sweep_ids: Any) -> None:
        pass


def test_polls_from_20_ms_never_more_than_an_eighth_of_the_time_so_far_up_to_poll() -> None:
    sleeps: list[float] = []
    now = [0.0]

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    final = watch(
        FakeQueue(polls_left=60),  # type: ignore[arg-type]
        "sid",
        on_progress=lambda *a: None,
        poll=0.5,
        clock=lambda: now[0],
        sleep=sleep,
    )
    assert final.complete
    assert sleeps[0] == 0.02 and sleeps[-1] == 0.5
    elapsed = 0.0
    for before, seconds in zip(sleeps, sleeps[1:], strict=False):
        elapsed += before
        assert seconds <= max(0.02, elapsed / 8) + 1e-9 and seconds <= 2 * before
    assert max(sleeps) == 0.5


class SteadyQueue:
    """Points done at a steady `rate` on the test's clock: the sweep completes at size / rate."""

    def __init__(self, size: int, rate: float, now: list[float]) -> None:
        self.size, self.rate, self.now = size, rate, now

    def progress(self, sweep_id: str) -> Progress:
        done = min(self.size, int(self.rate * self.now[0]))
        return Progress(sweep_id, "s", self.size, done, done, 0, 0, 0, done, 0, 0.0, done, "active", 0.0)

    def maintain(self, sweep_ids: Any) -> None:
        pass


def test_the_end_of_a_steady_sweep_is_seen_within_a_hundredth_of_its_time() -> None:
    """Polling an eighth of the time so far saw a 2.5-s sweep end up to 0.3 s late (a tenth of a
    10^5-point `run`); at the measured rate the poll lands on the expected end instead."""
    for size, rate in ((100_000, 40_000.0), (3_000, 1_000.0), (2_000_000, 40_000.0)):
        now = [0.0]
        polls: list[float] = []

        def sleep(seconds: float, now: list[float] = now) -> None:
            now[0] += seconds

        def seen(progress: Progress, *args: Any, now: list[float] = now, polls: list[float] = polls) -> None:
            polls.append(now[0])

        final = watch(
            SteadyQueue(size, rate, now),  # type: ignore[arg-type]
            "sid",
            on_progress=seen,
            poll=0.5,
            clock=lambda now=now: now[0],  # type: ignore[misc]
            sleep=sleep,
        )
        assert final.complete
        end = size / rate
        assert now[0] - end <= max(0.02, end / 100) + 1e-9, (size, now[0], end)
        assert len(polls) <= 2 * end + 60, "the quicker end costs a few polls, not a poll per 20 ms"
