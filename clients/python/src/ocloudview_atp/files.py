"""File transfers: ReadFile checked against the final chunk's size and SHA-256, WriteFile
sending the expected SHA-256 (the daemon refuses a write whose data does not match it)."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

from . import errors
from .errors import IntegrityError
from .pb import guest_agent_pb2 as pb

Progress = Callable[[int, int | None], None]
"""Called as `progress(done_bytes, total_bytes_or_None)` after each chunk."""

Source = bytes | bytearray | memoryview | str | os.PathLike[str] | BinaryIO
"""What `write_file` sends: bytes, a local file's path, or a binary file object."""

Destination = str | os.PathLike[str] | BinaryIO
"""Where `read_file` puts the bytes: a local file's path or a binary file object."""

WriteMode = Literal["create", "truncate", "append", "exclusive"]
"""`create` (or truncate), `truncate` (must exist), `append`, `exclusive` (must not exist)."""

CHUNK = 1 << 20


@dataclass(frozen=True)
class Transfer:
    """A finished transfer: its size and SHA-256 (both checked)."""

    size: int
    sha256: bytes


def read_into(
    chunks: Iterator[pb.FileChunk],
    out: BinaryIO,
    offset: int,
    length: int,
    progress: Progress | None,
) -> Transfer:
    """Writes a ReadFile stream (from `offset`, `length` bytes or 0 for all) to `out`,
    checking offsets, size and SHA-256."""
    done, digest, total = 0, hashlib.sha256(), None
    for chunk in errors.stream(chunks):
        if done == 0 and chunk.file_size:
            total = max(chunk.file_size - offset, 0)
            total = min(total, length) if length else total
        if chunk.offset != offset + done:
            raise IntegrityError(f"chunk at offset {chunk.offset}, expected {offset + done}")
        out.write(chunk.data)
        digest.update(chunk.data)
        done += len(chunk.data)
        if chunk.eof:
            total = chunk.total_bytes
        if progress is not None and (chunk.data or chunk.eof):
            progress(done, total)
        if chunk.eof:
            if chunk.total_bytes != done:
                raise IntegrityError(f"got {done} bytes, the daemon says {chunk.total_bytes}")
            if chunk.sha256 != digest.digest():
                raise IntegrityError(
                    f"sha256 {digest.hexdigest()}, the daemon says {chunk.sha256.hex()}"
                )
            return Transfer(done, chunk.sha256)
    raise IntegrityError(f"the stream ended without an eof chunk after {done} bytes")


def read_to_path(
    chunks: Iterator[pb.FileChunk],
    dest: str | os.PathLike[str],
    offset: int,
    length: int,
    progress: Progress | None,
) -> Transfer:
    """`read_into` the local file `dest`, removed again when the transfer fails."""
    try:
        with open(dest, "wb") as out:
            return read_into(chunks, out, offset, length, progress)
    except BaseException:
        Path(dest).unlink(missing_ok=True)
        raise


def open_source(
    src: bytes | bytearray | memoryview | BinaryIO, sha256: bytes | None
) -> tuple[BinaryIO, int | None, bytes]:
    """The stream to send, its size when known, and its SHA-256: hashed here (a seekable
    file is read twice, from its current position) unless the caller gave it."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
        return io.BytesIO(data), len(data), sha256 or hashlib.sha256(data).digest()
    f = src
    size: int | None = None
    if f.seekable():
        start = f.tell()
        size = f.seek(0, io.SEEK_END) - start
        f.seek(start)
        if sha256 is None:
            sha256 = _digest(f)
            f.seek(start)
    elif sha256 is None:
        data = f.read()
        return io.BytesIO(data), len(data), hashlib.sha256(data).digest()
    return f, size, sha256


def _digest(f: BinaryIO) -> bytes:
    """SHA-256 of the rest of `f`."""
    h = hashlib.sha256()
    while block := f.read(CHUNK):
        h.update(block)
    return h.digest()


def write_requests(
    header: pb.WriteFileHeader,
    f: BinaryIO,
    size: int | None,
    chunk: int,
    progress: Progress | None,
) -> Iterator[pb.WriteFileRequest]:
    """The WriteFile client stream: the header, then data messages of `chunk` bytes."""
    yield pb.WriteFileRequest(header=header)
    done = 0
    while block := f.read(chunk):
        yield pb.WriteFileRequest(data=block)
        done += len(block)
        if progress is not None:
            progress(done, size)
    if done == 0 and progress is not None:
        progress(0, size)


def write_header(
    domain: str,
    path: str,
    sha256: bytes,
    write_mode: WriteMode,
    mode: int | None,
    atomic: bool | None,
) -> pb.WriteFileHeader:
    """The WriteFile header message."""
    header = pb.WriteFileHeader(
        domain=domain,
        path=path,
        mode=pb.WriteMode.Value(f"WRITE_MODE_{write_mode.upper()}"),
        expected_sha256=sha256,
    )
    if mode is not None:
        header.permissions = mode
    if atomic is not None:
        header.atomic = atomic
    return header


def check_written(resp: Any, size: int | None, sha256: bytes) -> Transfer:
    """Checks the WriteFile reply against what was sent."""
    if resp.sha256 != sha256 or (size is not None and resp.bytes_written != size):
        raise IntegrityError(
            f"sent {size} bytes sha256 {sha256.hex()}, the daemon says "
            f"{resp.bytes_written} bytes sha256 {resp.sha256.hex()}"
        )
    return Transfer(resp.bytes_written, resp.sha256)
