"""`swarmrun run` (the manager and its local workers) through a Redis it loses for a while.

Redis sits behind `tests.faultproxy`, which breaks like the CLI's Kubernetes port-forward while
the kubelet is away (every connection accepted, then reset) or like a restarting Redis (refused).
An outage of 20 s is ridden out: exit 0, every point exactly once. A Redis that stays away ends
in one `Error:` line and exit code 4 once SWARMRUN_REDIS_PATIENCE has run out, not hours later.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import Processes, RedisServer, read_csv, swarmrun_env, wait_until, write_sweep
from tests.faultproxy import FaultProxy

pytestmark = pytest.mark.timeout(240)

POINTS = 400
SWEEP = f"""
name: outage
task: {{call: "fixtures.tasks:nap"}}
params:
  seconds: [0.05]
  i: {{range: [0, {POINTS}]}}
"""
STYLES = {"accepted-then-reset": False, "refused": True}


@pytest.fixture
def proxy(redis_server: RedisServer, redis_url: str) -> Iterator[FaultProxy]:
    """A fault proxy in front of this test's (flushed) Redis."""
    p = FaultProxy(("127.0.0.1", redis_server.port))
    yield p
    p.close()


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


def _run(tmp_path: Path, url: str, started: list[subprocess.Popen[str]], **env: str) -> subprocess.Popen[str]:
    write_sweep(tmp_path, SWEEP)
    proc = subprocess.Popen(
        [sys.executable, "-m", "swarmrun", "run", "sweep.yaml", "-w", "2", "-o", "out.csv", "-q"],
        cwd=tmp_path,
        env=swarmrun_env(url, tmp_path / "home", **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    started.append(proc)
    return proc


def _done(redis_url: str, counter: str | None = None) -> int:
    """Points with a result so far (or the sweep's `counter`), read straight from Redis."""
    client = redis.Redis.from_url(redis_url)
    try:
        sids = client.zrange("swarmrun:sweeps", 0, -1)
        if not sids:
            return 0
        key = f"swarmrun:sweep:{sids[0].decode()}"
        if counter is not None:
            return int(client.hget(f"{key}:counts", counter) or 0)
        return int(client.bitcount(f"{key}:done"))
    finally:
        client.close()


@pytest.mark.parametrize("style", STYLES)
def test_run_rides_out_a_redis_lost_for_20_s(
    style: str, proxy: FaultProxy, redis_url: str, tmp_path: Path, manager: list[subprocess.Popen[str]]
) -> None:
    run = _run(tmp_path, proxy.url, manager)
    wait_until(lambda: _done(redis_url) >= 40, 90, message="first results")
    proxy.outage(20, refuse=STYLES[style])
    at_outage = time.monotonic()
    _, stderr = run.communicate(timeout=180)
    assert run.returncode == 0, stderr
    assert time.monotonic() - at_outage >= 20  # it did have to wait for Redis
    rows = read_csv(tmp_path / "out.csv")
    assert sorted(int(r["i"]) for r in rows) == list(range(POINTS)), "a point was lost or recorded twice"
    assert {r["status"] for r in rows} == {"ok"}
    assert proxy.resets > 0  # the outage did break connections
    took = time.monotonic() - at_outage
    duplicates = _done(redis_url, "duplicates")
    print(f"{style} for 20 s: lost=0, duplicates executed={duplicates}, run ended {took:.1f} s after")


@pytest.mark.parametrize("style", STYLES)
def test_run_gives_up_on_a_redis_gone_for_good_after_its_patience(
    style: str, proxy: FaultProxy, redis_url: str, tmp_path: Path, manager: list[subprocess.Popen[str]]
) -> None:
    run = _run(tmp_path, proxy.url, manager, SWARMRUN_REDIS_PATIENCE="6")
    wait_until(lambda: _done(redis_url) >= 40, 90, message="first results")
    proxy.outage(3600, refuse=STYLES[style])
    at_outage = time.monotonic()
    _, stderr = run.communicate(timeout=120)
    took = time.monotonic() - at_outage
    assert run.returncode == 4, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "no answer for 6 s (SWARMRUN_REDIS_PATIENCE)" in errors[0], stderr
    assert "Traceback" not in stderr
    assert took < 45, took  # patience 6 s, plus the local workers' warm stop
    print(f"{style} for good: exit 4 after {took:.1f} s: {errors[0]}")


@pytest.mark.parametrize("style", STYLES)
def test_a_worker_told_to_stop_while_redis_is_away_exits_at_once(
    proxy: FaultProxy, tmp_path: Path, manager: list[subprocess.Popen[str]], style: str
) -> None:
    """SIGTERM to a worker whose Redis went away (e.g. `docker-compose down` stops Redis and the
    workers together): it stops within seconds instead of riding out the outage until its
    container is killed after the grace period. Idle, it has nothing to finish."""
    worker = Processes(swarmrun_env(proxy.url, tmp_path / "home"), tmp_path).worker()
    manager.append(worker)  # killed, with its process group, at teardown
    client = redis.Redis.from_url(proxy.url)
    wait_until(lambda: client.scard("rq:workers:swarmrun") == 1, 60, message="the worker registered")
    client.close()
    proxy.outage(120, refuse=STYLES[style])
    time.sleep(1.5)  # the worker is retrying by now
    t0 = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        worker.wait(timeout=30)
    took = time.monotonic() - t0
    out = worker.communicate()[0] if worker.poll() is not None else ""
    assert worker.poll() is not None and took < 10, f"still running {took:.0f} s after SIGTERM"
    assert "Traceback" not in out, out
