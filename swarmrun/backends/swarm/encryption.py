"""Can this engine's kernel carry an encrypted overlay network (`up --encrypt-network`)?

Docker encrypts overlay (VXLAN) traffic between nodes with IPsec: ESP in transport mode with
AES-GCM (`rfc4106(gcm(aes))`), set up in the kernel through XFRM. When the kernel lacks it (no
`esp4`, no `gcm`: a custom or minimal kernel), the engine still creates the network, logs the
failure in its own log and the nodes' traffic never arrives: workers on other nodes cannot reach
Redis. So before creating such a network, `require` runs a short container on the engine, in a
network namespace of its own (`--network none`, CAP_NET_ADMIN), that installs the security
association Docker would install, then discards it with the namespace. The probe message is
built by a pure function (`newsa_message`) and sent over a netlink socket from the standard
library only, so it runs in the worker image.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import sys
from typing import Any

NETLINK_XFRM = 6
XFRM_MSG_NEWSA = 0x10
XFRMA_ALG_AEAD = 18
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLMSG_ERROR = 0x2
IPPROTO_ESP = 50
XFRM_MODE_TRANSPORT = 0
XFRM_INF = 2**64 - 1
AEAD = "rfc4106(gcm(aes))"  # what Docker's overlay driver uses (key 16 bytes + 4 of salt, ICV 64 bits)
OK_LINE = "ipsec: ok"


def newsa_message(*, seq: int = 1, src: str = "10.255.0.1", dst: str = "10.255.0.2") -> bytes:
    """An XFRM_MSG_NEWSA netlink request for an ESP transport SA with Docker's AEAD cipher."""
    sel = bytes(56)  # struct xfrm_selector: any traffic (unused for a transport SA here)
    xid = socket.inet_aton(dst) + bytes(12) + struct.pack(">I", 0x5E1) + struct.pack("B3x", IPPROTO_ESP)
    saddr = socket.inet_aton(src) + bytes(12)
    lft = struct.pack("=8Q", *([XFRM_INF] * 4), 0, 0, 0, 0)
    rest = bytes(32 + 12) + struct.pack("=IIHBBB", 0, 1, socket.AF_INET, XFRM_MODE_TRANSPORT, 32, 0)
    info = sel + xid + saddr + lft + rest
    info += bytes(-len(info) % 8)  # struct xfrm_usersa_info is 224 bytes on 64-bit
    key = bytes(range(1, 21))
    algo = AEAD.encode().ljust(64, b"\0") + struct.pack("=II", len(key) * 8, 64) + key
    attr = struct.pack("=HH", 4 + len(algo), XFRMA_ALG_AEAD) + algo
    attr += bytes(-len(attr) % 4)
    body = info + attr
    return struct.pack("=IHHII", 16 + len(body), XFRM_MSG_NEWSA, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def ack_error(reply: bytes) -> int:
    """The errno of a netlink ACK (0: accepted)."""
    _length, kind, _flags, _seq, _pid = struct.unpack_from("=IHHII", reply)
    if kind != NLMSG_ERROR:
        return errno.EPROTO
    (code,) = struct.unpack_from("=i", reply, 16)
    return -int(code)


def probe() -> str:
    """Install the SA in this process's network namespace: `ipsec: ok`, or why the kernel refused."""
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_XFRM) as sock:
            sock.send(newsa_message())
            code = ack_error(sock.recv(65536))
    except OSError as e:
        return f"ipsec: no XFRM netlink socket ({e.strerror or e})"
    if code == 0:
        return OK_LINE
    name = errno.errorcode.get(code, str(code))
    why = {
        errno.ENOSYS: f"the kernel has no {AEAD} cipher (CONFIG_CRYPTO_GCM)",
        errno.ENOENT: f"the kernel has no {AEAD} cipher (CONFIG_CRYPTO_GCM)",
        errno.EPROTONOSUPPORT: "the kernel has no IPsec ESP (CONFIG_INET_ESP, module esp4)",
        errno.EPERM: "not allowed to configure IPsec (CAP_NET_ADMIN)",
    }.get(code, os.strerror(code))
    return f"ipsec: {why} [{name}]"


def require(client: Any, image: str, labels: dict[str, str] | None = None) -> None:
    """DockerUnavailable, in one line, when the engine's kernel cannot do what an encrypted overlay needs."""
    import docker.errors

    from swarmrun.backends.swarm import engine
    from swarmrun.errors import DockerUnavailable

    with engine.translated("probing the kernel for IPsec"):
        try:
            out = client.containers.run(
                image,
                entrypoint=["python3", "-m", "swarmrun.backends.swarm.encryption"],
                command=[],
                network_mode="none",
                cap_add=["NET_ADMIN"],
                remove=True,
                labels=labels or {},
            )
        except docker.errors.ContainerError as e:  # the probe's reason is on its stderr
            out = e.stderr if isinstance(e.stderr, bytes) else str(e.stderr or "").encode()
    line = out.decode(errors="replace").strip().splitlines()[-1:] if out else []
    result = line[0] if line else ""
    if not result.startswith("ipsec: "):
        raise DockerUnavailable(
            f"--encrypt-network: the IPsec probe could not run in image {image!r} "
            f"({result or 'it printed nothing'}); it needs the worker image with swarmrun in it"
        )
    if result != OK_LINE:
        raise DockerUnavailable(
            f"--encrypt-network: this engine's kernel cannot encrypt overlay traffic "
            f"({result.removeprefix('ipsec: ')}); deploy without --encrypt-network, or on nodes whose "
            "kernel has IPsec ESP with AES-GCM"
        )


if __name__ == "__main__":
    line = probe()
    print(line, file=sys.stdout if line == OK_LINE else sys.stderr)
    sys.exit(0 if line == OK_LINE else 1)
