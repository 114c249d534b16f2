"""A connection to a Kubernetes cluster and namespace, read as kubectl reads it, with errors in one line.

The cluster is the one kubectl would use: `KUBECONFIG` (or ~/.kube/config) and its current
context, `context` to pick another, the in-cluster service account when there is no file. The
namespace is the one given, else the context's, else `default`. The official `kubernetes` client
is an extra (`pip install 'swarmrun[kubernetes]'`): without it, one line says so.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import Any

from swarmrun.errors import KubernetesUnavailable

INSTALL_HINT = "the Kubernetes backend needs the kubernetes client: pip install 'swarmrun[kubernetes]'"


def _client() -> Any:
    try:
        import kubernetes
        import kubernetes.client
        import kubernetes.config
    except ImportError:
        raise KubernetesUnavailable(INSTALL_HINT) from None
    return kubernetes


def _api_message(e: Any) -> str:
    """The `message` of an API error's JSON body (e.g. RBAC's `... is forbidden: User ...`)."""
    try:
        return str(json.loads(e.body)["message"])
    except (TypeError, ValueError, KeyError):
        return str(e.reason or e)


class Cluster:
    """A connection to one cluster and namespace, as kubectl would read it."""

    def __init__(self, *, context: str | None = None, namespace: str | None = None) -> None:
        k = _client()
        self.k = k
        configuration = k.client.Configuration()
        source = ""
        try:
            kubeconfig = os.environ.get("KUBECONFIG", "")
            default = os.path.expanduser("~/.kube/config")
            has_file = any(os.path.exists(p) for p in kubeconfig.split(os.pathsep) if p) or (
                not kubeconfig and os.path.exists(default)
            )
            if has_file:
                # Read KUBECONFIG now (the client reads it once, when first imported).
                config_file = kubeconfig or default
                contexts, current = k.config.list_kube_config_contexts(config_file=config_file)
                names = [c["name"] for c in contexts]
                if context is not None and context not in names:
                    raise KubernetesUnavailable(
                        f"no context {context!r} in the Kubernetes configuration "
                        f"({kubeconfig or default}); contexts: {', '.join(names) or 'none'}"
                    )
                chosen = next(c for c in contexts if c["name"] == (context or current["name"]))
                k.config.load_kube_config(
                    config_file=config_file, context=chosen["name"], client_configuration=configuration
                )
                namespace = namespace or chosen["context"].get("namespace")
                source = f"context {chosen['name']}"
            elif context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
                k.config.load_incluster_config(client_configuration=configuration)
                with (
                    contextlib.suppress(OSError),
                    open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f,
                ):
                    namespace = namespace or f.read().strip()
                source = "in-cluster service account"
            else:
                raise KubernetesUnavailable(
                    "no Kubernetes configuration: set KUBECONFIG or create ~/.kube/config "
                    "(or run inside a cluster)"
                )
        except k.config.ConfigException as e:
            raise KubernetesUnavailable(f"cannot read the Kubernetes configuration: {e}") from None
        except (StopIteration, KeyError):
            raise KubernetesUnavailable("the Kubernetes configuration has no current context") from None
        configuration.retries = 1
        if not configuration.verify_ssl:  # the kubeconfig says insecure-skip-tls-verify: kubectl is quiet
            import warnings

            import urllib3

            warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
        self.configuration = configuration
        self.source = source
        self.server = str(configuration.host)
        self.namespace = namespace or "default"
        self.api = k.client.ApiClient(configuration)
        self.core = k.client.CoreV1Api(self.api)
        self.apps = k.client.AppsV1Api(self.api)
        self.storage = k.client.StorageV1Api(self.api)

    @contextlib.contextmanager
    def translated(self, what: str) -> Iterator[None]:
        """API and connection errors while doing `what` as one-line errors."""
        import urllib3

        ApiException = self.k.client.exceptions.ApiException
        try:
            yield
        except ApiException as e:
            if e.status == 403:
                raise KubernetesUnavailable(f"Kubernetes refused {what}: {_api_message(e)}") from None
            if e.status == 401:
                raise KubernetesUnavailable(
                    f"Kubernetes at {self.server} did not accept our credentials ({self.source}) {what}"
                ) from None
            raise KubernetesUnavailable(f"Kubernetes failed {what}: {_api_message(e)}") from None
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise KubernetesUnavailable(
                f"no Kubernetes API server answers at {self.server} ({self.source}): {type(e).__name__}"
            ) from None

    def check(self, *, timeout: float = 5.0) -> None:
        """The API server answers and the namespace exists (one line otherwise)."""
        ApiException = self.k.client.exceptions.ApiException
        with self.translated("reading the server version"):
            self.k.client.VersionApi(self.api).get_code(_request_timeout=timeout)
        with self.translated(f"reading namespace {self.namespace!r}"):
            try:
                self.core.read_namespace(self.namespace, _request_timeout=timeout)
            except ApiException as e:
                if e.status == 404:
                    raise KubernetesUnavailable(
                        f"namespace {self.namespace!r} does not exist on {self.server}: "
                        f"create it (kubectl create namespace {self.namespace}) or pass --namespace"
                    ) from None
                if e.status != 403:  # may not read namespaces: the namespaced calls will tell
                    raise


def cluster_answers(*, context: str | None = None, timeout: float = 3.0) -> tuple[bool, str]:
    """For `--backend auto`: whether a cluster answers, and what was found (a short phrase)."""
    try:
        cluster = Cluster(context=context)
        with cluster.translated("reading the server version"):
            cluster.k.client.VersionApi(cluster.api).get_code(_request_timeout=timeout)
    except KubernetesUnavailable as e:
        return False, str(e)
    return True, f"a Kubernetes cluster answers at {cluster.server} ({cluster.source})"
