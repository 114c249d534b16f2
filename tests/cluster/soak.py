"""Soak: a long sweep on the three-node cluster with 6 replicas and a random fault every 10 to 30 s
(a worker container SIGKILLed, the Redis container SIGKILLed, a worker node drained and made active
again, a worker node's engine restarted). Total lost must be 0; duplicates are reported.

Not part of the default run (the file name is not test_*.py); run it by name:

    SWARMRUN_SOAK_SECONDS=1800 .venv/bin/python -m pytest -m soak -s tests/cluster/soak.py
"""

from __future__ import annotations

import os
import random
import time
from contextlib import closing, suppress
from pathlib import Path

import docker
import pytest
import redis

from tests.cluster.chaos import Recovery
from tests.cluster.conftest import SESSION, ClusterStack
from tests.cluster.test_chaos import Sweep, chaos_stack, finish, scale, start  # noqa: F401, F811 - the fixture
from tests.conftest import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.soak]

SECONDS = float(os.environ.get("SWARMRUN_SOAK_SECONDS", "1800"))
FAULTS = ("worker SIGKILL", "Redis SIGKILL", "drain", "engine restart")


@pytest.mark.timeout(2 * int(SECONDS) + 900)  # the faults, then the rest of the sweep
def test_soak_with_a_random_fault_every_10_to_30_s(chaos_stack: ClusterStack, tmp_path: Path) -> None:  # noqa: F811
    cluster = chaos_stack.cluster
    scale(chaos_stack, 6, tmp_path)
    rng = random.Random(SESSION)
    points = int(SECONDS * 30)  # 0.2 s points: about 28 a second on 6 replicas here, under faults
    sweep = start(chaos_stack, tmp_path, test="soak", points=points, seconds=0.2)
    counts = dict.fromkeys(FAULTS, 0)
    ends = time.monotonic() + SECONDS
    with closing(cluster.manager_client()) as manager, Recovery(sweep.queue, sweep.sweep_id) as recovery:
        redis_label = f"com.docker.swarm.service.name={chaos_stack.name}_redis"
        while time.monotonic() < ends and _running(sweep):
            time.sleep(rng.uniform(10, 30))
            fault = rng.choice(FAULTS)
            recovery.disrupt(fault)
            counts[fault] += 1
            with suppress(docker.errors.APIError, ValueError):
                if fault == "worker SIGKILL":
                    victims = chaos_stack.worker_containers()
                    if victims:
                        rng.choice(victims)[1].kill()
                elif fault == "Redis SIGKILL":
                    for c in manager.containers.list(filters={"label": redis_label}):
                        c.kill(signal="KILL")
                elif fault == "drain":
                    node = manager.nodes.get(rng.choice(["worker1", "worker2"]))
                    node.update({**node.attrs["Spec"], "Availability": "drain"})
                    time.sleep(10)
                    node.reload()
                    node.update({**node.attrs["Spec"], "Availability": "active"})
                else:
                    name = rng.choice(["worker1", "worker2"])
                    cluster.host.containers.get(cluster.node(name).container).stop(timeout=30)
                    cluster.start_node(name)
        faults = ", ".join(f"{n} {f}" for f, n in counts.items())
        what = f"soak of {SECONDS:.0f} s, {sum(counts.values())} faults ({faults})"
        print(f"{what}: faults over, {time.monotonic() - ends + SECONDS:.0f} s after the start")
        # The last fault may have come after the last point: Redis must answer before the count.
        wait_until(lambda: _answers(sweep), 180, interval=1, message="Redis answers after the last fault")
        p = finish(sweep, recovery, what, timeout=SECONDS)
    assert p.done == points


def _running(sweep: Sweep) -> bool:
    """Whether the sweep still runs; while Redis is down after a SIGKILL, its manager's life tells."""
    try:
        return sweep.running()
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        return sweep.manager.poll() is None


def _answers(sweep: Sweep) -> bool:
    try:
        return bool(sweep.queue.connection.ping())
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        return False
