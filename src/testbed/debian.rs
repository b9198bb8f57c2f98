//! The Debian 12 guest: a real distribution (systemd, udev, journald + rsyslog, Debian's
//! own qemu-guest-agent, nginx, python3) built by the embedded `scripts/build-debian.sh`
//! from Debian's mirror and cached by content, like the busybox image.

use std::{
    path::{Path, PathBuf},
    sync::Mutex,
};

use sha2::{Digest, Sha256};

use super::{
    TestbedError, cache_dir,
    image::{Script, build_cached},
};

/// The build script, embedded so that `atp demo --guest debian` works from any directory.
const BUILD_SCRIPT: &str = include_str!("../../scripts/build-debian.sh");

/// The guest's host name, set by the build script.
pub const DEBIAN_HOSTNAME: &str = "atp-debian12";

/// The virtio port of the image's second agent (its own udev rule and unit): the test
/// bed's direct channel. Debian's rule starts an agent on `org.qemu.guest_agent.0` only.
pub const DEBIAN_DIRECT_PORT: &str = "org.qemu.guest_agent.1";

/// Masked on the kernel command line: timers and gettys a test guest never needs, and
/// that cost boot time under TCG. The image itself stays stock.
const MASKED_UNITS: &[&str] = &[
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "systemd-tmpfiles-clean.timer",
    "getty@tty1.service",
    "serial-getty@ttyS0.service",
    "systemd-pstore.service",
];

/// Modules the guest would autoload for nothing under TCG (no KVM inside, no CPU crypto,
/// no legacy disks or input devices). `button` stays, for ACPI power-off.
const BLACKLISTED_MODULES: &[&str] = &[
    "kvm",
    "kvm_amd",
    "kvm_intel",
    "irqbypass",
    "aesni_intel",
    "ghash_clmulni_intel",
    "sha1_ssse3",
    "sha256_ssse3",
    "sha512_ssse3",
    "crc32_pclmul",
    "crct10dif_pclmul",
    "ata_piix",
    "ata_generic",
    "serio_raw",
    "pcspkr",
    "joydev",
    "qemu_fw_cfg",
    "efi_pstore",
    "floppy",
    "psmouse",
];

/// A built Debian image: kernel, small initrd and a raw ext4 root disk (`/dev/vda`).
///
/// Always boot it with `-snapshot` or an overlay: the file is shared by every boot.
#[derive(Debug, Clone)]
pub struct DebianImage {
    dir: PathBuf,
}

/// One build at a time in this process; other processes are handled by the atomic rename.
static BUILD: Mutex<()> = Mutex::new(());

impl DebianImage {
    /// Returns the cached image, building it first (about a minute cold, needs root and
    /// the network) if the build script changed.
    pub fn ensure() -> Result<Self, TestbedError> {
        Self::ensure_in(&cache_dir())
    }

    /// Like [`DebianImage::ensure`], with an explicit cache directory. The downloaded
    /// .debs are kept in `CACHE/debian-debs` across script changes.
    pub fn ensure_in(cache: &Path) -> Result<Self, TestbedError> {
        let _guard = crate::sync::lock(&BUILD);
        let key = input_key();
        let dir = build_cached(
            cache,
            &Script {
                name: "build-debian.sh",
                text: BUILD_SCRIPT,
                key: &key,
                prefix: "debian12",
                marker: "build-info.txt",
                // The root tree goes to the private build directory (removed after the
                // build), so that two processes building at once do not share it.
                env: &[("ATP_DEBIAN_DEBS", cache.join("debian-debs"))],
            },
        )?;
        Ok(Self { dir })
    }

    /// The directory holding the image files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The kernel (Debian's cloud kernel).
    pub fn kernel(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }

    /// The initrd (virtio modules only).
    pub fn initrd(&self) -> PathBuf {
        self.dir.join("initrd.img")
    }

    /// The raw ext4 root disk.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs.img")
    }

    /// What the build recorded: versions, sizes, timings.
    pub fn build_info(&self) -> String {
        std::fs::read_to_string(self.dir.join("build-info.txt")).unwrap_or_default()
    }

    /// The kernel command line for both QEMU and libvirt: root on the virtio disk, the
    /// console on the serial port, and the boot-time savings above.
    pub fn cmdline() -> String {
        format!(
            "root=/dev/vda rw console=ttyS0 panic=-1 systemd.firstboot=off quiet loglevel=3 \
             systemd.show_status=0 no_timer_check {} modprobe.blacklist={}",
            MASKED_UNITS
                .iter()
                .map(|u| format!("systemd.mask={u}"))
                .collect::<Vec<_>>()
                .join(" "),
            BLACKLISTED_MODULES.join(","),
        )
    }
}

/// Debian's agent reads `/etc/qemu/qemu-ga.conf` (absent in the image: nothing is blocked,
/// unlike the test bed's host agent). The text of that file blocking `commands`.
///
/// The list must be comma-separated: qemu-ga 7.2 takes a GKeyFile `a;b` list as one
/// unknown name and blocks nothing, silently.
pub fn qga_conf_blocking(commands: &[&str]) -> String {
    format!("[general]\nblock-rpcs={}\n", commands.join(","))
}

/// Identifies the build inputs: the script (which names the packages and the mirror
/// suites). Package updates on the mirror do not rebuild; a script change does.
fn input_key() -> String {
    let digest = Sha256::digest(BUILD_SCRIPT.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}
