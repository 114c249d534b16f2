"""One worker spec, three renderings: the compose file, the Swarm service specs, Kubernetes objects."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarmrun.backends.swarm.stack import StackConfig, definition, render, service_plans, template_config
from swarmrun.backends.workerspec import (
    WorkerSpec,
    check,
    grace_warning,
    placement_terms,
    swarm_constraints,
    toleration,
)

ROOT = Path(__file__).resolve().parents[2]


def test_stack_config_is_the_worker_spec() -> None:
    assert StackConfig is WorkerSpec


def test_committed_compose_file_is_the_rendered_spec() -> None:
    assert (ROOT / "stacks" / "swarmrun.yml").read_text() == render(template_config())


def test_node_labels_become_swarm_constraints_in_file_and_service_spec() -> None:
    spec = WorkerSpec(constraints=("node.hostname==a",), node_labels=(("gpu", "true"),))
    assert swarm_constraints(spec) == ["node.hostname==a", "node.labels.gpu==true"]
    deploy = definition(spec)["services"]["worker"]["deploy"]
    assert deploy["placement"]["constraints"] == ["node.hostname==a", "node.labels.gpu==true"]
    plans = {p.key: p for p in service_plans(spec, network="n", secret_id="s", secret_name="x")}
    assert plans["worker"].kwargs["constraints"] == ["node.hostname==a", "node.labels.gpu==true"]
    assert "constraints" not in plans["redis"].kwargs or plans["redis"].kwargs["constraints"] == [
        "node.role == manager"
    ]


def test_placement_terms_translate_swarm_constraints() -> None:
    spec = WorkerSpec(
        constraints=("node.labels.zone==a", "node.hostname != n2", "node.platform.arch==x86_64"),
        node_labels=(("gpu", "true"),),
    )
    terms = placement_terms(spec)
    assert dict(terms.node_selector) == {"zone": "a", "kubernetes.io/arch": "x86_64", "gpu": "true"}
    assert terms.not_in == (("kubernetes.io/hostname", "n2"),)


@pytest.mark.parametrize("constraint", ["node.role==manager", "node.id==abc", "gibberish"])
def test_constraints_without_kubernetes_equivalent_are_refused(constraint: str) -> None:
    with pytest.raises(ValueError, match="constraint"):
        placement_terms(WorkerSpec(constraints=(constraint,)))


def test_tolerations() -> None:
    assert toleration("gpu=true:NoSchedule") == {
        "key": "gpu",
        "operator": "Equal",
        "value": "true",
        "effect": "NoSchedule",
    }
    assert toleration("spot:NoExecute") == {"key": "spot", "operator": "Exists", "effect": "NoExecute"}
    assert toleration("spot") == {"key": "spot", "operator": "Exists"}
    with pytest.raises(ValueError, match="effect"):
        toleration("gpu=true:Sometimes")
    with pytest.raises(ValueError, match="toleration"):
        toleration("=x")


def test_check() -> None:
    check(WorkerSpec())
    assert grace_warning(WorkerSpec(), 3) is None
    assert "longer than a chunk" in (grace_warning(WorkerSpec(stop_grace_period=3), 3) or "")
    with pytest.raises(ValueError, match="pull policy"):
        check(WorkerSpec(image_pull_policy="Sometimes"))
    with pytest.raises(ValueError, match="toleration"):
        check(WorkerSpec(tolerations=("a:B",)))
