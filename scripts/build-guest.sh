#!/bin/bash
# Builds the tiny test/demo guest: Debian's cloud kernel (downloaded as a .deb, never
# installed) and two initramfs images holding busybox-static, the host's qemu-ga with its
# libraries, the virtio modules and an /init that runs one qemu-ga per agent port.
#
#   build-guest.sh OUTDIR
#
# OUTDIR gets: vmlinuz, initrd-debian.img, initrd-alt.img, kernel-version.
#   debian: os-release of this Debian host, hostname qga-debian
#   alt:    a made-up OS (id qgatestos, "QGA Test OS 1.0"), hostname qga-alt
# Env: ATP_GUEST_WORK  scratch and .deb cache dir (default OUTDIR/../work)
#      ATP_KERNEL_PKG  kernel package (default: what linux-image-cloud-amd64 depends on)
# Packages needed (scripts/setup.sh installs them): qemu-guest-agent busybox-static cpio
# (and util-linux's script, from bsdutils, which Debian always has).
set -euo pipefail
OUT=${1:?usage: build-guest.sh OUTDIR}
WORK=${ATP_GUEST_WORK:-$(dirname "$OUT")/work}
mkdir -p "$OUT" "$WORK/debs"

for tool in qemu-ga script cpio dpkg-deb apt-get; do
  command -v "$tool" >/dev/null || { echo "build-guest: $tool missing; run scripts/setup.sh" >&2; exit 1; }
done
# The guest has no libc of its own for busybox: it must be the static build.
if [ ! -x /bin/busybox ] || ldd /bin/busybox >/dev/null 2>&1; then
  echo "build-guest: /bin/busybox missing or dynamic; install busybox-static" >&2; exit 1
fi

kernel_pkg() { apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}'; }
KPKG=${ATP_KERNEL_PKG:-$(kernel_pkg)}
if [ -z "$KPKG" ]; then apt-get update -qq; KPKG=$(kernel_pkg); fi
[ -n "$KPKG" ] || { echo "build-guest: cannot find the cloud kernel package" >&2; exit 1; }
if ! ls "$WORK/debs/${KPKG}"_*.deb >/dev/null 2>&1; then
  (cd "$WORK/debs" && apt-get download "$KPKG" 2>&1 | grep -v 'Download is performed unsandboxed' || true)
fi
DEB=$(ls "$WORK/debs/${KPKG}"_*.deb 2>/dev/null | head -1)
[ -n "$DEB" ] || { echo "build-guest: download of $KPKG failed" >&2; exit 1; }
KX="$WORK/kernel"
rm -rf "$KX" && mkdir -p "$KX" && dpkg-deb -x "$DEB" "$KX"
KVER=$(ls "$KX/lib/modules" | head -1)
cp "$KX/boot/vmlinuz-$KVER" "$OUT/vmlinuz"
echo "$KVER" > "$OUT/kernel-version"

QGA=$(command -v qemu-ga)

write_init() {
  cat > "$1/init" <<'INIT'
#!/bin/sh
# PID 1 of the test guest: mount, load virtio, run one qemu-ga per agent port.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs -o mode=755 tmpfs /data
hostname "$(cat /etc/hostname)"
ip link set lo up 2>/dev/null
# Modules depend on each other; several passes avoid hard-coding the order.
for pass in 1 2 3; do
  for m in $(cat /etc/modules-order); do
    n=${m%%.ko*}; [ -d "/sys/module/$n" ] && continue
    insmod "/lib/modules/$m" 2>/tmp/insmod.err || { [ $pass = 3 ] && echo "ATP-GUEST: insmod $m: $(cat /tmp/insmod.err)"; }
  done
done
agent_ports() {
  for p in /sys/class/virtio-ports/*; do
    [ -e "$p/name" ] || continue
    case "$(cat "$p/name")" in org.qemu.guest_agent.*) echo "$p" ;; esac
  done
}
# Wait until the set of agent ports is present and stable.
last=; n=0
for i in $(seq 1000); do
  cur=$(agent_ports | wc -l)
  if [ "$cur" -gt 0 ] && [ "$cur" = "$last" ]; then n=$((n+1)); [ $n -ge 3 ] && break; else n=0; fi
  last=$cur; sleep 0.02
done
if [ -z "$(agent_ports)" ]; then echo "ATP-GUEST: no agent port"; dmesg | tail -20; poweroff -f; fi
EXTRA=$(sed -n 's/.*qga.args=\([^ ]*\).*/\1/p' /proc/cmdline | tr , ' ')
mkdir -p /dev/virtio-ports
for p in $(agent_ports); do
  name=$(cat "$p/name")
  ln -sf "/dev/$(basename "$p")" "/dev/virtio-ports/$name"
  mkdir -p "/var/lib/qga/$name"
  (
    while true; do
      echo "ATP-GUEST: qemu-ga on $name starting at uptime $(cut -d' ' -f1 /proc/uptime)s"
      qemu-ga -m virtio-serial -p "/dev/virtio-ports/$name" -t "/var/lib/qga/$name" \
        -f "/run/qemu-ga.$name.pid" $EXTRA
      echo "ATP-GUEST: qemu-ga on $name exited rc=$?"; sleep 1
    done
  ) &
done
while true; do wait; sleep 1; done
INIT
  chmod +x "$1/init"
}

build_one() {
  local flavour=$1 R="$WORK/root-$1"
  rm -rf "$R"; mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,run,tmp,var/lib,lib/modules,data,root}
  ln -s ../run "$R/var/run"
  cp /bin/busybox "$R/bin/busybox"
  for a in $(/bin/busybox --list); do [ -e "$R/bin/$a" ] || ln -s busybox "$R/bin/$a"; done
  cp "$QGA" "$R/usr/sbin/qemu-ga"
  for lib in $(ldd "$QGA" | grep -o '/[^ ]*'); do mkdir -p "$R$(dirname "$lib")"; cp -L "$lib" "$R$lib"; done
  # util-linux script(1) gives interactive sessions a terminal; busybox has no such applet.
  cp "$(command -v script)" "$R/usr/bin/script"
  for lib in $(ldd "$(command -v script)" | grep -o '/[^ ]*'); do mkdir -p "$R$(dirname "$lib")"; cp -L "$lib" "$R$lib"; done
  : > "$R/etc/modules-order"
  for m in virtio virtio_ring virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_console; do
    f=$(find "$KX/lib/modules/$KVER" -name "$m.ko*" | head -1)
    [ -n "$f" ] || continue   # built into this kernel
    cp "$f" "$R/lib/modules/"; basename "$f" >> "$R/etc/modules-order"
  done
  echo "root:x:0:0:root:/root:/bin/sh" > "$R/etc/passwd"; echo "root:x:0:" > "$R/etc/group"
  if [ "$flavour" = debian ]; then
    cp -L /etc/os-release "$R/etc/os-release"; echo qga-debian > "$R/etc/hostname"
  else
    cat > "$R/etc/os-release" <<'OSR'
NAME="QGA Test OS"
ID=qgatestos
VERSION_ID="1.0"
VERSION="1.0 (test)"
PRETTY_NAME="QGA Test OS 1.0"
VARIANT="test"
VARIANT_ID=test
OSR
    echo qga-alt > "$R/etc/hostname"
  fi
  # qemu-ga's guest-shutdown runs /sbin/shutdown -P|-H|-r +0 "msg"; busybox has none.
  cat > "$R/sbin/shutdown" <<'SD'
#!/bin/sh
case "$1" in -r) exec reboot -f ;; -H) exec halt -f ;; *) exec poweroff -f ;; esac
SD
  chmod +x "$R/sbin/shutdown"
  # qemu-ga's guest-set-time runs /sbin/hwclock; busybox has the applet.
  ln -s ../bin/busybox "$R/sbin/hwclock"
  write_init "$R"
  (cd "$R" && find . | cpio -o -H newc --quiet) > "$OUT/initrd-$flavour.img"
  echo "build-guest: $OUT/initrd-$flavour.img ($(du -h "$OUT/initrd-$flavour.img" | cut -f1)), kernel $KVER"
}
build_one debian
build_one alt
