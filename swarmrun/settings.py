"""Settings read once from the environment (never at import time), passed explicitly everywhere."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from swarmrun.errors import SwarmrunError

DEFAULT_QUEUE = "swarmrun"
REDIS_PATIENCE = 180.0  # seconds a command goes on without Redis before it gives up


def _number(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SwarmrunError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise SwarmrunError(f"{name}={raw!r} must be greater than 0")
    return value


def with_password(url: str, password: str) -> str:
    """Return `url` with `password` set (URL-quoted), keeping any user name."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        sep = "&" if parts.query else ""
        return f"unix://{parts.path}?{parts.query}{sep}password={quote(password, safe='')}"
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username or ''}:{quote(password, safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def with_ca(url: str, ca_file: str | None) -> str:
    """A `rediss://` URL that verifies the server against `ca_file` (redis-py's `ssl_ca_certs`).

    Other URLs, and one that names its own CA already, are returned unchanged.
    """
    parts = urlsplit(url)
    if parts.scheme != "rediss" or not ca_file:
        return url
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(k == "ssl_ca_certs" for k, _ in query):
        return url
    return urlunsplit(parts._replace(query=urlencode([*query, ("ssl_ca_certs", ca_file)], safe="/")))


def redact(url: str) -> str:
    """Hide a password in a Redis URL, for messages and logs."""
    parts = urlsplit(url)
    if parts.password:
        host = parts.netloc.rsplit("@", 1)[1]
        return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
    if "password=" in parts.query:
        query = "&".join("password=***" if q.startswith("password=") else q for q in parts.query.split("&"))
        return url.split("?", 1)[0] + "?" + query
    return url


@dataclass(frozen=True)
class Settings:
    """Where Redis is, which queue to use, and the timing knobs of workers and chunks.

    `redis_url` None means: use the embedded Redis server kept under `home`. A password read from
    SWARMRUN_REDIS_PASSWORD_FILE (a Docker secret) is kept apart and added to whichever URL is used.
    """

    redis_url: str | None = None
    redis_password: str | None = None
    redis_ca: str | None = None  # CA certificate file a `rediss://` Redis is verified against
    queue: str = DEFAULT_QUEUE
    home: Path = Path.home() / ".local" / "share" / "swarmrun"
    heartbeat_ttl: int = 30
    chunk_seconds: float = 3.0
    maintenance_interval: int = 10
    redis_patience: float = REDIS_PATIENCE

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """Build settings from SWARMRUN_* variables (see the README's configuration table)."""
        password_file = environ.get("SWARMRUN_REDIS_PASSWORD_FILE")
        password = None
        if password_file:
            try:
                password = Path(password_file).read_text().strip()
            except OSError as e:
                raise SwarmrunError(f"cannot read SWARMRUN_REDIS_PASSWORD_FILE={password_file}: {e}") from e
        xdg = environ.get("XDG_DATA_HOME")
        default_home = Path(xdg) / "swarmrun" if xdg else cls.home
        return cls(
            redis_url=environ.get("SWARMRUN_REDIS_URL") or None,
            redis_password=password,
            redis_ca=environ.get("SWARMRUN_REDIS_CA") or None,
            queue=environ.get("SWARMRUN_QUEUE") or DEFAULT_QUEUE,
            home=Path(environ.get("SWARMRUN_HOME") or default_home),
            heartbeat_ttl=int(_number(environ, "SWARMRUN_HEARTBEAT_TTL", cls.heartbeat_ttl)),
            chunk_seconds=_number(environ, "SWARMRUN_CHUNK_SECONDS", cls.chunk_seconds),
            maintenance_interval=int(
                _number(environ, "SWARMRUN_MAINTENANCE_INTERVAL", cls.maintenance_interval)
            ),
            redis_patience=_number(environ, "SWARMRUN_REDIS_PATIENCE", cls.redis_patience),
        )

    def with_redis(self, url: str | None) -> Settings:
        return replace(self, redis_url=url) if url else self

    @property
    def url(self) -> str | None:
        """The Redis URL to use, with the password file's password unless the URL carries one, and
        for `rediss://` the CA of SWARMRUN_REDIS_CA (`--redis-ca`) unless the URL names one."""
        if not self.redis_url:
            return self.redis_url
        url = self.redis_url
        if self.redis_password and not urlsplit(url).password and "password=" not in url:
            url = with_password(url, self.redis_password)
        return with_ca(url, self.redis_ca)
