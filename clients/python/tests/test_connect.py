"""Connecting: UNIX socket forms, TCP with a bearer token, mutual TLS, and the errors of a
missing or bad credential and an unreachable daemon."""

from __future__ import annotations

from pathlib import Path

import pytest

import ocloudview_atp as atp
from conftest import TIMEOUT, Env


def test_ping_over_the_unix_socket(client: atp.Client, domain: str) -> None:
    assert client.ping(domain) > 0


@pytest.mark.parametrize("form", ["unix:{path}", "{path}"])
def test_other_unix_target_forms(env: Env, domain: str, form: str) -> None:
    path = env.server.removeprefix("unix://")
    with atp.connect(form.format(path=path), timeout=TIMEOUT) as c:
        assert c.ping(domain) > 0


def test_socket_path_as_authority(env: Env, domain: str) -> None:
    # grpc-go and grpcurl -unix send the socket path as :authority; the daemon takes it.
    path = env.server.removeprefix("unix://")
    options = [("grpc.default_authority", path)]
    with atp.connect(env.server, timeout=TIMEOUT, options=options) as c:
        assert c.ping(domain) > 0


def test_tcp_with_the_token(env: Env, domain: str) -> None:
    with atp.connect(env.tcp_server, token=env.token, timeout=TIMEOUT) as c:
        assert c.ping(domain) > 0
        assert domain in [d.name for d in c.list_domains()]
    with atp.connect(f"tcp://{env.tcp_server}", token=env.token, timeout=TIMEOUT) as c:
        assert c.ping(domain) > 0


@pytest.mark.parametrize("token", [None, "not-the-token"])
def test_tcp_without_a_valid_token_is_unauthenticated(
    env: Env, domain: str, token: str | None
) -> None:
    with (
        atp.connect(env.tcp_server, token=token, timeout=TIMEOUT) as c,
        pytest.raises(atp.Unauthenticated) as e,
    ):
        c.ping(domain)
    assert e.value.reason == "UNAUTHENTICATED"
    assert e.value.code is not None and e.value.code.name == "UNAUTHENTICATED"


def test_mutual_tls_from_paths_and_from_bytes(env: Env, domain: str) -> None:
    tls = atp.Tls(ca=env.tls_ca, cert=env.tls_cert, key=env.tls_key)
    with atp.connect(env.tls_server, tls=tls, timeout=TIMEOUT) as c:
        assert c.ping(domain) > 0
    pem = atp.Tls(
        ca=Path(env.tls_ca).read_bytes(),
        cert=Path(env.tls_cert).read_bytes(),
        key=Path(env.tls_key).read_bytes(),
        server_name="localhost",
    )
    with atp.connect(f"https://{env.tls_server}", tls=pem, timeout=TIMEOUT) as c:
        assert c.ping(domain) > 0


def test_plaintext_to_the_tls_listener_fails(env: Env, domain: str) -> None:
    with atp.connect(env.tls_server, timeout=TIMEOUT) as c, pytest.raises(atp.DaemonUnavailable):
        c.ping(domain)


def test_unreachable_daemon(env: Env, tmp_path: Path, domain: str) -> None:
    with (
        atp.connect(f"unix://{tmp_path}/none.sock", timeout=TIMEOUT) as c,
        pytest.raises(atp.DaemonUnavailable) as e,
    ):
        c.ping(domain)
    assert e.value.reason is None  # the daemon never answered


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="UNIX socket"):
        atp.connect("unix:///x.sock", tls=True)
    with pytest.raises(ValueError, match="both cert and key"):
        atp.connect("127.0.0.1:1", tls=atp.Tls(cert=b"x"))
    with pytest.raises(ValueError, match="unsupported target"):
        atp.connect("ftp://x:1")
