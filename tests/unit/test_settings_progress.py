"""Settings from an explicit environment, and progress text: pure."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarmrun.backends import Placement, Replicas
from swarmrun.errors import SwarmrunError
from swarmrun.execution.progress import RateMeter, duration, eta, progress_line, status_lines
from swarmrun.execution.queue import Progress
from swarmrun.settings import Settings, redact, with_password


def test_settings_from_env(tmp_path: Path) -> None:
    assert Settings.from_env({}).redis_url is None
    secret = tmp_path / "pw"
    secret.write_text("s3cr/t\n")
    s = Settings.from_env(
        {
            "SWARMRUN_REDIS_URL": "redis://redis:6379/0",
            "SWARMRUN_REDIS_PASSWORD_FILE": str(secret),
            "SWARMRUN_HOME": str(tmp_path),
            "SWARMRUN_HEARTBEAT_TTL": "5",
            "SWARMRUN_QUEUE": "q",
        }
    )
    assert s.url == "redis://:s3cr%2Ft@redis:6379/0"
    assert s.with_redis("redis://other:1/0").url == "redis://:s3cr%2Ft@other:1/0"
    assert s.with_redis("redis://:own@other:1/0").url == "redis://:own@other:1/0"
    assert (s.home, s.heartbeat_ttl, s.queue) == (tmp_path, 5, "q")
    with pytest.raises(SwarmrunError, match="SWARMRUN_HEARTBEAT_TTL='x' is not a number"):
        Settings.from_env({"SWARMRUN_HEARTBEAT_TTL": "x"})
    with pytest.raises(SwarmrunError, match="cannot read SWARMRUN_REDIS_PASSWORD_FILE"):
        Settings.from_env(
            {"SWARMRUN_REDIS_URL": "redis://h", "SWARMRUN_REDIS_PASSWORD_FILE": str(tmp_path / "no")}
        )


def test_password_urls() -> None:
    assert with_password("redis://h:1/2", "p") == "redis://:p@h:1/2"
    assert with_password("unix:///tmp/r.sock", "p") == "unix:///tmp/r.sock?password=p"
    assert redact("redis://:p@h:1/2") == "redis://:***@h:1/2"
    assert redact("unix:///s?password=p&db=1") == "unix:///s?password=***&db=1"
    assert redact("redis://h:1/0") == "redis://h:1/0"


def progress(done: int, size: int = 100, error: int = 0) -> Progress:
    return Progress(
        sweep_id="abc",
        name="demo",
        size=size,
        done=done,
        ok=done - error,
        error=error,
        timeout=0,
        cached=0,
        executions=done,
        duplicates=0,
        seconds=done * 0.01,
        processed=done,
        state="active",
        created=0.0,
    )


def test_rate_meter_and_eta() -> None:
    meter = RateMeter(window=10)
    assert meter.rate is None
    for t in range(0, 30, 2):
        meter.add(float(t), t * 5)
    assert meter.rate == pytest.approx(5.0)
    assert eta(progress(50), 5.0) == 10.0
    assert eta(progress(50), None) is None
    assert eta(progress(100), None) == 0.0
    assert duration(3725) == "1:02:05" and duration(65) == "1:05" and duration(None) == "--:--"


def test_progress_line_and_status() -> None:
    line = progress_line(
        progress(25, error=2), 12.5, Replicas(3, 4, (Placement("n1", 2), Placement("n2", 1)))
    )
    assert line.startswith("[#######---------------------] 25/100 (25%)")
    assert "failed 2" in line and "12.5 points/s" in line and "ETA 0:06" in line
    assert line.endswith("workers 3/4 running (n1: 2, n2: 1)")
    lines = status_lines(progress(25), 1.0, Replicas(2, 2, (Placement("n1", 1), Placement("n2", 1))), (1, 2))
    assert "25 done (25 ok" in lines[1]
    assert lines[-1] == "  workers    2/2 running (n1: 1, n2: 1)"
    assert "1 running, 2 queued" in lines[-2]
