//! The guest image: built by the embedded `scripts/build-guest.sh`, cached by content.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
    time::Instant,
};

use sha2::{Digest, Sha256};

use super::{TestbedError, cache_dir, io_err};

/// The build script, embedded so that `atp demo` works from any directory.
const BUILD_SCRIPT: &str = include_str!("../../scripts/build-guest.sh");

/// Which initramfs to boot; the two report different operating systems.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// Reports this host's Debian os-release, hostname `qga-debian`.
    Debian,
    /// Reports a made-up OS (`id` = `qgatestos`), hostname `qga-alt`.
    Alt,
}

impl Flavour {
    /// The name used in file names.
    pub fn as_str(self) -> &'static str {
        match self {
            Flavour::Debian => "debian",
            Flavour::Alt => "alt",
        }
    }
}

/// A built guest image: a kernel and one initramfs per [`Flavour`].
#[derive(Debug, Clone)]
pub struct GuestImage {
    dir: PathBuf,
}

/// One build at a time in this process; other processes are handled by the atomic rename.
static BUILD: Mutex<()> = Mutex::new(());

impl GuestImage {
    /// Returns the cached image, building it first if the script or its inputs changed.
    pub fn ensure() -> Result<Self, TestbedError> {
        Self::ensure_in(&cache_dir())
    }

    /// Like [`GuestImage::ensure`], with an explicit cache directory.
    pub fn ensure_in(cache: &Path) -> Result<Self, TestbedError> {
        let _guard = crate::sync::lock(&BUILD);
        let dir = cache.join(format!("guest-{}", input_key()));
        if dir.join("initrd-alt.img").exists() {
            return Ok(Self { dir });
        }
        std::fs::create_dir_all(cache).map_err(io_err(format!("creating {}", cache.display())))?;
        let tmp = cache.join(format!("build-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(io_err("creating build dir"))?;
        let script = tmp.join("build-guest.sh");
        std::fs::write(&script, BUILD_SCRIPT).map_err(io_err("writing build script"))?;
        let out = tmp.join("out");
        let started = Instant::now();
        let res = Command::new("bash")
            .arg(&script)
            .arg(&out)
            .env("ATP_GUEST_WORK", cache.join("work"))
            .output()
            .map_err(io_err("running build-guest.sh"))?;
        if !res.status.success() {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(TestbedError::Command {
                what: "build-guest.sh".into(),
                detail: format!(
                    "{}: {}{}",
                    res.status,
                    String::from_utf8_lossy(&res.stdout),
                    String::from_utf8_lossy(&res.stderr)
                ),
            });
        }
        tracing::info!(elapsed = ?started.elapsed(), dir = %dir.display(), "built guest image");
        if std::fs::rename(&out, &dir).is_err() && !dir.join("initrd-alt.img").exists() {
            return Err(TestbedError::Command {
                what: "installing guest image".into(),
                detail: format!("cannot move {} to {}", out.display(), dir.display()),
            });
        }
        let _ = std::fs::remove_dir_all(&tmp);
        Ok(Self { dir })
    }

    /// The directory holding the image files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The kernel.
    pub fn kernel(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }

    /// The initramfs of `flavour`.
    pub fn initrd(&self, flavour: Flavour) -> PathBuf {
        self.dir.join(format!("initrd-{}.img", flavour.as_str()))
    }
}

/// Identifies the build inputs: the script and the host binaries copied into the image.
fn input_key() -> String {
    let mut h = Sha256::new();
    h.update(BUILD_SCRIPT.as_bytes());
    for bin in [
        "/usr/sbin/qemu-ga",
        "/usr/bin/qemu-ga",
        "/bin/busybox",
        "/etc/os-release",
    ] {
        if let Ok(m) = std::fs::metadata(bin) {
            h.update(bin.as_bytes());
            h.update(m.len().to_le_bytes());
            if let Ok(t) = m.modified() {
                h.update(format!("{t:?}").as_bytes());
            }
        }
    }
    let digest = h.finalize();
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}
