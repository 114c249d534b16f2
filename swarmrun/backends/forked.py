"""A `swarmrun worker` forked from the process that runs `swarmrun run`: it starts without
importing anything (about 0.2 s of CPU a worker here, more on a busy machine), where a new
interpreter would import redis-py, RQ and swarmrun again.

Forking is safe only while this process holds nothing a worker must not share, so the local
backend forks only its first workers, before the manager imports the user's task (the task's
module, numpy with it, is then imported fresh by each worker, with its own random state), and
only on Linux (a macOS process that has used system frameworks must not fork without exec).
The child keeps none of the manager's threads, logging handlers, signal handlers or exit hooks: it
has its own session, working directory, environment, standard streams and log file, and exits
with `os._exit`.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import io
import logging
import os
import signal
import subprocess
import sys
import time
import traceback
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import IO, NoReturn

ENV = "SWARMRUN_FORK_WORKERS"


def supported() -> bool:
    """Linux, and not turned off with `SWARMRUN_FORK_WORKERS=0` (workers then start as new
    interpreters, as every worker did before)."""
    return sys.platform == "linux" and hasattr(os, "fork") and os.environ.get(ENV, "1") != "0"


class ForkedWorker:
    """The parent's handle on a forked worker, with the part of `subprocess.Popen` the local
    backend uses: `pid`, `returncode`, `poll`, `wait`, `send_signal`, `kill`."""

    def __init__(self, *, cwd: Path | None, env: Mapping[str, str], log: IO[bytes]) -> None:
        for stream in (sys.stdout, sys.stderr):  # nothing buffered here may be written twice
            stream.flush()
        gc.freeze()  # the child's collections leave what it inherits alone (each of its pages
        # a collection touched would be copied, and every object scanned): CPython's advice for a
        # fork without exec. The manager's objects are unfrozen after the fork, into its oldest
        # generation; the child's stay frozen (garbage cycles it inherits are never collected).
        try:
            pid = os.fork()
            if pid == 0:
                _child(cwd, env, log.fileno())
        finally:
            gc.unfreeze()
        self.pid = pid
        self.returncode: int | None = None

    def _reap(self, flags: int) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, flags)
            except ChildProcessError:  # reaped elsewhere: it is gone
                self.returncode = -1
                return self.returncode
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def poll(self) -> int | None:
        return self._reap(os.WNOHANG)

    def wait(self, timeout: float | None = None) -> int:
        """Like `Popen.wait`: the exit code, TimeoutExpired after `timeout` seconds."""
        if timeout is None:
            code = self._reap(0)
            assert code is not None
            return code
        deadline = time.monotonic() + timeout
        while (code := self.poll()) is None:
            if time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout)
            time.sleep(0.005)
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _unbuffered(fd: int) -> io.TextIOWrapper:
    return io.TextIOWrapper(io.FileIO(fd, "w", closefd=False), line_buffering=True, write_through=True)


def _name_process(name: bytes) -> None:
    """The name `ps -o comm`, `top` and `pgrep` show (the command line stays the manager's)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(15, name, 0, 0, 0)  # PR_SET_NAME, at most 15 bytes


def _child(cwd: Path | None, env: Mapping[str, str], log_fd: int) -> NoReturn:
    """In the forked process: become a worker started on its own, run it, exit."""
    try:
        os.setsid()  # a Ctrl-C at the terminal reaches only the manager
        if cwd is not None:
            os.chdir(cwd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.environ.clear()
        os.environ.update(env)
        atexit._clear()  # the manager's: stopping its Redis, writing its files
        weakref.finalize._registered_with_atexit = False  # type: ignore[attr-defined]  # ours again
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        root = logging.getLogger()
        for handler in list(root.handlers):  # they write to the manager's streams
            root.removeHandler(handler)
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
        sys.stdout, sys.stderr = _unbuffered(1), _unbuffered(2)  # as PYTHONUNBUFFERED=1 would
        sys.argv = [sys.argv[0], "worker"]
        _name_process(b"swarmrun-worker")
        from swarmrun.cli import main

        main()  # `swarmrun worker` as typed: it ends in `exit_now`, with the worker's exit code
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(1)  # reached only if the command could not run at all
