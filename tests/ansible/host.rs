//! The playbook on the host agent, the stubs check, and unreachable hosts.

use std::path::Path;

use ocloudview_atp::testbed::HostAgent;

use crate::{
    POLICY, ROOT,
    common::daemon_for,
    controller::{Controller, big_file, venv_bin},
};

#[tokio::test]
async fn shipped_grpc_stubs_match_the_proto() {
    let out = tokio::process::Command::new(venv_bin("python"))
        .arg(Path::new(ROOT).join("ansible/gen_stubs.py"))
        .arg("--check")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "the collection's stubs are stale: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The plugin's command rewrites (fewer guest processes per task) behave exactly as the
/// commands Ansible sent: checked by running both on this host (the collection's unit tests).
#[tokio::test]
async fn command_rewrites_behave_as_the_shell_would() {
    let out = tokio::process::Command::new(venv_bin("python"))
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(Path::new(ROOT).join("ansible/ocloudview/atp/tests/unit"))
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "the collection's unit tests failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn playbook_through_the_connection_plugin() {
    let agent = HostAgent::start().unwrap();
    let policies = tempfile::tempdir().unwrap();
    std::fs::write(policies.path().join("10-ansible-ci.rhai"), POLICY).unwrap();
    let d = daemon_for(
        &agent,
        &format!("[policy]\ndir = \"{}\"\n", policies.path().display()),
    )
    .await;
    let c = Controller::new().await;

    // The guest side lives in the agent's directory, Ansible's remote temp files too.
    let work = agent.dir().join("work");
    std::fs::create_dir_all(work.join("secret")).unwrap();
    std::fs::write(work.join("secret/key"), "not for ansible").unwrap();
    let big = big_file(&c);
    let fetched = c.dir.path().join("fetched");
    std::fs::create_dir(&fetched).unwrap();

    let inventory = c.inventory("host", &d.socket, &work.join("ansible-tmp"));
    let out = c
        .run(
            "ansible-playbook",
            &[
                "-i",
                &inventory,
                "ci.yml",
                "-e",
                &format!("dir={}", work.display()),
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
    // Every task ran: none failed, the two denied ones failed as expected and were ignored.
    assert!(
        stdout.contains("failed=0")
            && stdout.contains("unreachable=0")
            && stdout.contains("ignored=2"),
        "unexpected PLAY RECAP"
    );
    // The bytes really went through: copied into the guest, fetched back out.
    assert_eq!(std::fs::read(work.join("big.bin")).unwrap(), big.data);
    assert_eq!(std::fs::read(fetched.join("big.bin")).unwrap(), big.data);
    // The denied fetch left nothing behind.
    assert!(!fetched.join("key").exists());
}

#[tokio::test]
async fn unknown_guest_and_missing_daemon_are_unreachable() {
    let agent = HostAgent::start().unwrap();
    let d = daemon_for(&agent, "").await;
    let c = Controller::new().await;
    let tmp = agent.dir().join("ansible-tmp");

    // The daemon answers GUEST_NOT_FOUND: unreachable (exit 4), with the daemon's reason.
    let inventory = c.inventory("nosuch", &d.socket, &tmp);
    let out = c
        .run(
            "ansible",
            &["-i", &inventory, "all", "-m", "ansible.builtin.ping"],
        )
        .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(4),
        "expected ansible's unreachable exit"
    );
    assert!(stdout.contains("UNREACHABLE!") && stdout.contains("GUEST_NOT_FOUND"));

    // No daemon at the address: unreachable too, saying so.
    let gone = agent.dir().join("no-daemon.sock");
    let inventory = c.inventory("host", &gone, &tmp);
    let out = c
        .run(
            "ansible",
            &["-i", &inventory, "all", "-m", "ansible.builtin.ping"],
        )
        .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(4),
        "expected ansible's unreachable exit"
    );
    assert!(stdout.contains("UNREACHABLE!") && stdout.contains("is `atp serve` running there?"));
}
