"""How a client reaches the daemon: the target forms, TLS material and the bearer token."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

PemSource = bytes | str | os.PathLike[str]
"""PEM data as bytes, or the path of a PEM file."""


@dataclass(frozen=True)
class Tls:
    """TLS for a TCP target. `ca`: the CA that signed the daemon's certificate (None: the
    system's roots); `cert` and `key`: the client certificate for mutual TLS (both or
    neither); `server_name`: the name to verify the daemon's certificate against when it
    is not the target's host."""

    ca: PemSource | None = None
    cert: PemSource | None = None
    key: PemSource | None = None
    server_name: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        """The gRPC channel credentials for this configuration."""
        if (self.cert is None) != (self.key is None):
            raise ValueError("Tls: give both cert and key (mutual TLS), or neither")
        return grpc.ssl_channel_credentials(
            root_certificates=_pem(self.ca),
            private_key=_pem(self.key),
            certificate_chain=_pem(self.cert),
        )


def _pem(source: PemSource | None) -> bytes | None:
    """PEM bytes as given, or read from a path."""
    if source is None or isinstance(source, bytes):
        return source
    return Path(source).read_bytes()


@dataclass(frozen=True)
class Target:
    """A parsed target: the gRPC address and whether the scheme asked for TLS."""

    address: str
    unix: bool
    https: bool


def parse_target(target: str) -> Target:
    """Understands `unix:///abs/path`, `unix:path`, a bare `/abs/path` (a UNIX socket),
    `host:port`, `tcp://host:port`, `http://host:port` and `https://host:port` (TLS)."""
    if target.startswith("unix:"):
        return Target(target, unix=True, https=False)
    if target.startswith("/"):
        return Target(f"unix://{target}", unix=True, https=False)
    for scheme, https in (("https://", True), ("http://", False), ("tcp://", False)):
        if target.startswith(scheme):
            address = target.removeprefix(scheme).rstrip("/")
            return Target(address, unix=False, https=https)
    if "://" in target:
        raise ValueError(f"unsupported target {target!r}: use unix://, host:port or https://")
    return Target(target, unix=False, https=False)


def open_channel(
    target: str,
    tls: Tls | bool | None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel:
    """A channel to `target`: TLS when `tls` is set (True: system roots) or the target is
    `https://`; plaintext otherwise. UNIX sockets are never TLS (the daemon authenticates
    their callers by peer credentials)."""
    t = parse_target(target)
    opts = list(options)
    if t.unix:
        if tls:
            raise ValueError(
                "a UNIX socket target takes no TLS (the daemon serves it in plaintext)"
            )
        return grpc.insecure_channel(t.address, options=opts)
    if tls is None:
        tls = t.https
    if tls is False:
        return grpc.insecure_channel(t.address, options=opts)
    if tls is True:
        tls = Tls()
    if tls.server_name:
        opts.append(("grpc.ssl_target_name_override", tls.server_name))
    return grpc.secure_channel(t.address, tls.credentials(), options=opts)
