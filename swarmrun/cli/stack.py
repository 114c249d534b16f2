"""Stack commands: up, down, scale, logs (the Redis + worker services on a swarm)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click

from swarmrun.backends.swarm.stack import StackConfig
from swarmrun.cli.common import DEFAULT_STACK, State, pass_state, redis_options
from swarmrun.execution.progress import replicas_text
from swarmrun.settings import redact

F = TypeVar("F", bound=Callable[..., Any])


def _pairs(values: tuple[str, ...], option: str) -> tuple[tuple[str, str], ...]:
    out = []
    for value in values:
        key, eq, val = value.partition("=")
        if not eq or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {value!r}", param_hint=option)
        out.append((key, val))
    return tuple(out)


def stack_options(func: F) -> F:
    """Options shaping the stack (`up`, `run --backend swarm`); collected into `stack_config`."""

    @click.option("--image", default="swarmrun-worker:latest", show_default=True, help="Worker image.")
    @click.option("--redis-image", default="redis:7", show_default=True, help="Redis image.")
    @click.option(
        "--redis-port",
        type=int,
        default=6379,
        show_default=True,
        help="Port Redis is published on (host mode, on the manager).",
    )
    @click.option(
        "--grace-period",
        type=click.IntRange(min=1),
        default=120,
        show_default=True,
        help="Seconds a stopping worker gets to finish its chunk.",
    )
    @click.option("--cpus", type=float, help="CPU limit per worker.")
    @click.option("--memory", help="Memory limit per worker, e.g. 2g.")
    @click.option("--reserve-cpus", type=float, help="CPUs reserved per worker.")
    @click.option("--reserve-memory", help="Memory reserved per worker.")
    @click.option(
        "--constraint",
        "constraints",
        multiple=True,
        metavar="EXPR",
        help="Placement constraint, e.g. node.labels.gpu==true (repeatable).",
    )
    @click.option("--max-per-node", type=click.IntRange(min=1), help="At most this many workers per node.")
    @click.option("--env", "env", multiple=True, metavar="KEY=VALUE", help="Worker environment (repeatable).")
    @click.option(
        "--label",
        "labels",
        multiple=True,
        metavar="KEY=VALUE",
        help="Label on every resource the stack creates (repeatable).",
    )
    @functools.wraps(func)
    def wrapper(
        *args: Any,
        image: str,
        redis_image: str,
        redis_port: int,
        grace_period: int,
        cpus: float | None,
        memory: str | None,
        reserve_cpus: float | None,
        reserve_memory: str | None,
        constraints: tuple[str, ...],
        max_per_node: int | None,
        env: tuple[str, ...],
        labels: tuple[str, ...],
        **kwargs: Any,
    ) -> Any:
        state = click.get_current_context().find_object(State)
        assert state is not None
        kwargs["stack_config"] = StackConfig(
            name=state.stack or DEFAULT_STACK,
            image=image,
            redis_image=redis_image,
            redis_port=redis_port,
            queue=state.settings.queue,
            stop_grace_period=grace_period,
            heartbeat_ttl=state.settings.heartbeat_ttl,
            cpus=cpus,
            memory=memory,
            reserve_cpus=reserve_cpus,
            reserve_memory=reserve_memory,
            constraints=constraints,
            max_replicas_per_node=max_per_node,
            env=_pairs(env, "--env"),
            labels=_pairs(labels, "--label"),
        )
        return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _stack_name(state: State) -> str:
    state.stack = state.stack or DEFAULT_STACK
    return state.stack


@click.command()
@click.option("-r", "--replicas", type=click.IntRange(min=0), help="Worker replicas (default: keep, or 2).")
@click.option("--no-wait", is_flag=True, help="Do not wait for Redis and the workers.")
@redis_options
@stack_options
@pass_state
def up(state: State, replicas: int | None, no_wait: bool, stack_config: StackConfig) -> None:
    """Deploy the stack (Redis + workers) on the swarm; running it again changes nothing."""
    name = _stack_name(state)
    labels = dict(stack_config.labels)
    backend = state.swarm(stack_config, labels)
    started = time.monotonic()
    current = backend.deploy(replicas, wait=not no_wait)
    state.remember_stack()
    url = backend.redis_url()
    if not no_wait:
        state.url()
    click.echo(f"stack {name}: Redis at {redact(url)}; workers {replicas_text(current)}")
    image = stack_config.image
    elapsed = time.monotonic() - started
    from swarmrun.backends.swarm.distribute import (
        nodes_without_image,  # the docker SDK, only for stack commands
    )

    lacking = nodes_without_image(backend.client, backend.worker_service, within=elapsed + 5)
    if lacking:
        click.echo(
            f"Warning: {', '.join(lacking)} lack image {image}; their workers run elsewhere. "
            f"Copy it there: swarmrun image distribute {image}",
            err=True,
        )


@click.command()
@click.option("--volumes", is_flag=True, help="Also delete the Redis data volume (all sweeps and results).")
@redis_options
@pass_state
def down(state: State, volumes: bool) -> None:
    """Remove the stack's services, network and secret (and its data with --volumes)."""
    name = _stack_name(state)
    state.swarm().remove(volumes=volumes)
    state.forget_stack()
    click.echo(f"stack {name} removed" + (" with its data" if volumes else " (data volume kept)"))


@click.command()
@click.argument("replicas", type=click.IntRange(min=0))
@click.option("--no-wait", is_flag=True, help="Return without waiting for convergence.")
@redis_options
@pass_state
def scale(state: State, replicas: int, no_wait: bool) -> None:
    """Set the number of worker replicas; stopping workers finish their chunk first."""
    _stack_name(state)
    backend = state.swarm()
    current = backend.scale(replicas, wait=not no_wait)
    stopping = backend.stopping()
    click.echo(
        f"workers {replicas_text(current)}"
        + (f"; {stopping} stopping (finishing chunks)" if stopping else "")
    )


@click.command()
@click.option("-f", "--follow", is_flag=True, help="Keep streaming.")
@click.option("--tail", type=int, default=100, show_default=True, help="Lines per worker to start with.")
@redis_options
@pass_state
def logs(state: State, follow: bool, tail: int) -> None:
    """Worker logs of the stack."""
    _stack_name(state)
    for line in state.swarm().logs(follow=follow, tail=tail):
        click.echo(line)


def register(group: click.Group) -> None:
    for command in (up, down, scale, logs):
        group.add_command(command)
