"""The benchmark report: a table on stdout, a CSV, and a PNG (matplotlib when installed)."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

from benchmarks.harness import Row

COLUMNS = [
    "section",
    "case",
    "engine",
    "workers",
    "points",
    "seconds",
    "points_per_s",
    "ratio",
    "ratio_of",
    "target",
    "met",
    "note",
]


def _num(x: float) -> str:
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def table(rows: Sequence[Row]) -> str:
    """A fixed-width text table (also valid Markdown)."""
    header = [
        "section",
        "case",
        "engine",
        "workers",
        "points",
        "seconds",
        "points/s",
        "ratio",
        "target",
        "note",
    ]
    body = []
    for r in rows:
        met = "" if r.met is None else (" MET" if r.met else " MISSED")
        body.append(
            [
                r.section,
                r.case,
                r.engine,
                str(r.workers) if r.workers else "",
                f"{r.points:,}",
                f"{r.seconds:.3f}",
                _num(r.rate),
                "" if r.ratio is None else f"{r.ratio:.3g}x",
                (r.target + met).strip(),
                r.note,
            ]
        )
    widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h) for i, h in enumerate(header)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=False)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + " |" for row in body]
    return "\n".join(lines)


def write_csv(rows: Sequence[Row], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*COLUMNS, "extra"])
        for r in rows:
            writer.writerow(
                [
                    r.section,
                    r.case,
                    r.engine,
                    r.workers,
                    r.points,
                    f"{r.seconds:.4f}",
                    f"{r.rate:.3f}",
                    "" if r.ratio is None else f"{r.ratio:.4f}",
                    r.baseline,
                    r.target,
                    "" if r.met is None else str(r.met).lower(),
                    r.note,
                    json.dumps(r.extra) if r.extra else "",
                ]
            )


def write_png(rows: Sequence[Row], path: Path, title: str) -> str:
    """The scaling curve (points/s and efficiency vs replicas) and the local rates, as a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]'): no PNG written"
    scaling = [r for r in rows if r.section == "swarm scaling"]
    local = [r for r in rows if r.section == "call points"]
    panels = (1 if scaling else 0) + (1 if local else 0)
    if not panels:
        return "nothing to plot"
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.8), squeeze=False)
    ax_iter = iter(axes[0])
    if scaling:
        ax = next(ax_iter)
        n = [r.workers for r in scaling]
        rate = [r.rate for r in scaling]
        linear = [scaling[0].rate / scaling[0].workers * k for k in n]
        ax.plot(n, linear, "--", color="grey", label="linear (from 1 replica)")
        ax.plot(n, rate, "o-", color="tab:blue", label="measured (end to end)")
        steady = [r.extra.get("steady_rate") for r in scaling]
        if all(s is not None for s in steady):
            ax.plot(n, steady, "s:", color="tab:green", label="measured (steady, 10-90%)")
        for k, r in zip(n, scaling, strict=False):
            if r.ratio is not None:
                ax.annotate(
                    f"{r.ratio:.0%}", (k, r.rate), textcoords="offset points", xytext=(4, -12), fontsize=8
                )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_xticks(n, [str(k) for k in n])
        ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("worker replicas (Swarm service)")
        ax.set_ylabel("points / s (100 ms sleep points)")
        ax.set_title("Scaling on one Swarm node (labels: efficiency vs linear)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    if local:
        ax = next(ax_iter)
        workloads = list(dict.fromkeys(r.case for r in local))
        engines = list(dict.fromkeys(r.engine for r in local))
        width = 0.8 / len(engines)
        for j, engine in enumerate(engines):
            values = [
                next((r.rate for r in local if r.case == w and r.engine == engine), 0.0) for w in workloads
            ]
            ax.bar([i + j * width for i in range(len(workloads))], values, width, label=engine)
        ax.set_xticks([i + width * (len(engines) - 1) / 2 for i in range(len(workloads))], workloads)
        ax.set_yscale("log")
        ax.set_ylabel("points / s (log)")
        ax.set_title(f"Call points, {local[0].workers} workers, one machine")
        ax.grid(True, axis="y", which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"plot written to {path}"
