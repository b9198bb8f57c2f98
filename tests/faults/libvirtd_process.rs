//! The session libvirtd's processes outside the test bed: finding, signalling and
//! restarting it (with the test bed's own command), and the QEMU it leaves behind.

use std::{path::Path, process::Child, time::Duration};

use ocloudview_atp::{libvirt::LibvirtManager, testbed::libvirtd_command};

/// The pid of the libvirtd this test process started for `session` (found through /proc
/// by its parent and its `XDG_RUNTIME_DIR`).
pub fn libvirtd_pid(root: &Path) -> u32 {
    let want = format!("XDG_RUNTIME_DIR={}", root.join("run").display());
    let me = std::process::id().to_string();
    for e in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if comm.trim() != "libvirtd" {
            continue;
        }
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .unwrap_or_default();
        let environ = std::fs::read(e.path().join("environ")).unwrap_or_default();
        if ppid == me && environ.split(|b| *b == 0).any(|v| v == want.as_bytes()) {
            return pid;
        }
    }
    panic!("no libvirtd with {want} among this process's children");
}

/// Whether `pid` has exited (gone, or a zombie waiting for its parent).
pub fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

pub fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()), sig);
}

/// Pids of the QEMU processes running domain `name`.
fn qemu_pids(name: &str) -> Vec<u32> {
    let needle = format!("guest={name}");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let pid = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let is_qemu = args.first()?.ends_with(b"qemu-system-x86_64");
            (is_qemu && args.iter().any(|a| a.starts_with(needle.as_bytes()))).then_some(pid)
        })
        .collect()
}

/// A second libvirtd on the state of a session whose first daemon was stopped, started
/// with the test bed's own command, `libvirtd_command` (once [`RestartedLibvirtd::start`]
/// ran). On drop it destroys the session's domains (the
/// session's own cleanup would find no daemon), stops, and kills any QEMU of `domain`
/// still running.
pub struct RestartedLibvirtd {
    pub child: Option<Child>,
    pub uri: String,
    pub domain: String,
}

impl RestartedLibvirtd {
    /// Starts the second libvirtd.
    pub fn start(&mut self, root: &Path) {
        let child = libvirtd_command(root)
            .stderr(std::fs::File::create(root.join("libvirtd-restarted.stderr")).unwrap())
            .spawn()
            .unwrap();
        self.child = Some(child);
    }
}

impl Drop for RestartedLibvirtd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(mgr) = LibvirtManager::connect_uri(&self.uri)
                && let Ok(domains) = mgr.connection().list_all_domains(0)
            {
                for d in domains {
                    let _ = d.destroy();
                }
            }
            signal(child.id(), nix::sys::signal::Signal::SIGTERM);
            for _ in 0..100 {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in qemu_pids(&self.domain) {
            signal(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}
