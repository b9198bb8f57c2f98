//! `guest-get-osinfo`: the guest operating system's identity (os-release and uname).

use serde::{Deserialize, Serialize};

use crate::qga::Command;

/// `guest-get-osinfo`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct GuestGetOsinfo;

/// What `guest-get-osinfo` returns; every field is optional in the QGA schema.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct OsInfo {
    /// os-release `ID`, e.g. `debian` or `mswindows`.
    pub id: Option<String>,
    /// os-release `NAME`.
    pub name: Option<String>,
    /// os-release `PRETTY_NAME`.
    pub pretty_name: Option<String>,
    /// os-release `VERSION`.
    pub version: Option<String>,
    /// os-release `VERSION_ID`.
    pub version_id: Option<String>,
    /// os-release `VARIANT`.
    pub variant: Option<String>,
    /// os-release `VARIANT_ID`.
    pub variant_id: Option<String>,
    /// `uname -r`.
    pub kernel_release: Option<String>,
    /// `uname -v`.
    pub kernel_version: Option<String>,
    /// `uname -m`, e.g. `x86_64`.
    pub machine: Option<String>,
}

impl OsInfo {
    /// True when the guest reports a Windows id.
    pub fn is_windows(&self) -> bool {
        self.id.as_deref() == Some("mswindows")
    }
}

impl Command for GuestGetOsinfo {
    const NAME: &'static str = "guest-get-osinfo";
    type Reply = OsInfo;
}
