"""The errors swarmrun raises, and the exit code the CLI maps each to.

Third-party exceptions (redis, docker, yaml) are translated into these at the adapter
boundary, so the CLI can print one line and exit with a documented code.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes of the `swarmrun` command, documented in the README."""

    OK = 0
    POINTS_FAILED = 1
    USAGE = 2
    BAD_SWEEP = 3
    REDIS_UNAVAILABLE = 4
    DOCKER_UNAVAILABLE = 5
    NOT_FOUND = 6
    KUBERNETES_UNAVAILABLE = 7
    ERROR = 10
    INTERRUPTED = 130


class SwarmrunError(Exception):
    """Base of every error swarmrun reports to a user."""

    exit_code: ExitCode = ExitCode.ERROR


class BadOption(SwarmrunError):
    """A command-line option's value cannot work (a results name with no format we write, ...)."""

    exit_code = ExitCode.USAGE


class SweepFileError(SwarmrunError):
    """A sweep file, an override or a placeholder is malformed; the message names the key and why."""

    exit_code = ExitCode.BAD_SWEEP


class TaskImportError(SweepFileError):
    """A task's `call: package.module:function` does not resolve to a callable."""


class RedisUnavailable(SwarmrunError):
    """Redis cannot be reached, refused the password, or the embedded server did not start."""

    exit_code = ExitCode.REDIS_UNAVAILABLE


class RedisAuthFailed(RedisUnavailable):
    """Redis answered but refused the password (or wants one): waiting will not help."""


class RedisTLSFailed(RedisAuthFailed):
    """Redis's TLS certificate does not verify against the CA given (or the CA file is unreadable)."""


class DockerUnavailable(SwarmrunError):
    """The Docker engine cannot be reached or refused a request."""

    exit_code = ExitCode.DOCKER_UNAVAILABLE


class NotASwarmManager(DockerUnavailable):
    """The Docker engine is not a manager of an active swarm."""


class InvalidSpec(SwarmrunError):
    """The worker spec cannot be rendered for the chosen backend (e.g. a constraint with no equivalent)."""

    exit_code = ExitCode.USAGE


class KubernetesUnavailable(SwarmrunError):
    """No Kubernetes cluster answers, the context or namespace does not exist, or RBAC refused."""

    exit_code = ExitCode.KUBERNETES_UNAVAILABLE


class SweepNotFound(SwarmrunError):
    """No sweep with this id (or id prefix) is known to this Redis."""

    exit_code = ExitCode.NOT_FOUND


class ImageBuildError(SwarmrunError):
    """Building, pushing or distributing the worker image failed."""


class ImageMissing(SwarmrunError):
    """The worker image the stack would run is not on the Docker engine."""

    exit_code = ExitCode.NOT_FOUND
