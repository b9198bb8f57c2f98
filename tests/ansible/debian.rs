//! The same playbook on the Debian 12 guest (systemd, Debian's qemu-guest-agent, booted
//! by QEMU under TCG), plus `ansible.builtin.systemd` restarting nginx: its main pid must
//! change.

use std::path::Path;

use ocloudview_atp::testbed::{DebianBootOptions, DebianImage, QemuGuest};
use sha2::{Digest, Sha256};

use crate::{
    POLICY,
    common::{self, Daemon},
    controller::{Controller, big_file},
};

/// Where the playbook works in the guest.
const DIR: &str = "/var/tmp/atp-ansible";

#[tokio::test]
async fn playbook_and_systemd_on_the_debian_guest() {
    common::init_logging();
    let image = tokio::task::spawn_blocking(DebianImage::ensure)
        .await
        .unwrap()
        .unwrap();
    let guest = QemuGuest::boot_debian(&image, DebianBootOptions::default())
        .await
        .unwrap();
    eprintln!(
        "Debian guest: agent answered {:?} after QEMU start",
        guest.boot_time()
    );
    let policies = tempfile::tempdir().unwrap();
    std::fs::write(policies.path().join("10-ansible-ci.rhai"), POLICY).unwrap();
    let d = Daemon::start(
        &[],
        &format!(
            "[[guests]]\nname = \"deb\"\nsocket = \"{}\"\n\n[policy]\ndir = \"{}\"\n",
            guest.agent_socket().display(),
            policies.path().display()
        ),
    )
    .await;
    let mut grpc = d.client().await;
    let made = common::run_sh(
        &mut grpc,
        "deb",
        &format!("mkdir -p {DIR}/secret && echo not-for-ansible >{DIR}/secret/key"),
    )
    .await;
    assert_eq!(made.exited.unwrap().exit_code, Some(0));

    let c = Controller::new().await;
    let big = big_file(&c);
    let fetched = c.dir.path().join("fetched");
    std::fs::create_dir(&fetched).unwrap();
    let inventory = c.inventory("deb", &d.socket, Path::new(&format!("{DIR}/ansible-tmp")));
    let out = c
        .run(
            "ansible-playbook",
            &[
                "-i",
                &inventory,
                "ci.yml",
                "-e",
                &format!("dir={DIR}"),
                "-e",
                &format!("big={}", big.path.display()),
                "-e",
                &format!("fetched={}", fetched.display()),
            ],
        )
        .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ansible-playbook failed; its output is above"
    );
    assert!(
        stdout.contains("failed=0")
            && stdout.contains("unreachable=0")
            && stdout.contains("ignored=2"),
        "unexpected PLAY RECAP"
    );
    let back = std::fs::read(fetched.join("big.bin")).unwrap();
    assert_eq!(
        Sha256::digest(&back).as_slice(),
        Sha256::digest(&big.data).as_slice()
    );

    let out = c
        .run("ansible-playbook", &["-i", &inventory, "systemd.yml"])
        .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "systemd.yml failed; its output is above"
    );
    assert!(stdout.contains("failed=0"), "unexpected PLAY RECAP");
    drop(guest);
}
