#!/bin/bash
# Installs what ocloudview-atp needs on a Debian 12 machine, and only what is missing:
# the real guest agent, QEMU, libvirt (daemon, client and headers for the `virt` crate),
# and the pieces of the test guest image. Safe to run again; does nothing when all is there.
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
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "setup: need root (or sudo) to install ${missing[*]}" >&2; exit 1; }
    SUDO=sudo
  fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust (rustup) first" >&2; exit 1; }
echo "setup: ok ($(qemu-ga --version 2>&1 | head -1); $(libvirtd --version); $(cargo --version))"
