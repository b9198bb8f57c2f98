#!/bin/bash
# Builds the Debian 12 test guest: a real distribution with systemd, udev, journald +
# rsyslog, Debian's own qemu-guest-agent, nginx-light and python3, from Debian's mirror only.
#
#   build-debian.sh OUTDIR
#
# OUTDIR gets: vmlinuz, initrd.img (small: virtio modules only), rootfs.img (raw ext4,
# sparse, root on /dev/vda), build-info.txt. Booted with -snapshot or a qcow2 overlay, so
# every boot starts from the same clean disk.
#
# Agents: Debian's udev rule starts qemu-guest-agent.service on the port named
# org.qemu.guest_agent.0 only (libvirt's channel). This image adds a rule and a unit,
# atp-qga-direct.service, running a second qemu-ga on org.qemu.guest_agent.1, the test
# bed's direct channel (a host socket beside libvirt's).
#
# Env: ATP_DEBIAN_DEBS  .deb cache, kept between builds (default OUTDIR/../debian-debs)
#      ATP_DEBIAN_WORK  scratch dir for the root tree (default OUTDIR/../debian-work)
#      ATP_DEBIAN_MIRRORS  "deb URI SUITE main|deb ..." (default: the bookworm suites of
#                       this host's apt sources, which must be Debian's mirror)
# Needs root (file owners) and: mmdebstrap e2fsprogs (scripts/setup.sh installs them).
set -euo pipefail
OUT=${1:?usage: build-debian.sh OUTDIR}
DEBS=${ATP_DEBIAN_DEBS:-$(dirname "$OUT")/debian-debs}
WORK=${ATP_DEBIAN_WORK:-$(dirname "$OUT")/debian-work}
SIZE=2G
HOST=atp-debian12
PKGS=systemd-sysv,udev,dbus,kmod,initramfs-tools,linux-image-cloud-amd64,qemu-guest-agent
PKGS=$PKGS,nginx-light,python3,procps,util-linux,bsdutils,iproute2,rsyslog,sudo
# Programs an interactive session is tested with (vi, less, top: procps).
PKGS=$PKGS,vim-tiny,less

[ "$(id -u)" = 0 ] || { echo "build-debian: must run as root (mmdebstrap root mode keeps owners)" >&2; exit 1; }
for tool in mmdebstrap mkfs.ext4; do
  command -v "$tool" >/dev/null || { echo "build-debian: $tool missing; run scripts/setup.sh" >&2; exit 1; }
done

# The bookworm suites of the host's apt sources: deb822 *.sources, then one-line *.list.
host_mirrors() {
  {
    for f in /etc/apt/sources.list.d/*.sources; do
      [ -f "$f" ] || continue
      awk 'BEGIN{RS=""; FS="\n"} {
        t=""; u=""; s=""
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^Types:/) t = substr($i, 7)
          if ($i ~ /^URIs:/) u = substr($i, 6)
          if ($i ~ /^Suites:/) s = substr($i, 8)
        }
        if (t !~ /(^| )deb( |$)/) next
        nu = split(u, us, " "); ns = split(s, ss, " ")
        for (a = 1; a <= nu; a++) for (b = 1; b <= ns; b++) print "deb " us[a] " " ss[b] " main"
      }' "$f"
    done
    { cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true; } \
      | sed -n 's/^[[:space:]]*deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]\+\)[[:space:]]\+\([^[:space:]]\+\).*/deb \2 \3 main/p'
  } | awk '$3 ~ /^bookworm(-updates|-security)?$/ && $2 ~ /debian\.org|debian/ && !seen[$0]++' | paste -sd'|'
}
MIRRORS=${ATP_DEBIAN_MIRRORS:-$(host_mirrors)}
[ -n "$MIRRORS" ] || { echo "build-debian: no bookworm source in the host's apt config; set ATP_DEBIAN_MIRRORS" >&2; exit 1; }
IFS='|' read -r -a MIRROR_ARGS <<<"$MIRRORS"

mkdir -p "$OUT" "$DEBS" "$WORK"
R="$WORK/root"
rm -rf "$R"

# Runs before initramfs-tools and the kernel are installed, so the kernel's postinst
# builds a small initrd (virtio only, 6 MB instead of 15) once. Neither file is a conffile.
cat >"$WORK/essential.sh" <<'EOF'
set -e
R=$1
mkdir -p "$R/etc/initramfs-tools/conf.d" "$R/usr/share/initramfs-tools/modules.d"
echo MODULES=list >"$R/etc/initramfs-tools/conf.d/atp-small.conf"
printf 'virtio_pci\nvirtio_blk\nvirtio_console\n' >"$R/usr/share/initramfs-tools/modules.d/atp-virtio"
EOF

cat >"$WORK/customize.sh" <<'EOF'
set -e
R=$1 HOST=$2
echo "$HOST" >"$R/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n' "$HOST" >"$R/etc/hosts"
printf '/dev/vda\t/\text4\tdefaults,noatime\t0\t0\n' >"$R/etc/fstab"
chroot "$R" passwd -d root >/dev/null
rm -f "$R/etc/resolv.conf"; : >"$R/etc/resolv.conf"
# The second agent, on the test bed's direct channel: started by udev like Debian's own.
cat >"$R/etc/udev/rules.d/61-atp-qga-direct.rules" <<'RULE'
SUBSYSTEM=="virtio-ports", ATTR{name}=="org.qemu.guest_agent.1", TAG+="systemd", ENV{SYSTEMD_WANTS}="atp-qga-direct.service"
RULE
cat >"$R/etc/systemd/system/atp-qga-direct.service" <<'UNIT'
[Unit]
Description=QEMU Guest Agent on the test bed's direct channel (org.qemu.guest_agent.1)
BindsTo=dev-virtio\x2dports-org.qemu.guest_agent.1.device
After=dev-virtio\x2dports-org.qemu.guest_agent.1.device
IgnoreOnIsolate=True

[Service]
UMask=0077
ExecStart=-/usr/sbin/qemu-ga -m virtio-serial -p /dev/virtio-ports/org.qemu.guest_agent.1 -t /run/atp-qga-direct
RuntimeDirectory=atp-qga-direct
Restart=always
RestartSec=0
UNIT
EOF

t0=$SECONDS
# sync-in/sync-out keep the downloaded .debs in $DEBS (skip=essential/unlink keeps the
# essential ones for sync-out), so a rebuild downloads nothing.
mmdebstrap --variant=minbase --include="$PKGS" --skip=essential/unlink \
  --essential-hook="sh $WORK/essential.sh \"\$1\"" \
  --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
  --setup-hook="sync-in $DEBS /var/cache/apt/archives/" \
  --customize-hook="sync-out /var/cache/apt/archives $DEBS" \
  --customize-hook="sh $WORK/customize.sh \"\$1\" $HOST" \
  bookworm "$R" "${MIRROR_ARGS[@]}" >"$WORK/mmdebstrap.log" 2>&1 \
  || { tail -30 "$WORK/mmdebstrap.log" >&2; echo "build-debian: mmdebstrap failed ($WORK/mmdebstrap.log)" >&2; exit 1; }
t1=$SECONDS

KVER=$(ls "$R/lib/modules" | head -1)
install -m 644 "$R/boot/vmlinuz-$KVER" "$OUT/vmlinuz"
install -m 644 "$R/boot/initrd.img-$KVER" "$OUT/initrd.img"
rm -f "$OUT/rootfs.img"
mkfs.ext4 -q -F -L root -d "$R" "$OUT/rootfs.img" "$SIZE"
chmod 644 "$OUT/rootfs.img"
{
  echo "built=$(date -u +%FT%TZ) kernel=$KVER"
  echo "mirrors=$MIRRORS"
  echo "mmdebstrap_s=$((t1 - t0)) mkfs_s=$((SECONDS - t1))"
  echo "rootfs_allocated=$(du -h "$OUT/rootfs.img" | cut -f1) vmlinuz=$(stat -c %s "$OUT/vmlinuz") initrd=$(stat -c %s "$OUT/initrd.img")"
  echo "debs=$(ls "$DEBS"/*.deb | wc -l) packages=$(chroot "$R" dpkg-query -W | wc -l)"
  chroot "$R" dpkg-query -W qemu-guest-agent nginx-light python3 systemd rsyslog "linux-image-$KVER"
} >"$OUT/build-info.txt"
rm -rf "$R"
echo "build-debian: $OUT ready; $(tr '\n' ' ' <"$OUT/build-info.txt")"
