"""One execution of a point on a worker: its own directory, its log, its output files.

The worker calls `execute` for every execution; what it returns travels with the point's record:
the execution (for `show`), the log text, and the files (sent through Redis or staged on the
shared mount before the record is written, so a recorded file list is always complete).
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import shutil
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import redis

from swarmrun.definition.sweep import Options, Sweep
from swarmrun.execution import outputstore
from swarmrun.execution.outputs import OutputFile, OutputTooLarge, PointDir, match
from swarmrun.execution.pointlog import Execution, keep_log
from swarmrun.execution.results import with_fields
from swarmrun.execution.task import Outcome, Task


@functools.cache
def node_name() -> str:
    """The node this worker runs on: `SWARMRUN_NODE` (set by the stack), else the host name."""
    return os.environ.get("SWARMRUN_NODE") or socket.gethostname()


@dataclass(frozen=True)
class Extras:
    """What an execution adds beside its result record."""

    token: str
    execution: Execution
    log: str | None
    files: tuple[OutputFile, ...]
    staged: Path | None = None  # shared-mount mode: the staging directory to promote on a win

    def extend(self, record: str) -> str:
        """The record with the execution token and the file list added (only when there are any)."""
        if self.log is None and not self.files:
            return record
        fields = f'"ex":"{self.token}"'
        if self.files:
            fields += ',"f":' + json.dumps([f.to_json() for f in self.files], separators=(",", ":"))
        return with_fields(record, fields)


def execute(
    task: Task,
    params: Mapping[str, Any],
    *,
    index: int,
    sweep: Sweep,
    sweep_id: str,
    options: Options,
    worker: str,
    connection: redis.Redis,
    point_dir: PointDir,
    uploader: outputstore.Uploader,
    token: str | None = None,
) -> tuple[Outcome, Extras]:
    """Run one execution in a fresh point directory (removed whatever happens); collect its outputs."""
    token = token or secrets.token_hex(4)
    began = time.time()
    files: tuple[OutputFile, ...] = ()
    staged: Path | None = None
    with point_dir as path:
        outcome = task.run(
            params, index=index, timeout=options.timeout, point_dir=path, log=options.logs != "none"
        )
        if options.outputs and outcome.status == "ok":
            try:
                found = match(path, options.outputs, max_bytes=options.max_output_bytes)
                outputstore.reserve(
                    connection, sweep_id, sum(f.size for _, f in found), options.max_sweep_output_bytes
                )
                if options.outputs_dir:
                    staged = outputstore.staging_dir(options.outputs_dir, sweep, sweep_id, index, token)
                    outputstore.stage(options.outputs_dir, staged, found)
                elif found:
                    uploader.add(sweep_id, index, token, found)
                files = tuple(f for _, f in found)
            except OutputTooLarge as e:
                outcome = replace(outcome, status="error", error=str(e), value=None)
            except OSError as e:
                why = f"collecting outputs failed: {e}"
                outcome = replace(outcome, status="error", error=why, value=None)
    execution = Execution(
        token=token,
        worker=worker,
        node=node_name(),
        start=began,
        duration=outcome.duration,
        exit_code=outcome.exit_code,
        status=outcome.status,
    )
    log = outcome.log if outcome.log and keep_log(options.logs, outcome.status) else None
    return outcome, Extras(token, execution, log, files, staged)


def settle(
    connection: redis.Redis,
    sweep: Sweep,
    sweep_id: str,
    options: Options,
    entries: list[tuple[int, Extras]],
    winners: list[str | None],
) -> None:
    """After recording: promote a winning execution's staged files, drop a loser's files."""
    for (index, extras), winner in zip(entries, winners, strict=True):
        won = winner == extras.token
        if extras.staged is not None and options.outputs_dir:
            if won:
                outputstore.promote(
                    extras.staged, outputstore.final_dir(options.outputs_dir, sweep, sweep_id, index)
                )
            else:
                shutil.rmtree(extras.staged, ignore_errors=True)
        elif extras.files and not won:
            outputstore.discard(connection, sweep_id, index, extras.token, extras.files)
