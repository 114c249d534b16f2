"""The local backend: `swarmrun worker` processes on this machine, supervised by the caller."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from swarmrun.backends import Placement, Replicas
from swarmrun.backends.forked import ForkedWorker, supported
from swarmrun.settings import Settings

Process = subprocess.Popen[bytes] | ForkedWorker


def _wait(proc: Process, timeout: float) -> bool:
    """Whether `proc` exited within `timeout` seconds; woken by its exit itself, where
    `Popen.wait(timeout)` would poll (up to 50 ms late, which a 1-point sweep's stop would feel)."""
    pidfd_open = getattr(os, "pidfd_open", None)  # Linux only
    try:
        fd = pidfd_open(proc.pid) if pidfd_open is not None else None
    except OSError:  # already reaped, or a kernel before 5.3
        fd = None
    if fd is not None:
        try:
            select.select([fd], [], [], timeout)
        finally:
            os.close(fd)
    try:
        proc.wait(timeout=0 if fd is not None else timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


class LocalBackend:
    """Worker processes, each in its own session (a Ctrl-C at the terminal reaches only us).

    `fork=True`: workers are forked from this process (`swarmrun.backends.forked`, Linux only)
    until `stop_forking()`, which the caller calls before it imports the user's task; later
    workers (replacements, scaling) are new interpreters.
    """

    name = "local"

    def __init__(
        self,
        settings: Settings,
        redis_url: str,
        *,
        log_dir: Path,
        cwd: Path | None = None,
        grace: float = 60.0,
        fork: bool = False,
    ) -> None:
        self.settings = settings
        self.redis_url = redis_url
        self.log_dir = log_dir
        self.cwd = cwd
        self.grace = grace
        self.desired = 0
        self.forking = fork and supported()
        self._live: list[Process] = []
        self._stopping: list[Process] = []
        self._logs: dict[int, IO[bytes]] = {}
        self._spawned = 0

    def _env(self) -> dict[str, str]:
        s = self.settings
        return {
            **os.environ,
            "SWARMRUN_REDIS_URL": self.redis_url,
            "SWARMRUN_QUEUE": s.queue,
            "SWARMRUN_HEARTBEAT_TTL": str(s.heartbeat_ttl),
            "SWARMRUN_CHUNK_SECONDS": str(s.chunk_seconds),
            "SWARMRUN_MAINTENANCE_INTERVAL": str(s.maintenance_interval),
            "PYTHONUNBUFFERED": "1",
            "SWARMRUN_PARENT_PID": str(os.getpid()),  # the workers stop when this process is gone
        }

    def _spawn(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._spawned += 1
        log = open(self.log_dir / f"worker-{self._spawned}.log", "ab")  # noqa: SIM115 - closed after Popen
        proc: Process
        if self.forking:
            proc = ForkedWorker(cwd=self.cwd, env=self._env(), log=log)
        else:
            proc = subprocess.Popen(
                [sys.executable, "-m", "swarmrun", "worker"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=self._env(),
                start_new_session=True,
            )
        self._logs[proc.pid] = log
        self._live.append(proc)

    def stop_forking(self) -> None:
        """Start new workers as new interpreters from now on (this process is about to load code
        that a worker must import afresh)."""
        self.forking = False

    def _collect(self) -> None:
        for proc in [p for p in self._stopping if p.poll() is not None]:
            self._stopping.remove(proc)
            self._logs.pop(proc.pid).close()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._live]

    def deploy(self, replicas: int) -> None:
        self.scale(replicas, wait=False)

    def scale(self, replicas: int, *, wait: bool = True) -> Replicas:
        self.desired = replicas
        self.supervise()
        while len(self._live) < replicas:
            self._spawn()
        while len(self._live) > replicas:
            proc = self._live.pop()
            proc.send_signal(signal.SIGTERM)  # warm: finish the chunk, then exit
            self._stopping.append(proc)
        if wait:
            self._wait_stopping(self.grace)
        return self.replicas()

    def _wait_stopping(self, grace: float) -> None:
        deadline = time.monotonic() + grace
        for proc in list(self._stopping):
            if not _wait(proc, max(0.0, deadline - time.monotonic())):
                proc.kill()
                proc.wait()
        self._collect()

    def supervise(self) -> int:
        """Replace workers that exited without being asked to; returns how many were replaced."""
        self._collect()
        dead = [p for p in self._live if p.poll() is not None]
        for proc in dead:
            self._live.remove(proc)
            self._logs.pop(proc.pid).close()
        while len(self._live) < self.desired:
            self._spawn()
        return len(dead)

    def replicas(self) -> Replicas:
        running = sum(1 for p in self._live if p.poll() is None)
        return Replicas(running, self.desired, (Placement(socket.gethostname(), running),))

    def logs(self, *, follow: bool = False, tail: int = 100) -> Iterator[str]:
        for path in sorted(self.log_dir.glob("worker-*.log")):
            for line in path.read_text(errors="replace").splitlines()[-tail:]:
                yield f"{path.stem} | {line}"

    def stop(self, *, grace: float | None = None) -> None:
        """Warm-stop every worker; kill those still running after `grace` seconds."""
        self.desired = 0
        for proc in self._live:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        self._stopping.extend(self._live)
        self._live = []
        self._wait_stopping(self.grace if grace is None else grace)

    def remove(self) -> None:
        self.stop()
