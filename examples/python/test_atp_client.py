#!/usr/bin/env python3
"""End-to-end check of the Python client against a running daemon (what CI runs through
tests/python_client.rs): Ping, Exec (server stream, live output, stdin), WriteFile (client
stream) and ReadFile (server stream).

    test_atp_client.py --server unix:///tmp/atp.sock --dir /tmp/scratch [--domain host]
        [--denied DOMAIN]

`--dir` is a directory the guest's agent may write to. With `--denied DOMAIN`, a policy
denies pinging DOMAIN: the error's reason must be POLICY_DENIED, naming the plugin. Exits 0 when every check passes,
1 naming the failed check otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import grpc
from atp_client import AtpClient, error_reason


def check(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError(what)


def test_ping(atp: AtpClient, domain: str, _dir: str) -> None:
    latency = atp.ping(domain)
    check(latency > 0, f"Ping latency_us = {latency}, expected > 0")
    print(f"  agent round trip {latency} us")
    try:
        atp.ping("no-such-guest")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.NOT_FOUND, f"unknown guest: {e.code()} {e.details()}")
        # The reason says which NOT_FOUND it is (not a file, not an exec), with the name.
        why = error_reason(e)
        check(
            why is not None and why.reason == "GUEST_NOT_FOUND",
            f"unknown guest: reason {why}, expected GUEST_NOT_FOUND",
        )
        check(why.metadata.get("domain") == "no-such-guest", f"metadata {why.metadata}")
    else:
        raise AssertionError("Ping of an unknown guest succeeded")


def test_exec_streams_live(atp: AtpClient, domain: str, _dir: str) -> None:
    script = "for i in 1 2 3; do echo $i; sleep 0.2; done; echo err >&2; exit 3"
    t0 = time.monotonic()
    events = [
        (time.monotonic() - t0, kind, value)
        for kind, value in atp.exec_stream(domain, ["/bin/sh", "-c", script])
    ]
    kinds = [k for _, k, _ in events]
    check(kinds[0] == "started", f"first event is {kinds[0]}, expected started")
    check(kinds[-1] == "exited" and kinds.count("exited") == 1, f"events: {kinds}")
    started = events[0][2]
    check(started.pid > 0 and started.exec_id != "", f"Started: {started}")
    stdout = b"".join(v for _, k, v in events if k == "stdout")
    stderr = b"".join(v for _, k, v in events if k == "stderr")
    check(stdout == b"1\n2\n3\n", f"stdout {stdout!r}, expected b'1\\n2\\n3\\n'")
    check(stderr == b"err\n", f"stderr {stderr!r}, expected b'err\\n'")
    exited = events[-1][2]
    check(
        exited.HasField("exit_code") and exited.exit_code == 3 and not exited.HasField("signal"),
        f"Exited {exited}, expected exit_code 3",
    )
    check(not exited.timed_out, "Exited says timed_out")
    first_out = next(t for t, k, _ in events if k == "stdout")
    exit_at = events[-1][0]
    print(f"  first stdout after {first_out:.3f} s, Exited after {exit_at:.3f} s; events {kinds}")
    # The script runs ~0.6 s after its first line: live output arrives well before Exited.
    check(
        first_out + 0.1 < exit_at,
        f"first stdout at {first_out:.3f} s is not clearly before Exited at {exit_at:.3f} s",
    )


def test_write_then_read_3_mib(atp: AtpClient, domain: str, scratch: str) -> None:
    data = os.urandom(3 << 20)
    digest = hashlib.sha256(data).digest()
    path = os.path.join(scratch, "py.bin")
    t0 = time.monotonic()
    resp = atp.write_file(domain, path, data)
    t1 = time.monotonic()
    check(resp.bytes_written == len(data), f"bytes_written {resp.bytes_written}")
    check(resp.sha256 == digest, f"WriteFile sha256 {resp.sha256.hex()} != {digest.hex()}")
    back = atp.read_file(domain, path)  # checks the final chunk's size and sha256
    t2 = time.monotonic()
    check(len(back) == len(data), f"read {len(back)} bytes, wrote {len(data)}")
    check(back == data, "read bytes differ from the written bytes")
    check(hashlib.sha256(back).digest() == digest, "read sha256 differs")
    print(
        f"  3 MiB: WriteFile {t1 - t0:.2f} s, ReadFile {t2 - t1:.2f} s, sha256 {digest.hex()[:16]}…"
    )


def test_exec_with_stdin(atp: AtpClient, domain: str, _dir: str) -> None:
    payload = bytes(range(256)) * 64  # binary, NULs included
    r = atp.run(domain, ["/bin/sh", "-c", "cat; echo; echo tail >&2"], stdin=payload)
    check(r.exit_code == 0, f"exit code {r.exit_code}, stderr {r.stderr!r}")
    check(r.stdout == payload + b"\n", f"stdout is {len(r.stdout)} bytes, not stdin echoed back")
    check(r.stderr == b"tail\n", f"stderr {r.stderr!r}")
    out, err, code = atp.run(domain, ["/usr/bin/tr", "a-z", "A-Z"], stdin=b"hello from python\n")
    check((out, err, code) == (b"HELLO FROM PYTHON\n", b"", 0), f"tr: {out!r} {err!r} {code}")


def policy_denial_test(denied: str):  # noqa: ANN201 - returns a test like the others
    """A test that pinging `denied` fails with reason POLICY_DENIED naming the plugin."""

    def test_policy_denial_reason(atp: AtpClient, _domain: str, _dir: str) -> None:
        try:
            atp.ping(denied)
        except grpc.RpcError as e:
            why = error_reason(e)
            print(f"  {e.code().name}: {e.details()} [{why}]")
            check(e.code() == grpc.StatusCode.PERMISSION_DENIED, f"code {e.code()}")
            check(why is not None and why.reason == "POLICY_DENIED", f"reason {why}")
            check(why.metadata.get("plugin", "") != "", f"no plugin in {why.metadata}")
        else:
            raise AssertionError(f"Ping of {denied} was not denied")

    return test_policy_denial_reason


TESTS = [test_ping, test_exec_streams_live, test_write_then_read_3_mib, test_exec_with_stdin]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", required=True, help="unix:///path/atp.sock or host:port")
    ap.add_argument("--dir", required=True, help="scratch directory the guest can write to")
    ap.add_argument("--domain", default="host", help="guest to use (default: host)")
    ap.add_argument("--token", help="bearer token")
    ap.add_argument("--denied", help="a guest name the daemon's policy denies pinging")
    ap.add_argument(
        "--authority",
        help="send this :authority (e.g. the socket path, as grpc-go and grpcurl -unix do)",
    )
    a = ap.parse_args()
    options = [("grpc.default_authority", a.authority)] if a.authority else []
    tests = TESTS + ([policy_denial_test(a.denied)] if a.denied else [])

    failed = []
    with AtpClient(a.server, a.token, timeout=60, options=options) as atp:
        for test in tests:
            print(f"{test.__name__} ...", flush=True)
            try:
                test(atp, a.domain, a.dir)
            except grpc.RpcError as e:
                failed.append(test.__name__)
                print(f"FAIL {test.__name__}: gRPC {e.code().name}: {e.details()}", flush=True)
            except Exception as e:  # noqa: BLE001 - every failure is reported, then the next test runs
                failed.append(test.__name__)
                print(f"FAIL {test.__name__}: {type(e).__name__}: {e}", flush=True)
                traceback.print_exc()
            else:
                print(f"ok   {test.__name__}", flush=True)
    if failed:
        print(f"\n{len(failed)} of {len(tests)} failed: {', '.join(failed)}", flush=True)
        return 1
    print(f"\nall {len(tests)} passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
