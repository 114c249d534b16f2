"""`swarmrun run` with local workers leaves nothing behind: when it returns, every worker it started
has exited (an idle worker's stop is fast, but never skipped), and the embedded Redis with them.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.conftest import read_csv, run_cli, swarmrun_env, write_sweep


def _alive_with_home(home: Path) -> list[tuple[int, str]]:
    """Live (not zombie) processes whose environment names `home` as SWARMRUN_HOME."""
    needle = f"SWARMRUN_HOME={home}".encode()
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            title = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue
        if state != "Z" and needle in environ:
            found.append((int(proc.name), title))
    return found


def test_no_worker_outlives_a_run_on_the_embedded_redis(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = swarmrun_env(None, home)
    for k in range(3):  # a 1-point sweep: one worker gets the chunk, the other stops idle
        sweep = write_sweep(
            tmp_path,
            f'name: one\ntask: {{call: "fixtures.tasks:hypot"}}\nparams:\n  x: [{k}]\n  y: [4]\n',
            name=f"one-{k}.yaml",
        )
        done = run_cli(
            ["run", str(sweep), "-w", "2", "-o", str(tmp_path / f"o{k}.csv")],
            env=env,
            cwd=tmp_path,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert _alive_with_home(home) == [], "a process of the run outlived it"
        assert [r["status"] for r in read_csv(tmp_path / f"o{k}.csv")] == ["ok"]
    logs = list((home / "logs").rglob("worker-*.log"))
    assert len(logs) == 6
    assert not [p for p in logs if "Traceback" in p.read_text()], "a worker failed while stopping"


def test_a_stopping_worker_still_joins_task_threads_and_runs_atexit(tmp_path: Path) -> None:
    """`exit_now` skips only the interpreter's module teardown, not what a task relies on."""
    code = textwrap.dedent(
        f"""
        import atexit, threading, time
        from pathlib import Path
        from swarmrun.cli.common import exit_now
        out = Path({str(tmp_path)!r})
        atexit.register(lambda: (out / "atexit").write_text("ran"))
        def late():
            time.sleep(0.3)
            (out / "thread").write_text("done")
        threading.Thread(target=late).start()
        print("flushed", end="")
        exit_now(3)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    assert done.stdout == "flushed"
    assert (tmp_path / "atexit").read_text() == "ran"
    assert (tmp_path / "thread").read_text() == "done"


def test_exit_now_ends_an_executor_left_open() -> None:
    """A task (or a library) may leave a ThreadPoolExecutor open: its threads are not daemons and
    wait for work until the interpreter's threading exit hook tells them to stop. `exit_now` runs
    that hook as the interpreter's exit would; joining the threads alone waited forever."""
    code = textwrap.dedent(
        """
        import concurrent.futures
        from swarmrun.cli.common import exit_now
        pool = concurrent.futures.ThreadPoolExecutor(2)
        print(pool.submit(lambda: 42).result(), end="")
        exit_now(5)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (5, "42"), done.stderr


def test_stopping_idle_workers_never_waits_on_their_pubsub_thread(tmp_path: Path) -> None:
    """A 1-point `run -w 2` stops a worker that has just started: it exits at once, every time.

    redis-py 8.2's `PubSubWorkerThread.stop()` waits for the thread, and RQ's thread blocks up to
    60 s reading the worker's channel; unsubscribing before stopping it let the thread go back to
    that read, so about every other such run took a minute more (seen on a quiet machine)."""
    home = tmp_path / "home"
    env = swarmrun_env(None, home)
    for k in range(6):
        sweep = write_sweep(
            tmp_path, f'name: one\ntask: {{call: "fixtures.tasks:hypot"}}\nparams:\n  x: [{k}]\n  y: [4]\n'
        )
        t0 = time.monotonic()
        done = run_cli(["run", str(sweep), "-w", "2", "-q"], env=env, cwd=tmp_path, timeout=180)
        took = time.monotonic() - t0
        assert done.returncode == 0, done.stderr
        assert took < 20, f"run {k + 1} of a 1-point sweep took {took:.0f} s"
