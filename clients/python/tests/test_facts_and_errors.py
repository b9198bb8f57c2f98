"""Facts RPCs, and failures raised as the exception of the daemon's reason."""

from __future__ import annotations

import os

import pytest

import ocloudview_atp as atp
from conftest import Env


def test_facts(client: atp.Client, domain: str) -> None:
    assert domain in [d.name for d in client.list_domains()]
    info = client.agent_info(domain)
    assert info.version
    assert "guest-ping" in [c.name for c in info.supported_commands]
    assert client.os_info(domain).id  # the host's /etc/os-release id
    assert isinstance(client.guest_info(domain).unavailable, object)


def test_unknown_guest_is_guest_not_found(client: atp.Client) -> None:
    with pytest.raises(atp.GuestNotFound) as e:
        client.ping("no-such-guest")
    assert e.value.reason == "GUEST_NOT_FOUND"
    assert e.value.metadata["domain"] == "no-such-guest"
    assert "no-such-guest" in str(e.value)


def test_denied_guest_is_policy_denied_naming_the_plugin(client: atp.Client, env: Env) -> None:
    with pytest.raises(atp.PolicyDenied) as e:
        client.ping(env.denied_domain)
    assert e.value.code is not None and e.value.code.name == "PERMISSION_DENIED"
    assert e.value.plugin not in (None, "", "default"), e.value.metadata


def test_denied_path_is_policy_denied(client: atp.Client, env: Env, domain: str) -> None:
    with pytest.raises(atp.PolicyDenied) as e:
        client.write_file(domain, env.denied_path, b"no")
    assert e.value.plugin not in (None, "", "default"), e.value.metadata
    assert not os.path.exists(env.denied_path)
    with pytest.raises(atp.PolicyDenied):
        client.read_file(domain, env.denied_path)


def test_missing_guest_file(client: atp.Client, env: Env, domain: str) -> None:
    with pytest.raises(atp.GuestPathNotFound) as e:
        client.read_file(domain, os.path.join(env.dir, "missing.txt"))
    assert e.value.reason == "GUEST_PATH_NOT_FOUND"
    assert isinstance(e.value, atp.AtpError)
