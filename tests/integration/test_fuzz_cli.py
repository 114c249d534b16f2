"""The fuzzer's inputs through the real CLI (tests/fuzz.py): `swarmrun submit` in-process for a
sample, and as a process for a few; every input gives exit 0 and a sweep id, or exit 3 and one line."""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from swarmrun.cli import main
from swarmrun.errors import ExitCode
from tests import fuzz
from tests.conftest import run_cli, swarmrun_env


def submit(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(args)
        except SystemExit as e:
            code = int(e.code or 0)
        else:
            code = 0
    return code, out.getvalue(), err.getvalue()


def check_outcome(code: int, out: str, err: str) -> None:
    assert "Traceback" not in err + out
    if code == ExitCode.BAD_SWEEP:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("Error: "), err
    else:
        assert code == ExitCode.OK, (code, err)
        assert len(out.strip()) == 16, out  # the sweep id


@pytest.mark.timeout(300)
def test_generated_sweeps_through_the_cli_in_process(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWARMRUN_HOME", str(tmp_path / "home"))
    directory = fuzz.rows_dir()
    seen = {"ok": 0, "bad": 0}

    @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(fuzz.sweep_texts(), fuzz.overrides)
    def check(files: list[tuple[str, str]], params: list[str]) -> None:
        suffix, text = files[0]
        path = directory / f"sweep{suffix}"
        path.write_text(text, encoding="utf-8")
        args = ["submit", "--redis-url", redis_url, str(path), *(a for p in params for a in ("-p", p))]
        with fuzz.time_limit(10.0):
            code, out, err = submit(args)
        check_outcome(code, out, err)
        seen["ok" if code == 0 else "bad"] += 1

    try:
        check()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    assert seen["ok"] >= 10 and seen["bad"] >= 100, seen


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("task: " + "[" * 10_000, "YAML error"),
        ("task: {call: 'fixtures.tasks:square'}\nrepeat: " + "9" * 5000 + "\n", "cannot read a value"),
        (
            "task: {call: 'fixtures.tasks:square'}\nparams: {"
            + ", ".join(f"p{k}: [0,1,2,3,4,5,6,7,8,9]" for k in range(30))
            + "}\n",
            "about 10^30 points is more than a sweep may have",
        ),
        ('{"task": {"call": "fixtures.tasks:square"}, "par\\nams": {}}', "unknown key 'par\\nams'"),
        ("task: {call: 'fixtures.tasks:square'}\nparams: {x: [1, 2, 3]}\n", None),
    ],
    ids=["deep", "digits", "grid-10^30", "newline-key", "valid"],
)
def test_fuzzer_findings_through_the_cli_process(
    text: str, needle: str | None, redis_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    env = swarmrun_env(redis_url, tmp_path / "home")
    # An override of a param the file does not have is itself an error (`+x` adds one): only the
    # valid sweep, which has x, gets one, so each bad file is refused for its own defect.
    override = ["-p", "x=1,2"] if needle is None else []
    r = run_cli(["submit", str(path), *override], env=env, cwd=tmp_path, timeout=60)
    check_outcome(r.returncode, r.stdout, r.stderr)
    assert r.returncode == (ExitCode.OK if needle is None else ExitCode.BAD_SWEEP), r.stderr
    assert needle is None or needle in r.stderr, r.stderr
