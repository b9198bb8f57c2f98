//! The local side of `atp exec -it` / `atp sh -it`: the terminal in raw mode (restored on
//! every way out: return, error, panic unwinding, SIGTERM/SIGHUP), its size sent at start
//! and on SIGWINCH, and keystrokes passed as they come — Ctrl-C, Ctrl-Z and Ctrl-D are
//! bytes for the guest's terminal, which turns them into signals or EOF there.

use std::{io::IsTerminal as _, os::fd::AsFd as _};

use ocloudview_atp::pb::{self, exec_input::Msg};
use rustix::termios::{self, OptionalActions, Termios};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

/// The guest user's login shell, from its passwd entry, with the login environment.
pub const LOGIN_SHELL: &str = r#"u=$(id -un 2>/dev/null) || u=root
h=/; s=/bin/sh
while IFS=: read -r n _ _ _ _ hh ss; do
  if [ "$n" = "$u" ]; then h=${hh:-/}; s=${ss:-/bin/sh}; break; fi
done </etc/passwd
[ -x "$s" ] || s=/bin/sh
export HOME="$h" SHELL="$s" USER="$u" LOGNAME="$u"
cd "$HOME" 2>/dev/null || cd /
exec "$s" -l"#;

/// The local terminal in raw mode until dropped.
#[derive(Debug)]
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Puts stdin's terminal in raw mode; `None` when stdin is not a terminal.
    pub fn enter() -> Option<Self> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return None;
        }
        let saved = termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        termios::tcsetattr(stdin.as_fd(), OptionalActions::Now, &raw).ok()?;
        Some(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let stdin = std::io::stdin();
        let _ = termios::tcsetattr(stdin.as_fd(), OptionalActions::Now, &self.saved);
    }
}

/// The local window size (24x80 when stdout is not a terminal).
pub fn window() -> pb::TerminalSize {
    let out = std::io::stdout();
    match termios::tcgetwinsize(out.as_fd()) {
        Ok(w) if w.ws_row > 0 && w.ws_col > 0 => pb::TerminalSize {
            rows: u32::from(w.ws_row),
            cols: u32::from(w.ws_col),
        },
        _ => pb::TerminalSize { rows: 24, cols: 80 },
    }
}

/// Sends a `resize` each time the local window changes, until the stream ends.
pub fn forward_resizes(tx: mpsc::Sender<pb::ExecInput>) {
    tokio::spawn(async move {
        let Ok(mut winch) = signal(SignalKind::window_change()) else {
            return;
        };
        while winch.recv().await.is_some() {
            let msg = pb::ExecInput {
                msg: Some(Msg::Resize(window())),
            };
            if tx.send(msg).await.is_err() {
                return;
            }
        }
    });
}

/// Resolves when atp is asked to stop from outside (SIGTERM or SIGHUP): the caller then
/// returns, and [`RawMode`]'s drop restores the terminal.
pub async fn terminated() {
    let (Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = hup.recv() => {}
    }
}
