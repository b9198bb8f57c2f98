//! The gRPC server: binds every configured listener, serves `GuestAgent`, health and
//! reflection on each, and shuts down gracefully when told to.

mod accept;
pub mod auth;
mod denials;
mod exec;
mod exec_dir_sweeps;
mod facts;
mod files;
mod gate;
mod metrics;
mod passthrough;
mod service;
pub mod status;
mod streams;
mod tasks;

use std::{future::Future, os::unix::fs::PermissionsExt, sync::Arc};

use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;
use tonic::{
    service::interceptor::InterceptedService,
    transport::{Certificate, Identity, Server, ServerTlsConfig},
};

pub use service::GuestAgentService;

use auth::Authenticator;

use crate::{
    config::{Config, Listen},
    guests::GuestRegistry,
    pb::{self, guest_agent_server::GuestAgentServer},
};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listener could not be bound.
    #[error("cannot listen on {listen}: {source}")]
    Bind {
        /// The listener.
        listen: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// Reflection could not be set up (a bad embedded descriptor: a build bug).
    #[error("reflection: {0}")]
    Reflection(String),
    /// The policy plugins do not load.
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    /// The audit log cannot be opened.
    #[error("audit log: {0}")]
    Audit(String),
    /// The audit log no longer holds the record its head file names: refused, so that a
    /// cut log is never continued silently.
    #[error("{0}")]
    AuditTampered(String),
    /// The transport failed while serving.
    #[error("server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

enum Bound {
    Unix(UnixListener),
    Tcp(TcpListener),
}

/// Binds a listener. A stale UNIX socket file is replaced; the new one gets mode 0660.
async fn bind(listen: &Listen) -> Result<Bound, ServeError> {
    let err = |source| ServeError::Bind {
        listen: listen.to_string(),
        source,
    };
    match listen {
        Listen::Unix(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(err)?;
            }
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
                _ => {}
            }
            let l = UnixListener::bind(path).map_err(err)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(err)?;
            Ok(Bound::Unix(l))
        }
        Listen::Tcp(addr) => Ok(Bound::Tcp(TcpListener::bind(addr).await.map_err(err)?)),
    }
}

/// Runs the daemon until `shutdown` completes, then stops accepting, reports NOT_SERVING,
/// ends open streams with UNAVAILABLE, waits up to the grace period for calls to finish
/// and closes the guest handles it still holds.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
    if let Some(addr) = config.metrics_listen {
        metrics::install(addr).map_err(|e| ServeError::Bind {
            listen: format!("metrics http://{addr}"),
            source: std::io::Error::other(e),
        })?;
        tracing::info!(listen = %addr, "serving Prometheus metrics at /metrics");
    }
    let guests = Arc::new(GuestRegistry::from_config(&config));
    let token = CancellationToken::new();
    let gate = build_gate(&config, &token).await?;
    let audit = gate.audit.clone();
    let service = GuestAgentService::new(guests, token.clone(), &config, gate);
    let mtls = config
        .tls
        .as_ref()
        .is_some_and(|t| t.client_ca_pem.is_some());
    let auth = Authenticator::new(config.tokens.clone(), mtls);

    let (health, health_svc) = tonic_health::server::health_reporter();
    health
        .set_serving::<GuestAgentServer<GuestAgentService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;

    let mut bound = Vec::new();
    for l in &config.listen {
        bound.push((l.to_string(), bind(l).await?));
    }

    let limits = &config.limits;
    check_fd_budget(bound.len(), limits.max_connections);
    let mut servers = tokio::task::JoinSet::new();
    for (name, listener) in bound {
        // A peer that does not answer a keepalive ping within the handshake timeout is
        // dropped, so a connection cannot hold its slot after its client is gone.
        let mut builder = Server::builder()
            .http2_keepalive_interval(Some(limits.http2_keepalive))
            .http2_keepalive_timeout(Some(limits.handshake_timeout));
        let tls_on = matches!(listener, Bound::Tcp(_)) && config.tls.is_some();
        if let (Bound::Tcp(_), Some(tls)) = (&listener, &config.tls) {
            let mut t = ServerTlsConfig::new()
                .identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem))
                .timeout(limits.handshake_timeout);
            if let Some(ca) = &tls.client_ca_pem {
                t = t.client_ca_root(Certificate::from_pem(ca));
            }
            builder = builder.tls_config(t).map_err(|e| ServeError::Bind {
                listen: name.clone(),
                source: std::io::Error::other(e),
            })?;
        }
        let router = builder
            .add_service(health_svc.clone())
            .add_service(reflection.clone())
            .add_service(InterceptedService::new(
                GuestAgentServer::new(service.clone()),
                auth.clone(),
            ));
        let stop = token.clone().cancelled_owned();
        tracing::info!(listen = %name, tls = tls_on, max_connections = limits.max_connections, "serving");
        let (cap, handshake) = (limits.max_connections, limits.handshake_timeout);
        servers.spawn(async move {
            match listener {
                Bound::Unix(l) => {
                    let incoming = accept::incoming(l, name, cap, handshake, false);
                    router.serve_with_incoming_shutdown(incoming, stop).await
                }
                Bound::Tcp(l) => {
                    let incoming = accept::incoming(l, name, cap, handshake, tls_on);
                    router.serve_with_incoming_shutdown(incoming, stop).await
                }
            }
        });
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
    if tokio::time::timeout(config.shutdown_grace, drain)
        .await
        .is_err()
    {
        tracing::warn!(grace = ?config.shutdown_grace, "connections still open after the grace period; closing them");
        servers.abort_all();
    } else {
        tracing::info!("all connections drained");
    }
    service.close_parked().await;
    if let (Some(b), Some(a)) = (&service.shared.gate.denials, &audit)
        && let Some(left_out) = b.take_pending()
    {
        gate::record_suppressed(a, left_out).await;
    }
    if let Some(a) = audit {
        a.close().await;
    }
    for l in &config.listen {
        if let Listen::Unix(p) = l {
            let _ = std::fs::remove_file(p);
        }
    }
    result
}

/// Warns when the open-file limit cannot hold every listener's connection cap: under load
/// the accept loops would then pause on EMFILE rather than stop at `max_connections`.
fn check_fd_budget(listeners: usize, max_connections: usize) {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse::<usize>().ok())
        });
    let need = listeners.saturating_mul(max_connections).saturating_add(64);
    if let Some(nofile) = soft
        && nofile < need
    {
        tracing::warn!(
            nofile,
            need,
            "the open-file limit is below limits.max_connections × listeners + 64; raise \
             LimitNOFILE= or lower max_connections"
        );
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
