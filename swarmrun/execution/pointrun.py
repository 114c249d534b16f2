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
from swarmrun.execution import outputstore, sharedfs
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
    staged: Path | None = None  # shared file system: the staging directory to promote on a win
    final: Path | None = None  # ... and where it goes

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
    shared: Path | None = None,
) -> tuple[Outcome, Extras]:
    """Run one execution in a fresh point directory (removed whatever happens); collect its outputs.

    `shared`: the sweep's results directory on a file system this worker shares with the manager
    (`outputstore.shared_root`); files are then moved there instead of sent through Redis.
    """
    token = token or secrets.token_hex(4)
    began = time.time()
    files: tuple[OutputFile, ...] = ()
    staged: Path | None = None
    root = sharedfs.sweep_root(options.outputs_dir, sweep, sweep_id) if options.outputs_dir else shared
    # Sharing the manager's disk, the point runs in its own staging directory (no move after);
    # on an `outputs_dir:` mount (maybe a network one) it runs locally and its files are moved.
    in_place = None
    if shared is not None and not options.outputs_dir:
        in_place = sharedfs.ExecutionDir(sharedfs.staging_dir(shared, index, token))
    with in_place or point_dir as path:
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
                    sharedfs.check_mounted(options.outputs_dir)
                if in_place is not None and found:
                    sharedfs.keep_only(path, {f.name for _, f in found})
                    staged, in_place.keep = path, True
                elif root is not None and found:
                    staged = sharedfs.staging_dir(root, index, token)
                    sharedfs.stage(staged, found)
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
    final = sharedfs.final_dir(root, index) if root is not None and staged is not None else None
    return outcome, Extras(token, execution, log, files, staged, final)


def settle(
    connection: redis.Redis,
    sweep: Sweep,
    sweep_id: str,
    options: Options,
    entries: list[tuple[int, Extras]],
    winners: list[str | None],
) -> None:
    """After recording: promote a winning execution's staged files, drop a loser's files."""
    moved = 0
    for (index, extras), winner in zip(entries, winners, strict=True):
        won = winner == extras.token
        if extras.staged is not None and extras.final is not None:
            if won:
                moved += len(extras.files) if sharedfs.promote(extras.staged, extras.final) else 0
            else:
                shutil.rmtree(extras.staged, ignore_errors=True)
        elif extras.files and not won:
            outputstore.discard(connection, sweep_id, index, extras.token, extras.files)
    outputstore.count_moved(connection, sweep_id, moved)
