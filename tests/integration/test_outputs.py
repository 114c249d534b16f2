"""Output files, per-point logs, `show`, `logs --point`, errors as they happen, `--fail-fast`:
whole sweeps through the CLI with a real Redis and real worker processes."""

from __future__ import annotations

import hashlib
import json
import signal
from pathlib import Path

import pytest
import redis

from swarmrun.definition.sweepfile import load_sweep
from swarmrun.execution.queue import SweepQueue
from tests.conftest import ROOT, Processes, read_csv, wait_until, write_sweep

pytestmark = pytest.mark.timeout(180)
PROGRAM = ROOT / "tests" / "fixtures" / "write_outputs.py"


def expected_bin(index: int, size: int) -> bytes:
    return (hashlib.sha256(str(index).encode()).digest() * (size // 32 + 1))[:size]


def outputs_sweep(
    tmp_path: Path, *, points: int = 12, size: int = 3000, extra: str = "", fail: int = -1
) -> Path:
    return write_sweep(
        tmp_path,
        f"""
name: files
task:
  command: [python3, "{PROGRAM}", "{{outdir}}", "{{index}}", "{size}", "{fail}"]
outputs: ["*.bin", "notes/*.txt"]
{extra}
params:
  n: {{range: [0, {points}]}}
""",
    )


def test_every_file_arrives_with_its_sha256_and_every_point_has_its_log(
    procs: Processes, tmp_path: Path, rconn: redis.Redis
) -> None:
    path = outputs_sweep(tmp_path)
    out = tmp_path / "res" / "files.csv"
    r = procs.cli("run", str(path), "-w", "2", "-o", str(out))
    assert r.returncode == 0, r.stderr
    sid = load_sweep(path).id
    for i in range(12):
        point = tmp_path / "res" / "files" / "points" / str(i)
        assert (point / "data.bin").read_bytes() == expected_bin(i, 3000)
        assert (point / "notes" / "summary.txt").read_text() == f"index={i}\n"
        assert not (point / "ignored.tmp").exists()
        assert not [p for p in point.rglob(".*part*")]
    rows = read_csv(out)
    assert all(row["files"] == "data.bin notes/summary.txt" for row in rows)
    # The record lists name, bytes and sha256; the pieces left Redis once fetched.
    assert not list(rconn.scan_iter(match=f"swarmrun:sweep:{sid}:out:*"))
    assert rconn.scard(f"swarmrun:sweep:{sid}:outq") == 0
    show = procs.cli("show", sid[:8], "5")
    assert show.returncode == 0, show.stderr
    digest = hashlib.sha256(expected_bin(5, 3000)).hexdigest()
    assert f"data.bin  3000 bytes  sha256 {digest}" in show.stdout
    # ... and where the files are on this machine
    assert f"output files (2), in {(tmp_path / 'res' / 'files').resolve()}/points/5/:" in show.stdout
    # `results --outputs` fetches only files still in Redis; it says where the others are
    again = procs.cli("results", sid, "-o", str(tmp_path / "again.csv"), "--outputs", str(tmp_path / "other"))
    assert again.returncode == 0, again.stderr
    assert "0 output files (0 bytes) fetched into" in again.stderr
    assert (
        f"Output files fetched earlier are in {(tmp_path / 'res' / 'files').resolve()}/points/"
        in again.stderr
    )
    assert "point 5: starting" in show.stdout and "point 5: wrote 3000 bytes" in show.stdout
    assert "executions (1):" in show.stdout and "(recorded)" in show.stdout
    for i in range(12):
        log = procs.cli("logs", "--point", str(i), "--sweep", sid)
        assert log.returncode == 0, log.stderr
        assert f"point {i}: starting" in log.stdout and f"point {i}: wrote 3000 bytes" in log.stdout

    # A rerun fetches nothing twice and leaves the files as they are.
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "res" / "files").rglob("*") if p.is_file()}
    again = procs.cli("run", str(path), "-w", "2", "-o", str(out))
    assert again.returncode == 0, again.stderr
    assert "Output files: 0 fetched" in again.stderr
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "res" / "files").rglob("*") if p.is_file()}
    assert before == after


def test_a_file_over_the_cap_fails_only_that_point(procs: Processes, tmp_path: Path) -> None:
    program = tmp_path / "big.py"
    program.write_text(
        "import os, sys\n"
        "n = int(sys.argv[1])\n"
        "out = os.path.join(os.environ['SWARMRUN_POINT_DIR'], 'out.bin')\n"
        "open(out, 'wb').write(b'x' * (5000 if n == 2 else 100))\n"
    )
    path = write_sweep(
        tmp_path,
        f"""
task: {{command: [python3, "{program}", "{{n}}"]}}
outputs: ["*.bin"]
max_output_bytes: 4KiB
params: {{n: [0, 1, 2, 3]}}
""",
    )
    out = tmp_path / "r.csv"
    r = procs.cli("run", str(path), "-w", "1", "-o", str(out))
    assert r.returncode == 1
    rows = {int(row["n"]): row for row in read_csv(out)}
    assert [rows[n]["status"] for n in range(4)] == ["ok", "ok", "error", "ok"]
    assert rows[2]["error"] == "output file out.bin is 5000 bytes, over max_output_bytes (4096)"
    assert (tmp_path / "r" / "points" / "3" / "out.bin").stat().st_size == 100
    assert not (tmp_path / "r" / "points" / "2").exists()


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "a/../../b"])
def test_an_output_glob_escaping_the_point_dir_is_one_line_exit_3(
    procs: Processes, tmp_path: Path, bad: str
) -> None:
    path = write_sweep(
        tmp_path, f'task: {{call: "fixtures.tasks:square"}}\noutputs: ["{bad}"]\nparams: {{x: [1]}}\n'
    )
    r = procs.cli("run", str(path), "-w", "1")
    assert r.returncode == 3
    assert len(r.stderr.strip().splitlines()) == 1 and "outputs[0]" in r.stderr


def test_call_task_prints_and_logging_are_kept_and_show_has_the_traceback(
    procs: Processes, tmp_path: Path
) -> None:
    (tmp_path / "chatty.py").write_text(
        "import logging, os\n"
        "def run(x):\n"
        "    print(f'hello from {x}')\n"
        "    logging.getLogger('sim').warning('careful with %s', x)\n"
        "    open(os.path.join(os.environ['SWARMRUN_POINT_DIR'], 'v.txt'), 'w').write(str(x))\n"
        "    if x == 2:\n"
        "        raise ValueError('x is two')\n"
        "    return x\n"
    )
    path = write_sweep(tmp_path, 'task: {call: "chatty:run"}\noutputs: ["*.txt"]\nparams: {x: [1, 2, 3]}\n')
    r = procs.cli("run", str(path), "-w", "1", "-o", str(tmp_path / "c.csv"))
    assert r.returncode == 1
    assert "error at point 1 (1 so far): ValueError: x is two" in r.stderr
    show = procs.cli("show", "1")
    assert "status: error" in show.stdout and "ValueError: x is two" in show.stdout
    assert "traceback:" in show.stdout and "chatty.py" in show.stdout
    assert "hello from 2" in show.stdout and "careful with 2" in show.stdout
    log = procs.cli("logs", "--point", "0")
    assert "hello from 1" in log.stdout and "WARNING sim: careful with 1" in log.stdout
    assert (tmp_path / "c" / "points" / "2" / "v.txt").read_text() == "3"


def test_errors_grouped_as_they_happen_in_run_and_status(procs: Processes, tmp_path: Path) -> None:
    (tmp_path / "flaky.py").write_text(
        "def run(x):\n"
        "    if x % 3 == 0:\n"
        "        raise RuntimeError('divisible by three')\n"
        "    if x % 5 == 0:\n"
        "        raise KeyError('five')\n"
        "    return x\n"
    )
    path = write_sweep(tmp_path, 'task: {call: "flaky:run"}\nparams: {x: {range: [1, 31]}}\n')
    r = procs.cli("run", str(path), "-w", "2")
    assert r.returncode == 1
    notes = [line for line in r.stderr.splitlines() if line.startswith("error at point")]
    assert len(notes) == 2, r.stderr  # the first occurrence of each distinct error, once
    assert any("RuntimeError: divisible by three" in n for n in notes)
    assert "  10 x RuntimeError: divisible by three" in r.stderr  # 3, 6, ..., 30
    assert "  4 x KeyError: 'five'" in r.stderr  # 5, 10, 20, 25 (15 and 30 are divisible by 3)
    quiet = procs.cli("show", "0")  # an ok point that printed nothing: its record is its execution
    assert "executions (1):" in quiet.stdout and "(recorded)" in quiet.stdout, quiet.stdout
    assert "log: none kept" in quiet.stdout
    failed = procs.cli("show", "2")  # x = 3
    assert "executions (1):" in failed.stdout and "error " in failed.stdout, failed.stdout
    assert "(recorded)" in failed.stdout
    status = procs.cli("status")
    assert "failures by error (14 points):" in status.stdout
    assert "    10 x RuntimeError: divisible by three" in status.stdout
    assert "     4 x KeyError: 'five'" in status.stdout


def test_fail_fast_cancels_after_n_failed_points(
    procs: Processes, tmp_path: Path, rconn: redis.Redis
) -> None:
    (tmp_path / "slowfail.py").write_text(
        "import time\n"
        "def run(x):\n"
        "    time.sleep(0.05)\n"
        "    if x >= 5:\n"
        "        raise RuntimeError(f'bad {x}')\n"
        "    return x\n"
    )
    path = write_sweep(tmp_path, 'task: {call: "slowfail:run"}\nchunk: 1\nparams: {x: {range: [0, 400]}}\n')
    r = procs.cli("run", str(path), "-w", "1", "--fail-fast", "2")
    assert r.returncode == 1
    assert "--fail-fast: cancelled the sweep after" in r.stderr and "point 5: RuntimeError: bad 5" in r.stderr
    p = SweepQueue(rconn, "swarmrun").progress(load_sweep(path).id)
    assert p.state == "cancelled" and p.done < 100
    plain = procs.cli("run", str(path), "-w", "1", "--fail-fast")  # resumes; N defaults to 1
    assert plain.returncode == 1 and "--fail-fast: cancelled" in plain.stderr


def test_results_outputs_fetches_files_on_demand(
    procs: Processes, tmp_path: Path, rconn: redis.Redis
) -> None:
    path = outputs_sweep(tmp_path, points=4, size=1_200_000)  # files of several pieces
    sub = procs.cli("submit", str(path))
    assert sub.returncode == 0, sub.stderr
    sid = sub.stdout.strip()
    w = procs.worker("--burst")
    assert w.wait(timeout=120) == 0
    assert rconn.scard(f"swarmrun:sweep:{sid}:outq") == 4
    assert max(rconn.strlen(k) for k in rconn.scan_iter(match=f"swarmrun:sweep:{sid}:out:*")) <= 512 * 1024
    dest = tmp_path / "fetched"
    r = procs.cli("results", sid, "-o", str(tmp_path / "x.jsonl"), "--outputs", str(dest))
    assert r.returncode == 0, r.stderr
    assert "8 output files" in r.stderr
    for i in range(4):
        assert (dest / "points" / str(i) / "data.bin").read_bytes() == expected_bin(i, 1_200_000)
    lines = [json.loads(line) for line in (tmp_path / "x.jsonl").read_text().splitlines()]
    assert lines[0]["files"][0]["name"] == "data.bin" and lines[0]["files"][0]["bytes"] == 1_200_000
    assert not list(rconn.scan_iter(match=f"swarmrun:sweep:{sid}:out:*"))


def test_shared_outputs_dir_moves_files_and_only_names_travel(
    procs: Processes, tmp_path: Path, rconn: redis.Redis
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    path = outputs_sweep(tmp_path, points=6, extra=f"outputs_dir: {shared}")
    r = procs.cli("run", str(path), "-w", "2", "-o", str(tmp_path / "s.csv"))
    assert r.returncode == 0, r.stderr
    sid = load_sweep(path).id
    base = shared / f"files-{sid[:8]}"
    for i in range(6):
        assert (base / "points" / str(i) / "data.bin").read_bytes() == expected_bin(i, 3000)
    assert list((base / ".staging").iterdir()) == []
    assert not list(rconn.scan_iter(match=f"swarmrun:sweep:{sid}:out:*"))
    assert rconn.scard(f"swarmrun:sweep:{sid}:outq") == 0
    assert all(row["files"] == "data.bin notes/summary.txt" for row in read_csv(tmp_path / "s.csv"))


def test_a_missing_outputs_dir_is_one_line_exit_3(procs: Processes, tmp_path: Path) -> None:
    path = outputs_sweep(tmp_path, points=2, extra=f"outputs_dir: {tmp_path / 'nowhere'}")
    r = procs.cli("run", str(path), "-w", "1")
    assert r.returncode == 3
    assert r.stderr.strip().splitlines() == [
        f"Error: sweep.yaml: outputs_dir: {tmp_path / 'nowhere'} is not a directory here"
    ]


@pytest.mark.timeout(300)
def test_redis_memory_is_back_near_the_start_after_1000_points_of_100_kib(
    procs: Processes, tmp_path: Path, rconn: redis.Redis
) -> None:
    path = write_sweep(
        tmp_path,
        """
task: {call: "fixtures.tasks:write_files"}
outputs: ["*.bin"]
logs: none
params:
  size: [102400]
  i: {range: [0, 1000]}
""",
    )
    rconn.execute_command("MEMORY", "PURGE")
    before = int(rconn.info("memory")["used_memory"])
    peak = [before]
    # submit + workers: the files travel through Redis, as from other machines (`run` with local
    # workers moves them on the shared disk instead: tests/integration/test_point_runs.py)
    sid = procs.cli("submit", str(path)).stdout.strip()
    workers = [procs.worker("--burst") for _ in range(2)]
    assert all(w.wait(timeout=200) == 0 for w in workers)
    fetch = ("results", sid, "-o", str(tmp_path / "m.csv"), "--outputs", str(tmp_path / "m"))
    r = procs.cli(*fetch, timeout=200)
    assert r.returncode == 0, r.stderr
    rconn.execute_command("MEMORY", "PURGE")
    after = int(rconn.info("memory")["used_memory"])
    peak.append(int(rconn.info("memory")["used_memory_peak"]))
    files = list((tmp_path / "m" / "points").glob("*/data.bin"))
    assert len(files) == 1000 and all(f.stat().st_size == 102400 for f in files)
    print(f"Redis used_memory before {before / 2**20:.1f} MiB, after {after / 2**20:.1f} MiB")
    assert after - before < 3 * 2**20  # 100 MiB went through; pieces did not linger


def test_a_killed_execution_leaves_no_partial_file_and_files_come_from_the_winner(
    procs: Processes, tmp_path: Path, rconn: redis.Redis
) -> None:
    flag = tmp_path / "hung.pid"
    path = write_sweep(
        tmp_path,
        f"""
task: {{call: "fixtures.tasks:write_then_hang"}}
outputs: ["*.bin", "*.txt"]
chunk: 1
params:
  hang: [3]
  flag: ["{flag}"]
  i: {{range: [0, 8]}}
""",
    )
    sid = procs.cli("submit", str(path)).stdout.strip()
    victim = procs.worker()
    wait_until(flag.exists, 60, message="point 3 hanging")
    # The heartbeat announces the running execution, so `show` lists it after the kill.
    wait_until(lambda: rconn.hget(f"swarmrun:sweep:{sid}:runs", "3"), 10, message="execution announced")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    hung_pid = int(flag.read_text())
    procs.worker()
    wait_until(lambda: SweepQueue(rconn, "swarmrun").progress(sid).complete, 90, message="sweep done")
    dest = tmp_path / "got"
    r = procs.cli("results", sid, "-o", str(tmp_path / "k.csv"), "--outputs", str(dest))
    assert r.returncode == 0, r.stderr
    assert (dest / "points" / "3" / "data.bin").exists(), r.stderr + procs.cli("show", sid, "3").stdout
    data = (dest / "points" / "3" / "data.bin").read_bytes()
    assert data == expected_bin(3, 2000)  # never the killed execution's "partial"
    assert int((dest / "points" / "3" / "pid.txt").read_text()) != hung_pid
    assert not [p for p in dest.rglob("*") if ".part" in p.name]
    show = procs.cli("show", sid, "3")
    assert "executions (2):" in show.stdout and "(recorded)" in show.stdout, show.stdout
    assert " running " in show.stdout  # the killed one never finished


def test_a_duplicate_execution_s_files_are_discarded(
    procs: Processes, tmp_path: Path, rconn: redis.Redis
) -> None:
    """A worker frozen past its heartbeat: its chunk runs again elsewhere and wins; the frozen one
    wakes up, finishes, uploads its files and loses; they never reach the results."""
    flag = tmp_path / "slow.pid"
    (tmp_path / "slow.py").write_text(
        "import os, time\n"
        "from pathlib import Path\n"
        "def run(i, flag):\n"
        "    point = Path(os.environ['SWARMRUN_POINT_DIR'])\n"
        "    if i == 2 and not os.path.exists(flag):\n"
        "        Path(flag).write_text(str(os.getpid()))\n"
        "        time.sleep(2)\n"
        "    (point / 'who.txt').write_text(str(os.getpid()))\n"
        "    return os.getpid()\n"
    )
    path = write_sweep(
        tmp_path,
        f'task: {{call: "slow:run"}}\noutputs: ["*.txt"]\nchunk: 1\n'
        f'params: {{flag: ["{flag}"], i: {{range: [0, 4]}}}}\n',
    )
    sid = procs.cli("submit", str(path)).stdout.strip()
    frozen = procs.worker()
    wait_until(flag.exists, 60, message="point 2 running")
    frozen.send_signal(signal.SIGSTOP)
    procs.worker()
    queue = SweepQueue(rconn, "swarmrun")
    wait_until(lambda: queue.progress(sid).complete, 90, message="point 2 re-run elsewhere")
    frozen.send_signal(signal.SIGCONT)
    wait_until(
        lambda: queue.progress(sid).duplicates >= 1, 60, message="the frozen execution records a duplicate"
    )
    dest = tmp_path / "dup"
    assert procs.cli("results", sid, "-o", str(tmp_path / "d.csv"), "--outputs", str(dest)).returncode == 0
    assert int((dest / "points" / "2" / "who.txt").read_text()) != frozen.pid
    wait_until(
        lambda: not list(rconn.scan_iter(match=f"swarmrun:sweep:{sid}:out:*")), 10, message="no pieces"
    )
    assert rconn.scard(f"swarmrun:sweep:{sid}:outq") == 0


def test_the_outputs_example_runs_end_to_end(procs: Processes, tmp_path: Path) -> None:
    example = ROOT / "examples" / "outputs" / "sweep.yaml"
    r = procs.cli("run", str(example), "-w", "2", "-o", str(tmp_path / "logistic.csv"))
    assert r.returncode == 0, r.stderr
    rows = read_csv(tmp_path / "logistic.csv")
    assert len(rows) == 16 and all(row["files"] == "plots/trajectory.svg trajectory.csv" for row in rows)
    chaotic = next(row for row in rows if row["r"] == "3.95")
    assert float(chaotic["spread"]) > 0.5
    for i in range(16):
        point = tmp_path / "logistic" / "points" / str(i)
        assert (point / "trajectory.csv").read_text().startswith("step,x\n0,")
        assert (point / "plots" / "trajectory.svg").read_text().startswith("<svg")


def test_the_per_sweep_cap_fails_the_points_past_it(procs: Processes, tmp_path: Path) -> None:
    path = outputs_sweep(tmp_path, points=6, extra="max_sweep_output_bytes: 10000")
    r = procs.cli("run", str(path), "-w", "1", "-o", str(tmp_path / "cap.csv"))
    assert r.returncode == 1
    rows = read_csv(tmp_path / "cap.csv")
    ok = [row for row in rows if row["status"] == "ok"]
    assert len(ok) == 3  # 3 x (3000 + 8 bytes) fit in 10,000 bytes, a fourth would not
    failed = [row for row in rows if row["status"] == "error"]
    assert all("over max_sweep_output_bytes (10000)" in row["error"] for row in failed) and len(failed) == 3
