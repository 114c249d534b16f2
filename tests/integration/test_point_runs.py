"""`show` lists every execution of a point, `run` keeps a running count per error, a sweep resumed
from another sweep's results gets their files, and local workers move files straight into the
results directory: whole sweeps through the CLI with a real Redis and real worker processes."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import redis

from swarmrun.definition.sweep import point_key
from swarmrun.definition.sweepfile import load_sweep
from swarmrun.execution.outputstore import record_files
from swarmrun.execution.queue import SweepQueue
from swarmrun.execution.worker import ANNOUNCE_SLOW
from tests.conftest import ROOT, Processes, read_csv, wait_until, write_sweep

pytestmark = pytest.mark.timeout(180)


def expected_bin(index: int, size: int) -> bytes:
    return (hashlib.sha256(str(index).encode()).digest() * (size // 32 + 1))[:size]


@pytest.mark.parametrize("chunk", ["chunk: 1", "chunk: 8"], ids=["first-of-chunk", "mid-chunk"])
def test_show_lists_an_execution_killed_right_after_it_started(
    procs: Processes, tmp_path: Path, rconn: redis.Redis, chunk: str
) -> None:
    """SIGKILL as soon as the point has started (no wait for a heartbeat): `show` still lists that
    execution (worker, node, start; `running`, it never ended) beside the one that was recorded."""
    flag = tmp_path / "hung.pid"
    path = write_sweep(
        tmp_path,
        f"""
task: {{call: "fixtures.tasks:write_then_hang"}}
{chunk}
params:
  hang: [3]
  flag: ["{flag}"]
  i: {{range: [0, 6]}}
""",
    )
    sid = procs.cli("submit", str(path)).stdout.strip()
    victim = procs.worker()
    wait_until(flag.exists, 60, interval=0.005, message="point 3 started")
    if chunk == "chunk: 8":
        time.sleep(0.2)  # points 0-2 were fast: point 3 is announced by a thread looking every 20 ms
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    procs.worker()
    wait_until(lambda: SweepQueue(rconn, "swarmrun").progress(sid).complete, 90, message="sweep done")
    show = procs.cli("show", sid, "3")
    assert show.returncode == 0, show.stderr
    assert "executions (2):" in show.stdout, show.stdout
    lines = [line for line in show.stdout.splitlines() if " worker " in line]
    killed = [line for line in lines if " running " in line]
    assert len(killed) == 1 and "(recorded)" not in killed[0], show.stdout
    assert sum("(recorded)" in line for line in lines) == 1
    # Points run by the second worker only: announced or not, none is left `running`. (Points 0-2
    # of the killed worker may be: they ended, but their results died with it, unflushed.)
    for i in (4, 5):
        other = procs.cli("show", sid, str(i))
        assert " running " not in other.stdout, other.stdout


def test_fast_points_are_not_announced_one_in_twenty_milliseconds(
    procs: Processes, tmp_path: Path, rconn: redis.Redis
) -> None:
    """The announcing thread, and the heartbeat (every second here), store a running execution
    only when it has run for a look's interval: 2-ms points are over before that, and one look in
    20 ms would otherwise store a `running` entry (and then its end) for every tenth point. Only
    the chunk's first is announced. The chunk runs past the first heartbeat."""
    path = write_sweep(
        tmp_path,
        """
task: {call: "fixtures.tasks:nap"}
chunk: 1000
params:
  seconds: [0.002]
  i: {range: [0, 1000]}
""",
    )
    sid = procs.cli("submit", str(path)).stdout.strip()
    procs.worker()
    wait_until(lambda: SweepQueue(rconn, "swarmrun").progress(sid).complete, 90, message="sweep done")
    out = tmp_path / "out.csv"
    assert procs.cli("results", sid, "-o", str(out)).returncode == 0
    rows = sorted(read_csv(out), key=lambda r: int(r["index"]))
    # A point after one that took 5 ms or more (a busy machine's pause) is announced at once, by
    # design; every other announced point would be the thread's or the heartbeat's doing.
    after_slow = sum(float(r["duration"]) >= ANNOUNCE_SLOW for r in rows[:-1])
    assert rconn.hlen(f"swarmrun:sweep:{sid}:runs") <= 1 + after_slow, after_slow


def test_run_prints_the_running_count_of_each_error_group_as_it_grows(
    procs: Processes, tmp_path: Path
) -> None:
    (tmp_path / "slowfail.py").write_text(
        "import time\n"
        "def run(x):\n"
        "    time.sleep(0.05)\n"
        "    if x % 2:\n"
        "        raise RuntimeError('odd')\n"
        "    if x % 10 == 4:\n"
        "        raise KeyError('four')\n"
        "    return x\n"
    )
    path = write_sweep(tmp_path, 'task: {call: "slowfail:run"}\nchunk: 4\nparams: {x: {range: [0, 160]}}\n')
    began = time.monotonic()
    r = procs.cli("run", str(path), "-w", "1")
    took = time.monotonic() - began
    assert r.returncode == 1
    err = r.stderr.splitlines()
    assert len([line for line in err if line.startswith("error at point")]) == 2, r.stderr
    odd = [
        int(line.split()[3]) for line in err if line.startswith("errors so far:") and "RuntimeError" in line
    ]
    assert len(odd) >= 2, r.stderr  # the count is printed again as it grows ...
    assert odd == sorted(odd) and len(set(odd)) == len(odd) and odd[-1] <= 80
    assert len([line for line in err if line.startswith("errors so far:")]) <= 2 * (
        took / 2 + 1
    )  # ... not flooding
    assert "  80 x RuntimeError: odd" in r.stderr and "  16 x KeyError: 'four'" in r.stderr


PROGRAM = ROOT / "tests" / "fixtures" / "write_outputs.py"


def files_sweep(tmp_path: Path, points: int) -> Path:
    return write_sweep(
        tmp_path,
        f"""
name: files
task:
  command: [python3, "{PROGRAM}", "{{outdir}}", "{{index}}", "3000"]
outputs: ["*.bin", "notes/*.txt"]
params:
  n: {{range: [0, {points}]}}
""",
    )


def assert_point_files(points: Path, count: int) -> None:
    for i in range(count):
        assert (points / str(i) / "data.bin").read_bytes() == expected_bin(i, 3000), i
        assert (points / str(i) / "notes" / "summary.txt").read_text() == f"index={i}\n"


def test_a_resumed_sweep_gets_the_files_of_points_cached_from_another_sweep(
    procs: Processes, tmp_path: Path
) -> None:
    path = files_sweep(tmp_path, 6)
    first = procs.cli("run", str(path), "-w", "2", "-o", str(tmp_path / "res" / "a.csv"))
    assert first.returncode == 0, first.stderr
    # The same task over more points: another sweep, whose first 6 points are cached from the first.
    more = procs.cli(
        "run", str(path), "-w", "2", "-p", "n=range(0,10)", "-o", str(tmp_path / "res" / "b.csv")
    )
    assert more.returncode == 0, more.stderr
    rows = read_csv(tmp_path / "res" / "b.csv")
    assert sum(row["cached"] == "True" for row in rows) == 6, rows
    assert_point_files(tmp_path / "res" / "b" / "points", 10)
    assert "outputs:" not in more.stderr
    # Fetched once: again, nothing is copied.
    again = procs.cli(
        "run", str(path), "-w", "2", "-p", "n=range(0,10)", "-o", str(tmp_path / "res" / "b.csv")
    )
    assert again.returncode == 0 and "Output files: 0 fetched" in again.stderr, again.stderr


def test_cached_files_come_from_the_other_sweep_s_pieces_or_are_said_unavailable(
    procs: Processes, tmp_path: Path, rconn: redis.Redis
) -> None:
    path = files_sweep(tmp_path, 4)
    sid = procs.cli("submit", str(path)).stdout.strip()
    assert procs.worker("--burst").wait(timeout=120) == 0  # its files wait in Redis, not fetched
    more = procs.cli("run", str(path), "-w", "1", "-p", "n=range(0,6)", "-o", str(tmp_path / "r" / "m.csv"))
    assert more.returncode == 0, more.stderr
    assert_point_files(tmp_path / "r" / "m" / "points", 6)
    # The pieces stay the first sweep's own: it still fetches them.
    assert rconn.scard(f"swarmrun:sweep:{sid}:outq") == 4
    own = tmp_path / "own"
    got = procs.cli("results", sid, "-o", str(tmp_path / "own.csv"), "--outputs", str(own))
    assert got.returncode == 0 and "8 output files" in got.stderr, got.stderr
    assert_point_files(own / "points", 4)
    # Files that went to a directory this machine no longer has: one line each, the sweep goes on.
    shutil.rmtree(own)
    gone = procs.cli("run", str(path), "-w", "1", "-p", "n=range(0,5)", "-o", str(tmp_path / "g" / "g.csv"))
    assert gone.returncode == 0, gone.stderr
    said = [line for line in gone.stderr.splitlines() if line.startswith("outputs: point ")]
    assert len(said) == 4, gone.stderr
    assert f"is from sweep {sid[:12]}" in said[0] and str(own) in said[0] and "not on this machine" in said[0]
    assert (tmp_path / "g" / "g" / "points" / "4" / "data.bin").read_bytes() == expected_bin(4, 3000)


def test_local_workers_move_files_into_place_and_the_manager_settles_what_a_dead_worker_left(
    procs: Processes, tmp_path: Path, rconn: redis.Redis
) -> None:
    path = files_sweep(tmp_path, 6)
    r = procs.cli("run", str(path), "-w", "2", "-o", str(tmp_path / "res" / "f.csv"))
    assert r.returncode == 0, r.stderr
    dest = tmp_path / "res" / "f"
    assert_point_files(dest / "points", 6)
    assert (
        "Output files: 0 fetched into" in r.stderr
        and ", 12 moved there by workers on this file system" in r.stderr
    )
    sid = load_sweep(path).id
    assert rconn.scard(f"swarmrun:sweep:{sid}:outq") == 0 and not rconn.exists(
        f"swarmrun:sweep:{sid}:outshare"
    )
    assert not (dest / ".staging").exists()  # nothing left in flight: removed at the end
    (dest / ".staging").mkdir()
    # As if workers died after staging: point 0's winner before its promotion, and an execution of
    # point 1 that lost (or was killed). The manager promotes the first and removes the second.
    raw = SweepQueue(rconn, "swarmrun").record_values(
        sid, load_sweep(path).task.key, [0], [point_key({"n": 0})]
    )[0]
    token = record_files(raw)[0]
    assert token
    os.rename(dest / "points" / "0", dest / ".staging" / f"0.{token}")
    loser = dest / ".staging" / "1.deadbeef"
    loser.mkdir()
    (loser / "data.bin").write_bytes(b"partial")
    for staged in (dest / ".staging").iterdir():  # left a while ago (younger ones may be in flight)
        os.utime(staged, (time.time() - 60, time.time() - 60))
    got = procs.cli("results", sid, "-o", str(tmp_path / "x.csv"), "--outputs", str(dest))
    assert got.returncode == 0, got.stderr
    assert_point_files(dest / "points", 6)
    assert list((dest / ".staging").iterdir()) == []


def test_retry_fetches_the_files_of_the_points_it_ran_again(procs: Processes, tmp_path: Path) -> None:
    flag = tmp_path / "failed-once"
    (tmp_path / "once.py").write_text(
        "import os\n"
        "from pathlib import Path\n"
        "def run(i, flag):\n"
        "    if i == 2 and not os.path.exists(flag):\n"
        "        Path(flag).write_text('x')\n"
        "        raise RuntimeError('first time')\n"
        "    (Path(os.environ['SWARMRUN_POINT_DIR']) / 'out.txt').write_text(f'point {i}')\n"
        "    return i\n"
    )
    path = write_sweep(
        tmp_path,
        f'name: once\ntask: {{call: "once:run"}}\noutputs: ["*.txt"]\n'
        f'params: {{flag: ["{flag}"], i: [0, 1, 2]}}\n',
    )
    out = tmp_path / "res" / "once.csv"
    first = procs.cli("run", str(path), "-w", "1", "-o", str(out))
    assert first.returncode == 1 and not (tmp_path / "res" / "once" / "points" / "2").exists()
    again = procs.cli("retry", "-w", "1", "-o", str(out))
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "res" / "once" / "points" / "2" / "out.txt").read_text() == "point 2"
