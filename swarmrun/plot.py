"""`swarmrun plot`: a value against one axis (lines split by a second), or a heatmap over two axes.

Drawn by matplotlib (the `plot` extra) from the same server-side aggregation the dashboard uses:
the mean per (x, hue) cell, streamed over the records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from swarmrun.dashboard import data
from swarmrun.definition.sweep import Sweep
from swarmrun.errors import BadOption, SwarmrunError
from swarmrun.execution.queue import SweepQueue


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SwarmrunError("swarmrun plot needs matplotlib: pip install 'swarmrun[plot]'") from None
    return plt


def draw(
    queue: SweepQueue,
    sweep: Sweep,
    sid: str,
    path: Path,
    *,
    x: str,
    y: str | None,
    hue: str | None = None,
    value: str | None = None,
) -> str:
    """Write the plot to `path`; returns what was drawn ("lines" or "heatmap")."""
    axes = sweep.param_names
    if x not in axes:
        raise BadOption(f"--x {x}: not an axis of the sweep (its axes: {', '.join(axes)})")
    if hue is not None and hue not in axes:
        raise BadOption(f"--hue {hue}: not an axis of the sweep (its axes: {', '.join(axes)})")
    values = data.columns(queue, sweep, sid)["values"]
    heatmap = y in axes
    measured = value if heatmap else y
    if measured is None:
        if not values:
            raise BadOption("the sweep has no numeric value to plot yet")
        measured = values[0]
    if measured not in values and measured != "value":
        raise BadOption(f"{measured!r} is not a numeric value of the results (values: {', '.join(values)})")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    if heatmap:
        assert y is not None
        cells = data.plot(queue, sweep, sid, x=x, y=measured, hue=y)
        xs = sorted({v for s in cells["series"] for v in s["x"]}, key=data._sort_key)
        ys = [s["hue"] for s in cells["series"]]
        grid = [[_at(s, xv) for xv in xs] for s in cells["series"]]
        mesh = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis")
        ax.set_xticks(range(len(xs)), [f"{v:.3g}" if isinstance(v, float) else str(v) for v in xs])
        ax.set_yticks(range(len(ys)), [str(v) for v in ys])
        _thin(ax, len(xs))
        fig.colorbar(mesh, ax=ax, label=measured)
        ax.set_ylabel(y)
    else:
        cells = data.plot(queue, sweep, sid, x=x, y=measured, hue=hue)
        for s in cells["series"]:
            ax.plot(s["x"], s["y"], marker="o", markersize=3, label=f"{hue}={s['hue']}" if hue else None)
        if hue:
            ax.legend(title=hue)
        ax.set_ylabel(measured)
        ax.grid(alpha=0.3)
    ax.set_xlabel(x)
    ax.set_title(f"{sweep.name} ({sid[:8]})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return "heatmap" if heatmap else "lines"


def _at(series: dict[str, Any], xv: Any) -> float:
    try:
        return float(series["y"][series["x"].index(xv)])
    except ValueError:
        return float("nan")


def _thin(ax: Any, n: int, most: int = 12) -> None:
    """At most `most` tick labels on the x axis."""
    step = max(1, n // most)
    for k, label in enumerate(ax.get_xticklabels()):
        label.set_visible(k % step == 0)
