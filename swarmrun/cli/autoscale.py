"""`swarmrun autoscale`: keep the stack's worker count fitted to the queue until stopped."""

from __future__ import annotations

import contextlib
import functools
import signal
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click

from swarmrun.cli.common import DEFAULT_STACK, State, pass_state, redis_options
from swarmrun.execution.autoscale import Autoscaler, Event, Meter, Policy

F = TypeVar("F", bound=Callable[..., Any])


def parse_bounds(text: str, option: str = "--autoscale") -> tuple[int, int]:
    """`MIN:MAX` (e.g. `1:8`) as two ints; a bad value is a usage error naming the option."""
    low, sep, high = text.partition(":")
    try:
        if not sep:
            raise ValueError
        bounds = int(low), int(high)
    except ValueError:
        raise click.BadParameter(
            f"expected MIN:MAX replicas, e.g. 1:8, got {text!r}", param_hint=option
        ) from None
    return bounds


def tuning_options(func: F) -> F:
    """The autoscaler's tempo, shared by `autoscale` and `run --autoscale`; collected into `tuning`."""

    @click.option(
        "--up-cooldown",
        type=click.FloatRange(min=0),
        default=15.0,
        show_default=True,
        help="Seconds after a change before the next step up.",
    )
    @click.option(
        "--down-cooldown",
        type=click.FloatRange(min=0),
        default=60.0,
        show_default=True,
        help="Seconds workers must sit idle with nothing queued before scaling down.",
    )
    @click.option(
        "--window",
        type=click.FloatRange(min=1),
        default=10.0,
        show_default=True,
        help="Seconds of steady running to measure throughput at a replica count.",
    )
    @click.option(
        "--work-per-replica",
        type=click.FloatRange(min=0),
        default=30.0,
        show_default=True,
        help="Seconds of work left (points x seconds per point) each replica must have.",
    )
    @click.option(
        "--interval",
        type=click.FloatRange(min=0.2),
        default=2.0,
        show_default=True,
        help="Seconds between decisions.",
    )
    @functools.wraps(func)
    def wrapper(
        *args: Any,
        up_cooldown: float,
        down_cooldown: float,
        window: float,
        work_per_replica: float,
        interval: float,
        **kwargs: Any,
    ) -> Any:
        kwargs["tuning"] = {
            "up_cooldown": up_cooldown,
            "down_cooldown": down_cooldown,
            "window": window,
            "work_horizon": work_per_replica,
            "interval": interval,
        }
        return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def make_policy(bounds: tuple[int, int], tuning: dict[str, float], option: str) -> Policy:
    """The policy for `bounds`; impossible bounds are a usage error naming `option`."""
    try:
        return Policy(
            min_replicas=bounds[0],
            max_replicas=bounds[1],
            up_cooldown=tuning["up_cooldown"],
            down_cooldown=tuning["down_cooldown"],
            work_horizon=tuning["work_horizon"],
        )
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint=option) from None


def make_autoscaler(
    state: State, backend: Any, policy: Policy, tuning: dict[str, float], on_event: Callable[[Event], None]
) -> Autoscaler:
    """An autoscaler applying `policy` to `backend`, on the state's queue."""
    meter = Meter(settle=min(5.0, tuning["window"] / 2), window=tuning["window"])
    return Autoscaler(
        state.queue(), backend, policy, interval=tuning["interval"], meter=meter, on_event=on_event
    )


def event_line(event: Event) -> str:
    return f"{time.strftime('%H:%M:%S')} workers {event.old} -> {event.new}: {event.reason}"


@click.command()
@click.option(
    "--min",
    "min_replicas",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Fewest worker replicas (0: none while the queue is empty).",
)
@click.option(
    "--max", "max_replicas", type=click.IntRange(min=1), required=True, help="Most worker replicas."
)
@tuning_options
@redis_options
@pass_state
def autoscale(state: State, min_replicas: int, max_replicas: int, tuning: dict[str, float]) -> None:
    """Scale the stack's workers to the queue until stopped (Ctrl-C or SIGTERM): up while more
    replicas raise throughput, down when the backlog has drained."""
    policy = make_policy((min_replicas, max_replicas), tuning, "--min/--max")
    state.stack = state.stack or DEFAULT_STACK
    backend = state.swarm()
    scaler = make_autoscaler(state, backend, policy, tuning, lambda e: click.echo(event_line(e)))
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    now = backend.replicas()
    click.echo(
        f"autoscaling stack {state.stack}: workers {now.running}/{now.desired}, "
        f"within [{min_replicas}, {max_replicas}]; Ctrl-C stops",
        err=True,
    )
    with contextlib.suppress(KeyboardInterrupt):
        scaler.run(stop=lambda: bool(stopping))
    final = backend.replicas()
    click.echo(
        f"autoscale stopped: workers {final.running}/{final.desired}, {len(scaler.events)} changes made",
        err=True,
    )
