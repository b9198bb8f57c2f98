"""Python client of the ocloudview-atp daemon (`atp serve`): policy-controlled, audited
access to KVM guests' QEMU Guest Agent over gRPC.

    import ocloudview_atp as atp

    with atp.connect("unix:///run/atp/atp.sock") as c:
        print(c.ping("web-01"), "us")
        for ev in c.exec("web-01", ["/bin/uname", "-a"]):
            if isinstance(ev, atp.Stdout):
                print(ev.data.decode(), end="")
        c.write_file("web-01", "/tmp/hello.txt", b"hello\\n")
        assert c.read_file("web-01", "/tmp/hello.txt") == b"hello\\n"

Failures raise `AtpError` subclasses chosen by the daemon's reason (`PolicyDenied`,
`GuestNotFound`, `Unauthenticated`, `AgentUnavailable`...). The generated gRPC stubs are
`ocloudview_atp.pb` (`guest_agent_pb2`, `guest_agent_pb2_grpc`).
"""

from .channel import Tls
from .client import Client, Command, connect
from .errors import (
    AgentBusy,
    AgentUnavailable,
    AtpError,
    CommandDisabled,
    DaemonUnavailable,
    ExecFailed,
    GuestNotFound,
    GuestNotRunning,
    GuestPathExists,
    GuestPathNotFound,
    GuestPermissionDenied,
    HypervisorUnavailable,
    IntegrityError,
    InvalidArgument,
    LimitExceeded,
    PolicyDenied,
    Unauthenticated,
    from_rpc_error,
)
from .execution import ExecEvent, ExecResult, Execution, Exited, Started, Stderr, Stdout
from .files import Progress, Transfer, WriteMode

__all__ = [
    "AgentBusy",
    "AgentUnavailable",
    "AtpError",
    "Client",
    "Command",
    "CommandDisabled",
    "DaemonUnavailable",
    "ExecEvent",
    "ExecFailed",
    "ExecResult",
    "Execution",
    "Exited",
    "GuestNotFound",
    "GuestNotRunning",
    "GuestPathExists",
    "GuestPathNotFound",
    "GuestPermissionDenied",
    "HypervisorUnavailable",
    "IntegrityError",
    "InvalidArgument",
    "LimitExceeded",
    "PolicyDenied",
    "Progress",
    "Started",
    "Stderr",
    "Stdout",
    "Tls",
    "Transfer",
    "Unauthenticated",
    "WriteMode",
    "connect",
    "from_rpc_error",
]
