"""`python -m tests.cleanup`: remove what interrupted test runs left on this Docker engine.

Every test session labels what it creates `swarmrun.test=<session>` and removes it at the end. A
run that is killed (a stopped CI job, a closed laptop) cannot, and its stacks and docker-in-docker
nodes come back with the engine. This removes everything labelled `swarmrun.test`, whatever the
session, so run it only when no test run is under way on this engine.
"""

from __future__ import annotations

import re
import sys

from swarmrun.backends.swarm import engine
from swarmrun.backends.swarm.stack import NAMESPACE_LABEL
from tests.cluster.harness import CLUSTER_LABEL
from tests.cluster.harness import remove as remove_cluster
from tests.swarm.conftest import TEST_LABEL, remove_labelled

TEST_STACK = re.compile(r"srt[0-9a-f]{12}")  # tests/swarm/conftest.py: Stack.name


def main() -> int:
    client = engine.connect()
    containers = client.api.containers(all=True, filters={"label": TEST_LABEL})
    clusters = {c["Labels"][CLUSTER_LABEL] for c in containers if CLUSTER_LABEL in c["Labels"]}
    for name in sorted(clusters):
        remove_cluster(client, name)
    services = client.services.list(filters={"label": TEST_LABEL})
    # Stacks deployed from stacks/swarmrun.yml carry no test label, only the tests' stack names.
    namespaces = {s.attrs["Spec"]["Labels"].get(NAMESPACE_LABEL, "") for s in client.services.list()}
    stacks = {name for name in namespaces if TEST_STACK.fullmatch(name)}
    for name in sorted(stacks):
        remove_labelled(client, f"{NAMESPACE_LABEL}={name}")
    remove_labelled(client, TEST_LABEL)
    print(
        f"removed {len(clusters)} test clusters, {len(stacks)} test stacks, {len(services)} other services, "
        f"{len(containers)} containers "
        f"and the networks, secrets, volumes and images labelled {TEST_LABEL}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
