"""`connect()` and the `Client`: one channel to the daemon and a method per RPC."""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, overload

import grpc

from . import errors, files
from .channel import Tls, open_channel
from .execution import ExecResult, Execution
from .files import Destination, Progress, Source, Transfer, WriteMode
from .pb import guest_agent_pb2 as pb
from .pb import guest_agent_pb2_grpc as pb_grpc

Command = str | Sequence[str]
"""A program and its arguments (`["/bin/ls", "-l"]`), or a string for the guest's shell."""


def connect(
    target: str,
    *,
    token: str | None = None,
    tls: Tls | bool | None = None,
    timeout: float | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> Client:
    """Opens a channel to the daemon at `target`: `unix:///run/atp/atp.sock` (or
    `unix:relative/path`, or a bare `/abs/path`), `host:port` (plaintext),
    `https://host:port` (TLS with the system's roots), or any TCP form with `tls=Tls(...)`.
    `token` is sent as `authorization: Bearer <token>`; `timeout` (seconds) is the deadline
    of every call, streams included (None: none); `options` are extra gRPC channel options.
    The channel connects lazily: the first call reports an unreachable daemon
    (`DaemonUnavailable`)."""
    return Client(open_channel(target, tls, options), token=token, timeout=timeout)


def _env(env: Mapping[str, str] | Sequence[str] | None) -> list[str]:
    if env is None:
        return []
    if isinstance(env, Mapping):
        return [f"{k}={v}" for k, v in env.items()]
    return list(env)


def exec_request(
    domain: str,
    command: Command,
    *,
    stdin: bytes | None = None,
    env: Mapping[str, str] | Sequence[str] | None = None,
    cwd: str | None = None,
    timeout: float | None = None,
    user: str | None = None,
    group: str | None = None,
    login: bool = False,
) -> pb.ExecRequest:
    """The ExecRequest for `command` (argv, or a shell string) in `domain`; `user` (name
    or uid), `group` and `login` run it as that guest user (POSIX guests)."""
    req = pb.ExecRequest(
        domain=domain,
        env=_env(env),
        stdin=stdin or b"",
        cwd=cwd or "",
        timeout_ms=round(timeout * 1000) if timeout else 0,
        user=user or "",
        group=group or "",
        login=login,
    )
    if isinstance(command, str):
        req.shell = command
    else:
        if not command:
            raise ValueError("exec: empty argv")
        req.argv.CopyFrom(pb.Argv(path=command[0], args=list(command[1:])))
    return req


class Client:
    """One channel to the daemon. Methods raise `AtpError` subclasses (by the daemon's
    reason) on failure. `stub` is the generated `GuestAgentStub` for what is not wrapped,
    to be called with `**client.call_options()`."""

    def __init__(
        self, channel: grpc.Channel, *, token: str | None = None, timeout: float | None = None
    ) -> None:
        self.channel = channel
        self.stub = pb_grpc.GuestAgentStub(channel)
        self._metadata = [("authorization", f"Bearer {token}")] if token else []
        self.timeout = timeout

    def call_options(self) -> dict[str, Any]:
        """The `metadata` (token) and `timeout` keyword arguments of every call."""
        return {"metadata": self._metadata, "timeout": self.timeout}

    def close(self) -> None:
        """Closes the channel."""
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- facts -------------------------------------------------------------------------

    def ping(self, domain: str) -> int:
        """guest-ping through the daemon; the round trip in microseconds."""
        req = pb.PingRequest(domain=domain)
        return errors.call(lambda: self.stub.Ping(req, **self.call_options())).latency_us

    def list_domains(self) -> list[pb.DomainInfo]:
        """Every guest of every backend: name, hypervisor, state, agent connected, OS id."""
        req = pb.ListDomainsRequest()
        return list(errors.call(lambda: self.stub.ListDomains(req, **self.call_options())).domains)

    def agent_info(self, domain: str) -> pb.GetAgentInfoResponse:
        """The agent's version and its commands (and whether each is enabled)."""
        req = pb.GetAgentInfoRequest(domain=domain)
        return errors.call(lambda: self.stub.GetAgentInfo(req, **self.call_options()))

    def os_info(self, domain: str) -> pb.GetOsInfoResponse:
        """The guest OS's identity (`id`, `pretty_name`, `kernel_release`...)."""
        req = pb.GetOsInfoRequest(domain=domain)
        return errors.call(lambda: self.stub.GetOsInfo(req, **self.call_options()))

    def guest_info(self, domain: str) -> pb.GetGuestInfoResponse:
        """Host name, time zone, users, file systems, interfaces, vCPUs and disks, where the
        agent supports them (`unavailable` says why a section is missing)."""
        req = pb.GetGuestInfoRequest(domain=domain)
        return errors.call(lambda: self.stub.GetGuestInfo(req, **self.call_options()))

    def agent_command(
        self, domain: str, command: str, arguments: Any = None, *, timeout: float | None = None
    ) -> Any:
        """A raw qemu-ga command (the baseline policy denies it): `arguments` is sent as
        JSON, the agent's `return` value comes back decoded."""
        req = pb.AgentCommandRequest(
            domain=domain,
            command=command,
            arguments_json="" if arguments is None else json.dumps(arguments),
            timeout_ms=round(timeout * 1000) if timeout else 0,
        )
        resp = errors.call(lambda: self.stub.AgentCommand(req, **self.call_options()))
        return json.loads(resp.return_json) if resp.return_json else None

    # --- exec --------------------------------------------------------------------------

    def exec(
        self,
        domain: str,
        command: Command,
        *,
        stdin: bytes | None = None,
        env: Mapping[str, str] | Sequence[str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        collect: bool = False,
        user: str | None = None,
        group: str | None = None,
        login: bool = False,
    ) -> Execution:
        """Starts `command` (argv list, or a string for the guest's shell) in `domain`.
        Iterate the returned `Execution` for `Started`/`Stdout`/`Stderr`/`Exited` as they
        arrive, or `.wait()` for the result. `timeout` (seconds) kills the program in the
        guest; `collect` asks for output at exit instead of live (COLLECT mode); `user`
        (name or uid), `group` and `login` run it as that guest user."""
        req = exec_request(
            domain,
            command,
            stdin=stdin,
            env=env,
            cwd=cwd,
            timeout=timeout,
            user=user,
            group=group,
            login=login,
        )
        if collect:
            req.mode = pb.EXEC_MODE_COLLECT
        return Execution(self.stub.Exec(req, **self.call_options()))

    def run(self, domain: str, command: Command, *, check: bool = False, **kw: Any) -> ExecResult:
        """`exec(...)` to the end: the collected output and exit status (unpacks as
        `stdout, stderr, exit_code`). With `check`, a non-zero exit raises `ExecFailed`."""
        result = self.exec(domain, command, **kw).wait()
        return result.check() if check else result

    def exec_interactive(
        self,
        domain: str,
        command: Command,
        stdin: Iterable[bytes],
        *,
        env: Mapping[str, str] | Sequence[str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        user: str | None = None,
        group: str | None = None,
        login: bool = False,
    ) -> Execution:
        """Like `exec`, with stdin streamed from `stdin` (an iterable of byte chunks, read
        on gRPC's thread as the program runs); its end closes the program's stdin."""
        req = exec_request(
            domain,
            command,
            env=env,
            cwd=cwd,
            timeout=timeout,
            user=user,
            group=group,
            login=login,
        )

        def messages() -> Iterator[pb.ExecInput]:
            yield pb.ExecInput(start=req)
            for chunk in stdin:
                if chunk:
                    yield pb.ExecInput(stdin=chunk)
            yield pb.ExecInput(eof=True)

        return Execution(self.stub.ExecInteractive(messages(), **self.call_options()))

    def attach(self, exec_id: str) -> Execution:
        """Resumes the event stream of a running or finished exec."""
        req = pb.ExecAttachRequest(exec_id=exec_id)
        return Execution(self.stub.ExecAttach(req, **self.call_options()))

    def cancel(self, exec_id: str) -> bool:
        """Kills a running exec; False when it had already finished."""
        req = pb.ExecCancelRequest(exec_id=exec_id)
        return errors.call(lambda: self.stub.ExecCancel(req, **self.call_options())).killed

    def list_tasks(self, domain: str) -> list[pb.TaskInfo]:
        """The named tasks the policy plugins define for `domain`."""
        req = pb.ListTasksRequest(domain=domain)
        return list(errors.call(lambda: self.stub.ListTasks(req, **self.call_options())).tasks)

    def run_task(
        self, domain: str, task: str, params: Mapping[str, str] | None = None
    ) -> Execution:
        """Starts a named task; its events stream like `exec`'s."""
        req = pb.RunTaskRequest(domain=domain, task=task, params=dict(params or {}))
        return Execution(self.stub.RunTask(req, **self.call_options()))

    # --- files -------------------------------------------------------------------------

    @overload
    def read_file(
        self,
        domain: str,
        path: str,
        dest: None = None,
        *,
        progress: Progress | None = None,
        offset: int = 0,
        length: int = 0,
        chunk_size: int = 0,
    ) -> bytes: ...

    @overload
    def read_file(
        self,
        domain: str,
        path: str,
        dest: Destination,
        *,
        progress: Progress | None = None,
        offset: int = 0,
        length: int = 0,
        chunk_size: int = 0,
    ) -> Transfer: ...

    def read_file(
        self,
        domain: str,
        path: str,
        dest: Destination | None = None,
        *,
        progress: Progress | None = None,
        offset: int = 0,
        length: int = 0,
        chunk_size: int = 0,
    ) -> bytes | Transfer:
        """Reads a guest file (from `offset`, `length` bytes or to its end), checking the
        size and SHA-256 of the final chunk (`IntegrityError` otherwise). Without `dest`
        returns the bytes; with a local path or binary file object writes there and returns
        the `Transfer`. `progress(done, total)` is called after each chunk."""
        req = pb.ReadFileRequest(
            domain=domain, path=path, offset=offset, length=length, chunk_size=chunk_size
        )
        chunks = self.stub.ReadFile(req, **self.call_options())
        try:
            if dest is None:
                buf = io.BytesIO()
                files.read_into(chunks, buf, offset, length, progress)
                return buf.getvalue()
            if isinstance(dest, (str, os.PathLike)):
                return files.read_to_path(chunks, dest, offset, length, progress)
            return files.read_into(chunks, dest, offset, length, progress)
        finally:
            chunks.cancel()  # a no-op after the end; stops the stream after a failed check

    def write_file(
        self,
        domain: str,
        path: str,
        src: Source,
        *,
        mode: int | None = None,
        write_mode: WriteMode = "create",
        atomic: bool | None = None,
        sha256: bytes | None = None,
        progress: Progress | None = None,
        chunk_size: int = files.CHUNK,
    ) -> Transfer:
        """Writes a guest file from bytes, a local file's path or a binary file object.
        The header carries the data's SHA-256 (computed here unless `sha256` gives it), so
        the daemon refuses data that does not match and, with `atomic` (the daemon's
        default), leaves the target untouched. `mode`: permission bits (e.g. 0o644);
        `write_mode`: create, truncate, append or exclusive. Returns the checked
        `Transfer`; `progress(done, total)` is called after each chunk sent (on gRPC's
        thread)."""
        with contextlib.ExitStack() as stack:
            if isinstance(src, (str, os.PathLike)):
                src = stack.enter_context(open(src, "rb"))
            f, size, digest = files.open_source(src, sha256)
            header = files.write_header(domain, path, digest, write_mode, mode, atomic)
            requests = files.write_requests(header, f, size, chunk_size, progress)
            resp = errors.call(lambda: self.stub.WriteFile(requests, **self.call_options()))
            return files.check_written(resp, size, digest)
