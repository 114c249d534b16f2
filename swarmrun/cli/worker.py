"""`swarmrun worker`: the worker entrypoint, kept apart so a worker loads nothing of `run`."""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from typing import NoReturn

import click

from swarmrun.cli.common import State, pass_state, redis_options


@click.command()
@click.option("--burst", is_flag=True, help="Exit once the queue is empty.")
@click.option("--name", envvar="SWARMRUN_WORKER_NAME", help="Worker name prefix (default: the host name).")
@click.option("--wait", type=float, default=120.0, show_default=True, help="Seconds to wait for Redis.")
@redis_options
@pass_state
def worker(state: State, burst: bool, name: str | None, wait: float) -> int:
    """Consume the queue: run chunks until stopped (SIGTERM finishes the current chunk)."""
    from swarmrun.execution.worker import serve

    parent = os.environ.get("SWARMRUN_PARENT_PID")  # set by the local backend for its workers
    code = serve(
        state.settings,
        state.url(),
        burst=burst,
        name=name,
        wait=wait,
        parent=int(parent) if parent and parent.isdigit() else None,
    )
    click.get_current_context().close()  # the command's resources (its Redis URL), as at a return
    exit_now(code)


def exit_now(code: int) -> NoReturn:
    """Exit without the interpreter's teardown of every loaded module (0.06 to 0.1 s of a stopped
    worker's exit here, more under load; `swarmrun run` waits for its idle workers to exit).

    What a normal exit does that matters still happens: threads that are not daemons (a task may
    start some) are joined, atexit handlers run (logging's flush among them), stdout and stderr
    are flushed.
    """
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
