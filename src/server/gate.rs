//! The one gate every request passes: authenticated caller → policy decision → durable
//! decision record → dispatch → outcome record. A [`Call`] is the proof a request was
//! admitted; handlers cannot reach a guest without one.

use std::{sync::Arc, time::Instant};

use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

use super::{
    action::{Action, Beyond, Rpc},
    auth::{self, AuthMethod, Caller},
    denials::{DenialBudget, Suppressed},
    metrics::{self, RpcTimer},
    status::ApiError,
};
use crate::{
    audit::{AuditEntry, AuditLog, EntryKind},
    policy::{
        Decision, Limits, PolicyEngine,
        request::{DomainInfo, FileInfo, PolicyRequest, REQUEST_VERSION},
    },
};

/// Policy and audit, shared by all requests.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    pub(crate) policy: Option<Arc<PolicyEngine>>,
    pub(crate) audit: Option<AuditLog>,
    /// Bounds the records of anonymous denials (with an audit log only).
    pub(crate) denials: Option<Arc<DenialBudget>>,
}

/// How a request ended, for the outcome record.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Outcome {
    pub(crate) exit_code: Option<i32>,
    pub(crate) signal: Option<i32>,
    pub(crate) bytes: Option<u64>,
}

/// An admitted request: only [`Gate::admit`] makes one, and the guests are reachable only
/// through one ([`super::guests::Guests::client`] takes the admitted domain from it).
#[derive(Debug)]
pub(crate) struct Call {
    caller: Caller,
    rpc: Rpc,
    request_id: String,
    domain: String,
    /// Limits the deciding plugins attached.
    limits: Limits,
    audit: Option<AuditLog>,
    timer: Option<RpcTimer>,
    started: Instant,
    /// What the first decision of a file request was made on (without `settings`), for
    /// [`Call::redecide_file`]; `None` for other requests.
    decided: Option<PolicyRequest>,
    /// The engine that decided; `None` without `[policy]`.
    policy: Option<Arc<PolicyEngine>>,
    /// The reason of the status the call failed with, for its outcome record.
    error_reason: Option<String>,
    /// An interactive session's recording, for its outcome record.
    recording: Option<crate::audit::SessionRecording>,
}

fn entry(kind: EntryKind, request_id: &str, caller: &Caller, rpc: Rpc, domain: &str) -> AuditEntry {
    AuditEntry::new(
        kind,
        request_id.to_owned(),
        caller.clone(),
        rpc.name(),
        domain,
    )
}

/// The gRPC code's canonical name, as audit records and metrics spell it.
pub(crate) fn code_name(code: Code) -> &'static str {
    metrics::code_name(code)
}

/// What policies are asked about: the caller, the guest and the action.
fn describe(
    request_id: &str,
    caller: &Caller,
    action: Action,
    domain: &str,
    os_id: Option<String>,
) -> PolicyRequest {
    let mut preq = PolicyRequest {
        v: REQUEST_VERSION,
        id: request_id.to_owned(),
        caller: caller.clone(),
        domain: DomainInfo {
            name: domain.to_owned(),
            hypervisor: domain
                .split_once('/')
                .map(|(h, _)| h.to_owned())
                .unwrap_or_default(),
            os_id: os_id.unwrap_or_default(),
        },
        ..PolicyRequest::default()
    };
    action.describe(&mut preq);
    preq
}

/// The status of a denial: PERMISSION_DENIED naming the deciding plugin (and, for a
/// second file decision, the resolved path).
fn denied(decision: &Decision, path: Option<String>) -> Status {
    ApiError::PolicyDenied {
        plugin: decision.plugin.clone(),
        reason: decision.reason.clone(),
        path,
    }
    .into()
}

impl Gate {
    /// Admits a request or refuses it with PERMISSION_DENIED (policy) or UNAVAILABLE
    /// (the audit log cannot be written and `on_failure = "refuse"`). `os_id` is what is
    /// known of the guest's OS before anything reaches it.
    pub(crate) async fn admit<T>(
        &self,
        action: Action,
        req: &Request<T>,
        domain: &str,
        os_id: Option<String>,
    ) -> Result<Call, Status> {
        let caller = auth::caller(req)?;
        let rpc = action.rpc();
        let timer = RpcTimer::start(rpc.name());
        let request_id = uuid::Uuid::new_v4().to_string();
        let mut preq = describe(&request_id, &caller, action, domain, os_id);
        let (decision, extra) = self.decide(&mut preq).await;
        tracing::debug!(rpc = rpc.name(), caller = %caller.id, domain, allow = decision.allow,
            plugin = decision.plugin.as_deref().unwrap_or("default"), reason = %decision.reason, "policy decision");
        let mut call = Call {
            caller,
            rpc,
            request_id,
            domain: domain.to_owned(),
            limits: decision.limits.clone(),
            audit: self.audit.clone(),
            timer: Some(timer),
            started: Instant::now(),
            decided: preq.file.is_some().then(|| preq.clone()),
            policy: self.policy.clone(),
            error_reason: None,
            recording: None,
        };
        if !decision.allow {
            self.budget_anonymous_denial(&mut call).await;
        }
        if let Err(st) = call.record_decision(preq, &decision, extra).await {
            call.audit = None; // nothing more can be recorded
            return Err(call.fail(st).await);
        }
        if !decision.allow {
            return Err(call.fail(denied(&decision, None)).await);
        }
        Ok(call)
    }

    /// Asks the policies about `preq` (which they see with `[policy] settings`; the
    /// settings are taken out again, so records never carry them).
    async fn decide(&self, preq: &mut PolicyRequest) -> (Decision, Option<serde_json::Value>) {
        let Some(p) = &self.policy else {
            return (
                Decision {
                    allow: true,
                    plugin: None,
                    reason: "no policy configured".into(),
                    limits: Limits::default(),
                },
                None,
            );
        };
        preq.settings = p.settings().clone();
        let decided = p.evaluate(preq.clone()).await;
        preq.settings = serde_json::Value::Null;
        decided
    }

    /// An anonymous caller's denial is recorded only within its budget; over it, the call
    /// records nothing and is counted in the next summary record instead.
    async fn budget_anonymous_denial(&self, call: &mut Call) {
        if call.caller.auth != AuthMethod::None {
            return;
        }
        let Some(budget) = &self.denials else {
            return;
        };
        let (recorded, ended) = budget.check(&call.caller.peer, Instant::now());
        if let (Some(s), Some(log)) = (ended, &self.audit) {
            record_suppressed(log, s).await;
        }
        if !recorded {
            call.audit = None;
        }
    }
}

/// Writes the summary of anonymous denials a window left out (see [`DenialBudget`]).
pub(crate) async fn record_suppressed(log: &AuditLog, s: Suppressed) {
    let caller = Caller {
        id: "anonymous".into(),
        ..Caller::default()
    };
    let id = uuid::Uuid::new_v4().to_string();
    let mut e = AuditEntry::new(EntryKind::Suppressed, id, caller, "*", "");
    e.decision = Some("deny".into());
    e.message = Some(format!(
        "{} anonymous denials in the last minute were not recorded one by one",
        s.count
    ));
    e.extra = Some(serde_json::json!({ "suppressed": s.count, "peers": s.peers }));
    if let Err(err) = log.record(e).await {
        tracing::error!(error = %err, "summary of suppressed anonymous denials not written");
    }
}

impl Gate {
    /// Records a request refused before it could be described to the policies (a
    /// WriteFile whose header never came, or a caller over a stream limit): one outcome
    /// record with the caller and no domain, and the RPC metric. No decision record: no
    /// policy was asked.
    pub(crate) async fn refused<T>(&self, rpc: Rpc, req: &Request<T>, st: &Status) {
        let Ok(caller) = auth::caller(req) else {
            return;
        };
        let call = Call {
            caller,
            rpc,
            request_id: uuid::Uuid::new_v4().to_string(),
            domain: String::new(),
            limits: Limits::default(),
            audit: self.audit.clone(),
            timer: Some(RpcTimer::start(rpc.name())),
            started: Instant::now(),
            decided: None,
            policy: None,
            error_reason: None,
            recording: None,
        };
        call.fail(st.clone()).await;
    }
}

impl Call {
    /// Who asked.
    pub(crate) fn caller(&self) -> &Caller {
        &self.caller
    }

    /// The RPC admitted.
    pub(crate) fn rpc(&self) -> Rpc {
        self.rpc
    }

    /// The admitted guest (empty for ListDomains).
    pub(crate) fn domain(&self) -> &str {
        &self.domain
    }

    /// The limits the deciding plugins attached.
    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Ties decision and outcome records (names the session's recording too).
    pub(crate) fn request_id(&self) -> &str {
        &self.request_id
    }

    /// The session's recording, named in the outcome record.
    pub(crate) fn set_recording(&mut self, r: crate::audit::SessionRecording) {
        self.recording = Some(r);
    }

    /// Checks that this call's RPC declares `work` beyond its request ([`Rpc::beyond`]):
    /// work a handler does that its admission does not name is a bug, refused as INTERNAL
    /// (and a panic in debug builds, so tests find it).
    pub(crate) fn beyond(&self, work: Beyond) -> Result<(), Status> {
        if self.rpc.beyond().contains(&work) {
            return Ok(());
        }
        debug_assert!(
            false,
            "{} does {work:?}, which it does not declare",
            self.rpc
        );
        Err(ApiError::Internal(format!(
            "{} does work it does not declare ({work:?})",
            self.rpc
        ))
        .into())
    }

    /// Decides again with `file` in place of the request's file section (ReadFile and
    /// WriteFile after resolving symbolic links in the guest: `file.path` is what will
    /// really be opened, `file.requested` what the caller asked for). Recorded as a
    /// decision record of its own under the same request id; a deny is PERMISSION_DENIED
    /// naming the resolved path. Limits tighten with the first decision's.
    pub(crate) async fn redecide_file(&mut self, file: FileInfo) -> Result<(), Status> {
        let Some(policy) = self.policy.clone() else {
            return Ok(()); // no policy: the first decision allowed everything
        };
        let Some(mut preq) = self.decided.clone() else {
            return Err(ApiError::Internal(format!(
                "{} has no file section to decide on again",
                self.rpc
            ))
            .into());
        };
        let path = file.path.clone();
        preq.file = Some(file);
        preq.settings = policy.settings().clone();
        let (decision, extra) = policy.evaluate(preq.clone()).await;
        preq.settings = serde_json::Value::Null;
        self.record_decision(preq.clone(), &decision, extra).await?;
        if !decision.allow {
            return Err(denied(&decision, Some(path)));
        }
        let min = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        };
        self.limits.timeout_ms = min(self.limits.timeout_ms, decision.limits.timeout_ms);
        self.limits.max_bytes = min(self.limits.max_bytes, decision.limits.max_bytes);
        self.decided = Some(preq);
        Ok(())
    }

    /// Writes the decision record of `preq` (durable before anything reaches the guest).
    /// A failure is UNAVAILABLE without its cause: that names the log's host path, which
    /// goes to the daemon's own log only.
    async fn record_decision(
        &self,
        preq: PolicyRequest,
        decision: &Decision,
        extra: Option<serde_json::Value>,
    ) -> Result<(), Status> {
        let Some(log) = &self.audit else {
            return Ok(());
        };
        let mut e = entry(
            EntryKind::Decision,
            &self.request_id,
            &self.caller,
            self.rpc,
            &self.domain,
        );
        let mut summary = serde_json::to_value(&preq).unwrap_or_default();
        if let Some(m) = summary.as_object_mut() {
            m.retain(|_, v| !v.is_null());
            // A default user an allowing plugin set (`run_as`) and the request names none:
            // who the program runs as.
            let unnamed = preq.exec.as_ref().is_none_or(|e| e.user.is_empty());
            if let (true, true, Some(u)) = (decision.allow, unnamed, &decision.limits.run_as) {
                m.insert("run_as".into(), u.clone().into());
            }
        }
        e.summary = Some(summary);
        e.decision = Some(if decision.allow { "allow" } else { "deny" }.into());
        e.plugin = decision.plugin.clone();
        e.reason = Some(decision.reason.clone());
        e.extra = extra;
        log.record(e).await.map(drop).map_err(|err| {
            tracing::error!(error = %err, rpc = self.rpc.name(), "decision record not written; request refused");
            ApiError::AuditUnavailable.into()
        })
    }

    /// The Exec call of a program an earlier daemon instance started (its record in the
    /// exec state directory), resumed so its outcome record is written under its original
    /// request id, caller and RPC once the program ends. Not a new admission: the decision
    /// was recorded by the daemon that started it. `started` is when it was admitted.
    pub(crate) fn resume(
        gate: &Gate,
        rpc: Rpc,
        request_id: String,
        caller: Caller,
        domain: String,
        started: Instant,
    ) -> Call {
        Call {
            caller,
            rpc,
            request_id,
            domain,
            limits: Limits::default(),
            audit: gate.audit.clone(),
            timer: None,
            started,
            decided: None,
            policy: None,
            error_reason: None,
            recording: None,
        }
    }

    /// Ends the call in this daemon instance without an outcome record (metrics only):
    /// its program keeps running and a later instance, which adopts it from the exec
    /// state directory, records the outcome once the program ends.
    pub(crate) fn hand_off(mut self) {
        self.audit = None;
        if let Some(t) = self.timer.take() {
            t.finish(Code::Unavailable);
        }
    }

    /// Records the outcome of a handler's result: OK, or the status it failed with.
    pub(crate) async fn end<T>(self, result: &Result<T, Status>, outcome: Outcome) {
        match result {
            Ok(_) => self.finish_with(Code::Ok, "", outcome).await,
            Err(st) => self.finish_status(st, outcome).await,
        }
    }

    /// Records `st` as the outcome and hands it back for the client:
    /// `return Err(call.fail(st).await)`.
    pub(crate) async fn fail(self, st: Status) -> Status {
        self.finish_status(&st, Outcome::default()).await;
        st
    }

    /// Records a failure with its reason.
    pub(crate) async fn finish_status(mut self, st: &Status, outcome: Outcome) {
        self.error_reason = st.get_details_error_info().map(|i| i.reason);
        self.finish_with(st.code(), st.message(), outcome).await;
    }

    /// Records the outcome (metrics and audit): the one place a call ends. `message`
    /// says why an OK exec ended early (a limit killed it), or what failed.
    pub(crate) async fn finish_with(mut self, code: Code, message: &str, outcome: Outcome) {
        if code != Code::Ok {
            tracing::debug!(rpc = self.rpc.name(), caller = %self.caller.id, ?code, message, "request failed");
        }
        if let Some(t) = self.timer.take() {
            t.finish(code);
        }
        if let Some(log) = self.audit.take() {
            let e = self.outcome_entry(code, message, outcome);
            if let Err(err) = log.record(e).await {
                tracing::error!(error = %err, request_id = %self.request_id, "outcome record not written");
            }
        }
    }

    fn outcome_entry(&self, code: Code, message: &str, o: Outcome) -> AuditEntry {
        let mut e = entry(
            EntryKind::Outcome,
            &self.request_id,
            &self.caller,
            self.rpc,
            &self.domain,
        );
        e.status = Some(code_name(code).into());
        e.message = (!message.is_empty()).then(|| message.to_owned());
        e.error_reason = self.error_reason.clone();
        e.exit_code = o.exit_code;
        e.signal = o.signal;
        e.bytes = o.bytes;
        e.duration_ms = Some(u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX));
        e.recording = self.recording.clone();
        e
    }
}

impl Drop for Call {
    /// A call dropped unfinished (the client went away mid-handler) still gets its
    /// outcome record, written in the background.
    fn drop(&mut self) {
        if let Some(log) = self.audit.take() {
            let e = self.outcome_entry(
                Code::Cancelled,
                "the call was abandoned",
                Outcome::default(),
            );
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = log.record(e).await;
                });
            }
        }
    }
}

#[cfg(test)]
#[path = "gate_tests.rs"]
mod tests;
