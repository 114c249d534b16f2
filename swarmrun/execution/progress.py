"""Progress: measured rate and ETA, and the text the CLI prints. Pure functions of values."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from swarmrun.backends import Replicas
from swarmrun.execution.queue import Progress

BAR_WIDTH = 28


@dataclass
class RateMeter:
    """Points per second over the last `window` seconds of (time, done) samples."""

    window: float = 10.0
    samples: deque[tuple[float, int]] = field(default_factory=deque)

    def add(self, t: float, done: int) -> None:
        self.samples.append((t, done))
        while len(self.samples) > 2 and t - self.samples[0][0] > self.window:
            self.samples.popleft()

    @property
    def rate(self) -> float | None:
        if len(self.samples) < 2:
            return None
        (t0, d0), (t1, d1) = self.samples[0], self.samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else None


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def eta(p: Progress, rate: float | None) -> float | None:
    if p.complete:
        return 0.0
    if not rate or rate <= 0:
        return None
    return (p.size - p.done) / rate


def bar(done: int, total: int, width: int = BAR_WIDTH) -> str:
    filled = width if total == 0 else min(width, done * width // total)
    return "#" * filled + "-" * (width - filled)


def progress_line(p: Progress, rate: float | None, replicas: Replicas | None = None) -> str:
    """One line: bar, done/failed/total, points/s, ETA (and workers when known)."""
    pct = 100.0 if p.size == 0 else 100.0 * p.done / p.size
    parts = [f"[{bar(p.done, p.size)}] {p.done}/{p.size} ({pct:.0f}%)", f"failed {p.failed}"]
    parts.append(f"{rate:.1f} points/s" if rate is not None else "-- points/s")
    parts.append(f"ETA {duration(eta(p, rate))}")
    if replicas is not None:
        parts.append(f"workers {replicas_text(replicas)}")
    return " | ".join(parts)


def replicas_text(r: Replicas) -> str:
    """`4/4 running (node1: 2, node2: 2)`: running/desired workers, and where they run when known."""
    per_node = ", ".join(f"{p.node}: {p.running}" for p in r.placements)
    return f"{r.running}/{r.desired} running" + (f" ({per_node})" if per_node else "")


def status_lines(
    p: Progress,
    rate: float | None = None,
    replicas: Replicas | None = None,
    chunks: tuple[int, int] | None = None,
) -> list[str]:
    """The block `swarmrun status` prints for one sweep."""
    spp = p.seconds_per_point
    lines = [
        f"sweep {p.sweep_id}  {p.name}  [{'complete' if p.complete and p.state == 'active' else p.state}]",
        f"  points     {p.size} total, {p.done} done ({p.ok} ok, {p.error} error, {p.timeout} timeout,"
        f" {p.cached} cached), {p.size - p.done} pending",
        f"  executions {p.executions} ({p.duplicates} duplicate)"
        + (f", {spp * 1000:.3g} ms per point" if spp is not None else ""),
    ]
    if rate is not None:
        lines.append(f"  rate       {rate:.1f} points/s, ETA {duration(eta(p, rate))}")
    if chunks is not None:
        lines.append(f"  chunks     {chunks[0]} running, {chunks[1]} queued")
    if replicas is not None:
        lines.append(f"  workers    {replicas_text(replicas)}")
    return lines
