"""One exception hierarchy for everything the client raises.

Every error status of the daemon carries a machine-readable reason: a `google.rpc.ErrorInfo`
in the status details (the `grpc-status-details-bin` trailer) with domain
`atp.ocloudview.io`, a `reason` and `metadata` (docs/api.md, "Error reasons"). Failed calls
become an `AtpError` subclass chosen by that reason, so callers decide on the reason, never
on the message text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

ERROR_DOMAIN = "atp.ocloudview.io"
"""The `ErrorInfo.domain` of the daemon's reasons."""

T = TypeVar("T")


class AtpError(Exception):
    """A failed call. `code` is the gRPC status code (None for a failure found by the
    client itself), `reason` the daemon's `ErrorInfo` reason (None when the call failed
    before the daemon answered, e.g. it is not running), `metadata` what to act on
    (`plugin`, `domain`, `limit`...), `details` the status message."""

    reason_name: str | None = None
    """The reason a subclass stands for (None: the base class and client-side errors)."""

    def __init__(
        self,
        details: str,
        *,
        code: grpc.StatusCode | None = None,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(details)
        self.details = details
        self.code = code
        self.reason = reason
        self.metadata: dict[str, str] = dict(metadata or {})

    def __str__(self) -> str:
        code = self.code.name if self.code is not None else "CLIENT"
        why = " ".join([self.reason or "", *(f"{k}={v}" for k, v in sorted(self.metadata.items()))])
        return f"{code}: {self.details}" + (f" [{why.strip()}]" if why.strip() else "")


class InvalidArgument(AtpError):
    """The request is malformed (bad path, mode, checksum...): retrying it as is fails again."""

    reason_name = "INVALID_ARGUMENT"


class Unauthenticated(AtpError):
    """No or bad credentials: send a valid bearer token or client certificate."""

    reason_name = "UNAUTHENTICATED"


class PolicyDenied(AtpError):
    """A policy plugin denied the request; `metadata["plugin"]` names it (`default` for the
    default policy), `metadata["path"]` the resolved guest path when a path was denied."""

    reason_name = "POLICY_DENIED"

    @property
    def plugin(self) -> str | None:
        """The deciding plugin."""
        return self.metadata.get("plugin")


class GuestNotFound(AtpError):
    """No guest of that name (`metadata["domain"]`); `list_domains()` lists them."""

    reason_name = "GUEST_NOT_FOUND"


class GuestNotRunning(AtpError):
    """The guest is not running: start it."""

    reason_name = "GUEST_NOT_RUNNING"


class AgentUnavailable(AtpError):
    """The guest's qemu-ga cannot be reached (it may be starting): retry."""

    reason_name = "AGENT_UNAVAILABLE"


class AgentBusy(AtpError):
    """The agent did not answer in time (it runs one command at a time): retry later."""

    reason_name = "AGENT_BUSY"


class HypervisorUnavailable(AtpError):
    """libvirt could not be reached or failed the call: retry."""

    reason_name = "HYPERVISOR_UNAVAILABLE"


class CommandDisabled(AtpError):
    """The agent command is disabled in the guest (qemu-ga `--block-rpcs`/`--allow-rpcs`)."""

    reason_name = "COMMAND_DISABLED"


class LimitExceeded(AtpError):
    """A bound was reached: `metadata["limit"]` names it, `metadata["value"]` its value."""

    reason_name = "LIMIT_EXCEEDED"


class GuestPathNotFound(AtpError):
    """The guest path does not exist."""

    reason_name = "GUEST_PATH_NOT_FOUND"


class GuestPathExists(AtpError):
    """The guest path exists (an exclusive write)."""

    reason_name = "GUEST_PATH_EXISTS"


class GuestPermissionDenied(AtpError):
    """The guest's own permissions refuse it (not a policy)."""

    reason_name = "GUEST_PERMISSION_DENIED"


class DaemonUnavailable(AtpError):
    """The daemon could not be reached, or is shutting down (`DAEMON_SHUTTING_DOWN`)."""

    reason_name = "DAEMON_SHUTTING_DOWN"


class IntegrityError(AtpError):
    """A transfer's size or SHA-256 differs from what the daemon reported (found by the
    client: `code` and `reason` are None)."""


class ExecFailed(AtpError):
    """`run(..., check=True)` of a program that did not exit with 0; `result` has its
    output and exit status."""

    def __init__(self, details: str, result: object) -> None:
        super().__init__(details)
        self.result = result


_BY_REASON: dict[str, type[AtpError]] = {
    cls.reason_name: cls
    for cls in (
        InvalidArgument,
        Unauthenticated,
        PolicyDenied,
        GuestNotFound,
        GuestNotRunning,
        AgentUnavailable,
        AgentBusy,
        HypervisorUnavailable,
        CommandDisabled,
        LimitExceeded,
        GuestPathNotFound,
        GuestPathExists,
        GuestPermissionDenied,
        DaemonUnavailable,
    )
    if cls.reason_name
}

# Without an ErrorInfo the call failed before the daemon answered (or in the TLS layer).
_BY_CODE: dict[grpc.StatusCode, type[AtpError]] = {
    grpc.StatusCode.UNAVAILABLE: DaemonUnavailable,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
}


def error_info(e: grpc.Call) -> tuple[str, dict[str, str]] | None:
    """The daemon's `(reason, metadata)` for a failed call, or None when it sent none."""
    status = rpc_status.from_call(e)
    if status is None:
        return None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info) and info.domain == ERROR_DOMAIN:
            return info.reason, dict(info.metadata)
    return None


def from_rpc_error(e: grpc.RpcError) -> AtpError:
    """The `AtpError` (subclass by reason, else by code) for a failed gRPC call."""
    if not isinstance(e, grpc.Call):  # every failed call is one; anything else has no status
        return AtpError(str(e))
    code, details = e.code(), e.details() or str(e)
    try:
        info = error_info(e)
    except ValueError:  # a malformed status trailer: keep the code and message
        info = None
    if info is None:
        return _BY_CODE.get(code, AtpError)(details, code=code)
    reason, metadata = info
    cls = _BY_REASON.get(reason, AtpError)
    return cls(details, code=code, reason=reason, metadata=metadata)


def call(fn: Callable[[], T]) -> T:
    """Runs one unary call, raising its failure as an `AtpError`."""
    try:
        return fn()
    except grpc.RpcError as e:
        raise from_rpc_error(e) from e


def stream(it: Iterator[T]) -> Iterator[T]:
    """A response stream whose failure is raised as an `AtpError`."""
    try:
        yield from it
    except grpc.RpcError as e:
        raise from_rpc_error(e) from e
