//! Exec as a guest user on Debian 12 (util-linux `setpriv`, `getent`), through libvirt: a
//! user added with `useradd -m`, by name and uid, a chosen group, the login environment
//! and home, an unknown user refused clearly, and ExecCancel killing the user's program.

use ocloudview_atp::pb::{
    Argv, ExecCancelRequest, ExecRequest, exec_event::Event, exec_request::Command,
};

use super::{Client, LV, drain_exec, out};

fn req(user: &str, argv: &[&str]) -> ExecRequest {
    ExecRequest {
        domain: LV.into(),
        command: Some(Command::Argv(Argv {
            path: argv[0].into(),
            args: argv[1..].iter().map(|a| (*a).to_owned()).collect(),
        })),
        user: user.into(),
        timeout_ms: 60_000,
        ..Default::default()
    }
}

async fn stdout(c: &mut Client, r: ExecRequest) -> String {
    let what = format!("{r:?}");
    let o = drain_exec(c.exec(r).await.unwrap().into_inner()).await;
    assert_eq!(
        o.exited.as_ref().and_then(|x| x.exit_code),
        Some(0),
        "{what}: {o:?}"
    );
    String::from_utf8(o.stdout).unwrap().trim().to_owned()
}

/// Adds `carol` (idempotent) and runs the cases as her.
pub async fn run_as(c: &mut Client) {
    out(
        c,
        LV,
        "id carol >/dev/null 2>&1 || useradd -m -s /bin/bash carol",
    )
    .await;
    let uid = out(c, LV, "id -u carol").await.trim().to_owned();
    assert_eq!(stdout(c, req("carol", &["id", "-un"])).await, "carol");
    assert_eq!(stdout(c, req(&uid, &["id", "-un"])).await, "carol");
    let mut g = req("carol", &["id", "-gn"]);
    g.group = "adm".into();
    assert_eq!(stdout(c, g).await, "adm");
    let mut l = req(
        "carol",
        &["/bin/sh", "-c", r#"echo "$HOME|$USER|$SHELL|$(pwd)""#],
    );
    l.login = true;
    assert_eq!(
        stdout(c, l).await,
        "/home/carol|carol|/bin/bash|/home/carol"
    );
    let st = c.exec(req("nosuchuser", &["id"])).await.unwrap_err();
    assert_eq!(st.code(), tonic::Code::FailedPrecondition, "{st:?}");
    assert!(st.message().contains("no such user in the guest"), "{st:?}");

    // ExecCancel kills carol's program (the verified kill runs as root).
    let mut s = c
        .exec(req("carol", &["/bin/sh", "-c", "echo up; exec sleep 60"]))
        .await
        .unwrap()
        .into_inner();
    let id = match s.message().await.unwrap().unwrap().event.unwrap() {
        Event::Started(st) => st.exec_id,
        other => panic!("expected Started, got {other:?}"),
    };
    match s.message().await.unwrap().unwrap().event.unwrap() {
        Event::Stdout(d) => assert_eq!(d, b"up\n"),
        other => panic!("expected stdout, got {other:?}"),
    }
    let killed = c
        .exec_cancel(ExecCancelRequest { exec_id: id })
        .await
        .unwrap()
        .into_inner()
        .killed;
    assert!(killed);
    let x = drain_exec(s).await.exited.unwrap();
    assert_eq!(x.signal, Some(9), "{x:?}");
}
