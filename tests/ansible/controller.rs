//! The controller side of the Ansible tests: Ansible's own state in a temp dir, the
//! collection installed there from the repo path, and the 10 MiB file the playbook copies.

use std::{
    path::{Path, PathBuf},
    process::Output,
    time::Duration,
};

use sha2::{Digest, Sha256};

use crate::ROOT;

pub(crate) fn venv_bin(name: &str) -> PathBuf {
    let p = Path::new(ROOT).join(".venv/bin").join(name);
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup.sh (it installs ansible/requirements.txt into .venv)",
        p.display()
    );
    p
}

/// The controller side: Ansible's own state in a temp dir, the collection installed there
/// from the repo path, as a user would (`ansible-galaxy collection install <path>`).
pub(crate) struct Controller {
    pub(crate) dir: tempfile::TempDir,
}

impl Controller {
    pub(crate) async fn new() -> Self {
        let c = Self {
            dir: tempfile::Builder::new()
                .prefix("atp-ansible.")
                .tempdir()
                .unwrap(),
        };
        let collections = c.dir.path().join("collections").display().to_string();
        let src = Path::new(ROOT).join("ansible/ocloudview/atp");
        let out = c
            .run(
                "ansible-galaxy",
                &[
                    "collection",
                    "install",
                    "--force",
                    "-p",
                    &collections,
                    &src.display().to_string(),
                ],
            )
            .await;
        assert!(
            out.status.success(),
            "ansible-galaxy collection install failed"
        );
        c
    }

    /// Writes an inventory of one host, the guest `guest` of the daemon at `socket`.
    pub(crate) fn inventory(&self, guest: &str, socket: &Path, remote_tmp: &Path) -> String {
        let path = self.dir.path().join(format!("{guest}.yml"));
        std::fs::write(
            &path,
            format!(
                "all:\n  hosts:\n    {guest}:\n      ansible_connection: ocloudview.atp.atp\n      \
                 ansible_atp_server: unix://{}\n      ansible_atp_timeout: 3\n      \
                 ansible_remote_tmp: {}\n      ansible_python_interpreter: /usr/bin/python3\n",
                socket.display(),
                remote_tmp.display()
            ),
        )
        .unwrap();
        path.display().to_string()
    }

    /// Runs a `.venv/bin` Ansible program with the controller's state in the temp dir;
    /// bounded, output echoed.
    pub(crate) async fn run(&self, program: &str, args: &[&str]) -> Output {
        let d = self.dir.path();
        let child = tokio::process::Command::new(venv_bin(program))
            .args(args)
            .current_dir(Path::new(ROOT).join("ansible/playbooks"))
            .env("ANSIBLE_HOME", d.join("home"))
            .env("ANSIBLE_LOCAL_TEMP", d.join("tmp"))
            .env("ANSIBLE_COLLECTIONS_PATH", d.join("collections"))
            .env("ANSIBLE_NOCOLOR", "1")
            // The collection's callback that loads gRPC once, not once per task.
            .env("ANSIBLE_CALLBACKS_ENABLED", "ocloudview.atp.preload")
            .env("ANSIBLE_HOST_KEY_CHECKING", "0")
            .env("ANSIBLE_RETRY_FILES_ENABLED", "0")
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(600), child)
            .await
            .unwrap_or_else(|_| panic!("{program} {args:?} ran for more than 600 s"))
            .unwrap();
        eprintln!(
            "$ {program} {}\n--- stdout\n{}--- stderr\n{}--- {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            out.status
        );
        out
    }
}

/// A 10 MiB controller file that compresses badly, with its SHA-256 next to it
/// (`big.bin.sha256`, which the playbook's stat compares).
pub(crate) struct Big {
    pub(crate) path: PathBuf,
    pub(crate) data: Vec<u8>,
}

pub(crate) fn big_file(c: &Controller) -> Big {
    let mut x = 0x9E37_79B9_7F4A_7C15_u64;
    let data: Vec<u8> = (0..10 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let path = c.dir.path().join("big.bin");
    std::fs::write(&path, &data).unwrap();
    let digest: String = Sha256::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(c.dir.path().join("big.bin.sha256"), &digest).unwrap();
    Big { path, data }
}
