#!/usr/bin/env python3
"""A small Python client for the ocloudview-atp daemon (`atp serve`).

It speaks the gRPC contract in proto/ocloudview/atp/v1/guest_agent.proto through stubs
generated with grpcio-tools. They are not committed: on first use they are generated into
`target/python-gen/<key>/` (or $ATP_PYTHON_GEN_DIR/<key>/), where the key changes with
the .proto files and the grpcio-tools/protobuf versions, so a changed contract is picked
up on the next run.

As a library:

    from atp_client import AtpClient

    with AtpClient("unix:///run/atp/atp.sock") as atp:
        print(atp.ping("web-01"), "us")
        out, err, code = atp.run("web-01", ["/bin/uname", "-a"])
        atp.write_file("web-01", "/tmp/hello.txt", b"hello\\n")
        assert atp.read_file("web-01", "/tmp/hello.txt") == b"hello\\n"

As a command:

    atp_client.py --server unix:///run/atp/atp.sock ping web-01
    atp_client.py --server 127.0.0.1:50051 --token "$TOKEN" exec web-01 -- /bin/ls -l /
    atp_client.py --server ... read web-01 /etc/os-release
    atp_client.py --server ... write web-01 /tmp/x.bin --input ./x.bin

Errors: every error status of the daemon carries a machine-readable reason, a
`google.rpc.ErrorInfo` in the status details (docs/api.md, "Error reasons"). Decide on it,
not on the message text:

    try:
        atp.ping("web-01")
    except grpc.RpcError as e:
        why = error_reason(e)  # ErrorReason("POLICY_DENIED", {"plugin": "30-role-exec"})
        if why and why.reason == "AGENT_BUSY":
            ...  # retry later
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, Self

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

REPO = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO / "proto"
PROTO_FILE = "ocloudview/atp/v1/guest_agent.proto"
PB_MODULE = "ocloudview.atp.v1.guest_agent_pb2"

_stubs: tuple[Any, Any] | None = None


# --- generated code ----------------------------------------------------------------------


def _gen_key() -> str:
    """Changes whenever a .proto file or the code generator/runtime version changes."""
    h = hashlib.sha256()
    for p in sorted(PROTO_ROOT.rglob("*.proto")):
        h.update(p.relative_to(PROTO_ROOT).as_posix().encode() + b"\0")
        h.update(p.read_bytes() + b"\0")
    h.update(f"grpcio-tools {version('grpcio-tools')}, protobuf {version('protobuf')}".encode())
    return h.hexdigest()[:16]


def _generate(out: Path) -> None:
    """Runs `python -m grpc_tools.protoc` for the contract into `out` (made importable)."""
    cmd = [
        sys.executable, "-m", "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={out}", f"--grpc_python_out={out}", f"--pyi_out={out}",
        str(PROTO_ROOT / PROTO_FILE),
    ]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    # Regular packages, so nothing else named `ocloudview` on sys.path can shadow them.
    pkg = out
    for part in Path(PROTO_FILE).parent.parts:
        pkg = pkg / part
        (pkg / "__init__.py").touch()


def stubs() -> tuple[Any, Any]:
    """The generated `guest_agent_pb2` and `guest_agent_pb2_grpc` modules, generated on
    first use (concurrent first uses are safe: each generates into a temporary directory
    and the first rename wins)."""
    global _stubs
    if _stubs is None:
        root = Path(os.environ.get("ATP_PYTHON_GEN_DIR") or REPO / "target" / "python-gen")
        final = root / _gen_key()
        if not final.is_dir():
            root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".gen-", dir=root))
            tmp.chmod(0o755)
            try:
                _generate(tmp)
                try:
                    tmp.rename(final)
                except OSError:
                    if not final.is_dir():  # not just a lost race
                        raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        sys.path.insert(0, str(final))
        _stubs = (
            importlib.import_module(PB_MODULE),
            importlib.import_module(PB_MODULE + "_grpc"),
        )
    return _stubs


# --- errors ------------------------------------------------------------------------------

ERROR_DOMAIN = "atp.ocloudview.io"


@dataclass
class ErrorReason:
    """Why the daemon refused or failed a call: `reason` (e.g. POLICY_DENIED,
    GUEST_NOT_FOUND, AGENT_BUSY, LIMIT_EXCEEDED) and what to act on (`plugin`, `limit`,
    `value`, `domain`, `command`... see docs/api.md)."""

    reason: str
    metadata: dict[str, str]

    def __str__(self) -> str:
        extra = " ".join(f"{k}={v}" for k, v in sorted(self.metadata.items()))
        return f"{self.reason} {extra}".strip()


def error_reason(e: grpc.RpcError) -> ErrorReason | None:
    """The daemon's reason for a failed call: the `google.rpc.ErrorInfo` in the status
    details (the `grpc-status-details-bin` trailer), or None when there is none (the call
    failed before the daemon answered, e.g. it is not running)."""
    status = rpc_status.from_call(e)  # type: ignore[arg-type]  # a failed call is a grpc.Call
    if status is None:
        return None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info) and info.domain == ERROR_DOMAIN:
            return ErrorReason(info.reason, dict(info.metadata))
    return None


# --- client ------------------------------------------------------------------------------


class IntegrityError(Exception):
    """A transfer's size or SHA-256 does not match what the daemon reported."""


@dataclass
class ExecResult:
    stdout: bytes
    stderr: bytes
    exit_code: int | None  # None when killed by a signal
    exited: Any  # the ExecExited message: signal, duration_ms, timed_out, ...

    def __iter__(self) -> Iterator[Any]:
        """`stdout, stderr, exit_code = client.run(...)`"""
        return iter((self.stdout, self.stderr, self.exit_code))


def channel_target(server: str) -> tuple[str, list]:
    """gRPC target and channel options for `unix:///path`, `tcp://host:port` or `host:port`."""
    if server.startswith("unix:"):
        # The channel's defaults work: the daemon takes whatever :authority a client
        # derives from the socket path.
        return server, []
    return server.removeprefix("tcp://"), []


class AtpClient:
    """One channel to the daemon. `token` is sent as `authorization: Bearer <token>`;
    `timeout` (seconds) is the deadline of every call (None: no deadline)."""

    def __init__(
        self,
        server: str,
        token: str | None = None,
        timeout: float | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ):
        self.pb, pb_grpc = stubs()
        target, defaults = channel_target(server)
        self.channel = grpc.insecure_channel(target, options=[*defaults, *options])
        self.stub = pb_grpc.GuestAgentStub(self.channel)
        self.metadata = [("authorization", f"Bearer {token}")] if token else []
        self.timeout = timeout

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _kw(self) -> dict:
        return {"metadata": self.metadata, "timeout": self.timeout}

    def ping(self, domain: str) -> int:
        """guest-ping through the daemon; returns the agent round trip in microseconds."""
        return self.stub.Ping(self.pb.PingRequest(domain=domain), **self._kw()).latency_us

    def exec_stream(
        self,
        domain: str,
        argv: Sequence[str],
        stdin: bytes = b"",
        env: Sequence[str] = (),
        cwd: str = "",
        timeout_ms: int = 0,
    ) -> Iterator[tuple[str, Any]]:
        """Runs `argv` in the guest and yields its events as they arrive:
        ("started", ExecStarted), ("stdout", bytes), ("stderr", bytes), ("exited", ExecExited)."""
        req = self.pb.ExecRequest(
            domain=domain,
            argv=self.pb.Argv(path=argv[0], args=list(argv[1:])),
            stdin=stdin,
            env=list(env),
            cwd=cwd,
            timeout_ms=timeout_ms,
        )
        for ev in self.stub.Exec(req, **self._kw()):
            kind = ev.WhichOneof("event")
            yield kind, getattr(ev, kind)

    def run(self, domain: str, argv: Sequence[str], stdin: bytes = b"", **kw: Any) -> ExecResult:
        """Runs `argv` to completion; returns its output and exit status (unpacks as
        `stdout, stderr, exit_code`)."""
        out, err, exited = bytearray(), bytearray(), None
        for kind, value in self.exec_stream(domain, argv, stdin, **kw):
            if kind == "stdout":
                out += value
            elif kind == "stderr":
                err += value
            elif kind == "exited":
                exited = value
        if exited is None:
            raise RuntimeError("exec stream ended without an Exited event")
        code = exited.exit_code if exited.HasField("exit_code") else None
        return ExecResult(bytes(out), bytes(err), code, exited)

    def read_file(self, domain: str, path: str, chunk_size: int = 0) -> bytes:
        """The whole guest file; checks the offsets and the final chunk's size and SHA-256."""
        req = self.pb.ReadFileRequest(domain=domain, path=path, chunk_size=chunk_size)
        data, digest = bytearray(), hashlib.sha256()
        for chunk in self.stub.ReadFile(req, **self._kw()):
            if chunk.offset != len(data):
                raise IntegrityError(f"chunk at offset {chunk.offset}, expected {len(data)}")
            data += chunk.data
            digest.update(chunk.data)
            if chunk.eof:
                if chunk.total_bytes != len(data):
                    raise IntegrityError(f"got {len(data)} bytes, daemon says {chunk.total_bytes}")
                if chunk.sha256 != digest.digest():
                    raise IntegrityError(
                        f"sha256 {digest.hexdigest()}, daemon says {chunk.sha256.hex()}"
                    )
                return bytes(data)
        raise IntegrityError(f"stream ended without an eof chunk after {len(data)} bytes")

    def write_file(
        self,
        domain: str,
        path: str,
        data: bytes,
        chunk: int = 1 << 20,
        mode: int = 0,  # WRITE_MODE_CREATE
        permissions: int | None = None,
    ) -> Any:
        """Writes `data` to the guest file: a header carrying the expected SHA-256 (the
        daemon refuses the write unless it matches), then data messages of `chunk` bytes.
        Returns the WriteFileResponse after checking its size and SHA-256."""
        digest = hashlib.sha256(data).digest()
        header = self.pb.WriteFileHeader(
            domain=domain, path=path, mode=mode, expected_sha256=digest
        )
        if permissions is not None:
            header.permissions = permissions

        def messages() -> Iterator[Any]:
            yield self.pb.WriteFileRequest(header=header)
            view = memoryview(data)
            for i in range(0, len(data), chunk):
                yield self.pb.WriteFileRequest(data=bytes(view[i : i + chunk]))

        resp = self.stub.WriteFile(messages(), **self._kw())
        if resp.bytes_written != len(data) or resp.sha256 != digest:
            raise IntegrityError(
                f"wrote {len(data)} bytes sha256 {digest.hex()}, daemon says "
                f"{resp.bytes_written} bytes sha256 {resp.sha256.hex()}"
            )
        return resp


# --- command line ------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Call an ocloudview-atp daemon.")
    ap.add_argument("--server", required=True, help="unix:///path/atp.sock or host:port")
    ap.add_argument("--token", help="bearer token (sent as `authorization: Bearer ...`)")
    ap.add_argument("--timeout", type=float, help="deadline of each call, seconds")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("ping", help="ping a guest's agent")
    p.add_argument("domain")
    p = sub.add_parser("exec", help="run a program, streaming its output")
    p.add_argument("--stdin", action="store_true", help="send this process's stdin to it")
    p.add_argument("domain")
    p.add_argument("argv", nargs="+", help="program and arguments (put -- before them)")
    p = sub.add_parser("read", help="read a guest file")
    p.add_argument("domain")
    p.add_argument("path")
    p.add_argument("--output", "-o", help="local file (default: stdout)")
    p = sub.add_parser("write", help="write a guest file")
    p.add_argument("domain")
    p.add_argument("path")
    p.add_argument("--input", "-i", help="local file (default: stdin)")
    a = ap.parse_args(argv)

    try:
        with AtpClient(a.server, a.token, a.timeout) as atp:
            if a.cmd == "ping":
                print(f"{a.domain}: agent answered in {atp.ping(a.domain)} us")
            elif a.cmd == "exec":
                stdin = sys.stdin.buffer.read() if a.stdin else b""
                code = 0
                for kind, value in atp.exec_stream(a.domain, a.argv, stdin):
                    if kind in ("stdout", "stderr"):
                        stream = getattr(sys, kind).buffer
                        stream.write(value)
                        stream.flush()
                    elif kind == "exited":
                        code = (
                            value.exit_code if value.HasField("exit_code") else 128 + value.signal
                        )
                return code
            elif a.cmd == "read":
                data = atp.read_file(a.domain, a.path)
                if a.output:
                    Path(a.output).write_bytes(data)
                else:
                    sys.stdout.buffer.write(data)
            elif a.cmd == "write":
                data = Path(a.input).read_bytes() if a.input else sys.stdin.buffer.read()
                resp = atp.write_file(a.domain, a.path, data)
                print(f"wrote {resp.bytes_written} bytes, sha256 {resp.sha256.hex()}")
    except grpc.RpcError as e:
        why = error_reason(e)
        print(f"error: {e.code().name}: {e.details()} [{why or 'no reason'}]", file=sys.stderr)
        return 1
    except IntegrityError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
