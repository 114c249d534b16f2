"""`swarmrun run` forks its first local workers (no interpreter start, no imports): each is a
worker as if started on its own, and none shares anything of the user's task with the manager.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import redis

from swarmrun.backends.forked import ForkedWorker
from swarmrun.backends.local import LocalBackend
from swarmrun.settings import Settings
from tests.conftest import read_csv, run_cli, swarmrun_env, wait_until, write_sweep
from tests.integration.test_local_workers_stop import _alive_with_home

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="workers are forked on Linux only")

TASK = textwrap.dedent(
    """
    import gc, json, os, random
    IMPORTED_IN = os.getpid()
    DRAW = random.random()  # at import: a worker that imported us itself has its own

    def probe(i):
        cmdline = open(f"/proc/{os.getpid()}/cmdline", "rb").read().replace(b"\\0", b" ").decode()
        return {
            "fresh": IMPORTED_IN == os.getpid(),
            "pid": os.getpid(),
            "own_session": os.getsid(0) == os.getpid(),
            "cwd": os.getcwd(),
            "parent": os.environ.get("SWARMRUN_PARENT_PID"),
            "forked": " worker" not in cmdline,
            "comm": open(f"/proc/{os.getpid()}/comm").read().strip(),
            "draw": DRAW,
            "frozen": gc.get_freeze_count(),
        }
    """
)


def _probe_sweep(directory: Path, points: int) -> Path:
    (directory / "probe.py").write_text(TASK)
    return write_sweep(
        directory,
        f'name: probe\ntask: {{call: "probe:probe"}}\nparams:\n  i: {{range: [0, {points}]}}\n',
    )


def _values(csv: Path) -> list[dict[str, object]]:
    """The probe's dict of each point (exported as columns), `True`/`False` as booleans."""
    rows = read_csv(csv)
    assert rows and [r["status"] for r in rows] == ["ok"] * len(rows)
    flags = ("fresh", "own_session", "forked")
    return [{k: (v == "True" if k in flags else v) for k, v in r.items()} for r in rows]


def test_run_forks_workers_that_import_the_task_themselves(tmp_path: Path) -> None:
    """The manager imports the task to check it; the workers are forked before that, so each
    imports it afresh (its own module state and random draws), in its own session and in the
    sweep file's directory, told the manager's pid."""
    work = tmp_path / "work"
    work.mkdir()
    sweep = _probe_sweep(work, 200)
    home = tmp_path / "home"
    done = run_cli(
        ["run", str(sweep), "-w", "2", "-o", str(tmp_path / "out.csv")],
        env=swarmrun_env(None, home),
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    values = _values(tmp_path / "out.csv")
    assert all(v["fresh"] for v in values), "a worker ran with the manager's import of the task"
    assert all(v["own_session"] for v in values)
    assert {v["cwd"] for v in values} == {str(work)}
    assert all(v["forked"] for v in values), "the workers were started as new interpreters"
    assert {v["comm"] for v in values} == {"swarmrun-worker"}  # as `ps`, `top` and `pgrep` name them
    # What the worker inherited is frozen: its collections neither scan it nor copy its pages.
    assert all(int(str(v["frozen"])) > 10_000 for v in values), {v["frozen"] for v in values}
    pids = {v["pid"] for v in values}
    parents = {v["parent"] for v in values}
    assert len(parents) == 1 and "" not in parents and not parents & pids
    draws = {v["pid"]: v["draw"] for v in values}
    assert len(set(draws.values())) == len(draws), "two workers share their random state"
    assert _alive_with_home(home) == []
    logs = sorted((home / "logs").rglob("worker-*.log"))
    assert len(logs) == 2 and all("listening on queue" in p.read_text() for p in logs)


def test_workers_start_as_new_interpreters_when_forking_is_off(tmp_path: Path) -> None:
    sweep = _probe_sweep(tmp_path, 20)
    env = swarmrun_env(None, tmp_path / "home", SWARMRUN_FORK_WORKERS="0")
    done = run_cli(
        ["run", str(sweep), "-w", "2", "-o", str(tmp_path / "out.csv")], env=env, cwd=tmp_path, timeout=120
    )
    assert done.returncode == 0, done.stderr
    values = _values(tmp_path / "out.csv")
    assert not any(v["forked"] for v in values)
    assert all(v["fresh"] for v in values)


def test_a_task_that_fails_its_check_leaves_no_forked_worker(tmp_path: Path) -> None:
    """The workers are forked before the task is checked; a task that does not import stops
    them, with the one-line error and its exit code."""
    (tmp_path / "broken.py").write_text("raise ImportError('no such thing')\n")
    sweep = write_sweep(tmp_path, 'name: broken\ntask: {call: "broken:f"}\nparams:\n  i: [1, 2]\n')
    home = tmp_path / "home"
    done = run_cli(["run", str(sweep), "-w", "2"], env=swarmrun_env(None, home), cwd=tmp_path, timeout=120)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert len([line for line in done.stderr.splitlines() if line.startswith("Error:")]) == 1
    assert _alive_with_home(home) == []


def test_forked_workers_run_none_of_the_parents_exit_hooks_and_replacements_are_new(
    redis_url: str, tmp_path: Path
) -> None:
    """The local backend forks until `stop_forking`; a worker's exit runs none of this process's
    atexit hooks; a worker that dies is replaced by a new interpreter."""
    marker = tmp_path / "parent-atexit"
    hook = lambda: marker.write_text(f"ran in {os.getpid()}")  # noqa: E731
    atexit.register(hook)
    settings = Settings.from_env({"SWARMRUN_HOME": str(tmp_path / "home")})
    backend = LocalBackend(settings, redis_url, log_dir=tmp_path / "logs", cwd=tmp_path, fork=True)
    try:
        backend.deploy(2)
        backend.stop_forking()
        assert all(isinstance(p, ForkedWorker) for p in backend._live)
        connection = redis.Redis.from_url(redis_url)
        wait_until(lambda: connection.scard(f"rq:workers:{settings.queue}") >= 2, 60, message="2 workers")
        victim = backend._live[0]
        os.kill(victim.pid, signal.SIGKILL)
        wait_until(lambda: victim.poll() is not None, 30, message="the killed worker reaped")
        assert victim.returncode == -signal.SIGKILL
        assert backend.supervise() == 1
        assert isinstance(backend._live[-1], subprocess.Popen)
        started = list(backend._live)
        replacement_log = tmp_path / "logs" / "worker-3.log"
        wait_until(lambda: "listening on queue" in replacement_log.read_text(), 60, message="the replacement")
        backend.stop(grace=30)
        assert [p.poll() for p in started] == [0, 0], "a warm stop ends each worker with exit code 0"
        assert not marker.exists(), marker.read_text()
    finally:
        backend.stop(grace=0)
        atexit.unregister(hook)
