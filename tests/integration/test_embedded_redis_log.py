"""The embedded Redis's append-only log stays short: every command starts the server, which
replays the log's incremental part command by command (45 MB, a million results, took 0.7 s
here), so the last command to leave rewrites a long log into a snapshot before shutting down.
Real redis-server 7 (its multi-part append-only directory)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import redis

from swarmrun import redis_server
from swarmrun.redis_server import CLIENTS, EmbeddedRedis, find_executable, server_version
from tests.conftest import require


def incremental_bytes(home: Path) -> int:
    """Bytes of log the next start replays (the snapshot base aside)."""
    return sum(p.stat().st_size for p in (home / "redis" / "appendonlydir").glob("*.incr.aof"))


def base_file(home: Path) -> str:
    return next((home / "redis" / "appendonlydir").glob("*.base.*")).name


def write(url: str, keys: int, size: int) -> None:
    client = redis.Redis.from_url(url)
    pipe = client.pipeline(transaction=False)
    for i in range(keys):
        pipe.set(f"test-log:{i}", f"{i:08d}".ljust(size, "x"))
    pipe.execute()
    client.close()


@pytest.fixture
def redis7() -> None:
    binary = find_executable()
    require(server_version(binary) >= (7,), f"a redis-server 7 or newer (found {binary})")


@pytest.mark.timeout(120)
def test_the_last_command_to_leave_rewrites_a_long_log_into_a_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis7: None
) -> None:
    monkeypatch.setattr(redis_server, "LOG_BYTES", 1 << 20)
    first = EmbeddedRedis(tmp_path)
    url = first.acquire()
    write(url, 3000, 1000)  # 3 MB of log
    before = base_file(tmp_path)
    other = subprocess.Popen(["sleep", "60"])  # another command using the server, as it registers
    try:
        redis.Redis.from_url(url).sadd(CLIENTS, other.pid)
        first.release()  # nothing is rewritten under the other command
        assert incremental_bytes(tmp_path) > 3_000_000 and base_file(tmp_path) == before
    finally:
        other.kill()
        other.wait()
    last = EmbeddedRedis(tmp_path)
    assert last.acquire() == url  # still up
    last.release()  # the other is gone: this is the last to leave
    assert incremental_bytes(tmp_path) < 1 << 20
    assert base_file(tmp_path) != before and base_file(tmp_path).endswith(".rdb")

    again = EmbeddedRedis(tmp_path)
    client = redis.Redis.from_url(again.acquire())
    try:  # everything is there, from the snapshot
        assert client.get("test-log:2999") == b"00002999".ljust(1000, b"x")
        assert sum(1 for _ in client.scan_iter("test-log:*", count=1000)) == 3000
    finally:
        client.close()
        again.release()


@pytest.mark.timeout(120)
def test_a_short_log_is_left_as_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis7: None) -> None:
    monkeypatch.setattr(redis_server, "LOG_BYTES", 1 << 20)
    server = EmbeddedRedis(tmp_path)
    url = server.acquire()
    write(url, 300, 1000)  # 0.3 MB: replayed in milliseconds, not worth a rewrite at every exit
    before = base_file(tmp_path)
    server.release()
    assert base_file(tmp_path) == before and incremental_bytes(tmp_path) > 300_000
