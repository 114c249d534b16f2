"""Stack commands: up, down, scale, logs (the Redis + worker services on a swarm)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import click

from swarmrun.backends.mounts import parse_all as parse_mounts
from swarmrun.backends.swarm.stack import StackConfig, render
from swarmrun.backends.workerspec import PULL_POLICIES, check, grace_warning
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
    @click.option(
        "--node-label",
        "node_labels",
        multiple=True,
        metavar="KEY=VALUE",
        help="Run workers only on nodes with this label (Swarm node label / Kubernetes nodeSelector).",
    )
    @click.option(
        "--toleration",
        "tolerations",
        multiple=True,
        metavar="KEY[=VALUE][:EFFECT]",
        help="Kubernetes: let workers run on nodes with this taint (repeatable).",
    )
    @click.option(
        "--image-pull-policy",
        type=click.Choice(PULL_POLICIES),
        default="IfNotPresent",
        show_default=True,
        help="Kubernetes: when nodes pull the images (Never: only images already on the node).",
    )
    @click.option(
        "--storage-class",
        help="Kubernetes: storage class of the Redis volume claim (default: the cluster's).",
    )
    @click.option(
        "--redis-storage",
        default="1Gi",
        show_default=True,
        help="Kubernetes: size of the Redis volume claim.",
    )
    @click.option("--env", "env", multiple=True, metavar="KEY=VALUE", help="Worker environment (repeatable).")
    @click.option(
        "--label",
        "labels",
        multiple=True,
        metavar="KEY=VALUE",
        help="Label on every resource the stack creates (repeatable).",
    )
    @click.option(
        "--mount",
        "mounts",
        multiple=True,
        metavar="SPEC",
        help="Mount in every worker, in docker's --mount syntax, e.g. "
        "type=bind,source=/srv/data,target=/data,readonly (repeatable).",
    )
    @click.option(
        "--tls",
        is_flag=True,
        help="Redis speaks only TLS: a CA and a server certificate are made and kept as secrets; "
        "the CLI and the workers verify Redis against the CA.",
    )
    @click.option(
        "--tls-host",
        "tls_hosts",
        multiple=True,
        metavar="NAME",
        help="With --tls: another host name or address the CLI reaches Redis at (repeatable).",
    )
    @click.option(
        "--encrypt-network",
        is_flag=True,
        help="Swarm: encrypt the stack's overlay network between nodes (IPsec).",
    )
    @functools.wraps(func)
    def wrapper(
        *args: Any,
        tls: bool,
        tls_hosts: tuple[str, ...],
        encrypt_network: bool,
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
        node_labels: tuple[str, ...],
        tolerations: tuple[str, ...],
        image_pull_policy: str,
        storage_class: str | None,
        redis_storage: str,
        env: tuple[str, ...],
        labels: tuple[str, ...],
        mounts: tuple[str, ...],
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
            node_labels=_pairs(node_labels, "--node-label"),
            tolerations=tolerations,
            image_pull_policy=image_pull_policy,
            storage_class=storage_class,
            redis_storage=redis_storage,
            mounts=parse_mounts(mounts),
            tls=tls,
            tls_hosts=tls_hosts,
            encrypt_network=encrypt_network,
        )
        if tls_hosts and not tls:
            raise click.UsageError("--tls-host goes with --tls")
        try:
            check(kwargs["stack_config"])
        except ValueError as e:
            raise click.UsageError(str(e)) from None
        warning = grace_warning(kwargs["stack_config"], state.settings.chunk_seconds)
        if warning:
            click.echo(warning, err=True)
        return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _stack_name(state: State) -> str:
    state.stack = state.stack or DEFAULT_STACK
    return state.stack


@click.command()
@click.option("-r", "--replicas", type=click.IntRange(min=0), help="Worker replicas (default: keep, or 2).")
@click.option("--no-wait", is_flag=True, help="Do not wait for Redis and the workers.")
@click.option("--dry-run", is_flag=True, help="Write what would be deployed to -o DIR; deploy nothing.")
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="With --dry-run: the directory for the compose file / Kubernetes manifests.",
)
@redis_options
@stack_options
@pass_state
def up(
    state: State,
    replicas: int | None,
    no_wait: bool,
    dry_run: bool,
    output: Path | None,
    stack_config: StackConfig,
) -> None:
    """Deploy the stack (Redis + workers) on the swarm or Kubernetes; running it again changes nothing."""
    name = _stack_name(state)
    if output is not None and not dry_run:
        raise click.UsageError("-o/--output DIR goes with --dry-run")
    if dry_run:
        _dry_run(state, stack_config, replicas, output)
        return
    if state.kube is not None:
        _up_kubernetes(state, stack_config, replicas, no_wait)
        return
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

    lacking = nodes_without_image(
        backend.client, backend.worker_service, within=elapsed + 5, seen=backend.rejected.values()
    )
    if lacking:
        click.echo(
            f"Warning: {', '.join(lacking)} lack image {image}; their workers run elsewhere. "
            f"Copy it there: swarmrun image distribute {image}",
            err=True,
        )


def _dry_run(state: State, config: StackConfig, replicas: int | None, output: Path | None) -> None:
    """Write the compose file (swarm) or the Kubernetes manifests (no Secret) instead of deploying."""
    if output is None:
        raise click.UsageError("--dry-run needs -o DIR")
    if replicas is not None:
        config = replace(config, replicas=replicas)
    if state.kube is not None:
        from swarmrun.backends.kubernetes.manifests import manifests, write

        try:
            paths = write(output, manifests(config, redis_volume="claim"))
        except ValueError as e:
            raise click.UsageError(str(e)) from None
        tls = (
            f" and the TLS Secret {config.name}-redis-tls (keys redis_tls_ca, redis_tls_cert, "
            "redis_tls_key: python -m swarmrun.backends.tls DIR makes them)"
            if config.tls
            else ""
        )
        click.echo(
            f"wrote {', '.join(str(p) for p in paths)}; create the password Secret {config.name}-redis "
            f"(key password){tls}, then kubectl apply -f " + str(output)
        )
        return
    output.mkdir(parents=True, exist_ok=True)
    path = output / "swarmrun.yml"
    path.write_text(render(config))
    click.echo(f"wrote {path}")


def _up_kubernetes(state: State, config: StackConfig, replicas: int | None, no_wait: bool) -> None:
    if config.encrypt_network:
        raise click.UsageError(
            "--encrypt-network is a Swarm option: on Kubernetes, traffic between nodes is encrypted "
            "(or not) by the cluster's network plugin"
        )
    backend = state.kubernetes(config)
    try:
        current = backend.deploy(replicas, wait=not no_wait)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    state.remember_stack()
    if not no_wait:
        state.url()
    click.echo(
        f"stack {config.name} in namespace {backend.namespace} ({backend.cluster.source}): "
        f"Redis at service {config.name}-redis (reached through a port-forward); "
        f"workers {replicas_text(current)}"
    )


@click.command()
@click.option("--volumes", is_flag=True, help="Also delete the Redis data volume (all sweeps and results).")
@redis_options
@pass_state
def down(state: State, volumes: bool) -> None:
    """Remove the stack's services, network and secret (and its data with --volumes)."""
    name = _stack_name(state)
    state.stack_backend().remove(volumes=volumes)
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
    backend = state.stack_backend()
    current = backend.scale(replicas, wait=not no_wait)
    stopping = backend.stopping()
    click.echo(
        f"workers {replicas_text(current)}"
        + (f"; {stopping} stopping (finishing chunks)" if stopping else "")
    )


@click.command()
@click.option("-f", "--follow", is_flag=True, help="Keep streaming.")
@click.option("--tail", type=int, default=100, show_default=True, help="Lines per worker to start with.")
@click.option("--point", type=click.IntRange(min=0), metavar="INDEX", help="Print the log of one point.")
@click.option("--sweep", "sweep_id", metavar="ID", help="With --point: the sweep (default: the newest).")
@redis_options
@pass_state
def logs(state: State, follow: bool, tail: int, point: int | None, sweep_id: str | None) -> None:
    """Worker logs of the stack, or with --point the log of one point of a sweep."""
    if point is not None:
        from swarmrun.cli.records import point_log

        click.echo(point_log(state, sweep_id, point), nl=False)
        return
    _stack_name(state)
    for line in state.stack_backend().logs(follow=follow, tail=tail):
        click.echo(line)
