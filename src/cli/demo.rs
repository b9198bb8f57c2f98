//! `atp demo`: the README's run command. Builds (or reuses) the demo guest — the tiny
//! busybox one by default, or the Debian 12 one with `--guest debian` — boots it under
//! QEMU, writes a config naming it `demo`, serves, and tears it all down on Ctrl-C.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context as _;
use ocloudview_atp::{
    config::Config,
    server,
    testbed::{BootOptions, DebianBootOptions, DebianImage, GuestImage, QemuGuest},
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
    /// Which guest to serve: the tiny busybox one (boots in about 3 s) or a real Debian 12
    /// with systemd and Debian's own qemu-guest-agent (about 10-20 s; first build ~1 min).
    #[arg(long, value_enum, default_value_t = DemoGuest::Busybox)]
    guest: DemoGuest,
}

/// The guest `atp demo` boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DemoGuest {
    /// Debian's cloud kernel with a busybox + qemu-ga initramfs.
    Busybox,
    /// Debian 12 from Debian's mirror (scripts/build-debian.sh).
    Debian,
}

impl DemoGuest {
    /// What the banner calls it, and a writable directory for the copy example.
    fn describe(self) -> (&'static str, &'static str) {
        match self {
            DemoGuest::Busybox => ("a tiny busybox guest", "/data"),
            DemoGuest::Debian => ("a Debian 12 guest with systemd", "/var/tmp"),
        }
    }
}

/// A built image of either guest.
enum Prepared {
    Busybox(GuestImage),
    Debian(DebianImage),
}

/// Builds (or finds) the image of `guest` and, unless `prepare`, boots it.
async fn boot(guest: DemoGuest, prepare: bool) -> anyhow::Result<Option<QemuGuest>> {
    eprintln!("atp demo: preparing the guest image (cached after the first build)...");
    let started = std::time::Instant::now();
    let image = match guest {
        DemoGuest::Busybox => {
            Prepared::Busybox(tokio::task::spawn_blocking(GuestImage::ensure).await??)
        }
        DemoGuest::Debian => {
            Prepared::Debian(tokio::task::spawn_blocking(DebianImage::ensure).await??)
        }
    };
    if prepare {
        let dir = match &image {
            Prepared::Busybox(i) => i.dir(),
            Prepared::Debian(i) => i.dir(),
        };
        println!(
            "guest image ready in {:.1?}: {}",
            started.elapsed(),
            dir.display()
        );
        return Ok(None);
    }
    let booted = match &image {
        Prepared::Busybox(i) => {
            eprintln!("atp demo: booting the demo guest under QEMU (TCG; a few seconds)...");
            QemuGuest::boot(i, BootOptions::default()).await?
        }
        Prepared::Debian(i) => {
            eprintln!("atp demo: booting Debian 12 under QEMU (TCG; about 10-20 s)...");
            QemuGuest::boot_debian(i, DebianBootOptions::default()).await?
        }
    };
    eprintln!(
        "atp demo: guest agent answered after {:.1?}",
        booted.boot_time()
    );
    Ok(Some(booted))
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let Some(guest) = boot(args.guest, args.prepare).await? else {
        return Ok(());
    };
    let (what, data) = args.guest.describe();

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
        "\natp demo is serving guest 'demo' ({what} under QEMU), with the shipped\n\
         policies and an audit log. Config, policies and audit.jsonl are in {dir}\n\n\
         In another terminal:\n  \
         export ATP_SERVER=unix://{sock}\n  \
         {atp} ls\n  \
         {atp} osinfo demo\n  \
         {atp} exec demo -- sh -c 'for i in 1 2 3; do echo $i; sleep 1; done'\n  \
         {atp} exec demo -- uname -a\n  \
         head -c 3000000 /dev/urandom > /tmp/blob && {atp} cp /tmp/blob demo:{data}/blob && {atp} cp demo:{data}/blob /tmp/blob.back\n  \
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
