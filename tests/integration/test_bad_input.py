"""Bad input: one clear line on stderr, a documented exit code, no traceback, nothing lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarmrun.errors import ExitCode
from tests.conftest import Processes, free_port, swarmrun_env, write_sweep

CASES = {
    "yaml_syntax": ("task: {call: fixtures.tasks:square\nparams: [", ExitCode.BAD_SWEEP, "sweep.yaml"),
    "unknown_key": ("task: {call: 'fixtures.tasks:square'}\nparms: {x: [1]}\n", ExitCode.BAD_SWEEP, "params"),
    "bad_linspace": (
        "task: {call: 'fixtures.tasks:square'}\nparams: {x: {linspace: [0, 1]}}\n",
        ExitCode.BAD_SWEEP,
        "params.x",
    ),
    "unknown_placeholder": (
        "task: {command: [echo, '{gama}']}\nparams: {gamma: [1]}\n",
        ExitCode.BAD_SWEEP,
        "unknown placeholder {gama}",
    ),
    "import_missing": (
        "task: {call: 'no_such_module.sub:f'}\nparams: {x: [1]}\n",
        ExitCode.BAD_SWEEP,
        "cannot import module 'no_such_module.sub'",
    ),
    "attr_missing": (
        "task: {call: 'fixtures.tasks:nope'}\nparams: {x: [1]}\n",
        ExitCode.BAD_SWEEP,
        "has no 'nope'",
    ),
    "program_missing": (
        "task: {command: [no-such-program-xyz, '{x}']}\nparams: {x: [1]}\n",
        ExitCode.BAD_SWEEP,
        "not on PATH",
    ),
}


def assert_one_line(stderr: str, needle: str) -> None:
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("Error: ") and needle in lines[0], lines[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_sweep_files(case: str, procs: Processes, tmp_path: Path) -> None:
    text, code, needle = CASES[case]
    path = write_sweep(tmp_path, text)
    for command in ("run", "submit"):
        r = procs.cli(command, str(path))
        assert r.returncode == code, (command, r.stderr)
        if command == "run":
            assert_one_line(r.stderr, needle)


def test_bad_override(procs: Processes, tmp_path: Path) -> None:
    path = write_sweep(tmp_path, "task: {call: 'fixtures.tasks:square'}\nparams: {x: [1]}\n")
    r = procs.cli("run", str(path), "-p", "x=range(1,")
    assert r.returncode == ExitCode.BAD_SWEEP
    assert_one_line(r.stderr, "x=")


def test_missing_sweep_file(procs: Processes, tmp_path: Path) -> None:
    r = procs.cli("run", str(tmp_path / "nope.yaml"))
    assert r.returncode == ExitCode.BAD_SWEEP
    assert_one_line(r.stderr, "nope.yaml")


def test_unreachable_redis(procs: Processes, tmp_path: Path) -> None:
    path = write_sweep(tmp_path, "task: {call: 'fixtures.tasks:square'}\nparams: {x: [1]}\n")
    env = swarmrun_env(f"redis://127.0.0.1:{free_port()}/0", tmp_path / "home")
    for args in (["run", str(path)], ["submit", str(path)], ["status"], ["ls"]):
        r = procs.cli(*args, env=env)
        assert r.returncode == ExitCode.REDIS_UNAVAILABLE, (args, r.stderr)
        assert_one_line(r.stderr, "cannot reach Redis at redis://127.0.0.1:")


def test_unknown_sweep_id(procs: Processes) -> None:
    for args in (["status", "deadbeef"], ["results", "deadbeef"], ["cancel", "deadbeef"]):
        r = procs.cli(*args)
        assert r.returncode == ExitCode.NOT_FOUND, (args, r.stderr)
        assert_one_line(r.stderr, "no sweep with id 'deadbeef'")


def test_non_json_return_value_is_a_point_error(procs: Processes, tmp_path: Path) -> None:
    path = write_sweep(tmp_path, "task: {call: 'fixtures.tasks:not_json'}\nparams: {x: [1, 2]}\n")
    out = tmp_path / "out.jsonl"
    r = procs.cli("run", str(path), "-w", "1", "-o", str(out))
    assert r.returncode == ExitCode.POINTS_FAILED
    assert out.read_text().count("not JSON-serialisable") == 2
