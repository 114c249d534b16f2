"""The dashboard's JSON API and downloads on a real sweep (real Redis, real workers)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pyarrow.parquet as pq
import redis

from swarmrun.dashboard.app import Dashboard, create_app
from swarmrun.dashboard.security import Policy
from swarmrun.execution.queue import SweepQueue
from tests.conftest import Processes, write_sweep

SWEEP = """
name: fails
task: {call: "fixtures.tasks:fail_on"}
params:
  x: {range: [0, 6]}
"""


def test_downloads_point_and_group_pages(procs: Processes, tmp_path: Path, rconn: redis.Redis) -> None:
    from starlette.testclient import TestClient

    path = write_sweep(tmp_path, SWEEP)
    assert procs.cli("run", str(path), "-w", "1", "-q").returncode == 1
    sid = procs.cli("submit", str(path)).stdout.strip()
    client = TestClient(
        create_app(Dashboard(SweepQueue(rconn, "swarmrun"), Policy(token=None, csrf="c"))),
        base_url="http://127.0.0.1:8765",
    )
    r = client.get(f"/api/sweeps/{sid[:6]}/download?format=csv")
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["index"] for row in rows] == [str(i) for i in range(6)]
    r = client.get(f"/api/sweeps/{sid}/download?format=parquet")
    assert pq.read_table(io.BytesIO(r.content)).num_rows == 6
    point = client.get(f"/api/sweeps/{sid}/points/3").json()
    assert point["status"] == "error" and "x=3 is bad" in point["error"] and point["params"] == {"x": 3}
    assert "Traceback" in point["traceback"]
    assert client.get(f"/api/sweeps/{sid}/points/6").status_code == 404
    assert client.get(f"/api/sweeps/{sid}/points/3/files/out.txt").status_code == 404
    groups = client.get(f"/api/sweeps/{sid}/failures").json()["groups"]
    assert [(g["error"], g["count"]) for g in groups] == [("ValueError: x=3 is bad", 1)]
    assert client.get("/api/sweeps/ffffffff").status_code == 404
    assert client.get("/", headers={"Host": "evil.example:8765"}).status_code == 403  # DNS rebinding
    retry = client.post(
        f"/api/sweeps/{sid}/retry",
        json={"error": "ValueError: x=3 is bad"},
        headers={"X-Swarmrun-CSRF": "c", "Origin": "http://127.0.0.1:8765"},
    )
    assert retry.status_code == 200 and retry.json()["cleared"] == 1
    assert SweepQueue(rconn, "swarmrun").progress(sid).done == 5
