"""The kubernetes backend: the worker spec as a Redis and a worker Deployment, through the API server.

The cluster is the one kubectl would use: `KUBECONFIG` (or ~/.kube/config) and its current
context, `--context` to pick another, the in-cluster service account when there is no file. The
namespace is `--namespace`, else the context's, else `default`. The official `kubernetes` client
is an extra (`pip install 'swarmrun[kubernetes]'`).

`deploy` is idempotent: each object carries a hash of its rendered spec (without the worker
count) in an annotation; an unchanged object is left alone, a changed one replaced. The Redis
password lives in the Secret and is read back from it, so any machine with access to the
namespace can drive the stack. The CLI reaches Redis through a port-forward (`redis_url`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import queue as queuelib
import secrets as pysecrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from swarmrun.backends import Placement, Replicas
from swarmrun.backends.kubernetes import manifests as km
from swarmrun.backends.kubernetes.cluster import Cluster
from swarmrun.backends.kubernetes.cluster import cluster_answers as cluster_answers
from swarmrun.backends.tls import CA_SECRET, TLSMaterial, issue
from swarmrun.backends.workerspec import REDIS_PORT, WorkerSpec, check_kubernetes_name
from swarmrun.errors import ImageMissing, InvalidSpec, KubernetesUnavailable, RedisUnavailable
from swarmrun.settings import with_ca, with_password

# Waiting reasons that mean the node will not get the image by waiting longer.
IMAGE_FAILURES = ("ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName")
# Waiting reasons that mean the container will not start as configured.
CONFIG_FAILURES = ("CreateContainerConfigError", "CreateContainerError", "RunContainerError")


def spec_hash(obj: dict[str, Any]) -> str:
    body = json.loads(json.dumps(obj))
    if body["kind"] == "Deployment" and body["metadata"]["labels"].get(km.COMPONENT_LABEL) == "worker":
        body["spec"].pop("replicas", None)
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


class KubernetesBackend:
    """Workers as the Deployment `{stack}-worker`, next to the Redis Deployment `{stack}-redis`."""

    name = "kubernetes"

    def __init__(
        self,
        spec: WorkerSpec,
        *,
        context: str | None = None,
        namespace: str | None = None,
        warn: Callable[[str], None] | None = None,
        cluster: Cluster | None = None,
        home: Path | None = None,
        ca_file: str | None = None,
    ) -> None:
        try:
            check_kubernetes_name(spec.name)
        except ValueError as e:
            raise InvalidSpec(str(e)) from None
        self.spec = spec
        self.cluster = cluster or Cluster(context=context, namespace=namespace)
        self.namespace = self.cluster.namespace
        self.warn = warn or (lambda line: None)
        self.home = home
        self.ca_file = ca_file
        self.cluster.check()

    # --- names and state ---------------------------------------------------------------------
    @property
    def worker_deployment(self) -> str:
        return km.worker_name(self.spec)

    @property
    def redis_deployment(self) -> str:
        return km.redis_name(self.spec)

    def _selector(self, component: str) -> str:
        return ",".join(f"{k}={v}" for k, v in km.selector(self.spec, component).items())

    def exists(self) -> bool:
        with self.cluster.translated(f"listing deployments in namespace {self.namespace!r}"):
            found = self.cluster.apps.list_namespaced_deployment(
                self.namespace, label_selector=f"{km.INSTANCE_LABEL}={self.spec.name}"
            )
        return bool(found.items)

    def _read(self, read: Callable[..., Any], name: str) -> Any:
        ApiException = self.cluster.k.client.exceptions.ApiException
        try:
            return read(name, self.namespace)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def password(self) -> str:
        import base64

        with self.cluster.translated(f"reading secret {self.redis_deployment!r}"):
            secret = self._read(self.cluster.core.read_namespaced_secret, km.redis_name(self.spec))
        if secret is None or not (secret.data or {}).get("password"):
            raise RedisUnavailable(
                f"stack {self.spec.name!r} is not deployed in namespace {self.namespace!r} "
                "(run `swarmrun up --backend kubernetes`)"
            )
        return base64.b64decode(secret.data["password"]).decode()

    # --- deploy --------------------------------------------------------------------------------
    def redis_volume(self) -> km.RedisVolume:
        """A claim when one exists, a storage class provides one or a free volume can bind; else emptyDir."""
        c = self.cluster
        with c.translated("reading the Redis volume claim"):
            if self._read(c.core.read_namespaced_persistent_volume_claim, km.claim_name(self.spec)):
                return "claim"
            current = self._read(c.apps.read_namespaced_deployment, self.redis_deployment)
        if current is not None:  # keep what the running Redis uses: changing it would lose its data
            volumes = current.spec.template.spec.volumes or []
            if any(v.name == "data" and v.empty_dir is not None for v in volumes):
                return "emptydir"
        if self.spec.storage_class is not None:
            return "claim"
        ApiException = c.k.client.exceptions.ApiException
        try:
            classes = c.storage.list_storage_class().items
            if any(
                (sc.metadata.annotations or {}).get("storageclass.kubernetes.io/is-default-class") == "true"
                for sc in classes
            ):
                return "claim"
            for pv in c.core.list_persistent_volume().items:
                if (
                    pv.status.phase == "Available"
                    and not pv.spec.storage_class_name
                    and "ReadWriteOnce" in (pv.spec.access_modes or [])
                    and _quantity_bytes(pv.spec.capacity.get("storage", "0"))
                    >= _quantity_bytes(self.spec.redis_storage)
                ):
                    return "claim"
        except ApiException as e:
            if e.status != 403:
                raise
        return "emptydir"

    def objects(
        self, replicas: int | None, password: str | None, tls: TLSMaterial | None = None
    ) -> list[dict[str, Any]]:
        """What `deploy` applies (the dry run writes the same, with the Secrets left out)."""
        volume = self.redis_volume()
        spec = self.spec if replicas is None else _with_replicas(self.spec, replicas)
        try:
            return km.manifests(spec, redis_volume=volume, password=password, tls=tls)
        except ValueError as e:
            raise InvalidSpec(str(e)) from None

    def deploy(self, replicas: int | None = None, *, wait: bool = True, timeout: float = 180.0) -> Replicas:
        """Create or update the stack; `replicas` None keeps the running worker count."""
        c = self.cluster
        with c.translated(f"deploying stack {self.spec.name!r} in namespace {self.namespace!r}"):
            current = self._read(c.apps.read_namespaced_deployment, self.worker_deployment)
            wanted = (
                replicas
                if replicas is not None
                else (current.spec.replicas if current is not None else self.spec.replicas)
            )
            secret = self._read(c.core.read_namespaced_secret, km.redis_name(self.spec))
            password = None if secret is not None else pysecrets.token_hex(16)
            tls = None
            if (
                self.spec.tls
                and self._read(c.core.read_namespaced_secret, km.tls_secret_name(self.spec)) is None
            ):
                tls = issue(self._tls_hosts(), name=self.spec.name)
            objects = self.objects(wanted, password, tls)
            if not any(o["kind"] == "PersistentVolumeClaim" for o in objects):
                self.warn(
                    "Warning: no storage class or free volume for Redis: it keeps its data in an "
                    "emptyDir, so the queue and every result are lost when the Redis pod is deleted "
                    "or rescheduled (export results before that; give --storage-class or a volume)"
                )
            for obj in objects:
                self._apply(obj)
        return self.wait(timeout=timeout) if wait else self.replicas()

    def _apply(self, obj: dict[str, Any]) -> None:
        c, ns = self.cluster, self.namespace
        kind, name = obj["kind"], obj["metadata"]["name"]
        digest = spec_hash(obj)
        obj = {**obj, "metadata": {**obj["metadata"], "annotations": {km.SPEC_ANNOTATION: digest}}}
        read, create, replace = {
            "Secret": (c.core.read_namespaced_secret, c.core.create_namespaced_secret, None),
            "Service": (
                c.core.read_namespaced_service,
                c.core.create_namespaced_service,
                c.core.patch_namespaced_service,
            ),
            "PersistentVolumeClaim": (
                c.core.read_namespaced_persistent_volume_claim,
                c.core.create_namespaced_persistent_volume_claim,
                None,
            ),
            "Deployment": (
                c.apps.read_namespaced_deployment,
                c.apps.create_namespaced_deployment,
                c.apps.replace_namespaced_deployment,
            ),
        }[kind]
        existing = self._read(read, name)
        if existing is None:
            create(ns, obj)
            return
        if replace is None:  # the Secret and the claim are never changed once made
            return
        same = (existing.metadata.annotations or {}).get(km.SPEC_ANNOTATION) == digest
        if kind == "Deployment":
            if same:
                if existing.spec.replicas != obj["spec"]["replicas"]:
                    c.apps.patch_namespaced_deployment_scale(
                        name, ns, {"spec": {"replicas": obj["spec"]["replicas"]}}
                    )
                return
            obj["metadata"]["resourceVersion"] = existing.metadata.resource_version
            replace(name, ns, obj)
        elif not same:
            replace(name, ns, {"metadata": obj["metadata"], "spec": obj["spec"]})

    # --- replicas ------------------------------------------------------------------------------
    def _pods(self, component: str) -> list[Any]:
        with self.cluster.translated(f"listing pods in namespace {self.namespace!r}"):
            return list(
                self.cluster.core.list_namespaced_pod(
                    self.namespace, label_selector=self._selector(component)
                ).items
            )

    def _deployment(self) -> Any:
        with self.cluster.translated(f"reading deployment {self.worker_deployment!r}"):
            found = self._read(self.cluster.apps.read_namespaced_deployment, self.worker_deployment)
        if found is None:
            raise KubernetesUnavailable(
                f"stack {self.spec.name!r} is not deployed in namespace {self.namespace!r} "
                "(run `swarmrun up --backend kubernetes`)"
            )
        return found

    def replicas(self) -> Replicas:
        desired = int(self._deployment().spec.replicas or 0)
        ready = [p for p in self._pods("worker") if _ready(p)]
        per_node = Counter(p.spec.node_name or "?" for p in ready)
        return Replicas(len(ready), desired, tuple(Placement(n, k) for n, k in sorted(per_node.items())))

    def stopping(self) -> int:
        """Worker pods told to stop that are still running (finishing a chunk)."""
        return sum(1 for p in self._pods("worker") if p.metadata.deletion_timestamp is not None)

    def _failure(self) -> str | None:
        """A reason no waiting will fix: an image the node cannot get, a container config error."""
        for component in ("redis", "worker"):
            for pod in self._pods(component):
                if pod.metadata.deletion_timestamp is not None:
                    continue
                for status in pod.status.container_statuses or []:
                    waiting = status.state.waiting if status.state else None
                    if waiting is None:
                        continue
                    if waiting.reason in IMAGE_FAILURES:
                        raise ImageMissing(
                            f"{component} image {status.image!r} cannot be had on node "
                            f"{pod.spec.node_name}: {waiting.reason} (load it into the node's container "
                            "runtime or push it to a registry the nodes reach; --image-pull-policy)"
                        )
                    if waiting.reason in CONFIG_FAILURES:
                        return f"{component} pod {pod.metadata.name}: {waiting.reason}: {waiting.message}"
        return None

    def wait(self, timeout: float = 180.0) -> Replicas:
        """Wait until Redis and every desired worker are ready (and no extra one runs)."""
        deadline = time.monotonic() + timeout
        while True:
            failure = self._failure()
            if failure:
                raise KubernetesUnavailable(failure)
            current = self.replicas()
            redis_ready = any(_ready(p) for p in self._pods("redis"))
            if redis_ready and current.running == current.desired:
                return current
            if time.monotonic() > deadline:
                pending = [
                    c.message
                    for p in self._pods("worker")
                    for c in (p.status.conditions or [])
                    if c.type == "PodScheduled" and c.status == "False" and c.message
                ]
                raise KubernetesUnavailable(
                    f"workers did not become ready in {timeout:.0f}s: {current.running}/{current.desired} "
                    f"ready"
                    + ("" if redis_ready else ", Redis not ready")
                    + (f" ({pending[0]})" if pending else "")
                )
            time.sleep(0.5)

    def scale(self, replicas: int, *, wait: bool = True, timeout: float = 180.0) -> Replicas:
        """Set the worker count through the scale subresource; scale-down stops pods warm."""
        self._deployment()
        with self.cluster.translated(f"scaling {self.worker_deployment!r}"):
            self.cluster.apps.patch_namespaced_deployment_scale(
                self.worker_deployment, self.namespace, {"spec": {"replicas": replicas}}
            )
        return self.wait(timeout=timeout) if wait else self.replicas()

    # --- logs, redis, removal -----------------------------------------------------------------
    def _prefix(self, pod: Any) -> str:
        return f"{pod.metadata.name}@{pod.spec.node_name or '?'}"

    def logs(self, *, follow: bool = False, tail: int = 100) -> Iterator[str]:
        """Worker pod logs, each line prefixed by `pod@node`; `follow` also picks up new pods."""
        self._deployment()
        core = self.cluster.core
        if not follow:
            for pod in self._pods("worker"):
                with self.cluster.translated(f"reading the log of pod {pod.metadata.name}"):
                    text = core.read_namespaced_pod_log(pod.metadata.name, self.namespace, tail_lines=tail)
                for line in (text or "").splitlines():
                    yield f"{self._prefix(pod)} | {line}"
            return
        lines: queuelib.Queue[str] = queuelib.Queue()
        followed: set[str] = set()
        stop = threading.Event()

        def pump(pod: Any) -> None:
            prefix = self._prefix(pod)
            with contextlib.suppress(Exception):
                stream = core.read_namespaced_pod_log(
                    pod.metadata.name,
                    self.namespace,
                    follow=True,
                    tail_lines=tail,
                    _preload_content=False,
                )
                for raw in stream:
                    if stop.is_set():
                        break
                    for line in raw.decode(errors="replace").splitlines():
                        lines.put(f"{prefix} | {line}")

        next_scan = 0.0
        try:
            while True:
                if time.monotonic() >= next_scan:
                    for pod in self._pods("worker"):
                        name = pod.metadata.name
                        if name not in followed and pod.status.phase in ("Running", "Succeeded", "Failed"):
                            followed.add(name)
                            threading.Thread(target=pump, args=(pod,), daemon=True).start()
                    next_scan = time.monotonic() + 2.0
                with contextlib.suppress(queuelib.Empty):
                    yield lines.get(timeout=0.5)
        finally:
            stop.set()

    def _redis_pod(self) -> str:
        pods = [p for p in self._pods("redis") if _ready(p)]
        if not pods:
            raise RedisUnavailable(f"no ready Redis pod of stack {self.spec.name!r} in {self.namespace!r}")
        return str(pods[0].metadata.name)

    def port_forward(self) -> Any:
        """A local port forwarded to the Redis pod (re-resolved per connection); close it when done."""
        from swarmrun.backends.kubernetes.forward import PortForward

        self._redis_pod()
        return PortForward(self.cluster.core, self.namespace, self._redis_pod, REDIS_PORT)

    def _tls_hosts(self) -> list[str]:
        """The names Redis answers to: loopback (the CLI's port-forward) and the Service's DNS names."""
        service = km.redis_name(self.spec)
        return [
            "127.0.0.1",
            "localhost",
            service,
            f"{service}.{self.namespace}",
            f"{service}.{self.namespace}.svc",
            *self.spec.tls_hosts,
        ]

    def _tls(self) -> bool:
        """Whether the deployed Redis speaks only TLS (its Deployment says so)."""
        with self.cluster.translated(f"reading deployment {self.redis_deployment!r}"):
            current = self._read(self.cluster.apps.read_namespaced_deployment, self.redis_deployment)
        return current is not None and (current.metadata.labels or {}).get(km.TLS_LABEL) == "true"

    def _ca_path(self) -> str:
        """The CA certificate file to verify Redis with: `--redis-ca`, else read back from the Secret."""
        import base64
        import tempfile

        if self.ca_file:
            return self.ca_file
        with self.cluster.translated(f"reading secret {km.tls_secret_name(self.spec)!r}"):
            secret = self._read(self.cluster.core.read_namespaced_secret, km.tls_secret_name(self.spec))
        if secret is None or not (secret.data or {}).get(CA_SECRET):
            raise RedisUnavailable(
                f"stack {self.spec.name!r} speaks TLS but its Secret {km.tls_secret_name(self.spec)!r} "
                "holds no CA certificate: pass --redis-ca FILE"
            )
        ca = base64.b64decode(secret.data[CA_SECRET])
        directory = (self.home or Path(tempfile.gettempdir())) / "stacks"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"k8s-{self.namespace}-{self.spec.name}.ca.pem"
        if not path.exists() or path.read_bytes() != ca:
            path.write_bytes(ca)
        return str(path)

    def redis_url(self, port: int) -> str:
        url = with_password(f"redis://127.0.0.1:{port}/0", self.password())
        if self._tls():
            return with_ca("rediss" + url[len("redis") :], self._ca_path())
        return url

    def remove(self, *, volumes: bool = False, timeout: float = 180.0) -> None:
        """Remove the Deployments, Service and Secret (and the Redis claim with `volumes`)."""
        c, ns = self.cluster, self.namespace
        ApiException = c.k.client.exceptions.ApiException

        def delete(call: Callable[..., Any], name: str) -> None:
            try:
                # Not deserialised: 1.20 answers a Service deletion with a Status, not the Service.
                call(name, ns, propagation_policy="Background", _preload_content=False)
            except ApiException as e:
                if e.status != 404:
                    raise

        deadline = time.monotonic() + timeout
        with c.translated(f"removing stack {self.spec.name!r} from namespace {ns!r}"):
            # Workers first, while Redis still answers, so that they stop warm.
            delete(c.apps.delete_namespaced_deployment, self.worker_deployment)
            while self._pods("worker") and time.monotonic() < deadline:
                time.sleep(0.5)
            delete(c.apps.delete_namespaced_deployment, self.redis_deployment)
            delete(c.core.delete_namespaced_service, km.redis_name(self.spec))
            delete(c.core.delete_namespaced_secret, km.redis_name(self.spec))
            delete(c.core.delete_namespaced_secret, km.tls_secret_name(self.spec))
            while self._pods("redis") and time.monotonic() < deadline:
                time.sleep(0.5)
            if volumes:
                delete(c.core.delete_namespaced_persistent_volume_claim, km.claim_name(self.spec))


def _with_replicas(spec: WorkerSpec, replicas: int) -> WorkerSpec:
    from dataclasses import replace

    return replace(spec, replicas=replicas)


def _ready(pod: Any) -> bool:
    if pod.metadata.deletion_timestamp is not None or pod.status.phase != "Running":
        return False
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


_SUFFIXES = {
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
    "k": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
}


def _quantity_bytes(text: str) -> float:
    for suffix, factor in _SUFFIXES.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    try:
        return float(text)
    except ValueError:
        return 0.0
