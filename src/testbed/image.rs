//! The busybox guest image, built by the embedded `scripts/build-guest.sh`, and the
//! cached-build logic it shares with the Debian image: one directory per input hash.

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

/// An image build script and where its output is cached.
pub(crate) struct Script<'a> {
    /// File name the script is written under (and named in errors).
    pub(crate) name: &'a str,
    /// The script itself.
    pub(crate) text: &'a str,
    /// Hash of its inputs: the output lives in `CACHE/PREFIX-KEY`.
    pub(crate) key: &'a str,
    /// Directory name prefix in the cache.
    pub(crate) prefix: &'a str,
    /// A file the script writes last: its presence means the build is complete.
    pub(crate) marker: &'a str,
    /// Extra environment for the script.
    pub(crate) env: &'a [(&'a str, PathBuf)],
}

/// Runs `script OUTDIR` in a private build directory unless `CACHE/PREFIX-KEY` already
/// holds its output, then renames the output into place (atomic against other processes).
pub(crate) fn build_cached(cache: &Path, script: &Script<'_>) -> Result<PathBuf, TestbedError> {
    let dir = cache.join(format!("{}-{}", script.prefix, script.key));
    if dir.join(script.marker).exists() {
        return Ok(dir);
    }
    std::fs::create_dir_all(cache).map_err(io_err(format!("creating {}", cache.display())))?;
    let tmp = cache.join(format!("build-{}-{}", script.prefix, std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io_err("creating build dir"))?;
    let path = tmp.join(script.name);
    std::fs::write(&path, script.text).map_err(io_err(format!("writing {}", script.name)))?;
    let out = tmp.join("out");
    let started = Instant::now();
    let res = Command::new("bash")
        .arg(&path)
        .arg(&out)
        .envs(script.env.iter().map(|(k, v)| (k, v)))
        .output()
        .map_err(io_err(format!("running {}", script.name)))?;
    if !res.status.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(TestbedError::Command {
            what: script.name.into(),
            detail: format!(
                "{}: {}{}",
                res.status,
                String::from_utf8_lossy(&res.stdout),
                String::from_utf8_lossy(&res.stderr)
            ),
        });
    }
    tracing::info!(script = script.name, elapsed = ?started.elapsed(), dir = %dir.display(), "built image");
    if std::fs::rename(&out, &dir).is_err() && !dir.join(script.marker).exists() {
        return Err(TestbedError::Command {
            what: format!("installing the output of {}", script.name),
            detail: format!("cannot move {} to {}", out.display(), dir.display()),
        });
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(dir)
}

impl GuestImage {
    /// Returns the cached image, building it first if the script or its inputs changed.
    pub fn ensure() -> Result<Self, TestbedError> {
        Self::ensure_in(&cache_dir())
    }

    /// Like [`GuestImage::ensure`], with an explicit cache directory.
    pub fn ensure_in(cache: &Path) -> Result<Self, TestbedError> {
        let _guard = crate::sync::lock(&BUILD);
        let dir = build_cached(
            cache,
            &Script {
                name: "build-guest.sh",
                text: BUILD_SCRIPT,
                key: &input_key(),
                prefix: "guest",
                marker: "initrd-alt.img",
                env: &[("ATP_GUEST_WORK", cache.join("work"))],
            },
        )?;
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
