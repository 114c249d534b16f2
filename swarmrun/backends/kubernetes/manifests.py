"""The worker spec as Kubernetes objects (plain dicts): Redis and the worker Deployment.

`manifests(spec, redis_volume=...)` is what `swarmrun up --backend kubernetes` applies and what
`--dry-run -o DIR` writes; `stacks/kubernetes/` is `write(template_spec(), ...)` (a test keeps the
committed files equal to it). Pure: no client, no I/O except `write`.

Objects, all named after the stack (`{name}-redis`, `{name}-worker`) and labelled
`app.kubernetes.io/instance={name}`:
- Secret `{name}-redis` (key `password`), mounted as a file where the Swarm secret is mounted;
- Service `{name}-redis` (ClusterIP), created before any pod, so that every pod gets the
  injected `{NAME}_REDIS_SERVICE_HOST/_PORT` variables. The worker's Redis URL is built from them
  (`$(VAR)` expansion), so it works with cluster DNS and without it;
- PersistentVolumeClaim `{name}-redis-data` for the append-only file (`redis_volume="claim"`),
  or an emptyDir (`"emptydir"`: the queue and results die with the Redis pod);
- Deployments `{name}-redis` (1 replica, Recreate) and `{name}-worker`.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, Literal

import yaml

from swarmrun.backends.mounts import Mount
from swarmrun.backends.swarm.stack import memory_bytes
from swarmrun.backends.tls import CA_SECRET, CERT_SECRET, KEY_SECRET, TLSMaterial
from swarmrun.backends.workerspec import (
    DATA_DIR,
    REDIS_PORT,
    SECRET,
    SECRET_DIR,
    SECRET_PATH,
    WorkerSpec,
    check_kubernetes_name,
    placement_terms,
    redis_script,
    toleration,
    worker_ca_path,
)

RedisVolume = Literal["claim", "emptydir"]
INSTANCE_LABEL = "app.kubernetes.io/instance"
COMPONENT_LABEL = "app.kubernetes.io/component"
NAME_LABEL = "app.kubernetes.io/name"
ROLE_LABEL = "swarmrun.role"
SPEC_ANNOTATION = "swarmrun.io/spec"
REDIS_GRACE = 30
REDIS_PROBE = f'redis-cli --no-auth-warning -a "$(cat {SECRET_PATH})" ping | grep -q PONG'
# With TLS the probe speaks TLS too; it skips verification: it talks to its own pod over loopback.
REDIS_TLS_PROBE = REDIS_PROBE.replace("redis-cli ", "redis-cli --tls --insecure ")
TLS_LABEL = "swarmrun.io/tls"


def redis_name(spec: WorkerSpec) -> str:
    return f"{spec.name}-redis"


def worker_name(spec: WorkerSpec) -> str:
    return f"{spec.name}-worker"


def claim_name(spec: WorkerSpec) -> str:
    return f"{spec.name}-redis-data"


def service_env_prefix(spec: WorkerSpec) -> str:
    """`swarmrun-redis` -> `SWARMRUN_REDIS`: the prefix of the variables Kubernetes injects."""
    return redis_name(spec).upper().replace("-", "_")


def tls_secret_name(spec: WorkerSpec) -> str:
    return tls_secret_name_for(spec.name)


def tls_secret_name_for(stack: str) -> str:
    """The Secret with the CA certificate, Redis's certificate and its key."""
    return f"{stack}-redis-tls"


def worker_redis_url(spec: WorkerSpec) -> str:
    """From the injected Service variables. With TLS the host is the Service's cluster IP, known
    only once the Service exists, so the certificate cannot name it: workers verify the chain
    against the stack's CA (which signs nothing else) without matching the host name."""
    prefix = service_env_prefix(spec)
    if spec.tls:
        return f"rediss://$({prefix}_SERVICE_HOST):$({prefix}_SERVICE_PORT)/0?ssl_check_hostname=false"
    return f"redis://$({prefix}_SERVICE_HOST):$({prefix}_SERVICE_PORT)/0"


def selector(spec: WorkerSpec, component: str) -> dict[str, str]:
    return {INSTANCE_LABEL: spec.name, COMPONENT_LABEL: component}


def labels(spec: WorkerSpec, component: str) -> dict[str, str]:
    return {
        NAME_LABEL: "swarmrun",
        **selector(spec, component),
        ROLE_LABEL: component,
        **dict(spec.labels),
    }


def quantity(memory: str) -> str:
    """Docker's `512m` is MiB, Kubernetes' `512m` would be millibytes: write `512Mi`."""
    size = memory_bytes(memory)
    for unit, factor in (("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def resources(spec: WorkerSpec) -> dict[str, dict[str, str]]:
    limits: dict[str, str] = {}
    requests: dict[str, str] = {}
    if spec.cpus is not None:
        limits["cpu"] = f"{spec.cpus:g}"
    if spec.memory is not None:
        limits["memory"] = quantity(spec.memory)
    if spec.reserve_cpus is not None:
        requests["cpu"] = f"{spec.reserve_cpus:g}"
    if spec.reserve_memory is not None:
        requests["memory"] = quantity(spec.reserve_memory)
    return {k: v for k, v in (("limits", limits), ("requests", requests)) if v}


def _metadata(spec: WorkerSpec, name: str, component: str) -> dict[str, Any]:
    return {"name": name, "labels": labels(spec, component)}


def _secret_volume(spec: WorkerSpec, tls_files: tuple[str, ...] = ()) -> dict[str, Any]:
    """The password (and with TLS the `tls_files` this container needs) as files under /run/secrets."""
    if not (spec.tls and tls_files):
        return {
            "name": "redis-password",
            "secret": {
                "secretName": redis_name(spec),
                "items": [{"key": "password", "path": SECRET}],
                "defaultMode": 0o444,
            },
        }
    return {
        "name": "redis-password",
        "projected": {
            "sources": [
                {"secret": {"name": redis_name(spec), "items": [{"key": "password", "path": SECRET}]}},
                {
                    "secret": {
                        "name": tls_secret_name(spec),
                        "items": [{"key": f, "path": f} for f in tls_files],
                    }
                },
            ],
            "defaultMode": 0o444,
        },
    }


def _opaque_secret(spec: WorkerSpec, name: str, data: dict[str, bytes]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(spec, name, "redis"),
        "type": "Opaque",
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }


def secret(spec: WorkerSpec, password: str) -> dict[str, Any]:
    return _opaque_secret(spec, redis_name(spec), {"password": password.encode()})


def tls_secret(spec: WorkerSpec, material: TLSMaterial) -> dict[str, Any]:
    """The CA certificate, Redis's certificate and its key (keys named as the files they become)."""
    return _opaque_secret(spec, tls_secret_name(spec), material.secrets())


def service(spec: WorkerSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(spec, redis_name(spec), "redis"),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(spec, "redis"),
            "ports": [{"name": "redis", "port": REDIS_PORT, "targetPort": "redis", "protocol": "TCP"}],
        },
    }


def claim(spec: WorkerSpec) -> dict[str, Any]:
    body: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": spec.redis_storage}},
    }
    if spec.storage_class is not None:
        body["storageClassName"] = spec.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _metadata(spec, claim_name(spec), "redis"),
        "spec": body,
    }


def redis_deployment(spec: WorkerSpec, redis_volume: RedisVolume) -> dict[str, Any]:
    data: dict[str, Any] = (
        {"name": "data", "persistentVolumeClaim": {"claimName": claim_name(spec)}}
        if redis_volume == "claim"
        else {"name": "data", "emptyDir": {}}
    )
    container = {
        "name": "redis",
        "image": spec.redis_image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": ["sh", "-c", redis_script(spec)],
        "ports": [{"name": "redis", "containerPort": REDIS_PORT, "protocol": "TCP"}],
        # An exec probe, not tcpSocket: it needs no route from the kubelet to the pod network
        # (the test cluster has none) and checks that Redis answers with its password.
        "readinessProbe": {
            "exec": {"command": ["sh", "-c", REDIS_TLS_PROBE if spec.tls else REDIS_PROBE]},
            "periodSeconds": 2,
        },
        "volumeMounts": [
            {"name": "data", "mountPath": DATA_DIR},
            {"name": "redis-password", "mountPath": SECRET_DIR, "readOnly": True},
        ],
    }
    metadata = _metadata(spec, redis_name(spec), "redis")
    if spec.tls:
        metadata["labels"][TLS_LABEL] = "true"
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": 1,
            # Never two Redis servers on one append-only file: the old pod goes first.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector(spec, "redis")},
            "template": {
                "metadata": {"labels": labels(spec, "redis")},
                "spec": {
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": REDIS_GRACE,
                    "containers": [container],
                    "volumes": [data, _secret_volume(spec, (CERT_SECRET, KEY_SECRET))],
                },
            },
        },
    }


def kubernetes_mounts(spec: WorkerSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The worker's extra (volumes, volumeMounts) from the spec's mounts (Docker's `--mount`).

    bind -> hostPath (the same path on every node, as on Swarm); a named volume -> the
    PersistentVolumeClaim of that name (create it first), or an `nfs` volume when its options are
    the local driver's NFS ones (`type=nfs`, `o=addr=HOST`, `device=:/path`); an anonymous volume
    -> emptyDir; tmpfs -> a memory-backed emptyDir (`tmpfs-size` as its size limit).
    """
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    for n, m in enumerate(spec.mounts):
        name = f"mount-{n}"
        source: dict[str, Any]
        if m.type == "bind":
            source = {"hostPath": {"path": m.source}}
        elif m.type == "tmpfs":
            source = {
                "emptyDir": {"medium": "Memory", **({"sizeLimit": str(m.tmpfs_size)} if m.tmpfs_size else {})}
            }
        elif _nfs(m) is not None:
            source = {"nfs": _nfs(m)}
        elif m.source:
            source = {"persistentVolumeClaim": {"claimName": m.source}}
        else:
            source = {"emptyDir": {}}
        volumes.append({"name": name, **source})
        mounts.append({"name": name, "mountPath": m.target, **({"readOnly": True} if m.readonly else {})})
    return volumes, mounts


def _nfs(m: Mount) -> dict[str, Any] | None:
    """The `nfs` volume source of a local-driver NFS volume (`docker volume create` options), or None."""
    opts = dict(m.volume_options)
    if opts.get("type") not in ("nfs", "nfs4") or not opts.get("device", "").startswith(":"):
        return None
    addr = next((o[5:] for o in opts.get("o", "").split(",") if o.startswith("addr=")), None)
    if not addr:
        return None
    return {"server": addr, "path": opts["device"][1:], **({"readOnly": True} if m.readonly else {})}


def worker_env(spec: WorkerSpec) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "SWARMRUN_REDIS_URL", "value": worker_redis_url(spec)},
        {"name": "SWARMRUN_REDIS_PASSWORD_FILE", "value": SECRET_PATH},
        *([{"name": "SWARMRUN_REDIS_CA", "value": worker_ca_path()}] if spec.tls else []),
        {"name": "SWARMRUN_QUEUE", "value": spec.queue},
        {"name": "SWARMRUN_HEARTBEAT_TTL", "value": str(spec.heartbeat_ttl)},
        {
            "name": "SWARMRUN_WORKER_NAME",
            "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}},
        },
    ]
    env += [{"name": k, "value": v} for k, v in spec.env]
    return env


def _affinity(spec: WorkerSpec) -> dict[str, Any]:
    terms = placement_terms(spec)
    affinity: dict[str, Any] = {}
    if terms.not_in:
        affinity["nodeAffinity"] = {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": k, "operator": "NotIn", "values": [v]} for k, v in terms.not_in
                        ]
                    }
                ]
            }
        }
    if spec.max_replicas_per_node is not None:
        if spec.max_replicas_per_node != 1:
            raise ValueError(
                "--max-per-node above 1 has no Kubernetes equivalent (1 is a pod anti-affinity on the host)"
            )
        affinity["podAntiAffinity"] = {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {
                    "labelSelector": {"matchLabels": selector(spec, "worker")},
                    "topologyKey": "kubernetes.io/hostname",
                }
            ]
        }
    return affinity


def worker_deployment(spec: WorkerSpec) -> dict[str, Any]:
    volumes, mounts = kubernetes_mounts(spec)
    container: dict[str, Any] = {
        "name": "worker",
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "env": worker_env(spec),
        "volumeMounts": [{"name": "redis-password", "mountPath": SECRET_DIR, "readOnly": True}, *mounts],
    }
    res = resources(spec)
    if res:
        container["resources"] = res
    pod: dict[str, Any] = {
        # No API token in the pods: workers never call the API server (and the token's mount under
        # /var/run/secrets would land inside the read-only secret mount at /run/secrets).
        "automountServiceAccountToken": False,
        # The pause container is PID 1 and reaps the task's orphans (Swarm's `init: true`).
        "shareProcessNamespace": True,
        # Longer than a chunk: a stopping worker finishes it (SIGTERM), is killed only after this.
        "terminationGracePeriodSeconds": spec.stop_grace_period,
        "containers": [container],
        "volumes": [_secret_volume(spec, (CA_SECRET,)), *volumes],
    }
    terms = placement_terms(spec)
    if terms.node_selector:
        pod["nodeSelector"] = dict(terms.node_selector)
    if spec.tolerations:
        pod["tolerations"] = [toleration(t) for t in spec.tolerations]
    affinity = _affinity(spec)
    if affinity:
        pod["affinity"] = affinity
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(spec, worker_name(spec), "worker"),
        "spec": {
            "replicas": spec.replicas,
            # A changed spec stops every worker warm before new ones start (Swarm: stop-first).
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector(spec, "worker")},
            "template": {"metadata": {"labels": labels(spec, "worker")}, "spec": pod},
        },
    }


def manifests(
    spec: WorkerSpec,
    *,
    redis_volume: RedisVolume = "claim",
    password: str | None = None,
    tls: TLSMaterial | None = None,
) -> list[dict[str, Any]]:
    """Every object, in the order to apply them (the Secrets first, the Service before any pod)."""
    check_kubernetes_name(spec.name)
    objects: list[dict[str, Any]] = []
    if password is not None:
        objects.append(secret(spec, password))
    if tls is not None:
        objects.append(tls_secret(spec, tls))
    objects.append(service(spec))
    if redis_volume == "claim":
        objects.append(claim(spec))
    objects += [redis_deployment(spec, redis_volume), worker_deployment(spec)]
    return objects


def template_spec() -> WorkerSpec:
    """The spec the committed stacks/kubernetes/ manifests are rendered from."""
    return WorkerSpec()


HEADER = """\
# swarmrun on Kubernetes: {what}
# Generated by `python -m swarmrun.backends.kubernetes.manifests stacks/kubernetes` from the same worker spec
# `swarmrun up --backend kubernetes` applies; do not edit by hand (tests/unit/test_kubemanifests.py).
#
#   kubectl create secret generic swarmrun-redis --from-literal=password="$(openssl rand -hex 16)"
#   kubectl apply -f stacks/kubernetes/
"""


def render_files(objects: list[dict[str, Any]]) -> dict[str, str]:
    """Objects as YAML files: `secret.yaml` (if any), `redis.yaml`, `worker.yaml`."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        component = obj["metadata"]["labels"][COMPONENT_LABEL]
        file = "secret.yaml" if obj["kind"] == "Secret" else f"{component}.yaml"
        groups.setdefault(file, []).append(obj)
    out = {}
    for file, objs in groups.items():
        what = ", ".join(o["kind"] + " " + o["metadata"]["name"] for o in objs)
        body = yaml.safe_dump_all(objs, sort_keys=False, default_flow_style=False, width=1000)
        out[file] = HEADER.format(what=what) + body
    return out


def write(directory: Path, objects: list[dict[str, Any]]) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for file, text in render_files(objects).items():
        path = directory / file
        path.write_text(text)
        paths.append(path)
    return paths


if __name__ == "__main__":
    import sys

    for written in write(
        Path(sys.argv[1] if len(sys.argv) > 1 else "stacks/kubernetes"), manifests(template_spec())
    ):
        print(written)
