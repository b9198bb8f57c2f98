from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExecMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXEC_MODE_STREAM: _ClassVar[ExecMode]
    EXEC_MODE_COLLECT: _ClassVar[ExecMode]

class WriteMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WRITE_MODE_CREATE: _ClassVar[WriteMode]
    WRITE_MODE_TRUNCATE: _ClassVar[WriteMode]
    WRITE_MODE_APPEND: _ClassVar[WriteMode]
    WRITE_MODE_EXCLUSIVE: _ClassVar[WriteMode]

class EntryKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENTRY_KIND_UNSPECIFIED: _ClassVar[EntryKind]
    ENTRY_KIND_FILE: _ClassVar[EntryKind]
    ENTRY_KIND_DIR: _ClassVar[EntryKind]
    ENTRY_KIND_SYMLINK: _ClassVar[EntryKind]
    ENTRY_KIND_FIFO: _ClassVar[EntryKind]
    ENTRY_KIND_HARDLINK: _ClassVar[EntryKind]
    ENTRY_KIND_OTHER: _ClassVar[EntryKind]
EXEC_MODE_STREAM: ExecMode
EXEC_MODE_COLLECT: ExecMode
WRITE_MODE_CREATE: WriteMode
WRITE_MODE_TRUNCATE: WriteMode
WRITE_MODE_APPEND: WriteMode
WRITE_MODE_EXCLUSIVE: WriteMode
ENTRY_KIND_UNSPECIFIED: EntryKind
ENTRY_KIND_FILE: EntryKind
ENTRY_KIND_DIR: EntryKind
ENTRY_KIND_SYMLINK: EntryKind
ENTRY_KIND_FIFO: EntryKind
ENTRY_KIND_HARDLINK: EntryKind
ENTRY_KIND_OTHER: EntryKind

class PingRequest(_message.Message):
    __slots__ = ("domain",)
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    domain: str
    def __init__(self, domain: _Optional[str] = ...) -> None: ...

class PingResponse(_message.Message):
    __slots__ = ("latency_us",)
    LATENCY_US_FIELD_NUMBER: _ClassVar[int]
    latency_us: int
    def __init__(self, latency_us: _Optional[int] = ...) -> None: ...

class GetAgentInfoRequest(_message.Message):
    __slots__ = ("domain",)
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    domain: str
    def __init__(self, domain: _Optional[str] = ...) -> None: ...

class GetAgentInfoResponse(_message.Message):
    __slots__ = ("version", "supported_commands")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SUPPORTED_COMMANDS_FIELD_NUMBER: _ClassVar[int]
    version: str
    supported_commands: _containers.RepeatedCompositeFieldContainer[AgentCommandInfo]
    def __init__(self, version: _Optional[str] = ..., supported_commands: _Optional[_Iterable[_Union[AgentCommandInfo, _Mapping]]] = ...) -> None: ...

class AgentCommandInfo(_message.Message):
    __slots__ = ("name", "enabled", "success_response")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    name: str
    enabled: bool
    success_response: bool
    def __init__(self, name: _Optional[str] = ..., enabled: _Optional[bool] = ..., success_response: _Optional[bool] = ...) -> None: ...

class GetOsInfoRequest(_message.Message):
    __slots__ = ("domain",)
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    domain: str
    def __init__(self, domain: _Optional[str] = ...) -> None: ...

class GetOsInfoResponse(_message.Message):
    __slots__ = ("id", "name", "pretty_name", "version", "version_id", "kernel_release", "kernel_version", "machine", "variant", "variant_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PRETTY_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    KERNEL_RELEASE_FIELD_NUMBER: _ClassVar[int]
    KERNEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MACHINE_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    VARIANT_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    pretty_name: str
    version: str
    version_id: str
    kernel_release: str
    kernel_version: str
    machine: str
    variant: str
    variant_id: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., pretty_name: _Optional[str] = ..., version: _Optional[str] = ..., version_id: _Optional[str] = ..., kernel_release: _Optional[str] = ..., kernel_version: _Optional[str] = ..., machine: _Optional[str] = ..., variant: _Optional[str] = ..., variant_id: _Optional[str] = ...) -> None: ...

class ListDomainsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListDomainsResponse(_message.Message):
    __slots__ = ("domains",)
    DOMAINS_FIELD_NUMBER: _ClassVar[int]
    domains: _containers.RepeatedCompositeFieldContainer[DomainInfo]
    def __init__(self, domains: _Optional[_Iterable[_Union[DomainInfo, _Mapping]]] = ...) -> None: ...

class DomainInfo(_message.Message):
    __slots__ = ("name", "hypervisor", "state", "agent_connected", "os_id", "uuid")
    NAME_FIELD_NUMBER: _ClassVar[int]
    HYPERVISOR_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    AGENT_CONNECTED_FIELD_NUMBER: _ClassVar[int]
    OS_ID_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    name: str
    hypervisor: str
    state: str
    agent_connected: bool
    os_id: str
    uuid: str
    def __init__(self, name: _Optional[str] = ..., hypervisor: _Optional[str] = ..., state: _Optional[str] = ..., agent_connected: _Optional[bool] = ..., os_id: _Optional[str] = ..., uuid: _Optional[str] = ...) -> None: ...

class GetGuestInfoRequest(_message.Message):
    __slots__ = ("domain",)
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    domain: str
    def __init__(self, domain: _Optional[str] = ...) -> None: ...

class GetGuestInfoResponse(_message.Message):
    __slots__ = ("hostname", "timezone", "timezone_offset_s", "users", "filesystems", "interfaces", "vcpus_online", "disks", "unavailable")
    class UnavailableEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    TIMEZONE_FIELD_NUMBER: _ClassVar[int]
    TIMEZONE_OFFSET_S_FIELD_NUMBER: _ClassVar[int]
    USERS_FIELD_NUMBER: _ClassVar[int]
    FILESYSTEMS_FIELD_NUMBER: _ClassVar[int]
    INTERFACES_FIELD_NUMBER: _ClassVar[int]
    VCPUS_ONLINE_FIELD_NUMBER: _ClassVar[int]
    DISKS_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_FIELD_NUMBER: _ClassVar[int]
    hostname: str
    timezone: str
    timezone_offset_s: int
    users: _containers.RepeatedCompositeFieldContainer[GuestUser]
    filesystems: _containers.RepeatedCompositeFieldContainer[GuestFilesystem]
    interfaces: _containers.RepeatedCompositeFieldContainer[GuestInterface]
    vcpus_online: int
    disks: _containers.RepeatedCompositeFieldContainer[GuestDisk]
    unavailable: _containers.ScalarMap[str, str]
    def __init__(self, hostname: _Optional[str] = ..., timezone: _Optional[str] = ..., timezone_offset_s: _Optional[int] = ..., users: _Optional[_Iterable[_Union[GuestUser, _Mapping]]] = ..., filesystems: _Optional[_Iterable[_Union[GuestFilesystem, _Mapping]]] = ..., interfaces: _Optional[_Iterable[_Union[GuestInterface, _Mapping]]] = ..., vcpus_online: _Optional[int] = ..., disks: _Optional[_Iterable[_Union[GuestDisk, _Mapping]]] = ..., unavailable: _Optional[_Mapping[str, str]] = ...) -> None: ...

class GuestUser(_message.Message):
    __slots__ = ("user", "login_time", "domain")
    USER_FIELD_NUMBER: _ClassVar[int]
    LOGIN_TIME_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    user: str
    login_time: float
    domain: str
    def __init__(self, user: _Optional[str] = ..., login_time: _Optional[float] = ..., domain: _Optional[str] = ...) -> None: ...

class GuestFilesystem(_message.Message):
    __slots__ = ("name", "mountpoint", "type", "used_bytes", "total_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MOUNTPOINT_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    mountpoint: str
    type: str
    used_bytes: int
    total_bytes: int
    def __init__(self, name: _Optional[str] = ..., mountpoint: _Optional[str] = ..., type: _Optional[str] = ..., used_bytes: _Optional[int] = ..., total_bytes: _Optional[int] = ...) -> None: ...

class GuestInterface(_message.Message):
    __slots__ = ("name", "hardware_address", "ip_addresses")
    NAME_FIELD_NUMBER: _ClassVar[int]
    HARDWARE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    IP_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    name: str
    hardware_address: str
    ip_addresses: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., hardware_address: _Optional[str] = ..., ip_addresses: _Optional[_Iterable[str]] = ...) -> None: ...

class GuestDisk(_message.Message):
    __slots__ = ("name", "partition", "alias")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    name: str
    partition: bool
    alias: str
    def __init__(self, name: _Optional[str] = ..., partition: _Optional[bool] = ..., alias: _Optional[str] = ...) -> None: ...

class ExecRequest(_message.Message):
    __slots__ = ("domain", "argv", "shell", "env", "stdin", "timeout_ms", "cwd", "mode", "detach", "tty", "tty_size", "user", "group", "login")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    ARGV_FIELD_NUMBER: _ClassVar[int]
    SHELL_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    CWD_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    DETACH_FIELD_NUMBER: _ClassVar[int]
    TTY_FIELD_NUMBER: _ClassVar[int]
    TTY_SIZE_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    LOGIN_FIELD_NUMBER: _ClassVar[int]
    domain: str
    argv: Argv
    shell: str
    env: _containers.RepeatedScalarFieldContainer[str]
    stdin: bytes
    timeout_ms: int
    cwd: str
    mode: ExecMode
    detach: bool
    tty: bool
    tty_size: TerminalSize
    user: str
    group: str
    login: bool
    def __init__(self, domain: _Optional[str] = ..., argv: _Optional[_Union[Argv, _Mapping]] = ..., shell: _Optional[str] = ..., env: _Optional[_Iterable[str]] = ..., stdin: _Optional[bytes] = ..., timeout_ms: _Optional[int] = ..., cwd: _Optional[str] = ..., mode: _Optional[_Union[ExecMode, str]] = ..., detach: _Optional[bool] = ..., tty: _Optional[bool] = ..., tty_size: _Optional[_Union[TerminalSize, _Mapping]] = ..., user: _Optional[str] = ..., group: _Optional[str] = ..., login: _Optional[bool] = ...) -> None: ...

class ExecInput(_message.Message):
    __slots__ = ("start", "stdin", "eof", "resize", "signal")
    START_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    EOF_FIELD_NUMBER: _ClassVar[int]
    RESIZE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    start: ExecRequest
    stdin: bytes
    eof: bool
    resize: TerminalSize
    signal: int
    def __init__(self, start: _Optional[_Union[ExecRequest, _Mapping]] = ..., stdin: _Optional[bytes] = ..., eof: _Optional[bool] = ..., resize: _Optional[_Union[TerminalSize, _Mapping]] = ..., signal: _Optional[int] = ...) -> None: ...

class TerminalSize(_message.Message):
    __slots__ = ("rows", "cols")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    COLS_FIELD_NUMBER: _ClassVar[int]
    rows: int
    cols: int
    def __init__(self, rows: _Optional[int] = ..., cols: _Optional[int] = ...) -> None: ...

class Argv(_message.Message):
    __slots__ = ("path", "args")
    PATH_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    path: str
    args: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, path: _Optional[str] = ..., args: _Optional[_Iterable[str]] = ...) -> None: ...

class ExecEvent(_message.Message):
    __slots__ = ("started", "stdout", "stderr", "exited")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    EXITED_FIELD_NUMBER: _ClassVar[int]
    started: ExecStarted
    stdout: bytes
    stderr: bytes
    exited: ExecExited
    def __init__(self, started: _Optional[_Union[ExecStarted, _Mapping]] = ..., stdout: _Optional[bytes] = ..., stderr: _Optional[bytes] = ..., exited: _Optional[_Union[ExecExited, _Mapping]] = ...) -> None: ...

class ExecStarted(_message.Message):
    __slots__ = ("exec_id", "pid")
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    exec_id: str
    pid: int
    def __init__(self, exec_id: _Optional[str] = ..., pid: _Optional[int] = ...) -> None: ...

class ExecExited(_message.Message):
    __slots__ = ("exit_code", "signal", "duration_ms", "stdout_truncated", "stderr_truncated", "timed_out")
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    STDOUT_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    STDERR_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    TIMED_OUT_FIELD_NUMBER: _ClassVar[int]
    exit_code: int
    signal: int
    duration_ms: int
    stdout_truncated: bool
    stderr_truncated: bool
    timed_out: bool
    def __init__(self, exit_code: _Optional[int] = ..., signal: _Optional[int] = ..., duration_ms: _Optional[int] = ..., stdout_truncated: _Optional[bool] = ..., stderr_truncated: _Optional[bool] = ..., timed_out: _Optional[bool] = ...) -> None: ...

class ExecAttachRequest(_message.Message):
    __slots__ = ("exec_id",)
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    exec_id: str
    def __init__(self, exec_id: _Optional[str] = ...) -> None: ...

class ExecCancelRequest(_message.Message):
    __slots__ = ("exec_id",)
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    exec_id: str
    def __init__(self, exec_id: _Optional[str] = ...) -> None: ...

class ExecCancelResponse(_message.Message):
    __slots__ = ("killed",)
    KILLED_FIELD_NUMBER: _ClassVar[int]
    killed: bool
    def __init__(self, killed: _Optional[bool] = ...) -> None: ...

class ReadFileRequest(_message.Message):
    __slots__ = ("domain", "path", "offset", "length", "chunk_size")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    domain: str
    path: str
    offset: int
    length: int
    chunk_size: int
    def __init__(self, domain: _Optional[str] = ..., path: _Optional[str] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ..., chunk_size: _Optional[int] = ...) -> None: ...

class FileChunk(_message.Message):
    __slots__ = ("offset", "data", "eof", "total_bytes", "sha256", "file_size")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    EOF_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    FILE_SIZE_FIELD_NUMBER: _ClassVar[int]
    offset: int
    data: bytes
    eof: bool
    total_bytes: int
    sha256: bytes
    file_size: int
    def __init__(self, offset: _Optional[int] = ..., data: _Optional[bytes] = ..., eof: _Optional[bool] = ..., total_bytes: _Optional[int] = ..., sha256: _Optional[bytes] = ..., file_size: _Optional[int] = ...) -> None: ...

class WriteFileRequest(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: WriteFileHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[WriteFileHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class WriteFileHeader(_message.Message):
    __slots__ = ("domain", "path", "mode", "permissions", "atomic", "expected_sha256")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PERMISSIONS_FIELD_NUMBER: _ClassVar[int]
    ATOMIC_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_SHA256_FIELD_NUMBER: _ClassVar[int]
    domain: str
    path: str
    mode: WriteMode
    permissions: int
    atomic: bool
    expected_sha256: bytes
    def __init__(self, domain: _Optional[str] = ..., path: _Optional[str] = ..., mode: _Optional[_Union[WriteMode, str]] = ..., permissions: _Optional[int] = ..., atomic: _Optional[bool] = ..., expected_sha256: _Optional[bytes] = ...) -> None: ...

class WriteFileResponse(_message.Message):
    __slots__ = ("bytes_written", "sha256")
    BYTES_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    bytes_written: int
    sha256: bytes
    def __init__(self, bytes_written: _Optional[int] = ..., sha256: _Optional[bytes] = ...) -> None: ...

class AgentCommandRequest(_message.Message):
    __slots__ = ("domain", "command", "arguments_json", "timeout_ms")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    domain: str
    command: str
    arguments_json: str
    timeout_ms: int
    def __init__(self, domain: _Optional[str] = ..., command: _Optional[str] = ..., arguments_json: _Optional[str] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class AgentCommandResponse(_message.Message):
    __slots__ = ("return_json",)
    RETURN_JSON_FIELD_NUMBER: _ClassVar[int]
    return_json: str
    def __init__(self, return_json: _Optional[str] = ...) -> None: ...

class ListTasksRequest(_message.Message):
    __slots__ = ("domain",)
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    domain: str
    def __init__(self, domain: _Optional[str] = ...) -> None: ...

class ListTasksResponse(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[TaskInfo]
    def __init__(self, tasks: _Optional[_Iterable[_Union[TaskInfo, _Mapping]]] = ...) -> None: ...

class TaskInfo(_message.Message):
    __slots__ = ("name", "description", "params")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    params: _containers.RepeatedCompositeFieldContainer[TaskParam]
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., params: _Optional[_Iterable[_Union[TaskParam, _Mapping]]] = ...) -> None: ...

class TaskParam(_message.Message):
    __slots__ = ("name", "allowed_values", "required")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_VALUES_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    name: str
    allowed_values: _containers.RepeatedScalarFieldContainer[str]
    required: bool
    def __init__(self, name: _Optional[str] = ..., allowed_values: _Optional[_Iterable[str]] = ..., required: _Optional[bool] = ...) -> None: ...

class RunTaskRequest(_message.Message):
    __slots__ = ("domain", "task", "params")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    domain: str
    task: str
    params: _containers.ScalarMap[str, str]
    def __init__(self, domain: _Optional[str] = ..., task: _Optional[str] = ..., params: _Optional[_Mapping[str, str]] = ...) -> None: ...

class TreeEntry(_message.Message):
    __slots__ = ("path", "kind", "mode", "mtime", "size", "target", "uid", "gid")
    PATH_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    MTIME_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    GID_FIELD_NUMBER: _ClassVar[int]
    path: str
    kind: EntryKind
    mode: int
    mtime: int
    size: int
    target: str
    uid: int
    gid: int
    def __init__(self, path: _Optional[str] = ..., kind: _Optional[_Union[EntryKind, str]] = ..., mode: _Optional[int] = ..., mtime: _Optional[int] = ..., size: _Optional[int] = ..., target: _Optional[str] = ..., uid: _Optional[int] = ..., gid: _Optional[int] = ...) -> None: ...

class TreeSummary(_message.Message):
    __slots__ = ("entries", "bytes", "largest")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    LARGEST_FIELD_NUMBER: _ClassVar[int]
    entries: int
    bytes: int
    largest: int
    def __init__(self, entries: _Optional[int] = ..., bytes: _Optional[int] = ..., largest: _Optional[int] = ...) -> None: ...

class PushTreeHeader(_message.Message):
    __slots__ = ("domain", "path", "summary", "overwrite", "allow_special")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    OVERWRITE_FIELD_NUMBER: _ClassVar[int]
    ALLOW_SPECIAL_FIELD_NUMBER: _ClassVar[int]
    domain: str
    path: str
    summary: TreeSummary
    overwrite: bool
    allow_special: bool
    def __init__(self, domain: _Optional[str] = ..., path: _Optional[str] = ..., summary: _Optional[_Union[TreeSummary, _Mapping]] = ..., overwrite: _Optional[bool] = ..., allow_special: _Optional[bool] = ...) -> None: ...

class PushTreeRequest(_message.Message):
    __slots__ = ("header", "entry", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: PushTreeHeader
    entry: TreeEntry
    data: bytes
    def __init__(self, header: _Optional[_Union[PushTreeHeader, _Mapping]] = ..., entry: _Optional[_Union[TreeEntry, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class PushTreeResponse(_message.Message):
    __slots__ = ("entries", "bytes", "archive_sha256", "replaced")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    ARCHIVE_SHA256_FIELD_NUMBER: _ClassVar[int]
    REPLACED_FIELD_NUMBER: _ClassVar[int]
    entries: int
    bytes: int
    archive_sha256: bytes
    replaced: bool
    def __init__(self, entries: _Optional[int] = ..., bytes: _Optional[int] = ..., archive_sha256: _Optional[bytes] = ..., replaced: _Optional[bool] = ...) -> None: ...

class PullTreeRequest(_message.Message):
    __slots__ = ("domain", "path", "allow_special")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    ALLOW_SPECIAL_FIELD_NUMBER: _ClassVar[int]
    domain: str
    path: str
    allow_special: bool
    def __init__(self, domain: _Optional[str] = ..., path: _Optional[str] = ..., allow_special: _Optional[bool] = ...) -> None: ...

class PullTreeResponse(_message.Message):
    __slots__ = ("summary", "entry", "data", "file_sha256", "done")
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    FILE_SHA256_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    summary: PullTreeSummary
    entry: TreeEntry
    data: bytes
    file_sha256: bytes
    done: PullTreeDone
    def __init__(self, summary: _Optional[_Union[PullTreeSummary, _Mapping]] = ..., entry: _Optional[_Union[TreeEntry, _Mapping]] = ..., data: _Optional[bytes] = ..., file_sha256: _Optional[bytes] = ..., done: _Optional[_Union[PullTreeDone, _Mapping]] = ...) -> None: ...

class PullTreeSummary(_message.Message):
    __slots__ = ("archive_bytes", "path")
    ARCHIVE_BYTES_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    archive_bytes: int
    path: str
    def __init__(self, archive_bytes: _Optional[int] = ..., path: _Optional[str] = ...) -> None: ...

class PullTreeDone(_message.Message):
    __slots__ = ("summary", "archive_sha256")
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    ARCHIVE_SHA256_FIELD_NUMBER: _ClassVar[int]
    summary: TreeSummary
    archive_sha256: bytes
    def __init__(self, summary: _Optional[_Union[TreeSummary, _Mapping]] = ..., archive_sha256: _Optional[bytes] = ...) -> None: ...

class ListDirRequest(_message.Message):
    __slots__ = ("domain", "path", "limit")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    domain: str
    path: str
    limit: int
    def __init__(self, domain: _Optional[str] = ..., path: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListDirResponse(_message.Message):
    __slots__ = ("stat", "entries", "truncated")
    STAT_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    stat: TreeEntry
    entries: _containers.RepeatedCompositeFieldContainer[TreeEntry]
    truncated: bool
    def __init__(self, stat: _Optional[_Union[TreeEntry, _Mapping]] = ..., entries: _Optional[_Iterable[_Union[TreeEntry, _Mapping]]] = ..., truncated: _Optional[bool] = ...) -> None: ...

class FsFreezeRequest(_message.Message):
    __slots__ = ("domain", "mountpoints", "thaw_deadline_s")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    MOUNTPOINTS_FIELD_NUMBER: _ClassVar[int]
    THAW_DEADLINE_S_FIELD_NUMBER: _ClassVar[int]
    domain: str
    mountpoints: _containers.RepeatedScalarFieldContainer[str]
    thaw_deadline_s: int
    def __init__(self, domain: _Optional[str] = ..., mountpoints: _Optional[_Iterable[str]] = ..., thaw_deadline_s: _Optional[int] = ...) -> None: ...

class FsFreezeResponse(_message.Message):
    __slots__ = ("frozen", "thaw_deadline_unix_ms")
    FROZEN_FIELD_NUMBER: _ClassVar[int]
    THAW_DEADLINE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    frozen: int
    thaw_deadline_unix_ms: int
    def __init__(self, frozen: _Optional[int] = ..., thaw_deadline_unix_ms: _Optional[int] = ...) -> None: ...

class FsThawRequest(_message.Message):
    __slots__ = ("domain",)
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    domain: str
    def __init__(self, domain: _Optional[str] = ...) -> None: ...

class FsThawResponse(_message.Message):
    __slots__ = ("thawed",)
    THAWED_FIELD_NUMBER: _ClassVar[int]
    thawed: int
    def __init__(self, thawed: _Optional[int] = ...) -> None: ...

class FsFreezeStatusRequest(_message.Message):
    __slots__ = ("domain",)
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    domain: str
    def __init__(self, domain: _Optional[str] = ...) -> None: ...

class FsFreezeStatusResponse(_message.Message):
    __slots__ = ("frozen", "thaw_deadline_unix_ms", "frozen_by")
    FROZEN_FIELD_NUMBER: _ClassVar[int]
    THAW_DEADLINE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    FROZEN_BY_FIELD_NUMBER: _ClassVar[int]
    frozen: bool
    thaw_deadline_unix_ms: int
    frozen_by: str
    def __init__(self, frozen: _Optional[bool] = ..., thaw_deadline_unix_ms: _Optional[int] = ..., frozen_by: _Optional[str] = ...) -> None: ...

class SetUserPasswordRequest(_message.Message):
    __slots__ = ("domain", "username", "password", "crypted")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    CRYPTED_FIELD_NUMBER: _ClassVar[int]
    domain: str
    username: str
    password: str
    crypted: bool
    def __init__(self, domain: _Optional[str] = ..., username: _Optional[str] = ..., password: _Optional[str] = ..., crypted: _Optional[bool] = ...) -> None: ...

class SetUserPasswordResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetAuthorizedKeysRequest(_message.Message):
    __slots__ = ("domain", "username")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    domain: str
    username: str
    def __init__(self, domain: _Optional[str] = ..., username: _Optional[str] = ...) -> None: ...

class GetAuthorizedKeysResponse(_message.Message):
    __slots__ = ("keys", "fingerprints")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINTS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[str]
    fingerprints: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, keys: _Optional[_Iterable[str]] = ..., fingerprints: _Optional[_Iterable[str]] = ...) -> None: ...

class AddAuthorizedKeysRequest(_message.Message):
    __slots__ = ("domain", "username", "keys", "reset")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    RESET_FIELD_NUMBER: _ClassVar[int]
    domain: str
    username: str
    keys: _containers.RepeatedScalarFieldContainer[str]
    reset: bool
    def __init__(self, domain: _Optional[str] = ..., username: _Optional[str] = ..., keys: _Optional[_Iterable[str]] = ..., reset: _Optional[bool] = ...) -> None: ...

class AddAuthorizedKeysResponse(_message.Message):
    __slots__ = ("fingerprints",)
    FINGERPRINTS_FIELD_NUMBER: _ClassVar[int]
    fingerprints: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, fingerprints: _Optional[_Iterable[str]] = ...) -> None: ...

class RemoveAuthorizedKeysRequest(_message.Message):
    __slots__ = ("domain", "username", "keys")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    domain: str
    username: str
    keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, domain: _Optional[str] = ..., username: _Optional[str] = ..., keys: _Optional[_Iterable[str]] = ...) -> None: ...

class RemoveAuthorizedKeysResponse(_message.Message):
    __slots__ = ("fingerprints",)
    FINGERPRINTS_FIELD_NUMBER: _ClassVar[int]
    fingerprints: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, fingerprints: _Optional[_Iterable[str]] = ...) -> None: ...

class SyncTimeRequest(_message.Message):
    __slots__ = ("domain",)
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    domain: str
    def __init__(self, domain: _Optional[str] = ...) -> None: ...

class SyncTimeResponse(_message.Message):
    __slots__ = ("host_time_ns", "offset_before_ms")
    HOST_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    OFFSET_BEFORE_MS_FIELD_NUMBER: _ClassVar[int]
    host_time_ns: int
    offset_before_ms: int
    def __init__(self, host_time_ns: _Optional[int] = ..., offset_before_ms: _Optional[int] = ...) -> None: ...
