"""The committed stacks/swarmrun.yml is exactly what `python -m swarmrun.backends.swarm.stack` renders."""

from __future__ import annotations

from swarmrun.backends.swarm.stack import render, template_config
from tests.conftest import ROOT


def test_committed_stack_file_is_the_rendered_template() -> None:
    assert (ROOT / "stacks" / "swarmrun.yml").read_text() == render(template_config())


def test_secret_file_defaults_beside_the_stacks_directory() -> None:
    # Compose and `docker stack deploy` resolve a relative file beside the stack file (stacks/):
    # the README writes redis_password at the checkout's top, one level up.
    assert "file: ${SWARMRUN_REDIS_PASSWORD_FILE:-../redis_password}" in render(template_config())
