//! Issue 15 item 1: directory trees through a real `atp serve` (shipped policies, token
//! callers) into and out of ONE busybox TCG guest: `atp cp -r` both ways keeping modes,
//! mtimes and symbolic links; ListDir with a newline in a name; hostile trees in both
//! directions (`..`, absolute paths, links leading out, FIFOs, devices, a file that does
//! not match its announced size, a file swapped for a link while it is pulled), each
//! refused naming the entry with the destination untouched; overwrite; policy denials.
//! The cases are in `tree_copy/cases.rs` (`daemon_admin` runs the guest-dependent ones on Debian's GNU tar).
#![allow(clippy::unwrap_used)] // a test fails by panicking, helpers included

#[path = "tree_copy/bed.rs"]
mod bed;
#[path = "tree_copy/cases.rs"]
mod cases;
mod common;

use bed::{Bed, no_stage_left, sh};
use cases::*;

#[tokio::test]
async fn trees_through_the_daemon_with_hostile_entries_refused_both_ways() {
    common::init_logging();
    let image = common::image().await;
    let guest = ocloudview_atp::testbed::QemuGuest::boot(&image, Default::default())
        .await
        .unwrap();
    let bed = Bed::start(&guest.agent_socket()).await;
    let mut admin = bed.client("admin-token").await;
    sh(&mut admin, "mkdir -p /data && chmod 755 /data").await;

    round_trip(&bed, &mut admin).await;
    listing(&bed, &mut admin).await;
    hostile_client(&mut admin).await;
    overwrite(&mut admin).await;
    hostile_guest(&bed, &mut admin).await;
    swapped_while_pulled(&mut admin).await;
    policy(&bed).await;
    no_stage_left(&mut admin).await;
}
