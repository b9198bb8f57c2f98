//! The cases of the directory tree tests (issue 15), shared by `tree_copy` (busybox
//! guest) and `daemon_admin` (its Debian 12 boot: GNU tar and dash).
// Each test binary runs the cases its guest needs.
#![allow(dead_code, clippy::unwrap_used)]

use std::{os::unix::fs::PermissionsExt as _, path::Path};

use ocloudview_atp::pb::{
    EntryKind, ListDirRequest, TreeSummary, pull_tree_response::Msg as PullMsg,
};
use sha2::{Digest, Sha256};
use tonic::Code;

use crate::bed::*;

/// `atp cp -r` in and out: modes, mtimes, links, a 2 MiB file, an empty file, a name with
/// a newline; the pulled tree equals the pushed one.
pub async fn round_trip(bed: &Bed, admin: &mut Client) {
    let src = bed.path("src");
    file(&src.join("a.txt"), b"hello\n", 0o640, 1_500_000_000);
    file(
        &src.join("bin/run.sh"),
        b"#!/bin/sh\necho hi\n",
        0o755,
        1_500_000_100,
    );
    file(
        &src.join("big.bin"),
        &pattern(2 << 20),
        0o600,
        1_500_000_200,
    );
    file(&src.join("empty"), b"", 0o644, 1_500_000_300);
    file(
        &src.join("odd name\nwith newline"),
        b"odd",
        0o644,
        1_500_000_400,
    );
    file(&src.join("deep/er/est/f"), b"x", 0o644, 1_500_000_500);
    std::os::unix::fs::symlink("bin/run.sh", src.join("link")).unwrap();
    std::os::unix::fs::symlink("../a.txt", src.join("deep/up")).unwrap();
    std::fs::set_permissions(src.join("bin"), std::fs::Permissions::from_mode(0o711)).unwrap();
    set_mtime(&src.join("bin"), 1_400_000_000);
    set_mtime(&src.join("deep/er"), 1_400_000_100);
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o750)).unwrap();
    set_mtime(&src, 1_600_000_000);

    let (ok, out) = bed.cp(&["cp", "-r", "-q", src.to_str().unwrap(), "tcg:/data/site"]);
    assert!(ok, "push: {out}");
    let got = sh(
        admin,
        "cd /data/site && stat -c '%n %a %Y %s' . a.txt bin bin/run.sh big.bin empty deep/er && readlink link && readlink deep/up && sha256sum big.bin && cat 'odd name\nwith newline'",
    )
    .await;
    let big = Sha256::digest(pattern(2 << 20))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    let want = format!(
        ". 750 1600000000 {dir}\na.txt 640 1500000000 6\nbin 711 1400000000 {dir}\nbin/run.sh 755 1500000100 18\nbig.bin 600 1500000200 2097152\nempty 644 1500000300 0\ndeep/er 755 1400000100 {dir}\nbin/run.sh\n../a.txt\n{big}  big.bin\nodd",
        dir = "SIZE",
    );
    // Directory sizes depend on the file system: compare without them.
    let masked: Vec<String> = got
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            if f.len() == 4 && [".", "bin", "deep/er"].contains(&f[0]) {
                format!("{} {} {} SIZE", f[0], f[1], f[2])
            } else {
                l.to_owned()
            }
        })
        .collect();
    assert_eq!(masked.join("\n"), want);

    // Out again, into an existing directory: ./site.
    let out_dir = bed.path("out");
    std::fs::create_dir(&out_dir).unwrap();
    let (ok, out) = bed.cp(&[
        "cp",
        "-r",
        "-q",
        "tcg:/data/site",
        out_dir.to_str().unwrap(),
    ]);
    assert!(ok, "pull: {out}");
    let a = snapshot(&src);
    let b = snapshot(&out_dir.join("site"));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, v) in &a {
        assert_eq!(Some(v), b.get(k), "{k:?}");
    }
    let leftovers: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["site"]);
    // A second pull to the same place is refused locally without --overwrite.
    let (ok, out) = bed.cp(&[
        "cp",
        "-r",
        "-q",
        "tcg:/data/site",
        out_dir.to_str().unwrap(),
    ]);
    assert!(!ok && out.contains("exists"), "{out}");
    no_stage_left(admin).await;
}

/// ListDir: sorted entries with any name byte for byte, link targets, a bound, and a stat
/// of a file; `atp ls` prints them.
pub async fn listing(bed: &Bed, admin: &mut Client) {
    let r = admin
        .list_dir(ListDirRequest {
            domain: "tcg".into(),
            path: "/data/site".into(),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = r.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        names,
        [
            "a.txt",
            "big.bin",
            "bin",
            "deep",
            "empty",
            "link",
            "odd name\nwith newline"
        ]
    );
    assert!(!r.truncated);
    let stat = r.stat.unwrap();
    assert_eq!(
        (stat.kind, stat.mode, stat.mtime),
        (EntryKind::Dir as i32, 0o750, 1_600_000_000)
    );
    let a = &r.entries[0];
    assert_eq!(
        (a.kind, a.mode, a.size, a.mtime),
        (EntryKind::File as i32, 0o640, 6, 1_500_000_000)
    );
    let link = &r.entries[5];
    assert_eq!(
        (link.kind, link.target.as_str()),
        (EntryKind::Symlink as i32, "bin/run.sh")
    );

    let r = admin
        .list_dir(ListDirRequest {
            domain: "tcg".into(),
            path: "/data/site".into(),
            limit: 2,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.entries.len(), r.truncated), (2, true));

    let r = admin
        .list_dir(ListDirRequest {
            domain: "tcg".into(),
            path: "/data/site/a.txt".into(),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.entries.is_empty());
    assert_eq!(r.stat.unwrap().kind, EntryKind::File as i32);

    let missing = admin
        .list_dir(ListDirRequest {
            domain: "tcg".into(),
            path: "/data/nope".into(),
            limit: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");

    let (ok, out) = bed.cp(&["ls", "tcg:/data/site"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("-rw-r----- ") && out.contains(" a.txt\n"),
        "{out}"
    );
    assert!(out.contains("link -> \"bin/run.sh\""), "{out}");
    assert!(out.contains("\"odd name\\nwith newline\""), "{out}");
}

/// A client's hostile trees: refused naming the entry; nothing appears in the guest.
pub async fn hostile_client(admin: &mut Client) {
    use EntryKind::{Dir, Fifo, File, Symlink};
    let root = || (entry(".", Dir, 0, ""), Vec::new());
    let cases: Vec<(&str, Vec<Sent>, &str)> = vec![
        (
            "dotdot",
            vec![root(), (entry("../x", File, 1, ""), b"x".to_vec())],
            "`..`",
        ),
        (
            "deep dotdot",
            vec![(entry("a/../../x", File, 1, ""), b"x".to_vec())],
            "`..`",
        ),
        (
            "absolute",
            vec![(entry("/etc/evil", File, 1, ""), b"x".to_vec())],
            "absolute",
        ),
        (
            "escaping link",
            vec![(entry("up", Symlink, 0, "../../etc"), Vec::new())],
            "out of the tree",
        ),
        (
            "absolute link",
            vec![(entry("abs", Symlink, 0, "/etc/shadow"), Vec::new())],
            "absolute",
        ),
        (
            "dotdot after a link",
            vec![
                (entry("l", Symlink, 0, "."), Vec::new()),
                (entry("x", Symlink, 0, "l/.."), Vec::new()),
            ],
            "not known",
        ),
        (
            "below a link",
            vec![
                (entry("l", Symlink, 0, "sub"), Vec::new()),
                (entry("l/x", File, 1, ""), b"x".to_vec()),
            ],
            "not a directory",
        ),
        (
            "fifo",
            vec![(entry("p", Fifo, 0, ""), Vec::new())],
            "allow_special",
        ),
        (
            "twice",
            vec![
                (entry("f", File, 1, ""), b"x".to_vec()),
                (entry("f", File, 1, ""), b"y".to_vec()),
            ],
            "twice",
        ),
    ];
    for (what, entries, says) in cases {
        let named = entries.last().unwrap().0.path.clone();
        let st = push(admin, "/data/h", entries, None, (false, false))
            .await
            .unwrap_err();
        assert_eq!(st.code(), Code::InvalidArgument, "{what}: {st:?}");
        assert_eq!(reason(&st), "TREE_ENTRY_REFUSED", "{what}");
        assert!(st.message().contains(says), "{what}: {}", st.message());
        assert!(
            st.message().contains(&format!("{named:?}")),
            "{what}: {}",
            st.message()
        );
        sh(admin, "[ ! -e /data/h ]").await;
    }
    // A file that is not the size it announced (it changed while the client read it):
    // more data than announced, and less (the next entry comes early).
    let mut grew = entry("f", File, 3, "");
    grew.mode = 0o600;
    let st = push(
        admin,
        "/data/h",
        vec![(grew.clone(), b"abcd".to_vec())],
        None,
        (false, false),
    )
    .await
    .unwrap_err();
    assert_eq!(reason(&st), "TREE_ENTRY_REFUSED", "{st:?}");
    assert!(st.message().contains("\"f\""), "{}", st.message());
    let st = push(
        admin,
        "/data/h",
        vec![
            (grew, b"ab".to_vec()),
            (entry("g", File, 0, ""), Vec::new()),
        ],
        None,
        (false, false),
    )
    .await
    .unwrap_err();
    assert!(
        st.message().contains("\"f\" announced 3 bytes"),
        "{}",
        st.message()
    );
    // More than the summary the policy decided on.
    let st = push(
        admin,
        "/data/h",
        vec![
            (entry("a", File, 1, ""), b"a".to_vec()),
            (entry("b", File, 1, ""), b"b".to_vec()),
        ],
        Some(TreeSummary {
            entries: 1,
            bytes: 1,
            largest: 1,
        }),
        (false, false),
    )
    .await
    .unwrap_err();
    assert!(
        st.message().contains("announced summary"),
        "{}",
        st.message()
    );
    sh(admin, "[ ! -e /data/h ]").await;
    no_stage_left(admin).await;
    // With allow_special a FIFO is created.
    push(
        admin,
        "/data/fifo",
        vec![(entry("p", Fifo, 0, ""), Vec::new())],
        None,
        (false, true),
    )
    .await
    .unwrap();
    sh(admin, "[ -p /data/fifo/p ] && rm -r /data/fifo").await;
}

/// An existing destination: refused without overwrite; replaced with it.
pub async fn overwrite(admin: &mut Client) {
    let tree = || vec![(entry("new.txt", EntryKind::File, 4, ""), b"new\n".to_vec())];
    let st = push(admin, "/data/site", tree(), None, (false, false))
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::AlreadyExists, "{st:?}");
    sh(admin, "[ -f /data/site/a.txt ]").await;
    let r = push(admin, "/data/site", tree(), None, (true, false))
        .await
        .unwrap();
    assert!(r.replaced);
    assert_eq!(r.archive_sha256.len(), 32);
    let got = sh(
        admin,
        "ls -a /data/site | tr '\\n' ' '; cat /data/site/new.txt",
    )
    .await;
    assert_eq!(got, ". .. new.txt new\n");
    no_stage_left(admin).await;
}

/// A guest's hostile trees: each pull refused naming the entry, the local destination
/// untouched (no directory, no staging left).
pub async fn hostile_guest(bed: &Bed, admin: &mut Client) {
    sh(
        admin,
        "cd /data && mkdir -p e1 e2/s e3 e4 e5 e6/d && ln -s /etc/passwd e1/abs && ln -s ../../etc e2/s/up && ln -s .. e3/x \
         && mkfifo e4/p && mknod e5/null c 1 3 && ln -s d e6/l && echo ok >e6/d/f",
    )
    .await;
    let out = bed.path("evil");
    std::fs::create_dir(&out).unwrap();
    for (dir, named) in [
        ("e1", "abs"),
        ("e2", "s/up"),
        ("e3", "x"),
        ("e4", "p"),
        ("e5", "null"),
    ] {
        let st = pull(admin, &format!("/data/{dir}"), false)
            .await
            .unwrap_err();
        assert_eq!(st.code(), Code::FailedPrecondition, "{dir}: {st:?}");
        assert_eq!(reason(&st), "GUEST_TREE_REFUSED", "{dir}: {st:?}");
        assert!(
            st.message().contains(&format!("{named:?}")),
            "{dir}: {}",
            st.message()
        );
        let (ok, msg) = bed.cp(&[
            "cp",
            "-r",
            "-q",
            &format!("tcg:/data/{dir}"),
            out.to_str().unwrap(),
        ]);
        assert!(!ok && msg.contains(named), "{dir}: {msg}");
        let left: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
        assert!(left.is_empty(), "{dir}: {left:?}");
    }
    // A FIFO passes when allowed; a link inside the tree always does.
    let (ok, msg) = bed.cp(&[
        "cp",
        "-r",
        "-q",
        "--allow-special",
        "tcg:/data/e4",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{msg}");
    assert!(
        std::fs::symlink_metadata(out.join("e4/p"))
            .unwrap()
            .file_type()
            .is_fifo_like()
    );
    let (ok, msg) = bed.cp(&["cp", "-r", "-q", "tcg:/data/e6", out.to_str().unwrap()]);
    assert!(ok, "{msg}");
    assert_eq!(
        std::fs::read_link(out.join("e6/l")).unwrap(),
        Path::new("d")
    );
    assert_eq!(std::fs::read(out.join("e6/l/f")).unwrap(), b"ok\n");
}

/// A guest user swaps a file of the tree for a link to /etc/passwd and back while it is
/// pulled. GNU tar opens files with O_NOFOLLOW: a pull either refuses the link (naming
/// it), fails, or carries the file's own content. busybox tar follows such a link, so a
/// tree with a directory another user can write to is refused before anything is read.
/// Either way /etc/passwd's content never comes out.
pub async fn swapped_while_pulled(admin: &mut Client) {
    let passwd = sh(admin, "cat /etc/passwd").await;
    let gnu = sh(
        admin,
        "tar --version 2>/dev/null | grep -q 'GNU tar' && echo gnu || echo other",
    )
    .await
        == "gnu\n";
    sh(
        admin,
        "mkdir -p /data/race && chown 65534 /data/race && echo mine >/data/race/f && touch /data/race.run \
         && (setsid sh -c 'while [ -e /data/race.run ]; do ln -sf /etc/passwd /data/race/f.new && mv -f /data/race/f.new /data/race/f; echo mine >/data/race/f.new && mv -f /data/race/f.new /data/race/f; done' </dev/null >/dev/null 2>&1 &)",
    )
    .await;
    let (mut refused, mut carried) = (0, 0);
    for _ in 0..4 {
        match pull(admin, "/data/race", false).await {
            Ok(msgs) => {
                for m in &msgs {
                    if let PullMsg::Data(d) = m {
                        assert_ne!(d.as_slice(), passwd.as_bytes(), "/etc/passwd came out");
                        assert!(d.starts_with(b"mine"), "{d:?}");
                    }
                    if let PullMsg::Entry(e) = m {
                        assert_ne!(e.kind, EntryKind::Symlink as i32, "{e:?}");
                    }
                }
                assert!(matches!(msgs.last(), Some(PullMsg::Done(_))));
                carried += 1;
            }
            Err(st) => {
                assert_eq!(st.code(), Code::FailedPrecondition, "{st:?}");
                if !gnu {
                    assert_eq!(reason(&st), "GUEST_UNSUPPORTED", "{st:?}");
                    assert!(
                        st.message().contains("can be written by other users"),
                        "{}",
                        st.message()
                    );
                }
                refused += 1;
            }
        }
    }
    sh(admin, "rm -f /data/race.run; sleep 1; rm -rf /data/race").await;
    assert!(
        gnu || refused == 4,
        "busybox tar: {carried} pulls went through"
    );
    eprintln!(
        "swapped while pulled (gnu tar: {gnu}): {carried} carried the file, {refused} refused"
    );
}

/// The shipped policies: a caller without a role may list and pull under read_paths
/// only, and push nowhere.
pub async fn policy(bed: &Bed) {
    let mut dev = bed.client("dev-token").await;
    let st = push(
        &mut dev,
        "/data/dev",
        vec![(entry("a", EntryKind::File, 1, ""), b"a".to_vec())],
        None,
        (false, false),
    )
    .await
    .unwrap_err();
    assert_eq!(st.code(), Code::PermissionDenied, "{st:?}");
    let list = |path: &str| ListDirRequest {
        domain: "tcg".into(),
        path: path.into(),
        limit: 0,
    };
    let st = dev.list_dir(list("/etc")).await.unwrap_err();
    assert_eq!(st.code(), Code::PermissionDenied, "{st:?}");
    dev.list_dir(list("/data")).await.unwrap();
    let st = pull(&mut dev, "/etc", false).await.unwrap_err();
    assert_eq!(st.code(), Code::PermissionDenied, "{st:?}");
    let msgs = pull(&mut dev, "/data/site", false).await.unwrap();
    assert!(matches!(msgs.first(), Some(PullMsg::Summary(_))));
}

/// A guest without `tar` (Debian's moved away; busybox's shell finds its applet even
/// without the link): FAILED_PRECONDITION (`GUEST_UNSUPPORTED`) naming the tool, both
/// ways; nothing left behind.
pub async fn no_tar(admin: &mut Client) {
    let tar = sh(admin, "command -v tar").await;
    let tar = tar.trim();
    sh(admin, &format!("mv {tar} {tar}.off")).await;
    let st = pull(admin, "/data/site", false).await.unwrap_err();
    let pushed = push(
        admin,
        "/data/notar",
        vec![(entry("a", EntryKind::File, 1, ""), b"a".to_vec())],
        None,
        (false, false),
    )
    .await;
    sh(admin, &format!("mv {tar}.off {tar}")).await;
    assert_eq!(st.code(), Code::FailedPrecondition, "{st:?}");
    assert_eq!(reason(&st), "GUEST_UNSUPPORTED", "{st:?}");
    assert!(st.message().contains("no tar"), "{}", st.message());
    let st = pushed.unwrap_err();
    assert_eq!(reason(&st), "GUEST_UNSUPPORTED", "{st:?}");
    assert!(st.message().contains("no tar"), "{}", st.message());
    sh(admin, "[ ! -e /data/notar ]").await;
}
