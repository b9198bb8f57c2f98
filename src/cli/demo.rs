//! `atp demo`: the README's run command. Builds (or reuses) the tiny demo guest, boots it
//! under QEMU, writes a config naming it `demo`, serves, and tears it all down on Ctrl-C.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context as _;
use ocloudview_atp::{
    config::Config,
    server,
    testbed::{BootOptions, GuestImage, QemuGuest},
};

/// The config template (`config/demo.toml`), embedded so the demo runs from anywhere.
const DEMO_CONFIG: &str = include_str!("../../config/demo.toml");

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// TCP address to serve on, besides the UNIX socket in the demo directory.
    #[arg(long, default_value = "127.0.0.1:50051")]
    tcp: SocketAddr,
    /// Directory for the demo's config and socket (default: a new temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Only build (or find) the guest image, print where it is, and exit.
    #[arg(long)]
    prepare: bool,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    eprintln!("atp demo: preparing the guest image (cached after the first build)...");
    let started = std::time::Instant::now();
    let image = tokio::task::spawn_blocking(GuestImage::ensure).await??;
    if args.prepare {
        println!(
            "guest image ready in {:.1?}: {}",
            started.elapsed(),
            image.dir().display()
        );
        return Ok(());
    }
    eprintln!("atp demo: booting the demo guest under QEMU (TCG; about 10 s)...");
    let guest = QemuGuest::boot(&image, BootOptions::default()).await?;
    eprintln!(
        "atp demo: guest agent answered after {:.1?}",
        guest.boot_time()
    );

    let tmp;
    let dir = match args.dir {
        Some(d) => d,
        None => {
            tmp = tempfile::Builder::new().prefix("atp-demo.").tempdir()?;
            tmp.path().to_owned()
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let socket = dir.join("atp.sock");
    let config_path = dir.join("atp.toml");
    let text = DEMO_CONFIG
        .replace("@SOCKET@", &socket.display().to_string())
        .replace("@TCP@", &args.tcp.to_string())
        .replace("@AGENT@", &guest.agent_socket().display().to_string());
    std::fs::write(&config_path, &text)?;
    let config = Config::load(&config_path)?;

    println!(
        "\natp demo is serving guest 'demo' (a tiny Debian guest under QEMU).\n\
         config: {cfg}\n\n\
         Try (npm install @bufbuild/buf gives buf; reflection is on):\n  \
         npx buf curl --protocol grpc --http2-prior-knowledge --list-methods http://{tcp}\n  \
         npx buf curl --protocol grpc --http2-prior-knowledge -d '{{\"domain\":\"demo\"}}' http://{tcp}/ocloudview.atp.v1.GuestAgent/Ping\n  \
         npx buf curl --protocol grpc --http2-prior-knowledge -d '{{\"domain\":\"demo\"}}' http://{tcp}/ocloudview.atp.v1.GuestAgent/GetOsInfo\n  \
         npx buf curl --protocol grpc --http2-prior-knowledge --unix-socket {sock} -d '{{\"domain\":\"demo\"}}' http://localhost/ocloudview.atp.v1.GuestAgent/GetAgentInfo\n\n\
         Press Ctrl-C to stop the daemon and the guest.\n",
        cfg = config_path.display(),
        tcp = args.tcp,
        sock = socket.display(),
    );
    let result = server::serve(config, super::shutdown_signal()).await;
    eprintln!("atp demo: stopping the guest");
    drop(guest);
    result.context("daemon stopped with an error")
}
