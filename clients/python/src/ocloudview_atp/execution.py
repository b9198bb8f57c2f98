"""A program running in a guest: its typed events as they arrive, and its result."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from . import errors
from .errors import AtpError, ExecFailed
from .pb import guest_agent_pb2 as pb


@dataclass(frozen=True)
class Started:
    """The program started: `exec_id` names it for `attach()`/`cancel()`, `pid` is the
    guest process id."""

    exec_id: str
    pid: int


@dataclass(frozen=True)
class Stdout:
    """Bytes the program wrote to stdout, as they arrived."""

    data: bytes


@dataclass(frozen=True)
class Stderr:
    """Bytes the program wrote to stderr, as they arrived."""

    data: bytes


@dataclass(frozen=True)
class Exited:
    """The program ended: `exit_code`, or `signal` when a signal killed it; `timed_out`
    when the exec's timeout killed it; `*_truncated` when the guest capped the output."""

    exit_code: int | None
    signal: int | None
    duration_ms: int
    stdout_truncated: bool
    stderr_truncated: bool
    timed_out: bool


ExecEvent = Started | Stdout | Stderr | Exited
"""One event of an exec stream."""


def to_event(ev: pb.ExecEvent) -> ExecEvent:
    """The typed event for a generated `ExecEvent` message."""
    kind = ev.WhichOneof("event")
    if kind == "started":
        return Started(ev.started.exec_id, ev.started.pid)
    if kind == "stdout":
        return Stdout(ev.stdout)
    if kind == "stderr":
        return Stderr(ev.stderr)
    if kind == "exited":
        x = ev.exited
        return Exited(
            exit_code=x.exit_code if x.HasField("exit_code") else None,
            signal=x.signal if x.HasField("signal") else None,
            duration_ms=x.duration_ms,
            stdout_truncated=x.stdout_truncated,
            stderr_truncated=x.stderr_truncated,
            timed_out=x.timed_out,
        )
    raise AtpError(f"exec stream sent an event this client does not know: {kind}")


@dataclass(frozen=True)
class ExecResult:
    """What a finished program did: its collected output and how it ended. Unpacks as
    `stdout, stderr, exit_code`."""

    stdout: bytes
    stderr: bytes
    exited: Exited
    exec_id: str = ""

    @property
    def exit_code(self) -> int | None:
        """The exit code; None when a signal killed the program."""
        return self.exited.exit_code

    @property
    def ok(self) -> bool:
        """Whether the program exited with 0."""
        return self.exited.exit_code == 0

    def check(self) -> ExecResult:
        """Returns self when the program exited with 0, else raises `ExecFailed`."""
        if not self.ok:
            x = self.exited
            how = f"exit code {x.exit_code}" if x.exit_code is not None else f"signal {x.signal}"
            if x.timed_out:
                how += " (timed out)"
            raise ExecFailed(f"the program ended with {how}", self)
        return self

    def __iter__(self) -> Iterator[Any]:
        return iter((self.stdout, self.stderr, self.exit_code))


class Execution:
    """A running exec. Iterate it for its typed events as they arrive (once); `wait()`
    reads the rest and returns the `ExecResult`. The output is collected either way. Use
    it as a context manager, or `close()` it, to drop the stream early (the program keeps
    running in the guest: `Client.attach()` resumes it, `Client.cancel()` kills it).
    A refused or failed call raises its `AtpError` from the iteration (or `wait()`)."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self._events = errors.stream(call)
        self._stdout = bytearray()
        self._stderr = bytearray()
        self._exited: Exited | None = None
        self.started: Started | None = None
        """The Started event, once it arrived."""

    @property
    def exec_id(self) -> str:
        """The exec's id (empty until Started arrived)."""
        return self.started.exec_id if self.started else ""

    def __iter__(self) -> Iterator[ExecEvent]:
        for message in self._events:
            ev = to_event(message)
            if isinstance(ev, Started):
                self.started = ev
            elif isinstance(ev, Stdout):
                self._stdout += ev.data
            elif isinstance(ev, Stderr):
                self._stderr += ev.data
            else:
                self._exited = ev
            yield ev

    def wait(self) -> ExecResult:
        """Reads the remaining events; returns the output and exit status."""
        for _ in self:
            pass
        if self._exited is None:
            raise AtpError("the exec stream ended without an Exited event (detached?)")
        return ExecResult(bytes(self._stdout), bytes(self._stderr), self._exited, self.exec_id)

    def close(self) -> None:
        """Drops the event stream (the program keeps running in the guest)."""
        if isinstance(self._call, grpc.Future):
            self._call.cancel()

    def __enter__(self) -> Execution:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
