//! Issue 11, files and symlinks, attacked as an attacker would: a real `atp serve` with
//! the shipped policies in front of a real host agent (qemu-ga as root on the host), an
//! unprivileged process (uid 65534 via setpriv) racing on files in directories this test
//! creates, and one write into the busybox TCG guest. Only files inside this test's temp
//! directories are touched; only processes this test starts are signalled.
#![allow(clippy::unwrap_used)] // a test fails by panicking, helpers included

#[path = "security_files/bed.rs"]
mod bed;
mod common;

use std::{os::unix::fs::PermissionsExt as _, path::Path, process::Command};

use bed::{Bed, attacker, file, header, meta, pattern, read, stop, upload, upload_paced};
use ocloudview_atp::pb::{
    ReadFileRequest, WriteFileHeader, WriteFileRequest, WriteMode,
    guest_agent_client::GuestAgentClient, write_file_request::Msg,
};
use tonic::{Code, transport::Channel};

#[tokio::test]
async fn created_and_replaced_files_get_safe_modes_and_keep_their_owner() {
    let bed = Bed::start().await;
    let mut admin = bed.client("admin-token").await;

    // A new file without `permissions`: [files] new_file_mode (0644), not qemu-ga's 0666.
    let new = bed.path("drop/new.txt");
    upload(
        &mut admin,
        header(&new, WriteMode::Create, None),
        b"hello\n",
    )
    .await
    .unwrap();
    assert_eq!(std::fs::read(&new).unwrap(), b"hello\n");
    assert_eq!(meta(&new), (0o644, 0, 0));

    // Atomic replace keeps the replaced file's mode and owner.
    let keep = bed.path("drop/keep.conf");
    file(&keep, "old\n", 0o640, Some(65534));
    upload(&mut admin, header(&keep, WriteMode::Create, None), b"new\n")
        .await
        .unwrap();
    assert_eq!(std::fs::read(&keep).unwrap(), b"new\n");
    assert_eq!(meta(&keep), (0o640, 65534, 65534));
    // TRUNCATE too, and short content replaces longer content exactly.
    upload(&mut admin, header(&keep, WriteMode::Truncate, None), b"x")
        .await
        .unwrap();
    assert_eq!(std::fs::read(&keep).unwrap(), b"x");
    assert_eq!(meta(&keep), (0o640, 65534, 65534));

    // `permissions` is honoured, for new and replaced files (the owner is still kept).
    let script = bed.path("drop/run.sh");
    upload(
        &mut admin,
        header(&script, WriteMode::Exclusive, Some(0o750)),
        b"#!/bin/sh\n",
    )
    .await
    .unwrap();
    assert_eq!(meta(&script), (0o750, 0, 0));
    upload(
        &mut admin,
        header(&keep, WriteMode::Create, Some(0o600)),
        b"y\n",
    )
    .await
    .unwrap();
    assert_eq!(meta(&keep), (0o600, 65534, 65534));

    // APPEND creating a file: the default mode; appending keeps mode and owner.
    let log = bed.path("drop/app.log");
    upload(&mut admin, header(&log, WriteMode::Append, None), b"one\n")
        .await
        .unwrap();
    assert_eq!(meta(&log), (0o644, 0, 0));
    let theirs = bed.path("drop/theirs.log");
    file(&theirs, "a\n", 0o620, Some(65534));
    upload(
        &mut admin,
        header(&theirs, WriteMode::Append, Some(0o777)),
        b"b\n",
    )
    .await
    .unwrap();
    assert_eq!(std::fs::read(&theirs).unwrap(), b"a\nb\n");
    assert_eq!(meta(&theirs), (0o620, 65534, 65534));
    // In place (atomic = false) over an existing file: mode and owner stay.
    let mut h = header(&theirs, WriteMode::Create, None);
    h.atomic = Some(false);
    upload(&mut admin, h, b"c\n").await.unwrap();
    assert_eq!(std::fs::read(&theirs).unwrap(), b"c\n");
    assert_eq!(meta(&theirs), (0o620, 65534, 65534));

    // `atp cp` sends the local file's mode, like scp; --chmod wins.
    let local = bed.path("local.sh");
    file(&local, "#!/bin/sh\necho hi\n", 0o750, None);
    let cp = |dst: &Path, extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_atp"))
            .arg("--server")
            .arg(format!("unix://{}", bed.d.socket.display()))
            .args(["--token", "admin-token", "cp", "-q"])
            .args(extra)
            .arg(&local)
            .arg(format!("host:{}", dst.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let copied = bed.path("drop/copied.sh");
    cp(&copied, &[]);
    assert_eq!(meta(&copied), (0o750, 0, 0));
    let chmodded = bed.path("drop/chmodded.sh");
    cp(&chmodded, &["--chmod", "0700"]);
    assert_eq!(meta(&chmodded), (0o700, 0, 0));

    // No staging directory is left behind.
    let left: Vec<_> = std::fs::read_dir(bed.path("drop"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".atp-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Opens every `.atp-*` entry (and anything inside one) for writing, as fast as it can,
/// and appends a line through any handle it gets. The open never creates (`nocreat`): a
/// shell's `>>` on an entry removed just after the glob saw it would create the
/// attacker's own file and count as a hit.
const GRAB: &str = r#"d=$1; stop=$2
while [ ! -e "$stop" ]; do
  for f in "$d"/.atp-* "$d"/.atp-*/*; do
    [ -e "$f" ] || continue
    echo "SAW $f"
    if echo attacker-line | dd of="$f" conv=notrunc,nocreat oflag=append status=none 2>/dev/null; then
      echo "GOT $f"
    fi
  done
done"#;

#[tokio::test]
async fn an_unprivileged_user_never_gets_a_writable_handle_on_an_upload() {
    let bed = Bed::start().await;
    let mut admin = bed.client("admin-token").await;
    // A directory like /tmp (1777) holding a root-owned 0600 file.
    let shared = bed.path("drop/shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let target = shared.join("authorized_keys");
    file(&target, "ssh-ed25519 AAAA root\n", 0o600, None);

    let log = bed.path("grab.log");
    let stop_file = bed.path("grab.stop");
    let grab = attacker(GRAB, &[&shared, &stop_file], &log).await;
    let data = pattern(24 << 20);
    for _ in 0..2 {
        upload(
            &mut admin,
            header(&target, WriteMode::Create, Some(0o600)),
            &data,
        )
        .await
        .unwrap();
    }
    stop(grab, &stop_file);

    let seen = std::fs::read_to_string(&log).unwrap();
    let got: Vec<_> = seen.lines().filter(|l| l.starts_with("GOT")).collect();
    assert!(
        got.is_empty(),
        "the attacker wrote into an upload {} times, first: {:?}",
        got.len(),
        &got[..got.len().min(3)]
    );
    assert!(
        seen.lines().any(|l| l.starts_with("SAW")),
        "the attacker never saw the upload's staging entry, so the race was not run"
    );
    assert!(
        std::fs::read(&target).unwrap() == data,
        "final bytes differ"
    );
    assert_eq!(meta(&target), (0o600, 0, 0));
}

/// Looks at every `.atp-*` entry in a directory it cannot write: reports what it is
/// (`stat`), then tries to append to it and to read it.
const PEEK: &str = r#"d=$1; stop=$2
while [ ! -e "$stop" ]; do
  for f in "$d"/.atp-*; do
    [ -e "$f" ] || continue
    echo "SAW $(stat -c '%F %a %u' "$f" 2>/dev/null)"
    if echo attacker-line | dd of="$f" conv=notrunc,nocreat oflag=append status=none 2>/dev/null; then
      echo "GOT $f"
    fi
    if head -c 1 "$f" >/dev/null 2>&1; then echo "READ $f"; fi
  done
done"#;

#[tokio::test]
async fn in_a_closed_directory_the_staged_file_is_roots_0600_from_the_start() {
    let bed = Bed::start().await;
    let mut admin = bed.client("admin-token").await;
    // Root's 0755 directory: others may look in but create, rename or remove nothing, so
    // the upload is staged as a file beside the target, not in a private directory.
    let closed = bed.path("drop/closed");
    std::fs::create_dir(&closed).unwrap();
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o755)).unwrap();
    let target = closed.join("app.conf");
    let log = bed.path("peek.log");
    let stop_file = bed.path("peek.stop");
    let peek = attacker(PEEK, &[&closed, &stop_file], &log).await;
    let data = pattern(24 << 20);
    for perm in [0o600, 0o640] {
        upload(
            &mut admin,
            header(&target, WriteMode::Create, Some(perm)),
            &data,
        )
        .await
        .unwrap();
        assert_eq!(meta(&target), (perm, 0, 0));
    }
    stop(peek, &stop_file);
    assert!(
        std::fs::read(&target).unwrap() == data,
        "final bytes differ"
    );
    let seen = std::fs::read_to_string(&log).unwrap();
    let saw: Vec<_> = seen.lines().filter(|l| l.starts_with("SAW")).collect();
    assert!(
        !saw.is_empty(),
        "the upload's staged file was never seen, so the race was not run"
    );
    for l in &saw {
        // Gone between the glob and stat: an empty description. 640: the final mode of
        // the second upload, set just before the rename (no more open than the target).
        assert!(
            [
                "SAW ",
                "SAW regular file 600 0",
                "SAW regular empty file 600 0",
                "SAW regular file 640 0"
            ]
            .contains(l),
            "a staged entry other users could reach, or a directory: {l}"
        );
    }
    let hits: Vec<_> = seen
        .lines()
        .filter(|l| l.starts_with("GOT ") || l.starts_with("READ "))
        .collect();
    assert!(
        hits.is_empty(),
        "the attacker reached the staged file: {hits:?}"
    );
    let left: Vec<_> = std::fs::read_dir(&closed)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".atp-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// In a directory it owns, swaps `dir` between a real directory (kept as `real` between
/// turns) and a link to `to`, with atomic renames, as fast as it can (python:
/// microseconds per step, not a fork).
const FLIP: &str = r#"exec python3 -c '
import os, sys
d, stop, to = sys.argv[1:4]
real, name, tmp = (os.path.join(d, n) for n in ("real", "dir", ".t"))
while not os.path.exists(stop):
    os.rename(real, name)
    os.rename(name, real)
    os.symlink(to, tmp)
    os.rename(tmp, name)
    os.unlink(name)
' "$@""#;

#[tokio::test]
async fn a_directory_swapped_for_a_link_during_a_read_never_yields_the_other_file() {
    let bed = Bed::start().await;
    let mut dev = bed.client("dev-token").await;
    // outside/sdir/public.txt: root's 0600 file, under the name the reader asks for.
    let sdir = bed.path("outside/sdir");
    std::fs::create_dir(&sdir).unwrap();
    file(&sdir.join("public.txt"), "top secret\n", 0o600, None);
    // read/flip/ belongs to uid 65534, who swaps read/flip/dir.
    let flip = bed.path("read/flip");
    std::fs::create_dir_all(flip.join("real")).unwrap();
    file(&flip.join("real/public.txt"), "public\n", 0o644, None);
    for p in [flip.clone(), flip.join("real")] {
        std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
    }
    let log = bed.path("flip.log");
    let stop_file = bed.path("flip.stop");
    let flipper = attacker(FLIP, &[&flip, &stop_file, &sdir], &log).await;
    let mut outcomes = std::collections::BTreeMap::new();
    for _ in 0..300 {
        let key = match read(&mut dev, &flip.join("dir/public.txt")).await {
            Ok(data) => {
                assert_eq!(
                    data, b"public\n",
                    "a read through the swapped directory got root's file"
                );
                "OK".to_owned()
            }
            Err(st) => format!("{:?}", st.code()),
        };
        *outcomes.entry(key).or_insert(0) += 1;
    }
    stop(flipper, &stop_file);
    eprintln!("reads while the directory is swapped: {outcomes:?}");
    assert!(
        outcomes.contains_key("PermissionDenied"),
        "the swap never ran: {outcomes:?}"
    );
}

/// In a directory it owns, replaces every staging entry (file or directory) by a symbolic
/// link, or a directory holding one, to the victim.
const SWAP: &str = r#"d=$1; stop=$2; victim=$3
while [ ! -e "$stop" ]; do
  for f in "$d"/.atp-*; do
    case $f in *.old) continue ;; esac
    [ -e "$f.old" ] && continue
    if [ -d "$f" ] && [ ! -L "$f" ]; then
      mv "$f" "$f.old" 2>/dev/null && mkdir "$f" && ln -s "$victim" "$f/data" && echo "SWAPPED $f"
    elif [ -f "$f" ] && [ ! -L "$f" ]; then
      mv "$f" "$f.old" 2>/dev/null && ln -s "$victim" "$f" && echo "SWAPPED $f"
    fi
  done
done"#;

#[tokio::test]
async fn symlinks_are_decided_on_where_they_lead() {
    let bed = Bed::start().await;
    let mut dev = bed.client("dev-token").await;
    let mut ops = bed.client("ops-token").await;
    let secret = bed.path("outside/secret");
    file(&secret, "top secret\n", 0o600, None);

    // A link under an allowed read prefix to a root 0600 file outside it.
    let link = bed.path("read/link");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    let st = read(&mut dev, &link).await.unwrap_err();
    assert_eq!(st.code(), Code::PermissionDenied, "{st:?}");
    assert!(
        st.message().contains(&secret.display().to_string()),
        "names the resolved path: {}",
        st.message()
    );
    // A link that stays inside is read as before.
    let real = bed.path("read/real.txt");
    file(&real, "public\n", 0o644, None);
    let inside = bed.path("read/inside");
    std::os::unix::fs::symlink("real.txt", &inside).unwrap();
    assert_eq!(read(&mut dev, &inside).await.unwrap(), b"public\n");

    // The second decision is its own audit record, with the requested path.
    let records: Vec<serde_json::Value> = std::fs::read_to_string(&bed.audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let second = records
        .iter()
        .find(|r| {
            r["kind"] == "decision"
                && r["summary"]["file"]["requested"] == link.display().to_string()
                && r["summary"]["file"]["path"] == secret.display().to_string()
        })
        .expect("a decision record on the resolved path");
    assert_eq!(second["decision"], "deny");

    // APPEND through a link under write_paths to a file outside them.
    let target = bed.path("outside/target");
    file(&target, "orig\n", 0o644, None);
    let applink = bed.path("drop/applink");
    std::os::unix::fs::symlink(&target, &applink).unwrap();
    for mode in [WriteMode::Append, WriteMode::Create] {
        let st = upload(&mut ops, header(&applink, mode, None), b"evil\n")
            .await
            .unwrap_err();
        assert_eq!(st.code(), Code::PermissionDenied, "{mode:?}: {st:?}");
    }
    assert_eq!(std::fs::read(&target).unwrap(), b"orig\n");
}

#[tokio::test]
async fn a_link_swapped_in_for_the_staged_file_changes_no_other_file() {
    let bed = Bed::start().await;
    let mut ops = bed.client("ops-token").await;
    // A directory another user owns, under write_paths: that user swaps a symbolic link
    // (or a directory holding one) to a root 0600 file in for the staging entry.
    let theirs = bed.path("drop/theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let victim = bed.path("outside/victim");
    file(&victim, "victim\n", 0o600, None);
    let log = bed.path("swap.log");
    let stop_file = bed.path("swap.stop");
    let swap = attacker(SWAP, &[&theirs, &stop_file, &victim], &log).await;
    let data = pattern(16 << 20);
    let dest = theirs.join("conf");
    for _ in 0..2 {
        // Refused or not (depending on when the swap lands), the victim is untouched.
        let res = upload(
            &mut ops,
            header(&dest, WriteMode::Create, Some(0o644)),
            &data,
        )
        .await;
        eprintln!("upload while the owner swaps: {res:?}");
    }
    stop(swap, &stop_file);
    let swapped = std::fs::read_to_string(&log).unwrap();
    assert!(swapped.contains("SWAPPED"), "the swap never ran");
    assert_eq!(meta(&victim), (0o600, 0, 0), "the victim's mode changed");
    assert_eq!(std::fs::read(&victim).unwrap(), b"victim\n");
}

/// In a directory it owns, once an upload is under way (0.2 s after its staging directory
/// appears: part of the attack), renames the staging directory away and puts a link to
/// another directory of root's in its place.
const LINK_DIR: &str = r#"d=$1; stop=$2; to=$3
while [ ! -e "$stop" ]; do
  for f in "$d"/.atp-*; do
    case $f in *.old) continue ;; esac
    [ -e "$f.old" ] && continue
    if [ -d "$f" ] && [ ! -L "$f" ]; then
      sleep 0.2
      mv "$f" "$f.old" 2>/dev/null && ln -s "$to" "$f" && echo "SWAPPED $f"
    fi
  done
done"#;

#[tokio::test]
async fn a_link_to_another_root_directory_swapped_in_mid_upload_is_not_entered() {
    let bed = Bed::start().await;
    let mut ops = bed.client("ops-token").await;
    let theirs = bed.path("drop/theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    // Root's directory with a file named like the staged one.
    let rootdir = bed.path("outside/rootdir");
    std::fs::create_dir(&rootdir).unwrap();
    std::fs::set_permissions(&rootdir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let precious = rootdir.join("data");
    file(&precious, "precious\n", 0o600, None);
    let log = bed.path("link.log");
    let stop_file = bed.path("link.stop");
    let swap = attacker(LINK_DIR, &[&theirs, &stop_file, &rootdir], &log).await;
    let data = pattern(32 << 20);
    let res = upload_paced(
        &mut ops,
        header(&theirs.join("conf"), WriteMode::Create, Some(0o644)),
        &data,
    )
    .await;
    eprintln!("upload while the owner links another directory in: {res:?}");
    stop(swap, &stop_file);
    assert!(
        std::fs::read_to_string(&log).unwrap().contains("SWAPPED"),
        "the swap never ran"
    );
    assert_eq!(std::fs::read(&precious).unwrap(), b"precious\n");
    assert_eq!(meta(&precious), (0o600, 0, 0));
    let st = res.expect_err("the upload succeeded through a swapped staging directory");
    assert_eq!(st.code(), Code::Aborted, "{st:?}");
}

/// Runs `script` in the guest through the daemon; its stdout.
async fn guest_sh(c: &mut GuestAgentClient<Channel>, domain: &str, script: &str) -> String {
    let o = common::run_sh(c, domain, script).await;
    let exit = o.exited.unwrap();
    assert_eq!(
        exit.exit_code,
        Some(0),
        "{script}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// The busybox guest runs every helper (readlink -f, stat -c, mkdir -m, head/od,
/// truncate, chown, chmod, mv -T, ln -T, rm -rf): an atomic replace keeps mode and
/// owner, a new file gets 0644, and a link is written through to where it leads.
#[tokio::test]
async fn tcg_guest_replace_and_create_with_the_busybox_helpers() {
    common::init_logging();
    let image = common::image().await;
    let guest = ocloudview_atp::testbed::QemuGuest::boot(&image, Default::default())
        .await
        .unwrap();
    let d = common::Daemon::start(
        &[],
        &format!(
            "[[guests]]\nname = \"tcg\"\nsocket = \"{}\"\n",
            guest.agent_socket().display()
        ),
    )
    .await;
    let mut c = d.client().await;
    guest_sh(
        &mut c,
        "tcg",
        "mkdir -p /data/s && echo old >/data/s/conf && chown 65534:65534 /data/s/conf && chmod 640 /data/s/conf && ln -s conf /data/s/link",
    )
    .await;
    let write = |path: &str, mode: WriteMode, atomic: bool, data: &[u8]| {
        let mut c = c.clone();
        let msgs = vec![
            WriteFileRequest {
                msg: Some(Msg::Header(WriteFileHeader {
                    domain: "tcg".into(),
                    path: path.into(),
                    mode: mode as i32,
                    atomic: Some(atomic),
                    ..Default::default()
                })),
            },
            WriteFileRequest {
                msg: Some(Msg::Data(data.to_vec())),
            },
        ];
        async move { c.write_file(tokio_stream::iter(msgs)).await.unwrap() }
    };
    write("/data/s/conf", WriteMode::Create, true, b"replaced\n").await;
    write(
        "/data/s/new",
        WriteMode::Create,
        true,
        b"a longer first version\n",
    )
    .await;
    // In place over an existing file: emptied through the agent's descriptor, then written.
    write("/data/s/new", WriteMode::Truncate, false, b"fresh\n").await;
    // APPEND through the link: the file it leads to grows, the link stays a link.
    write("/data/s/link", WriteMode::Append, false, b"more\n").await;
    // In place, a new file in root's closed directories: created by the resolution with
    // its mode and written at once, nothing staged.
    write("/data/s/made", WriteMode::Create, false, b"in place\n").await;
    let out = guest_sh(
        &mut c,
        "tcg",
        "cd /data/s && stat -c '%n %a %u %g' conf new made && cat conf new made && readlink link && ls -a",
    )
    .await;
    assert_eq!(
        out,
        "conf 640 65534 65534\nnew 644 0 0\nmade 644 0 0\nreplaced\nmore\nfresh\nin place\nconf\n.\n..\nconf\nlink\nmade\nnew\n",
        "guest state"
    );
    // ReadFile through the link: resolved, opened, and the handle proven (/proc/PID/fd).
    let mut s = c
        .read_file(ReadFileRequest {
            domain: "tcg".into(),
            path: "/data/s/link".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(ch) = s.message().await.unwrap() {
        got.extend(ch.data);
        if ch.eof {
            break;
        }
    }
    assert_eq!(got, b"replaced\nmore\n");
}
