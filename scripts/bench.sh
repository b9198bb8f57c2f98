#!/bin/bash
# Sets up (scripts/setup.sh) and runs the side-by-side benchmark: the daemon vs a raw
# agent client on a host qemu-ga, on a TCG guest over libvirt and over a direct socket
# (plus a virsh loop), 100 agents behind one daemon, daemon RSS over a 1 GiB stream and
# Ping fairness during a transfer; directory trees (section 6, issue 15: PushTree and
# PullTree of 1000 files of 4 KiB plus one of 64 MiB vs a per-file WriteFile/ReadFile loop
# and vs raw `tar` through guest-exec, on a busybox TCG guest); interactive sessions
# (section 7: keystroke echo through a terminal, streamed stdin vs WriteFile); 1,000 agents
# under a mixed load (section 8). Prints one markdown table per section; about 15 minutes
# on a 2-core machine (the first run also builds the guest image).
# Environment: ATP_BENCH_MIB (host agent file size, default 256); ATP_BENCH_ONLY=6,7 runs
# only those sections; ATP_BENCH_TREE_FILES (1000), ATP_BENCH_TREE_BIG_MIB (64) and
# ATP_BENCH_TREE_LOOP (100: loop files measured, then scaled) size section 6.
# `scripts/bench.sh ansible ...`: the Ansible comparison instead (scripts/bench-ansible.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
# Ansible side by side (issue 16): `scripts/bench.sh ansible libvirt URI DOMAIN` runs the
# same playbook through community.libvirt.libvirt_qemu and ocloudview.atp.atp against one
# libvirt guest with python3; `scripts/bench.sh ansible debian` boots the test bed's Debian 12
# guest as that domain; `scripts/bench.sh ansible host` the atp half on a host agent.
# `scripts/bench.sh fleet`: only section 8, 1,000 host agents under a mixed load for 30 s.
if [ "${1:-}" = fleet ]; then
  shift
  export ATP_BENCH_ONLY=8
fi
if [ "${1:-}" = ansible ]; then
  shift
  exec ./scripts/bench-ansible.sh "$@"
fi
./scripts/setup.sh
exec cargo bench --locked --bench compare "$@"
