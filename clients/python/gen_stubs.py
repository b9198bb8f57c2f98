#!/usr/bin/env python3
"""Generates the gRPC stubs the `ocloudview-atp` Python package ships, from the repo's proto/.

The package carries them generated (src/ocloudview_atp/pb/: messages, service stubs and
.pyi type stubs), so installing it needs only grpcio, grpcio-status and protobuf, not
grpcio-tools nor the .proto files. The service module's absolute import of the message
module is made relative, so the stubs live inside the package.

    gen_stubs.py           regenerate them (after a change to proto/)
    gen_stubs.py --check   fail, naming the file, when the shipped ones differ from proto/
                           (tests/python_client.rs runs this)

Run it with the repo's .venv (grpcio-tools pinned in examples/python/requirements.txt),
so the output does not change with whoever regenerates.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO_ROOT = HERE.parents[1] / "proto"
PROTO_FILE = "ocloudview/atp/v1/guest_agent.proto"
OUT = HERE / "src/ocloudview_atp/pb"
FILES = ("guest_agent_pb2.py", "guest_agent_pb2.pyi", "guest_agent_pb2_grpc.py")
ABSOLUTE = "from ocloudview.atp.v1 import guest_agent_pb2 as"
RELATIVE = "from . import guest_agent_pb2 as"
INIT = '"""gRPC stubs generated from proto/ by clients/python/gen_stubs.py; do not edit."""\n'


def generate() -> dict[str, bytes]:
    """The stub files' contents, as shipped."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_ROOT}",
            f"--python_out={tmp}", f"--grpc_python_out={tmp}", f"--pyi_out={tmp}",
            str(PROTO_ROOT / PROTO_FILE),
        ]  # fmt: skip
        subprocess.run(cmd, check=True)
        gen = Path(tmp) / Path(PROTO_FILE).parent
        out = {name: (gen / name).read_text() for name in FILES}
    grpc_module = "guest_agent_pb2_grpc.py"
    if ABSOLUTE not in out[grpc_module]:
        sys.exit(
            f"gen_stubs: {grpc_module} no longer imports with {ABSOLUTE!r}; update gen_stubs.py"
        )
    out[grpc_module] = out[grpc_module].replace(ABSOLUTE, RELATIVE)
    out["__init__.py"] = INIT
    return {name: text.encode() for name, text in out.items()}


def main() -> int:
    """Writes the stubs, or with --check compares them with what is shipped."""
    files = generate()
    if sys.argv[1:] == ["--check"]:
        stale = [
            n
            for n, data in files.items()
            if not (OUT / n).is_file() or (OUT / n).read_bytes() != data
        ]
        for n in stale:
            print(
                f"gen_stubs: {OUT / n} does not match {PROTO_FILE}: run {Path(__file__).name}",
                file=sys.stderr,
            )
        if not stale:
            print(f"gen_stubs: {', '.join(files)} match {PROTO_FILE}")
        return 1 if stale else 0
    if sys.argv[1:]:
        sys.exit(__doc__)
    OUT.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (OUT / name).write_bytes(data)
    print(f"gen_stubs: wrote {', '.join(files)} into {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
