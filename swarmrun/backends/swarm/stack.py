"""The swarmrun stack, defined once: Redis plus the worker service, in compose format.

`definition(config)` is the single source. `stacks/swarmrun.yml` is `render(template_config())`
(a test keeps the committed file equal to it), and `swarmrun up` converts the same definition
into docker SDK service specs with `service_kwargs`, so the file and `up` cannot drift.
Names follow `docker stack deploy` (`{stack}_{key}`, label `com.docker.stack.namespace`), so
`swarmrun scale/status/logs/down` also work on a stack deployed from the file.

No IPVS on many hosts (and none here): both services use `endpoint_mode: dnsrr`, and Redis is
published in `mode: host` on the manager it is pinned to, where the CLI reaches it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

NAMESPACE_LABEL = "com.docker.stack.namespace"
ROLE_LABEL = "swarmrun.role"
SPEC_LABEL = "swarmrun.spec"
SECRET = "redis_password"
SECRET_PATH = f"/run/secrets/{SECRET}"
REDIS_PORT = 6379
REDIS_SCRIPT = (
    "printf 'requirepass %s\\n' \"$(cat " + SECRET_PATH + ')" > /tmp/redis.conf'
    " && exec redis-server /tmp/redis.conf --appendonly yes --appendfsync everysec --dir /data --save ''"
)


@dataclass(frozen=True)
class StackConfig:
    """What `swarmrun up` deploys. Durations in seconds, memory like `512m` / `2g`."""

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


def template_config() -> StackConfig:
    """The configuration the committed stacks/swarmrun.yml is rendered from."""
    return StackConfig(
        image="${SWARMRUN_IMAGE:-swarmrun-worker:latest}",
        redis_image="${SWARMRUN_REDIS_IMAGE:-redis:7}",
        redis_port="${SWARMRUN_REDIS_PORT:-6379}",
        heartbeat_ttl="${SWARMRUN_HEARTBEAT_TTL:-30}",
        password_file="${SWARMRUN_REDIS_PASSWORD_FILE:-./redis_password}",
    )


def _resources(cpus: float | None, memory: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if cpus is not None:
        out["cpus"] = f"{cpus:g}"
    if memory is not None:
        out["memory"] = memory
    return out


def definition(config: StackConfig) -> dict[str, Any]:
    """The stack in compose-file form (version 3.8): the one definition everything derives from."""
    labels = dict(config.labels)
    worker_env = {
        "SWARMRUN_REDIS_URL": f"redis://redis:{REDIS_PORT}/0",
        "SWARMRUN_REDIS_PASSWORD_FILE": SECRET_PATH,
        "SWARMRUN_QUEUE": config.queue,
        "SWARMRUN_HEARTBEAT_TTL": str(config.heartbeat_ttl),
        "SWARMRUN_WORKER_NAME": "{{.Node.Hostname}}-{{.Task.Slot}}",
        **dict(config.env),
    }
    worker_deploy: dict[str, Any] = {
        "mode": "replicated",
        "replicas": config.replicas,
        "endpoint_mode": "dnsrr",
        "restart_policy": {"condition": "any", "delay": "2s"},
        "update_config": {"parallelism": 0, "order": "stop-first"},
        "labels": {ROLE_LABEL: "worker", **labels},
    }
    limits = _resources(config.cpus, config.memory)
    reservations = _resources(config.reserve_cpus, config.reserve_memory)
    if limits or reservations:
        worker_deploy["resources"] = {
            k: v for k, v in (("limits", limits), ("reservations", reservations)) if v
        }
    if config.constraints or config.max_replicas_per_node:
        placement: dict[str, Any] = {}
        if config.constraints:
            placement["constraints"] = list(config.constraints)
        if config.max_replicas_per_node:
            placement["max_replicas_per_node"] = config.max_replicas_per_node
        worker_deploy["placement"] = placement
    return {
        "version": "3.8",
        "services": {
            "redis": {
                "image": config.redis_image,
                "command": ["sh", "-c", REDIS_SCRIPT],
                "volumes": ["redis-data:/data"],
                "secrets": [SECRET],
                "ports": [
                    {"target": REDIS_PORT, "published": config.redis_port, "protocol": "tcp", "mode": "host"}
                ],
                "networks": ["net"],
                "stop_grace_period": "30s",
                "labels": {ROLE_LABEL: "redis", **labels},
                "deploy": {
                    "mode": "replicated",
                    "replicas": 1,
                    "endpoint_mode": "dnsrr",
                    "placement": {"constraints": ["node.role == manager"]},
                    "restart_policy": {"condition": "any", "delay": "2s"},
                    "labels": {ROLE_LABEL: "redis", **labels},
                },
            },
            "worker": {
                "image": config.image,
                "init": True,
                "environment": worker_env,
                "secrets": [SECRET],
                "networks": ["net"],
                "stop_grace_period": f"{config.stop_grace_period}s",
                "labels": {ROLE_LABEL: "worker", **labels},
                "deploy": worker_deploy,
            },
        },
        "networks": {"net": {"labels": labels} if labels else {}},
        "volumes": {"redis-data": {"labels": labels} if labels else {}},
        "secrets": {SECRET: {"file": config.password_file}},
    }


HEADER = """\
# The swarmrun stack: Redis (append-only file, password from a secret) and the worker service.
# Generated by `python -m swarmrun.backends.swarm.stack` from swarmrun/backends/swarm/stack.py, the same definition
# `swarmrun up` deploys; do not edit by hand (tests/unit/test_stack.py keeps them equal).
#
# Swarm:   openssl rand -hex 16 > redis_password
#          SWARMRUN_IMAGE=swarmrun-worker:latest docker stack deploy -c stacks/swarmrun.yml swarmrun
# Compose: docker-compose -f stacks/swarmrun.yml --compatibility up -d   (one machine, no swarm)
# Variables: SWARMRUN_IMAGE, SWARMRUN_REDIS_IMAGE, SWARMRUN_REDIS_PORT, SWARMRUN_REDIS_PASSWORD_FILE.
"""


def _escape_dollars(value: Any) -> Any:
    """Compose interpolates `$`: a literal `$` in a command is written `$$`."""
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, list):
        return [_escape_dollars(v) for v in value]
    return value


def render(config: StackConfig) -> str:
    """The stack as a compose file (for `docker stack deploy -c` and `docker-compose`)."""
    data = definition(config)
    data["services"]["redis"]["command"] = _escape_dollars(data["services"]["redis"]["command"])
    return HEADER + yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=1000)


# --- conversion to docker SDK service specs -------------------------------------------------------

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)$")
_UNITS = {"ns": 1, "us": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)([bkmg]?)b?$", re.IGNORECASE)
_MEMORY_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def nanoseconds(duration: str) -> int:
    """`2s`, `1m30s` is not supported; `120s`, `500ms`, `2m` are. Docker wants nanoseconds."""
    match = _DURATION.match(duration.strip())
    if not match:
        raise ValueError(f"bad duration {duration!r}: use a number with ns, us, ms, s, m or h")
    return int(float(match[1]) * _UNITS[match[2]])


def memory_bytes(memory: str) -> int:
    match = _MEMORY.match(memory.strip())
    if not match:
        raise ValueError(f"bad memory size {memory!r}: use e.g. 512m or 2g")
    return int(float(match[1]) * _MEMORY_UNITS[match[2].lower()])


def nano_cpus(cpus: str | float) -> int:
    return int(round(float(cpus) * 1e9))


@dataclass(frozen=True)
class ServicePlan:
    """One service to create or update: its full name, the SDK keyword arguments, a spec hash."""

    key: str
    name: str
    kwargs: dict[str, Any] = field(hash=False)
    spec_hash: str


def service_plans(
    config: StackConfig,
    *,
    network: str,
    secret_id: str,
    secret_name: str,
    extra_labels: dict[str, str] | None = None,
) -> list[ServicePlan]:
    """docker SDK `services.create` keyword arguments for each service of the definition.

    Plain data (dicts and lists); `backends.swarm` turns them into `docker.types` objects.
    """
    data = definition(config)
    plans = []
    for key, svc in data["services"].items():
        deploy = svc.get("deploy", {})
        full = f"{config.name}_{key}"
        labels = {NAMESPACE_LABEL: config.name, **svc.get("labels", {}), **(extra_labels or {})}
        kwargs: dict[str, Any] = {
            "name": full,
            "image": svc["image"],
            "labels": {NAMESPACE_LABEL: config.name, **deploy.get("labels", {}), **(extra_labels or {})},
            "container_labels": labels,
            "env": [f"{k}={v}" for k, v in svc.get("environment", {}).items()],
            "networks": [{"target": network, "aliases": [key]}],
            "secrets": [
                {"secret_id": secret_id, "secret_name": secret_name, "filename": s}
                for s in svc.get("secrets", [])
            ],
            "mode": {"mode": "replicated", "replicas": deploy.get("replicas", 1)},
            "endpoint_spec": {
                "mode": deploy.get("endpoint_mode", "vip"),
                "ports": [
                    {
                        "target": p["target"],
                        "published": int(p["published"]),
                        "protocol": p["protocol"],
                        "mode": p["mode"],
                    }
                    for p in svc.get("ports", [])
                ],
            },
            "restart_policy": {
                "condition": deploy["restart_policy"]["condition"],
                "delay": nanoseconds(deploy["restart_policy"]["delay"]),
            },
            "stop_grace_period": nanoseconds(svc["stop_grace_period"]),
            "init": bool(svc.get("init", False)),
        }
        if "command" in svc:
            kwargs["args"] = svc["command"]
        mounts = []
        for volume in svc.get("volumes", []):
            source, target = volume.split(":", 1)
            mounts.append(
                {
                    "type": "volume",
                    "source": f"{config.name}_{source}",
                    "target": target,
                    "labels": {NAMESPACE_LABEL: config.name, **(extra_labels or {})},
                }
            )
        if mounts:
            kwargs["mounts"] = mounts
        placement = deploy.get("placement", {})
        if placement.get("constraints"):
            kwargs["constraints"] = placement["constraints"]
        if placement.get("max_replicas_per_node"):
            kwargs["maxreplicas"] = placement["max_replicas_per_node"]
        resources = deploy.get("resources", {})
        if resources:
            limits, reservations = resources.get("limits", {}), resources.get("reservations", {})
            kwargs["resources"] = {
                k: v
                for k, v in (
                    ("cpu_limit", nano_cpus(limits["cpus"]) if "cpus" in limits else None),
                    ("mem_limit", memory_bytes(limits["memory"]) if "memory" in limits else None),
                    ("cpu_reservation", nano_cpus(reservations["cpus"]) if "cpus" in reservations else None),
                    (
                        "mem_reservation",
                        memory_bytes(reservations["memory"]) if "memory" in reservations else None,
                    ),
                )
                if v is not None
            }
        if "update_config" in deploy:
            kwargs["update_config"] = dict(deploy["update_config"])
        without_replicas = {**kwargs, "mode": {"mode": "replicated"}}
        digest = hashlib.sha256(json.dumps(without_replicas, sort_keys=True).encode()).hexdigest()[:16]
        kwargs["labels"][SPEC_LABEL] = digest
        plans.append(ServicePlan(key, full, kwargs, digest))
    return plans


if __name__ == "__main__":
    print(render(template_config()), end="")
