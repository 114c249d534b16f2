"""What the dashboard shows, read from Redis in bounded pieces (a sweep may have 10^6 points).

Nothing here loads every result at once: lists are paginated, failures are grouped while
scanning the errors hash, plots are aggregated per (x, hue) cell while streaming the records.
"""

from __future__ import annotations

import json
import math
import socket
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rq.utils import utcparse
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from swarmrun.backends import Placement, Replicas
from swarmrun.definition.sweep import Sweep
from swarmrun.execution import progress as fmt
from swarmrun.execution.keys import Keys
from swarmrun.execution.outputs import sweep_dir_name
from swarmrun.execution.outputstore import OutputCollector
from swarmrun.execution.pointinfo import point_info
from swarmrun.execution.queue import Progress, SweepQueue, worker_alive
from swarmrun.execution.results import Result, iter_results

PLOT_POINTS = 50_000  # a plot of a larger sweep reads an evenly strided sample of this many points
MAX_CELLS = 20_000  # plot cells (x, hue) kept; beyond this the plot says it is truncated
SCAN = 2000


@dataclass
class Meters:
    """A rate meter per sweep, fed whenever the dashboard reads the sweep's progress."""

    meters: dict[str, fmt.RateMeter] = field(default_factory=dict)
    history: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def rate(self, p: Progress, now: float) -> float | None:
        meter = self.meters.setdefault(p.sweep_id, fmt.RateMeter())
        meter.add(now, p.done)
        rate = meter.rate
        if rate is not None:
            series = self.history.setdefault(p.sweep_id, [])
            if not series or now - series[-1][0] >= 1.0:
                series.append((now, rate))
                del series[:-600]
        return rate


def _progress_dict(p: Progress, rate: float | None) -> dict[str, Any]:
    eta = fmt.eta(p, rate)
    return {
        "id": p.sweep_id,
        "name": p.name,
        "state": fmt.state_text(p),
        "size": p.size,
        "done": p.done,
        "ok": p.ok,
        "failed": p.failed,
        "error": p.error,
        "timeout": p.timeout,
        "cached": p.cached,
        "executions": p.executions,
        "duplicates": p.duplicates,
        "rate": rate,
        "eta": eta,
        "eta_text": fmt.duration(eta),
        "submitted": p.created,
        "submitted_text": time.strftime("%Y-%m-%d %H:%M", time.localtime(p.created)),
    }


def sweeps(queue: SweepQueue, meters: Meters, *, offset: int = 0, limit: int = 100) -> dict[str, Any]:
    """A page of sweeps, newest first."""
    ids = list(reversed(queue.sweep_ids()))
    now = time.monotonic()
    page = []
    for sid in ids[offset : offset + limit]:
        p = queue.progress(sid)
        page.append(_progress_dict(p, meters.rate(p, now)))
    return {"total": len(ids), "offset": offset, "sweeps": page}


def workers_by_node(queue: SweepQueue, *, max_silence: float = 60.0) -> Replicas:
    """Live workers of this queue per host (local processes, or containers by their node name)."""
    conn = queue.connection
    keys = list(conn.smembers(WORKERS_BY_QUEUE_KEY % queue.queue.name))
    pipe = conn.pipeline()
    for key in keys:
        pipe.hmget(key, "birth", "death", "hostname", "pid", "last_heartbeat", "name")
    here, now = socket.gethostname(), datetime.now(UTC)
    nodes: dict[str, int] = defaultdict(int)
    for birth, death, host, pid, beat, name in pipe.execute():
        if birth is None or death is not None:
            continue
        hostname = host.decode() if host else None
        last = utcparse(beat.decode()) if beat else None
        if worker_alive(
            hostname, int(pid) if pid else None, last, now=now, here=here, max_silence=max_silence
        ):
            nodes[_node_of(name.decode() if name else "", hostname or "?")] += 1
    total = sum(nodes.values())
    return Replicas(total, total, tuple(Placement(n, c) for n, c in sorted(nodes.items())))


def _node_of(worker_name: str, hostname: str) -> str:
    """Swarm workers are named `<node>-<slot>.<suffix>`; local ones carry this host's name."""
    head = worker_name.split(".", 1)[0]
    node, _, slot = head.rpartition("-")
    return node if node and slot.isdigit() else hostname


def live(
    queue: SweepQueue, sid: str, meters: Meters, replicas: Callable[[], Replicas] | None = None
) -> dict[str, Any]:
    """One sweep's live state: progress, rate (and its recent history), workers, chunks."""
    p = queue.progress(sid)
    now = time.monotonic()
    rate = meters.rate(p, now)
    workers = replicas() if replicas is not None else workers_by_node(queue)
    running, queued = queue.chunk_counts(sid)
    out = _progress_dict(p, rate)
    out.update(
        workers={"running": workers.running, "desired": workers.desired},
        nodes=[{"node": pl.node, "running": pl.running} for pl in workers.placements],
        chunks={"running": running, "queued": queued},
        time=time.time(),
    )
    return out


def _scan_errors(queue: SweepQueue, sid: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for field_, raw in queue.connection.hscan_iter(Keys(sid).errors, count=SCAN):
        yield int(field_), json.loads(raw)


def error_text(record: dict[str, Any]) -> str:
    return str(record.get("e") or record.get("s") or "error")


def failure_groups(queue: SweepQueue, sid: str, *, limit: int = 100) -> dict[str, Any]:
    """Failed points grouped by their error text, largest group first."""
    counts: dict[str, int] = defaultdict(int)
    statuses: dict[str, str] = {}
    for _, record in _scan_errors(queue, sid):
        text = error_text(record)
        counts[text] += 1
        statuses.setdefault(text, str(record.get("s", "error")))
    groups = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return {
        "total": sum(counts.values()),
        "groups": [{"error": e, "count": c, "status": statuses[e]} for e, c in groups[:limit]],
        "more": max(0, len(groups) - limit),
    }


def group_indices(queue: SweepQueue, sid: str, error: str) -> list[int]:
    """Every failed point whose error text is `error` (what "retry these" re-runs)."""
    return sorted(i for i, record in _scan_errors(queue, sid) if error_text(record) == error)


def group_points(
    queue: SweepQueue, sweep: Sweep, sid: str, error: str, *, offset: int = 0, limit: int = 50
) -> dict[str, Any]:
    """A page of one failure group's points, with their params."""
    indices = group_indices(queue, sid, error)
    page = indices[offset : offset + limit]
    return {
        "total": len(indices),
        "offset": offset,
        "points": [{"index": i, "params": sweep.point(i)} for i in page],
    }


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def point_file(
    queue: SweepQueue, sweep: Sweep, sid: str, index: int, name: str, results_dir: Path
) -> Path | None:
    """Where one output file of a point is on this machine, None when the point has no such file.

    Files are where `run` collects them (`<results_dir>/<name>-<id8>/points/<index>/`), or on
    the shared `outputs_dir:` mount; ones still in Redis (a sweep only submitted) are fetched
    there first. Only names the point's record lists are served.
    """
    info = point_info(queue, sweep, sid, index)
    if name not in {f.name for f in info.files}:
        return None
    base = Path(sweep.options.outputs_dir) if sweep.options.outputs_dir else results_dir
    dest = base / sweep_dir_name(sweep.name, sid)
    path = dest / "points" / str(index) / name
    if not path.is_file() and not sweep.options.outputs_dir:
        OutputCollector(queue, sweep, sid, dest).collect()
    return path if path.is_file() else None


def point(queue: SweepQueue, sweep: Sweep, sid: str, index: int) -> dict[str, Any]:
    """One point: params, status, value, error and traceback, executions, log tail, files."""
    info = point_info(queue, sweep, sid, index)
    r = info.result
    return {
        "index": index,
        "params": _json_safe(info.params),
        "status": r.status
        if r
        else ("running" if any(e.status == "running" for e in info.executions) else "pending"),
        "value": _json_safe(r.value) if r else None,
        "error": r.error if r else None,
        "traceback": r.traceback if r else None,
        "duration": r.duration if r else None,
        "worker": r.worker if r else None,
        "attempt": r.attempt if r else None,
        "cached": r.cached if r else False,
        "exit_code": r.exit_code if r else None,
        "executions": [
            {
                "token": e.token,
                "worker": e.worker,
                "node": e.node,
                "start": e.start,
                "duration": e.duration,
                "exit_code": e.exit_code,
                "status": e.status,
                "won": e.token == info.token,
            }
            for e in info.executions
        ],
        "log": info.log or "\n".join(t for t in (r.stdout, r.stderr) if t) if r else info.log or "",
        "files": [{"name": f.name, "size": f.size, "sha256": f.sha256} for f in info.files],
    }


def _numeric(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def columns(queue: SweepQueue, sweep: Sweep, sid: str, *, sample: int = 200) -> dict[str, Any]:
    """The axes and the value columns a plot can use (value keys from the first records)."""
    values: dict[str, None] = {}
    for n, r in enumerate(iter_results(queue, sweep, sid)):
        if n >= sample:
            break
        if isinstance(r.value, dict):
            values.update({k: None for k, v in r.value.items() if _numeric(v) is not None})
        elif _numeric(r.value) is not None:
            values["value"] = None
    values["duration"] = None
    varying = [n for axis in sweep.axes if axis.size > 1 for n in axis.names]
    return {"axes": list(sweep.param_names), "varying": varying, "values": list(values)}


def _y_of(r: Result, y: str) -> float | None:
    if y == "duration":
        return _numeric(r.duration)
    if y == "value":
        return _numeric(r.value) if not isinstance(r.value, dict) else _numeric(r.value.get("value"))
    return _numeric(r.value.get(y)) if isinstance(r.value, dict) else None


def plot(
    queue: SweepQueue, sweep: Sweep, sid: str, *, x: str, y: str, hue: str | None = None
) -> dict[str, Any]:
    """Mean of `y` per (x, hue) cell, streamed over the records (memory bounded by MAX_CELLS)."""
    cells: dict[tuple[Any, Any], list[float]] = {}
    truncated = False
    stride = max(1, -(-sweep.size // PLOT_POINTS))
    for r in iter_results(queue, sweep, sid) if stride == 1 else _strided(queue, sweep, sid, stride):
        if r.status != "ok":
            continue
        value = _y_of(r, y)
        if value is None:
            continue
        key = (r.params.get(x), r.params.get(hue) if hue else None)
        cell = cells.get(key)
        if cell is None:
            if len(cells) >= MAX_CELLS:
                truncated = True
                continue
            cell = cells[key] = [0.0, 0.0]
        cell[0] += value
        cell[1] += 1
    series: dict[Any, list[tuple[Any, float, int]]] = defaultdict(list)
    for (xv, hv), (total, n) in cells.items():
        series[hv].append((xv, total / n, int(n)))
    out = []
    for hv in sorted(series, key=_sort_key):
        pts = sorted(series[hv], key=lambda t: _sort_key(t[0]))
        out.append(
            {
                "hue": hv,
                "x": [_json_safe(p[0]) for p in pts],
                "y": [p[1] for p in pts],
                "n": [p[2] for p in pts],
            }
        )
    return {"x": x, "y": y, "hue": hue, "series": out, "truncated": truncated, "stride": stride}


def _strided(queue: SweepQueue, sweep: Sweep, sid: str, stride: int) -> Iterator[Result]:
    """Every `stride`-th point's result (a bounded sample of a huge sweep), in index order."""
    indices = range(0, sweep.size, stride)
    origins = queue.origins(sweep.task.key)
    for start in range(0, len(indices), 4096):
        block = list(indices[start : start + 4096])
        raws = queue.record_values(sid, sweep.task.key, block, sweep.keys_of)
        for index, raw in zip(block, raws, strict=True):
            if raw is not None:
                yield Result.decode(index, sweep.point(index), raw, sid, origins)


def _sort_key(v: Any) -> tuple[int, Any]:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return (0, v)
    return (1, str(v))
