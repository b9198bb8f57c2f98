"""The suite runs against a real daemon (`atp serve`) in front of a real guest agent; it
gets them from the environment and fails, never skips, when a variable is missing.
tests/python_client.rs sets them all:

    ATP_TEST_SERVER         UNIX socket target (unix:///path/atp.sock); peer credentials
    ATP_TEST_DOMAIN         guest to use
    ATP_TEST_DIR            directory the guest's agent may write to (also readable here)
    ATP_TEST_TCP_SERVER     host:port of a TCP listener that requires a bearer token
    ATP_TEST_TOKEN          that token
    ATP_TEST_DENIED_DOMAIN  a guest name the daemon's policy denies
    ATP_TEST_DENIED_PATH    a guest path (in ATP_TEST_DIR) the policy denies reading and writing
    ATP_TEST_TLS_SERVER     host:port of a mutual-TLS listener
    ATP_TEST_TLS_CA         the CA certificate (PEM file) of its server and client certificates
    ATP_TEST_TLS_CERT       a client certificate (PEM file) signed by that CA
    ATP_TEST_TLS_KEY        its key (PEM file)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, fields

import pytest

import ocloudview_atp as atp

TIMEOUT = 60.0


@dataclass(frozen=True)
class Env:
    """The daemon under test, from ATP_TEST_<FIELD>."""

    server: str
    domain: str
    dir: str
    tcp_server: str
    token: str
    denied_domain: str
    denied_path: str
    tls_server: str
    tls_ca: str
    tls_cert: str
    tls_key: str


@pytest.fixture(scope="session")
def env() -> Env:
    names = {f.name: f"ATP_TEST_{f.name.upper()}" for f in fields(Env)}
    missing = [var for var in names.values() if not os.environ.get(var)]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not set: the suite needs a running daemon "
            "(see clients/python/tests/conftest.py; `cargo test --test python_client` runs it)",
            pytrace=False,
        )
    return Env(**{name: os.environ[var] for name, var in names.items()})


@pytest.fixture(scope="session")
def client(env: Env) -> Iterator[atp.Client]:
    """A client on the UNIX socket."""
    with atp.connect(env.server, timeout=TIMEOUT) as c:
        yield c


@pytest.fixture(scope="session")
def domain(env: Env) -> str:
    return env.domain
