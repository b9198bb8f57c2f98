//! Execs that outlive the daemon (`[state]`): the record an Exec writes when its program
//! starts, and the adoption of every recorded exec when a daemon starts. An adopted exec
//! gets a parked [`Runner`] of its own under the same exec id and owner, so ExecAttach
//! (output replayed from the start of its files), ExecCancel, the deadline and
//! `max_bytes` work as before the restart, and the Exec call's outcome is recorded once,
//! by whichever daemon instance sees the program end.
//!
//! Interactive sessions are not recorded: their stdin stream cannot survive the daemon.

use tonic::Code;

use super::{
    persist::{ExecRecord, ExecStore, instant_of, wall_ms},
    registry::ExecEntry,
    runner::{ExecLimits, Runner},
};
use crate::{
    pb,
    qga::{ExecSession, QgaError},
    server::{
        budget::ByteBudget,
        gate::{Call, Outcome},
        service::GuestAgentService,
    },
};

/// Writes the record of an exec that just started (STREAM or COLLECT, Linux guests: its
/// output is in a guest directory). False when there is no `[state]` or the write failed
/// (then the exec lives only as long as this daemon, as without `[state]`).
pub(super) async fn save_started(
    s: &GuestAgentService,
    call: &Call,
    entry: &ExecEntry,
    session: &ExecSession,
    r: &pb::ExecRequest,
    limits: &ExecLimits,
) -> bool {
    let (Some(_), Some(dir)) = (s.shared.execs.store(), session.dir()) else {
        return false;
    };
    let rec = ExecRecord {
        v: super::persist::RECORD_VERSION,
        exec_id: entry.id.clone(),
        domain: entry.domain.clone(),
        pid: session.pid(),
        dir: dir.to_owned(),
        owner_auth: entry.owner.auth.clone(),
        owner_id: entry.owner.id.clone(),
        request_id: call.request_id().to_owned(),
        caller: call.caller().clone(),
        rpc: call.rpc().name().to_owned(),
        started_ms: wall_ms(session.started()),
        deadline_ms: wall_ms(limits.deadline),
        timeout_ms: u64::try_from(limits.timeout.as_millis()).unwrap_or(u64::MAX),
        max_bytes: limits.output.limit(),
        mode: if r.mode == pb::ExecMode::Collect as i32 {
            "collect"
        } else {
            "stream"
        }
        .into(),
    };
    let svc = s.clone();
    let saved = tokio::task::spawn_blocking(move || match svc.shared.execs.store() {
        Some(store) => store.save(&rec),
        None => Ok(()),
    })
    .await;
    match saved {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::error!(exec_id = %entry.id, error = %e, "exec record not written; the exec will not survive a daemon restart");
            false
        }
        Err(e) => {
            tracing::error!(exec_id = %entry.id, error = %e, "exec record task failed");
            false
        }
    }
}

/// Removes an exec's record once its outcome is recorded (blocking: a file unlink).
pub(super) async fn forget(s: &GuestAgentService, exec_id: &str) {
    let (svc, id) = (s.clone(), exec_id.to_owned());
    let _ = tokio::task::spawn_blocking(move || {
        if let Some(store) = svc.shared.execs.store() {
            store.remove(&id);
        }
    })
    .await;
}

/// Opens `[state]`'s exec records for the service and adopts every recorded exec
/// (before anything is served). Each adoption runs in the background: a guest that is
/// slow to answer does not hold up the start.
pub(crate) async fn adopt_all(
    s: &GuestAgentService,
    state_dir: &std::path::Path,
) -> Result<usize, super::persist::PersistError> {
    let dir = state_dir.to_owned();
    let opened = tokio::task::spawn_blocking(move || {
        let store = ExecStore::open(&dir)?;
        let records = store.load()?;
        Ok::<_, super::persist::PersistError>((store, records))
    })
    .await
    .map_err(|e| super::persist::PersistError::Io {
        what: "loading",
        path: state_dir.to_owned(),
        source: std::io::Error::other(e),
    })??;
    let (store, records) = opened;
    s.shared.execs.set_store(store);
    let n = records.len();
    for rec in records {
        adopt(s, rec).await;
    }
    Ok(n)
}

/// Adopts one recorded exec: registers it under its id and owner and starts its parked
/// runner; an exec the agent no longer knows is recorded as lost.
async fn adopt(s: &GuestAgentService, rec: ExecRecord) {
    let Some(rpc) = rec.rpc() else {
        return; // checked on load
    };
    let call = Call::resume(
        &s.shared.gate,
        rpc,
        rec.request_id.clone(),
        rec.caller.clone(),
        rec.domain.clone(),
        instant_of(rec.started_ms),
    );
    let Some((entry, cmds)) = s.shared.execs.adopt(&rec.exec_id, &rec.domain, rec.owner()) else {
        tracing::error!(exec_id = %rec.exec_id, "exec id already registered; record ignored");
        call.hand_off();
        return;
    };
    let client = match s.client(&call).await {
        Ok(c) => c,
        Err(st) => {
            let why = format!("guest {:?} cannot be reached: {}", rec.domain, st.message());
            return lost(s, call, &rec, &why).await;
        }
    };
    let mut session =
        match ExecSession::adopt(client, rec.pid, rec.dir.clone(), instant_of(rec.started_ms)) {
            Ok(sess) => sess,
            Err(e) => return lost(s, call, &rec, &e.to_string()).await,
        };
    // The agent forgets a pid when it restarts (or the guest reboots): then the program's
    // status is gone for good. A transport error is left to the runner's retries.
    match session.poll_exit().await {
        Ok(_) => {}
        Err(e @ QgaError::Agent { .. }) => {
            let why = format!("the guest agent no longer knows pid {} ({e})", rec.pid);
            return lost(s, call, &rec, &why).await;
        }
        Err(e) => {
            tracing::warn!(exec_id = %rec.exec_id, error = %e, "the adopted exec's status is not known yet; retried while parked");
        }
    }
    entry.set_pid(rec.pid);
    entry.set_persisted(true);
    let limits = ExecLimits {
        deadline: instant_of(rec.deadline_ms),
        timeout: std::time::Duration::from_millis(rec.timeout_ms),
        output: ByteBudget::new(rec.max_bytes),
    };
    let guard = s.shared.execs.task_guard(&entry);
    tracing::info!(exec_id = %rec.exec_id, domain = %rec.domain, pid = rec.pid, "adopted an exec started by an earlier daemon instance");
    let mut runner = Runner::new(
        s.clone(),
        entry,
        session,
        cmds,
        call,
        None,
        false,
        limits,
        guard,
    );
    runner.adopted = true;
    tokio::spawn(runner.run());
}

/// Records an adopted exec's outcome as lost (UNAVAILABLE) and forgets it.
async fn lost(s: &GuestAgentService, call: Call, rec: &ExecRecord, why: &str) {
    tracing::warn!(exec_id = %rec.exec_id, domain = %rec.domain, why, "an exec recorded by an earlier daemon instance is lost");
    s.shared.execs.remove(&rec.exec_id);
    let message = format!("the exec was lost across a daemon restart: {why}");
    call.finish_with(Code::Unavailable, &message, Outcome::default())
        .await;
    forget(s, &rec.exec_id).await;
}
