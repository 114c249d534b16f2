"""The Kubernetes rendering of the worker spec: objects, committed files, schemas 1.25-1.37."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from swarmrun.backends.kubernetes import manifests as km
from swarmrun.backends.mounts import parse as parse_mount
from swarmrun.backends.workerspec import SECRET_PATH, WorkerSpec

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_VERSIONS = [f"1.{minor}.0" for minor in range(25, 38)]

FULL = WorkerSpec(
    name="exp1",
    image="reg.example/worker:3",
    redis_image="redis:7",
    replicas=5,
    stop_grace_period=90,
    cpus=1.5,
    memory="2g",
    reserve_cpus=0.5,
    reserve_memory="512m",
    constraints=("node.labels.zone==a", "node.hostname!=n3"),
    max_replicas_per_node=1,
    env=(("OMP_NUM_THREADS", "1"),),
    labels=(("team", "ml"),),
    node_labels=(("gpu", "true"),),
    tolerations=("gpu=true:NoSchedule", "spot"),
    image_pull_policy="Never",
    storage_class="fast",
)


MOUNTED = WorkerSpec(
    mounts=tuple(
        parse_mount(spec)
        for spec in (
            "type=bind,source=/srv/data,target=/data,readonly",
            "type=volume,source=results,target=/results",
            "type=volume,source=nfsdata,target=/nfs,volume-driver=local,"
            '"volume-opt=o=addr=10.0.0.5,rw","volume-opt=type=nfs","volume-opt=device=:/export/x"',
            "type=volume,target=/scratch",
            "type=tmpfs,target=/tmp/fast,tmpfs-size=67108864",
        )
    )
)


def by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in objects}


def test_objects_and_order() -> None:
    objects = km.manifests(FULL, password="pw")
    assert [f"{o['kind']}/{o['metadata']['name']}" for o in objects] == [
        "Secret/exp1-redis",
        "Service/exp1-redis",
        "PersistentVolumeClaim/exp1-redis-data",
        "Deployment/exp1-redis",
        "Deployment/exp1-worker",
    ]
    secret = objects[0]
    assert base64.b64decode(secret["data"]["password"]) == b"pw"


def test_worker_deployment_carries_the_spec() -> None:
    worker = by_kind(km.manifests(FULL))["Deployment/exp1-worker"]
    assert worker["spec"]["replicas"] == 5
    pod = worker["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 90
    assert pod["nodeSelector"] == {"gpu": "true", "zone": "a"}
    assert pod["tolerations"] == [
        {"key": "gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"},
        {"key": "spot", "operator": "Exists"},
    ]
    match = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert match["nodeSelectorTerms"][0]["matchExpressions"] == [
        {"key": "kubernetes.io/hostname", "operator": "NotIn", "values": ["n3"]}
    ]
    assert pod["affinity"]["podAntiAffinity"]
    (container,) = pod["containers"]
    assert container["image"] == "reg.example/worker:3"
    assert container["imagePullPolicy"] == "Never"
    assert container["resources"] == {
        "limits": {"cpu": "1.5", "memory": "2Gi"},
        "requests": {"cpu": "0.5", "memory": "512Mi"},
    }
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    # Works without cluster DNS: the variables Kubernetes injects for the Service, expanded by $(...).
    assert env["SWARMRUN_REDIS_URL"] == "redis://$(EXP1_REDIS_SERVICE_HOST):$(EXP1_REDIS_SERVICE_PORT)/0"
    assert env["SWARMRUN_REDIS_PASSWORD_FILE"] == SECRET_PATH
    assert env["OMP_NUM_THREADS"] == "1"
    assert env["SWARMRUN_WORKER_NAME"] == {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}
    assert {"name": "redis-password", "mountPath": "/run/secrets", "readOnly": True} in container[
        "volumeMounts"
    ]
    labels = worker["spec"]["template"]["metadata"]["labels"]
    assert labels["team"] == "ml" and labels["swarmrun.role"] == "worker"
    assert worker["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_redis_on_a_claim_or_an_emptydir() -> None:
    objs = by_kind(km.manifests(FULL))
    assert objs["PersistentVolumeClaim/exp1-redis-data"]["spec"]["storageClassName"] == "fast"
    volumes = objs["Deployment/exp1-redis"]["spec"]["template"]["spec"]["volumes"]
    assert volumes[0] == {"name": "data", "persistentVolumeClaim": {"claimName": "exp1-redis-data"}}
    empty = by_kind(km.manifests(FULL, redis_volume="emptydir"))
    assert "PersistentVolumeClaim/exp1-redis-data" not in empty
    assert empty["Deployment/exp1-redis"]["spec"]["template"]["spec"]["volumes"][0] == {
        "name": "data",
        "emptyDir": {},
    }
    service = objs["Service/exp1-redis"]
    assert service["spec"]["selector"].items() <= (
        objs["Deployment/exp1-redis"]["spec"]["template"]["metadata"]["labels"].items()
    )


def test_memory_quantities() -> None:
    assert km.quantity("512m") == "512Mi"
    assert km.quantity("2g") == "2Gi"
    assert km.quantity("1536k") == "1536Ki"
    assert km.quantity("1000b") == "1000"


def test_refusals() -> None:
    with pytest.raises(ValueError, match="Kubernetes objects"):
        km.manifests(WorkerSpec(name="My_Stack"))
    with pytest.raises(ValueError, match="max-per-node"):
        km.manifests(WorkerSpec(max_replicas_per_node=2))


def test_committed_manifests_are_the_rendered_spec(tmp_path: Path) -> None:
    committed = ROOT / "stacks" / "kubernetes"
    rendered = km.render_files(km.manifests(km.template_spec()))
    assert sorted(p.name for p in committed.glob("*.yaml")) == sorted(rendered)
    for name, text in rendered.items():
        assert (committed / name).read_text() == text, (
            f"regenerate: python -m swarmrun.backends.kubernetes.manifests ({name})"
        )


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_manifests_validate_against_current_schemas(version: str) -> None:
    variants = [
        km.manifests(FULL, password="pw"),
        km.manifests(WorkerSpec(), redis_volume="emptydir", password="pw"),
        km.manifests(MOUNTED, password="pw"),
        [
            o
            for f in sorted((ROOT / "stacks" / "kubernetes").glob("*.yaml"))
            for o in yaml.safe_load_all(f.read_text())
        ],
    ]
    for objects in variants:
        for obj in objects:
            kubernetes_validate.validate(obj, version, strict=True)


def test_mounts_become_volumes_and_volume_mounts() -> None:
    volumes, mounts = km.kubernetes_mounts(MOUNTED)
    assert volumes == [
        {"name": "mount-0", "hostPath": {"path": "/srv/data"}},
        {"name": "mount-1", "persistentVolumeClaim": {"claimName": "results"}},
        {"name": "mount-2", "nfs": {"server": "10.0.0.5", "path": "/export/x"}},
        {"name": "mount-3", "emptyDir": {}},
        {"name": "mount-4", "emptyDir": {"medium": "Memory", "sizeLimit": "67108864"}},
    ]
    assert mounts == [
        {"name": "mount-0", "mountPath": "/data", "readOnly": True},
        {"name": "mount-1", "mountPath": "/results"},
        {"name": "mount-2", "mountPath": "/nfs"},
        {"name": "mount-3", "mountPath": "/scratch"},
        {"name": "mount-4", "mountPath": "/tmp/fast"},
    ]
    worker = by_kind(km.manifests(MOUNTED, password="pw"))["Deployment/swarmrun-worker"]
    pod = worker["spec"]["template"]["spec"]
    assert [v["name"] for v in pod["volumes"]][-5:] == [f"mount-{n}" for n in range(5)]
    assert pod["containers"][0]["volumeMounts"][-5:] == mounts
