#!/bin/bash
# Sets up (scripts/setup.sh) and runs the side-by-side benchmark: the daemon vs a raw
# agent client on a host qemu-ga, on a TCG guest over libvirt and over a direct socket
# (plus a virsh loop), 100 agents behind one daemon, daemon RSS over a 1 GiB stream,
# Ping fairness during a transfer, and 1,000 agents under a mixed load (section 6).
# Prints one markdown table per section; about 6 minutes on a 2-core machine (the first
# run also builds the guest image).
# Environment: ATP_BENCH_MIB (host agent file size, default 256).
# `scripts/bench.sh ansible ...`: the Ansible comparison instead (scripts/bench-ansible.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
# Ansible side by side (issue 16): `scripts/bench.sh ansible libvirt URI DOMAIN` runs the
# same playbook through community.libvirt.libvirt_qemu and ocloudview.atp.atp against one
# libvirt guest with python3; `scripts/bench.sh ansible debian` boots the test bed's Debian 12
# guest as that domain; `scripts/bench.sh ansible host` the atp half on a host agent.
# `scripts/bench.sh fleet`: only section 6, 1,000 host agents under a mixed load for 30 s.
if [ "${1:-}" = fleet ]; then
  shift
  export ATP_BENCH_ONLY=6
fi
if [ "${1:-}" = ansible ]; then
  shift
  exec ./scripts/bench-ansible.sh "$@"
fi
./scripts/setup.sh
exec cargo bench --locked --bench compare "$@"
