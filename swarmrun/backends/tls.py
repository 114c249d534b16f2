"""The stack's TLS material: a private CA that signs exactly one certificate, Redis's.

`up --tls` makes both with `issue(hosts)` (pure: values in, PEM bytes out; `cryptography` is the
optional extra `swarmrun[tls]`). The CA's private key is thrown away once the server certificate
is signed, so nothing can sign another certificate this CA vouches for; a client that verifies
against the CA therefore talks to this stack's Redis. The server key lives only in the Docker
secret (Kubernetes Secret) Redis reads it from; the CA certificate is public.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from swarmrun.errors import SwarmrunError

# File names of the secrets, beside `redis_password` under /run/secrets (Swarm and Kubernetes).
CA_SECRET = "redis_tls_ca"
CERT_SECRET = "redis_tls_cert"
KEY_SECRET = "redis_tls_key"
TLS_SECRETS = (CA_SECRET, CERT_SECRET, KEY_SECRET)
DAYS = 3650


@dataclass(frozen=True)
class TLSMaterial:
    """PEM texts: the CA certificate (for clients), Redis's certificate and its private key."""

    ca: bytes
    cert: bytes
    key: bytes

    def secrets(self) -> dict[str, bytes]:
        """Secret file name -> content."""
        return {CA_SECRET: self.ca, CERT_SECRET: self.cert, KEY_SECRET: self.key}


def _cryptography() -> None:
    try:
        import cryptography  # noqa: F401
    except ImportError:
        raise SwarmrunError("--tls needs the cryptography package: pip install 'swarmrun[tls]'") from None


def issue(
    hosts: Sequence[str], *, name: str = "swarmrun", now: datetime.datetime | None = None, days: int = DAYS
) -> TLSMaterial:
    """A new CA and a Redis server certificate valid for `hosts` (DNS names or IP addresses)."""
    _cryptography()
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if not hosts:
        raise ValueError("a server certificate needs at least one host name")
    start = (now or datetime.datetime.now(datetime.UTC)) - datetime.timedelta(minutes=5)
    end = start + datetime.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} redis CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} redis")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return TLSMaterial(
        ca=ca.public_bytes(pem),
        cert=cert.public_bytes(pem),
        key=key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )


def server_hosts(
    stack: str, *, engine_host: str, managers: Sequence[str] = (), extra: Sequence[str] = ()
) -> list[str]:
    """The names a Swarm stack's Redis answers to: its overlay aliases, loopback, the engine's host,
    the managers' addresses (Redis is pinned to a manager) and any `--tls-host`."""
    return list(
        dict.fromkeys(["redis", f"{stack}_redis", "localhost", "127.0.0.1", engine_host, *managers, *extra])
    )


def write(directory: Path, material: TLSMaterial) -> list[Path]:
    """The material as `<dir>/redis_tls_{ca,cert,key}.pem` (the key readable by its owner only)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for file, data in material.secrets().items():
        path = directory / f"{file}.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if file == KEY_SECRET else 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        paths.append(path)
    return paths


def _main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m swarmrun.backends.tls",
        description="Make a CA and a Redis server certificate for a stack deployed from its file.",
    )
    parser.add_argument("directory", type=Path)
    parser.add_argument(
        "--host", action="append", default=[], help="another name or address of Redis (repeatable)"
    )
    args = parser.parse_args(argv)
    hosts = ["redis", "localhost", "127.0.0.1", *args.host]  # `redis`: the workers' name for it
    for path in write(args.directory, issue(hosts)):
        print(path)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(_main())
