"""Hard faults on the local default (embedded Redis, local workers): `kill -9` of the embedded
redis-server mid-run, and `kill -9` of the `swarmrun run` process itself. Every point ends with
exactly one result; a rerun completes the sweep and records nothing twice."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from swarmrun.execution.queue import SweepQueue
from tests.conftest import read_csv, swarmrun_env, wait_until, write_sweep

SWEEP = """
name: hard
task: {call: "fixtures.tasks:nap"}
params:
  seconds: [0.05]
  i: {range: [0, 300]}
"""


def embedded(home: Path) -> tuple[int, SweepQueue]:
    state = json.loads((home / "redis" / "server.json").read_text())
    return int(state["pid"]), SweepQueue(redis.Redis.from_url(state["url"]), "swarmrun")


def done(home: Path) -> int:
    try:
        _, queue = embedded(home)
        sids = queue.sweep_ids()
        return queue.progress(sids[0]).done if sids else 0
    except (OSError, ValueError, KeyError, redis.RedisError):
        return 0


def start_run(env: dict[str, str], cwd: Path, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "swarmrun", "run", "sweep.yaml", "-w", "2", "-o", str(out)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def run_again(env: dict[str, str], cwd: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "swarmrun", "run", "sweep.yaml", "-w", "2", "-o", str(out)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def assert_each_point_once(out: Path, home: Path) -> None:
    rows = read_csv(out)
    assert sorted(int(r["i"]) for r in rows) == list(range(300)), len(rows)
    assert {r["status"] for r in rows} == {"ok"}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


@pytest.fixture
def local(tmp_path: Path):
    """A sweep directory and an environment without --redis-url: the embedded Redis."""
    write_sweep(tmp_path, SWEEP)
    home = tmp_path / "home"
    env = swarmrun_env(None, home)
    started: list[subprocess.Popen[str]] = []
    yield tmp_path, home, env, started
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if (home / "redis" / "server.json").exists():  # the embedded server this test started
        pid, queue = embedded(home)
        with contextlib.suppress(redis.RedisError):
            queue.connection.shutdown(nosave=True)
        wait_until(lambda: not alive(pid), 10, message="embedded redis-server stopped")


@pytest.mark.timeout(240)
def test_embedded_redis_sigkilled_mid_run_is_restarted_and_the_run_completes(local) -> None:
    cwd, home, env, started = local
    out = cwd / "out.csv"
    run = start_run(env, cwd, out)
    started.append(run)
    wait_until(lambda: done(home) >= 60, 90, message="a fifth of the points done")
    pid, _ = embedded(home)
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    output, _ = run.communicate(timeout=150)
    took = time.monotonic() - killed
    assert run.returncode == 0, output
    assert f"The embedded Redis server (pid {pid}) died; restarted it from its append-only file" in output
    assert "Traceback" not in output
    assert "300/300 points done: 300 ok" in output
    assert_each_point_once(out, home)
    duplicates = output.split(" duplicate executions")[0].rsplit(" ", 1)[1]
    print(
        f"embedded redis-server SIGKILLed: lost=0, duplicates={duplicates}, done {took:.1f}s after the kill"
    )

    again = run_again(env, cwd, out)
    assert again.returncode == 0, again.stderr
    assert "Every point is already done; nothing to run." in again.stderr
    assert_each_point_once(out, home)


@pytest.mark.timeout(240)
def test_manager_sigkilled_mid_run_resumes_and_its_workers_stop(local) -> None:
    cwd, home, env, started = local
    out = cwd / "out.csv"
    run = start_run(env, cwd, out)
    started.append(run)
    wait_until(lambda: done(home) >= 60, 90, message="a fifth of the points done")
    children = subprocess.run(["pgrep", "-P", str(run.pid)], capture_output=True, text=True).stdout.split()
    workers = [  # the manager's children but its Redis (its workers are forked: `swarmrun run`)
        int(pid)
        for pid in children
        if "redis-server" not in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
    ]
    assert len(workers) == 2, workers
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    # its workers notice, finish their chunk and stop (no process left behind)
    wait_until(lambda: not any(alive(w) for w in workers), 60, message="the dead manager's workers stopped")

    again = run_again(env, cwd, out)
    assert again.returncode == 0, again.stderr
    assert "300/300 points done: 300 ok" in again.stderr
    assert_each_point_once(out, home)
    duplicates = again.stderr.split(" duplicate executions")[0].rsplit(" ", 1)[1]
    print(f"manager SIGKILLed: its workers stopped, the rerun resumed; lost=0, duplicates={duplicates}")
