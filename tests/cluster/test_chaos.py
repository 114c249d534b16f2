"""Chaos on the three-node swarm while `swarmrun run` drives a sweep: every point must end with
exactly one result. Each test prints `lost=0, duplicates executed=N, time to recover=Xs`, where the
time to recover runs from the disruption until every point in flight at that moment has its
result (tests/cluster/chaos.py); the lines are repeated in the summary at the end of the run."""

from __future__ import annotations

import csv
import random
import subprocess
import time
from collections.abc import Iterator
from contextlib import closing, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import docker
import pytest
from rq.serializers import JSONSerializer
from rq.worker import Worker

from swarmrun.definition.chunk import ChunkRef, job_prefix
from swarmrun.definition.sweepfile import load_sweep
from swarmrun.execution.queue import Progress, SweepQueue
from tests.cluster.chaos import Recovery
from tests.cluster.conftest import SESSION, ClusterStack, report
from tests.cluster.harness import Cluster, Node
from tests.conftest import wait_until, write_sweep

pytestmark = pytest.mark.cluster

NAP = """
name: chaos-nap
task: {{call: "fixtures.tasks:nap"}}
params:
  seconds: [{seconds}]
  test: [{test}]
  i: {{range: [0, {points}]}}
"""


KILL_EVERY = 4.0
MAX_KILLS = 10


@pytest.fixture(scope="module")
def chaos_stack(
    cluster: Cluster, cluster_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ClusterStack]:
    """One stack for the chaos tests (each scales it as it needs, and runs its own sweep)."""
    home = tmp_path_factory.mktemp("chaos")
    stack = ClusterStack(cluster, cluster_image, home / "home")
    up = stack.cli("up", "-r", "6", *stack.options(), cwd=home)
    assert up.returncode == 0, up.stderr
    yield stack
    stack.remove()


@dataclass
class Sweep:
    """A sweep that `swarmrun run` (the manager, a child process) is driving on the stack."""

    manager: subprocess.Popen[str]
    queue: SweepQueue
    sweep_id: str
    points: int
    out: Path

    def progress(self) -> Progress:
        return self.queue.progress(self.sweep_id)

    def wait_done(self, fraction: float, timeout: float = 120) -> None:
        wait_until(
            lambda: self.progress().done >= fraction * self.points,
            timeout,
            message=f"{fraction:.0%} of the points done",
        )

    def running(self) -> bool:
        return self.manager.poll() is None and not self.progress().complete


def start(stack: ClusterStack, tmp_path: Path, *, test: str, points: int, seconds: float) -> Sweep:
    path = write_sweep(tmp_path, NAP.format(seconds=seconds, test=test, points=points))
    out = tmp_path / "out.csv"
    manager = stack.spawn("run", str(path), "-o", str(out), "-q", cwd=tmp_path)
    # A connection without retries: the monitor fails fast while Redis restarts and tries again.
    queue = stack.queue(resilient=False)
    sweep = Sweep(manager, queue, load_sweep(path).id, points, out)
    wait_until(lambda: sweep.sweep_id in queue.sweep_ids(), 60, message="the sweep submitted")
    return sweep


def finish(sweep: Sweep, recovery: Recovery, what: str, note: str = "", timeout: float = 300) -> Progress:
    """Wait for the manager; check exactly one result per point; print the reliability line."""
    try:
        _, stderr = sweep.manager.communicate(timeout=timeout)
    finally:
        if sweep.manager.poll() is None:
            sweep.manager.kill()
    assert sweep.manager.returncode == 0, stderr
    with sweep.out.open() as f:
        rows = list(csv.DictReader(f))
    indices = [int(row["i"]) for row in rows]
    lost = sweep.points - len(set(indices))
    assert lost == 0 and len(indices) == sweep.points, f"lost={lost}, rows={len(indices)}"
    assert sorted(indices) == list(range(sweep.points))
    assert {row["status"] for row in rows} == {"ok"}
    p = sweep.progress()
    assert (p.done, p.ok, p.error, p.timeout) == (sweep.points, sweep.points, 0, 0)
    assert p.executions == sweep.points + p.duplicates
    worst = recovery.worst
    if len(recovery.disruptions) > 1:
        times = sorted(d.seconds or 0.0 for d in recovery.disruptions)
        note = f"worst of {len(times)}, median {times[len(times) // 2]:.1f}s" + (f"; {note}" if note else "")
    line = f"{what}: lost={lost}, duplicates executed={p.duplicates}, time to recover={worst:.1f}s" + (
        f" ({note})" if note else ""
    )
    print(line)
    report(line)
    return p


def scale(stack: ClusterStack, replicas: int, cwd: Path) -> None:
    r = stack.cli("scale", str(replicas), cwd=cwd)
    assert r.returncode == 0 and f"workers {replicas}/{replicas} running" in r.stdout, r.stderr + r.stdout


def test_killing_a_random_worker_every_few_seconds_loses_nothing(
    chaos_stack: ClusterStack, tmp_path: Path
) -> None:
    scale(chaos_stack, 6, tmp_path)
    sweep = start(chaos_stack, tmp_path, test="kill-random", points=1500, seconds=0.05)
    sweep.wait_done(0.02)
    rng = random.Random(SESSION)
    kills = 0
    with Recovery(sweep.queue, sweep.sweep_id) as recovery:
        # Every few seconds until the sweep ends, at most MAX_KILLS times: near the end each kill
        # of a busy worker costs a heartbeat expiry, so killing for ever could delay the end for ever.
        while sweep.running() and kills < MAX_KILLS:
            victims = chaos_stack.worker_containers()
            if victims:
                node, victim = rng.choice(victims)
                recovery.disrupt(f"SIGKILL {victim.name} on {node.hostname}")
                with suppress(docker.errors.APIError):  # it may have died already
                    victim.kill()
                kills += 1
            time.sleep(KILL_EVERY)
        assert kills >= 3, f"only {kills} kills: the sweep ended too soon to mean anything"
        finish(
            sweep,
            recovery,
            f"killed a random worker container every {KILL_EVERY:g} s ({kills} kills, 6 replicas on 3 nodes)",
        )


def test_losing_a_whole_worker_node_mid_sweep_loses_nothing(
    chaos_stack: ClusterStack, tmp_path: Path
) -> None:
    cluster = chaos_stack.cluster
    scale(chaos_stack, 6, tmp_path)
    backend = chaos_stack.backend()
    before = {p.node: p.running for p in backend.replicas().placements}
    assert before.get("worker2", 0) >= 1, before
    sweep = start(chaos_stack, tmp_path, test="node-loss", points=1800, seconds=0.05)
    try:
        with Recovery(sweep.queue, sweep.sweep_id) as recovery:
            sweep.wait_done(0.2)
            recovery.disrupt("worker node lost")
            lost_at = time.monotonic()
            cluster.kill_node("worker2")

            def rescheduled() -> bool:
                r = backend.replicas()
                return r.running == 6 and all(p.node != "worker2" for p in r.placements)

            wait_until(rescheduled, 120, interval=0.5, message="the lost node's replicas rescheduled")
            moved = time.monotonic() - lost_at
            states = cluster.ready_nodes()
            assert states["worker2"] == "down", states
            finish(
                sweep,
                recovery,
                f"killed worker node 2 of 3 ({before['worker2']} of 6 replicas) at 20 %",
                note=f"its replicas running elsewhere after {moved:.1f}s",
            )
    finally:
        with suppress(docker.errors.APIError):
            cluster.start_node("worker2")
        backend.client.close()


def test_restarting_the_redis_task_mid_sweep_loses_nothing(chaos_stack: ClusterStack, tmp_path: Path) -> None:
    scale(chaos_stack, 6, tmp_path)
    sweep = start(chaos_stack, tmp_path, test="redis-restart", points=1200, seconds=0.05)
    with closing(chaos_stack.cluster.manager_client()) as manager:
        service = manager.services.get(f"{chaos_stack.name}_redis")
        old = {t["ID"] for t in service.tasks(filters={"desired-state": "running"})}
        with Recovery(sweep.queue, sweep.sweep_id) as recovery:
            sweep.wait_done(0.3)
            done_before = sweep.progress().done
            recovery.disrupt("Redis task restarted")
            restarted_at = time.monotonic()
            service.reload()
            service.force_update()  # = docker service update --force: SIGTERM, then a new task

            def new_task_running() -> bool:
                tasks = service.tasks(filters={"desired-state": "running"})
                return any(t["ID"] not in old and t["Status"]["State"] == "running" for t in tasks)

            wait_until(new_task_running, 120, interval=0.3, message="a new Redis task")
            back = time.monotonic() - restarted_at
            # the append-only file kept what was recorded before the restart
            assert wait_until(lambda: _done_or_none(sweep), 60, message="Redis answering") >= done_before
            finish(
                sweep,
                recovery,
                "restarted the Redis task at 30 % (append-only file)",
                note=f"new Redis task running after {back:.1f}s",
            )


def _done_or_none(sweep: Sweep) -> int | None:
    try:
        return sweep.progress().done
    except Exception:  # Redis still starting
        return None


def test_scaling_down_from_nine_replicas_to_one_mid_sweep_loses_nothing(
    chaos_stack: ClusterStack, tmp_path: Path
) -> None:
    scale(chaos_stack, 9, tmp_path)
    sweep = start(chaos_stack, tmp_path, test="scale-down", points=600, seconds=0.05)
    with Recovery(sweep.queue, sweep.sweep_id) as recovery:
        sweep.wait_done(0.25)
        recovery.disrupt("scale 9 -> 1")
        scaled = chaos_stack.cli("scale", "1", cwd=tmp_path)
        assert scaled.returncode == 0 and "workers 1/1 running" in scaled.stdout, scaled.stderr
        p = finish(sweep, recovery, "scaled 9 -> 1 replicas at 25 %")
    assert p.duplicates == 0  # stopping workers finish their chunk (warm stop within the grace period)


def test_sigkilling_the_redis_container_mid_sweep_loses_nothing(
    chaos_stack: ClusterStack, tmp_path: Path
) -> None:
    """`docker kill --signal KILL` of Redis (append-only file, fsync every second): the writes of
    its last second may be gone; the points they recorded run again, each is recorded once."""
    scale(chaos_stack, 6, tmp_path)
    sweep = start(chaos_stack, tmp_path, test="redis-sigkill", points=1200, seconds=0.05)
    with closing(chaos_stack.cluster.manager_client()) as manager:
        label = f"com.docker.swarm.service.name={chaos_stack.name}_redis"
        (container,) = manager.containers.list(filters={"label": label})
        with Recovery(sweep.queue, sweep.sweep_id) as recovery:
            sweep.wait_done(0.3)
            recovery.disrupt("Redis container SIGKILLed")
            killed_at = time.monotonic()
            container.kill(signal="KILL")

            def replaced() -> bool:
                running = manager.containers.list(filters={"label": label})
                return any(c.id != container.id for c in running)

            wait_until(replaced, 120, interval=0.3, message="a new Redis container")
            back = time.monotonic() - killed_at
            wait_until(lambda: _done_or_none(sweep) is not None, 60, message="Redis answering")
            finish(
                sweep,
                recovery,
                "SIGKILLed the Redis container at 30 % (append-only file, fsync every second)",
                note=f"new Redis container running after {back:.1f}s",
            )


def test_draining_a_worker_node_mid_sweep_loses_nothing(chaos_stack: ClusterStack, tmp_path: Path) -> None:
    """`docker node update --availability drain`: its workers get SIGTERM, finish their chunks
    within the grace period, and the replicas move to the other nodes."""
    scale(chaos_stack, 6, tmp_path)
    backend = chaos_stack.backend()
    sweep = start(chaos_stack, tmp_path, test="drain", points=1200, seconds=0.05)
    with closing(chaos_stack.cluster.manager_client()) as manager:
        node = manager.nodes.get("worker1")
        try:
            with Recovery(sweep.queue, sweep.sweep_id) as recovery:
                sweep.wait_done(0.3)
                recovery.disrupt("worker node drained")
                drained_at = time.monotonic()
                node.reload()
                node.update({**node.attrs["Spec"], "Availability": "drain"})

                def moved() -> bool:
                    r = backend.replicas()
                    return r.running == 6 and all(p.node != "worker1" for p in r.placements)

                wait_until(moved, 180, interval=0.5, message="the drained node's replicas moved")
                took = time.monotonic() - drained_at
                finish(
                    sweep,
                    recovery,
                    "drained worker node 1 of 3 at 30 %",
                    note=f"replicas moved in {took:.1f}s",
                )
        finally:
            node.reload()
            node.update({**node.attrs["Spec"], "Availability": "active"})
            backend.client.close()


PARTITION = 30.0
LONG_POINT = 5.0
LONG = """
name: chaos-partition
task: {{call: "fixtures.tasks:nap"}}
chunk: 1
params:
  seconds: [{seconds}]
  test: [partition]
  i: {{range: [0, {points}]}}
"""


def busy_on(queue: SweepQueue, sweep_id: str, node: str, fresher_than: float) -> list[str]:
    """Chunk job ids of this sweep that workers on `node` started less than `fresher_than` s ago."""
    now = datetime.now(UTC)
    busy = []
    for w in Worker.all(queue=queue.queue, serializer=JSONSerializer):
        if not w.name.startswith(f"{node}-"):  # swarm worker names: <node>-<slot>.<pid>-<hex>
            continue
        job = w.get_current_job()
        if job is None or not job.id.startswith(job_prefix(sweep_id)) or job.started_at is None:
            continue
        started = job.started_at if job.started_at.tzinfo else job.started_at.replace(tzinfo=UTC)
        if (now - started).total_seconds() < fresher_than:
            busy.append(job.id)
    return busy


def test_partitioning_a_worker_node_for_30s_records_each_point_once(
    chaos_stack: ClusterStack, tmp_path: Path
) -> None:
    """`docker network disconnect` of a worker node for 30 s while its workers are mid-point: its
    chunks are handed to the others after the heartbeat TTL (5 s) and re-run there; the cut-off
    workers finish their points meanwhile and write them when the node is back. Those late writes
    are counted as duplicates and never recorded: each point keeps the re-run's record.

    Points of 5 s, one a chunk, so that the cut comes while the node's workers are less than a
    second into a point: they finish it cut off (before 5 s), the re-run elsewhere is recorded
    within TTL + a reap + one point of waiting + one point (~17 s), and the node returns at 30 s.
    """
    cluster = chaos_stack.cluster
    scale(chaos_stack, 6, tmp_path)
    node = cluster.node("worker2")
    network = cluster.host.networks.get(cluster.network)
    points = 36
    path = write_sweep(tmp_path, LONG.format(seconds=LONG_POINT, points=points))
    out = tmp_path / "out.csv"
    manager = chaos_stack.spawn("run", str(path), "-o", str(out), "-q", cwd=tmp_path)
    queue = chaos_stack.queue(resilient=False)
    sweep = Sweep(manager, queue, load_sweep(path).id, points, out)
    wait_until(lambda: sweep.sweep_id in queue.sweep_ids(), 60, message="the sweep submitted")
    reconnected = False
    try:
        with Recovery(sweep.queue, sweep.sweep_id) as recovery:
            # Both of the node's workers less than a second into a point (they start in step).
            cut = wait_until(
                lambda: (b := busy_on(queue, sweep.sweep_id, node.hostname, 1.0)) and len(b) >= 2 and b,
                120,
                interval=0.05,
                message=f"both workers of {node.hostname} starting a point",
            )
            recovery.disrupt("worker node partitioned")
            network.disconnect(node.container)
            time.sleep(PARTITION)
            reconnect(network, node)
            reconnected = True
            p = finish(
                sweep,
                recovery,
                f"partitioned worker node 2 of 3 for {PARTITION:.0f}s mid-point ({LONG_POINT:g} s points)",
                note=f"{len(cut)} cut-off points written late",
            )
        # every late write was counted (the cut-off workers' points ran twice), none recorded:
        cut_points = {ChunkRef.parse(job_id).start for job_id in cut}  # type: ignore[union-attr]
        with out.open() as f:
            winners = {int(row["i"]): row["worker"] for row in csv.DictReader(f)}
        assert p.duplicates >= len(cut), (p.duplicates, cut)
        assert all(not winners[i].startswith(f"{node.hostname}-") for i in cut_points), (
            f"a late write won: {[(i, winners[i]) for i in cut_points]}"
        )
    finally:
        if not reconnected:
            with suppress(docker.errors.APIError):
                reconnect(network, node)
        cluster.wait_ready(120)


def reconnect(network: docker.models.networks.Network, node: Node) -> None:
    """Join the node container to the cluster network again, at its old address when Docker lets us."""
    try:
        network.connect(node.container, ipv4_address=node.ip)
    except docker.errors.APIError:  # a network without a user-configured subnet
        network.connect(node.container)


def test_restarting_a_worker_nodes_engine_mid_sweep_loses_nothing(
    chaos_stack: ClusterStack, tmp_path: Path
) -> None:
    """Stop and start a worker node's dockerd (PID 1 of its node container: `docker restart`):
    its workers get SIGTERM and stop warm; the node rejoins and takes replicas again."""
    cluster = chaos_stack.cluster
    scale(chaos_stack, 6, tmp_path)
    node = cluster.node("worker1")
    sweep = start(chaos_stack, tmp_path, test="engine-restart", points=1200, seconds=0.05)
    try:
        with Recovery(sweep.queue, sweep.sweep_id) as recovery:
            sweep.wait_done(0.3)
            recovery.disrupt("worker engine restarted")
            restarted_at = time.monotonic()
            cluster.host.containers.get(node.container).stop(timeout=30)
            cluster.start_node("worker1")
            back = time.monotonic() - restarted_at
            finish(
                sweep,
                recovery,
                "restarted the engine of worker node 1 at 30 %",
                note=f"engine back in {back:.1f}s",
            )
    finally:
        with suppress(docker.errors.APIError):
            cluster.start_node("worker1")
