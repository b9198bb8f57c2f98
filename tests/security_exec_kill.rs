//! Issue 11, processes: the daemon's kills hit the program it started and nothing else.
//! In the busybox TCG guest: the program leads its own session and group, and a cancel
//! kills that group (an orphaned child included) but no bystander. Against the host
//! agent, through the library: a pid the agent does not report running is never
//! signalled, and the guest helper refuses a pid whose start time is not the recorded one.
#![allow(clippy::unwrap_used)] // a test fails by panicking, helpers included

mod common;

use std::{path::PathBuf, time::Duration};

use common::{Daemon, drain_exec, run_sh, sh_request};
use ocloudview_atp::{
    pb::{ExecCancelRequest, ExecEvent, exec_event::Event},
    qga::{AgentClient, ExecEvent as QgaEvent, GuestExecCommand, KillOutcome},
    testbed::{BootOptions, HostAgent, QemuGuest},
    transport::socket::SocketTransport,
};
use tonic::Streaming;

/// Reads events until `Started`; returns its exec id and pid.
async fn started(s: &mut Streaming<ExecEvent>) -> (String, i64) {
    loop {
        if let Some(Event::Started(st)) = s.message().await.unwrap().unwrap().event {
            return (st.exec_id, st.pid);
        }
    }
}

fn is_running(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.rsplit(") ").next().unwrap_or("").starts_with('Z'))
}

#[tokio::test]
async fn in_the_guest_cancel_kills_the_program_s_whole_group_and_nothing_else() {
    let image = common::image().await;
    let guest = QemuGuest::boot(&image, BootOptions::default())
        .await
        .unwrap();
    let d = Daemon::start(
        &[],
        &format!(
            "[[guests]]\nname = \"tcg\"\nsocket = \"{}\"\n",
            guest.agent_socket().display()
        ),
    )
    .await;
    let mut c = d.client().await;
    // A bystander the exec did not start.
    let o = run_sh(&mut c, "tcg", "echo ok").await;
    assert_eq!(o.stdout, b"ok\n");
    let r = sh_request("tcg", "sleep 301 </dev/null >/dev/null 2>&1 &");
    let _ = drain_exec(c.exec(r).await.unwrap().into_inner()).await;

    // The program leads its own session and group (same pid); a child it orphans stays
    // in that group, outside its /proc tree.
    let mut s = c
        .exec(sh_request(
            "tcg",
            "read -r s </proc/$$/stat; echo \"${s##*) }\"; (sleep 300 &); exec sleep 300",
        ))
        .await
        .unwrap()
        .into_inner();
    let (id, pid) = started(&mut s).await;
    let mut line = Vec::new();
    while !line.ends_with(b"\n") {
        if let Some(Event::Stdout(d)) = s.message().await.unwrap().unwrap().event {
            line.extend(d);
        }
    }
    let line = String::from_utf8(line).unwrap();
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        (f[2], f[3]),
        (pid.to_string().as_str(), pid.to_string().as_str()),
        "pgrp and session of pid {pid}: {line}"
    );
    let k = c
        .exec_cancel(ExecCancelRequest { exec_id: id })
        .await
        .unwrap()
        .into_inner();
    assert!(k.killed);
    let end = drain_exec(s).await;
    assert_eq!(end.exited.unwrap().signal, Some(9));
    let left = run_sh(&mut c, "tcg", "for p in /proc/[0-9]*; do tr '\\0' ' ' <$p/cmdline 2>/dev/null; echo; done | grep '^sleep 30'").await;
    assert_eq!(
        String::from_utf8_lossy(&left.stdout).trim(),
        "sleep 301",
        "only the bystander may survive"
    );
}

#[tokio::test]
async fn the_library_never_signals_a_pid_the_agent_does_not_report_running() {
    let agent = HostAgent::start().unwrap();
    let c = AgentClient::new(SocketTransport::new(agent.socket()));
    // A process of ours that the agent never started (in a guest: anyone's).
    let mut victim = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let res = c.kill(i64::from(victim.id())).await;
    // Not synchronisation: time for a wrong kill to land, to show none did.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let alive = victim.try_wait().unwrap().is_none();
    let _ = victim.kill();
    let _ = victim.wait();
    assert!(
        alive,
        "kill() signalled a pid the agent does not know: {res:?}"
    );
    assert!(res.is_err(), "{res:?}");
}

/// The exec directory whose recorded pid is `pid` (waits until its start time is written).
async fn exec_dir_of(pid: i64) -> PathBuf {
    for _ in 0..200 {
        for e in std::fs::read_dir("/tmp").unwrap() {
            let d = e.unwrap().path();
            if d.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".atp-exec-")
                && std::fs::read_to_string(d.join("pid")).is_ok_and(|p| p.trim() == pid.to_string())
                && std::fs::metadata(d.join("start")).is_ok_and(|m| m.len() > 0)
            {
                return d;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no exec directory records pid {pid}");
}

#[tokio::test]
async fn the_kill_helper_refuses_a_pid_whose_start_time_is_not_the_recorded_one() {
    let agent = HostAgent::start().unwrap();
    let c = AgentClient::new(SocketTransport::new(agent.socket()));
    let mut s = c
        .exec_stream(&GuestExecCommand::simple("sleep", vec!["30".into()]))
        .await
        .unwrap();
    let pid = s.pid();
    let dir = exec_dir_of(pid).await;
    let start = dir.join("start");
    let recorded = std::fs::read_to_string(&start).unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let field22 = stat
        .rsplit(") ")
        .next()
        .unwrap()
        .split(' ')
        .nth(19)
        .unwrap();
    assert_eq!(recorded.trim(), field22, "the wrapper records field 22");

    // As if the pid now named a process started at another time.
    std::fs::write(&start, "1\n").unwrap();
    assert_eq!(s.kill(false).await.unwrap(), KillOutcome::Gone);
    // Not synchronisation: time for a wrong kill to land, to show none did.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(is_running(pid), "killed despite a start-time mismatch");

    std::fs::write(&start, recorded).unwrap();
    assert_eq!(s.kill(false).await.unwrap(), KillOutcome::Killed);
    let mut exit = None;
    while let Some(ev) = s.next_event().await.unwrap() {
        if let QgaEvent::Exited(x) = ev {
            exit = Some(x);
        }
    }
    let x = exit.unwrap();
    assert_eq!((x.signal, x.timed_out), (Some(9), false));
    assert!(!dir.exists(), "the exec directory is removed at the end");
}
