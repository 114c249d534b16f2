"""The "outputs overhead" case: 1,000 points writing 100 KiB each on local workers, with `outputs:`
(files sent through Redis in pieces and fetched by the manager as the sweep runs) against the same
sweep without it (the files are written, then discarded with the point's directory).

The clock runs from submit until every point has its result and, with outputs, every file is on
the manager's disk. Target: collecting adds no more than 10% of wall time.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import ROOT, RedisServer, Row, bench_env, load_average, processes, say, wait_for
from swarmrun.definition.sweepfile import parse_sweep
from swarmrun.execution.outputstore import OutputCollector, queue_key
from swarmrun.execution.queue import SweepQueue

SIZE = 100 * 1024


def write_point(i: int, size: int = SIZE, **params: object) -> int:
    """The benchmarked point: writes `size` bytes into its own directory."""
    path = Path(os.environ["SWARMRUN_POINT_DIR"]) / "out.bin"
    path.write_bytes(i.to_bytes(4, "little") * (size // 4))
    return i


def time_sweep(server: RedisServer, *, points: int, workers: int, outputs: bool, nonce: str) -> float:
    spec: dict[str, object] = {
        "name": "bench-outputs",
        "task": {"call": "benchmarks.outputs:write_point"},
        "logs": "none",
        "params": {"run": [f"{nonce}-{outputs}"], "i": {"range": [0, points]}},
    }
    if outputs:
        spec["outputs"] = ["*.bin"]
    sweep = parse_sweep(spec, base_dir=ROOT)
    connection = server.fresh()
    queue = SweepQueue(connection, "swarmrun")
    with tempfile.TemporaryDirectory(prefix="bench-outputs-") as dest, processes() as procs:
        collector = OutputCollector(queue, sweep, sweep.id, Path(dest))
        procs.start(
            [sys.executable, "-m", "swarmrun", "worker"], bench_env(SWARMRUN_REDIS_URL=server.url), workers
        )
        wait_for(lambda: queue.live_workers() >= workers, 60, "swarmrun workers")
        t0 = time.perf_counter()
        sid = queue.submit(sweep).sweep_id

        def finished() -> bool:
            if outputs:
                collector.collect()
            return queue.progress(sid).done >= sweep.size and (
                not outputs or connection.scard(queue_key(sid)) == 0
            )

        t1 = wait_for(finished, 1200, "outputs sweep", interval=0.05)
        if outputs:
            fetched = len(list(Path(dest).glob("points/*/out.bin")))
            if fetched != points:
                raise RuntimeError(f"outputs: {fetched} of {points} files fetched")
    return t1 - t0


def run(rows: list[Row], server: RedisServer, *, quick: bool, workers: int, nonce: str) -> None:
    points = 300 if quick else 1000
    times: dict[bool, float] = {}
    for outputs in (False, True, False, True):  # interleaved, best of two, on a noisy machine
        say(f"outputs overhead: {points} x 100 KiB, outputs={outputs} (load {load_average():.2f})")
        seconds = time_sweep(server, points=points, workers=workers, outputs=outputs, nonce=nonce)
        times[outputs] = min(times.get(outputs, seconds), seconds)
    base = Row("outputs overhead", "100 KiB per point", "without outputs:", workers, points, times[False])
    ours = Row("outputs overhead", "100 KiB per point", "with outputs:", workers, points, times[True])
    ours.ratio, ours.baseline = times[True] / times[False], "wall time / without"
    ours.target, ours.met = "<= 1.10", ours.ratio <= 1.10
    rows.extend([base, ours])
