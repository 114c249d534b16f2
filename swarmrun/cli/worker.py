"""`swarmrun worker`: the worker entrypoint, kept apart so a worker loads nothing of `run`."""

from __future__ import annotations

import os

import click

from swarmrun.cli.common import State, exit_now, pass_state, redis_options


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
