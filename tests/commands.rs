//! The typed system, storage, network and access commands against real agents: qemu-ga
//! on the host (read-only commands; the dangerous ones are blocked there) and one TCG
//! guest, where the state-changing ones run for real and the guest is shut down last.
#![allow(clippy::unwrap_used)] // a test fails by panicking, helpers included

mod common;

use std::{
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use ocloudview_atp::{
    qga::{AgentClient, Command, QgaError, commands::*},
    testbed::{BootOptions, HostAgent, QemuGuest},
    transport::socket::SocketTransport,
};

/// The host's clock in nanoseconds since the Unix epoch.
fn now_ns() -> i64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    i64::try_from(d.as_nanos()).unwrap()
}

/// Online CPUs of this host, from `/sys/devices/system/cpu/online` (e.g. `0-1,4`).
fn host_online_cpus() -> usize {
    let list = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    list.trim()
        .split(',')
        .map(|part| match part.split_once('-') {
            Some((a, b)) => b.parse::<usize>().unwrap() - a.parse::<usize>().unwrap() + 1,
            None => 1,
        })
        .sum()
}

/// Runs `cmd`, failing the test with the command name and the error.
async fn ok<C: Command>(c: &AgentClient, cmd: &C) -> C::Reply {
    match c.call(cmd).await {
        Ok(r) => r,
        Err(e) => panic!("{}: {e}", C::NAME),
    }
}

/// The agent's error description, failing the test if the call succeeded.
async fn agent_error<C: Command>(c: &AgentClient, cmd: &C) -> String {
    match c.call(cmd).await {
        Ok(_) => panic!("{} unexpectedly succeeded", C::NAME),
        Err(e @ QgaError::Agent { .. }) => e.to_string(),
        Err(e) => panic!("{}: expected an agent error, got {e:?}", C::NAME),
    }
}

fn assert_has_loopback(ifs: &[NetworkInterface]) {
    let lo = ifs
        .iter()
        .find(|i| i.name == "lo")
        .expect("no lo interface");
    assert!(lo.has_address(IpAddr::V4(Ipv4Addr::LOCALHOST)), "{lo:?}");
    let v4 = lo
        .ip_addresses
        .iter()
        .find(|a| a.ip_address == "127.0.0.1")
        .unwrap();
    assert_eq!(v4.ip_address_type, IpAddressType::Ipv4);
    assert_eq!(v4.prefix, 8);
}

#[tokio::test]
async fn read_only_commands_against_the_host_agent() {
    common::init_logging();
    let agent = HostAgent::start().unwrap();
    let c = AgentClient::new(SocketTransport::new(agent.socket()));

    let name = ok(&c, &GuestGetHostName).await;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(name.host_name, host.trim());

    let tz = ok(&c, &GuestGetTimezone).await;
    assert!(tz.offset.abs() <= 14 * 3600, "{tz:?}");
    let _users = ok(&c, &GuestGetUsers).await;

    let vcpus = ok(&c, &GuestGetVcpus).await;
    let online = vcpus.iter().filter(|v| v.online).count();
    assert_eq!(online, host_online_cpus(), "{vcpus:?}");
    assert!(vcpus.iter().all(|v| v.can_offline.is_some()), "{vcpus:?}");

    let ifs = ok(&c, &GuestNetworkGetInterfaces).await;
    assert_has_loopback(&ifs);

    let fs = ok(&c, &GuestGetFsinfo).await;
    assert!(fs.iter().all(|f| !f.mountpoint.is_empty()), "{fs:?}");
    let _disks = ok(&c, &GuestGetDisks).await;
    let blocks = ok(&c, &GuestGetMemoryBlockInfo).await;
    assert!(
        blocks.size > 0 && blocks.size.is_power_of_two(),
        "{blocks:?}"
    );
    let _mem = ok(&c, &GuestGetMemoryBlocks).await;

    let cpus = ok(&c, &GuestGetCpustats).await;
    assert!(
        cpus.iter()
            .any(|s| matches!(s, CpuStats::Linux(l) if l.cpu == 0 && l.idle > 0)),
        "{cpus:?}"
    );
    let _diskstats = ok(&c, &GuestGetDiskstats).await;

    let before = now_ns();
    let t = ok(&c, &GuestGetTime).await;
    let after = now_ns();
    assert!(
        t >= before - 1_000_000_000 && t <= after + 1_000_000_000,
        "agent {t}, host {before}..{after}"
    );

    assert_eq!(ok(&c, &GuestFsfreezeStatus).await, FsfreezeStatus::Thawed);

    // Blocked on a host agent: refused by the agent itself, and the connection stays usable.
    let err = c.call(&GuestFstrim::default()).await.unwrap_err();
    assert!(err.is_command_not_found(), "{err}");
    let err = c
        .call(&GuestShutdown {
            mode: Some(ShutdownMode::Halt),
        })
        .await
        .unwrap_err();
    assert!(err.is_command_not_found(), "{err}");
    c.ping().await.unwrap();
}

/// Wait until QEMU is gone: its QMP socket stops accepting connections.
async fn wait_for_qemu_exit(guest: &QemuGuest, limit: Duration) -> Duration {
    let start = Instant::now();
    while tokio::net::UnixStream::connect(guest.qmp_socket())
        .await
        .is_ok()
    {
        assert!(
            start.elapsed() < limit,
            "QEMU still running {limit:?} after guest-shutdown; console: {}",
            guest.console()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    start.elapsed()
}

#[tokio::test]
async fn state_changing_commands_in_a_tcg_guest() {
    common::init_logging();
    let guest = QemuGuest::boot(&common::image().await, BootOptions::default())
        .await
        .unwrap();
    let c = AgentClient::new(SocketTransport::new(guest.agent_socket()));

    // Identity and inventory of the busybox guest: 1 vCPU, no disks, only `lo`.
    assert_eq!(ok(&c, &GuestGetHostName).await.host_name, "qga-debian");
    let vcpus = ok(&c, &GuestGetVcpus).await;
    assert_eq!(vcpus.iter().filter(|v| v.online).count(), 1, "{vcpus:?}");
    assert_has_loopback(&ok(&c, &GuestNetworkGetInterfaces).await);
    assert_eq!(ok(&c, &GuestGetTimezone).await.offset, 0);
    assert!(ok(&c, &GuestGetUsers).await.is_empty());
    assert_eq!(ok(&c, &GuestGetCpustats).await.len(), 1);
    let _ = ok(&c, &GuestGetDiskstats).await;
    let _ = ok(&c, &GuestGetFsinfo).await;
    let _ = ok(&c, &GuestGetDisks).await;

    // Re-applying the current vCPU and memory-block states is harmless and exercises the
    // setters' argument encoding.
    assert_eq!(
        ok(
            &c,
            &GuestSetVcpus {
                vcpus: vcpus.clone()
            }
        )
        .await,
        1
    );
    let blocks = ok(&c, &GuestGetMemoryBlocks).await;
    let first = *blocks.iter().find(|b| b.online).unwrap();
    let res = ok(
        &c,
        &GuestSetMemoryBlocks {
            mem_blks: vec![first],
        },
    )
    .await;
    assert_eq!(res.len(), 1);
    assert_eq!(res[0].phys_index, first.phys_index);
    assert_eq!(res[0].response, MemoryBlockResponseType::Success, "{res:?}");

    // Clock: set a fixed time, read it back (qemu-ga runs /sbin/hwclock, which the
    // image links to busybox).
    let fixed: i64 = 1_700_000_000_000_000_000; // 2023-11-14T22:13:20Z
    let Empty {} = c.call(&GuestSetTime { time: Some(fixed) }).await.unwrap();
    let t = ok(&c, &GuestGetTime).await;
    assert!(
        (fixed..fixed + 10_000_000_000).contains(&t),
        "set {fixed}, read back {t}"
    );

    // Freeze and thaw. Always thaw before asserting anything about the freeze. The image
    // has only tmpfs/devtmpfs/proc/sysfs mounts, which qemu-ga does not freeze: 0 frozen.
    assert_eq!(ok(&c, &GuestFsfreezeStatus).await, FsfreezeStatus::Thawed);
    let frozen = c.call(&GuestFsfreezeFreeze).await;
    let status = c.call(&GuestFsfreezeStatus).await;
    let thawed = c.call(&GuestFsfreezeThaw).await;
    let frozen = frozen.unwrap();
    assert_eq!(frozen, 0, "the image has no freezable filesystem");
    assert_eq!(status.unwrap(), FsfreezeStatus::Thawed);
    assert_eq!(thawed.unwrap(), 0);
    let listed = c
        .call(&GuestFsfreezeFreezeList {
            mountpoints: Some(vec!["/tmp".into()]),
        })
        .await;
    let thawed = c.call(&GuestFsfreezeThaw).await;
    assert_eq!(thawed.unwrap(), listed.unwrap());
    assert_eq!(ok(&c, &GuestFsfreezeStatus).await, FsfreezeStatus::Thawed);

    // SSH keys for root. Before any add there is no ~/.ssh/authorized_keys and qemu-ga 7.2
    // says "failed to read '/root/.ssh/authorized_keys': ... No such file or directory";
    // the add creates ~/.ssh (0700) and the file itself.
    let root = || "root".to_owned();
    let err = agent_error(&c, &GuestSshGetAuthorizedKeys { username: root() }).await;
    assert!(err.contains("/root/.ssh/authorized_keys"), "{err}");
    let key1 =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq0ZlJ9mU4rA0yQqvK1yqg7ZQ3Vq8fQx0bqG2bqKxJq one@atp";
    let key2 =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBv7pZ3m9yqKc1u8cXr2vC0a4WmHk0QeR8n5sJq2WbQx two@atp";
    let add = |keys: &[&str], reset| GuestSshAddAuthorizedKeys {
        username: root(),
        keys: keys.iter().map(|k| (*k).to_owned()).collect(),
        reset,
    };
    let get = || GuestSshGetAuthorizedKeys { username: root() };
    // qemu-ga 7.2 lists the keys last line first, so compare them sorted.
    let keys = async || {
        let mut k = ok(&c, &get()).await.keys;
        k.sort();
        k
    };
    ok(&c, &add(&[key1], None)).await;
    assert_eq!(keys().await, [key1]);
    // Adding a key that is already there does not duplicate it.
    ok(&c, &add(&[key1, key2], None)).await;
    assert_eq!(ok(&c, &get()).await.keys, [key2, key1]);
    ok(&c, &add(&[key2], Some(true))).await;
    assert_eq!(keys().await, [key2]);
    let remove = |keys: &[&str]| GuestSshRemoveAuthorizedKeys {
        username: root(),
        keys: keys.iter().map(|k| (*k).to_owned()).collect(),
    };
    ok(&c, &remove(&[key2, key1])).await; // key1 is already gone: not an error
    assert!(keys().await.is_empty());
    let err = agent_error(
        &c,
        &GuestSshGetAuthorizedKeys {
            username: "nosuchuser".into(),
        },
    )
    .await;
    assert!(err.contains("nosuchuser"), "{err}");

    // Password: qemu-ga runs chpasswd, which busybox does not provide; qemu-ga 7.2 then
    // answers "cannot find 'passwd' program in PATH" (it names passwd but looks for
    // chpasswd) without changing anything. A guest with chpasswd succeeds.
    match c
        .call(&GuestSetUserPassword::plain("root", "atp-test-password"))
        .await
    {
        Ok(Empty {}) => {}
        Err(e) => {
            let e = e.to_string();
            assert!(e.contains("program in PATH"), "unexpected error: {e}");
            assert!(!e.contains("atp-test-password"), "{e}");
        }
    }

    // Last: power off. The agent sends nothing back on success.
    // The transport waits briefly for an error and counts silence (or the agent going
    // away) as success.
    let started = Instant::now();
    c.call_with_timeout(
        &GuestShutdown {
            mode: Some(ShutdownMode::Powerdown),
        },
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let gone = wait_for_qemu_exit(&guest, Duration::from_secs(30)).await;
    eprintln!("QEMU exited {gone:.2?} after guest-shutdown returned");
}
