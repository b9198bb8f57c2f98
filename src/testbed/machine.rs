//! What the test bed boots, as one description for both ways of booting it: the QEMU
//! command line (`qemu.rs`) and the libvirt domain XML (here).

use std::path::{Path, PathBuf};

use super::{BootOptions, DebianImage, GuestImage};

/// What to boot, for QEMU and libvirt alike: direct kernel boot, optionally with a raw
/// root disk that is never written (QEMU `-snapshot`, libvirt a qcow2 overlay).
#[derive(Debug, Clone)]
pub(crate) struct Machine {
    pub(crate) kernel: PathBuf,
    pub(crate) initrd: PathBuf,
    pub(crate) disk: Option<PathBuf>,
    pub(crate) cmdline: String,
    pub(crate) vcpus: u32,
    pub(crate) memory_mib: u32,
    /// The CPU model under TCG (`max` for the busybox guest, `qemu64` for Debian: faster,
    /// and it does not expose svm, so the guest loads no kvm module).
    pub(crate) cpu: &'static str,
    /// ACPI in a libvirt domain (plain QEMU always has it): systemd powers off through it.
    pub(crate) acpi: bool,
}

impl Machine {
    /// The busybox guest with `opts`.
    pub(crate) fn busybox(image: &GuestImage, opts: &BootOptions) -> Self {
        let mut cmdline = "console=ttyS0 panic=-1 quiet loglevel=3 no_timer_check".to_owned();
        if !opts.qga_args.is_empty() {
            cmdline.push_str(&format!(" qga.args={}", opts.qga_args.join(",")));
        }
        Self {
            kernel: image.kernel(),
            initrd: image.initrd(opts.flavour),
            disk: None,
            cmdline,
            vcpus: 1,
            memory_mib: opts.memory_mib,
            cpu: "max",
            acpi: false,
        }
    }

    /// The Debian guest.
    pub(crate) fn debian(image: &DebianImage, memory_mib: u32, vcpus: u32) -> Self {
        Self {
            kernel: image.kernel(),
            initrd: image.initrd(),
            disk: Some(image.rootfs()),
            cmdline: DebianImage::cmdline(),
            vcpus,
            memory_mib,
            cpu: "qemu64",
            acpi: true,
        }
    }
}

/// The libvirt domain for `m`: agent channels `org.qemu.guest_agent.0` (libvirt's) and
/// `direct_port` bound to the host socket `direct`; serial console to a file.
pub(crate) fn domain_xml(
    name: &str,
    m: &Machine,
    direct_port: &str,
    direct: &Path,
    console: &Path,
) -> String {
    let cpu = if m.cpu == "max" {
        "<cpu mode='maximum'/>".to_owned()
    } else {
        format!(
            "<cpu mode='custom' match='exact'><model fallback='forbid'>{}</model></cpu>",
            m.cpu
        )
    };
    let disk = m.disk.as_ref().map_or_else(String::new, |d| {
        format!(
            "<disk type='file' device='disk'>\n      <driver name='qemu' type='qcow2' cache='unsafe'/>\n      <source file='{}'/>\n      <target dev='vda' bus='virtio'/>\n    </disk>",
            d.display()
        )
    });
    let features = if m.acpi {
        "<features><acpi/><apic/></features>"
    } else {
        ""
    };
    format!(
        r#"<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>{memory}</memory>
  <vcpu>{vcpus}</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  {features}
  {cpu}
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    {disk}
    <serial type='file'><source path='{console}'/><target port='0'/></serial>
    <controller type='virtio-serial' index='0'/>
    <channel type='unix'>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
    <channel type='unix'>
      <source mode='bind' path='{direct}'/>
      <target type='virtio' name='{direct_port}'/>
    </channel>
    <memballoon model='none'/>
  </devices>
</domain>"#,
        memory = m.memory_mib,
        vcpus = m.vcpus,
        kernel = m.kernel.display(),
        initrd = m.initrd.display(),
        cmdline = m.cmdline,
        direct = direct.display(),
        console = console.display(),
    )
}
