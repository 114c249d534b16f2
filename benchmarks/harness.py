"""What every benchmark shares: a private Redis, worker processes, timing, the machine's load, rows."""

from __future__ import annotations

import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Row:
    """One measurement: what ran, how many points, how long, and its ratio to a baseline."""

    section: str
    case: str
    engine: str
    workers: int
    points: int
    seconds: float
    rate: float = 0.0  # points per second
    ratio: float | None = None  # rate / the baseline's rate (or a section-specific ratio)
    baseline: str = ""
    target: str = ""
    met: bool | None = None
    note: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.rate and self.seconds > 0:
            self.rate = self.points / self.seconds


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load_average() -> float:
    return os.getloadavg()[0]


def _cpu_ticks() -> tuple[int, int]:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def cpu_busy(seconds: float = 1.0) -> float:
    """The fraction of all cores busy over the next `seconds` (Linux; 0.0 elsewhere)."""
    if not Path("/proc/stat").exists():
        return 0.0
    busy0, total0 = _cpu_ticks()
    time.sleep(seconds)
    busy1, total1 = _cpu_ticks()
    return (busy1 - busy0) / max(1, total1 - total0)


def settle(below: float = 0.25, timeout: float = 90.0) -> str:
    """Wait until the CPU is mostly idle (the previous step's containers gone), up to `timeout`.

    The load average lags by a minute; the busy fraction over one second is what a timed step
    competes with. Returns a note for the report: how busy, and after how long.
    """
    start = time.monotonic()
    busy = cpu_busy()
    while busy >= below and time.monotonic() - start < timeout:
        busy = cpu_busy()
    return f"CPU {busy:.0%} busy at the start, after {time.monotonic() - start:.0f}s of settling"


def machine() -> str:
    """A one-line description of this machine, for the report."""
    os_name = platform.platform(terse=True)
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os_name}, {os.cpu_count()} cores, {memory:.0f} GiB, Python {platform.python_version()}, "
        f"{platform.processor() or platform.machine()}"
    )


def others_busy() -> str:
    """Containers running on this engine that are not ours (another engineer's cluster, say)."""
    if shutil.which("docker") is None:
        return "no docker"
    every = subprocess.run(["docker", "ps", "-q"], capture_output=True, text=True)
    ours = subprocess.run(
        ["docker", "ps", "-q", "--filter", "label=swarmrun.bench"], capture_output=True, text=True
    )
    if every.returncode != 0:
        return "docker not answering"
    return f"{len(every.stdout.split()) - len(ours.stdout.split())} other containers running"


class RedisServer:
    """A redis-server this benchmark started on a free port and a unix socket (no persistence),
    stopped by its pid. `fresh()` is a TCP client, as workers on other machines have;
    `fresh_local()` one on the unix socket, as the embedded default's commands have."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = tempfile.TemporaryDirectory(prefix="swarmrun-bench-redis-")
        self.socket = str(Path(self._dir.name) / "redis.sock")
        binary = shutil.which("redis-server")
        if binary is None:
            from swarmrun.redis_server import find_executable

            binary = find_executable()
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--unixsocket",
                self.socket,
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 15
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def used_memory(self) -> int:
        return int(self.client.info("memory")["used_memory"])

    def fresh(self) -> redis.Redis:
        self.client.flushall()
        return self.client

    def fresh_local(self) -> redis.Redis:
        self.client.flushall()
        return redis.Redis(unix_socket_path=self.socket)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self._dir.cleanup()


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        yield server
    finally:
        server.stop()


def bench_env(**extra: str) -> dict[str, str]:
    """The environment of worker processes: the repo (for `benchmarks.tasks`) on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWARMRUN_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


class Processes:
    """Worker processes a benchmark started; stopped by pid (TERM, then KILL) on exit."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: Sequence[str], env: dict[str, str], count: int) -> None:
        for _ in range(count):
            self.procs.append(
                subprocess.Popen(
                    list(argv),
                    env=env,
                    cwd=ROOT,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = []


@contextmanager
def processes() -> Iterator[Processes]:
    p = Processes()
    try:
        yield p
    finally:
        p.stop()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.02) -> float:
    """Poll until `predicate` holds; returns the time.perf_counter() when it first did."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return time.perf_counter()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
