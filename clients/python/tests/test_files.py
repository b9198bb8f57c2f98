"""ReadFile and WriteFile: a few MiB round trip with progress and SHA-256, files and paths
on the local side, a tampered checksum, write modes and permissions."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

import ocloudview_atp as atp
from conftest import Env


def test_write_then_read_3_mib_with_progress(client: atp.Client, env: Env, domain: str) -> None:
    data = os.urandom(3 << 20)
    digest = hashlib.sha256(data).digest()
    path = os.path.join(env.dir, "py.bin")
    sent: list[tuple[int, int | None]] = []
    t = client.write_file(domain, path, data, progress=lambda d, n: sent.append((d, n)))
    assert (t.size, t.sha256) == (len(data), digest)
    assert len(sent) >= 3 and sent[-1] == (len(data), len(data)), sent
    assert [d for d, _ in sent] == sorted(d for d, _ in sent)
    assert Path(path).read_bytes() == data  # the bytes really landed in the guest's file

    got: list[tuple[int, int | None]] = []
    back = client.read_file(domain, path, progress=lambda d, n: got.append((d, n)))
    assert back == data
    assert got[-1] == (len(data), len(data)) and len(got) >= 2, got
    assert all(n == len(data) for _, n in got), got  # the total is known from the first chunk


def test_local_files_both_ways(client: atp.Client, env: Env, domain: str, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(300_000))
    guest = os.path.join(env.dir, "from-path.bin")
    assert client.write_file(domain, guest, src).size == 300_000
    dest = tmp_path / "dest.bin"
    t = client.read_file(domain, guest, dest)
    assert dest.read_bytes() == src.read_bytes()
    assert t.sha256 == hashlib.sha256(src.read_bytes()).digest()
    # A file object from its current position; a partial read into a file object.
    f = io.BytesIO(b"skip:payload")
    f.seek(5)
    client.write_file(domain, guest, f)
    out = io.BytesIO()
    assert client.read_file(domain, guest, out, offset=2, length=3).size == 3
    assert out.getvalue() == b"ylo"


def test_tampered_checksum_is_refused_and_the_target_untouched(
    client: atp.Client, env: Env, domain: str
) -> None:
    path = os.path.join(env.dir, "tamper.txt")
    client.write_file(domain, path, b"original\n")
    with pytest.raises(atp.InvalidArgument) as e:
        client.write_file(domain, path, b"tampered\n", sha256=hashlib.sha256(b"other").digest())
    assert "checksum mismatch" in e.value.details
    assert client.read_file(domain, path) == b"original\n"


def test_write_modes_and_permissions(client: atp.Client, env: Env, domain: str) -> None:
    path = os.path.join(env.dir, "modes.txt")
    client.write_file(domain, path, b"a\n", mode=0o600, write_mode="exclusive")
    assert os.stat(path).st_mode & 0o777 == 0o600
    with pytest.raises(atp.GuestPathExists):
        client.write_file(domain, path, b"b\n", write_mode="exclusive")
    client.write_file(domain, path, b"b\n", write_mode="append")
    assert client.read_file(domain, path) == b"a\nb\n"
    with pytest.raises(atp.GuestPathNotFound):
        client.write_file(domain, path + ".missing", b"x", write_mode="truncate")
