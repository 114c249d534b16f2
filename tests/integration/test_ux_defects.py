"""Defects a new user met: each test failed before its fix."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import redis

from swarmrun.execution.queue import SweepQueue
from tests.conftest import Processes, wait_until, write_sweep

SQUARES = """
name: squares
task: {call: "fixtures.tasks:square"}
params:
  x: {range: [0, 300]}
"""


def test_ls_shows_a_complete_sweep_as_complete(procs: Processes, tmp_path: Path) -> None:
    path = write_sweep(tmp_path, SQUARES)
    assert procs.cli("run", str(path), "-w", "2", "-q").returncode == 0
    r = procs.cli("ls")
    assert r.returncode == 0, r.stderr
    row = next(line for line in r.stdout.splitlines() if "squares" in line)
    assert "300/300" in row
    assert re.search(r"\bcomplete\b", row) and "active" not in row, row


def test_status_counts_only_live_workers(procs: Processes, tmp_path: Path, rconn: redis.Redis) -> None:
    path = write_sweep(tmp_path, SQUARES)
    assert procs.cli("submit", str(path)).returncode == 0
    workers = [procs.worker() for _ in range(10)]
    queue = SweepQueue(rconn, "swarmrun")
    wait_until(lambda: queue.live_workers() == 10, 60, message="10 workers registered")
    assert "workers    10/10 running" in procs.cli("status").stdout
    for w in workers[:7]:
        w.send_signal(signal.SIGKILL)
        w.wait()
    time.sleep(0.5)
    r = procs.cli("status")
    assert r.returncode == 0, r.stderr
    assert "workers    3/3 running" in r.stdout, r.stdout


def test_override_of_an_unknown_param_is_an_error_and_plus_adds_one(procs: Processes, tmp_path: Path) -> None:
    path = write_sweep(tmp_path, SQUARES)
    r = procs.cli("submit", str(path), "-p", "zz=1,2")
    assert r.returncode == 3
    assert r.stderr.strip().splitlines() == [
        "Error: -p zz=1,2: 'zz' is not a param of this sweep (its params: x); write +zz=1,2 to add one"
    ]
    added = procs.cli("submit", str(path), "--no-check", "-p", "+zz=1,2")
    assert added.returncode == 0, added.stderr
    assert "600 points" in added.stderr


def test_results_with_an_unknown_output_format_is_a_usage_error(procs: Processes, tmp_path: Path) -> None:
    path = write_sweep(tmp_path, SQUARES)
    assert procs.cli("submit", str(path)).returncode == 0
    for args in (["results", "-o", "x.xlsx"], ["run", str(path), "-o", "x.xlsx"]):
        r = procs.cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "x.xlsx" in lines[0] and ".csv" in lines[0], r.stderr
    assert not (tmp_path / "x.xlsx").exists()
