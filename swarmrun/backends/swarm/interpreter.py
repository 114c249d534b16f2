"""The base image's own Python: which interpreter it has, asked from a throwaway container.

`PROBE` runs inside the image and prints its marker environment, ABI and platform facts;
`target_from_probe` turns that into a `TargetPython` (pure, tested from captured output), which
says which wheels the image installs and how to ask pip for them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors

from swarmrun.backends.swarm.engine import translated
from swarmrun.errors import ImageBuildError

try:
    from packaging import tags as ptags
except ImportError:  # pragma: no cover - pip vendors packaging, and pip is needed anyway
    from pip._vendor.packaging import tags as ptags  # type: ignore[no-redef]

# Runs inside the base image (any Python 3): its marker environment, ABI and platform facts.
PROBE = r"""
import glob, json, os, platform, subprocess, sys, sysconfig
def fmt(i):
    v = "%d.%d.%d" % (i.major, i.minor, i.micro)
    return v if i.releaselevel == "final" else v + i.releaselevel[0] + str(i.serial)
libc = ["", ""]
try:
    libc = ["glibc", os.confstr("CS_GNU_LIBC_VERSION").split()[1]]
except (AttributeError, ValueError, OSError, IndexError):
    for loader in glob.glob("/lib/ld-musl-*.so.1"):
        err = subprocess.run([loader], stderr=subprocess.PIPE, universal_newlines=True).stderr
        libc = ["musl", err.split("Version ", 1)[1].split()[0]] if "Version " in err else libc
print(json.dumps({"markers": {
    "implementation_name": sys.implementation.name, "implementation_version": fmt(sys.implementation.version),
    "os_name": os.name, "platform_machine": platform.machine(), "platform_release": platform.release(),
    "platform_system": platform.system(), "platform_version": platform.version(),
    "python_full_version": platform.python_version(), "python_version": "%d.%d" % sys.version_info[:2],
    "platform_python_implementation": platform.python_implementation(), "sys_platform": sys.platform},
    "abiflags": getattr(sys, "abiflags", ""), "soabi": sysconfig.get_config_var("SOABI") or "",
    "platform": sysconfig.get_platform(), "libc": libc}))
"""


@dataclass(frozen=True)
class TargetPython:
    """The interpreter inside a base image, as pip's `download --python-version ...` flags need it."""

    version: str  # "3.11.2"
    implementation: str  # "cp"
    abi: str  # "cp311"
    platforms: tuple[str, ...]  # most specific first, e.g. manylinux_2_36_x86_64 ... linux_x86_64
    markers: Mapping[str, str] = field(default_factory=dict)

    def pip_args(self) -> list[str]:
        args = ["--python-version", self.version, "--implementation", self.implementation, "--abi", self.abi]
        for p in self.platforms:
            args += ["--platform", p]
        return args

    def tags(self) -> set[ptags.Tag]:
        """Every wheel tag this interpreter installs."""
        major, minor = (int(x) for x in self.version.split(".")[:2])
        interpreter = f"{self.implementation}{major}{minor}"
        found = (
            ptags.cpython_tags((major, minor), [self.abi], self.platforms)
            if self.implementation == "cp"
            else ptags.generic_tags(interpreter, [self.abi], self.platforms)
        )
        return set(found) | set(ptags.compatible_tags((major, minor), interpreter, self.platforms))

    def key(self) -> dict[str, Any]:
        """What identifies the target for caching (not the kernel release a container reports)."""
        stable = {k: v for k, v in self.markers.items() if k not in ("platform_release", "platform_version")}
        return {
            "version": self.version,
            "implementation": self.implementation,
            "abi": self.abi,
            "platforms": list(self.platforms),
            "markers": stable,
        }

    def describe(self) -> str:
        return f"Python {self.version} ({self.abi}, {self.platforms[0]})"


def platform_tags(sysconfig_platform: str, libc: Sequence[str]) -> tuple[str, ...]:
    """Wheel platform tags for a Linux interpreter, as `packaging.tags` would compute them inside it."""
    if not sysconfig_platform.startswith("linux-"):
        raise ImageBuildError(f"base image platform {sysconfig_platform!r} is not Linux")
    arch = sysconfig_platform[len("linux-") :].replace("-", "_").replace(".", "_")
    name, version = (list(libc) + ["", ""])[:2]
    found: list[str] = []
    if name == "glibc" and version:
        major, minor = (int(x) for x in version.split(".")[:2])
        legacy = {(2, 17): "manylinux2014", (2, 12): "manylinux2010", (2, 5): "manylinux1"}
        for m in range(minor, 4 if arch in ("x86_64", "i686") else 16, -1):
            found.append(f"manylinux_{major}_{m}_{arch}")
            alias = legacy.get((major, m))
            if alias and (alias == "manylinux2014" or arch in ("x86_64", "i686")):
                found.append(f"{alias}_{arch}")
    elif name == "musl" and version:
        major, minor = (int(x) for x in version.split(".")[:2])
        found += [f"musllinux_{major}_{m}_{arch}" for m in range(minor, -1, -1)]
    return (*found, f"linux_{arch}")


def target_from_probe(data: Mapping[str, Any]) -> TargetPython:
    """The TargetPython for what PROBE printed inside a base image."""
    markers = {str(k): str(v) for k, v in data["markers"].items()}
    version = markers["python_full_version"]
    major, minor = version.split(".")[:2]
    if markers["implementation_name"] == "cpython":
        impl, abi = "cp", f"cp{major}{minor}{data.get('abiflags', '')}"
    elif markers["implementation_name"] == "pypy":
        impl, abi = "pp", "_".join(str(data.get("soabi", "")).split("-")[:2]).replace(".", "_")
    else:
        raise ImageBuildError(f"unsupported Python implementation {markers['implementation_name']!r}")
    platforms = platform_tags(str(data["platform"]), data.get("libc", []))
    return TargetPython(version, impl, abi, platforms, markers)


def target_interpreter(
    client: docker.DockerClient, base_image: str, *, labels: Mapping[str, str] | None = None
) -> TargetPython:
    """Ask the base image (a throwaway container) which interpreter it has."""
    with translated(f"cannot inspect base image {base_image}"):
        try:
            client.images.get(base_image)
        except docker.errors.ImageNotFound:
            try:
                client.images.pull(base_image)
            except docker.errors.APIError as e:
                raise ImageBuildError(
                    f"base image {base_image} is not in the local engine and cannot be "
                    f"pulled: {e.explanation or e}"
                ) from e
        try:
            out = client.containers.run(
                base_image,
                ["-c", PROBE],
                entrypoint="python3",
                remove=True,
                stdout=True,
                stderr=False,
                labels=dict(labels or {}),
            )
        except docker.errors.ContainerError as e:
            tail = (e.stderr or b"").decode(errors="replace").strip().splitlines()[-1:] or [str(e)]
            raise ImageBuildError(f"base image {base_image} has no working python3: {tail[0]}") from e
        except docker.errors.APIError as e:
            raise ImageBuildError(f"base image {base_image} has no working python3: {e.explanation}") from e
    return target_from_probe(json.loads(out.decode().strip().splitlines()[-1]))
