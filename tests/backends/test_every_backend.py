"""What every backend promises, one test body each, run against local, swarm and kubernetes.

The `target` fixture gives the same small handle on each backend: start N workers, scale them
mid-sweep, and the sweep's queue. Local workers are `swarmrun worker` processes (scaled by
starting more or sending SIGTERM, a warm stop); swarm and kubernetes are driven through the CLI
(`swarmrun up -r N`, `swarmrun scale N`), as a user would.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from swarmrun.execution.queue import SweepQueue
from tests.conftest import Processes, read_csv, swarmrun_env, wait_until, write_sweep

NAP = """
name: every-backend
task: {{call: "fixtures.tasks:nap"}}
params:
  seconds: [{seconds}]
  i: {{range: [0, {points}]}}
"""


class Target:
    """One backend's workers: `up(n)`, `scale(n)`, `queue()`, and the CLI environment."""

    def __init__(
        self,
        name: str,
        env: dict[str, str],
        cwd: Path,
        up: Callable[[int], None],
        scale: Callable[[int], None],
        queue: Callable[[], contextlib.AbstractContextManager[SweepQueue]],
    ) -> None:
        self.name, self.env, self.cwd = name, env, cwd
        self.up, self.scale, self.queue = up, scale, queue

    def cli(self, *args: str, timeout: float = 300) -> Any:
        from tests.conftest import run_cli

        return run_cli(args, env=self.env, cwd=self.cwd, timeout=timeout)


def _local(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    url = request.getfixturevalue("redis_url")
    procs = Processes(swarmrun_env(url, tmp_path / "home"), tmp_path)
    live: list[Any] = []

    def scale(n: int) -> None:
        while len(live) < n:
            live.append(procs.worker())
        while len(live) > n:
            live.pop().send_signal(signal.SIGTERM)  # warm: finish the chunk, then exit

    @contextlib.contextmanager
    def queue() -> Iterator[SweepQueue]:
        yield SweepQueue(redis.Redis.from_url(url), "swarmrun")

    yield Target("local", procs.env, tmp_path, scale, scale, queue)
    procs.stop_all()


def _swarm(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    from tests.swarm.conftest import cli

    stack = request.getfixturevalue("stack")

    def up(n: int) -> None:
        r = cli(stack, "up", "-r", str(n), *stack.options(), cwd=tmp_path)
        assert r.returncode == 0, r.stderr

    def scale(n: int) -> None:
        r = cli(stack, "scale", str(n), cwd=tmp_path)
        assert r.returncode == 0, r.stderr

    @contextlib.contextmanager
    def queue() -> Iterator[SweepQueue]:
        yield SweepQueue(redis.Redis.from_url(stack.backend().redis_url()), "swarmrun")

    yield Target("swarm", stack.env, tmp_path, up, scale, queue)


def _kubernetes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    kstack = request.getfixturevalue("kstack")
    kstack.add_volume()

    def up(n: int) -> None:
        r = kstack.cli("up", "-r", str(n), *kstack.options(), cwd=tmp_path)
        assert r.returncode == 0, r.stderr

    def scale(n: int) -> None:
        r = kstack.cli("scale", str(n), cwd=tmp_path)
        assert r.returncode == 0, r.stderr

    yield Target("kubernetes", kstack.env, tmp_path, up, scale, kstack.queue)


BACKENDS = {"local": _local, "swarm": _swarm, "kubernetes": _kubernetes}


@pytest.fixture(
    params=[
        "local",
        pytest.param("swarm", marks=pytest.mark.swarm),
        pytest.param("kubernetes", marks=pytest.mark.kubernetes),
    ]
)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    yield from BACKENDS[request.param](request, tmp_path)


def _submit(target: Target, seconds: float, points: int) -> str:
    path = write_sweep(target.cwd, NAP.format(seconds=seconds, points=points))
    r = target.cli("submit", str(path))
    assert r.returncode == 0, r.stderr
    return str(r.stdout.strip())


def _exactly_once(target: Target, sid: str, points: int) -> None:
    out = target.cwd / "out.csv"
    r = target.cli("results", sid, "-o", str(out))
    assert r.returncode == 0, r.stderr
    rows = read_csv(out)
    assert sorted(int(row["i"]) for row in rows) == list(range(points)), "a point lost or recorded twice"
    assert {row["status"] for row in rows} == {"ok"}


def _rate(queue: SweepQueue, sid: str, seconds: float) -> float:
    start_done, start = queue.progress(sid).done, time.monotonic()
    time.sleep(seconds)
    return (queue.progress(sid).done - start_done) / (time.monotonic() - start)


@pytest.mark.timeout(420)
def test_three_workers_record_every_point_exactly_once(target: Target) -> None:
    target.up(3)
    sid = _submit(target, 0.05, 150)
    with target.queue() as queue:
        wait_until(lambda: queue.progress(sid).complete, 240, interval=0.5, message="sweep complete")
        p = queue.progress(sid)
    assert (p.done, p.ok, p.error) == (150, 150, 0)
    _exactly_once(target, sid, 150)


@pytest.mark.timeout(420)
def test_scaling_up_mid_sweep_raises_throughput(target: Target) -> None:
    target.up(1)
    sid = _submit(target, 0.2, 300)
    with target.queue() as queue:
        wait_until(lambda: queue.progress(sid).done >= 10, 120, interval=0.5, message="first results")
        one = _rate(queue, sid, 8)
        target.scale(4)
        time.sleep(3)
        four = _rate(queue, sid, 8)
        print(
            f"{target.name}: 1 worker {one:.2f} points/s, 4 workers {four:.2f} points/s ({four / one:.2f}x)"
        )
        assert four / one >= 2.0
        wait_until(lambda: queue.progress(sid).complete, 240, interval=0.5, message="sweep complete")
    _exactly_once(target, sid, 300)


@pytest.mark.timeout(420)
def test_scaling_down_mid_sweep_loses_nothing(target: Target) -> None:
    target.up(4)
    sid = _submit(target, 0.1, 300)
    with target.queue() as queue:
        wait_until(lambda: queue.progress(sid).done >= 60, 120, interval=0.5, message="first results")
        target.scale(1)
        wait_until(lambda: queue.progress(sid).complete, 300, interval=0.5, message="sweep complete")
        p = queue.progress(sid)
    assert (p.done, p.ok) == (300, 300)
    print(f"{target.name}: scaled 4 -> 1 mid-sweep: lost=0, duplicates executed={p.duplicates}")
    _exactly_once(target, sid, 300)
