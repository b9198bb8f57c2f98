//! Storage: mounted file systems and disks, freeze/thaw for consistent snapshots, trim.
//!
//! A freeze blocks writers in the guest until the thaw, and while frozen the agent runs
//! only a small safe set of commands (status, thaw, ping, info...). Whoever freezes must
//! always thaw, even on error paths; a freeze that finds nothing freezable returns 0 and
//! leaves the status at `thawed`.

use serde::{Deserialize, Serialize};

use crate::qga::Command;

/// `guest-get-fsinfo`: mounted local file systems and the disks under them.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct GuestGetFsinfo;

/// One mounted file system; network file systems (NFS, CIFS) are not listed.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct FilesystemInfo {
    /// Device name, e.g. `vda1` or `dm-0`.
    pub name: String,
    /// Mount point; usable with `guest-fsfreeze-freeze-list`.
    pub mountpoint: String,
    /// File system type, e.g. `ext4`.
    #[serde(rename = "type")]
    pub fs_type: String,
    /// Bytes in use (since 3.0).
    pub used_bytes: Option<u64>,
    /// Capacity available to unprivileged users (since 3.0).
    pub total_bytes: Option<u64>,
    /// Capacity including the root reserve (since 9.1).
    pub total_bytes_privileged: Option<u64>,
    /// Disks the file system lies on; empty when the bus is not supported.
    #[serde(default)]
    pub disk: Vec<DiskAddress>,
}

impl Command for GuestGetFsinfo {
    const NAME: &'static str = "guest-get-fsinfo";
    type Reply = Vec<FilesystemInfo>;
}

/// Where a disk sits on the guest's buses, to match it with the host's disk config.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct DiskAddress {
    /// The controller's PCI address (all -1 when there is none).
    pub pci_controller: PciAddress,
    /// The disk's bus.
    pub bus_type: DiskBusType,
    /// Bus number on the controller.
    pub bus: i64,
    /// Target id.
    pub target: i64,
    /// Unit (LUN) id.
    pub unit: i64,
    /// Disk serial number, when the disk has one (since 3.1).
    pub serial: Option<String>,
    /// Device node (POSIX, e.g. `/dev/vda`) or UNC path (Windows) (since 3.1).
    pub dev: Option<String>,
    /// CCW address on s390x (since 6.0).
    pub ccw_address: Option<CcwAddress>,
}

/// A PCI address; fields are -1 when unknown.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub struct PciAddress {
    /// PCI domain.
    pub domain: i64,
    /// Bus.
    pub bus: i64,
    /// Slot.
    pub slot: i64,
    /// Function.
    pub function: i64,
}

/// An s390x channel I/O address.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub struct CcwAddress {
    /// Channel subsystem image id.
    pub cssid: i64,
    /// Subchannel set id.
    pub ssid: i64,
    /// Subchannel number.
    pub subchno: i64,
    /// Device number.
    pub devno: i64,
}

/// The bus a disk hangs off. Bus names this library does not know yet decode as
/// [`DiskBusType::Unknown`].
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DiskBusType {
    /// IDE.
    Ide,
    /// Floppy controller.
    Fdc,
    /// SCSI (including virtio-scsi).
    Scsi,
    /// virtio-blk.
    Virtio,
    /// Xen PV.
    Xen,
    /// USB.
    Usb,
    /// User-mode Linux.
    Uml,
    /// SATA (AHCI).
    Sata,
    /// SD card.
    Sd,
    /// IEEE 1394 (Windows).
    Ieee1394,
    /// SSA (Windows).
    Ssa,
    /// Fibre Channel (Windows).
    Fibre,
    /// RAID (Windows).
    Raid,
    /// iSCSI (Windows).
    Iscsi,
    /// Serial-attached SCSI (Windows).
    Sas,
    /// MMC (Windows).
    Mmc,
    /// Virtual bus (Windows).
    Virtual,
    /// File-backed virtual disk (Windows).
    FileBackedVirtual,
    /// NVMe (since 7.1).
    Nvme,
    /// Unknown to the agent (`unknown`), or a bus this library does not know.
    #[default]
    #[serde(other)]
    Unknown,
}

/// `guest-get-disks`: the guest's block devices (since 5.2; on Linux, every root
/// block device of non-zero size and its partitions).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct GuestGetDisks;

/// One disk or partition from `guest-get-disks`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct DiskInfo {
    /// Device node (Linux, e.g. `/dev/vda`) or UNC path (Windows).
    pub name: String,
    /// Whether this is a partition rather than a whole disk.
    pub partition: bool,
    /// Devices this one is built on, e.g. the PVs of an LV (Linux); empty when none.
    #[serde(default)]
    pub dependencies: Vec<String>,
    /// Bus address; absent for virtual devices.
    pub address: Option<DiskAddress>,
    /// Alias, e.g. the device-mapper name on Linux.
    pub alias: Option<String>,
    /// SMART health data (since 7.1; NVMe only).
    pub smart: Option<DiskSmart>,
}

/// SMART data of a disk, tagged by its bus type (`"type"` on the wire).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum DiskSmart {
    /// An NVMe disk's health log.
    Nvme(NvmeSmart),
    /// A bus without SMART decoding in the agent or in this library.
    #[serde(other)]
    Other,
}

/// The NVMe SMART / Health Information log (log id 02h); 128-bit counters come as
/// `-lo`/`-hi` halves.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct NvmeSmart {
    /// Critical warning bits.
    pub critical_warning: i64,
    /// Composite temperature, in kelvin.
    pub temperature: i64,
    /// Available spare, in percent.
    pub available_spare: i64,
    /// Spare threshold below which a warning is raised, in percent.
    pub available_spare_threshold: i64,
    /// Estimated life used, in percent (may exceed 100).
    pub percentage_used: i64,
    /// Data units (1000 × 512 bytes) read, low 64 bits.
    pub data_units_read_lo: u64,
    /// Data units read, high 64 bits.
    pub data_units_read_hi: u64,
    /// Data units written, low 64 bits.
    pub data_units_written_lo: u64,
    /// Data units written, high 64 bits.
    pub data_units_written_hi: u64,
    /// Host read commands, low 64 bits.
    pub host_read_commands_lo: u64,
    /// Host read commands, high 64 bits.
    pub host_read_commands_hi: u64,
    /// Host write commands, low 64 bits.
    pub host_write_commands_lo: u64,
    /// Host write commands, high 64 bits.
    pub host_write_commands_hi: u64,
    /// Minutes the controller was busy, low 64 bits.
    pub controller_busy_time_lo: u64,
    /// Minutes the controller was busy, high 64 bits.
    pub controller_busy_time_hi: u64,
    /// Power cycles, low 64 bits.
    pub power_cycles_lo: u64,
    /// Power cycles, high 64 bits.
    pub power_cycles_hi: u64,
    /// Power-on hours, low 64 bits.
    pub power_on_hours_lo: u64,
    /// Power-on hours, high 64 bits.
    pub power_on_hours_hi: u64,
    /// Unsafe shutdowns, low 64 bits.
    pub unsafe_shutdowns_lo: u64,
    /// Unsafe shutdowns, high 64 bits.
    pub unsafe_shutdowns_hi: u64,
    /// Unrecovered media errors, low 64 bits.
    pub media_errors_lo: u64,
    /// Unrecovered media errors, high 64 bits.
    pub media_errors_hi: u64,
    /// Error log entries, low 64 bits.
    pub number_of_error_log_entries_lo: u64,
    /// Error log entries, high 64 bits.
    pub number_of_error_log_entries_hi: u64,
}

impl Command for GuestGetDisks {
    const NAME: &'static str = "guest-get-disks";
    type Reply = Vec<DiskInfo>;
}

/// `guest-fsfreeze-status`: whether the agent has file systems frozen.
///
/// Only tracks freezes made through the agent; a freeze by another guest process is
/// not seen.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct GuestFsfreezeStatus;

/// The agent's freeze state.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FsfreezeStatus {
    /// Nothing frozen.
    Thawed,
    /// Every freezable local file system is frozen.
    Frozen,
}

impl Command for GuestFsfreezeStatus {
    const NAME: &'static str = "guest-fsfreeze-status";
    type Reply = FsfreezeStatus;
}

/// `guest-fsfreeze-freeze`: sync and freeze every freezable local file system.
///
/// Returns how many were frozen; on error the agent thaws what it froze. On Windows
/// (VSS) the freeze lasts at most about 10 s.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct GuestFsfreezeFreeze;

impl Command for GuestFsfreezeFreeze {
    const NAME: &'static str = "guest-fsfreeze-freeze";
    type Reply = i64;
}

/// `guest-fsfreeze-freeze-list`: like `guest-fsfreeze-freeze`, limited to some mount
/// points (since 2.2). Returns how many were frozen.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct GuestFsfreezeFreezeList {
    /// Mount points to freeze (unknown ones are ignored); `None` freezes all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mountpoints: Option<Vec<String>>,
}

impl Command for GuestFsfreezeFreezeList {
    const NAME: &'static str = "guest-fsfreeze-freeze-list";
    type Reply = i64;
}

/// `guest-fsfreeze-thaw`: thaw every frozen file system. Returns how many were thawed;
/// fewer than were frozen means something else thawed some in between.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct GuestFsfreezeThaw;

impl Command for GuestFsfreezeThaw {
    const NAME: &'static str = "guest-fsfreeze-thaw";
    type Reply = i64;
}

/// `guest-fstrim`: discard unused blocks of every mounted file system (FITRIM).
///
/// Can take long on big or fragmented file systems, and blocks the agent meanwhile.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct GuestFstrim {
    /// Smallest free range worth discarding, in bytes (a hint); `None` means 0: all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minimum: Option<i64>,
}

/// What `guest-fstrim` returns.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct FstrimResponse {
    /// One entry per file system tried.
    pub paths: Vec<FstrimResult>,
}

/// The trim result of one file system.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct FstrimResult {
    /// Mount point.
    pub path: String,
    /// Bytes discarded.
    pub trimmed: Option<i64>,
    /// The minimum range the kernel actually used.
    pub minimum: Option<i64>,
    /// Why this file system could not be trimmed.
    pub error: Option<String>,
}

impl Command for GuestFstrim {
    const NAME: &'static str = "guest-fstrim";
    type Reply = FstrimResponse;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args<C: Command>(cmd: &C) -> String {
        serde_json::to_string(cmd).unwrap()
    }

    #[test]
    fn decodes_fsinfo_with_disk_addresses() {
        // qemu-ga 7.2 on a Debian 12 VM with one virtio disk.
        let fs: Vec<FilesystemInfo> = serde_json::from_str(
            r#"[{"name": "vda", "total-bytes": 97572749312, "mountpoint": "/",
                 "disk": [{"bus-type": "virtio", "bus": 0, "unit": 0,
                           "pci-controller": {"bus": 0, "slot": 2, "domain": 0, "function": 0},
                           "dev": "/dev/vda", "target": 0}],
                 "used-bytes": 15928147968, "type": "ext4"},
                {"name": "sdb1", "mountpoint": "/srv", "type": "xfs", "disk": [
                  {"bus-type": "scsi", "bus": 0, "unit": 1, "target": 0, "serial": "QM0001",
                   "pci-controller": {"bus": -1, "slot": -1, "domain": -1, "function": -1}}]}]"#,
        )
        .unwrap();
        assert_eq!(fs[0].fs_type, "ext4");
        assert_eq!(fs[0].used_bytes, Some(15_928_147_968));
        assert_eq!(fs[0].total_bytes, Some(97_572_749_312));
        assert_eq!(fs[0].total_bytes_privileged, None);
        let d = &fs[0].disk[0];
        assert_eq!(d.bus_type, DiskBusType::Virtio);
        assert_eq!(d.pci_controller.slot, 2);
        assert_eq!(d.dev.as_deref(), Some("/dev/vda"));
        assert_eq!(fs[1].used_bytes, None);
        assert_eq!(fs[1].disk[0].serial.as_deref(), Some("QM0001"));
        assert_eq!(fs[1].disk[0].pci_controller.domain, -1);
    }

    #[test]
    fn decodes_disks_with_and_without_address() {
        let disks: Vec<DiskInfo> = serde_json::from_str(
            r#"[{"name": "/dev/vda", "dependencies": [], "partition": false,
                 "address": {"bus-type": "virtio", "bus": 0, "unit": 0,
                   "pci-controller": {"bus": 0, "slot": 2, "domain": 0, "function": 0},
                   "dev": "/dev/vda", "target": 0}},
                {"name": "/dev/dm-0", "partition": false, "dependencies": ["/dev/vda2"],
                 "alias": "vg-root"},
                {"name": "/dev/nvme0n1", "partition": false, "address": {
                   "bus-type": "some-future-bus", "bus": 0, "unit": 0, "target": 0,
                   "pci-controller": {"bus": 0, "slot": 4, "domain": 0, "function": 0}},
                 "smart": {"type": "nvme", "critical-warning": 0, "temperature": 310,
                   "available-spare": 100, "available-spare-threshold": 10,
                   "percentage-used": 1, "data-units-read-lo": 5, "data-units-read-hi": 0,
                   "data-units-written-lo": 6, "data-units-written-hi": 0,
                   "host-read-commands-lo": 7, "host-read-commands-hi": 0,
                   "host-write-commands-lo": 8, "host-write-commands-hi": 0,
                   "controller-busy-time-lo": 9, "controller-busy-time-hi": 0,
                   "power-cycles-lo": 10, "power-cycles-hi": 0,
                   "power-on-hours-lo": 11, "power-on-hours-hi": 0,
                   "unsafe-shutdowns-lo": 12, "unsafe-shutdowns-hi": 0,
                   "media-errors-lo": 0, "media-errors-hi": 0,
                   "number-of-error-log-entries-lo": 0,
                   "number-of-error-log-entries-hi": 0}}]"#,
        )
        .unwrap();
        assert_eq!(
            disks[0].address.as_ref().unwrap().bus_type,
            DiskBusType::Virtio
        );
        assert!(disks[0].dependencies.is_empty());
        assert_eq!(disks[1].address, None);
        assert_eq!(disks[1].alias.as_deref(), Some("vg-root"));
        assert_eq!(
            disks[2].address.as_ref().unwrap().bus_type,
            DiskBusType::Unknown
        );
        let Some(DiskSmart::Nvme(smart)) = disks[2].smart else {
            panic!("{:?}", disks[2].smart)
        };
        assert_eq!((smart.temperature, smart.power_on_hours_lo), (310, 11));
        for (wire, bus) in [
            ("unknown", DiskBusType::Unknown),
            ("file-backed-virtual", DiskBusType::FileBackedVirtual),
            ("nvme", DiskBusType::Nvme),
        ] {
            let got: DiskBusType = serde_json::from_str(&format!("\"{wire}\"")).unwrap();
            assert_eq!(got, bus);
        }
        let other: DiskSmart = serde_json::from_str(r#"{"type": "sata"}"#).unwrap();
        assert_eq!(other, DiskSmart::Other);
    }

    #[test]
    fn freeze_status_is_a_bare_string() {
        let s: FsfreezeStatus = serde_json::from_str(r#""thawed""#).unwrap();
        assert_eq!(s, FsfreezeStatus::Thawed);
        let s: FsfreezeStatus = serde_json::from_str(r#""frozen""#).unwrap();
        assert_eq!(s, FsfreezeStatus::Frozen);
        let n: i64 = serde_json::from_str("0").unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn encodes_freeze_list_and_fstrim() {
        assert_eq!(args(&GuestFsfreezeFreezeList::default()), "{}");
        let list = GuestFsfreezeFreezeList {
            mountpoints: Some(vec!["/".into(), "/srv".into()]),
        };
        assert_eq!(args(&list), r#"{"mountpoints":["/","/srv"]}"#);
        assert_eq!(args(&GuestFstrim::default()), "{}");
        assert_eq!(
            args(&GuestFstrim {
                minimum: Some(1 << 20)
            }),
            r#"{"minimum":1048576}"#
        );
        assert_eq!(args(&GuestFsfreezeThaw), "null");
    }

    #[test]
    fn decodes_fstrim_per_path_results() {
        let r: FstrimResponse = serde_json::from_str(
            r#"{"paths": [{"path": "/", "trimmed": 4096000, "minimum": 0},
                          {"path": "/boot", "error": "Operation not supported"}]}"#,
        )
        .unwrap();
        assert_eq!(r.paths[0].trimmed, Some(4_096_000));
        assert_eq!(r.paths[1].error.as_deref(), Some("Operation not supported"));
        let empty: FstrimResponse = serde_json::from_str(r#"{"paths": []}"#).unwrap();
        assert!(empty.paths.is_empty());
    }
}
