"""Autoscaling on a real swarm: up while a sweep runs, back down after it, no point lost."""

from __future__ import annotations

import csv
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from swarmrun.execution.queue import SweepQueue
from tests.conftest import wait_until, write_sweep
from tests.swarm.conftest import Stack, cli

pytestmark = pytest.mark.swarm

NAP = """
name: autoscale-nap
task: {{call: "fixtures.tasks:nap"}}
params:
  seconds: [{seconds}]
  i: {{range: [0, {points}]}}
"""
FAST = [
    "--up-cooldown",
    "3",
    "--down-cooldown",
    "5",
    "--window",
    "4",
    "--interval",
    "1",
    "--work-per-replica",
    "5",
]
CHANGE = re.compile(r"workers (\d+) -> (\d+): (.*)")


def desired(stack: Stack) -> int:
    service = stack.client.services.get(f"{stack.name}_worker")
    return int(service.attrs["Spec"]["Mode"]["Replicated"]["Replicas"])


def changes(text: str) -> list[tuple[int, int, str]]:
    return [(int(a), int(b), why) for a, b, why in CHANGE.findall(text)]


def reversals(steps: list[tuple[int, int, str]]) -> int:
    ups = [b > a for a, b, _ in steps]
    return sum(1 for x, y in zip(ups, ups[1:], strict=False) if x != y)


def indices(path: Path) -> list[int]:
    with path.open() as f:
        return sorted(int(row["i"]) for row in csv.DictReader(f))


def test_autoscale_scales_up_during_a_sweep_and_back_down_after(stack: Stack, tmp_path: Path) -> None:
    assert cli(stack, "up", "-r", "1", *stack.options(), cwd=tmp_path).returncode == 0
    points = 800
    path = write_sweep(tmp_path, NAP.format(seconds=0.2, points=points))
    sid = cli(stack, "submit", str(path), cwd=tmp_path).stdout.strip()
    queue = SweepQueue(redis.Redis.from_url(stack.backend().redis_url()), "swarmrun")
    argv = [sys.executable, "-m", "swarmrun", "autoscale", "--min", "1", "--max", "4", *FAST]
    scaler = subprocess.Popen(
        argv, env=stack.env, cwd=tmp_path, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        wait_until(lambda: desired(stack) == 4, 150, interval=0.5, message="scaling up to 4 replicas")
        at_peak = queue.progress(sid).done
        assert at_peak < points, "the sweep ended before the autoscaler reached 4 replicas"
        wait_until(lambda: queue.progress(sid).complete, 300, interval=1, message="the sweep to complete")
        wait_until(
            lambda: desired(stack) == 1 and stack.backend().replicas().running == 1,
            120,
            interval=1,
            message="scaling back down to 1 replica after the sweep",
        )
    finally:
        scaler.send_signal(signal.SIGTERM)
        out, err = scaler.communicate(timeout=60)
    print(out)
    assert scaler.returncode == 0, err
    assert "autoscale stopped" in err
    steps = changes(out)
    assert steps[:2] == [(1, 2, steps[0][2]), (2, 4, steps[1][2])], out
    assert "all 1 replicas busy" in steps[0][2] and "points/s at 2" in steps[1][2], out
    assert steps[-1][1] == 1 and "backlog drained" in steps[-1][2], out
    assert reversals(steps) == 1, out  # up, then down: no flapping

    p = queue.progress(sid)
    assert (p.done, p.ok, p.error, p.timeout) == (points, points, 0, 0)
    out_csv = tmp_path / "out.csv"
    assert cli(stack, "results", sid, "-o", str(out_csv), cwd=tmp_path).returncode == 0
    assert indices(out_csv) == list(range(points))  # every point once: none lost, none twice
    print(f"autoscaled 1 -> 4 -> 1 over {points} points: {p.duplicates} duplicate executions")


def test_run_with_autoscale_scales_and_ends_at_the_minimum(stack: Stack, tmp_path: Path) -> None:
    points = 600
    path = write_sweep(tmp_path, NAP.format(seconds=0.2, points=points))
    out_csv = tmp_path / "out.csv"
    r = cli(
        stack,
        "run",
        str(path),
        "--backend",
        "swarm",
        "--autoscale",
        "1:3",
        *FAST,
        "-o",
        str(out_csv),
        *stack.options(),
        cwd=tmp_path,
        timeout=420,
    )
    assert r.returncode == 0, r.stderr
    steps = changes(r.stderr)
    assert steps and steps[0][:2] == (1, 2), r.stderr
    assert max(b for _, b, _ in steps) == 3, r.stderr
    assert indices(out_csv) == list(range(points))
    # the sweep is done: the workers go back to the minimum
    wait_until(lambda: desired(stack) == 1, 60, interval=1, message="1 replica after the run")
