"""Worker mounts in Docker's own `--mount` syntax, and their renderings. Pure.

`parse("type=volume,source=data,target=/data,volume-driver=local,volume-opt=type=nfs")` gives a
`Mount`, a plain frozen value that every backend renders: `compose()` for the stack file (the
long volume syntax, plus a top-level volume for driver options), `sdk()` for the docker SDK's
`docker.types.Mount` keyword arguments (`swarmrun up`), and back with `from_compose`, so the
stack file and `up` come from one definition. A spec Docker would refuse is a `MountError`.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from swarmrun.errors import ExitCode, SwarmrunError

TYPES = ("bind", "volume", "tmpfs")
PROPAGATIONS = ("rprivate", "private", "rshared", "shared", "rslave", "slave")
_KEYS = {
    "type": "type",
    "source": "source",
    "src": "source",
    "target": "target",
    "destination": "target",
    "dst": "target",
    "readonly": "readonly",
    "ro": "readonly",
    "volume-driver": "volume-driver",
    "volume-opt": "volume-opt",
    "volume-label": "volume-label",
    "volume-nocopy": "volume-nocopy",
    "bind-propagation": "bind-propagation",
    "tmpfs-size": "tmpfs-size",
    "tmpfs-mode": "tmpfs-mode",
    "consistency": "consistency",
}
_TRUE, _FALSE = ("", "1", "true"), ("0", "false")


class MountError(SwarmrunError):
    """A `--mount` spec Docker would refuse; the message names the spec and why."""

    exit_code = ExitCode.BAD_SWEEP


@dataclass(frozen=True)
class Mount:
    """One mount of every worker container, as `docker service create --mount` takes it.

    `type` bind (a host path, the same on every node), volume (a named volume, created on each
    node by its driver: `local`, or e.g. `local` with NFS options) or tmpfs (memory). Options
    that belong to another type are refused by `validate`. A backend-neutral value: the
    Kubernetes renderer maps bind to hostPath, volume to a PVC or NFS volume, tmpfs to emptyDir.
    """

    type: str
    target: str
    source: str | None = None
    readonly: bool = False
    volume_driver: str | None = None
    volume_options: tuple[tuple[str, str], ...] = ()
    volume_labels: tuple[tuple[str, str], ...] = ()
    volume_nocopy: bool = False
    bind_propagation: str | None = None
    tmpfs_size: int | None = None
    tmpfs_mode: int | None = None

    def validate(self, spec: str = "") -> Mount:
        where = f"--mount {spec!r}: " if spec else "mount: "
        if self.type not in TYPES:
            raise MountError(f"{where}type must be bind, volume or tmpfs, got {self.type!r}")
        if not self.target or not self.target.startswith("/"):
            raise MountError(f"{where}target must be an absolute path in the container, got {self.target!r}")
        if self.target == "/":
            raise MountError(f"{where}cannot mount over /")
        if self.type == "bind" and (not self.source or not self.source.startswith("/")):
            raise MountError(f"{where}a bind mount needs an absolute host path as source")
        if self.type == "tmpfs" and self.source:
            raise MountError(f"{where}a tmpfs mount takes no source")
        if self.type != "volume" and (
            self.volume_driver or self.volume_options or self.volume_labels or self.volume_nocopy
        ):
            raise MountError(f"{where}volume-* options need type=volume")
        if self.type == "volume" and (self.volume_driver or self.volume_options) and not self.source:
            raise MountError(f"{where}volume-driver and volume-opt need a named volume (source=NAME)")
        if self.type != "bind" and self.bind_propagation:
            raise MountError(f"{where}bind-propagation needs type=bind")
        if self.bind_propagation and self.bind_propagation not in PROPAGATIONS:
            raise MountError(f"{where}bind-propagation must be one of {', '.join(PROPAGATIONS)}")
        if self.type != "tmpfs" and (self.tmpfs_size is not None or self.tmpfs_mode is not None):
            raise MountError(f"{where}tmpfs-size and tmpfs-mode need type=tmpfs")
        return self

    # --- renderings ---------------------------------------------------------------------------
    def compose(self) -> tuple[dict[str, Any], tuple[str, dict[str, Any]] | None]:
        """(the service's long-syntax volume entry, a top-level volume `(name, spec)` or None)."""
        entry: dict[str, Any] = {"type": self.type}
        if self.source:
            entry["source"] = self.source
        entry["target"] = self.target
        if self.readonly:
            entry["read_only"] = True
        if self.volume_nocopy:
            entry["volume"] = {"nocopy": True}
        if self.bind_propagation:
            entry["bind"] = {"propagation": self.bind_propagation}
        tmpfs = {k: v for k, v in (("size", self.tmpfs_size), ("mode", self.tmpfs_mode)) if v is not None}
        if tmpfs:
            entry["tmpfs"] = tmpfs
        top: tuple[str, dict[str, Any]] | None = None
        if self.type == "volume" and self.source:
            # `name:` keeps the volume's own name (a stack would prefix it), as `up` does.
            spec: dict[str, Any] = {"name": self.source}
            if self.volume_driver:
                spec["driver"] = self.volume_driver
            if self.volume_options:
                spec["driver_opts"] = dict(self.volume_options)
            if self.volume_labels:
                spec["labels"] = dict(self.volume_labels)
            top = (self.source, spec)
        return entry, top

    @classmethod
    def from_compose(cls, entry: Mapping[str, Any], volumes: Mapping[str, Any] | None = None) -> Mount:
        """The inverse of `compose()`, reading the top-level `volumes:` of the same file."""
        top = dict((volumes or {}).get(entry.get("source", ""), None) or {})
        return cls(
            type=str(entry["type"]),
            target=str(entry["target"]),
            source=entry.get("source"),
            readonly=bool(entry.get("read_only", False)),
            volume_driver=top.get("driver"),
            volume_options=tuple((str(k), str(v)) for k, v in (top.get("driver_opts") or {}).items()),
            volume_labels=tuple((str(k), str(v)) for k, v in (top.get("labels") or {}).items()),
            volume_nocopy=bool((entry.get("volume") or {}).get("nocopy", False)),
            bind_propagation=(entry.get("bind") or {}).get("propagation"),
            tmpfs_size=(entry.get("tmpfs") or {}).get("size"),
            tmpfs_mode=(entry.get("tmpfs") or {}).get("mode"),
        ).validate()

    def sdk(self) -> dict[str, Any]:
        """Keyword arguments of `docker.types.Mount` (`driver_config` as a plain dict)."""
        kwargs: dict[str, Any] = {
            "target": self.target,
            "source": self.source or "",
            "type": self.type,
            "read_only": self.readonly,
        }
        if self.bind_propagation:
            kwargs["propagation"] = self.bind_propagation
        if self.volume_nocopy:
            kwargs["no_copy"] = True
        if self.volume_labels:
            kwargs["labels"] = dict(self.volume_labels)
        if self.volume_driver or self.volume_options:
            kwargs["driver_config"] = {
                "name": self.volume_driver or "local",
                "options": dict(self.volume_options) or None,
            }
        if self.tmpfs_size is not None:
            kwargs["tmpfs_size"] = self.tmpfs_size
        if self.tmpfs_mode is not None:
            kwargs["tmpfs_mode"] = self.tmpfs_mode
        return kwargs


def _bool(spec: str, key: str, value: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise MountError(f"--mount {spec!r}: {key} takes true or false, got {value!r}")


def _size(spec: str, value: str) -> int:
    units = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
    text = value.strip().lower()
    number, unit = text.rstrip("kmgb"), text[len(text.rstrip("kmgb")) :].rstrip("b")
    if not number.isdigit() or unit not in units:
        raise MountError(f"--mount {spec!r}: tmpfs-size must be bytes such as 64m, got {value!r}")
    return int(number) * units[unit]


def parse(spec: str) -> Mount:
    """A `--mount` value, read as Docker reads it (CSV fields `key=value`; quote fields with commas)."""
    try:
        fields = next(csv.reader([spec]), [])
    except csv.Error as e:
        raise MountError(f"--mount {spec!r}: {e}") from None
    values: dict[str, Any] = {"type": "volume"}
    options: list[tuple[str, str]] = []
    labels: list[tuple[str, str]] = []
    for raw in fields:
        key, eq, value = raw.strip().partition("=")
        name = _KEYS.get(key.lower())
        if name is None:
            raise MountError(f"--mount {spec!r}: unknown key {key!r}")
        if not eq and name not in ("readonly", "volume-nocopy"):
            raise MountError(f"--mount {spec!r}: {key} needs a value ({key}=...)")
        if name == "volume-opt" or name == "volume-label":
            k, eq2, v = value.partition("=")
            if not k or not eq2:
                raise MountError(f"--mount {spec!r}: {key} must be {key}=NAME=VALUE, got {value!r}")
            (options if name == "volume-opt" else labels).append((k, v))
        elif name in ("readonly", "volume-nocopy"):
            values[name] = _bool(spec, key, value)
        elif name == "tmpfs-size":
            values[name] = _size(spec, value)
        elif name == "tmpfs-mode":
            try:
                values[name] = int(value, 8)
            except ValueError:
                raise MountError(f"--mount {spec!r}: tmpfs-mode must be octal, e.g. 1777") from None
        elif name == "consistency":
            continue  # accepted and ignored by Docker on Linux
        else:
            values[name] = value
    if "target" not in values:
        raise MountError(f"--mount {spec!r}: target is required (target=/path/in/container)")
    return Mount(
        type=values["type"],
        target=values["target"],
        source=values.get("source") or None,
        readonly=values.get("readonly", False),
        volume_driver=values.get("volume-driver"),
        volume_options=tuple(options),
        volume_labels=tuple(labels),
        volume_nocopy=values.get("volume-nocopy", False),
        bind_propagation=values.get("bind-propagation"),
        tmpfs_size=values.get("tmpfs-size"),
        tmpfs_mode=values.get("tmpfs-mode"),
    ).validate(spec)


def parse_all(specs: tuple[str, ...]) -> tuple[Mount, ...]:
    """Every `--mount`; two mounts on one target are refused, as Docker does."""
    mounts = tuple(parse(s) for s in specs)
    targets = [m.target for m in mounts]
    for target in targets:
        if targets.count(target) > 1:
            raise MountError(f"--mount: two mounts have target {target}")
    return mounts
