"""`swarmrun image`: build the worker image (swarmrun + the task code) or a wheelhouse for one, and
get images onto every node of a swarm (push to a registry, or distribute engine to engine)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from swarmrun.backends.swarm import distribute as dist
from swarmrun.backends.swarm import engine
from swarmrun.backends.swarm.image import DEFAULT_BASE_IMAGE, DEFAULT_TAG, build_image
from swarmrun.backends.swarm.interpreter import target_interpreter
from swarmrun.backends.swarm.wheelhouse import make_wheelhouse, read_requirements
from swarmrun.cli.common import State
from swarmrun.settings import Settings

base_image_option = click.option(
    "--base-image",
    default=DEFAULT_BASE_IMAGE,
    show_default=True,
    metavar="IMAGE",
    envvar="SWARMRUN_BASE_IMAGE",
    help="Image to build on; it needs python3 with venv. Env: SWARMRUN_BASE_IMAGE.",
)
requirements_option = click.option(
    "-r",
    "--requirements",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Requirements of the task code (default: CONTEXT/requirements.txt if present).",
)


def _home() -> Path:
    state = click.get_current_context().find_object(State)
    return (state.settings if state else Settings.from_env()).home


def _labels(values: tuple[str, ...]) -> dict[str, str]:
    labels = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r} is not KEY=VALUE", param_hint="--label")
        labels[key] = val
    return labels


def _engine_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return dist.check_engine_url(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def _engine_urls(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(str(_engine_url(ctx, param, v)) for v in values)


def _registry(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return dist.check_registry(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


images_argument = click.argument("images", nargs=-1, metavar="[IMAGE]...")


@click.group()
def image() -> None:
    """Build the worker image the swarm backend runs, and get it onto every node."""


@image.command()
@click.option(
    "--context",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=".",
    show_default=True,
    help="Directory with the task code; copied to /app in the image.",
)
@click.option("-t", "--tag", default=DEFAULT_TAG, show_default=True, help="Image name and tag.")
@base_image_option
@requirements_option
@click.option(
    "--wheelhouse",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Use this prepared wheelhouse (`swarmrun image wheelhouse`); download nothing.",
)
@click.option(
    "--dockerfile",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Your own Dockerfile instead of swarmrun's (same context: wheels/ and app/).",
)
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="Image label (repeatable).")
@click.option("-q", "--quiet", is_flag=True, help="Do not show the build output.")
def build(
    context: Path,
    tag: str,
    base_image: str,
    requirements: Path | None,
    wheelhouse: Path | None,
    dockerfile: Path | None,
    labels: tuple[str, ...],
    quiet: bool,
) -> None:
    """Build the worker image from the task code in CONTEXT, offline from a wheelhouse.

    Prints the image id and tag on stdout.
    """
    parsed = _labels(labels)
    client = engine.connect()
    image_id = build_image(
        client,
        context=context,
        tag=tag,
        base_image=base_image,
        requirements=requirements,
        wheelhouse=wheelhouse,
        dockerfile=dockerfile,
        labels=parsed,
        home=_home(),
        log=None if quiet else lambda line: click.echo(line, err=True),
    )
    click.echo(f"{image_id} {tag}")


@image.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@base_image_option
@click.option(
    "-r",
    "--requirements",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Requirements of the task code to add.",
)
def wheelhouse(directory: Path, base_image: str, requirements: Path | None) -> None:
    """Prepare a wheelhouse in DIRECTORY for BASE_IMAGE's Python (swarmrun, its dependencies and
    yours), to carry to an air-gapped machine and build there with `image build --wheelhouse`."""
    client = engine.connect()
    target = target_interpreter(client, base_image)
    path = make_wheelhouse(
        target,
        directory,
        read_requirements(requirements) if requirements else [],
        home=_home(),
        log=lambda line: click.echo(line, err=True),
    )
    click.echo(f"{len(list(path.glob('*.whl')))} wheels for {target.describe()} in {path}", err=True)
    click.echo(str(path))


@image.command()
@images_argument
@click.option(
    "--node",
    "nodes",
    multiple=True,
    metavar="URL",
    callback=_engine_urls,
    help="Engine to load into: tcp://HOST:2375, ssh://USER@HOST (repeatable). "
    "Default: every ready node of the swarm DOCKER_HOST manages.",
)
@click.option(
    "--engine-port",
    type=click.IntRange(1, 65535),
    default=dist.DEFAULT_ENGINE_PORT,
    show_default=True,
    help="Port of the nodes' engines, for addresses from the swarm's node list.",
)
@click.option(
    "--role",
    type=click.Choice(["manager", "worker"]),
    help="Only nodes of this role (with addresses taken from the swarm), e.g. the Redis image "
    "to the managers.",
)
@click.option(
    "--source",
    metavar="URL",
    callback=_engine_url,
    help="Engine holding the images (default: DOCKER_HOST, else the local socket), "
    "e.g. unix:///var/run/docker.sock for the one you built on.",
)
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Nodes to load into at once.",
)
def distribute(
    images: tuple[str, ...],
    nodes: tuple[str, ...],
    engine_port: int,
    role: str | None,
    source: str | None,
    jobs: int,
) -> None:
    """Copy images into every node's engine, without a registry (docker save | docker load).

    IMAGE defaults to the worker image. A node that already has the same image id is skipped.
    Prints one line per image and node on stderr, and a summary per image on stdout.
    """
    refs = list(images) or [DEFAULT_TAG]
    if nodes and role:
        raise click.BadParameter(
            "selects among the swarm's nodes; with --node, list only the ones you want", param_hint="--role"
        )
    environ = dict(os.environ)
    source_client = dist.connect_engine(source, environ) if source else engine.connect(environ)
    if nodes:
        targets = [dist.NodeEngine(url, url) for url in nodes]
    else:
        manager = source_client if not source else engine.connect(environ)
        targets = dist.swarm_nodes(manager, environ, engine_port=engine_port, role=role)
        if not targets:
            raise click.UsageError("the swarm has no ready node" + (f" with role {role}" if role else ""))
    deliveries = dist.distribute(
        source_client, refs, targets, environ=environ, jobs=jobs, log=lambda line: click.echo(line, err=True)
    )
    for ref in [dist.normalize(r) for r in refs]:
        mine = [d for d in deliveries if d.image == ref]
        counts = {k: sum(1 for d in mine if d.outcome == k) for k in ("loaded", "present", "failed")}
        failed = f", FAILED on {counts['failed']}" if counts["failed"] else ""
        click.echo(
            f"{ref}: loaded on {counts['loaded']}, already on {counts['present']}{failed} "
            f"of {len(mine)} nodes"
        )
    dist.check_deliveries(deliveries)


@image.command()
@images_argument
@click.option(
    "--registry",
    required=True,
    envvar="SWARMRUN_REGISTRY",
    metavar="HOST:PORT[/PATH]",
    callback=_registry,
    help="Registry to push to, as the nodes reach it. Env: SWARMRUN_REGISTRY.",
)
def push(images: tuple[str, ...], registry: str) -> None:
    """Push images to a private registry the nodes pull from (tagged REGISTRY/NAME:TAG first).

    IMAGE defaults to the worker image; it is pushed from the engine DOCKER_HOST names. Prints each
    pushed reference on stdout: give it to `swarmrun up --image` (or `--redis-image`).
    """
    refs = list(images) or [DEFAULT_TAG]
    client = engine.connect()
    for pushed in dist.push(client, refs, registry, log=lambda line: click.echo(line, err=True)):
        if pushed.digest:
            click.echo(f"{pushed.reference} pushed ({pushed.digest})", err=True)
        click.echo(pushed.reference)
