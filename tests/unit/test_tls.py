"""The stack's TLS material, URLs that verify it, the TLS stack definition and the IPsec probe's
message, without servers."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import struct
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from swarmrun.backends.swarm.encryption import AEAD, XFRM_MSG_NEWSA, XFRMA_ALG_AEAD, ack_error, newsa_message
from swarmrun.backends.swarm.stack import TLS_LABEL, definition, render, service_plans, template_config
from swarmrun.backends.tls import TLS_SECRETS, issue, server_hosts, write
from swarmrun.backends.workerspec import WorkerSpec
from swarmrun.errors import SwarmrunError
from swarmrun.settings import Settings, with_ca
from tests.conftest import ROOT


def _handshake(material_ca: bytes, cert: bytes, key: bytes, host: str, tmp_path: Path) -> None:
    """A real TLS handshake on loopback: a server with `cert`, a client verifying `host` against the CA."""
    (tmp_path / "c.pem").write_bytes(cert)
    (tmp_path / "k.pem").write_bytes(key)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    client_ctx = ssl.create_default_context(cadata=material_ca.decode())
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            client_ctx.wrap_socket(raw, server_hostname=host) as tls,
        ):
            tls.sendall(b"x")
    finally:
        thread.join(5)
        listener.close()


def test_the_server_certificate_verifies_against_its_ca_for_each_host(tmp_path: Path) -> None:
    m = issue(["redis", "127.0.0.1", "manager.example"], name="s1")
    ca = x509.load_pem_x509_certificate(m.ca)
    cert = x509.load_pem_x509_certificate(m.cert)
    cert.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["redis", "manager.example"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    key = serialization.load_pem_private_key(m.key, None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]
    _handshake(m.ca, m.cert, m.key, "127.0.0.1", tmp_path)
    _handshake(m.ca, m.cert, m.key, "redis", tmp_path)


def test_a_host_not_in_the_certificate_or_another_ca_is_refused(tmp_path: Path) -> None:
    m = issue(["redis"])
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch|doesn't match"):
        _handshake(m.ca, m.cert, m.key, "elsewhere.example", tmp_path)
    other = issue(["redis"])
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        _handshake(other.ca, m.cert, m.key, "redis", tmp_path)


def test_each_issue_makes_a_new_ca_and_no_ca_key_is_returned() -> None:
    a, b = issue(["redis"]), issue(["redis"])
    assert a.ca != b.ca and a.key != b.key
    assert b"PRIVATE KEY" not in a.ca + a.cert
    assert set(a.secrets()) == set(TLS_SECRETS)
    with pytest.raises(ValueError):
        issue([])


def test_without_cryptography_tls_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cryptography", None)
    with pytest.raises(SwarmrunError, match=r"pip install 'swarmrun\[tls\]'"):
        issue(["redis"])


def test_server_hosts_name_the_overlay_alias_loopback_engine_and_managers() -> None:
    hosts = server_hosts("st", engine_host="10.0.0.5", managers=["10.0.0.5", "10.0.0.6"], extra=["m.example"])
    assert hosts == ["redis", "st_redis", "localhost", "127.0.0.1", "10.0.0.5", "10.0.0.6", "m.example"]


def test_write_keeps_the_key_private(tmp_path: Path) -> None:
    paths = write(tmp_path / "tls", issue(["redis"]))
    modes = {p.name: p.stat().st_mode & 0o777 for p in paths}
    assert modes == {"redis_tls_ca.pem": 0o644, "redis_tls_cert.pem": 0o644, "redis_tls_key.pem": 0o600}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("rediss://:pw@h:6379/0", "rediss://:pw@h:6379/0?ssl_ca_certs=/tmp/ca.pem"),
        (
            "rediss://h:1/0?ssl_check_hostname=false",
            "rediss://h:1/0?ssl_check_hostname=false&ssl_ca_certs=/tmp/ca.pem",
        ),
        ("rediss://h:1/0?ssl_ca_certs=/mine.pem", "rediss://h:1/0?ssl_ca_certs=/mine.pem"),
        ("redis://h:1/0", "redis://h:1/0"),
        ("unix:///tmp/r.sock", "unix:///tmp/r.sock"),
    ],
)
def test_with_ca_adds_the_ca_to_rediss_urls_only(url: str, expected: str) -> None:
    assert with_ca(url, "/tmp/ca.pem") == expected


def test_settings_add_password_and_ca_to_a_rediss_url(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    env = {
        "SWARMRUN_REDIS_URL": "rediss://redis:6379/0",
        "SWARMRUN_REDIS_PASSWORD_FILE": str(secret),
        "SWARMRUN_REDIS_CA": "/run/secrets/redis_tls_ca",
    }
    url = Settings.from_env(env).url
    assert url == "rediss://:s3cret@redis:6379/0?ssl_ca_certs=/run/secrets/redis_tls_ca"
    import redis

    kwargs = redis.connection.parse_url(url)
    assert kwargs["ssl_ca_certs"] == "/run/secrets/redis_tls_ca" and kwargs["password"] == "s3cret"


def test_a_tls_stack_has_only_a_tls_listener_and_workers_verify_it() -> None:
    spec = WorkerSpec(name="st", tls=True)
    data = definition(spec)
    redis_svc, worker = data["services"]["redis"], data["services"]["worker"]
    command = redis_svc["command"][2]
    assert "--port 0 --tls-port 6379" in command
    assert "--tls-cert-file /run/secrets/redis_tls_cert --tls-key-file /run/secrets/redis_tls_key" in command
    assert redis_svc["secrets"] == ["redis_password", "redis_tls_cert", "redis_tls_key"]
    assert redis_svc["deploy"]["labels"][TLS_LABEL] == "true"
    assert worker["secrets"] == ["redis_password", "redis_tls_ca"]  # never the key
    assert worker["environment"]["SWARMRUN_REDIS_URL"] == "rediss://redis:6379/0"
    assert worker["environment"]["SWARMRUN_REDIS_CA"] == "/run/secrets/redis_tls_ca"
    assert set(data["secrets"]) == {"redis_password", *TLS_SECRETS}
    plain = definition(WorkerSpec(name="st"))
    assert "--tls-port" not in plain["services"]["redis"]["command"][2]
    assert "SWARMRUN_REDIS_CA" not in plain["services"]["worker"]["environment"]
    assert TLS_LABEL not in plain["services"]["redis"]["deploy"]["labels"]


def test_service_plans_reference_each_tls_secret_by_its_own_id() -> None:
    refs = {name: (f"id-{name}", f"st_{name}") for name in TLS_SECRETS}
    plans = {
        p.key: p
        for p in service_plans(
            WorkerSpec(name="st", tls=True),
            network="n",
            secret_id="pw-id",
            secret_name="st_pw",
            tls_secrets=refs,
        )
    }
    redis_refs = {s["filename"]: s["secret_id"] for s in plans["redis"].kwargs["secrets"]}
    assert redis_refs == {
        "redis_password": "pw-id",
        "redis_tls_cert": "id-redis_tls_cert",
        "redis_tls_key": "id-redis_tls_key",
    }
    worker_refs = {s["filename"]: s["secret_id"] for s in plans["worker"].kwargs["secrets"]}
    assert worker_refs == {"redis_password": "pw-id", "redis_tls_ca": "id-redis_tls_ca"}
    plain = service_plans(WorkerSpec(name="st"), network="n", secret_id="pw-id", secret_name="st_pw")
    assert {p.key: p.spec_hash for p in plain} != {k: p.spec_hash for k, p in plans.items()}


def test_the_committed_tls_stack_file_is_the_rendered_template() -> None:
    assert (ROOT / "stacks" / "swarmrun-tls.yml").read_text() == render(template_config(tls=True))
    assert "${SWARMRUN_REDIS_TLS_DIR:-../tls}/redis_tls_key.pem" in render(template_config(tls=True))


def test_encrypt_network_sets_the_overlay_option() -> None:
    assert definition(replace(WorkerSpec(), encrypt_network=True))["networks"]["net"]["driver_opts"] == {
        "encrypted": ""
    }
    assert "driver_opts" not in definition(WorkerSpec())["networks"]["net"]


def test_the_ipsec_probe_message_is_a_well_formed_newsa_request() -> None:
    message = newsa_message(seq=7)
    length, kind, flags, seq, _pid = struct.unpack_from("=IHHII", message)
    assert (length, kind, flags, seq) == (len(message), XFRM_MSG_NEWSA, 0x5, 7)
    info_size = 224  # sizeof(struct xfrm_usersa_info) on x86-64
    attr_len, attr_type = struct.unpack_from("=HH", message, 16 + info_size)
    assert attr_type == XFRMA_ALG_AEAD and 16 + info_size + attr_len <= len(message)
    name = message[16 + info_size + 4 : 16 + info_size + 4 + 64].rstrip(b"\0").decode()
    key_bits, icv_bits = struct.unpack_from("=II", message, 16 + info_size + 4 + 64)
    assert (name, key_bits, icv_bits) == (AEAD, 160, 64)
    family, mode = struct.unpack_from("=HB", message, 16 + 212)
    assert (family, mode) == (socket.AF_INET, 0)  # IPv4, transport mode, as Docker's overlay


def test_the_probe_reads_netlink_acks() -> None:
    header = struct.pack("=IHHII", 36, 2, 0, 1, 0)
    assert ack_error(header + struct.pack("=i", 0) + bytes(16)) == 0
    assert ack_error(header + struct.pack("=i", -38) + bytes(16)) == 38  # ENOSYS: no such cipher


# --- Kubernetes ------------------------------------------------------------------------------------


def _by_kind(objects: list[dict], kind: str, name: str) -> dict:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def test_kubernetes_tls_manifests_carry_the_secret_and_the_redis_tls_args() -> None:
    import base64

    from swarmrun.backends.kubernetes import manifests as km

    material = issue(["127.0.0.1", "st-redis"])
    objects = km.manifests(WorkerSpec(name="st", tls=True), password="pw", tls=material)
    assert [o["kind"] for o in objects[:2]] == ["Secret", "Secret"]
    tls_secret = _by_kind(objects, "Secret", "st-redis-tls")
    assert {k: base64.b64decode(v) for k, v in tls_secret["data"].items()} == material.secrets()
    redis_dep = _by_kind(objects, "Deployment", "st-redis")
    assert redis_dep["metadata"]["labels"][km.TLS_LABEL] == "true"
    container = redis_dep["spec"]["template"]["spec"]["containers"][0]
    assert "--port 0 --tls-port 6379" in container["command"][2]
    assert "redis-cli --tls --insecure" in container["readinessProbe"]["exec"]["command"][2]
    sources = redis_dep["spec"]["template"]["spec"]["volumes"][1]["projected"]["sources"]
    assert [i["path"] for s in sources for i in s["secret"]["items"]] == [
        "redis_password",
        "redis_tls_cert",
        "redis_tls_key",
    ]
    worker = _by_kind(objects, "Deployment", "st-worker")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in worker["containers"][0]["env"]}
    assert env["SWARMRUN_REDIS_URL"].startswith("rediss://$(ST_REDIS_SERVICE_HOST):")
    assert env["SWARMRUN_REDIS_CA"] == "/run/secrets/redis_tls_ca"
    worker_files = [
        i["path"] for s in worker["volumes"][0]["projected"]["sources"] for i in s["secret"]["items"]
    ]
    assert worker_files == ["redis_password", "redis_tls_ca"]  # never the server key
    plain = km.manifests(WorkerSpec(name="st"), password="pw")
    assert all(o["metadata"]["name"] != "st-redis-tls" for o in plain)
    assert "secret" in _by_kind(plain, "Deployment", "st-worker")["spec"]["template"]["spec"]["volumes"][0]


@pytest.mark.parametrize("version", ["1.25.0", "1.31.0", "1.37.0"])
def test_kubernetes_tls_manifests_validate_against_the_schemas(version: str) -> None:
    import kubernetes_validate

    from swarmrun.backends.kubernetes import manifests as km

    objects = km.manifests(
        WorkerSpec(name="st", tls=True), redis_volume="emptydir", password="pw", tls=issue(["127.0.0.1"])
    )
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)
