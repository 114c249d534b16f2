"""The workers and their Redis, described once for every backend.

`WorkerSpec` says what runs (image, replicas, env, the Redis password secret, resources,
placement, grace period, labels, mounts), not how a backend spells it. Pure functions render it:
`swarmrun.backends.swarm.stack` into the compose file and the Swarm service specs,
`swarmrun.backends.kubernetes.manifests` into Kubernetes objects.
`swarmrun.backends.swarm.stack.StackConfig` is this class under its older name.

Placement is written once: `node_labels` (KEY=VALUE a node must carry) is rendered as Swarm
constraints `node.labels.KEY==VALUE` and as a Kubernetes `nodeSelector`; raw Swarm `constraints`
are translated for Kubernetes where they have an equivalent (`placement_terms`), and
`tolerations` only mean something on Kubernetes (Swarm has no taints).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from swarmrun.backends.mounts import Mount
from swarmrun.backends.tls import CA_SECRET, CERT_SECRET, KEY_SECRET

SECRET = "redis_password"
SECRET_DIR = "/run/secrets"
SECRET_PATH = f"{SECRET_DIR}/{SECRET}"
REDIS_PORT = 6379
DATA_DIR = "/data"
# Redis reads its password from the mounted secret; append-only file, fsync every second.
REDIS_SCRIPT = (
    "printf 'requirepass %s\\n' \"$(cat " + SECRET_PATH + ')" > /tmp/redis.conf'
    " && exec redis-server /tmp/redis.conf --appendonly yes --appendfsync everysec"
    f" --dir {DATA_DIR} --save ''"
)
# With TLS (`up --tls`): no plain listener at all; the one port speaks TLS with the certificate
# and key from their secrets (swarmrun.backends.tls). Clients are not asked for certificates: the
# password still authenticates them.
REDIS_TLS_ARGS = (
    f" --port 0 --tls-port {REDIS_PORT} --tls-cert-file {SECRET_DIR}/{CERT_SECRET}"
    f" --tls-key-file {SECRET_DIR}/{KEY_SECRET} --tls-auth-clients no"
)
PULL_POLICIES = ("IfNotPresent", "Never", "Always")
TOLERATION_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


@dataclass(frozen=True)
class WorkerSpec:
    """What `swarmrun up` deploys, on any backend. Durations in seconds, memory like `512m` / `2g`.

    Kubernetes-only fields (ignored by Swarm and Compose): `tolerations`, `image_pull_policy`,
    `redis_storage` (size of the Redis volume claim), `storage_class`.
    """

    name: str = "swarmrun"
    image: str = "swarmrun-worker:latest"
    redis_image: str = "redis:7"
    replicas: int = 2
    redis_port: int | str = REDIS_PORT
    queue: str = "swarmrun"
    stop_grace_period: int = 120
    heartbeat_ttl: int | str = 30
    cpus: float | None = None
    memory: str | None = None
    reserve_cpus: float | None = None
    reserve_memory: str | None = None
    constraints: tuple[str, ...] = ()
    max_replicas_per_node: int | None = None
    env: tuple[tuple[str, str], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    password_file: str = "./redis_password"
    tls_dir: str = "./tls"  # the stack file's TLS secrets: <dir>/redis_tls_{ca,cert,key}.pem
    node_labels: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[str, ...] = ()
    image_pull_policy: str = "IfNotPresent"
    redis_storage: str = "1Gi"
    storage_class: str | None = None
    mounts: tuple[Mount, ...] = ()  # every worker's mounts (`--mount`, swarmrun.backends.mounts)
    tls_hosts: tuple[str, ...] = ()  # more names or addresses the CLI reaches Redis at (`--tls-host`)
    tls: bool = False  # Redis speaks only TLS (`up --tls`); workers verify it against the stack's CA
    encrypt_network: bool = False  # Swarm: the overlay network is IPsec-encrypted (`--encrypt-network`)


def redis_script(spec: WorkerSpec) -> str:
    """The shell line that starts Redis: password from its secret, append-only file, TLS if asked."""
    return REDIS_SCRIPT + (REDIS_TLS_ARGS if spec.tls else "")


def worker_ca_path() -> str:
    """Where a worker finds the CA certificate it verifies Redis against (a mounted secret)."""
    return f"{SECRET_DIR}/{CA_SECRET}"


def swarm_constraints(spec: WorkerSpec) -> list[str]:
    """The worker's Swarm placement constraints: the raw ones, then `node_labels` as constraints."""
    return [*spec.constraints, *(f"node.labels.{k}=={v}" for k, v in spec.node_labels)]


# Swarm constraint attributes with a well-known Kubernetes node label.
_WELL_KNOWN = {
    "node.hostname": "kubernetes.io/hostname",
    "node.platform.os": "kubernetes.io/os",
    "node.platform.arch": "kubernetes.io/arch",
}
_CONSTRAINT = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s*(==|!=)\s*(\S+)\s*$")


@dataclass(frozen=True)
class PlacementTerms:
    """Placement in Kubernetes terms: labels a node must have, and (key, values) it must not have."""

    node_selector: tuple[tuple[str, str], ...]
    not_in: tuple[tuple[str, str], ...]


def placement_terms(spec: WorkerSpec) -> PlacementTerms:
    """Translate `constraints` and `node_labels` for Kubernetes; ValueError for one with no equivalent."""
    selector: dict[str, str] = {}
    not_in: list[tuple[str, str]] = []
    for constraint in spec.constraints:
        match = _CONSTRAINT.match(constraint)
        if not match:
            raise ValueError(f"cannot read placement constraint {constraint!r}: use ATTRIBUTE==VALUE")
        attribute, op, value = match.groups()
        if attribute.startswith(("node.labels.", "engine.labels.")):
            key = attribute.split(".", 2)[2]
        elif attribute in _WELL_KNOWN:
            key = _WELL_KNOWN[attribute]
        else:
            raise ValueError(
                f"placement constraint {constraint!r} has no Kubernetes equivalent: "
                "use node.labels.KEY==VALUE, node.hostname, node.platform.os or node.platform.arch"
            )
        if op == "==":
            selector[key] = value
        else:
            not_in.append((key, value))
    selector.update(dict(spec.node_labels))
    return PlacementTerms(tuple(sorted(selector.items())), tuple(not_in))


def toleration(text: str) -> dict[str, str]:
    """`KEY=VALUE:EFFECT`, `KEY:EFFECT` (any value) or `KEY` as a Kubernetes toleration."""
    key, _, effect = text.partition(":")
    out: dict[str, str] = {}
    if "=" in key:
        key, value = key.split("=", 1)
        out = {"key": key, "operator": "Equal", "value": value}
    else:
        out = {"key": key, "operator": "Exists"}
    if not key or not re.fullmatch(r"[A-Za-z0-9_./-]+", key):
        raise ValueError(f"bad toleration {text!r}: use KEY=VALUE:EFFECT, KEY:EFFECT or KEY")
    if effect:
        if effect not in TOLERATION_EFFECTS:
            raise ValueError(
                f"bad toleration effect {effect!r} in {text!r}: one of {', '.join(TOLERATION_EFFECTS)}"
            )
        out["effect"] = effect
    return out


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def check(spec: WorkerSpec) -> None:
    """ValueError with one line for a spec no backend can deploy as asked."""
    if spec.replicas < 0:
        raise ValueError(f"replicas must be 0 or more, got {spec.replicas}")
    if spec.image_pull_policy not in PULL_POLICIES:
        raise ValueError(
            f"image pull policy {spec.image_pull_policy!r}: use one of {', '.join(PULL_POLICIES)}"
        )
    for text in spec.tolerations:
        toleration(text)


def grace_warning(spec: WorkerSpec, chunk_seconds: float) -> str | None:
    """A warning when a stopping worker would be killed before it can finish a chunk."""
    if spec.stop_grace_period > chunk_seconds:
        return None
    return (
        f"Warning: the grace period ({spec.stop_grace_period}s) is not longer than a chunk "
        f"({chunk_seconds:g}s): a stopping worker may be killed mid-chunk, and its points run again"
    )


def check_kubernetes_name(name: str) -> None:
    """Kubernetes object names derive from the stack name: lowercase letters, digits and `-`."""
    if len(name) > 40 or not _DNS_LABEL.match(name):
        raise ValueError(
            f"stack name {name!r} cannot name Kubernetes objects: use at most 40 lowercase letters, "
            "digits and '-', starting and ending with a letter or digit"
        )
