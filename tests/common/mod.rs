//! Shared helpers for the integration tests. Every test talks to real processes started
//! through `ocloudview_atp::testbed`; a missing prerequisite fails the test.
#![allow(dead_code)]

use std::{path::Path, sync::Once, time::Duration};

use ocloudview_atp::{pb::guest_agent_client::GuestAgentClient, testbed::GuestImage};
use tonic::transport::{Channel, Endpoint, Uri};

/// Logs to the test's captured output; `ATP_LOG=debug` for more.
pub fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_env("ATP_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// The cached guest image (built on first use).
pub async fn image() -> GuestImage {
    tokio::task::spawn_blocking(GuestImage::ensure)
        .await
        .unwrap()
        .expect("guest image build failed (run scripts/setup.sh)")
}

/// A gRPC client over a UNIX socket, retried until the daemon listens (bounded).
pub async fn grpc_client(socket: &Path) -> GuestAgentClient<Channel> {
    let path = socket.to_owned();
    for _ in 0..200 {
        if path.exists() {
            let p = path.clone();
            let ch = Endpoint::try_from("http://localhost")
                .unwrap()
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let p = p.clone();
                    async move {
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                            tokio::net::UnixStream::connect(p).await?,
                        ))
                    }
                }))
                .await;
            if let Ok(ch) = ch {
                return GuestAgentClient::new(ch);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("daemon never listened on {}", socket.display());
}
