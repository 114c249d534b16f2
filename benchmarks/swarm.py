"""Swarm benchmarks on this machine's engine: the scaling curve and the scale-up latency.

A worker image (swarmrun + benchmarks/tasks.py) and a stack are made for the run, labelled
`swarmrun.bench=<run id>`, and removed at the end, with the install-stage image the build left.
Nothing else on the engine is touched (another engineer's cluster may share it).
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import redis
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from benchmarks.harness import (
    ROOT,
    Row,
    bench_env,
    free_port,
    load_average,
    others_busy,
    say,
    settle,
    wait_for,
)
from benchmarks.local import make_sweep
from swarmrun.backends.swarm import engine
from swarmrun.backends.swarm.backend import SwarmBackend
from swarmrun.backends.swarm.image import build_image, stage_images
from swarmrun.backends.swarm.stack import StackConfig
from swarmrun.execution.queue import SweepQueue
from swarmrun.settings import Settings

LABEL = "swarmrun.bench"
SLEEP_MS = 100.0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _epoch(stamp: bytes | str | None) -> float | None:
    """RQ's UTC timestamps (`2024-06-01T12:00:00.123456Z`) as epoch seconds."""
    if not stamp:
        return None
    text = stamp.decode() if isinstance(stamp, bytes) else stamp
    text = text.rstrip("Z")
    for fmt in ("%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
    return None


class BenchStack:
    """The image and stack of one benchmark run."""

    def __init__(self, nonce: str, base_image: str, redis_image: str, home: Path) -> None:
        self.nonce = nonce
        self.client = engine.connect()
        engine.require_manager(self.client)
        self.home = home
        self.name = f"srbench{nonce}"
        self.tag = f"swarmrun-bench:{nonce}"
        self.base_image = base_image
        self.redis_image = redis_image
        self.stages: set[str] = set()
        self.backend: SwarmBackend | None = None

    def build(self) -> None:
        context = Path(tempfile.mkdtemp(prefix="swarmrun-bench-ctx-"))
        (context / "benchmarks").mkdir()
        (context / "benchmarks" / "__init__.py").write_text('"""Benchmark tasks, in the worker image."""\n')
        (context / "benchmarks" / "tasks.py").write_text((ROOT / "benchmarks" / "tasks.py").read_text())
        lines: list[str] = []
        t0 = time.perf_counter()
        before = self._stage_ids()
        build_image(
            self.client,
            context=context,
            tag=self.tag,
            base_image=self.base_image,
            labels={LABEL: self.nonce},
            home=Settings.from_env().home,
            log=lines.append,
        )
        # Only stage images this build made (a cache hit reuses someone else's: that one stays).
        self.stages = {i for i in self._stage_ids() - before if i[:12] in stage_images(lines)}
        say(f"worker image {self.tag} built in {time.perf_counter() - t0:.0f}s")

    def _stage_ids(self) -> set[str]:
        images = self.client.images.list(all=True, filters={"label": "swarmrun.stage=install"})
        return {str(image.id).split(":", 1)[-1] for image in images}

    def deploy(self, replicas: int) -> SwarmBackend:
        config = StackConfig(
            name=self.name,
            image=self.tag,
            redis_image=self.redis_image,
            redis_port=free_port(),
            stop_grace_period=60,
            labels=((LABEL, self.nonce),),
        )
        self.backend = SwarmBackend(
            self.client, config, home=self.home, environ=self.env(), extra_labels={LABEL: self.nonce}
        )
        self.backend.deploy(replicas)
        return self.backend

    def env(self) -> dict[str, str]:
        return bench_env(SWARMRUN_HOME=str(self.home), SWARMRUN_STACK=self.name)

    def queue(self) -> SweepQueue:
        assert self.backend is not None
        url = self.backend.redis_url()
        connection = redis.Redis.from_url(url, socket_connect_timeout=5)
        wait_for(lambda: _pings(connection), 90, "the stack's Redis", interval=0.5)
        return SweepQueue(connection, "swarmrun")

    def remove(self) -> None:
        if self.backend is not None:
            try:
                # Workers first, while Redis still answers: a worker finishing its chunk would
                # otherwise wait for a Redis that is being removed with it.
                self.backend.scale(0, wait=True)
                self.backend.remove(volumes=True)
            except Exception as e:  # report, and go on removing the rest
                say(f"removing stack {self.name} failed: {e}")
        for image in self.client.images.list(filters={"label": f"{LABEL}={self.nonce}"}):
            try:
                self.client.images.remove(image.id, force=True)
            except docker.errors.APIError as e:
                say(f"removing image {image.id[:19]} failed: {e}")
        for stage in self.stages:
            # A stage still used as another build's cache parent stays.
            with contextlib.suppress(docker.errors.APIError):
                self.client.images.remove(stage, force=False)
                say(f"removed the build's install-stage image {stage[:12]}")


def _pings(connection: redis.Redis) -> bool:
    try:
        return bool(connection.ping())
    except redis.RedisError:
        return False


def _converge(backend: SwarmBackend, queue: SweepQueue, replicas: int, timeout: float = 300) -> None:
    """Scale, and wait until exactly `replicas` workers are registered (the stopped ones gone)."""
    backend.scale(replicas, wait=True)
    wait_for(
        lambda: queue.live_workers() == replicas, timeout, f"{replicas} registered workers", interval=0.2
    )


def scaling_curve(stack: BenchStack, queue: SweepQueue, counts: list[int], per_replica: int) -> list[Row]:
    """100 ms sleep points at each replica count: points/s end to end and in steady state (10-90%)."""
    assert stack.backend is not None
    rows: list[Row] = []
    for n in counts:
        _converge(stack.backend, queue, n)
        points = per_replica * n
        sweep = make_sweep(
            f"bench-scale-{n}",
            {"call": "benchmarks.tasks:sleep"},
            points,
            {"ms": SLEEP_MS},
            f"{stack.nonce}-{n}",
        )
        say(f"scaling: {n} replicas, {points} points of {SLEEP_MS:g} ms (load {load_average():.2f})")
        marks: dict[float, float] = {}
        t0 = time.perf_counter()
        sid = queue.submit(sweep).sweep_id
        while True:
            done = queue.progress(sid).done
            now = time.perf_counter()
            for fraction in (0.1, 0.9):
                if fraction not in marks and done >= fraction * points:
                    marks[fraction] = now
            if done >= points:
                break
            if now - t0 > 600:
                raise TimeoutError(f"{n} replicas: {done}/{points} after 600 s")
            time.sleep(0.05)
        seconds = now - t0
        p = queue.progress(sid)
        steady = 0.8 * points / (marks[0.9] - marks[0.1]) if marks[0.9] > marks[0.1] else 0.0
        rows.append(
            Row(
                "swarm scaling",
                f"{n} replicas",
                "swarmrun (swarm)",
                n,
                points,
                seconds,
                note=f"steady {steady:.1f} points/s; {p.duplicates} duplicates; load {load_average():.1f}",
                extra={"steady_rate": steady},
            )
        )
    one = rows[0]
    for row in rows:
        ideal = one.rate / one.workers * row.workers
        row.ratio, row.baseline = row.rate / ideal, "efficiency vs linear (end to end)"
        steady_one = one.extra["steady_rate"] / one.workers * row.workers
        row.extra["steady_efficiency"] = row.extra["steady_rate"] / steady_one if steady_one else 0.0
        row.note = f"steady-state efficiency {row.extra['steady_efficiency']:.0%}; " + row.note
    last = rows[-1]
    if last.workers >= 32:
        last.target, last.met = ">= 90% of linear", (last.ratio or 0) >= 0.9
    return rows


def scale_latency(stack: BenchStack, queue: SweepQueue, target: int) -> list[Row]:
    """From `swarmrun scale TARGET` (1 replica running a sweep) until TARGET workers run chunks."""
    assert stack.backend is not None
    _converge(stack.backend, queue, 1)
    points = target * 10 * 120  # two minutes of work for `target` replicas: never runs dry
    sweep = make_sweep(
        "bench-latency",
        {"call": "benchmarks.tasks:sleep"},
        points,
        {"ms": SLEEP_MS},
        f"{stack.nonce}-latency",
    )
    sid = queue.submit(sweep).sweep_id
    try:
        return _scale_latency(stack, queue, target, sid)
    finally:
        queue.cancel(sid)


def _scale_latency(stack: BenchStack, queue: SweepQueue, target: int, sid: str) -> list[Row]:
    wait_for(lambda: queue.progress(sid).done >= 5, 120, "the first replica to run points", interval=0.1)
    # Scaling the previous step's replicas down leaves the engine busy for a while (stopping and
    # removing containers); timing a scale-up into that measures the leftovers, not `scale`.
    settled = settle()
    say(
        f"scale latency: `swarmrun scale {target}` with 1 replica busy ({settled}; load {load_average():.2f})"
    )
    connection = queue.connection
    first_busy: dict[str, float] = {}
    t0_wall, t0 = time.time(), time.perf_counter()
    cli = subprocess.Popen(
        [sys.executable, "-m", "swarmrun", "scale", str(target)],
        env=stack.env(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    cli_done: float | None = None
    while time.perf_counter() - t0 < 300:
        now = time.perf_counter()
        if cli_done is None and cli.poll() is not None:
            cli_done = now - t0
        names = [_text(n) for n in connection.smembers(WORKERS_BY_QUEUE_KEY % "swarmrun")]
        pipe = connection.pipeline(transaction=False)
        for key in names:
            pipe.hget(key, "state")
        for key, state in zip(names, pipe.execute(), strict=True):
            if state == b"busy" and key not in first_busy:
                first_busy[key] = now - t0
        if len(first_busy) >= target and cli_done is not None:
            break
        time.sleep(0.1)
    out, err = cli.communicate(timeout=120)
    if cli.returncode != 0:
        raise RuntimeError(f"swarmrun scale failed: {err.strip()}")
    births = _births(connection)
    starts = _first_starts(connection, sid)
    containers = sorted(t - t0_wall for t in _task_starts(stack) if t >= t0_wall - 1)
    registered = sorted(t - t0_wall for t in births.values() if t >= t0_wall - 1)
    started = sorted(t - t0_wall for name, t in starts.items() if t >= t0_wall - 1)
    polled = sorted(first_busy.values())
    # The replica that was running already is one of the `target`: the last of the others decides.
    need = target - 1
    consuming = started[need - 1] if len(started) >= need else None
    if consuming is None:
        consuming = polled[target - 1] if len(polled) >= target else float("nan")
    last = f", the last after {registered[-1]:.1f}s" if registered else ""
    note = (
        f"{len(containers)} containers running, the last after {containers[-1]:.1f}s; " if containers else ""
    )
    note += f"{len(registered)} workers registered{last}"
    note += f"; `swarmrun scale` returned after {cli_done or float('nan'):.1f}s; {others_busy()}; {settled}"
    row = Row(
        "scale latency",
        f"1 -> {target} replicas consuming",
        "swarmrun scale",
        target,
        0,
        consuming,
        target="< 10 s",
        met=consuming < 10,
        note=note,
        extra={
            "cli_seconds": cli_done or float("nan"),
            "containers_last": containers[-1] if containers else float("nan"),
            "registered_last": registered[-1] if registered else float("nan"),
            "polled_last": polled[target - 1] if len(polled) >= target else float("nan"),
        },
    )
    return [row]


def _task_starts(stack: BenchStack) -> list[float]:
    """When the engine saw each running worker task start (its status timestamp), epoch seconds."""
    assert stack.backend is not None
    service = stack.client.services.get(stack.backend.worker_service)
    out = []
    for task in service.tasks(filters={"desired-state": "running"}):
        status = task.get("Status", {})
        if status.get("State") == "running":
            stamp = re.sub(r"(\.\d{6})\d*", r"\1", status.get("Timestamp", ""))
            when = _epoch(stamp)
            if when is not None:
                out.append(when)
    return out


def _births(connection: redis.Redis) -> dict[str, float]:
    out = {}
    for key in connection.smembers(WORKERS_BY_QUEUE_KEY % "swarmrun"):
        birth = _epoch(connection.hget(key, "birth"))
        if birth is not None:
            out[_text(key)] = birth
    return out


def _first_starts(connection: redis.Redis, sweep_id: str) -> dict[str, float]:
    """Each worker's first chunk start in this sweep, from the chunk jobs' own records."""
    first: dict[str, float] = {}
    for key in connection.scan_iter(match=f"rq:job:sr-{sweep_id}-*", count=1000):
        if key.count(b":") != 2:
            continue
        worker, started = connection.hmget(key, "worker_name", "started_at")
        when = _epoch(started)
        if worker and when is not None:
            name = _text(worker)
            first[name] = min(when, first.get(name, when))
    return first


def run(
    rows: list[Row],
    *,
    quick: bool,
    replicas: list[int],
    scale_to: int,
    base_image: str,
    redis_image: str,
    nonce: str,
) -> None:
    """Append the swarm rows to `rows` as they are measured (an interrupted run keeps them)."""
    with tempfile.TemporaryDirectory(prefix="swarmrun-bench-home-") as home:
        stack = BenchStack(nonce, base_image, redis_image, Path(home))
        try:
            say(f"building the worker image ({others_busy()})")
            stack.build()
            stack.deploy(1)
            queue = stack.queue()
            per_replica = 40 if quick else 150
            steps: list[tuple[str, Callable[[], list[Row]]]] = [
                ("swarm scaling", lambda: scaling_curve(stack, queue, replicas, per_replica)),
                ("scale latency", lambda: scale_latency(stack, queue, scale_to)),
            ]
            for name, step in steps:
                try:
                    rows += step()
                except Exception as e:  # a failed part is reported as such; the others still run
                    say(f"{name} failed: {type(e).__name__}: {e}")
                    rows.append(
                        Row(
                            name,
                            "failed",
                            "swarmrun (swarm)",
                            0,
                            0,
                            0.0,
                            met=False,
                            note=f"{type(e).__name__}: {e}"[:200],
                        )
                    )
        finally:
            say(f"removing stack {stack.name} and image {stack.tag}")
            stack.remove()
