//! Runs the test bed's Debian 12 guest as a libvirt domain of a session libvirtd, for
//! benchmarks that need a real libvirt guest (scripts/bench-ansible.sh `debian` mode):
//! prints `URI=...` and `DOMAIN=...`, then keeps both up until its stdin closes.
//!
//! `cargo run --release --example libvirt_debian`

use ocloudview_atp::testbed::{DebianImage, LibvirtSession};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let image = tokio::task::spawn_blocking(DebianImage::ensure).await??;
    let session = LibvirtSession::start().await?;
    let name = "atp-bench-debian";
    let dom = session.create_debian_domain(name, &image).await?;
    eprintln!(
        "libvirt_debian: agent up {:?} after create",
        dom.boot_time()
    );
    println!("URI={}", session.uri());
    println!("DOMAIN={name}");
    // Until whoever started us closes our stdin (or goes away).
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
    })
    .await?;
    drop(dom);
    drop(session);
    Ok(())
}
