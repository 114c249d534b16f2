"""`watch` polls quickly at first (a small sweep is over in well under a second), then every `poll`:
its end is seen within an eighth of the time so far (or 20 ms)."""

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
