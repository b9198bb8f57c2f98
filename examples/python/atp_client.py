#!/usr/bin/env python3
"""A small command-line client of the ocloudview-atp daemon, on the `ocloudview_atp`
package (`pip install ./clients/python`; scripts/setup.sh installs it into .venv).

    atp_client.py --server unix:///run/atp/atp.sock ping web-01
    atp_client.py --server 127.0.0.1:50051 --token "$TOKEN" exec web-01 -- /bin/ls -l /
    atp_client.py --server https://atp.example:50051 --ca ca.pem --cert me.pem --key me.key ls
    atp_client.py --server ... read web-01 /etc/os-release [-o local]
    atp_client.py --server ... write web-01 /tmp/x.bin [-i ./x.bin]

`exec` exits with the program's exit code (128 + signal when a signal killed it); a failed
call prints the daemon's code, message and reason (docs/api.md, "Error reasons") and exits 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import ocloudview_atp as atp


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    ap = argparse.ArgumentParser(description="Call an ocloudview-atp daemon.")
    ap.add_argument("--server", required=True, help="unix:///path/atp.sock, host:port, https://…")
    ap.add_argument("--token", help="bearer token (sent as `authorization: Bearer ...`)")
    ap.add_argument("--timeout", type=float, help="deadline of each call, seconds")
    ap.add_argument("--ca", help="TLS: CA certificate (PEM) of the daemon's certificate")
    ap.add_argument("--cert", help="mutual TLS: client certificate (PEM)")
    ap.add_argument("--key", help="mutual TLS: client key (PEM)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("ls", help="list the guests")
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
    return ap.parse_args(argv)


def command(c: atp.Client, a: argparse.Namespace) -> int:
    """Runs the subcommand; its exit code."""
    if a.cmd == "ls":
        for d in c.list_domains():
            print(f"{d.name}\t{d.state}\tagent={'yes' if d.agent_connected else 'no'}\t{d.os_id}")
    elif a.cmd == "ping":
        print(f"{a.domain}: agent answered in {c.ping(a.domain)} us")
    elif a.cmd == "exec":
        stdin = sys.stdin.buffer.read() if a.stdin else None
        run = c.exec(a.domain, a.argv, stdin=stdin)
        for ev in run:
            if isinstance(ev, (atp.Stdout, atp.Stderr)):
                stream = sys.stdout if isinstance(ev, atp.Stdout) else sys.stderr
                stream.buffer.write(ev.data)
                stream.buffer.flush()
        x = run.wait().exited
        return x.exit_code if x.exit_code is not None else 128 + (x.signal or 0)
    elif a.cmd == "read":
        if a.output:
            t = c.read_file(a.domain, a.path, a.output)
            print(f"read {t.size} bytes, sha256 {t.sha256.hex()}", file=sys.stderr)
        else:
            sys.stdout.buffer.write(c.read_file(a.domain, a.path))
    elif a.cmd == "write":
        t = c.write_file(a.domain, a.path, a.input or sys.stdin.buffer)
        print(f"wrote {t.size} bytes, sha256 {t.sha256.hex()}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    a = parse(argv)
    tls = atp.Tls(ca=a.ca, cert=a.cert, key=a.key) if a.ca or a.cert else None
    try:
        with atp.connect(a.server, token=a.token, tls=tls, timeout=a.timeout) as c:
            return command(c, a)
    except atp.AtpError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
