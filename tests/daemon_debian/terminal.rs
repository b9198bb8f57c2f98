//! `atp sh -it` typed into from a real terminal: tmux runs it in a 100x30 window against
//! the Debian guest (through libvirt), the test sends keys and reads the screen. Bash's line
//! editing, `top`, `vi` and `less` work; the window size follows a resize; Ctrl-C and
//! Ctrl-Z reach the guest's foreground job; `exit 7` is atp's status; the local terminal
//! is back in canonical mode afterwards.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

/// A tmux server of its own, with one window.
struct Tmux {
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmux {
    fn start(command: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("tmux.sock");
        let t = Self { socket, _dir: dir };
        t.run(&["new-session", "-d", "-x", "100", "-y", "30", command]);
        t
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux is missing: run scripts/setup.sh");
        assert!(out.status.success(), "tmux {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "0"])
    }

    /// Types `text` literally (no key names).
    fn type_text(&self, text: &str) {
        self.run(&["send-keys", "-t", "0", "-l", text]);
    }

    /// Sends tmux key names: `Enter`, `C-c`, `Escape`...
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "0"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// Types `line` and Enter.
    fn line(&self, line: &str) {
        self.type_text(line);
        self.keys(&["Enter"]);
    }

    /// Waits until the screen no longer shows `needle`.
    async fn wait_gone(&self, needle: &str) {
        let t0 = Instant::now();
        loop {
            let s = self.screen();
            if !s.contains(needle) {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "the screen still shows {needle:?}:\n{s}"
            );
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// Waits until the screen shows `needle`; returns the screen.
    async fn wait_for(&self, needle: &str) -> String {
        let t0 = Instant::now();
        loop {
            let s = self.screen();
            if s.contains(needle) {
                return s;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "the screen never showed {needle:?}; it shows:\n{s}"
            );
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}

pub async fn atp_sh_it(socket: &Path, audit_log: &Path, domain: &str, token: &str) {
    let atp = env!("CARGO_BIN_EXE_atp");
    let t = Tmux::start(&format!(
        "ATP_SERVER=unix://{} ATP_TOKEN={token} TERM=xterm-256color {atp} sh -it {domain}; \
         echo \"EXIT=$?\"; stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e -icanon; sleep 600",
        socket.display()
    ));
    t.wait_for("root@").await;

    // Bash's line editing: a typo fixed with BackSpace, Ctrl-A to the start of the line.
    t.type_text("cho edit-$((2+3))X");
    t.keys(&["BSpace", "C-a"]);
    t.type_text("e");
    t.keys(&["Enter"]);
    let s = t.wait_for("edit-5").await;
    assert!(!s.contains("edit-5X"), "{s}");

    // The window size at start, then after a resize (SIGWINCH locally, stty -F in the guest).
    t.line("stty size");
    t.wait_for("30 100").await;
    t.run(&["resize-window", "-t", "0", "-x", "120", "-y", "40"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    t.line("clear; stty size");
    t.wait_for("40 120").await;

    // top draws a full screen and quits on q.
    t.line("top -d 1");
    t.wait_for("load average").await;
    let top = t.wait_for("Tasks:").await;
    eprintln!("--- top through atp sh -it (tmux capture)\n{top}\n---");
    t.type_text("q");
    t.line("clear; echo top-done");
    t.wait_for("top-done").await;

    // vi edits a file; less pages one.
    t.line("vi /tmp/atp-vi.txt");
    // vi discards typeahead when it takes the terminal: wait until it shows the file.
    t.wait_for("[New File]").await;
    t.type_text("ivi-works-in-a-terminal");
    t.keys(&["Escape"]);
    t.line(":wq");
    // Keys typed while vi still runs are vi's (keys queued behind a slow guest write
    // reach it in one read), as on any terminal: wait until it has quit, which shows
    // the shell's screen again (vi draws on the alternate screen).
    t.wait_for("# vi /tmp/atp-vi.txt").await;
    t.line("clear; cat /tmp/atp-vi.txt");
    t.wait_for("vi-works-in-a-terminal").await;
    t.line("less /etc/os-release");
    t.wait_for("bookworm").await;
    t.type_text("q");
    // less leaves the alternate screen when it quits: then the shell reads again.
    t.wait_gone("bookworm").await;
    t.line("clear; echo less-done");
    t.wait_for("less-done").await;

    // Ctrl-C interrupts the foreground job; Ctrl-Z stops it (job control in the guest).
    t.line("sleep 300");
    tokio::time::sleep(Duration::from_millis(800)).await;
    t.keys(&["C-c"]);
    t.line("echo after-int-$?");
    t.wait_for("after-int-130").await;
    t.line("sleep 301");
    tokio::time::sleep(Duration::from_millis(800)).await;
    t.keys(&["C-z"]);
    t.wait_for("Stopped").await;
    t.line("kill %1; echo killed-job");
    t.wait_for("killed-job").await;

    // The shell's status is atp's; the local terminal is restored.
    t.line("exit 7");
    t.wait_for("EXIT=7").await;
    let after = t.wait_for("icanon").await;
    assert!(
        after.lines().any(|l| l.trim() == "icanon"),
        "the local terminal is not back in canonical mode:\n{after}"
    );
    recorded(audit_log).await;
}

/// The session's recording: named with its SHA-256 in the outcome record, holding what
/// the screen showed (top's header, the file vi wrote), and not the typed input.
async fn recorded(audit_log: &Path) {
    use sha2::{Digest, Sha256};
    let t0 = Instant::now();
    loop {
        let log = std::fs::read_to_string(audit_log).unwrap_or_default();
        let rec = log
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|r| r["kind"] == "outcome" && r["rpc"] == "ExecInteractive");
        if let Some(rec) = rec {
            let path = rec["recording"]["path"].as_str().unwrap().to_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            assert_eq!(
                rec["recording"]["sha256"].as_str().unwrap(),
                format!("{:x}", Sha256::digest(text.as_bytes())),
                "the outcome record carries the recording's SHA-256"
            );
            assert_eq!(rec["exit_code"], 7, "{rec}");
            for seen in ["edit-5", "load average", "vi-works-in-a-terminal", "40 120"] {
                assert!(text.contains(seen), "{seen:?} not in the recording");
            }
            assert!(
                !text
                    .lines()
                    .skip(1)
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .any(|e| e[1] == "i"),
                "input recorded without the policy asking"
            );
            eprintln!(
                "recording: {} bytes, {} events, {path}",
                text.len(),
                text.lines().count() - 1
            );
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no ExecInteractive outcome record in {}",
            audit_log.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `atp sh -it --user USER` opens USER's login shell (bash, in its home) on a terminal
/// the user owns; its status is atp's.
pub async fn atp_sh_it_as(socket: &Path, domain: &str, token: &str, user: &str) {
    let atp = env!("CARGO_BIN_EXE_atp");
    let t = Tmux::start(&format!(
        "ATP_SERVER=unix://{} ATP_TOKEN={token} TERM=xterm-256color {atp} sh -it --user {user} \
         {domain}; echo \"EXIT=$?\"; sleep 600",
        socket.display()
    ));
    t.wait_for(&format!("{user}@")).await;
    t.line(
        "echo \"who=$(id -un) home=$HOME pwd=$(pwd) login=$(shopt -q login_shell && echo yes) \
         tty=$(stat -c %U $(tty))\"",
    );
    t.wait_for(&format!(
        "who={user} home=/home/{user} pwd=/home/{user} login=yes tty={user}"
    ))
    .await;
    t.line("exit 5");
    t.wait_for("EXIT=5").await;
}
