"""The swarm backend: the swarmrun stack as Swarm services, through the docker SDK.

`deploy` is idempotent: each service carries a hash of its spec (without the replica count) in a
label; an unchanged spec is left alone, a changed one is updated in place. The Redis password is
generated once, stored as a Docker secret and, for the CLI, in a file readable only by its owner
under `<home>/stacks/` (Docker cannot read a secret back). Pass `--redis-password-file` (or set
SWARMRUN_REDIS_PASSWORD_FILE) to drive a stack deployed from another machine or from the file.
With TLS (`up --tls`) the CA certificate is kept in the same state file (its key nowhere), the
server certificate and key only in Docker secrets; `redis_url` is then `rediss://` with the CA.
"""

from __future__ import annotations

import json
import os
import secrets as pysecrets
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.types import (
    DriverConfig,
    EndpointSpec,
    Mount,
    NetworkAttachmentConfig,
    Resources,
    RestartPolicy,
    SecretReference,
    ServiceMode,
    UpdateConfig,
)

from swarmrun.backends import Placement, Replicas
from swarmrun.backends.swarm import encryption, engine
from swarmrun.backends.swarm.distribute import registry_has, rejected_for_image, task_time
from swarmrun.backends.swarm.stack import (
    NAMESPACE_LABEL,
    ROLE_LABEL,
    SECRET,
    TLS_LABEL,
    StackConfig,
    service_plans,
)
from swarmrun.backends.tls import TLS_SECRETS, issue, server_hosts
from swarmrun.errors import DockerUnavailable, ImageMissing, RedisUnavailable, SwarmrunError
from swarmrun.settings import with_ca, with_password


def _sdk_kwargs(plan_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Turn a plain-data service plan into docker.types objects for `services.create/update`."""
    kw = dict(plan_kwargs)
    kw["networks"] = [NetworkAttachmentConfig(n["target"], aliases=n["aliases"]) for n in kw["networks"]]
    kw["secrets"] = [
        SecretReference(s["secret_id"], s["secret_name"], filename=s["filename"]) for s in kw["secrets"]
    ]
    kw["mode"] = ServiceMode("replicated", replicas=kw["mode"]["replicas"])
    ports = [
        {
            "Protocol": p["protocol"],
            "TargetPort": p["target"],
            "PublishedPort": p["published"],
            "PublishMode": p["mode"],
        }
        for p in kw["endpoint_spec"]["ports"]
    ]
    kw["endpoint_spec"] = EndpointSpec(mode=kw["endpoint_spec"]["mode"], ports=ports or None)
    kw["restart_policy"] = RestartPolicy(**kw["restart_policy"])
    if "mounts" in kw:
        kw["mounts"] = [
            Mount(**{**m, "driver_config": DriverConfig(**m["driver_config"])} if "driver_config" in m else m)
            for m in kw["mounts"]
        ]
    if "resources" in kw:
        kw["resources"] = Resources(**kw["resources"])
    if "update_config" in kw:
        kw["update_config"] = UpdateConfig(**kw["update_config"])
    return kw


class SwarmBackend:
    """Workers as the replicated service `{stack}_worker`, next to `{stack}_redis`."""

    name = "swarm"

    def __init__(
        self,
        client: docker.DockerClient,
        config: StackConfig,
        *,
        home: Path,
        environ: Mapping[str, str] = os.environ,
        extra_labels: Mapping[str, str] | None = None,
        ca_file: str | None = None,
    ) -> None:
        self.client = client
        self.ca_file = ca_file or environ.get("SWARMRUN_REDIS_CA")
        self.config = config
        self.home = home
        self.environ = environ
        self.extra_labels = dict(extra_labels or {})
        # The latest worker task each node rejected for lack of the image, seen while waiting
        # for the workers (`_note_rejections`).
        self.rejected: dict[str, dict[str, Any]] = {}
        engine.require_manager(client)

    # --- names and state ---------------------------------------------------------------------
    @property
    def worker_service(self) -> str:
        return f"{self.config.name}_worker"

    @property
    def redis_service(self) -> str:
        return f"{self.config.name}_redis"

    def _state_file(self) -> Path:
        cluster = (self.client.info().get("Swarm") or {}).get("Cluster", {}).get("ID", "local")
        return self.home / "stacks" / f"{cluster[:12]}-{self.config.name}.json"

    def _password(self, *, create: bool) -> str:
        file = self.environ.get("SWARMRUN_REDIS_PASSWORD_FILE")
        if file:
            try:
                return Path(file).read_text().strip()
            except OSError as e:
                raise SwarmrunError(f"cannot read SWARMRUN_REDIS_PASSWORD_FILE={file}: {e}") from e
        state = self._state()
        if "password" in state:
            return str(state["password"])
        if not create:
            raise RedisUnavailable(
                f"the Redis password of stack {self.config.name!r} is not known on this machine: "
                "pass --redis-password-file (or set SWARMRUN_REDIS_PASSWORD_FILE)"
            )
        password = pysecrets.token_hex(16)
        self._save_state({**state, "password": password, "created": time.time()})
        return password

    def _state(self) -> dict[str, Any]:
        path = self._state_file()
        return dict(json.loads(path.read_text())) if path.exists() else {}

    def _save_state(self, state: dict[str, Any]) -> None:
        """The stack's state file, readable only by its owner (it holds the password)."""
        path = self._state_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(state, f)

    def _ca_file(self) -> Path:
        """The CA certificate a TLS stack's Redis is verified against, from the stack's state."""
        if self.ca_file:
            return Path(self.ca_file)
        ca = self._state().get("ca")
        if not ca:
            raise RedisUnavailable(
                f"stack {self.config.name!r} speaks TLS and its CA certificate is not known on this "
                "machine: pass --redis-ca FILE (or set SWARMRUN_REDIS_CA)"
            )
        path = self._state_file().with_suffix(".ca.pem")
        if not path.exists() or path.read_text() != ca:
            path.write_text(ca)
        return path

    def _tls_secrets(self) -> dict[str, tuple[str, str]]:
        """The TLS secrets of the stack (file name -> (id, name)), made with a new CA if none exist."""
        names = {file: f"{self.config.name}_{file}" for file in TLS_SECRETS}
        found = {s.name: s for s in self.client.secrets.list() if s.name in names.values()}
        if found and len(found) < len(names):
            raise DockerUnavailable(
                f"stack {self.config.name!r} has only some of its TLS secrets ({', '.join(sorted(found))}): "
                "remove the stack with `swarmrun down` and deploy it again"
            )
        if not found:
            managers = [
                str(n.attrs.get("Status", {}).get("Addr", ""))
                for n in self.client.nodes.list(filters={"role": "manager"})
            ]
            hosts = server_hosts(
                self.config.name,
                engine_host=engine.engine_host(self.environ),
                managers=[m for m in managers if m and m != "0.0.0.0"],
                extra=self.config.tls_hosts,
            )
            material = issue(hosts, name=self.config.name)
            self._save_state({**self._state(), "ca": material.ca.decode()})
            for file, data in material.secrets().items():
                found[names[file]] = self.client.secrets.create(
                    name=names[file], data=data, labels=self._labels()
                )
        return {file: (found[name].id, name) for file, name in names.items()}

    def _labels(self) -> dict[str, str]:
        return {NAMESPACE_LABEL: self.config.name, **self.extra_labels}

    def exists(self) -> bool:
        with engine.translated("listing services"):
            return bool(self.client.services.list(filters={"label": f"{NAMESPACE_LABEL}={self.config.name}"}))

    # --- deploy --------------------------------------------------------------------------------
    def _check_port_free(self) -> None:
        """Another stack's Redis on our port would answer in place of ours (with its own password)."""
        for service in self.client.services.list(filters={"label": f"{ROLE_LABEL}=redis"}):
            spec = service.attrs["Spec"]
            if spec.get("Labels", {}).get(NAMESPACE_LABEL) == self.config.name:
                continue
            ports = spec.get("EndpointSpec", {}).get("Ports", [])
            if any(str(p.get("PublishedPort")) == str(self.config.redis_port) for p in ports):
                owner = spec.get("Labels", {}).get(NAMESPACE_LABEL, service.name)
                raise DockerUnavailable(
                    f"port {self.config.redis_port} is already published by the Redis of "
                    f"stack {owner!r}: choose another --redis-port"
                )

    def deploy(self, replicas: int | None = None, *, wait: bool = True) -> Replicas:
        """Create or update the stack; `replicas` None keeps the running worker count."""
        config = self.config
        with engine.translated(f"deploying stack {config.name!r}"):
            self._check_port_free()
            try:
                self.client.images.get(config.image)
            except docker.errors.ImageNotFound:
                if not registry_has(self.client, config.image):  # pushed to a registry, the nodes pull it
                    raise ImageMissing(
                        f"worker image {config.image!r} is not on this Docker engine, nor in a registry it "
                        f"can reach: build it with `swarmrun image build --tag {config.image}` (for several "
                        "nodes, then `swarmrun image distribute` or `swarmrun image push`)"
                    ) from None
            network = (
                self._network()
            )  # first: an engine that cannot encrypt it refuses before anything exists
            secret_name = f"{config.name}_{SECRET}"
            existing = self.client.secrets.list(filters={"name": secret_name})
            secret = next((s for s in existing if s.name == secret_name), None)
            if secret is None:
                password = self._password(create=True)
                secret = self.client.secrets.create(
                    name=secret_name, data=password.encode(), labels=self._labels()
                )
            else:
                self._password(create=False)
            tls_secrets = self._tls_secrets() if config.tls else None
            current = self._current_replicas()
            wanted = (
                replicas if replicas is not None else (current if current is not None else config.replicas)
            )
            plans = service_plans(
                replace(config, replicas=wanted),
                network=network.id,
                secret_id=secret.id,
                secret_name=secret_name,
                extra_labels=self.extra_labels,
                tls_secrets=tls_secrets,
            )
            for plan in plans:
                self._apply(plan.name, plan.kwargs, plan.spec_hash)
        return self.wait() if wait else self.replicas()

    def _network(self) -> Any:
        """The stack's overlay network (IPsec-encrypted with `encrypt_network`), made if missing."""
        name = f"{self.config.name}_net"
        found = [n for n in self.client.networks.list(names=[name]) if n.name == name]
        if not found:
            options = {"encrypted": ""} if self.config.encrypt_network else None
            if options:
                encryption.require(self.client, self.config.image, self._labels())
            return self.client.networks.create(
                name, driver="overlay", labels=self._labels(), scope="swarm", options=options
            )
        network = found[0]
        encrypted = "encrypted" in (network.attrs.get("Options") or {})
        if encrypted != self.config.encrypt_network:
            raise DockerUnavailable(
                f"the network {name} of stack {self.config.name!r} is {'' if encrypted else 'not '}encrypted "
                "and a network cannot change that: `swarmrun down` the stack first to "
                f"{'drop' if encrypted else 'add'} --encrypt-network"
            )
        return network

    def _current_replicas(self) -> int | None:
        try:
            service = self.client.services.get(self.worker_service)
        except docker.errors.NotFound:
            return None
        return int(service.attrs["Spec"]["Mode"]["Replicated"]["Replicas"])

    def _apply(self, name: str, kwargs: dict[str, Any], spec_hash: str) -> None:
        try:
            service = self.client.services.get(name)
        except docker.errors.NotFound:
            self.client.services.create(**_sdk_kwargs(kwargs))
            return
        spec = service.attrs["Spec"]
        same_spec = spec.get("Labels", {}).get("swarmrun.spec") == spec_hash
        replicas = kwargs["mode"]["replicas"]
        if same_spec:
            if spec["Mode"]["Replicated"]["Replicas"] != replicas:
                service.reload()
                service.scale(replicas)
            return
        service.reload()
        update = _sdk_kwargs(kwargs)
        update.pop("name")
        service.update(**update)

    # --- replicas ------------------------------------------------------------------------------
    def _service(self) -> Any:
        try:
            return self.client.services.get(self.worker_service)
        except docker.errors.NotFound:
            raise DockerUnavailable(
                f"stack {self.config.name!r} is not deployed (run `swarmrun up`)"
            ) from None

    def replicas(self) -> Replicas:
        with engine.translated("reading worker tasks"):
            service = self._service()
            desired = int(service.attrs["Spec"]["Mode"]["Replicated"]["Replicas"])
            tasks = service.tasks(filters={"desired-state": "running"})
            running = [t for t in tasks if t["Status"]["State"] == "running"]
            nodes = {n.id: n.attrs["Description"]["Hostname"] for n in self.client.nodes.list()}
        per_node = Counter(nodes.get(t.get("NodeID", ""), "?") for t in running)
        return Replicas(len(running), desired, tuple(Placement(n, c) for n, c in sorted(per_node.items())))

    def stopping(self) -> int:
        """Worker tasks told to shut down whose container still runs (finishing a chunk)."""
        with engine.translated("reading worker tasks"):
            tasks = self._service().tasks(filters={"desired-state": "shutdown"})
        return sum(1 for t in tasks if t["Status"]["State"] == "running")

    def wait(self, timeout: float = 180.0) -> Replicas:
        """Wait until every desired worker task runs (and none is still starting)."""
        deadline = time.monotonic() + timeout
        while True:
            current = self.replicas()
            self._note_rejections()
            if current.running == current.desired:
                return current
            if time.monotonic() > deadline:
                raise DockerUnavailable(
                    f"workers did not converge in {timeout:.0f}s: {current.running}/{current.desired} running"
                )
            time.sleep(0.5)

    def _note_rejections(self) -> None:
        """Remember the latest worker task each node rejected for lack of the image (a node
        rejects one every few seconds): the swarm prunes a replica slot's old tasks, so `up`
        warns from these too (`nodes_without_image`)."""
        with engine.translated("reading worker tasks"):
            tasks = self._service().tasks()
        for t in filter(rejected_for_image, tasks):
            node = t.get("NodeID", "")
            self.rejected[node] = max(t, self.rejected.get(node, t), key=task_time)

    def scale(self, replicas: int, *, wait: bool = True) -> Replicas:
        with engine.translated(f"scaling {self.worker_service}"):
            service = self._service()
            # Not service.scale(): it re-sends the spec read with the engine's defaults inserted
            # (Placement {}, Resources {}, ...), which differs from the stored one, so the engine
            # restarts every running worker. Send back the stored spec with only the count changed.
            current = self.client.api.inspect_service(service.id)
            spec = current["Spec"]
            self.client.api.update_service(
                service.id,
                current["Version"]["Index"],
                task_template=spec["TaskTemplate"],
                name=spec["Name"],
                labels=spec.get("Labels"),
                mode={"Replicated": {"Replicas": replicas}},
                update_config=spec.get("UpdateConfig"),
                rollback_config=spec.get("RollbackConfig"),
                endpoint_spec=spec.get("EndpointSpec"),
            )
        return self.wait() if wait else self.replicas()

    # --- logs, redis, removal -----------------------------------------------------------------
    def _task_names(self) -> dict[str, str]:
        """Task id -> `worker.<slot>@<node>`, as `docker service logs` names them."""
        nodes = {n.id: n.attrs["Description"]["Hostname"] for n in self.client.nodes.list()}
        return {
            t["ID"]: f"worker.{t.get('Slot', '?')}@{nodes.get(t.get('NodeID', ''), '?')}"
            for t in self._service().tasks()
        }

    def logs(self, *, follow: bool = False, tail: int = 100) -> Iterator[str]:
        with engine.translated("reading worker logs"):
            service = self._service()
            names = self._task_names()
            stream = service.logs(stdout=True, stderr=True, follow=follow, tail=tail, details=True)
            buffer = b""
            for chunk in stream:
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    task, message = _log_line(line.decode(errors="replace"))
                    if task and task not in names:
                        names = self._task_names()
                    yield f"{names.get(task, task[:12])} | {message}" if task else message

    def redis_url(self) -> str:
        """The URL the CLI reaches the stack's Redis at: the manager's host and the published port."""
        with engine.translated("reading the Redis service"):
            try:
                service = self.client.services.get(self.redis_service)
            except docker.errors.NotFound:
                raise RedisUnavailable(
                    f"stack {self.config.name!r} is not deployed (run `swarmrun up`)"
                ) from None
            ports = service.attrs["Spec"].get("EndpointSpec", {}).get("Ports", [])
            tls = service.attrs["Spec"].get("Labels", {}).get(TLS_LABEL) == "true"
        if not ports:
            raise RedisUnavailable(f"the Redis service of stack {self.config.name!r} publishes no port")
        scheme = "rediss" if tls else "redis"
        url = f"{scheme}://{engine.engine_host(self.environ)}:{ports[0]['PublishedPort']}/0"
        url = with_password(url, self._password(create=False))
        return with_ca(url, str(self._ca_file())) if tls else url

    def remove(self, *, volumes: bool = False, timeout: float = 120.0) -> None:
        """Remove the services, network and secret (and the Redis volume with `volumes`)."""
        name = self.config.name
        label = f"{NAMESPACE_LABEL}={name}"
        with engine.translated(f"removing stack {name!r}"):
            deadline = time.monotonic() + timeout
            # Workers first, while Redis still answers: a worker whose Redis has gone retries for
            # minutes, so its warm stop would end only with the kill after the grace period.
            services = self.client.services.list(filters={"label": label})
            workers = {s.id for s in services if s.name == self.worker_service}
            for service in sorted(services, key=lambda s: s.id not in workers):
                service.remove()
                if service.id in workers:
                    while time.monotonic() < deadline and any(
                        t["ServiceID"] == service.id and t["Status"]["State"] == "running"
                        for t in self.client.api.tasks()
                    ):
                        time.sleep(0.5)
            # The raw list: `containers.list()` inspects each container it lists and raises
            # NotFound for one that Swarm removes in between, which is what happens here.
            while (
                self.client.api.containers(all=True, filters={"label": label}) and time.monotonic() < deadline
            ):
                time.sleep(0.5)
            for network in self.client.networks.list(filters={"label": label}):
                _retry_remove(network, deadline)
            for secret in self.client.secrets.list(filters={"label": label}):
                secret.remove()
            if volumes:
                for volume in self.client.volumes.list(filters={"label": label}):
                    _retry_remove(volume, deadline)
        if volumes:
            self._state_file().unlink(missing_ok=True)
            self._state_file().with_suffix(".ca.pem").unlink(missing_ok=True)


def _retry_remove(resource: Any, deadline: float) -> None:
    while True:
        try:
            resource.remove()
            return
        except docker.errors.NotFound:
            return
        except docker.errors.APIError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _log_line(raw: str) -> tuple[str, str]:
    """`details=True` lines start with `k=v,k=v ` labels: (task id, message)."""
    head, sep, message = raw.partition(" ")
    if not sep or "com.docker.swarm" not in head:
        return "", raw
    labels = dict(part.split("=", 1) for part in head.split(",") if "=" in part)
    return labels.get("com.docker.swarm.task.id", ""), message
