"""`--mount` parsing (Docker's syntax), what Docker would refuse, and the renderings: compose and SDK."""

from __future__ import annotations

import docker.types
import pytest
import yaml

from swarmrun.backends.mounts import Mount, MountError, parse, parse_all
from swarmrun.backends.swarm.stack import StackConfig, definition, render, service_plans


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("type=bind,source=/srv/data,target=/data", Mount("bind", "/data", "/srv/data")),
        ("type=bind,src=/srv,dst=/in,readonly", Mount("bind", "/in", "/srv", readonly=True)),
        ("type=bind,source=/srv,target=/in,ro=false", Mount("bind", "/in", "/srv")),
        ("source=cache,target=/cache", Mount("volume", "/cache", "cache")),
        ("type=volume,target=/scratch", Mount("volume", "/scratch")),
        (
            "type=volume,source=nfs,target=/nfs,volume-driver=local,volume-opt=type=nfs,"
            '"volume-opt=o=addr=10.0.0.1,rw",volume-opt=device=:/export',
            Mount(
                "volume",
                "/nfs",
                "nfs",
                volume_driver="local",
                volume_options=(("type", "nfs"), ("o", "addr=10.0.0.1,rw"), ("device", ":/export")),
            ),
        ),
        (
            "type=tmpfs,target=/tmp/x,tmpfs-size=64m,tmpfs-mode=1777",
            Mount("tmpfs", "/tmp/x", tmpfs_size=64 * 2**20, tmpfs_mode=0o1777),
        ),
        (
            "type=bind,source=/a,target=/b,bind-propagation=rslave",
            Mount("bind", "/b", "/a", bind_propagation="rslave"),
        ),
    ],
)
def test_parse_reads_docker_mount_syntax(spec: str, expected: Mount) -> None:
    assert parse(spec) == expected


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("type=nfs,source=/a,target=/b", "type must be bind, volume or tmpfs"),
        ("type=bind,source=/a", "target is required"),
        ("type=bind,source=/a,target=relative", "target must be an absolute path"),
        ("type=bind,source=relative,target=/b", "absolute host path as source"),
        ("type=bind,target=/b", "absolute host path as source"),
        ("type=tmpfs,source=x,target=/b", "tmpfs mount takes no source"),
        ("type=bind,source=/a,target=/b,volume-driver=local", "volume-* options need type=volume"),
        ("type=volume,source=v,target=/b,bind-propagation=shared", "bind-propagation needs type=bind"),
        ("type=volume,source=v,target=/b,tmpfs-size=1m", "tmpfs-size and tmpfs-mode need type=tmpfs"),
        ("type=bind,source=/a,target=/b,colour=red", "unknown key 'colour'"),
        ("type=bind,source=/a,target=/b,readonly=maybe", "readonly takes true or false"),
        ("type=volume,source=v,target=/b,volume-opt=novalue", "volume-opt must be volume-opt=NAME=VALUE"),
        ("type=volume,target=/b,volume-driver=local", "need a named volume"),
        ("type=bind,source=/a,target=/", "cannot mount over /"),
    ],
)
def test_specs_docker_refuses_are_one_line_errors(spec: str, why: str) -> None:
    with pytest.raises(MountError, match=why.replace("*", r"\*").replace("(", r"\(")) as info:
        parse(spec)
    assert "\n" not in str(info.value) and info.value.exit_code == 3


def test_two_mounts_on_one_target_are_refused() -> None:
    with pytest.raises(MountError, match="two mounts have target /d"):
        parse_all(("type=bind,source=/a,target=/d", "type=volume,source=v,target=/d"))


MOUNTS = parse_all(
    (
        "type=bind,source=/srv/data,target=/data,readonly",
        "type=volume,source=shared-out,target=/out,volume-driver=local,volume-opt=type=tmpfs,volume-opt=device=tmpfs",
        "type=tmpfs,target=/scratch,tmpfs-size=1m",
    )
)


def test_compose_rendering_round_trips_and_names_volumes_as_up_does() -> None:
    data = yaml.safe_load(render(StackConfig(mounts=MOUNTS)))
    worker = data["services"]["worker"]
    assert worker["volumes"][0] == {
        "type": "bind",
        "source": "/srv/data",
        "target": "/data",
        "read_only": True,
    }
    assert data["volumes"]["shared-out"] == {
        "name": "shared-out",
        "driver": "local",
        "driver_opts": {"type": "tmpfs", "device": "tmpfs"},
    }
    assert tuple(Mount.from_compose(v, data["volumes"]) for v in worker["volumes"]) == MOUNTS


def test_sdk_rendering_builds_docker_types_and_is_what_up_deploys() -> None:
    plans = {
        p.key: p
        for p in service_plans(StackConfig(mounts=MOUNTS), network="n", secret_id="s", secret_name="x")
    }
    mounts = plans["worker"].kwargs["mounts"]
    assert mounts == [m.sdk() for m in MOUNTS]
    built = [
        docker.types.Mount(
            **{**m, "driver_config": docker.types.DriverConfig(**m["driver_config"])}
            if "driver_config" in m
            else m
        )
        for m in mounts
    ]
    assert built[0]["ReadOnly"] is True and built[0]["Type"] == "bind"
    assert built[1]["VolumeOptions"]["DriverConfig"] == {
        "Name": "local",
        "Options": {"type": "tmpfs", "device": "tmpfs"},
    }
    assert built[2]["TmpfsOptions"] == {"SizeBytes": 2**20}
    # The same mounts give the same spec hash (`up` again changes nothing); other mounts do not.
    again = service_plans(StackConfig(mounts=MOUNTS), network="n", secret_id="s", secret_name="x")
    other = service_plans(StackConfig(mounts=MOUNTS[:1]), network="n", secret_id="s", secret_name="x")
    assert again[1].spec_hash == plans["worker"].spec_hash != other[1].spec_hash


def test_no_mounts_leaves_the_definition_as_before() -> None:
    assert "volumes" not in definition(StackConfig())["services"]["worker"]
