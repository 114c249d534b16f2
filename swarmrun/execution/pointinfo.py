"""Everything known about one point, for `swarmrun show` and `swarmrun logs --point`."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from swarmrun.definition.sweep import Sweep
from swarmrun.errors import ExitCode, SwarmrunError
from swarmrun.execution.outputs import OutputFile
from swarmrun.execution.outputstore import file_dirs, record_files
from swarmrun.execution.pointlog import Execution, PointLogs
from swarmrun.execution.queue import SweepQueue
from swarmrun.execution.results import Result


class PointNotFound(SwarmrunError):
    """The index is outside the sweep."""

    exit_code = ExitCode.NOT_FOUND


@dataclass(frozen=True)
class PointInfo:
    index: int
    params: dict[str, object]
    result: Result | None
    token: str | None
    files: tuple[OutputFile, ...]
    executions: tuple[Execution, ...]
    log: str | None
    folder: Path | None = None  # where the files are on this machine, when they are

    def lines(self) -> list[str]:
        out = [f"point {self.index}", f"  params: {json.dumps(self.params, default=str)}"]
        r = self.result
        if r is None:
            out.append("  status: pending (no result yet)")
        else:
            out.append(f"  status: {r.status}" + (" (cached from another sweep)" if r.cached else ""))
            if r.status == "ok":
                out.append(f"  value: {json.dumps(r.value, default=str)}")
            if r.error:
                out.append(f"  error: {r.error}")
            if r.traceback:
                out.append("  traceback:")
                out.extend("    " + line for line in r.traceback.rstrip().splitlines())
        if self.executions:
            out.append(f"  executions ({len(self.executions)}):")
            for e in self.executions:
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.start))
                mark = " (recorded)" if self.token and e.token == self.token else ""
                code = "" if e.exit_code is None else f" exit {e.exit_code}"
                out.append(
                    f"    {e.token} {e.status:<7} worker {e.worker} node {e.node} "
                    f"start {when} {e.duration:.3f}s{code}{mark}"
                )
        if self.files:
            where = f", in {self.folder}/" if self.folder else ""
            out.append(f"  output files ({len(self.files)}){where}:")
            out.extend(f"    {f.name}  {f.size} bytes  sha256 {f.sha256}" for f in self.files)
        if self.log:
            out.append("  log (tail):")
            out.extend("    " + line for line in self.log.rstrip().splitlines()[-40:])
        else:
            out.append("  log: none kept")
        return out


def point_info(queue: SweepQueue, sweep: Sweep, sweep_id: str, index: int) -> PointInfo:
    if not 0 <= index < sweep.size:
        raise PointNotFound(f"point {index} is outside the sweep's [0, {sweep.size})")
    params = sweep.point(index)
    raw = queue.record_values(sweep_id, sweep.task.key, [index], sweep.keys_of)[0]
    origins = queue.origins(sweep.task.key) if isinstance(raw, list) else {}
    result = Result.decode(index, params, raw, sweep_id, origins) if raw is not None else None
    token, files = record_files(raw)
    logs = PointLogs(queue.connection)
    executions = tuple(logs.executions(sweep_id, index))
    if result is not None and not result.cached and token not in {e.token for e in executions}:
        finished = [e for e in executions if e.status != "running"]
        if token is None and finished:  # stored, but the record names none: the last one finished
            token = finished[-1].token
        else:  # an ok point with no log or files stores no execution: its record describes it
            recorded = _from_record(result, token)
            executions = (*executions, recorded)
            token = recorded.token
    shown = token or (executions[-1].token if executions else None)
    log = logs.log(sweep_id, index, shown) if shown else None
    folder = _folder(queue, sweep, sweep_id, index, files) if files else None
    return PointInfo(index, params, result, token, tuple(files), executions, log, folder)


def _folder(queue: SweepQueue, sweep: Sweep, sid: str, index: int, files: list[OutputFile]) -> Path | None:
    """The first directory on this machine holding every one of a point's files."""
    for base in file_dirs(queue.connection, sweep, sid):
        folder = base / "points" / str(index)
        if all((folder / f.name).is_file() for f in files):
            return folder
    return None


def _from_record(result: Result, token: str | None) -> Execution:
    """The execution a record describes (for points that stored none of their own)."""
    worker = result.worker or ""
    duration = float(result.duration or 0.0)
    base = worker.split(".")[0]
    node = base.rsplit("-", 1)[0] if base.rsplit("-", 1)[-1].isdigit() else base
    return Execution(
        token=token or "record",
        worker=worker,
        node=node,
        start=float(result.finished or 0.0) - duration,
        duration=duration,
        exit_code=result.exit_code,
        status=result.status,
    )
