"""`swarmrun plot` as a user types it: lines, lines split by an axis, a heatmap, no matplotlib."""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import Processes, write_sweep

HYPOT = """
name: hypot
task: {call: "fixtures.tasks:hypot"}
params:
  x: {range: [0, 5]}
  y: [0.5, 1.5, 2.5]
"""
PNG = b"\x89PNG\r\n\x1a\n"


def test_plot_lines_hue_and_heatmap(procs: Processes, tmp_path: Path) -> None:
    path = write_sweep(tmp_path, HYPOT)
    assert procs.cli("run", str(path), "-w", "1", "-q").returncode == 0
    for args, kind in (
        (["--x", "x", "--y", "r"], "lines"),
        (["--x", "x", "--y", "r", "--hue", "y"], "lines"),
        (["--x", "x", "--y", "y", "--value", "sum"], "heatmap"),
        (["--x", "x", "--y", "y"], "heatmap"),
    ):
        out = tmp_path / f"{kind}-{len(args)}.png"
        r = procs.cli("plot", *args, "-o", str(out))
        assert r.returncode == 0, r.stderr
        assert f"{kind} plot written to {out}" in r.stderr
        assert out.read_bytes().startswith(PNG) and out.stat().st_size > 5000
    default = procs.cli("plot", "--x", "x")
    assert default.returncode == 0, default.stderr
    assert list((tmp_path / "swarmrun-results").glob("hypot-*.png"))


def test_plot_bad_axis_and_missing_matplotlib(procs: Processes, tmp_path: Path) -> None:
    path = write_sweep(tmp_path, HYPOT)
    assert procs.cli("run", str(path), "-w", "1", "-q").returncode == 0
    bad = procs.cli("plot", "--x", "omega", "--y", "r")
    assert bad.returncode == 2
    assert bad.stderr.strip() == "Error: --x omega: not an axis of the sweep (its axes: x, y)"
    # A matplotlib that cannot be imported, first on the path: as if the extra were not installed.
    fake = tmp_path / "fake"
    (fake / "matplotlib").mkdir(parents=True)
    (fake / "matplotlib" / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    env = {**procs.env, "PYTHONPATH": os.pathsep.join([str(fake), procs.env["PYTHONPATH"]])}
    r = procs.cli("plot", "--x", "x", "--y", "r", env=env)
    assert r.returncode == 10
    assert r.stderr.strip().splitlines() == [
        "Error: swarmrun plot needs matplotlib: pip install 'swarmrun[plot]'"
    ]
