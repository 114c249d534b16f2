"""Whole sweeps through the CLI, real Redis and real worker processes."""

from __future__ import annotations

import json
import math
import signal
import time
from pathlib import Path

import pytest
import redis

from swarmrun.definition.sweepfile import load_sweep
from swarmrun.execution.queue import SweepQueue
from tests.conftest import Processes, read_csv, wait_until, write_sweep


def sweep_id(path: Path, *overrides: str) -> str:
    return load_sweep(path, overrides).id


def progress(rconn: redis.Redis, sid: str):
    return SweepQueue(rconn, "swarmrun").progress(sid)


def test_run_records_every_point_once_and_exports(
    procs: Processes, tmp_path: Path, rconn: redis.Redis
) -> None:
    path = write_sweep(
        tmp_path,
        """
name: hypot
task: {call: "fixtures.tasks:hypot"}
params:
  x: {range: [0, 20]}
  y: {linspace: [0, 1, 5]}
""",
    )
    out = tmp_path / "out.csv"
    r = procs.cli("run", str(path), "-w", "2", "-o", str(out))
    assert r.returncode == 0, r.stderr
    rows = read_csv(out)
    assert sorted(int(row["index"]) for row in rows) == list(range(100))
    for row in rows:
        assert row["status"] == "ok"
        assert float(row["r"]) == pytest.approx(math.hypot(float(row["x"]), float(row["y"])))
    p = progress(rconn, sweep_id(path))
    assert (p.done, p.ok, p.executions, p.duplicates) == (100, 100, 100, 0)


def test_run_again_runs_nothing_and_a_changed_axis_runs_only_new_points(
    procs: Processes, tmp_path: Path, rconn: redis.Redis
) -> None:
    path = write_sweep(
        tmp_path,
        """
task: {call: "fixtures.tasks:hypot"}
params:
  x: [1, 2, 3]
  y: {range: [0, 10]}
""",
    )
    assert procs.cli("run", str(path), "-w", "2").returncode == 0
    sid = sweep_id(path)
    assert progress(rconn, sid).executions == 30

    again = procs.cli("run", str(path), "-w", "2")
    assert again.returncode == 0, again.stderr
    assert "already done; nothing to run" in again.stderr
    assert progress(rconn, sid).executions == 30

    assert "Indexing" not in again.stderr  # the task's only sweep: nothing to index
    changed = procs.cli("run", str(path), "-w", "2", "-p", "x=1,2,4")
    assert changed.returncode == 0, changed.stderr
    # the first sweep's results go into the key index now, once, and the user is told
    assert "Indexing 30 results of earlier sweeps of this task" in changed.stderr
    p = progress(rconn, sweep_id(path, "x=1,2,4"))
    assert (p.done, p.cached, p.executions) == (30, 20, 10)
    wider = procs.cli("run", str(path), "-w", "2", "-p", "x=1,2,4,5")
    assert wider.returncode == 0, wider.stderr
    assert "Indexing" not in wider.stderr
    p = progress(rconn, sweep_id(path, "x=1,2,4,5"))
    assert (p.done, p.cached, p.executions) == (40, 30, 10)


def test_a_purged_sweep_run_again_finds_its_results_cached(
    procs: Processes, tmp_path: Path, rconn: redis.Redis
) -> None:
    path = write_sweep(
        tmp_path, 'task: {call: "fixtures.tasks:hypot"}\nparams:\n  x: [1, 2]\n  y: [0, 1, 2]\n'
    )
    assert procs.cli("run", str(path), "-w", "1").returncode == 0
    sid = sweep_id(path)
    purged = procs.cli("purge", sid)
    assert purged.returncode == 0, purged.stderr
    # the task's only sweep had no key index entries: they are written before its spec goes
    assert "Indexing 6 results" in purged.stderr and f"sweep {sid} purged" in purged.stdout
    assert not rconn.exists(f"swarmrun:sweep:{sid}")
    again = procs.cli("run", str(path), "-w", "1")
    assert again.returncode == 0, again.stderr
    p = progress(rconn, sid)
    assert (p.done, p.cached, p.executions) == (6, 6, 0)


def test_sigkilled_worker_mid_chunk_loses_no_point(
    procs: Processes, tmp_path: Path, rconn: redis.Redis
) -> None:
    path = write_sweep(
        tmp_path,
        """
task: {call: "fixtures.tasks:nap"}
params:
  seconds: [0.04]
  i: {range: [0, 240]}
""",
    )
    sid = procs.cli("submit", str(path)).stdout.strip()
    workers = [procs.worker() for _ in range(3)]
    wait_until(lambda: progress(rconn, sid).done >= 30, 60, message="first results")
    victim = workers[0]
    key = wait_until(
        lambda: next(
            (
                k
                for k in rconn.smembers("rq:workers:swarmrun")
                if f".{victim.pid}-" in k.decode() and rconn.hget(k, "state") == b"busy"
            ),
            None,
        ),
        10,
        0.01,
        message="victim busy with a chunk",
    )
    assert key
    victim.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    wait_until(lambda: progress(rconn, sid).complete, 90, message="sweep complete after the kill")
    recovery = time.monotonic() - killed_at

    p = progress(rconn, sid)
    assert (p.done, p.ok, p.error) == (240, 240, 0)
    assert p.executions >= 240
    out = tmp_path / "out.jsonl"
    assert procs.cli("results", sid, "-o", str(out)).returncode == 0
    indices = [json.loads(line)["index"] for line in out.read_text().splitlines()]
    assert sorted(indices) == list(range(240))
    print(f"recovered in {recovery:.1f}s, duplicates executed={p.duplicates}")


def test_sigterm_finishes_the_current_chunk(procs: Processes, tmp_path: Path, rconn: redis.Redis) -> None:
    path = write_sweep(
        tmp_path,
        """
task: {call: "fixtures.tasks:nap"}
chunk: 4
params:
  seconds: [0.4]
  i: {range: [0, 40]}
""",
    )
    sid = procs.cli("submit", str(path)).stdout.strip()
    worker = procs.worker()
    wait_until(lambda: progress(rconn, sid).done >= 1, 30, 0.02, message="first point")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    p = progress(rconn, sid)
    assert p.done % 4 == 0 and 4 <= p.done < 40, p
    assert p.executions == p.done
    running, _ = SweepQueue(rconn, "swarmrun").chunk_counts(sid)
    assert running == 0


def test_retries_and_timeouts(procs: Processes, tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    flaky = write_sweep(
        tmp_path,
        f"""
task: {{call: "fixtures.tasks:flaky"}}
retries: 1
backoff: 0.01
params:
  x: {{range: [0, 6]}}
  marker_dir: ["{markers}"]
""",
        "flaky.yaml",
    )
    out = tmp_path / "flaky.csv"
    r = procs.cli("run", str(flaky), "-w", "2", "-o", str(out))
    assert r.returncode == 0, r.stderr
    rows = read_csv(out)
    assert {row["status"] for row in rows} == {"ok"} and {row["attempt"] for row in rows} == {"2"}

    slow = write_sweep(
        tmp_path,
        """
task: {call: "fixtures.tasks:nap"}
timeout: 0.5
params:
  seconds: [0.01, 3]
""",
        "slow.yaml",
    )
    out = tmp_path / "slow.csv"
    r = procs.cli("run", str(slow), "-w", "2", "-o", str(out))
    assert r.returncode == 1, r.stderr
    by_seconds = {row["seconds"]: row for row in read_csv(out)}
    assert by_seconds["0.01"]["status"] == "ok"
    assert by_seconds["3"]["status"] == "timeout"
    assert "timed out after 0.5 s" in by_seconds["3"]["error"]
    assert float(by_seconds["3"]["duration"]) < 2


def test_command_sweep_never_uses_a_shell(procs: Processes, tmp_path: Path) -> None:
    path = write_sweep(
        tmp_path,
        """
task:
  command: [python3, -c, "import json, sys; print(json.dumps({{'word': sys.argv[1], 'n': int(sys.argv[2])}}))",
            "{word}", "{n}"]
params:
  word: ["$(touch pwned)", "a;b", "`id`"]
  n: [1, 2]
""",
    )
    out = tmp_path / "out.jsonl"
    r = procs.cli("run", str(path), "-w", "2", "-o", str(out))
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 6
    for line in lines:
        assert line["value"] == {"word": line["params"]["word"], "n": line["params"]["n"]}
    assert not (tmp_path / "pwned").exists()


def test_command_failure_and_timeout_keep_output_tails(procs: Processes, tmp_path: Path) -> None:
    path = write_sweep(
        tmp_path,
        """
task:
  command: [python3, -c, "import sys, time; print('working'); time.sleep(float(sys.argv[1])); sys.exit(int(sys.argv[2]))",
            "{s}", "{code}"]
timeout: 1
params:
  s: [0, 5]
  code: [0, 3]
""",
    )
    out = tmp_path / "out.jsonl"
    r = procs.cli("run", str(path), "-w", "2", "-o", str(out))
    assert r.returncode == 1
    rows = {(x["params"]["s"], x["params"]["code"]): x for x in map(json.loads, out.read_text().splitlines())}
    assert rows[(0, 0)]["status"] == "ok" and rows[(0, 0)]["value"] == "working"
    assert rows[(0, 3)]["status"] == "error" and rows[(0, 3)]["exit_code"] == 3
    assert rows[(0, 3)]["stdout"].strip() == "working"
    assert rows[(5, 0)]["status"] == "timeout" and rows[(5, 3)]["status"] == "timeout"


def test_a_raising_point_is_recorded_and_the_sweep_goes_on(procs: Processes, tmp_path: Path) -> None:
    path = write_sweep(
        tmp_path,
        """
task: {call: "fixtures.tasks:fail_on"}
params:
  x: {range: [0, 10]}
""",
    )
    out = tmp_path / "out.csv"
    r = procs.cli("run", str(path), "-w", "2", "-o", str(out))
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    rows = {int(row["x"]): row for row in read_csv(out)}
    assert len(rows) == 10
    assert rows[3]["status"] == "error" and "ValueError: x=3 is bad" in rows[3]["error"]
    assert all(rows[x]["status"] == "ok" for x in rows if x != 3)


def test_cancel_stops_a_sweep_and_submit_resumes_it(
    procs: Processes, tmp_path: Path, rconn: redis.Redis
) -> None:
    path = write_sweep(
        tmp_path,
        """
task: {call: "fixtures.tasks:nap"}
params:
  seconds: [0.1]
  i: {range: [0, 60]}
""",
    )
    sid = procs.cli("submit", str(path)).stdout.strip()
    procs.worker()
    wait_until(lambda: progress(rconn, sid).done >= 3, 30, message="some results")
    r = procs.cli("cancel", sid[:8])
    assert r.returncode == 0, r.stderr
    time.sleep(1.5)
    stopped_at = progress(rconn, sid).done
    time.sleep(1.0)
    p = progress(rconn, sid)
    assert p.state == "cancelled" and p.done == stopped_at < 60
    assert procs.cli("submit", str(path)).stdout.strip() == sid
    wait_until(lambda: progress(rconn, sid).complete, 60, message="resumed sweep complete")
    assert progress(rconn, sid).ok == 60


def test_a_point_that_kills_its_worker_is_isolated(procs: Processes, tmp_path: Path) -> None:
    path = write_sweep(
        tmp_path,
        """
task: {call: "fixtures.tasks:crash_on"}
params:
  x: {range: [0, 12]}
  bad: [5]
""",
    )
    out = tmp_path / "out.csv"
    r = procs.cli("run", str(path), "-w", "2", "-o", str(out), timeout=180)
    assert r.returncode == 1, r.stderr
    rows = {int(row["x"]): row for row in read_csv(out)}
    assert len(rows) == 12
    assert rows[5]["status"] == "error" and "worker died" in rows[5]["error"]
    assert all(rows[x]["status"] == "ok" for x in rows if x != 5)


def test_retry_runs_failed_points_again(procs: Processes, tmp_path: Path, rconn: redis.Redis) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    path = write_sweep(
        tmp_path,
        f"""
task: {{call: "fixtures.tasks:flaky"}}
params:
  x: {{range: [0, 5]}}
  marker_dir: ["{markers}"]
""",
    )
    assert procs.cli("run", str(path), "-w", "2").returncode == 1
    sid = sweep_id(path)
    assert progress(rconn, sid).error == 5
    r = procs.cli("retry", sid[:10], "-w", "2")
    assert r.returncode == 0, r.stderr
    p = progress(rconn, sid)
    assert (p.done, p.ok, p.error, p.executions) == (5, 5, 0, 10)
