"""`swarmrun run --autoscale` on local worker processes (real Redis, real workers), and its bad input."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import redis

from swarmrun.definition.sweepfile import load_sweep
from swarmrun.execution.queue import SweepQueue
from tests.conftest import Processes, write_sweep

CHANGE = re.compile(r"autoscale: \S+ workers (\d+) -> (\d+): (.*)")


def test_run_autoscale_adds_local_workers_and_records_every_point(
    procs: Processes, tmp_path: Path, rconn: redis.Redis
) -> None:
    path = write_sweep(
        tmp_path,
        """
name: autoscale-local
task: {call: "fixtures.tasks:nap"}
params:
  seconds: [0.1]
  i: {range: [0, 300]}
""",
    )
    out = tmp_path / "out.csv"
    r = procs.cli(
        "run",
        str(path),
        "--autoscale",
        "1:3",
        "--up-cooldown",
        "1",
        "--window",
        "2",
        "--interval",
        "0.5",
        "--work-per-replica",
        "3",
        "-o",
        str(out),
        timeout=240,
    )
    assert r.returncode == 0, r.stderr
    steps = [(int(a), int(b), why) for a, b, why in CHANGE.findall(r.stderr)]
    assert steps[:2] == [(1, 2, steps[0][2]), (2, 3, steps[1][2])], r.stderr
    assert "points/s at 2" in steps[1][2], r.stderr
    assert all(b <= 3 for _, b, _ in steps)
    with out.open() as f:
        assert sorted(int(row["i"]) for row in csv.DictReader(f)) == list(range(300))
    p = SweepQueue(rconn, "swarmrun").progress(load_sweep(path).id)
    assert (p.done, p.ok, p.error) == (300, 300, 0)


def test_autoscale_bad_bounds_are_one_line_and_a_usage_error(procs: Processes, tmp_path: Path) -> None:
    path = write_sweep(tmp_path, "task: {call: 'fixtures.tasks:square'}\nparams:\n  x: [1, 2]\n")
    r = procs.cli("autoscale", "--min", "5", "--max", "2")
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last == (
        "Error: Invalid value for --min/--max: "
        "the maximum (2) must be at least 1 and at least the minimum (5)"
    )
    for bounds, message in (
        ("two:four", "expected MIN:MAX replicas, e.g. 1:8, got 'two:four'"),
        ("3", "expected MIN:MAX replicas, e.g. 1:8, got '3'"),
        ("4:1", "the maximum (1) must be at least 1 and at least the minimum (4)"),
    ):
        r = procs.cli("run", str(path), "--autoscale", bounds)
        assert r.returncode == 2, (bounds, r.stderr)
        assert r.stderr.strip().splitlines()[-1] == f"Error: Invalid value for --autoscale: {message}"
    r = procs.cli("run", str(path), "--autoscale", "1:2", "-w", "3")
    assert r.returncode == 2 and "either a worker count or --autoscale MIN:MAX, not both" in r.stderr
