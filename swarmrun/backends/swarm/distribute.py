"""Getting images onto every node of a swarm without Docker Hub: a private registry, or engine to engine.

A swarm node starts a task only with an image its own engine has or can pull. Two ways to get
the worker image (and the Redis image, which only the manager needs) there:

- `push`: tag the image under a registry's address on the engine that holds it and push it; each
  node pulls it when a task starts. Every node's engine (and the pushing one) must trust that
  registry: TLS, or `insecure-registries` for a plain-HTTP one (loopback is always trusted).
- `distribute`: save the image once from the engine that holds it (`docker save`) and load it
  into each node's engine (`docker load`), several at a time. A node that already has the same
  image id is skipped, so running it again costs a few API calls. Needs each node's engine API
  (tcp://, ssh://); no registry at all.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import docker
import docker.errors
import requests

from swarmrun.backends.swarm import engine
from swarmrun.errors import DockerUnavailable, ImageBuildError, ImageMissing, NotASwarmManager

Log = Callable[[str], None]
ENGINE_SCHEMES = ("tcp", "ssh", "unix", "http", "https")
DEFAULT_ENGINE_PORT = 2375
CONNECT_TIMEOUT = 15
LOAD_TIMEOUT = 900
_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
_REGISTRY = re.compile(r"^[A-Za-z0-9.-]+(?::\d+)?(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")


# --- references (pure) -----------------------------------------------------------------------------


def split_reference(reference: str) -> tuple[str | None, str, str]:
    """`[registry/]path[:tag]` -> (registry or None, path, tag); the tag defaults to `latest`.

    The first component is a registry when it has a `.` or a `:` or is `localhost`, as docker reads it.
    """
    if _DIGEST.search(reference):
        raise ImageBuildError(f"{reference!r} names an image by digest: give it by name and tag")
    name, tag = reference, "latest"
    head, sep, last = reference.rpartition(":")
    if sep and "/" not in last:
        name, tag = head, last
    if not name or not tag:
        raise ImageBuildError(f"{reference!r} is not an image reference")
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first, rest, tag
    return None, name, tag


def normalize(reference: str) -> str:
    """The reference with its tag spelt out (`name` -> `name:latest`)."""
    registry, path, tag = split_reference(reference)
    return f"{registry + '/' if registry else ''}{path}:{tag}"


def check_registry(registry: str) -> str:
    """A registry address as `HOST[:PORT][/PATH]`, without a scheme or a trailing slash."""
    value = registry.strip().rstrip("/")
    if "://" in value:
        raise ValueError(f"{registry!r}: give HOST:PORT (e.g. 10.0.0.5:5000), without a scheme")
    if not _REGISTRY.match(value):
        raise ValueError(f"{registry!r} is not a registry address HOST[:PORT][/PATH]")
    return value


def registry_reference(image: str, registry: str) -> str:
    """Where `image` goes in `registry`: its own registry part replaced, path and tag kept.

    `swarmrun-worker:latest` in `10.0.0.5:5000` -> `10.0.0.5:5000/swarmrun-worker:latest`.
    """
    _, path, tag = split_reference(image)
    return f"{check_registry(registry)}/{path}:{tag}"


def check_engine_url(url: str) -> str:
    """An engine address as docker accepts it in DOCKER_HOST: tcp://HOST:PORT, ssh://[USER@]HOST, unix://PATH."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ENGINE_SCHEMES:
        raise ValueError(f"{url!r}: an engine address starts with tcp://, ssh:// or unix://")
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError(f"{url!r}: unix:// needs a socket path")
    elif not parts.hostname:
        raise ValueError(f"{url!r} has no host")
    else:
        try:
            parts.port  # noqa: B018 - raises on a malformed port
        except ValueError:
            raise ValueError(f"{url!r} has a malformed port") from None
    return url.strip()


# --- nodes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeEngine:
    """A swarm node's Docker engine, as this machine reaches it."""

    name: str
    url: str
    role: str = "?"


def node_address(node: Mapping[str, Any]) -> str | None:
    """The address a node's engine listens on, from `docker node inspect` JSON.

    `Status.Addr` is the address the node joined with; some engines report `0.0.0.0` for a
    manager, whose `ManagerStatus.Addr` (`ip:2377`) then has it.
    """
    addr = str((node.get("Status") or {}).get("Addr") or "")
    if addr in ("", "0.0.0.0", "127.0.0.1"):
        manager = str((node.get("ManagerStatus") or {}).get("Addr") or "")
        addr = manager.rsplit(":", 1)[0] if manager else addr
    return addr.strip("[]") or None


def nodes_of_swarm(
    nodes: Iterable[Mapping[str, Any]],
    *,
    self_id: str,
    self_url: str,
    engine_port: int = DEFAULT_ENGINE_PORT,
    role: str | None = None,
) -> list[NodeEngine]:
    """Engines of the ready nodes in `docker node inspect` JSON: the one DOCKER_HOST names is reached
    as DOCKER_HOST says, every other one at `tcp://ADDR:engine_port`."""
    found = []
    for node in nodes:
        spec, status = node.get("Spec") or {}, node.get("Status") or {}
        node_role = str(spec.get("Role", "?"))
        if role and node_role != role:
            continue
        if status.get("State") != "ready":
            continue
        name = str((node.get("Description") or {}).get("Hostname") or node.get("ID", "?")[:12])
        if node.get("ID") == self_id:
            found.append(NodeEngine(name, self_url, node_role))
            continue
        addr = node_address(node)
        if addr is None:
            continue
        host = f"[{addr}]" if ":" in addr else addr
        found.append(NodeEngine(name, f"tcp://{host}:{engine_port}", node_role))
    return sorted(found, key=lambda n: (n.role != "manager", n.name))


def swarm_nodes(
    client: docker.DockerClient,
    environ: Mapping[str, str] = os.environ,
    *,
    engine_port: int = DEFAULT_ENGINE_PORT,
    role: str | None = None,
) -> list[NodeEngine]:
    """The engines of the swarm `client` (a manager) runs, reached from this machine."""
    try:
        engine.require_manager(client)
    except NotASwarmManager as e:
        raise NotASwarmManager(f"{e}; or name the nodes' engines with --node URL") from None
    with engine.translated("listing swarm nodes"):
        info = client.info()
        nodes = [n.attrs for n in client.nodes.list()]
    self_url = environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    return nodes_of_swarm(
        nodes,
        self_id=str((info.get("Swarm") or {}).get("NodeID", "")),
        self_url=self_url,
        engine_port=engine_port,
        role=role,
    )


def connect_engine(
    url: str, environ: Mapping[str, str] = os.environ, *, timeout: int = LOAD_TIMEOUT
) -> docker.DockerClient:
    """A client for the engine at `url`, with the TLS settings of `environ` (DOCKER_TLS_VERIFY, ...).

    Reachability is checked with a short timeout; the client itself waits long, for big loads.
    ssh:// shells out to the `ssh` client, as the docker CLI does.
    """
    ssh = url.startswith("ssh://")
    try:
        kwargs = docker.utils.kwargs_from_env(environment={**environ, "DOCKER_HOST": url})
        probe = docker.APIClient(**kwargs, timeout=CONNECT_TIMEOUT, use_ssh_client=ssh)
        try:
            probe.ping()
        finally:
            probe.close()
        return docker.DockerClient(**kwargs, timeout=timeout, use_ssh_client=ssh)
    except (docker.errors.DockerException, requests.exceptions.RequestException) as e:
        raise DockerUnavailable(f"cannot reach the Docker engine at {url}: {_reason(e)}") from e


def _reason(e: BaseException) -> str:
    """The gist of a connection failure (requests nests it in several layers of text)."""
    text = str(e)
    for gist in (
        "Connection refused",
        "No route to host",
        "Name or service not known",
        "timed out",
        "Temporary failure in name resolution",
        "Connection reset",
    ):
        if gist in text:
            return gist.lower()
    return (text.strip().splitlines() or [type(e).__name__])[0][:300]


# --- distribute ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """What happened to one image on one node: `loaded`, `present` (same id already) or `failed`."""

    node: NodeEngine
    image: str
    outcome: str
    seconds: float = 0.0
    detail: str = ""
    unreachable: bool = False

    def describe(self) -> str:
        where = self.node.url if self.node.name == self.node.url else f"{self.node.name} ({self.node.url})"
        if self.outcome == "loaded":
            return f"{where}: {self.image} loaded in {self.seconds:.1f}s"
        if self.outcome == "present":
            return f"{where}: {self.image} already there"
        return f"{where}: {self.image} FAILED: {self.detail}"


def image_id(client: docker.DockerClient, reference: str) -> str | None:
    """The id of `reference` on the engine, None when it has no such image."""
    try:
        return str(client.images.get(reference).id)
    except docker.errors.ImageNotFound:
        return None


def source_ids(client: docker.DockerClient, images: Sequence[str]) -> dict[str, str]:
    """The id of each image on the engine that holds them; a missing one is an error."""
    found = {}
    with engine.translated("reading images"):
        for ref in images:
            found[ref] = image_id(client, ref)
    missing = [ref for ref, i in found.items() if i is None]
    if missing:
        raise ImageMissing(
            f"image {', '.join(missing)} is not on this Docker engine: build it with "
            "`swarmrun image build` (or pull it) first, or name the engine with --source"
        )
    return {ref: str(i) for ref, i in found.items()}


def save(client: docker.DockerClient, reference: str, directory: Path) -> Path:
    """`docker save` one image (with its tag) into a file in `directory`."""
    path = directory / (re.sub(r"[^A-Za-z0-9_.-]", "_", reference) + ".tar")
    with engine.translated(f"saving {reference}"), path.open("wb") as f:
        for chunk in client.api.get_image(reference, chunk_size=1 << 20):
            f.write(chunk)
    return path


def _load(client: docker.DockerClient, node: NodeEngine, reference: str, wanted: str, path: Path) -> Delivery:
    start = time.monotonic()
    try:
        with path.open("rb") as f:
            client.images.load(f)
        got = image_id(client, reference)
    except (docker.errors.DockerException, OSError) as e:
        text = getattr(e, "explanation", None) or str(e)
        return Delivery(node, reference, "failed", time.monotonic() - start, text.splitlines()[0][:300])
    if got != wanted:
        return Delivery(
            node,
            reference,
            "failed",
            time.monotonic() - start,
            f"after loading, {reference} is {got} there, not {wanted}",
        )
    return Delivery(node, reference, "loaded", time.monotonic() - start)


def distribute(
    source: docker.DockerClient,
    images: Sequence[str],
    nodes: Sequence[NodeEngine],
    *,
    environ: Mapping[str, str] = os.environ,
    jobs: int = 4,
    log: Log | None = None,
    connect: Callable[[str], docker.DockerClient] | None = None,
) -> list[Delivery]:
    """Load each of `images` from `source` into every node's engine that lacks that exact image.

    Each image is saved once (to a temporary file) and only if some node needs it; loads run
    `jobs` at a time. Returns one Delivery per image and node; failures are reported, not raised.
    """
    say = log or (lambda _: None)
    opener = connect or (lambda url: connect_engine(url, environ))
    refs = [normalize(i) for i in images]
    wanted = source_ids(source, refs)

    def reach(node: NodeEngine) -> docker.DockerClient | str:
        try:
            return opener(node.url)
        except DockerUnavailable as e:
            return str(e)

    deliveries: list[Delivery] = []
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        reached = list(pool.map(reach, nodes))
        clients = {n: c for n, c in zip(nodes, reached, strict=True) if not isinstance(c, str)}
        try:
            for ref in refs:
                checked = [
                    Delivery(n, ref, "failed", detail=c, unreachable=True)
                    for n, c in zip(nodes, reached, strict=True)
                    if isinstance(c, str)
                ]
                todo = []
                for node, client in clients.items():
                    if image_id(client, ref) == wanted[ref]:
                        checked.append(Delivery(node, ref, "present"))
                    else:
                        todo.append(node)
                for d in checked:
                    say(d.describe())
                deliveries += checked
                if todo:
                    deliveries += _load_everywhere(pool, source, ref, wanted[ref], clients, todo, say)
        finally:
            for client in clients.values():
                client.close()
    return deliveries


def _load_everywhere(
    pool: ThreadPoolExecutor,
    source: docker.DockerClient,
    ref: str,
    wanted: str,
    clients: Mapping[NodeEngine, docker.DockerClient],
    todo: Sequence[NodeEngine],
    say: Log,
) -> list[Delivery]:
    tmp = Path(tempfile.mkdtemp(prefix="swarmrun-image-"))
    try:
        started = time.monotonic()
        path = save(source, ref, tmp)
        say(
            f"{ref}: saved {path.stat().st_size / 1e6:.0f} MB in {time.monotonic() - started:.1f}s, "
            f"loading it into {len(todo)} node(s)"
        )
        done = []
        for d in pool.map(lambda n: _load(clients[n], n, ref, wanted, path), todo):
            say(d.describe())
            done.append(d)
        return done
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_deliveries(deliveries: Sequence[Delivery]) -> None:
    """Raise one error naming every failed delivery (unreachable engines: DockerUnavailable)."""
    failed = [d for d in deliveries if d.outcome == "failed"]
    if not failed:
        return
    text = "; ".join(f"{d.image} on {d.node.url}: {d.detail}" for d in failed)
    if any(d.unreachable for d in failed):
        raise DockerUnavailable(f"could not reach every node: {text}")
    raise ImageBuildError(f"could not load every image: {text}")


# --- push ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pushed:
    reference: str
    digest: str | None


def _push_hint(message: str, registry: str) -> str:
    lowered = message.lower()
    if "http response to https client" in lowered or "certificate" in lowered:
        return (
            f"; the engine does not trust the plain-HTTP registry {registry}: add it to "
            '"insecure-registries" in that engine\'s daemon.json, serve the registry with TLS, '
            "or push through an SSH tunnel to localhost (docs/cluster.md)"
        )
    if "connection refused" in lowered or "no such host" in lowered or "timeout" in lowered:
        return f"; is a registry listening at {registry}, reachable from the engine that pushes?"
    return ""


def push(
    client: docker.DockerClient, images: Sequence[str], registry: str, *, log: Log | None = None
) -> list[Pushed]:
    """Tag each image as `registry/path:tag` on `client`'s engine and push it there."""
    say = log or (lambda _: None)
    registry = check_registry(registry)
    refs = [normalize(i) for i in images]
    source_ids(client, refs)
    pushed = []
    for ref in refs:
        target = registry_reference(ref, registry)
        repository, _, tag = target.rpartition(":")
        digest, error = None, None
        with engine.translated(f"pushing {target}"):
            tagged_before = image_id(client, target) is not None
            client.images.get(ref).tag(repository, tag)
            for line in client.api.push(repository, tag=tag, stream=True, decode=True):
                if "error" in line:
                    error = str(line.get("errorDetail", {}).get("message") or line["error"])
                digest = (line.get("aux") or {}).get("Digest", digest)
                status = line.get("status")
                if status and "id" not in line:
                    say(f"{target}: {status}")
        if error is not None:
            if not tagged_before:  # leave no tag behind for a push that did not happen
                with contextlib.suppress(docker.errors.DockerException):
                    client.images.remove(target)
            raise ImageBuildError(f"pushing {target} failed: {error.strip()}{_push_hint(error, registry)}")
        pushed.append(Pushed(target, digest))
    return pushed


def engine_time(stamp: str) -> float:
    """An engine timestamp (RFC 3339, nanoseconds, `Z`) as seconds since the epoch."""
    trimmed = re.sub(r"(\.\d{6})\d+", r"\1", stamp.strip()).replace("Z", "+00:00")
    return datetime.fromisoformat(trimmed).timestamp()


def task_time(task: dict[str, Any]) -> float:
    """When a swarm task last changed state, as seconds since the epoch."""
    return engine_time(task["Status"]["Timestamp"])


def nodes_without_image(
    client: docker.DockerClient, service: str, *, within: float, seen: Iterable[dict[str, Any]] = ()
) -> list[str]:
    """Nodes that rejected a task of `service` for lack of its image ("No such image") in the last
    `within` seconds (by the engine's clock). The swarm places such tasks on other nodes, so a stack
    can converge with no worker at all on a node that lacks the image.

    `seen`: tasks read earlier (while waiting for the workers). The swarm keeps only the last few
    tasks of each replica slot (5 by default), so a node's rejection can be gone from the service's
    task list by the time the stack has converged, after a dozen retries elsewhere."""
    with engine.translated(f"reading the tasks of {service}"):
        try:
            tasks = {t["ID"]: t for t in seen} | {t["ID"]: t for t in client.services.get(service).tasks()}
        except docker.errors.NotFound:
            return []
        now = engine_time(str(client.info()["SystemTime"]))
        names = {n.id: str(n.attrs["Description"]["Hostname"]) for n in client.nodes.list()}
    return sorted(
        {
            names.get(t.get("NodeID", ""), "?")
            for t in tasks.values()
            if rejected_for_image(t) and task_time(t) >= now - within
        }
    )


def rejected_for_image(task: dict[str, Any]) -> bool:
    """Whether a swarm task was rejected because its node lacks the image."""
    return task["Status"]["State"] == "rejected" and "No such image" in task["Status"].get("Err", "")


def registry_has(client: docker.DockerClient, reference: str) -> bool:
    """Whether the engine can resolve `reference` in its registry (it asks the registry, pulls nothing)."""
    try:
        client.images.get_registry_data(reference)
    except docker.errors.DockerException:
        return False
    return True
