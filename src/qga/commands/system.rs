//! The guest as a machine: identity, clock, logged-in users, vCPUs, memory blocks,
//! CPU and disk counters, and power state (shutdown, suspend).
//!
//! Most of these are read-only. The writers (`guest-set-time`, `guest-set-vcpus`,
//! `guest-set-memory-blocks`) and the power commands change the guest; `guest-shutdown`
//! and `guest-suspend-*` never answer on success (see [`Command::SUCCESS_RESPONSE`]).
//! vCPU, memory-block, CPU and disk statistics commands exist on Linux guests only.

use serde::{Deserialize, Serialize};

use super::Empty;
use crate::qga::Command;

/// `guest-get-host-name`: the guest's idea of its own name.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct GuestGetHostName;

/// What `guest-get-host-name` returns.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct HostName {
    /// gethostname(2) on POSIX; not necessarily fully qualified or in DNS.
    pub host_name: String,
}

impl Command for GuestGetHostName {
    const NAME: &'static str = "guest-get-host-name";
    type Reply = HostName;
}

/// `guest-get-timezone`: the guest's time zone, for display.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct GuestGetTimezone;

/// What `guest-get-timezone` returns.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct Timezone {
    /// Zone name (e.g. `UTC`, `CET`); OS-specific, informational only, may be absent.
    pub zone: Option<String>,
    /// Offset to UTC in seconds, positive east of Greenwich.
    pub offset: i64,
}

impl Command for GuestGetTimezone {
    const NAME: &'static str = "guest-get-timezone";
    type Reply = Timezone;
}

/// `guest-get-users`: users with an active login session (utmpx on POSIX).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct GuestGetUsers;

/// One logged-in user, as `guest-get-users` lists it (each user once).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct LoggedInUser {
    /// User name.
    pub user: String,
    /// Earliest login of this user, in fractional seconds since the Unix epoch.
    pub login_time: f64,
    /// Logon domain (Windows guests only).
    pub domain: Option<String>,
}

impl Command for GuestGetUsers {
    const NAME: &'static str = "guest-get-users";
    type Reply = Vec<LoggedInUser>;
}

/// `guest-get-vcpus`: the guest's logical processors, in no particular order.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct GuestGetVcpus;

/// One logical processor: listed by `guest-get-vcpus`, requested by `guest-set-vcpus`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct LogicalProcessor {
    /// The guest's identifier for this vCPU (the N of `cpuN` on Linux).
    pub logical_id: i64,
    /// Whether the vCPU is online.
    pub online: bool,
    /// Whether it may be taken offline; always reported, ignored on input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub can_offline: Option<bool>,
}

impl Command for GuestGetVcpus {
    const NAME: &'static str = "guest-get-vcpus";
    type Reply = Vec<LogicalProcessor>;
}

/// `guest-set-vcpus`: bring vCPUs online or offline (Linux only).
///
/// Returns how many leading entries were applied; an error means the first one failed
/// and nothing changed.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct GuestSetVcpus {
    /// Wanted states, applied in order.
    pub vcpus: Vec<LogicalProcessor>,
}

impl Command for GuestSetVcpus {
    const NAME: &'static str = "guest-set-vcpus";
    type Reply = i64;
}

/// `guest-get-time`: the guest's system clock, in nanoseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct GuestGetTime;

impl Command for GuestGetTime {
    const NAME: &'static str = "guest-get-time";
    type Reply = i64;
}

/// `guest-set-time`: set the guest clock, e.g. after a pause or a restore from file.
///
/// With `time`, sets the system clock and then writes it to the RTC; without, sets the
/// system clock from the RTC. On Linux both need `/sbin/hwclock` in the guest (else the
/// agent says "this feature or command is not currently supported").
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct GuestSetTime {
    /// Nanoseconds since the Unix epoch (UTC); `None` reads the time from the RTC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<i64>,
}

impl Command for GuestSetTime {
    const NAME: &'static str = "guest-set-time";
    type Reply = Empty;
}

/// `guest-get-memory-blocks`: the guest's hot-pluggable memory blocks (Linux only).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct GuestGetMemoryBlocks;

/// One memory block: listed by `guest-get-memory-blocks`, requested by
/// `guest-set-memory-blocks`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct MemoryBlock {
    /// The guest's identifier for the block (the N of `memoryN` in sysfs).
    pub phys_index: u64,
    /// Whether the block is online.
    pub online: bool,
    /// Whether it may be taken offline; always reported, ignored on input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub can_offline: Option<bool>,
}

impl Command for GuestGetMemoryBlocks {
    const NAME: &'static str = "guest-get-memory-blocks";
    type Reply = Vec<MemoryBlock>;
}

/// `guest-set-memory-blocks`: bring memory blocks online or offline (Linux only).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct GuestSetMemoryBlocks {
    /// Wanted states, applied in order; the reply has one entry per element.
    pub mem_blks: Vec<MemoryBlock>,
}

/// The outcome for one block of `guest-set-memory-blocks`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct MemoryBlockResponse {
    /// The block, as requested.
    pub phys_index: u64,
    /// What happened.
    pub response: MemoryBlockResponseType,
    /// errno of the failure; absent on success.
    pub error_code: Option<i64>,
}

/// How one memory block operation ended.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum MemoryBlockResponseType {
    /// The block is now in the requested state.
    Success,
    /// No such `memoryN` directory in sysfs.
    NotFound,
    /// The kernel cannot online/offline this block.
    OperationNotSupported,
    /// The kernel refused; see `error_code`.
    OperationFailed,
}

impl Command for GuestSetMemoryBlocks {
    const NAME: &'static str = "guest-set-memory-blocks";
    type Reply = Vec<MemoryBlockResponse>;
}

/// `guest-get-memory-block-info`: the memory block size (Linux only).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct GuestGetMemoryBlockInfo;

/// What `guest-get-memory-block-info` returns.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub struct MemoryBlockInfo {
    /// Bytes per block: the unit of memory hot(un)plug in the guest.
    pub size: u64,
}

impl Command for GuestGetMemoryBlockInfo {
    const NAME: &'static str = "guest-get-memory-block-info";
    type Reply = MemoryBlockInfo;
}

/// `guest-get-cpustats`: cumulative time per CPU since boot (Linux only, since 7.1).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct GuestGetCpustats;

/// One CPU's counters, tagged by the guest OS kind (`"type"` on the wire).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum CpuStats {
    /// A Linux guest's `/proc/stat` line.
    Linux(LinuxCpuStats),
    /// An OS kind this library does not know yet.
    #[serde(other)]
    Other,
}

/// A Linux CPU's time counters, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub struct LinuxCpuStats {
    /// CPU index in the guest.
    pub cpu: i64,
    /// Time in user mode.
    pub user: u64,
    /// Time in user mode at low priority.
    pub nice: u64,
    /// Time in kernel mode.
    pub system: u64,
    /// Time idle.
    pub idle: u64,
    /// Time waiting for I/O.
    pub iowait: Option<u64>,
    /// Time servicing interrupts.
    pub irq: Option<u64>,
    /// Time servicing softirqs.
    pub softirq: Option<u64>,
    /// Time stolen by the host.
    pub steal: Option<u64>,
    /// Time running vCPUs of the guest's own guests.
    pub guest: Option<u64>,
    /// Time running niced vCPUs of the guest's own guests.
    pub guestnice: Option<u64>,
}

impl Command for GuestGetCpustats {
    const NAME: &'static str = "guest-get-cpustats";
    type Reply = Vec<CpuStats>;
}

/// `guest-get-diskstats`: I/O counters per block device (Linux only, since 7.1).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct GuestGetDiskstats;

/// One block device's entry in `guest-get-diskstats`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct DiskStatsInfo {
    /// Kernel device name, e.g. `vda` or `loop0`.
    pub name: String,
    /// Device major number.
    pub major: u64,
    /// Device minor number.
    pub minor: u64,
    /// The counters.
    pub stats: DiskStats,
}

/// `/proc/diskstats` counters of one device; each may be missing on older kernels.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct DiskStats {
    /// Sectors read.
    pub read_sectors: Option<u64>,
    /// Reads completed.
    pub read_ios: Option<u64>,
    /// Read requests merged.
    pub read_merges: Option<u64>,
    /// Sectors written.
    pub write_sectors: Option<u64>,
    /// Writes completed.
    pub write_ios: Option<u64>,
    /// Write requests merged.
    pub write_merges: Option<u64>,
    /// Sectors discarded.
    pub discard_sectors: Option<u64>,
    /// Discards completed.
    pub discard_ios: Option<u64>,
    /// Discard requests merged.
    pub discard_merges: Option<u64>,
    /// Flushes completed.
    pub flush_ios: Option<u64>,
    /// Milliseconds spent reading.
    pub read_ticks: Option<u64>,
    /// Milliseconds spent writing.
    pub write_ticks: Option<u64>,
    /// Milliseconds spent discarding.
    pub discard_ticks: Option<u64>,
    /// Milliseconds spent flushing.
    pub flush_ticks: Option<u64>,
    /// I/Os in flight now.
    pub ios_pgr: Option<u64>,
    /// Milliseconds the device was busy.
    pub total_ticks: Option<u64>,
    /// Weighted milliseconds spent doing I/O (queue depth × time).
    pub weight_ticks: Option<u64>,
}

impl Command for GuestGetDiskstats {
    const NAME: &'static str = "guest-get-diskstats";
    type Reply = Vec<DiskStatsInfo>;
}

/// `guest-shutdown`: ask the guest OS to power off, halt or reboot.
///
/// Asynchronous and unanswered on success: the agent only replies with an error (e.g. a
/// bad mode); success shows as the VM going away (QMP `SHUTDOWN`) or rebooting.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct GuestShutdown {
    /// What to do; the agent's default is [`ShutdownMode::Powerdown`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<ShutdownMode>,
}

/// What `guest-shutdown` does.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ShutdownMode {
    /// Power off (ACPI off; QEMU exits).
    Powerdown,
    /// Halt the CPUs without powering off.
    Halt,
    /// Restart.
    Reboot,
}

impl Command for GuestShutdown {
    const NAME: &'static str = "guest-shutdown";
    type Reply = Empty;
    const SUCCESS_RESPONSE: bool = false;
}

/// `guest-suspend-disk`: hibernate; unanswered on success (the VM exits).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct GuestSuspendDisk;

impl Command for GuestSuspendDisk {
    const NAME: &'static str = "guest-suspend-disk";
    type Reply = Empty;
    const SUCCESS_RESPONSE: bool = false;
}

/// `guest-suspend-ram`: suspend to RAM (S3); unanswered on success.
///
/// The guest stays suspended until woken (QMP `system_wakeup`); check QMP
/// `query-current-machine` for `wakeup-suspend-support` first.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct GuestSuspendRam;

impl Command for GuestSuspendRam {
    const NAME: &'static str = "guest-suspend-ram";
    type Reply = Empty;
    const SUCCESS_RESPONSE: bool = false;
}

/// `guest-suspend-hybrid`: save to disk and suspend to RAM (Linux only); unanswered on
/// success.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct GuestSuspendHybrid;

impl Command for GuestSuspendHybrid {
    const NAME: &'static str = "guest-suspend-hybrid";
    type Reply = Empty;
    const SUCCESS_RESPONSE: bool = false;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args<C: Command>(cmd: &C) -> String {
        serde_json::to_string(cmd).unwrap()
    }

    #[test]
    fn unit_commands_have_no_arguments() {
        assert_eq!(args(&GuestGetHostName), "null");
        assert_eq!(args(&GuestGetCpustats), "null");
        assert_eq!(args(&GuestSuspendRam), "null");
    }

    #[test]
    fn decodes_identity_clock_and_users() {
        // Replies of qemu-ga 7.2 (Debian 12).
        let h: HostName = serde_json::from_str(r#"{"host-name": "qga-debian"}"#).unwrap();
        assert_eq!(h.host_name, "qga-debian");
        let tz: Timezone = serde_json::from_str(r#"{"zone": "UTC", "offset": 0}"#).unwrap();
        assert_eq!(tz.zone.as_deref(), Some("UTC"));
        let tz: Timezone = serde_json::from_str(r#"{"offset": -18000}"#).unwrap();
        assert_eq!((tz.zone, tz.offset), (None, -18000));
        let t: i64 = serde_json::from_str("1795647991985221000").unwrap();
        assert_eq!(t, 1_795_647_991_985_221_000);
        let users: Vec<LoggedInUser> = serde_json::from_str(
            r#"[{"user": "root", "login-time": 1700000000.25},
                {"user": "Administrator", "login-time": 1700000001, "domain": "WIN"}]"#,
        )
        .unwrap();
        assert_eq!(users[0].login_time, 1_700_000_000.25);
        assert_eq!(users[1].domain.as_deref(), Some("WIN"));
    }

    #[test]
    fn decodes_vcpus_and_memory_blocks() {
        let vcpus: Vec<LogicalProcessor> = serde_json::from_str(
            r#"[{"online": true, "can-offline": true, "logical-id": 1},
                {"online": true, "can-offline": false, "logical-id": 0}]"#,
        )
        .unwrap();
        assert_eq!(vcpus.len(), 2);
        assert_eq!(vcpus[1].logical_id, 0);
        assert_eq!(vcpus[1].can_offline, Some(false));
        let blocks: Vec<MemoryBlock> = serde_json::from_str(
            r#"[{"online": true, "can-offline": true, "phys-index": 188, "new": 1}]"#,
        )
        .unwrap();
        assert_eq!(blocks[0].phys_index, 188);
        let info: MemoryBlockInfo = serde_json::from_str(r#"{"size": 134217728}"#).unwrap();
        assert_eq!(info.size, 128 << 20);
        let res: Vec<MemoryBlockResponse> = serde_json::from_str(
            r#"[{"response": "success", "phys-index": 3},
                {"response": "operation-failed", "phys-index": 4, "error-code": 16}]"#,
        )
        .unwrap();
        assert_eq!(res[0].response, MemoryBlockResponseType::Success);
        assert_eq!(res[0].error_code, None);
        assert_eq!(res[1].response, MemoryBlockResponseType::OperationFailed);
        assert_eq!(res[1].error_code, Some(16));
    }

    #[test]
    fn encodes_setters_without_output_only_fields() {
        let set = GuestSetVcpus {
            vcpus: vec![LogicalProcessor {
                logical_id: 1,
                online: false,
                can_offline: None,
            }],
        };
        assert_eq!(args(&set), r#"{"vcpus":[{"logical-id":1,"online":false}]}"#);
        let set = GuestSetMemoryBlocks {
            mem_blks: vec![MemoryBlock {
                phys_index: 3,
                online: true,
                can_offline: None,
            }],
        };
        assert_eq!(
            args(&set),
            r#"{"mem-blks":[{"phys-index":3,"online":true}]}"#
        );
        assert_eq!(args(&GuestSetTime { time: None }), "{}");
        assert_eq!(
            args(&GuestSetTime {
                time: Some(1_700_000_000_000_000_000)
            }),
            r#"{"time":1700000000000000000}"#
        );
    }

    #[test]
    fn decodes_cpu_and_disk_stats() {
        let cpus: Vec<CpuStats> = serde_json::from_str(
            r#"[{"cpu": 0, "guestnice": 0, "idle": 948990, "steal": 60, "iowait": 820,
                 "system": 45420, "guest": 0, "nice": 0, "irq": 0, "type": "linux",
                 "user": 269260, "softirq": 230},
                {"cpu": 1, "user": 1, "nice": 0, "system": 2, "idle": 3, "type": "linux"},
                {"type": "mswindows", "cpu": 0}]"#,
        )
        .unwrap();
        let CpuStats::Linux(c0) = cpus[0] else {
            panic!("{:?}", cpus[0])
        };
        assert_eq!((c0.cpu, c0.user, c0.softirq), (0, 269_260, Some(230)));
        let CpuStats::Linux(c1) = cpus[1] else {
            panic!("{:?}", cpus[1])
        };
        assert_eq!(c1.iowait, None);
        assert_eq!(cpus[2], CpuStats::Other);

        let disks: Vec<DiskStatsInfo> = serde_json::from_str(
            r#"[{"name": "vda", "stats": {"discard-sectors": 4790960, "write-ios": 17641,
                 "discard-ios": 812, "discard-ticks": 120, "weight-ticks": 90000,
                 "read-ios": 30000, "flush-ios": 5000, "write-sectors": 9000000,
                 "write-merges": 100, "write-ticks": 40000, "ios-pgr": 0,
                 "read-sectors": 6000000, "read-merges": 50, "total-ticks": 60000,
                 "discard-merges": 0, "flush-ticks": 700, "read-ticks": 20000},
                 "minor": 0, "major": 254},
                {"name": "sr0", "stats": {}, "minor": 0, "major": 11}]"#,
        )
        .unwrap();
        assert_eq!(disks[0].name, "vda");
        assert_eq!(disks[0].stats.discard_sectors, Some(4_790_960));
        assert_eq!(disks[1].stats, DiskStats::default());
    }

    #[test]
    fn power_commands_expect_no_reply() {
        assert_eq!(args(&GuestShutdown::default()), "{}");
        assert_eq!(
            args(&GuestShutdown {
                mode: Some(ShutdownMode::Powerdown)
            }),
            r#"{"mode":"powerdown"}"#
        );
        assert_eq!(
            args(&GuestShutdown {
                mode: Some(ShutdownMode::Reboot)
            }),
            r#"{"mode":"reboot"}"#
        );
        const {
            assert!(!GuestShutdown::SUCCESS_RESPONSE);
            assert!(!GuestSuspendDisk::SUCCESS_RESPONSE);
            assert!(!GuestSuspendRam::SUCCESS_RESPONSE);
            assert!(!GuestSuspendHybrid::SUCCESS_RESPONSE);
            assert!(GuestGetTime::SUCCESS_RESPONSE);
        }
    }
}
