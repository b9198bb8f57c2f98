//! Hot reload: on SIGHUP and when a file in the policy directory changes (debounced), the
//! plugin set is recompiled and swapped in; a set that fails keeps the previous one.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use super::PolicyEngine;

/// Quiet time after the last file event before reloading (editors write in bursts).
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Starts the reloader task; it ends with `stop`.
pub fn spawn(engine: Arc<PolicyEngine>, stop: CancellationToken) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(16);
    let watcher = {
        let tx = tx.clone();
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if res.is_ok_and(|e| !e.kind.is_access()) {
                let _ = tx.try_send(());
            }
        })
    };
    let watcher = match watcher {
        Ok(mut w) => {
            use notify::Watcher as _;
            match w.watch(engine.dir(), notify::RecursiveMode::NonRecursive) {
                Ok(()) => Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch the policy directory; reload with SIGHUP");
                    None
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "no file watcher; reload with SIGHUP");
            None
        }
    };
    tokio::spawn(async move {
        let _watcher = watcher; // lives as long as the task
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGHUP");
                None
            }
        };
        loop {
            let hup_recv = async {
                match hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = stop.cancelled() => return,
                _ = hup_recv => tracing::info!("SIGHUP: reloading policy"),
                Some(()) = rx.recv() => {
                    // Debounce: wait until the directory is quiet.
                    while tokio::time::timeout(DEBOUNCE, rx.recv()).await.is_ok() {}
                    tracing::info!("policy directory changed: reloading");
                }
            }
            let e = Arc::clone(&engine);
            let _ = tokio::task::spawn_blocking(move || e.reload()).await;
        }
    });
}
