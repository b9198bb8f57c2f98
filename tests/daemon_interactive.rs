//! ExecInteractive through the daemon and `atp exec -i`, against a real host qemu-ga:
//! stdin streamed as it comes (`wc -l` counts 2, a tar stream unpacks, 4 MiB arrive
//! intact), and a client that goes away closes the program's stdin: the program sees EOF,
//! ends, and can be followed with ExecAttach; nothing stays behind.
#![allow(clippy::unwrap_used)] // a test fails by panicking, helpers included

mod common;

use assert_cmd::Command;
use ocloudview_atp::{
    pb::{ExecAttachRequest, ExecInput, exec_event::Event, exec_input::Msg},
    testbed::HostAgent,
};
use sha2::{Digest, Sha256};

fn atp(d: &common::Daemon) -> Command {
    let mut c = Command::cargo_bin("atp").unwrap();
    c.env("ATP_SERVER", format!("unix://{}", d.socket.display()))
        .env_remove("ATP_TOKEN");
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn atp_exec_i_streams_stdin_to_the_program() {
    let agent = HostAgent::start().unwrap();
    let d = common::daemon_for(&agent, "").await;
    let out = atp(&d)
        .args(["exec", "-i", "host", "--", "wc", "-l"])
        .write_stdin("a\nb\n")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");

    // tar c | atp exec -i -- tar x
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("one"), b"hello\n").unwrap();
    std::fs::create_dir(src.path().join("sub")).unwrap();
    std::fs::write(src.path().join("sub/two"), vec![b'x'; 300_000]).unwrap();
    let tar = std::process::Command::new("tar")
        .args(["c", "-C"])
        .arg(src.path())
        .arg(".")
        .output()
        .unwrap()
        .stdout;
    let dst = tempfile::tempdir().unwrap();
    let dst_s = dst.path().display().to_string();
    atp(&d)
        .args(["exec", "-i", "host", "--", "tar", "x", "-C", &dst_s])
        .write_stdin(tar)
        .assert()
        .success();
    assert_eq!(std::fs::read(dst.path().join("one")).unwrap(), b"hello\n");
    assert_eq!(
        std::fs::read(dst.path().join("sub/two")).unwrap().len(),
        300_000
    );

    let data: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let want = format!("{:x}", Sha256::digest(&data));
    let out = atp(&d)
        .args(["exec", "-i", "host", "--", "sha256sum"])
        .write_stdin(data)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&want));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_closes_stdin_and_the_exec_can_be_followed() {
    let agent = HostAgent::start().unwrap();
    let d = common::daemon_for(&agent, "").await;
    let mut c = d.client().await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(ExecInput {
        msg: Some(Msg::Start(common::sh_request(
            "host",
            "n=$(wc -c); echo \"got $n bytes then EOF\"",
        ))),
    })
    .await
    .unwrap();
    tx.send(ExecInput {
        msg: Some(Msg::Stdin(b"12345".to_vec())),
    })
    .await
    .unwrap();
    let mut events = c
        .exec_interactive(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let Some(Event::Started(st)) = events.message().await.unwrap().unwrap().event else {
        panic!("no Started first");
    };
    // The client goes away without EOF: both directions dropped.
    drop(tx);
    drop(events);
    let o = common::drain_exec(common::attach_when_parked(&mut c, &st.exec_id).await).await;
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "got 5 bytes then EOF"
    );
    assert_eq!(o.exited.unwrap().exit_code, Some(0));
    // Attaching again reports the end.
    let again = common::drain_exec(
        c.exec_attach(ExecAttachRequest {
            exec_id: st.exec_id,
        })
        .await
        .unwrap()
        .into_inner(),
    )
    .await;
    assert_eq!(again.exited.unwrap().exit_code, Some(0));
}
