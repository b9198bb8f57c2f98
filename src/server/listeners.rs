//! The daemon's listeners: binding each configured address, building its router
//! (keepalive, TLS on TCP, the services the daemon gives), then serving it through the
//! connection-capped accept loop.

use std::{os::unix::fs::PermissionsExt, time::Duration};

use tokio::net::{TcpListener, UnixListener};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig, server::Router};

use super::{ServeError, accept};
use crate::config::{Limits, Listen, TlsConfig};

/// A bound listening socket.
pub(super) enum Bound {
    Unix(UnixListener),
    Tcp(TcpListener),
}

/// Binds a listener. A stale UNIX socket file is replaced; the new one gets mode 0660.
pub(super) async fn bind(listen: &Listen) -> Result<Bound, ServeError> {
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

/// One bound listener with its router, ready to serve.
pub(super) struct Listener {
    name: String,
    bound: Bound,
    router: Router,
    tls_on: bool,
    max_connections: usize,
    handshake_timeout: Duration,
}

impl Listener {
    /// Builds the router of the bound listener `name`: keepalive, TLS (from `tls`, on
    /// TCP only), and the services `routes` adds (the same on every listener).
    pub(super) fn new(
        name: String,
        listener: Bound,
        tls: Option<&TlsConfig>,
        limits: &Limits,
        routes: &impl Fn(Server) -> Router,
    ) -> Result<Self, ServeError> {
        // A peer that does not answer a keepalive ping within the handshake timeout is
        // dropped, so a connection cannot hold its slot after its client is gone.
        let mut builder = Server::builder()
            .http2_keepalive_interval(Some(limits.http2_keepalive))
            .http2_keepalive_timeout(Some(limits.handshake_timeout));
        let tls_on = matches!(listener, Bound::Tcp(_)) && tls.is_some();
        if let (Bound::Tcp(_), Some(tls)) = (&listener, tls) {
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
        let router = routes(builder);
        Ok(Self {
            name,
            bound: listener,
            router,
            tls_on,
            max_connections: limits.max_connections,
            handshake_timeout: limits.handshake_timeout,
        })
    }

    /// Serves until `stop` completes, then stops accepting and lets open calls finish.
    pub(super) async fn serve(
        self,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), tonic::transport::Error> {
        let Self {
            name,
            bound,
            router,
            tls_on,
            max_connections: cap,
            handshake_timeout: handshake,
        } = self;
        tracing::info!(listen = %name, tls = tls_on, max_connections = cap, "serving");
        match bound {
            Bound::Unix(l) => {
                let incoming = accept::incoming(l, name, cap, handshake, false);
                router.serve_with_incoming_shutdown(incoming, stop).await
            }
            Bound::Tcp(l) => {
                let incoming = accept::incoming(l, name, cap, handshake, tls_on);
                router.serve_with_incoming_shutdown(incoming, stop).await
            }
        }
    }
}

/// Warns when the open-file limit cannot hold every listener's connection cap: under load
/// the accept loops would then pause on EMFILE rather than stop at `max_connections`.
pub(super) fn check_fd_budget(listeners: usize, max_connections: usize) {
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
