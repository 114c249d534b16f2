"""Per-point logs and executions: a point's stdout/stderr (bounded) and every execution of it.

Keys (prefix `swarmrun:sweep:{id}:`), apart from the result records, so records stay small:
- `runs`  hash: index -> one JSON line per execution (`ex` execution token, `w` worker, `n` node,
          `t` start time, `d` duration, `x` exit code, `s` status), appended in order
- `logs`  hash: `index:token` -> the last `LOG_CHARS` characters of that execution's output

A point's record names its execution token (`ex`) whenever it has a log or files, so `show`
tells the winning execution's log from a duplicate's. An ok execution with neither stores no
`runs` entry (its record describes it); the heartbeat announces a running one (status
`running`), so an execution killed mid-point is listed too. A call task's prints and `logging`
output are captured by `capture()`; a command's stdout and stderr by `swarmrun.execution.task`.
"""

from __future__ import annotations

import io
import json
import logging
import sys
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TextIO

import redis

LOG_CHARS = 64 * 1024
CUT_MARK = "[... earlier output cut ...]\n"
PREFIX = "swarmrun:sweep:"

APPEND_LUA = """
for i = 1, #ARGV, 2 do
  local old = redis.call('HGET', KEYS[1], ARGV[i])
  if old then
    redis.call('HSET', KEYS[1], ARGV[i], old .. '\\n' .. ARGV[i + 1])
  else
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return #ARGV / 2
"""


def runs_key(sweep_id: str) -> str:
    return f"{PREFIX}{sweep_id}:runs"


def logs_key(sweep_id: str) -> str:
    return f"{PREFIX}{sweep_id}:logs"


def keep_log(policy: str, status: str) -> bool:
    """Whether an execution's log is stored under `logs: all | failed | none`."""
    return policy == "all" or (policy == "failed" and status != "ok")


def clip(text: str, limit: int = LOG_CHARS) -> str:
    """The last `limit` characters, marked when cut."""
    return text if len(text) <= limit else CUT_MARK + text[-limit:]


class TailBuffer(io.TextIOBase):
    """A text stream that keeps only its last `limit` characters (a task may print gigabytes)."""

    def __init__(self, limit: int = LOG_CHARS) -> None:
        super().__init__()
        self.limit = limit
        self._parts: deque[str] = deque()
        self._size = 0
        self.cut = False

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            text = str(text)
        self._parts.append(text)
        self._size += len(text)
        while self._size - len(self._parts[0]) >= self.limit and len(self._parts) > 1:
            self._size -= len(self._parts.popleft())
            self.cut = True
        return len(text)

    def getvalue(self) -> str:
        text = "".join(self._parts)
        return CUT_MARK + text[-self.limit :] if self.cut or len(text) > self.limit else text


class _Null(io.TextIOBase):
    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        return len(text)


_NULL = _Null()


class LogCapture:
    """Captures a call task's stdout, stderr and `logging` records into one buffer per point.

    Made once per task and reused: its handler stays on the root logger (writing nowhere between
    points), because adding and removing a handler per point costs more than a no-op point.
    Records reach it at the levels the task's own logging set-up lets through (the root logger's
    default is WARNING).
    """

    def __init__(self, limit: int = LOG_CHARS) -> None:
        self.limit = limit
        self.handler: logging.StreamHandler[Any] = logging.StreamHandler(_NULL)
        self.handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self._installed = False
        self._saved: tuple[TextIO, TextIO] = (sys.stdout, sys.stderr)

    def __call__(self) -> LogCapture:
        """`with capture() as buffer:` (a class, not a generator: this runs once a point)."""
        return self

    def __enter__(self) -> TailBuffer:
        if not self._installed:
            logging.getLogger().addHandler(self.handler)
            self._installed = True
        buffer = TailBuffer(self.limit)
        self.handler.stream = buffer
        self._saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = buffer
        return buffer

    def __exit__(self, *exc: object) -> None:
        sys.stdout, sys.stderr = self._saved
        self.handler.stream = _NULL

    def remove(self) -> None:
        if self._installed:
            logging.getLogger().removeHandler(self.handler)
            self._installed = False


@contextmanager
def capture(limit: int = LOG_CHARS) -> Iterator[TailBuffer]:
    """One capture (a `LogCapture` used once)."""
    once = LogCapture(limit)
    try:
        with once() as buffer:
            yield buffer
    finally:
        once.remove()


@dataclass(frozen=True)
class Execution:
    """One execution of a point, as `show` prints it."""

    token: str
    worker: str
    node: str
    start: float
    duration: float
    exit_code: int | None
    status: str

    def to_json(self) -> str:
        d: dict[str, Any] = {
            "ex": self.token,
            "w": self.worker,
            "n": self.node,
            "t": round(self.start, 3),
            "d": round(self.duration, 6),
            "s": self.status,
        }
        if self.exit_code is not None:
            d["x"] = self.exit_code
        return json.dumps(d, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Execution:
        return cls(
            token=str(raw.get("ex", "")),
            worker=str(raw.get("w", "")),
            node=str(raw.get("n", "")),
            start=float(raw.get("t", 0.0)),
            duration=float(raw.get("d", 0.0)),
            exit_code=raw.get("x"),
            status=str(raw.get("s", "")),
        )


class PointLogs:
    """Reads and writes the `runs` and `logs` hashes of sweeps on one Redis."""

    def __init__(self, connection: redis.Redis) -> None:
        self.connection = connection
        self._append = connection.register_script(APPEND_LUA)

    def store(
        self,
        sweep_id: str,
        executions: Sequence[tuple[int, Execution]],
        logs: Sequence[tuple[int, str, str]],
    ) -> None:
        """Append executions `(index, execution)` and store logs `(index, token, text)`, in one trip."""
        if not executions and not logs:
            return
        pipe = self.connection.pipeline(transaction=False)
        if executions:
            args: list[str] = []
            for index, execution in executions:
                args += [str(index), execution.to_json()]
            self._append(keys=[runs_key(sweep_id)], args=args, client=pipe)
        if logs:
            pipe.hset(logs_key(sweep_id), mapping={f"{i}:{token}": text for i, token, text in logs})
        pipe.execute()

    def executions(self, sweep_id: str, index: int) -> list[Execution]:
        raw = self.connection.hget(runs_key(sweep_id), str(index))
        if not raw:
            return []
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        merged: dict[str, Execution] = {}  # a "running" entry is replaced by its execution's end
        for line in text.splitlines():
            if line.strip():
                execution = Execution.from_json(json.loads(line))
                merged[execution.token] = execution
        return list(merged.values())

    def log(self, sweep_id: str, index: int, token: str) -> str | None:
        raw = self.connection.hget(logs_key(sweep_id), f"{index}:{token}")
        if raw is None:
            return None
        return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)

    def purge(self, sweep_id: str) -> None:
        self.connection.delete(runs_key(sweep_id), logs_key(sweep_id))
