"""Run one point: a Python callable in-process, or a command template executed without a shell.

A point ends in an `Outcome`: ok (with a JSON-able value), error (with its text) or timeout.
Commands report a value on their last non-empty stdout line: parsed as JSON when it is JSON,
kept as a string otherwise. Output tails are kept for failed points only, to bound memory.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any, Protocol

from swarmrun.definition.sweep import BUILTIN_PLACEHOLDERS, TaskSpec, command_placeholders
from swarmrun.errors import SweepFileError, TaskImportError
from swarmrun.execution.outputs import POINT_DIR_ENV
from swarmrun.execution.pointlog import LOG_CHARS, LogCapture, TailBuffer, clip

TAIL_CHARS = 2000
ERROR_CHARS = 1000


class PointTimeout(BaseException):
    """Raised inside a call task when its point exceeds the timeout.

    A BaseException so that task code catching `Exception` cannot swallow it.
    """


@dataclass(frozen=True)
class Outcome:
    """How one execution of a point ended."""

    status: str  # "ok" | "error" | "timeout"
    value: Any = None
    error: str | None = None
    traceback: str | None = None
    duration: float = 0.0
    exit_code: int | None = None
    stdout: str | None = None
    stderr: str | None = None
    log: str | None = None  # the point's output (last LOG_CHARS), when asked for with `log=True`


class Task(Protocol):
    def run(
        self,
        params: Mapping[str, Any],
        *,
        index: int,
        timeout: float | None,
        point_dir: Path | None = None,
        log: bool = False,
    ) -> Outcome: ...


def json_default(obj: Any) -> Any:
    """Make NumPy-like values JSON-able (`.tolist()` / `.item()`); refuse anything else."""
    for attr in ("tolist", "item"):
        method = getattr(obj, attr, None)
        if callable(method):
            return method()
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    raise TypeError(f"return value of type {type(obj).__name__} is not JSON-serialisable")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else "..." + text[-limit:]


def resolve_call(path: str, search_path: Path | None = None) -> Callable[..., Any]:
    """Import `package.module:function` (dotted attribute path allowed after the colon)."""
    module_name, _, attr_path = path.partition(":")
    if search_path is not None and search_path.is_dir() and str(search_path) not in sys.path:
        sys.path.insert(0, str(search_path))
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise TaskImportError(f"task.call {path!r}: cannot import module {module_name!r}: {e}") from e
    except Exception as e:
        raise TaskImportError(
            f"task.call {path!r}: importing {module_name!r} raised {type(e).__name__}: {e}"
        ) from e
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise TaskImportError(
                f"task.call {path!r}: module {module_name!r} has no {attr_path!r}"
            ) from None
    if not callable(obj):
        raise TaskImportError(f"task.call {path!r}: {attr_path!r} is not callable")
    return obj  # type: ignore[no-any-return]


class _Alarm:
    """A per-point timeout for in-process calls, through SIGALRM (main thread only)."""

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        self.armed = timeout is not None and threading.current_thread() is threading.main_thread()
        self._previous: Any = None

    def _fire(self, signum: int, frame: FrameType | None) -> None:
        raise PointTimeout()

    def __enter__(self) -> _Alarm:
        if self.armed:
            self._previous = signal.signal(signal.SIGALRM, self._fire)
            signal.setitimer(signal.ITIMER_REAL, float(self.timeout or 0))
        return self

    def __exit__(self, *exc: object) -> None:
        if self.armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._previous)


class CallTask:
    """Calls `function(**params)` in this process."""

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function
        self._capture = LogCapture()
        self._point_dir: Path | None = None

    def run(
        self,
        params: Mapping[str, Any],
        *,
        index: int,
        timeout: float | None,
        point_dir: Path | None = None,
        log: bool = False,
    ) -> Outcome:
        if point_dir is not None and point_dir is not self._point_dir:  # the same one point after point
            os.environ[POINT_DIR_ENV] = str(point_dir)
            self._point_dir = point_dir
        if not log:
            return self._run(params, timeout, None)
        with self._capture() as buffer:
            return self._run(params, timeout, buffer)

    def _run(self, params: Mapping[str, Any], timeout: float | None, log: TailBuffer | None) -> Outcome:
        """The outcome, with what the point printed so far when `log` holds it."""
        start = time.perf_counter()
        try:
            if timeout is None:  # the common case, without the alarm's set-up per point
                value = self.function(**params)
            else:
                with _Alarm(timeout):
                    value = self.function(**params)
        except PointTimeout:
            return Outcome(
                "timeout",
                error=f"timed out after {timeout:g} s",
                duration=time.perf_counter() - start,
                log=None if log is None else log.getvalue(),
            )
        except Exception as e:
            duration = time.perf_counter() - start
            return Outcome(
                "error",
                error=_clip(f"{type(e).__name__}: {e}", ERROR_CHARS),
                traceback=_clip(traceback.format_exc(), TAIL_CHARS),
                duration=duration,
                log=None if log is None else log.getvalue(),
            )
        duration = time.perf_counter() - start
        return Outcome("ok", value=value, duration=duration, log=None if log is None else log.getvalue())


def _tail(handle: IO[bytes], chars: int = TAIL_CHARS) -> str:
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    handle.seek(max(0, size - 4 * chars))
    return handle.read().decode("utf-8", "replace")[-chars:]


def _command_log(out: IO[bytes], err: IO[bytes]) -> str:
    """A command's log: its stdout tail, then its stderr tail (each up to LOG_CHARS / 2)."""
    parts = []
    for label, handle in (("stdout", out), ("stderr", err)):
        handle.seek(0, os.SEEK_END)
        if handle.tell():
            text = _tail(handle, LOG_CHARS // 2 + 1)
            parts.append(f"--- {label} ---\n" + clip(text, LOG_CHARS // 2))
    return "\n".join(parts)


def _last_line_value(stdout: str) -> Any:
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        return None
    last = lines[-1].strip()
    try:
        value = json.loads(last)
    except ValueError:
        return _clip(last, ERROR_CHARS)
    if isinstance(value, float) and not math.isfinite(value):
        return last
    return value


class CommandTask:
    """Runs an argv template with `{param}` placeholders filled in; never through a shell."""

    def __init__(
        self, argv: tuple[str, ...], *, env: Mapping[str, str], cwd: Path | None, sweep_id: str
    ) -> None:
        self.argv = argv
        self.env = {**os.environ, **env}
        self.cwd = cwd
        self.sweep_id = sweep_id

    def render(self, params: Mapping[str, Any], index: int, point_dir: Path | None = None) -> list[str]:
        values = {**params, "index": index, "sweep_id": self.sweep_id, "outdir": str(point_dir or "")}
        return [arg.format_map(values) for arg in self.argv]

    def run(
        self,
        params: Mapping[str, Any],
        *,
        index: int,
        timeout: float | None,
        point_dir: Path | None = None,
        log: bool = False,
    ) -> Outcome:
        argv = self.render(params, index, point_dir)
        env = self.env if point_dir is None else {**self.env, POINT_DIR_ENV: str(point_dir)}
        text: str | None = None
        start = time.perf_counter()
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    cwd=self.cwd,
                    env=env,
                    process_group=0,
                )
            except OSError as e:
                return Outcome(
                    "error",
                    error=f"cannot start {argv[0]!r}: {e.strerror or e}",
                    duration=time.perf_counter() - start,
                )
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                code = None
            finally:
                # Also on a cold stop (SystemExit from a signal): never leave the command running.
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            duration = time.perf_counter() - start
            stdout, stderr = _tail(out), _tail(err)
            if log:
                text = _command_log(out, err)
        if code is None:
            return Outcome(
                "timeout",
                error=f"timed out after {timeout:g} s",
                duration=duration,
                stdout=stdout,
                stderr=stderr,
                log=text,
            )
        if code != 0:
            reason = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
            last_err = next((line for line in reversed(stderr.splitlines()) if line.strip()), "")
            message = f"{reason}: {last_err.strip()}" if last_err else reason
            return Outcome(
                "error",
                error=_clip(message, ERROR_CHARS),
                duration=duration,
                exit_code=code,
                stdout=stdout,
                stderr=stderr,
                log=text,
            )
        return Outcome("ok", value=_last_line_value(stdout), duration=duration, exit_code=0, log=text)


def check_placeholders(spec: TaskSpec, param_names: tuple[str, ...]) -> None:
    """Refuse a command whose placeholders name no parameter (also re-checked on workers)."""
    known = set(param_names) | set(BUILTIN_PLACEHOLDERS)
    for position, arg in enumerate(spec.command or ()):
        try:
            names = command_placeholders(arg)
        except ValueError as e:
            raise SweepFileError(f"task.command[{position}]: {e}") from None
        for name in names:
            if name not in known:
                raise SweepFileError(
                    f"task.command[{position}]: unknown placeholder {{{name}}}; "
                    f"known: {', '.join(sorted(known))}"
                )


def compile_task(spec: TaskSpec, *, sweep_id: str, param_names: tuple[str, ...], origin: Path | None) -> Task:
    """Turn a task spec into something that runs points; imports a call target once."""
    origin = origin if origin is not None and origin.is_dir() else None
    if spec.call is not None:
        os.environ.update(spec.env)
        return CallTask(resolve_call(spec.call, origin))
    assert spec.command is not None
    check_placeholders(spec, param_names)
    return CommandTask(spec.command, env=spec.env, cwd=origin, sweep_id=sweep_id)


def preflight(spec: TaskSpec, *, param_names: tuple[str, ...], origin: Path | None) -> None:
    """Check on the manager that the task can start: the call imports, the program exists."""
    if spec.call is not None:
        resolve_call(spec.call, origin)
        return
    check_placeholders(spec, param_names)
    program = (spec.command or ("",))[0]
    if "{" in program:
        return
    if os.sep in program:
        candidate = Path(program) if os.path.isabs(program) else (origin or Path.cwd()) / program
        if not candidate.exists():
            raise SweepFileError(f"task.command[0]: program {program!r} does not exist")
    elif shutil.which(program, path=spec.env.get("PATH")) is None:
        raise SweepFileError(f"task.command[0]: program {program!r} is not on PATH")
