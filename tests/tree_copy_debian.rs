//! Issue 15 item 1 on a real distribution: the directory tree cases of `tree_copy` that
//! depend on the guest's tools, run on the Debian 12 guest (GNU tar, which opens files
//! with O_NOFOLLOW, GNU stat, dash as /bin/sh): `atp cp -r` both ways, ListDir,
//! overwrite, the guest's hostile trees, a file swapped for a link while it is
//! pulled, and a guest without `tar`. The daemon-side rules (the client's hostile trees, policies) do not depend on
//! the guest and run only in `tree_copy`.
#![allow(clippy::unwrap_used)] // a test fails by panicking, helpers included

#[path = "tree_copy/bed.rs"]
mod bed;
#[path = "tree_copy/cases.rs"]
mod cases;
mod common;

use bed::{Bed, no_stage_left, sh};
use cases::*;
use ocloudview_atp::testbed::{DebianBootOptions, DebianImage, QemuGuest};

#[tokio::test]
async fn trees_on_debian_with_gnu_tar() {
    common::init_logging();
    let image = tokio::task::spawn_blocking(DebianImage::ensure)
        .await
        .unwrap()
        .expect("Debian image build failed (run scripts/setup.sh)");
    let guest = QemuGuest::boot_debian(&image, DebianBootOptions::default())
        .await
        .unwrap();
    let bed = Bed::start(&guest.agent_socket()).await;
    let mut admin = bed.client("admin-token").await;
    sh(&mut admin, "mkdir -p /data && chmod 755 /data").await;
    let tar = sh(&mut admin, "tar --version | head -n 1").await;
    assert!(tar.contains("GNU tar"), "{tar}");

    round_trip(&bed, &mut admin).await;
    listing(&bed, &mut admin).await;
    overwrite(&mut admin).await;
    hostile_guest(&bed, &mut admin).await;
    swapped_while_pulled(&mut admin).await;
    no_tar(&mut admin).await;
    no_stage_left(&mut admin).await;
}
