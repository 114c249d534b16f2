"""What every command shares: the group, `--redis-url`, the settings, a lazily opened queue."""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib
import json
import logging
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from swarmrun import __version__
from swarmrun.errors import BadOption
from swarmrun.settings import Settings

# The library (RQ, redis-py and its asyncio, the docker SDK) is imported by the commands that use
# it, when they use it: `swarmrun --help` loads none of it (tests/unit/test_cli_imports.py).
if TYPE_CHECKING:
    from swarmrun.backends.kubernetes.backend import KubernetesBackend
    from swarmrun.backends.swarm.backend import SwarmBackend
    from swarmrun.backends.swarm.stack import StackConfig
    from swarmrun.execution.queue import SweepQueue

DEFAULT_STACK = "swarmrun"

F = TypeVar("F", bound=Callable[..., Any])
BACKENDS = ("local", "swarm", "kubernetes", "auto")


@dataclass(frozen=True)
class KubeTarget:
    """The cluster and namespace of `--backend kubernetes` (None: as kubectl would choose)."""

    namespace: str | None = None
    context: str | None = None


@dataclass
class State:
    """Per-invocation state: settings, and a queue opened on first use and closed at exit.

    Redis is, in this order: `--redis-url` (SWARMRUN_REDIS_URL); the Redis of stack `--stack`
    (SWARMRUN_STACK); the Redis of the stack `swarmrun up` last deployed on this Docker engine
    (until `swarmrun down`); the embedded server.
    """

    settings: Settings
    debug: bool = False
    stack: str | None = None
    stack_remembered: bool = False
    backend_choice: str | None = None
    kube: KubeTarget | None = None
    kube_request: KubeTarget = field(default_factory=KubeTarget)
    _queue: SweepQueue | None = field(default=None, repr=False)
    _url: str | None = field(default=None, repr=False)
    _swarm: SwarmBackend | None = field(default=None, repr=False)
    _kubernetes: KubernetesBackend | None = field(default=None, repr=False)

    def url(self) -> str:
        if self._url is None:
            from swarmrun.execution.watch import redis_url

            if self.settings.url is None and (self.kube is not None or self.stack):
                self._url = self._stack_url()
            else:
                self._url = click.get_current_context().with_resource(
                    redis_url(self.settings, on_restart=_note)
                )
        return self._url

    def _stack_url(self) -> str:
        """The Redis of the stack, once it answers (the worker module has the wait)."""
        from swarmrun.execution.worker import wait_for_redis

        if self.kube is not None:
            # Through a port-forward via the API server, open until the command ends.
            self.stack = self.stack or DEFAULT_STACK
            kube = self.kubernetes()
            forward = click.get_current_context().with_resource(kube.port_forward())
            url = kube.redis_url(forward.port)
        else:
            url = self.swarm().redis_url()
        wait_for_redis(url, timeout=90).close()
        return url

    def swarm(self, config: StackConfig | None = None, labels: dict[str, str] | None = None) -> SwarmBackend:
        """The swarm backend of `--stack` (connecting to Docker on first use)."""
        if self._swarm is None or config is not None:
            from swarmrun.backends.swarm import engine
            from swarmrun.backends.swarm.backend import SwarmBackend
            from swarmrun.backends.swarm.stack import StackConfig

            config = config or StackConfig(name=self.stack or DEFAULT_STACK)
            self._swarm = SwarmBackend(
                engine.connect(),
                config,
                home=self.settings.home,
                extra_labels=labels,
                ca_file=self.settings.redis_ca,
            )
        return self._swarm

    def kubernetes(self, config: StackConfig | None = None) -> KubernetesBackend:
        """The kubernetes backend of `--stack` in `--namespace` of `--context`."""
        if self._kubernetes is None or config is not None:
            from swarmrun.backends.kubernetes.backend import KubernetesBackend
            from swarmrun.backends.swarm.stack import StackConfig

            target = self.kube or KubeTarget()
            config = config or StackConfig(name=self.stack or DEFAULT_STACK)
            self._kubernetes = KubernetesBackend(
                config,
                context=target.context,
                namespace=target.namespace,
                warn=lambda line: click.echo(line, err=True),
                home=self.settings.home,
                ca_file=self.settings.redis_ca,
            )
        return self._kubernetes

    def stack_backend(self, config: StackConfig | None = None) -> SwarmBackend | KubernetesBackend:
        """The backend running the stack's workers: kubernetes when chosen, else swarm."""
        if self.kube is not None:
            return self.kubernetes(config)
        return self.swarm(config, dict(config.labels) if config else None)

    def remember_stack(self) -> None:
        """Make the other commands use this stack when they name none (`up`, `run --backend swarm`)."""
        if not self.stack:
            return
        current = _read_current(self.settings.home)
        if self.kube is not None:
            kube = self.kubernetes()
            where = {"stack": self.stack, "namespace": kube.namespace, "context": self.kube.context}
            current.update({"@backend": "kubernetes", "@kubernetes": json.dumps(where)})
        else:
            current.pop("@backend", None)
            current[_engine_key()] = self.stack
        _write_current(self.settings.home, current)

    def forget_stack(self) -> None:
        current = _read_current(self.settings.home)
        if self.kube is not None:
            if _remembered_kube(current).get("stack") == self.stack:
                current.pop("@backend", None)
                current.pop("@kubernetes", None)
                _write_current(self.settings.home, current)
        elif current.get(_engine_key()) == self.stack:
            del current[_engine_key()]
            _write_current(self.settings.home, current)

    def queue(self) -> SweepQueue:
        if self._queue is None:
            from swarmrun.execution.connection import connect
            from swarmrun.execution.queue import SweepQueue

            connection = connect(self.url(), resilient=True, patience=self.settings.redis_patience)
            self._queue = SweepQueue(connection, self.settings.queue)
        return self._queue


pass_state = click.make_pass_decorator(State)


def _note(line: str) -> None:
    """A line of its own on stderr, also when a live progress line is being redrawn there."""
    click.echo(("\r" + line.ljust(110)) if sys.stderr.isatty() else line, err=True)


def _engine_key() -> str:
    return os.environ.get("DOCKER_HOST") or "local"


def _current_file(home: Path) -> Path:
    return home / "stacks" / "current.json"


def _read_current(home: Path) -> dict[str, str]:
    """{Docker engine: the stack `up` last deployed there}; unreadable counts as empty."""
    try:
        data = json.loads(_current_file(home).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _remembered_kube(current: dict[str, str]) -> dict[str, Any]:
    """The stack `up --backend kubernetes` last deployed: {stack, namespace, context}."""
    if current.get("@backend") != "kubernetes":
        return {}
    try:
        data = json.loads(current.get("@kubernetes", "{}"))
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _write_current(home: Path, current: dict[str, str]) -> None:
    path = _current_file(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)


def redis_options(func: F) -> F:
    """`--redis-url` (SWARMRUN_REDIS_URL) and `--queue` on a command."""

    @click.option(
        "--redis-url",
        envvar="SWARMRUN_REDIS_URL",
        metavar="URL",
        help="Redis to use (default: the embedded server). Env: SWARMRUN_REDIS_URL.",
    )
    @click.option(
        "--redis-ca",
        envvar="SWARMRUN_REDIS_CA",
        metavar="FILE",
        type=click.Path(dir_okay=False),
        help="CA certificate a rediss:// Redis is verified against (default: the stack's, "
        "kept by `up --tls`). Env: SWARMRUN_REDIS_CA.",
    )
    @click.option("--queue", "queue_name", envvar="SWARMRUN_QUEUE", metavar="NAME", help="RQ queue name.")
    @click.option(
        "--stack",
        envvar="SWARMRUN_STACK",
        metavar="NAME",
        help="Use the Redis (and workers) of this deployed stack. Env: SWARMRUN_STACK.",
    )
    @click.option(
        "--backend",
        type=click.Choice(BACKENDS),
        envvar="SWARMRUN_BACKEND",
        help="Where the workers run: local processes, a swarm stack, a Kubernetes namespace, or auto "
        "(default: what `swarmrun up` last deployed, else local). Env: SWARMRUN_BACKEND.",
    )
    @click.option(
        "--namespace",
        envvar="SWARMRUN_NAMESPACE",
        metavar="NS",
        help="Kubernetes namespace (default: the context's, else default); implies --backend kubernetes.",
    )
    @click.option(
        "--context",
        "kube_context",
        envvar="SWARMRUN_KUBE_CONTEXT",
        metavar="CTX",
        help="Kubernetes context of KUBECONFIG (default: the current one); implies --backend kubernetes.",
    )
    @functools.wraps(func)
    def wrapper(
        *args: Any,
        redis_url: str | None,
        redis_ca: str | None,
        queue_name: str | None,
        stack: str | None,
        backend: str | None,
        namespace: str | None,
        kube_context: str | None,
        **kwargs: Any,
    ) -> Any:
        state = click.get_current_context().find_object(State)
        assert state is not None
        settings = state.settings.with_redis(redis_url)
        if queue_name:
            settings = replace(settings, queue=queue_name)
        if redis_ca:
            settings = replace(settings, redis_ca=redis_ca)
        state.settings = settings
        state.stack = stack
        if backend is None and (namespace or kube_context):
            backend = "kubernetes"
        state.backend_choice = backend
        remembered = _read_current(settings.home) if stack is None and settings.url is None else {}
        kube = _remembered_kube(remembered)
        if kube and namespace and kube.get("namespace") != namespace:
            kube = {}
        state.kube_request = KubeTarget(
            namespace or kube.get("namespace"), kube_context or kube.get("context")
        )
        if backend == "kubernetes" or (backend is None and kube):
            state.kube = state.kube_request
            if stack is None and kube.get("stack"):
                state.stack = str(kube["stack"])
                state.stack_remembered = True
        elif stack is None and settings.url is None:
            state.stack = remembered.get(_engine_key())
            state.stack_remembered = state.stack is not None
        return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _output_name(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """A results file name the exporter can write, checked before any work (a usage error)."""
    from swarmrun.execution.export import format_of

    if value is not None and format_of(value) is None:
        raise BadOption(f"-o {value}: cannot tell the format: use a .csv, .jsonl or .parquet name")
    return value


output = click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    callback=_output_name,
    help="Results file (.csv, .jsonl, .parquet). Default: swarmrun-results/NAME-ID.csv",
)


# Every command is imported only when it runs (or its own help is asked for): `swarmrun --help`
# lists them from these lines, and `swarmrun worker` (once per replica, 20 at once on a scale-up)
# loads the worker and nothing of `run`, the docker SDK or the dashboard. A test checks that each
# line is the command's own short help, so they cannot drift.
COMMANDS = {
    "autoscale": "swarmrun.cli.autoscale:autoscale",
    "cancel": "swarmrun.cli.records:cancel",
    "dashboard": "swarmrun.cli.dashboard:dashboard",
    "down": "swarmrun.cli.stack:down",
    "image": "swarmrun.cli.image:image",
    "logs": "swarmrun.cli.stack:logs",
    "ls": "swarmrun.cli.records:ls",
    "plot": "swarmrun.cli.plot:plot",
    "purge": "swarmrun.cli.records:purge",
    "results": "swarmrun.cli.records:results",
    "retry": "swarmrun.cli.sweeps:retry",
    "run": "swarmrun.cli.sweeps:run",
    "scale": "swarmrun.cli.stack:scale",
    "show": "swarmrun.cli.records:show",
    "status": "swarmrun.cli.records:status",
    "submit": "swarmrun.cli.sweeps:submit",
    "up": "swarmrun.cli.stack:up",
    "worker": "swarmrun.cli.worker:worker",
}
LAZY_HELP = {
    "autoscale": "Scale the stack's workers to the queue until stopped (Ctrl-C or SIGTERM): up while more "
    "replicas raise throughput, down when the backlog has drained.",
    "cancel": "Cancel a sweep: queued chunks are dropped, running chunks stop within a second.",
    "dashboard": "Serve a web dashboard of the sweeps (live progress, failures, retry, plots, downloads).",
    "down": "Remove the stack's services, network and secret (and its data with --volumes).",
    "image": "Build the worker image the swarm backend runs, and get it onto every node.",
    "logs": "Worker logs of the stack, or with --point the log of one point of a sweep.",
    "ls": "List sweeps, newest last.",
    "plot": "Plot a value of a sweep's results against an axis, or a heatmap over two axes.",
    "purge": "Delete a sweep and its records (results shared with other sweeps of the same task stay).",
    "results": "Export a sweep's results (default: the newest sweep) to CSV, JSON Lines or Parquet.",
    "retry": "Run the failed and timed-out points of a sweep again (default: the newest).",
    "run": "Submit SWEEP, run it on workers until every point has a result, export the results.",
    "scale": "Set the number of worker replicas; stopping workers finish their chunk first.",
    "show": "Everything about one point: params, status, value, error, executions, files, log tail.",
    "status": "Progress of a sweep (default: the newest), its chunks and workers.",
    "submit": "Submit SWEEP to the queue and print its id (workers run it: `swarmrun worker`, `up`).",
    "up": "Deploy the stack (Redis + workers) on the swarm or Kubernetes; running it again changes nothing.",
    "worker": "Consume the queue: run chunks until stopped (SIGTERM finishes the current chunk).",
}


class Group(click.Group):
    """A group whose commands' modules are imported only when that command is used.

    `--help` lists a lazy command by its `LAZY_HELP` line: the library behind the commands (RQ,
    redis-py with its asyncio, the docker SDK) is most of the CLI's import time.
    """

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})  # command name -> "module:attribute"

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            limit = formatter.width - 6 - len(name)
            if name in self.lazy and name in LAZY_HELP:
                rows.append((name, click.Command(name, help=LAZY_HELP[name]).get_short_help_str(limit)))
                continue
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            module, _, name = self.lazy[cmd_name].partition(":")
            command: click.Command = getattr(importlib.import_module(module), name)
            return command
        return super().get_command(ctx, cmd_name)


@click.group(
    cls=Group,
    lazy=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="swarmrun")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Run parameter sweeps on local worker processes or a Docker Swarm, through a Redis queue."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    ctx.obj = State(Settings.from_env(), debug=debug)


def exit_now(code: int) -> NoReturn:
    """Exit without the interpreter's teardown of every loaded module (0.06 to 0.1 s here, more
    under load: of every command as the user waits for it, and of a stopped worker's exit, which
    `swarmrun run` waits for).

    What a normal exit does that matters still happens: threads that are not daemons (a task may
    start some) are joined, atexit handlers run (logging's flush among them), stdout and stderr
    are flushed.
    """
    shutdown = getattr(threading, "_shutdown", None)  # what the interpreter's exit does first: the
    # threading exit hooks (an unclosed ThreadPoolExecutor's), then joining non-daemon threads
    if shutdown is not None and threading.current_thread() is threading.main_thread():
        shutdown()
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def say_indexing(results: int) -> None:
    """Said before results are put in the key index (see `swarmrun.execution.keyindex`)."""
    from swarmrun.execution.keyindex import indexing_message

    click.echo(indexing_message(results), err=True)
