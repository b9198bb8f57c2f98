# Copyright: ocloudview-atp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The controller side of ocloudview.atp: one gRPC channel to an `atp serve` daemon, the
three calls the connection plugin makes (Exec, WriteFile, ReadFile) with their SHA-256
checks, and the daemon's machine-readable error reason (google.rpc.ErrorInfo).

It knows nothing of Ansible: the connection plugin maps `AtpCallError`s to Ansible's
errors (unreachable or failed) and stays thin.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import tempfile

try:
    import grpc
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    from .atp_pb import guest_agent_pb2 as pb
    from .atp_pb import guest_agent_pb2_grpc as pb_grpc
except ImportError as e:  # reported by the connection plugin, with what to install
    IMPORT_ERROR: Exception | None = e
else:
    IMPORT_ERROR = None

ERROR_DOMAIN = "atp.ocloudview.io"
CHUNK = 1 << 20  # bytes per WriteFile data message (the daemon's default read chunk too)

# Reasons that mean "the guest (or the daemon) cannot be reached now": Ansible's
# unreachable, not a failed task. Everything else (POLICY_DENIED, LIMIT_EXCEEDED,
# GUEST_PATH_NOT_FOUND, ...) is an answer about the request itself.
UNREACHABLE_REASONS = frozenset(
    {
        "UNAUTHENTICATED",
        "GUEST_NOT_FOUND",
        "GUEST_NOT_RUNNING",
        "AGENT_UNAVAILABLE",
        "AGENT_BUSY",
        "HYPERVISOR_UNAVAILABLE",
        "DAEMON_SHUTTING_DOWN",
        "AUDIT_UNAVAILABLE",
    }
)


class AtpCallError(Exception):
    """A failed call: the gRPC code, the daemon's message, and its ErrorInfo reason and
    metadata (None when the daemon never answered, e.g. it is not running)."""

    def __init__(self, what: str, code: str, details: str, reason: str | None, metadata: dict):
        self.what, self.code, self.details = what, code, details
        self.reason, self.metadata = reason, metadata
        extra = " ".join(f"{k}={v}" for k, v in sorted(metadata.items()))
        why = f"{reason} {extra}".strip() if reason else "no reason: the daemon did not answer"
        super().__init__(f"{what}: {code}: {details} [{why}]")

    @property
    def unreachable(self) -> bool:
        """True when the daemon, the hypervisor or the guest's agent cannot be reached."""
        if self.reason is None:
            return self.code in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "UNKNOWN", "INTERNAL")
        return self.reason in UNREACHABLE_REASONS


class IntegrityError(Exception):
    """A transfer whose size or SHA-256 differs from what the daemon reported."""


def call_error(what: str, e: grpc.RpcError) -> AtpCallError:
    """The AtpCallError for a failed call, with the daemon's ErrorInfo when it sent one."""
    reason, metadata = None, {}
    try:
        status = rpc_status.from_call(e)
    except ValueError:  # inconsistent status details: keep the code and message
        status = None
    for detail in status.details if status else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info) and info.domain == ERROR_DOMAIN:
            reason, metadata = info.reason, dict(info.metadata)
            break
    return AtpCallError(what, e.code().name, e.details() or "", reason, metadata)


SLEEP_TAIL = " && sleep 0"  # what Ansible appends to its commands (an ssh workaround)
# Programs Ansible runs around its modules (`chmod u+rwx` after a put, ACL and owner
# fixes for become) that no POSIX shell has as a builtin: `sh -c 'chmod a b'` finds them
# in the PATH the daemon gives every command, which is where the daemon finds them too.
PLAIN_PROGRAMS = frozenset(
    ("chmod", "chown", "chgrp", "setfacl", "mkdir", "rmdir", "rm", "mv", "cp", "ln", "touch")
)


def direct_argv(cmd: str) -> list[str] | None:
    """The cheapest argv that runs `cmd` exactly as `/bin/sh -c <quoted X>` (how Ansible
    wraps every command) would, else None (the caller runs `cmd` with /bin/sh as is).

    Every process costs the guest a fork and an exec, tens of ms under TCG:
    - `X && sleep 0` becomes `X` (same output and status: `sleep 0` only succeeds);
    - X made of plain words (nothing the shell would expand, quote or redirect) whose
      first is an absolute path or one of PLAIN_PROGRAMS runs directly, without the
      shell: a module's `/usr/bin/python3`, the `chmod` after a put (policies then see
      that program and its arguments);
    - anything else runs as `["/bin/sh", "-c", X]`: one shell, not two."""
    head, sep, rest = cmd.partition(" -c ")
    if not sep or not head.startswith("/") or shlex.quote(head) != head:
        return None
    try:
        words = shlex.split(rest)
    except ValueError:
        return None
    if len(words) != 1 or shlex.quote(words[0]) != rest:
        return None
    inner = words[0]
    # One line only (a here-document's end could follow), and what precedes the tail must
    # end a command (not an escaped blank, an operator or a redirection).
    kept = inner[: -len(SLEEP_TAIL)]
    if inner.endswith(SLEEP_TAIL) and "\n" not in inner and kept and kept[-1] not in " \t&|;(<>!\\":
        inner = kept
    plain = inner.split(" ")
    program = plain[0].startswith("/") and "=" not in plain[0] or plain[0] in PLAIN_PROGRAMS
    if program and all(w and shlex.quote(w) == w for w in plain):
        return plain
    return [head, "-c", inner]


class AtpClient:
    """One channel to the daemon. `server` is `unix:///path` or `[tcp://]host:port`;
    TLS when a CA, a client certificate or `tls=True` is given; `token` is sent as
    `authorization: Bearer`. `timeout` bounds connecting (seconds)."""

    def __init__(self, server, token=None, tls=False, ca=None, cert=None, key=None,
                 server_name=None, timeout=10.0):  # fmt: skip
        target = server if server.startswith("unix:") else server.removeprefix("tcp://")
        options = [("grpc.max_receive_message_length", 64 << 20)]
        if tls or ca or cert:
            read = lambda p: open(os.path.expanduser(p), "rb").read() if p else None  # noqa: E731
            creds = grpc.ssl_channel_credentials(read(ca), read(key), read(cert))
            if server_name:
                options.append(("grpc.ssl_target_name_override", server_name))
            self.channel = grpc.secure_channel(target, creds, options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        self.server = server
        self.metadata = [("authorization", f"Bearer {token}")] if token else []
        try:
            grpc.channel_ready_future(self.channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            self.channel.close()
            raise AtpCallError(
                f"connecting to {server}", "UNAVAILABLE",
                f"no connection within {timeout} s (is `atp serve` running there?)", None, {},
            ) from None  # fmt: skip
        self.stub = pb_grpc.GuestAgentStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def run(self, domain: str, cmd: str, stdin: bytes = b"", timeout_s: int = 0):
        """Runs `cmd` through the guest's /bin/sh with `stdin`: (exit, stdout, stderr, exited).
        A signal gives 128 + its number, as a shell reports it."""
        argv = direct_argv(cmd) or ["/bin/sh", "-c", cmd]
        req = pb.ExecRequest(
            domain=domain, argv=pb.Argv(path=argv[0], args=argv[1:]), stdin=stdin,
            timeout_ms=timeout_s * 1000,
        )  # fmt: skip
        out, err, exited = bytearray(), bytearray(), None
        try:
            for ev in self.stub.Exec(req, metadata=self.metadata):
                kind = ev.WhichOneof("event")
                if kind == "stdout":
                    out += ev.stdout
                elif kind == "stderr":
                    err += ev.stderr
                elif kind == "exited":
                    exited = ev.exited
        except grpc.RpcError as e:
            raise call_error(f"Exec on {domain}", e) from None
        if exited is None:
            raise AtpCallError(f"Exec on {domain}", "DATA_LOSS", "stream ended without an exit", None, {})
        code = exited.exit_code if exited.HasField("exit_code") else 128 + exited.signal
        return code, bytes(out), bytes(err), exited

    def write_file(
        self,
        domain: str,
        local: str,
        remote: str,
        atomic: bool = True,
        permissions: int | None = None,
    ) -> int:
        """Copies the local file to the guest: the header carries its SHA-256 (the daemon
        refuses a write that does not match), and the reply's size and digest are checked.
        `atomic=False` writes in place (one guest helper less), for private directories;
        `permissions` sets the file's mode (default: the daemon's)."""
        digest, size = hashlib.sha256(), 0
        with open(local, "rb") as f:
            for block in iter(lambda: f.read(CHUNK), b""):
                digest.update(block)
                size += len(block)
        header = pb.WriteFileHeader(
            domain=domain,
            path=remote,
            expected_sha256=digest.digest(),
            atomic=atomic,
            permissions=permissions,
        )

        def messages():
            yield pb.WriteFileRequest(header=header)
            with open(local, "rb") as f:
                for block in iter(lambda: f.read(CHUNK), b""):
                    yield pb.WriteFileRequest(data=block)

        try:
            resp = self.stub.WriteFile(messages(), metadata=self.metadata)
        except grpc.RpcError as e:
            raise call_error(f"WriteFile {remote} on {domain}", e) from None
        if resp.bytes_written != size or resp.sha256 != digest.digest():
            raise IntegrityError(
                f"wrote {size} bytes sha256 {digest.hexdigest()} to {remote}, the daemon says "
                f"{resp.bytes_written} bytes sha256 {resp.sha256.hex()}"
            )
        return size

    def read_file(self, domain: str, remote: str, local: str) -> int:
        """Copies the guest file to `local` (written beside it, renamed into place only
        after the offsets, the size and the SHA-256 matched the daemon's)."""
        req = pb.ReadFileRequest(domain=domain, path=remote)
        directory = os.path.dirname(os.path.abspath(local))
        fd, tmp = tempfile.mkstemp(prefix=".atp-fetch-", dir=directory)
        digest, size = hashlib.sha256(), 0
        try:
            with os.fdopen(fd, "wb") as f:
                try:
                    for chunk in self.stub.ReadFile(req, metadata=self.metadata):
                        if chunk.offset != size:
                            raise IntegrityError(f"{remote}: chunk at {chunk.offset}, expected {size}")
                        f.write(chunk.data)
                        digest.update(chunk.data)
                        size += len(chunk.data)
                        if chunk.eof:
                            if chunk.total_bytes != size or chunk.sha256 != digest.digest():
                                raise IntegrityError(
                                    f"{remote}: got {size} bytes sha256 {digest.hexdigest()}, the daemon "
                                    f"says {chunk.total_bytes} bytes sha256 {chunk.sha256.hex()}"
                                )
                            break
                    else:
                        raise IntegrityError(f"{remote}: stream ended without its last chunk after {size} bytes")
                except grpc.RpcError as e:
                    raise call_error(f"ReadFile {remote} on {domain}", e) from None
            os.replace(tmp, local)
            tmp = None
        finally:
            if tmp:
                os.unlink(tmp)
        return size
