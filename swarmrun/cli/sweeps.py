"""Sweep commands that run points: run, submit, retry (`worker` and `autoscale` have modules of their own)."""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from swarmrun.backends import Replicas
from swarmrun.backends.local import LocalBackend
from swarmrun.backends.swarm.stack import StackConfig
from swarmrun.cli.autoscale import (
    event_line,
    make_autoscaler,
    make_policy,
    parse_bounds,
    tuning_options,
)
from swarmrun.cli.common import State, output, pass_state, redis_options, say_indexing
from swarmrun.cli.stack import stack_options
from swarmrun.definition.sweep import Sweep
from swarmrun.definition.sweepfile import load_sweep
from swarmrun.errors import DockerUnavailable, ExitCode, SweepFileError
from swarmrun.execution import progress as fmt
from swarmrun.execution.autoscale import Autoscaler, Policy
from swarmrun.execution.cachedoutputs import fetch_cached
from swarmrun.execution.export import export
from swarmrun.execution.failures import FailureFeed, grown
from swarmrun.execution.failures import group as group_errors
from swarmrun.execution.livexport import LiveExport
from swarmrun.execution.outputs import sweep_dir_name
from swarmrun.execution.outputstore import OutputCollector
from swarmrun.execution.queue import Progress, SweepQueue
from swarmrun.execution.task import preflight
from swarmrun.execution.watch import ProgressCallback, default_output, watch

sweep_file = click.argument("sweep_file", metavar="SWEEP", type=click.Path(dir_okay=False, path_type=Path))
overrides = click.option(
    "-p",
    "--param",
    "params",
    multiple=True,
    metavar="NAME=VALUES",
    help="Override an axis: alpha=0.1,0.2 | n=range(1,10) | x=linspace(0,1,5).",
)
no_check = click.option(
    "--no-check",
    is_flag=True,
    help="Skip checking that the task imports / the program exists here "
    "(for code that only exists in the worker image).",
)


def outputs_dest(sweep: Sweep, sweep_id: str, output: Path | None) -> Path:
    """A sweep's results directory: beside its results file, `<sweep-name>-<id8>/`."""
    if output is not None:
        return output.parent / output.stem
    return default_output(sweep.name, sweep_id).parent / sweep_dir_name(sweep.name, sweep_id)


class Printer:
    """Live progress: redrawn in place on a terminal, a line every few seconds otherwise."""

    def __init__(self, quiet: bool = False, every: float = 5.0) -> None:
        self.tty = sys.stderr.isatty()
        self.quiet = quiet
        self.every = every
        self.last = 0.0

    def __call__(self, p: Progress, rate: float | None, replicas: Replicas | None) -> None:
        if self.quiet:
            return
        line = fmt.progress_line(p, rate, replicas)
        if self.tty:
            click.echo("\r" + line.ljust(110), nl=False, err=True)
        elif time.monotonic() - self.last >= self.every or p.complete:
            click.echo(line, err=True)
            self.last = time.monotonic()

    def done(self) -> None:
        if self.tty and not self.quiet:
            click.echo("", err=True)

    def note(self, line: str) -> None:
        """A line of its own (an autoscaling change), above the live progress line."""
        click.echo(("\r" + line.ljust(110)) if self.tty else line, err=True)


@dataclass(frozen=True)
class Autoscaling:
    """`run --autoscale MIN:MAX` and its tuning options."""

    policy: Policy
    tuning: dict[str, float]

    def start(self, state: State, backend: Any, printer: Printer) -> Autoscaler:
        return make_autoscaler(
            state, backend, self.policy, self.tuning, lambda e: printer.note(f"autoscale: {event_line(e)}")
        )


COUNT_EVERY = 2.0  # seconds between the running counts of error groups that grew


class Follow:
    """What `run` does beside progress: fetch output files, print new errors and the running
    count of each error group (when it grew, every `COUNT_EVERY` s at most), fail fast."""

    def __init__(
        self, queue: SweepQueue, sweep: Sweep, sweep_id: str, dest: Path, fail_fast: int | None
    ) -> None:
        self.queue, self.sweep, self.sweep_id = queue, sweep, sweep_id
        self.collector = OutputCollector(queue, sweep, sweep_id, dest) if sweep.options.outputs else None
        self.feed = FailureFeed(queue, sweep_id)
        self.fail_fast = fail_fast
        self.tripped = False
        self.fetched = 0
        self.last = 0.0
        self.shown: dict[str, int] = {}  # error text -> the count printed last
        self.counted = time.monotonic()

    def tick(self, printer: Printer) -> None:
        now = time.monotonic()
        if self.collector is not None and now - self.last >= 1.0:
            self.last = now
            self._collect(printer)
        for new in self.feed.poll():
            self.shown[new.message] = new.count
            printer.note(f"error at point {new.index} ({new.count} so far): {new.message}")
        if now - self.counted >= COUNT_EVERY:
            self.counted = now
            self._counts(printer)
        if self.fail_fast is not None and not self.tripped and self.feed.failed >= self.fail_fast:
            self.tripped = True
            self.queue.cancel(self.sweep_id)

    def _counts(self, printer: Printer) -> None:
        """A line per error group whose count grew since it was last printed (a few at most)."""
        lines, others = grown(self.feed.counts, self.shown)
        for line in lines:
            printer.note(line)
        if others:
            printer.note(f"errors so far: {others} other errors grew too (`swarmrun status`)")
        self.shown.update(self.feed.counts)

    def share(self) -> None:
        """Let workers that see this file system (local ones) move files straight into place."""
        if self.collector is not None and not self.sweep.options.outputs_dir:
            self.collector.share()

    def _collect(self, printer: Printer, final: bool = False) -> None:
        assert self.collector is not None
        got = self.collector.collect(final=final)
        self.fetched += got.files
        for problem in got.problems:
            printer.note(f"outputs: {problem}")

    def finish(self, printer: Printer, stopped: bool = False) -> None:
        """The last collection; `stopped`: no worker runs any more (local ones were stopped)."""
        if self.collector is not None:
            self._collect(printer, final=stopped)
            self.collector.unshare()
            cached = fetch_cached(self.collector)
            self.fetched += cached.files
            for problem in cached.problems:
                printer.note(f"outputs: {problem}")
            moved = ""
            if self.collector.shared_files:
                moved = f", {self.collector.shared_files} moved there by workers on this file system"
            click.echo(f"Output files: {self.fetched} fetched into {self.collector.dest}{moved}", err=True)

        for message, count in group_errors(list(self.feed.counts.elements())):
            click.echo(f"  {count} x {message}", err=True)


def _with_autoscaler(
    printer: Printer, scaler: Autoscaler | None, follow: Follow | None = None
) -> ProgressCallback:
    """The progress callback, also giving the autoscaler its turn (it keeps its own interval)."""

    def report(p: Progress, rate: float | None, replicas: Replicas | None) -> None:
        printer(p, rate, replicas)
        if follow is not None:
            follow.tick(printer)
        if scaler is not None and not p.complete:
            scaler.tick()

    return report


def _load(path: Path, params: tuple[str, ...], *, check: bool = True) -> Sweep:
    """Read and validate a sweep file; check on this machine that its task can start."""
    sweep = load_sweep(path, params)
    if check:
        _check(sweep, path)
    return sweep


def _check(sweep: Sweep, path: Path) -> None:
    preflight(sweep.task, param_names=sweep.param_names, origin=path.resolve().parent)


def _local_backend(state: State, sweep_id: str, cwd: Path | None, *, fork: bool = False) -> LocalBackend:
    log_dir = state.settings.home / "logs" / sweep_id[:12]
    return LocalBackend(state.settings, state.url(), log_dir=log_dir, cwd=cwd, fork=fork)


def _drive(
    state: State,
    queue: SweepQueue,
    sweep: Sweep,
    sweep_id: str,
    *,
    workers: int,
    backend: LocalBackend,
    quiet: bool,
    autoscaling: Autoscaling | None = None,
    follow: Follow | None = None,
) -> Progress:
    """Run local workers until the sweep completes; Ctrl-C stops them warm (a second one, at once).

    `backend` may have started its workers already (`deploy` again changes nothing then)."""
    printer = Printer(quiet)
    scaler = autoscaling.start(state, backend, printer) if autoscaling else None
    backend.deploy(autoscaling.policy.min_replicas if autoscaling else workers)
    try:
        final = watch(
            queue,
            sweep_id,
            on_progress=_with_autoscaler(printer, scaler, follow),
            replicas=backend.replicas,
            supervise=backend.supervise,
        )
    except KeyboardInterrupt:
        printer.done()
        click.echo("Stopping workers (they finish their chunks; Ctrl-C again to stop at once)...", err=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            backend.stop()
        except KeyboardInterrupt:
            backend.stop(grace=0)
        p = queue.progress(sweep_id)
        click.echo(
            f"Stopped with {p.done}/{p.size} points done; run the same command again to resume.", err=True
        )
        raise
    finally:
        backend.stop()
    printer.done()
    if follow is not None:
        follow.finish(printer, stopped=True)
    return final


def _finish(
    queue: SweepQueue,
    sweep: Sweep,
    sweep_id: str,
    out: Path | None,
    final: Progress,
    follow: Follow | None = None,
    live: LiveExport | None = None,
) -> int:
    path = live.path if live is not None else out or default_output(sweep.name, sweep_id)
    rows = live.finish() if live is not None else export(queue, sweep, sweep_id, path)
    if follow is not None and follow.tripped:
        first = sorted(follow.feed.first.items(), key=lambda item: item[1])
        which = ", ".join(f"point {i}: {m}" for m, i in first[:3])
        click.echo(
            f"--fail-fast: cancelled the sweep after {follow.feed.failed} failed points ({which}); "
            f"{final.done}/{final.size} points done. Results so far: {path}",
            err=True,
        )
        return ExitCode.POINTS_FAILED
    click.echo(
        f"{final.done}/{final.size} points done: {final.ok} ok ({final.cached} cached), "
        f"{final.error} error, {final.timeout} timeout; {final.duplicates} duplicate executions.",
        err=True,
    )
    click.echo(f"Results ({rows} rows): {path}", err=True)
    if final.failed:
        click.echo(
            f"Some points failed: see the error column, or `swarmrun retry {sweep_id[:12]}`.", err=True
        )
        return ExitCode.POINTS_FAILED
    return ExitCode.OK


def _choose_backend(state: State, backend: str) -> str:
    """`auto`: swarm when the Docker engine is a swarm manager, else kubernetes when a cluster
    answers (KUBECONFIG or in-cluster), else local; and say which and why."""
    if backend != "auto":
        return backend
    from swarmrun.backends.swarm import (
        engine,  # the docker SDK: imported only when a command needs the engine
    )

    try:
        engine.require_manager(engine.connect())
        chosen, why = "swarm", "this Docker engine is a swarm manager"
    except DockerUnavailable as e:
        chosen, why = "local", str(e)
        from swarmrun.backends.kubernetes.backend import (
            cluster_answers,  # imports the client only when called
        )

        answers, what = cluster_answers(context=state.kube_request.context)
        if answers:
            chosen, why = "kubernetes", f"no swarm manager ({e}); {what}"
    click.echo(f"backend: {chosen} ({why})", err=True)
    return chosen


def _run_on_swarm(
    state: State,
    sweep: Sweep,
    *,
    workers: int | None,
    config: StackConfig,
    quiet: bool,
    autoscaling: Autoscaling | None = None,
    output: Path | None = None,
    fail_fast: int | None = None,
) -> tuple[SweepQueue, str, Progress, Follow, LiveExport]:
    """Ensure the stack, submit to its Redis, follow progress with replicas per node.

    With autoscaling, a new stack starts at the minimum, and when the sweep is done the workers
    go back to what is still running on the queue (at least the minimum).
    """
    state.stack = config.name
    backend = state.stack_backend(config)
    # A deployed stack keeps its image and options (`swarmrun up` changes those); `-w` only scales it.
    if not backend.exists():
        backend.deploy(max(1, autoscaling.policy.min_replicas) if autoscaling is not None else workers)
    elif workers is not None and autoscaling is None:
        backend.scale(workers)
    state.remember_stack()
    queue = state.queue()
    sub = queue.submit(sweep, indexing=say_indexing)
    click.echo(
        f"sweep {sub.sweep_id} ({sweep.name}): {sub.size} points, {sub.done} already done; "
        f"stack {config.name}",
        err=True,
    )
    printer = Printer(quiet)
    scaler = autoscaling.start(state, backend, printer) if autoscaling else None
    follow = Follow(queue, sweep, sub.sweep_id, outputs_dest(sweep, sub.sweep_id, output), fail_fast)
    live = LiveExport(queue, sweep, sub.sweep_id, output or default_output(sweep.name, sub.sweep_id)).start()
    try:
        final = watch(
            queue,
            sub.sweep_id,
            on_progress=_with_autoscaler(printer, scaler, follow),
            replicas=backend.replicas,
        )
    except KeyboardInterrupt:
        live.finish()  # the results so far
        raise
    if scaler is not None:
        scaler.settle_down()
    printer.done()
    follow.finish(printer)
    return queue, sub.sweep_id, final, follow, live


@click.command()
@sweep_file
@overrides
@click.option(
    "-w",
    "--workers",
    "--replicas",
    "workers",
    type=click.IntRange(min=1),
    help="Worker processes (local: default the CPU count) or replicas (swarm: default keep, or 2).",
)
@click.option(
    "--autoscale",
    "autoscale_bounds",
    metavar="MIN:MAX",
    help="Scale the workers between MIN and MAX while the sweep runs (see `swarmrun autoscale`).",
)
@tuning_options
@output
@click.option(
    "--fail-fast",
    type=click.IntRange(min=1),
    is_flag=False,
    flag_value=1,
    default=None,
    metavar="[N]",
    help="Cancel the sweep after N failed points (default 1); exit code 1.",
)
@click.option("-q", "--quiet", is_flag=True, help="No live progress.")
@no_check
@redis_options
@stack_options
@pass_state
def run(
    state: State,
    sweep_file: Path,
    params: tuple[str, ...],
    workers: int | None,
    autoscale_bounds: str | None,
    tuning: dict[str, float],
    output: Path | None,
    fail_fast: int | None,
    quiet: bool,
    no_check: bool,
    stack_config: StackConfig,
) -> int:
    """Submit SWEEP, run it on workers until every point has a result, export the results."""
    autoscaling = None
    if autoscale_bounds is not None:
        if workers is not None:
            raise click.BadParameter(
                "give either a worker count or --autoscale MIN:MAX, not both", param_hint="-w/--workers"
            )
        policy = make_policy(parse_bounds(autoscale_bounds), tuning, "--autoscale")
        autoscaling = Autoscaling(policy, tuning)
    sweep = _load(sweep_file, params, check=False)  # checked below: on the local backend, after
    # the workers are forked (the check imports the user's task, which a worker imports afresh)
    default = "kubernetes" if state.kube is not None else "swarm" if state.stack else "local"
    chosen = _choose_backend(state, state.backend_choice or default)
    if chosen == "local" and state.stack_remembered:
        state.stack = None  # `--backend local` with no stack named: the embedded Redis, not up's
    if chosen == "local":
        state.kube = None
    if chosen == "kubernetes" and state.kube is None:
        state.kube = state.kube_request  # `--backend auto` chose it: --namespace / --context apply
    if chosen in ("swarm", "kubernetes"):
        if not no_check:
            _check(sweep, sweep_file)
        queue, sid, final, follow, live = _run_on_swarm(
            state,
            sweep,
            workers=workers,
            config=stack_config,
            quiet=quiet,
            autoscaling=autoscaling,
            output=output,
            fail_fast=fail_fast,
        )
        return _finish(queue, sweep, sid, output, final, follow, live)
    origin = sweep_file.resolve().parent
    if sweep.options.outputs_dir and not Path(sweep.options.outputs_dir).is_dir():
        raise SweepFileError(
            f"{sweep_file.name}: outputs_dir: {sweep.options.outputs_dir} is not a directory here"
        )
    queue = state.queue()
    # The workers start first, forked from this process (no interpreter start, no imports): they
    # are ready by the time the task is checked and the sweep submitted.
    backend = _local_backend(state, sweep.id, origin, fork=autoscaling is None)
    if autoscaling is None:
        backend.deploy(workers or os.cpu_count() or 1)
    backend.stop_forking()
    try:
        if not no_check:
            _check(sweep, sweep_file)
        follow = Follow(queue, sweep, sweep.id, outputs_dest(sweep, sweep.id, output), fail_fast)
        follow.share()
        sub = queue.submit(sweep, origin=origin, indexing=say_indexing)
    except BaseException:
        backend.stop()  # a warm stop: idle, they leave at once and unregister from the queue
        raise
    click.echo(f"sweep {sub.sweep_id} ({sweep.name}): {sub.size} points, {sub.done} already done", err=True)
    if sub.done >= sub.size:
        backend.stop()
        click.echo("Every point is already done; nothing to run.", err=True)
        final = queue.progress(sub.sweep_id)
        follow.finish(Printer(quiet))
        return _finish(queue, sweep, sub.sweep_id, output, final, follow)
    live = LiveExport(queue, sweep, sub.sweep_id, output or default_output(sweep.name, sub.sweep_id)).start()
    try:
        final = _drive(
            state,
            queue,
            sweep,
            sub.sweep_id,
            workers=workers or os.cpu_count() or 1,
            backend=backend,
            quiet=quiet,
            autoscaling=autoscaling,
            follow=follow,
        )
    except KeyboardInterrupt:
        live.finish()  # the results so far
        raise
    return _finish(queue, sweep, sub.sweep_id, output, final, follow, live)


@click.command()
@sweep_file
@overrides
@no_check
@redis_options
@pass_state
def submit(state: State, sweep_file: Path, params: tuple[str, ...], no_check: bool) -> None:
    """Submit SWEEP to the queue and print its id (workers run it: `swarmrun worker`, `up`)."""
    sweep = _load(sweep_file, params, check=not no_check)
    sub = state.queue().submit(sweep, origin=sweep_file.resolve().parent, indexing=say_indexing)
    note = "already running" if sub.running else "queued" if sub.started else "already complete"
    click.echo(f"{sweep.name}: {sub.size} points, {sub.done} done, {note}", err=True)
    click.echo(sub.sweep_id)


@click.command()
@click.argument("sweep_id", required=False)
@click.option(
    "-w",
    "--workers",
    type=click.IntRange(min=1),
    default=lambda: os.cpu_count() or 1,
    show_default="CPU count",
    help="Local workers to start when no worker is running.",
)
@click.option("--detach", is_flag=True, help="Only queue the points again; do not start workers.")
@output
@redis_options
@pass_state
def retry(state: State, sweep_id: str | None, workers: int, detach: bool, output: Path | None) -> int:
    """Run the failed and timed-out points of a sweep again (default: the newest)."""
    queue = state.queue()
    sid = queue.resolve(sweep_id)
    cleared = queue.retry_failed(sid)
    click.echo(f"{cleared} failed points queued again.", err=True)
    if not cleared:
        return ExitCode.OK
    if detach or queue.live_workers():
        click.echo("Running workers will pick them up (`swarmrun status --watch`).", err=True)
        return ExitCode.OK
    sweep = queue.load(sid)
    follow = Follow(queue, sweep, sid, outputs_dest(sweep, sid, output), None)  # files, new errors
    follow.share()
    backend = _local_backend(state, sid, queue.origin(sid))
    final = _drive(state, queue, sweep, sid, workers=workers, backend=backend, quiet=False, follow=follow)
    return _finish(queue, sweep, sid, output, final, follow)
