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

/// The shipped policies, plus the demo's own plugin, written next to the config.
const POLICIES: &[(&str, &str)] = &[
    (
        "00-baseline.rhai",
        include_str!("../../policies/00-baseline.rhai"),
    ),
    (
        "10-readonly-files.rhai",
        include_str!("../../policies/10-readonly-files.rhai"),
    ),
    (
        "20-seed-allowlist.rhai",
        include_str!("../../policies/20-seed-allowlist.rhai"),
    ),
    (
        "30-role-exec.rhai",
        include_str!("../../policies/30-role-exec.rhai"),
    ),
    (
        "35-admin-files.rhai",
        include_str!("../../policies/35-admin-files.rhai"),
    ),
    (
        "40-tasks.rhai",
        include_str!("../../policies/40-tasks.rhai"),
    ),
    (
        "90-demo-local-root.rhai",
        include_str!("../../policies/90-demo-local-root.rhai.demo"),
    ),
];

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
    let policy_dir = dir.join("policies");
    std::fs::create_dir_all(&policy_dir)?;
    for (name, src) in POLICIES {
        std::fs::write(policy_dir.join(name), src)?;
    }
    let config = Config::load(&config_path)?;

    let atp = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "atp".into());
    println!(
        "\natp demo is serving guest 'demo' (a tiny Debian guest under QEMU), with the shipped\n\
         policies and an audit log. Config, policies and audit.jsonl are in {dir}\n\n\
         In another terminal:\n  \
         export ATP_SERVER=unix://{sock}\n  \
         {atp} ls\n  \
         {atp} osinfo demo\n  \
         {atp} exec demo -- sh -c 'for i in 1 2 3; do echo $i; sleep 1; done'\n  \
         {atp} exec demo -- uname -a\n  \
         head -c 3000000 /dev/urandom > /tmp/blob && {atp} cp /tmp/blob demo:/data/blob && {atp} cp demo:/data/blob /tmp/blob.back\n  \
         {atp} run demo diagnostics section=memory\n  \
         {atp} audit verify {dir}/audit.jsonl\n\n\
         Any gRPC client works too (reflection is on; TCP callers are anonymous, so the\n\
         baseline policy denies them everything):\n  \
         npx buf curl --protocol grpc --http2-prior-knowledge --unix-socket {sock} -d '{{\"domain\":\"demo\"}}' http://localhost/ocloudview.atp.v1.GuestAgent/GetOsInfo\n\n\
         Press Ctrl-C to stop the daemon and the guest.\n",
        dir = dir.display(),
        sock = socket.display(),
    );
    let result = server::serve(config, super::shutdown_signal()).await;
    eprintln!("atp demo: stopping the guest");
    drop(guest);
    result.context("daemon stopped with an error")
}
