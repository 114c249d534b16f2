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


FILES = """
name: files
task: {call: "fixtures.tasks:write_files"}
outputs: ["*.bin"]
params:
  i: {range: [0, 4]}
  size: [3000]
"""


def test_point_view_lists_files_and_executions_and_serves_the_files(
    procs: Processes, tmp_path: Path, rconn: redis.Redis
) -> None:
    """Submitted only (files still in Redis): a download fetches the winning execution's file into
    the results directory and serves exactly its bytes; a name the record does not list is 404."""
    import hashlib

    from starlette.testclient import TestClient

    path = write_sweep(tmp_path, FILES)
    sid = procs.cli("submit", str(path)).stdout.strip()
    assert procs.cli("worker", "--burst").returncode == 0
    results_dir = tmp_path / "served"
    client = TestClient(
        create_app(
            Dashboard(SweepQueue(rconn, "swarmrun"), Policy(token=None, csrf="c"), results_dir=results_dir)
        ),
        base_url="http://127.0.0.1:8765",
    )
    point = client.get(f"/api/sweeps/{sid}/points/2").json()
    assert point["status"] == "ok"
    [entry] = point["files"]
    assert entry["name"] == "data.bin" and entry["size"] == 3000
    assert len(point["executions"]) == 1 and point["executions"][0]["won"]
    assert "point 2: wrote 3000 bytes" in point["log"]
    r = client.get(f"/api/sweeps/{sid}/points/2/files/data.bin")
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    assert len(r.content) == 3000 and hashlib.sha256(r.content).hexdigest() == entry["sha256"]
    assert list(results_dir.glob("files-*/points/2/data.bin"))
    assert client.get(f"/api/sweeps/{sid}/points/2/files/pid.txt").status_code == 404  # not an output
    assert client.get(f"/api/sweeps/{sid}/points/2/files/..%2F..%2Fetc%2Fpasswd").status_code == 404
