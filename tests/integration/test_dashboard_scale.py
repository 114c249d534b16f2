"""The dashboard's API stays responsive on a sweep of 10^6 points (it never loads all results).

The results are recorded through the real recording script (queue.record), as workers do,
then each endpoint is timed in-process (Starlette's test client) against the real Redis.
"""

from __future__ import annotations

import time

import pytest
import redis

from swarmrun.dashboard.app import Dashboard, create_app
from swarmrun.dashboard.security import Policy
from swarmrun.definition.sweep import point_key
from swarmrun.definition.sweepfile import parse_sweep
from swarmrun.execution.queue import SweepQueue
from swarmrun.execution.results import encode_record
from swarmrun.execution.task import Outcome

N = 1_000_000
FAILED = 2000


@pytest.mark.timeout(600)
def test_endpoints_answer_quickly_with_a_million_points(rconn: redis.Redis) -> None:
    from starlette.testclient import TestClient

    sweep = parse_sweep(
        {
            "name": "million",
            "task": {"call": "fixtures.tasks:square"},
            "params": {"gamma": {"linspace": [0, 1, 10]}, "omega": {"range": [0, N // 10]}},
        }
    )
    queue = SweepQueue(rconn, "swarmrun")
    sid = queue.submit(sweep).sweep_id
    queue.cancel(sid)  # no worker runs it: the records below stand for theirs
    rconn.hset(f"swarmrun:sweep:{sid}", "state", "active")
    t0 = time.monotonic()
    block = 20_000
    for start in range(0, N, block):
        entries = []
        for i in range(start, start + block):
            p = sweep.point(i)
            if i % (N // FAILED) == 1:
                outcome = Outcome("error", error=f"ValueError: bad omega {i % 3}", duration=0.001)
            else:
                outcome = Outcome("ok", value={"amp": i * 0.5}, duration=0.001)
            status, rec = encode_record(outcome, attempt=1, worker="w1", sweep_id=sid)
            entries.append((i, point_key(p), status, rec))
        queue.record(sid, sweep.task.key, entries, seconds=0.001 * block, worker="w1")
    print(f"recorded {N} results in {time.monotonic() - t0:.1f} s")
    assert queue.progress(sid).done == N

    client = TestClient(
        create_app(Dashboard(queue, Policy(token=None, csrf="c"))), base_url="http://127.0.0.1"
    )
    timings = {}
    for name, url in (
        ("list", "/api/sweeps"),
        ("sweep", f"/api/sweeps/{sid}"),
        ("failures", f"/api/sweeps/{sid}/failures"),
        ("group", f"/api/sweeps/{sid}/group?error=ValueError: bad omega 1&limit=50"),
        ("point", f"/api/sweeps/{sid}/points/999999"),
        ("plot", f"/api/sweeps/{sid}/plot?x=omega&y=amp&hue=gamma"),
        ("heatmap", f"/api/sweeps/{sid}/plot?x=gamma&y=amp&hue=omega"),
    ):
        t = time.monotonic()
        r = client.get(url)
        timings[name] = time.monotonic() - t
        assert r.status_code == 200, (name, r.text)
        if name == "failures":
            groups = r.json()["groups"]
            assert sum(g["count"] for g in groups) == FAILED and len(groups) == 3
        if name == "plot":
            body = r.json()
            assert body["stride"] == 20 and sum(len(s["x"]) for s in body["series"]) <= 50_000
    print("timings (s):", {k: round(v, 2) for k, v in timings.items()})
    assert max(timings.values()) < 5.0, timings
