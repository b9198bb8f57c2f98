"""Exec: typed events as they arrive, exit status, stdin (whole and streamed), failures."""

from __future__ import annotations

import time

import pytest

import ocloudview_atp as atp


def test_events_stream_live_and_in_order(client: atp.Client, domain: str) -> None:
    script = "for i in 1 2 3; do echo $i; sleep 0.2; done; echo err >&2; exit 3"
    t0 = time.monotonic()
    run = client.exec(domain, ["/bin/sh", "-c", script])
    events = [(time.monotonic() - t0, ev) for ev in run]
    kinds = [type(ev).__name__ for _, ev in events]
    assert kinds[0] == "Started" and kinds[-1] == "Exited" and kinds.count("Exited") == 1, kinds
    started = events[0][1]
    assert isinstance(started, atp.Started) and started.pid > 0 and started.exec_id
    assert run.exec_id == started.exec_id
    out = b"".join(ev.data for _, ev in events if isinstance(ev, atp.Stdout))
    err = b"".join(ev.data for _, ev in events if isinstance(ev, atp.Stderr))
    assert (out, err) == (b"1\n2\n3\n", b"err\n")
    exited = events[-1][1]
    assert isinstance(exited, atp.Exited)
    assert (exited.exit_code, exited.signal, exited.timed_out) == (3, None, False)
    # The script runs ~0.6 s after its first line: live output arrives well before Exited.
    first_out = next(t for t, ev in events if isinstance(ev, atp.Stdout))
    assert first_out + 0.1 < events[-1][0], f"first stdout {first_out:.3f} s, events {events}"
    # What was iterated is collected too.
    result = run.wait()
    assert (result.stdout, result.stderr, result.exit_code, result.ok) == (out, err, 3, False)


def test_failing_exit_and_check(client: atp.Client, domain: str) -> None:
    stdout, stderr, code = client.run(domain, "echo out; echo oops >&2; exit 7")
    assert (stdout, stderr, code) == (b"out\n", b"oops\n", 7)
    with pytest.raises(atp.ExecFailed) as e:
        client.run(domain, ["/bin/false"], check=True)
    assert e.value.result.exit_code == 1
    assert client.run(domain, ["/bin/true"], check=True).ok


def test_stdin_env_and_cwd(client: atp.Client, domain: str) -> None:
    payload = bytes(range(256)) * 64  # binary, NULs included
    r = client.run(domain, ["/bin/sh", "-c", "cat; echo; echo tail >&2"], stdin=payload)
    assert (r.exit_code, r.stdout, r.stderr) == (0, payload + b"\n", b"tail\n")
    r = client.run(domain, 'echo "$GREETING" && pwd', env={"GREETING": "hi there"}, cwd="/")
    assert r.stdout == b"hi there\n/\n", r


def test_exec_interactive_streams_stdin(client: atp.Client, domain: str) -> None:
    chunks = [b"hello ", b"from ", b"python\n"]
    r = client.exec_interactive(domain, ["/usr/bin/tr", "a-z", "A-Z"], iter(chunks)).wait()
    assert (r.stdout, r.exit_code) == (b"HELLO FROM PYTHON\n", 0)


def test_timeout_kills_the_program(client: atp.Client, domain: str) -> None:
    r = client.run(domain, ["/bin/sleep", "30"], timeout=0.5)
    assert r.exited.timed_out and not r.ok, r.exited


def test_cancel_kills_a_running_exec(client: atp.Client, domain: str) -> None:
    run = client.exec(domain, ["/bin/sleep", "30"])
    started = next(iter(run))
    assert isinstance(started, atp.Started)
    t0 = time.monotonic()
    assert client.cancel(started.exec_id) is True
    r = run.wait()
    assert not r.ok and r.exited.exit_code is None and r.exited.signal, r.exited
    assert time.monotonic() - t0 < 10
    with pytest.raises(atp.AtpError) as e:
        client.cancel("no-such-exec")
    assert e.value.reason == "EXEC_NOT_FOUND"


def test_run_as_a_guest_user(client: atp.Client, domain: str) -> None:
    # The host agent's `nobody`: harmless. Its login environment, in / (no usable home).
    stdout, _, code = client.run(
        domain, "echo $(id -un) $(id -gn) $USER", user="nobody", group="0", login=True, cwd="/"
    )
    assert (stdout, code) == (b"nobody root nobody\n", 0)
    run = client.exec_interactive(
        domain, ["/bin/sh", "-c", "id -un; cat"], [b"fed\n"], user="65534"
    )
    assert run.wait().stdout == b"nobody\nfed\n"
    with pytest.raises(atp.AtpError) as e:
        client.run(domain, ["id"], user="Not A Name")
    assert e.value.code.name == "INVALID_ARGUMENT", e.value
