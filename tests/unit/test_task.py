"""Running single points in-process and as commands (no Redis, real subprocesses)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from swarmrun.definition.sweep import TaskSpec
from swarmrun.errors import SweepFileError, TaskImportError
from swarmrun.execution.results import Result, encode_record
from swarmrun.execution.task import CallTask, CommandTask, Outcome, compile_task, preflight, resolve_call


def spec(**kw: object) -> TaskSpec:
    base = {"call": None, "command": None, "env": {}, "version": None}
    base.update(kw)
    return TaskSpec(**base)  # type: ignore[arg-type]


def slow(seconds: float) -> float:
    import time

    time.sleep(seconds)
    return seconds


def swallow_everything() -> str:
    import time

    try:
        time.sleep(5)
    except Exception:
        return "swallowed"
    return "slept"


def test_call_ok_error_and_timeout() -> None:
    assert CallTask(lambda x: x + 1).run({"x": 1}, index=0, timeout=None) == Outcome(
        "ok", value=2, duration=pytest.approx(0, abs=0.5)
    )
    err = CallTask(lambda x: 1 / x).run({"x": 0}, index=0, timeout=None)
    assert err.status == "error" and err.error == "ZeroDivisionError: division by zero"
    assert "ZeroDivisionError" in (err.traceback or "")
    slept = CallTask(slow).run({"seconds": 3}, index=0, timeout=0.2)
    assert slept.status == "timeout" and slept.duration < 1.5


def test_timeout_cannot_be_swallowed_by_except_exception() -> None:
    out = CallTask(swallow_everything).run({}, index=0, timeout=0.2)
    assert out.status == "timeout"


def test_resolve_call_errors_are_task_import_errors() -> None:
    assert resolve_call("json:dumps") is json.dumps
    assert resolve_call("os.path:join.__call__")
    with pytest.raises(TaskImportError, match="cannot import module 'nope_nope'"):
        resolve_call("nope_nope:f")
    with pytest.raises(TaskImportError, match="has no 'nope'"):
        resolve_call("json:nope")
    with pytest.raises(TaskImportError, match="not callable"):
        resolve_call("sys:maxsize")


def test_command_value_from_last_line_and_failures(tmp_path: Path) -> None:
    py = sys.executable
    ok = CommandTask(
        (py, "-c", "print('noise'); print('{{\"a\": {x}}}')"), env={}, cwd=tmp_path, sweep_id="s"
    )
    assert ok.render({"x": 3}, 0)[-1] == "print('noise'); print('{\"a\": 3}')"
    out = ok.run({"x": 3}, index=0, timeout=10)
    assert (out.status, out.value, out.exit_code) == ("ok", {"a": 3}, 0)

    text = CommandTask((py, "-c", "print('pi is about {x}')"), env={}, cwd=None, sweep_id="s")
    assert text.run({"x": 3.14}, index=0, timeout=10).value == "pi is about 3.14"

    bad = CommandTask(
        (py, "-c", "import sys; print('out'); sys.exit('boom {x}')"), env={}, cwd=None, sweep_id="s"
    )
    failed = bad.run({"x": 1}, index=0, timeout=10)
    assert failed.status == "error" and failed.exit_code == 1
    assert failed.error == "exit code 1: boom 1" and failed.stdout == "out\n"

    hang = CommandTask(
        (py, "-c", "import time; print('x', flush=True); time.sleep(30)"), env={}, cwd=None, sweep_id="s"
    )
    timed = hang.run({}, index=0, timeout=0.3)
    assert timed.status == "timeout" and timed.duration < 5 and timed.stdout == "x\n"

    missing = CommandTask(("/no/such/binary",), env={}, cwd=None, sweep_id="s").run({}, index=0, timeout=1)
    assert missing.status == "error" and "cannot start" in (missing.error or "")


def test_command_output_tail_is_bounded() -> None:
    loud = CommandTask(
        (sys.executable, "-c", "import sys; sys.stdout.write('y' * 10**6); sys.exit(2)"),
        env={},
        cwd=None,
        sweep_id="s",
    )
    out = loud.run({}, index=0, timeout=30)
    assert out.status == "error" and len(out.stdout or "") <= 2000


def test_command_gets_builtins_and_env(tmp_path: Path) -> None:
    task = compile_task(
        spec(
            command=(
                sys.executable,
                "-c",
                "import os, sys; print(sys.argv[1:], os.environ['K'])",
                "{index}",
                "{sweep_id}",
            ),
            env={"K": "v"},
        ),
        sweep_id="abc",
        param_names=(),
        origin=tmp_path,
    )
    assert task.run({}, index=7, timeout=10).value == "['7', 'abc'] v"


def test_placeholders_are_checked() -> None:
    with pytest.raises(SweepFileError, match=r"unknown placeholder \{y\}"):
        compile_task(spec(command=("echo", "{y}")), sweep_id="s", param_names=("x",), origin=None)


def test_preflight(tmp_path: Path) -> None:
    preflight(spec(command=("python3", "{x}")), param_names=("x",), origin=tmp_path)
    with pytest.raises(SweepFileError, match="not on PATH"):
        preflight(spec(command=("no-such-prog-zz",)), param_names=(), origin=tmp_path)
    with pytest.raises(SweepFileError, match="does not exist"):
        preflight(spec(command=("./run.sh",)), param_names=(), origin=tmp_path)
    (tmp_path / "run.sh").write_text("#!/bin/sh\n")
    preflight(spec(command=("./run.sh",)), param_names=(), origin=tmp_path)
    (tmp_path / "mymod_for_preflight.py").write_text("def f(): return 1\n")
    preflight(spec(call="mymod_for_preflight:f"), param_names=(), origin=tmp_path)


def test_records_round_trip_and_refuse_non_json_values() -> None:
    status, raw = encode_record(
        Outcome("ok", value={"a": 1.5}, duration=0.25), attempt=1, worker="w", sweep_id="s1"
    )
    r = Result.decode(4, {"x": 1}, raw, "s1")
    assert (status, r.status, r.value, r.attempt, r.worker, r.cached) == (
        "ok",
        "ok",
        {"a": 1.5},
        1,
        "w",
        False,
    )
    assert Result.decode(4, {}, raw, "other").cached

    class Numpyish:
        def item(self) -> float:
            return 2.5

    assert (
        json.loads(encode_record(Outcome("ok", value=Numpyish()), attempt=1, worker="w", sweep_id="s")[1])[
            "v"
        ]
        == 2.5
    )
    status, raw = encode_record(Outcome("ok", value=object()), attempt=1, worker="w", sweep_id="s")
    assert status == "error" and "not JSON-serialisable" in json.loads(raw)["e"]
