//! Exec through the daemon against a real host agent: live output, stdin, timeouts,
//! detach/attach after a client disconnect, cancel, COLLECT mode, cwd and env.
#![allow(clippy::unwrap_used)] // a test fails by panicking, helpers included

mod common;

use std::time::{Duration, Instant};

use common::{daemon_for, drain_exec, sh_request};
use ocloudview_atp::{
    pb::{ExecAttachRequest, ExecCancelRequest, ExecMode, exec_event::Event},
    testbed::HostAgent,
};

#[tokio::test]
async fn output_arrives_live_before_the_process_exits() {
    let agent = HostAgent::start().unwrap();
    let d = daemon_for(&agent, "").await;
    let mut c = d.client().await;
    let t0 = Instant::now();
    let mut s = c
        .exec(sh_request(
            "host",
            "for i in 1 2 3; do echo $i; sleep 1; done",
        ))
        .await
        .unwrap()
        .into_inner();
    let mut arrivals = Vec::new();
    let mut exit = None;
    while let Some(ev) = s.message().await.unwrap() {
        match ev.event.unwrap() {
            Event::Stdout(d) => arrivals.push((t0.elapsed(), d)),
            Event::Exited(x) => exit = Some((t0.elapsed(), x)),
            _ => {}
        }
    }
    let (exit_at, x) = exit.unwrap();
    assert_eq!(x.exit_code, Some(0));
    let all: Vec<u8> = arrivals.iter().flat_map(|(_, d)| d.clone()).collect();
    assert_eq!(all, b"1\n2\n3\n");
    let (first_at, first) = &arrivals[0];
    assert_eq!(first, b"1\n");
    eprintln!("first line after {first_at:?}, exit after {exit_at:?}");
    assert!(
        *first_at + Duration::from_millis(1500) < exit_at,
        "first {first_at:?} exit {exit_at:?}"
    );
}

#[tokio::test]
async fn stdin_env_cwd_collect_and_timeouts() {
    let agent = HostAgent::start().unwrap();
    let d = daemon_for(&agent, "").await;
    let mut c = d.client().await;

    let mut r = sh_request("host", "cat; echo \"[$GREETING]\"; pwd");
    r.stdin = b"piped input\n".to_vec();
    r.env = vec!["GREETING=hello".into()];
    r.cwd = agent.dir().display().to_string();
    let o = drain_exec(c.exec(r).await.unwrap().into_inner()).await;
    assert_eq!(
        String::from_utf8(o.stdout).unwrap(),
        format!("piped input\n[hello]\n{}\n", agent.dir().display())
    );
    assert!(o.pid > 0 && !o.exec_id.is_empty());

    let mut r = sh_request("host", "echo out; echo err >&2; exit 3");
    r.mode = ExecMode::Collect as i32;
    let o = drain_exec(c.exec(r).await.unwrap().into_inner()).await;
    assert_eq!(
        (o.stdout.as_slice(), o.stderr.as_slice()),
        (&b"out\n"[..], &b"err\n"[..])
    );
    assert_eq!(o.exited.unwrap().exit_code, Some(3));

    for mode in [ExecMode::Stream, ExecMode::Collect] {
        let mut r = sh_request("host", "sleep 30");
        r.timeout_ms = 500;
        r.mode = mode as i32;
        let t0 = Instant::now();
        let o = drain_exec(c.exec(r).await.unwrap().into_inner()).await;
        let x = o.exited.unwrap();
        assert!(
            x.timed_out && x.signal == Some(9) && x.exit_code.is_none(),
            "{mode:?} {x:?}"
        );
        assert!(t0.elapsed() < Duration::from_secs(5));
    }

    let mut r = sh_request("host", "true");
    r.command = None;
    assert_eq!(
        c.exec(r).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    let mut r = sh_request("host", "true");
    r.env = vec!["NOEQUALS".into()];
    assert_eq!(
        c.exec(r).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
}

#[tokio::test]
async fn attach_resumes_after_the_client_leaves_and_cancel_kills() {
    let agent = HostAgent::start().unwrap();
    let d = daemon_for(&agent, "").await;
    let mut c = d.client().await;
    let script = "for i in 1 2 3 4 5 6; do echo line$i; sleep 0.3; done";
    let mut s = c
        .exec(sh_request("host", script))
        .await
        .unwrap()
        .into_inner();
    let mut before = Vec::new();
    let mut exec_id = String::new();
    while before.is_empty() {
        match s.message().await.unwrap().unwrap().event.unwrap() {
            Event::Started(st) => exec_id = st.exec_id,
            Event::Stdout(d) => before.extend(d),
            _ => {}
        }
    }
    drop(s); // the client goes away mid-stream
    let o = drain_exec(common::attach_when_parked(&mut c, &exec_id).await).await;
    let mut all = before;
    all.extend(o.stdout);
    assert_eq!(
        String::from_utf8(all).unwrap(),
        "line1\nline2\nline3\nline4\nline5\nline6\n"
    );
    assert_eq!(o.exited.unwrap().exit_code, Some(0));
    // A finished exec can still be attached to: it reports how it ended.
    let again = drain_exec(
        c.exec_attach(ExecAttachRequest { exec_id })
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    assert_eq!(again.exited.unwrap().exit_code, Some(0));

    // Detach, then cancel while nobody is attached, then attach to see the end.
    // The host agent's guest is this host: the marker shows "started" was written.
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("started");
    let script = format!("echo started; touch {}; sleep 30", marker.display());
    let mut r = sh_request("host", &script);
    r.detach = true;
    let o = drain_exec(c.exec(r).await.unwrap().into_inner()).await;
    assert!(o.exited.is_none() && !o.exec_id.is_empty());
    common::eventually(|| marker.exists(), "the program wrote its first line").await;
    let k = c
        .exec_cancel(ExecCancelRequest {
            exec_id: o.exec_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(k.killed);
    let end = drain_exec(
        c.exec_attach(ExecAttachRequest { exec_id: o.exec_id })
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    assert_eq!(end.stdout, b"started\n");
    assert_eq!(end.exited.unwrap().signal, Some(9));

    let st = c
        .exec_attach(ExecAttachRequest {
            exec_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), tonic::Code::NotFound);
}

/// A directory shaped like one a daemon that died mid-exec leaves (program gone).
fn abandoned_dir(tag: &str, age: &str) -> std::path::PathBuf {
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    let dir = std::path::PathBuf::from(format!("/tmp/.atp-exec-test-{}-{tag}", std::process::id()));
    std::fs::create_dir(&dir).unwrap();
    for (name, body) in [
        ("pid", format!("{pid}\n")),
        ("out", "x".repeat(4096)),
        ("err", String::new()),
    ] {
        std::fs::write(dir.join(name), body).unwrap();
    }
    let touched = std::process::Command::new("touch")
        .args(["-d", age])
        .arg(dir.join("pid"))
        .arg(dir.join("out"))
        .arg(dir.join("err"))
        .arg(&dir)
        .status()
        .unwrap();
    assert!(touched.success());
    dir
}

#[tokio::test]
async fn the_first_exec_sweeps_directories_an_earlier_daemon_abandoned() {
    let agent = HostAgent::start().unwrap();
    let old = abandoned_dir("old", "2 hours ago");
    let fresh = abandoned_dir("fresh", "1 minute ago");
    let d = daemon_for(&agent, "").await;
    let mut c = d.client().await;
    let out = drain_exec(
        c.exec(sh_request("host", "echo hi"))
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    assert_eq!(out.stdout, b"hi\n");
    common::eventually(|| !old.exists(), "the abandoned directory is removed").await;
    // Idle for less than the sweep's minimum: it may still be read by whoever made it.
    assert!(fresh.join("out").exists());
    std::fs::remove_dir_all(&fresh).unwrap();
}
