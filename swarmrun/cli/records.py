"""Commands on what sweeps have recorded: status, results, show, ls, cancel, purge."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from swarmrun.backends import Replicas
from swarmrun.cli.common import State, output, pass_state, redis_options, say_indexing
from swarmrun.execution import progress as fmt
from swarmrun.execution.cachedoutputs import fetch_cached
from swarmrun.execution.export import export
from swarmrun.execution.failures import failure_lines
from swarmrun.execution.outputstore import OutputCollector, file_dirs
from swarmrun.execution.pointinfo import point_info
from swarmrun.execution.pointlog import PointLogs
from swarmrun.execution.queue import Progress
from swarmrun.execution.watch import default_output, watch


@click.command()
@click.argument("sweep_id", required=False)
@click.option("--watch", "follow", is_flag=True, help="Keep refreshing until the sweep completes.")
@click.option("--interval", type=float, default=2.0, show_default=True)
@redis_options
@pass_state
def status(state: State, sweep_id: str | None, follow: bool, interval: float) -> None:
    """Progress of a sweep (default: the newest), its chunks and workers."""
    queue = state.queue()
    sid = queue.resolve(sweep_id)

    def show(p: Progress, rate: float | None, replicas: Replicas | None) -> None:
        live = queue.live_workers()
        lines = fmt.status_lines(p, rate, replicas or Replicas(live, live), queue.chunk_counts(sid))
        lines += failure_lines(queue, sid) if p.failed else []
        if follow and sys.stdout.isatty():
            click.clear()
        click.echo("\n".join(lines))

    replicas = state.stack_backend().replicas if state.stack or state.kube else None
    watch(queue, sid, on_progress=show, replicas=replicas, poll=interval, until_complete=follow)


@click.command()
@click.argument("sweep_id", required=False)
@output
@click.option(
    "--outputs",
    "outputs_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also fetch the output files not fetched yet into DIR/points/INDEX/.",
)
@redis_options
@pass_state
def results(state: State, sweep_id: str | None, output: Path | None, outputs_dir: Path | None) -> None:
    """Export a sweep's results (default: the newest sweep) to CSV, JSON Lines or Parquet."""
    queue = state.queue()
    sid = queue.resolve(sweep_id)
    sweep = queue.load(sid)
    path = output or default_output(sweep.name, sid)
    rows = export(queue, sweep, sid, path)
    click.echo(f"{rows} results written to {path}", err=True)
    if outputs_dir is not None:
        collector = OutputCollector(queue, sweep, sid, outputs_dir)
        got, cached = collector.collect(), fetch_cached(collector)
        got.files, got.bytes = got.files + cached.files, got.bytes + cached.bytes
        for problem in got.problems + cached.problems:
            click.echo(f"outputs: {problem}", err=True)
        click.echo(f"{got.files} output files ({got.bytes} bytes) fetched into {outputs_dir}", err=True)
        here = outputs_dir.resolve()
        dirs = [d / "points" for d in file_dirs(queue.connection, sweep, sid) if d != here]
        if earlier := [f"{d}/" for d in dirs if d.is_dir()]:  # fetched by `run`, or moved by workers
            click.echo(f"Output files fetched earlier are in {', '.join(earlier)}", err=True)


@click.command()
@click.argument("sweep_id")
@redis_options
@pass_state
def cancel(state: State, sweep_id: str) -> None:
    """Cancel a sweep: queued chunks are dropped, running chunks stop within a second."""
    queue = state.queue()
    sid = queue.resolve(sweep_id)
    removed = queue.cancel(sid)
    click.echo(f"sweep {sid} cancelled ({removed} queued chunks removed); submit it again to resume.")


@click.command()
@click.argument("sweep_id")
@redis_options
@pass_state
def purge(state: State, sweep_id: str) -> None:
    """Delete a sweep and its records (results shared with other sweeps of the same task stay)."""
    queue = state.queue()
    sid = queue.resolve(sweep_id)
    OutputCollector(queue, queue.load(sid), sid, Path(".")).purge()
    PointLogs(queue.connection).purge(sid)
    queue.purge(sid, indexing=say_indexing)
    click.echo(f"sweep {sid} purged")


@click.command(name="ls")
@redis_options
@pass_state
def ls(state: State) -> None:
    """List sweeps, newest last."""
    queue = state.queue()
    rows = [queue.progress(sid) for sid in queue.sweep_ids()]
    if not rows:
        click.echo("no sweeps yet", err=True)
        return
    click.echo(f"{'ID':<16}  {'NAME':<24} {'STATE':<10} {'DONE':>15} {'FAILED':>7}  SUBMITTED")
    for p in rows:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(p.created))
        click.echo(
            f"{p.sweep_id:<16}  {p.name[:24]:<24} {fmt.state_text(p):<10} {f'{p.done}/{p.size}':>15} "
            f"{p.failed:>7}  {when}"
        )


@click.command()
@click.argument("args", nargs=-1, metavar="[ID] INDEX")
@redis_options
@pass_state
def show(state: State, args: tuple[str, ...]) -> None:
    """Everything about one point: params, status, value, error, executions, files, log tail."""
    sid, index = _point_args(state, args)
    queue = state.queue()
    click.echo("\n".join(point_info(queue, queue.load(sid), sid, index).lines()))


def _point_args(state: State, args: tuple[str, ...]) -> tuple[str, int]:
    if len(args) not in (1, 2) or not args[-1].isdigit():
        raise click.UsageError("expected [ID] INDEX: an optional sweep id and a point index")
    return state.queue().resolve(args[0] if len(args) == 2 else None), int(args[-1])


def point_log(state: State, sweep_id: str | None, index: int) -> str:
    """The log of a point's recorded execution (else its last), for `swarmrun logs --point`."""
    queue = state.queue()
    sid = queue.resolve(sweep_id)
    info = point_info(queue, queue.load(sid), sid, index)
    return info.log or ""
