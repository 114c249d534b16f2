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

from swarmrun.backends.mounts import Mount
from swarmrun.backends.tls import CA_SECRET, CERT_SECRET, KEY_SECRET, TLS_SECRETS
from swarmrun.backends.workerspec import REDIS_PORT as REDIS_PORT
from swarmrun.backends.workerspec import REDIS_SCRIPT as REDIS_SCRIPT
from swarmrun.backends.workerspec import SECRET as SECRET
from swarmrun.backends.workerspec import SECRET_PATH as SECRET_PATH
from swarmrun.backends.workerspec import WorkerSpec, redis_script, swarm_constraints, worker_ca_path

NAMESPACE_LABEL = "com.docker.stack.namespace"
ROLE_LABEL = "swarmrun.role"
TLS_LABEL = "swarmrun.tls"  # on a Redis service that speaks only TLS (`up --tls`)
SPEC_LABEL = "swarmrun.spec"
# The worker spec (backend-neutral) lives in swarmrun.backends.workerspec; StackConfig is its older name.
StackConfig = WorkerSpec


def template_config(*, tls: bool = False) -> StackConfig:
    """The configuration stacks/swarmrun.yml (with `tls`: stacks/swarmrun-tls.yml) is rendered from."""
    return StackConfig(
        tls=tls,
        tls_dir="${SWARMRUN_REDIS_TLS_DIR:-../tls}",
        image="${SWARMRUN_IMAGE:-swarmrun-worker:latest}",
        redis_image="${SWARMRUN_REDIS_IMAGE:-redis:7}",
        redis_port="${SWARMRUN_REDIS_PORT:-6379}",
        heartbeat_ttl="${SWARMRUN_HEARTBEAT_TTL:-30}",
        # Compose and `docker stack deploy` resolve a relative secret file beside the stack file
        # (stacks/): the default is the `redis_password` one level up, the checkout's top.
        password_file="${SWARMRUN_REDIS_PASSWORD_FILE:-../redis_password}",
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
    tls_env = {"SWARMRUN_REDIS_CA": worker_ca_path()} if config.tls else {}
    worker_env = {
        "SWARMRUN_REDIS_URL": f"{'rediss' if config.tls else 'redis'}://redis:{REDIS_PORT}/0",
        "SWARMRUN_REDIS_PASSWORD_FILE": SECRET_PATH,
        **tls_env,
        "SWARMRUN_QUEUE": config.queue,
        "SWARMRUN_HEARTBEAT_TTL": str(config.heartbeat_ttl),
        "SWARMRUN_WORKER_NAME": "{{.Node.Hostname}}-{{.Task.Slot}}",
        "SWARMRUN_NODE": "{{.Node.Hostname}}",
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
    constraints = swarm_constraints(config)
    if constraints or config.max_replicas_per_node:
        placement: dict[str, Any] = {}
        if constraints:
            placement["constraints"] = constraints
        if config.max_replicas_per_node:
            placement["max_replicas_per_node"] = config.max_replicas_per_node
        worker_deploy["placement"] = placement
    worker: dict[str, Any] = {
        "image": config.image,
        "init": True,
        "environment": worker_env,
        "secrets": [SECRET, *([CA_SECRET] if config.tls else [])],
        "networks": ["net"],
        "stop_grace_period": f"{config.stop_grace_period}s",
        "labels": {ROLE_LABEL: "worker", **labels},
        "deploy": worker_deploy,
    }
    redis_labels = {ROLE_LABEL: "redis", **({TLS_LABEL: "true"} if config.tls else {}), **labels}
    network: dict[str, Any] = {"labels": labels} if labels else {}
    if config.encrypt_network:
        network["driver_opts"] = {"encrypted": ""}
    secrets: dict[str, Any] = {SECRET: {"file": config.password_file}}
    if config.tls:
        secrets.update({name: {"file": f"{config.tls_dir}/{name}.pem"} for name in TLS_SECRETS})
    volumes: dict[str, Any] = {"redis-data": {"labels": labels} if labels else {}}
    if config.mounts:
        worker["volumes"] = []
        for mount in config.mounts:
            entry, top = mount.compose()
            worker["volumes"].append(entry)
            if top is not None:
                volumes[top[0]] = top[1]
    return {
        "version": "3.8",
        "services": {
            "redis": {
                "image": config.redis_image,
                "command": ["sh", "-c", redis_script(config)],
                "volumes": ["redis-data:/data"],
                "secrets": [SECRET, *([CERT_SECRET, KEY_SECRET] if config.tls else [])],
                "ports": [
                    {"target": REDIS_PORT, "published": config.redis_port, "protocol": "tcp", "mode": "host"}
                ],
                "networks": ["net"],
                "stop_grace_period": "30s",
                "labels": dict(redis_labels),
                "deploy": {
                    "mode": "replicated",
                    "replicas": 1,
                    "endpoint_mode": "dnsrr",
                    "placement": {"constraints": ["node.role == manager"]},
                    "restart_policy": {"condition": "any", "delay": "2s"},
                    "labels": dict(redis_labels),
                },
            },
            "worker": worker,
        },
        "networks": {"net": network},
        "volumes": volumes,
        "secrets": secrets,
    }


HEADER = """\
# The swarmrun stack: Redis (append-only file, password from a secret) and the worker service.
# Generated by `python -m swarmrun.backends.swarm.stack` from swarmrun/backends/swarm/stack.py,
# the same definition `swarmrun up` deploys; do not edit by hand
# (tests/unit/test_stack_file.py keeps them equal).
#
# Swarm:   openssl rand -hex 16 > redis_password
#          SWARMRUN_IMAGE=swarmrun-worker:latest docker stack deploy -c stacks/swarmrun.yml swarmrun
# Compose: docker-compose -f stacks/swarmrun.yml --compatibility up -d   (one machine, no swarm)
# Variables: SWARMRUN_IMAGE, SWARMRUN_REDIS_IMAGE, SWARMRUN_REDIS_PORT, SWARMRUN_REDIS_PASSWORD_FILE.
"""


TLS_HEADER = """\
# TLS (`swarmrun up --tls` deploys the same): Redis speaks only TLS on its port. Put the CA
# certificate and Redis's certificate and key in SWARMRUN_REDIS_TLS_DIR (../tls):
#          python -m swarmrun.backends.tls tls --host MANAGER_HOST
# then:    SWARMRUN_REDIS_CA=tls/redis_tls_ca.pem swarmrun status --redis-url rediss://:PASSWORD@MANAGER_HOST:6379/0
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
    return (
        HEADER
        + (TLS_HEADER if config.tls else "")
        + yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=1000)
    )


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
    tls_secrets: dict[str, tuple[str, str]] | None = None,
) -> list[ServicePlan]:
    """docker SDK `services.create` keyword arguments for each service of the definition.

    Plain data (dicts and lists); `backends.swarm` turns them into `docker.types` objects.
    `tls_secrets` maps each TLS secret's file name to its (id, name) on the engine.
    """
    data = definition(config)
    refs = {SECRET: (secret_id, secret_name), **(tls_secrets or {})}
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
                {"secret_id": refs[s][0], "secret_name": refs[s][1], "filename": s}
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
            if isinstance(volume, dict):  # a `--mount` in long syntax: the named volume keeps its name
                mounts.append(Mount.from_compose(volume, data["volumes"]).sdk())
                continue
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
    import sys

    print(render(template_config(tls="--tls" in sys.argv[1:])), end="")
