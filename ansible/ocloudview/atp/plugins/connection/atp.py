# Copyright: ocloudview-atp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible connection plugin ocloudview.atp.atp: tasks run in KVM guests through an
ocloudview-atp daemon (`atp serve`) and the guests' QEMU guest agent, with no network
path to the guest. A task is one Exec RPC (pipelining), files move with WriteFile and
ReadFile (SHA-256 checked on both ends), and every call passes the daemon's policy and
audit log."""

from __future__ import annotations

DOCUMENTATION = r"""
name: atp
short_description: Run tasks in KVM guests through an ocloudview-atp daemon
description:
  - Runs commands and moves files in a libvirt/QEMU guest through the gRPC API of an
    ocloudview-atp daemon (C(atp serve)), which reaches the guest's QEMU guest agent. The
    guest needs no network, SSH or Python-side agent beyond qemu-ga (and python3 for modules).
  - Every task is a single C(Exec) call with the module on stdin (pipelining is always on).
    Files are copied with C(WriteFile)/C(ReadFile); both ends check the SHA-256.
  - A request the daemon's policy denies fails the task with the policy's reason. A daemon,
    hypervisor or guest agent that cannot be reached makes the host unreachable.
  - The agent runs as root, so become (C(sudo), C(su), or C(ocloudview.atp.runuser), which
    needs nothing but util-linux) never needs a password.
author: ocloudview-atp contributors
version_added: "0.1.0"
requirements:
  - grpcio >= 1.85.1, grpcio-status, protobuf >= 7.35.1 on the controller (requirements.txt)
options:
  remote_addr:
    description: The guest, as the daemon names it (libvirt domain name or UUID, optionally
      C(hypervisor/name), or a socket guest's configured name).
    default: inventory_hostname
    type: str
    vars:
      - name: inventory_hostname
      - name: ansible_host
      - name: ansible_atp_domain
  remote_user:
    description:
      - The user commands run as without become. The guest agent runs as root; this only
        tells Ansible whose home holds its temporary files (C(~root/.ansible/tmp)), found
        through the password database because qemu-ga gives commands no C(HOME).
    default: root
    type: str
    vars:
      - name: ansible_user
  server:
    description: The daemon, C(unix:///path/to/atp.sock) or C(host:port) (C(tcp://host:port)).
    default: unix:///run/atp/atp.sock
    type: str
    env:
      - name: ATP_SERVER
    vars:
      - name: ansible_atp_server
  token:
    description: Bearer token the daemon knows (C([[server.tokens]])); none over a UNIX socket
      where the daemon identifies callers by their uid.
    type: str
    env:
      - name: ATP_TOKEN
    vars:
      - name: ansible_atp_token
  tls:
    description: Use TLS to a TCP server (implied by O(tls_ca) or O(tls_cert)).
    type: bool
    default: false
    vars:
      - name: ansible_atp_tls
  tls_ca:
    description: PEM file of the CA that signed the daemon's certificate.
    type: path
    vars:
      - name: ansible_atp_tls_ca
  tls_cert:
    description: PEM client certificate, for daemons that require one (mutual TLS).
    type: path
    vars:
      - name: ansible_atp_tls_cert
  tls_key:
    description: PEM private key of O(tls_cert).
    type: path
    vars:
      - name: ansible_atp_tls_key
  tls_server_name:
    description: Name to check the daemon's certificate against, when not the address's host.
    type: str
    vars:
      - name: ansible_atp_tls_server_name
  timeout:
    description: Seconds to wait for the connection to the daemon.
    type: int
    default: 10
    vars:
      - name: ansible_atp_timeout
  timings_file:
    description:
      - When set, each call appends a JSON line here (C(op), C(path), C(wall_s), its start
        C(at) in seconds since the epoch, and for C(exec) the command C(cmd) (its first 200
        characters) and the guest-side C(guest_ms) the daemon measured), for benchmarks such
        as C(scripts/bench-ansible.sh).
    type: path
    env:
      - name: ATP_ANSIBLE_TIMINGS
    vars:
      - name: ansible_atp_timings_file
  exec_timeout:
    description: Seconds after which the guest kills a task's command; 0 uses the daemon's
      C(exec_timeout_ms) (one hour unless configured).
    type: int
    default: 0
    vars:
      - name: ansible_atp_exec_timeout
"""

EXAMPLES = r"""
# inventory.yml
all:
  vars:
    ansible_connection: ocloudview.atp.atp
    ansible_atp_server: unix:///run/atp/atp.sock
  hosts:
    web-01: {}                           # the libvirt domain web-01
    db:
      ansible_atp_domain: host2/db-01    # a guest on the hypervisor named host2
"""

import json
import os
import time

from ansible.errors import AnsibleConnectionFailure, AnsibleError, AnsibleFileNotFound
from ansible.plugins.connection import ConnectionBase
from ansible.utils.display import Display

from ansible_collections.ocloudview.atp.plugins.plugin_utils import atp_grpc

display = Display()


class Connection(ConnectionBase):
    """Tasks in a guest through an ocloudview-atp daemon (one Exec per task)."""

    transport = "ocloudview.atp.atp"
    has_pipelining = True
    always_pipeline_modules = True  # a task is one Exec: the module goes on its stdin
    has_tty = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._client = None

    @property
    def _domain(self) -> str:
        return self.get_option("remote_addr")

    def _connect(self):
        if atp_grpc.IMPORT_ERROR is not None:
            raise AnsibleError(
                "ocloudview.atp.atp needs grpcio, grpcio-status and protobuf on the controller "
                "(pip install -r the collection's requirements.txt): "
                f"{atp_grpc.IMPORT_ERROR}"
            )
        if not self._connected:
            try:
                self._client = atp_grpc.AtpClient(
                    self.get_option("server"),
                    token=self.get_option("token"),
                    tls=self.get_option("tls"),
                    ca=self.get_option("tls_ca"),
                    cert=self.get_option("tls_cert"),
                    key=self.get_option("tls_key"),
                    server_name=self.get_option("tls_server_name"),
                    timeout=self.get_option("timeout"),
                )
            except atp_grpc.AtpCallError as e:
                raise AnsibleConnectionFailure(f"ocloudview.atp: {e}") from None
            self._connected = True
            display.vvv(f"ATP CONNECT {self.get_option('server')} guest {self._domain}", host=self._domain)
        return self

    def _call(self, op, fn, *args, **kwargs):
        """Runs a client call, mapping its failure to unreachable or to a failed task."""
        self._connect()
        started = time.monotonic()
        try:
            result = fn(*args, **kwargs)
            remote = args[2] if op == "put" else args[1]  # (domain, local, remote) for put
            self._record(op, remote, time.monotonic() - started, result)
            return result
        except atp_grpc.AtpCallError as e:
            if e.unreachable:
                raise AnsibleConnectionFailure(f"ocloudview.atp: {e}") from None
            raise AnsibleError(f"ocloudview.atp: {e}") from None
        except atp_grpc.IntegrityError as e:
            raise AnsibleError(f"ocloudview.atp: transfer corrupted: {e}") from None

    def _record(self, op, path, wall_s, result):
        """Appends one call's timing to `timings_file`, when set."""
        target = self.get_option("timings_file")
        if not target:
            return
        entry = {"op": op, "path": path if op != "exec" else "", "wall_s": round(wall_s, 6),
                 "at": round(time.time() - wall_s, 3)}  # fmt: skip
        if op == "exec":
            entry["guest_ms"] = result[3].duration_ms
            entry["cmd"] = path[:200]  # an exec's "path" is its command
        with open(target, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def exec_command(self, cmd, in_data=None, sudoable=True):
        """Runs `cmd` with the guest's /bin/sh, `in_data` (the pipelined module) on stdin."""
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        display.vvv(f"ATP EXEC {cmd}", host=self._domain)
        code, out, err, exited = self._call(
            "exec", self._client.run, self._domain, cmd, in_data or b"", self.get_option("exec_timeout")
        )
        if exited.timed_out:
            err += b"\nocloudview.atp: the command was killed after the exec timeout\n"
        if exited.stdout_truncated or exited.stderr_truncated:
            raise AnsibleError(
                "ocloudview.atp: the daemon truncated the command's output "
                "(raise its exec output limit); the result would be incomplete"
            )
        if sudoable and self.become and self.become.success:
            out = self._strip_become_success(out)
        return code, out, err

    def _strip_become_success(self, out: bytes) -> bytes:
        """Drops the become plugin's success marker line (there is no prompt to answer:
        the agent runs as root, so become never asks for a password)."""
        marker = self.become.success.encode()
        head, nl, rest = out.partition(b"\n")
        return rest if head.strip() == marker else out

    def put_file(self, in_path, out_path):
        """Copies a controller file to the guest with WriteFile (SHA-256 checked)."""
        super().put_file(in_path, out_path)
        display.vvv(f"ATP PUT {in_path} TO {out_path}", host=self._domain)
        if not os.path.isfile(in_path):
            raise AnsibleFileNotFound(f"file or module does not exist: {in_path}")
        # In place, mode 0600: Ansible puts only new files into its private temp dir (root's,
        # 0700) and sets the modes it needs itself afterwards (`chmod u+rwx`, or ACLs for
        # become). There the daemon's resolution creates the file with that mode and the
        # data goes straight in: one guest process (the resolution's `stat` under its
        # shell), where an atomic upload also runs the final `mv`. Anywhere else the daemon
        # takes its usual in-place path; a failed put leaves a partial file, which Ansible
        # removes with its temp dir.
        self._call(
            "put", self._client.write_file, self._domain, in_path, out_path,
            atomic=False, permissions=0o600,
        )  # fmt: skip

    def fetch_file(self, in_path, out_path):
        """Copies a guest file to the controller with ReadFile (SHA-256 checked)."""
        super().fetch_file(in_path, out_path)
        display.vvv(f"ATP FETCH {in_path} TO {out_path}", host=self._domain)
        self._call("fetch", self._client.read_file, self._domain, in_path, out_path)

    def reset(self):
        self.close()

    def close(self):
        if self._client is not None:
            self._client.close()
            self._client = None
        self._connected = False
