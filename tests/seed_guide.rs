//! The seed guide (`qga-guide.zh.md`) as tests: its examples, its four scenarios and its
//! best practices, run with the blocking `QgaClient` against the real TCG guest through a
//! real libvirtd. Adapted only where busybox lacks a command; each adaptation says so.
#![allow(clippy::unwrap_used)] // a test fails by panicking, helpers included

mod common;

use std::time::Duration;

use base64::{Engine as _, engine::general_purpose::STANDARD};
use ocloudview_atp::{
    libvirt::{Domain, LibvirtManager},
    qga::{GuestExecCommand, QgaClient, QgaError},
    testbed::{Flavour, LibvirtDomain, LibvirtSession},
    transport::TransportError,
};
use sha2::Digest;

/// Starts a session libvirtd with one domain; the blocking API then runs on this thread.
fn bed(name: &str) -> (tokio::runtime::Runtime, LibvirtSession, LibvirtDomain) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (session, dom) = rt.block_on(async {
        let image = common::image().await;
        let session = LibvirtSession::start().await.unwrap();
        let dom = session
            .define_domain(name, &image, Flavour::Debian)
            .await
            .unwrap();
        (session, dom)
    });
    (rt, session, dom)
}

fn lookup(session: &LibvirtSession, name: &str) -> Domain {
    // 连接到 Libvirt + 查找虚拟机
    let libvirt = LibvirtManager::connect_uri(session.uri()).unwrap();
    libvirt.lookup_domain_by_name(name).unwrap()
}

#[test]
fn seed_guide_examples_and_scenarios() {
    let (_rt, session, _dom) = bed("atp-seed");
    let domain = lookup(&session, "atp-seed");
    let qga = QgaClient::new(&domain);
    qga.ping().unwrap();

    basic_usage_via_default_uri(&session);
    exec_three_ways(&qga);
    files(&qga);
    system_info(&qga);
    scenario_1_test_environment(&domain);
    scenario_2_diagnostics(&domain);
    scenario_3_config_update(&domain);
    scenario_4_cross_platform(&domain);
    best_practice_retries(&domain);
    best_practice_large_file(&domain);
    security_allowlist(&domain);
    troubleshooting_exit_codes(&qga);
}

/// `LibvirtManager::connect()` uses libvirt's default URI: run the guide's basic example
/// (`examples/guide_basic.rs`) with `LIBVIRT_DEFAULT_URI` pointing at the test daemon.
fn basic_usage_via_default_uri(session: &LibvirtSession) {
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "run",
            "--quiet",
            "--example",
            "guide_basic",
            "--",
            "atp-seed",
        ])
        .env("LIBVIRT_DEFAULT_URI", session.uri())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("退出码: 0"), "{stdout}");
    assert!(stdout.contains("QGA 版本: "), "{stdout}");
    assert!(stdout.contains("Debian GNU/Linux 12"), "{stdout}");
    assert!(stdout.contains("架构: Some(\"x86_64\")"), "{stdout}");
}

/// Polls `guest-exec-status` until the program has exited (bounded: 10 s), as the
/// guide's status loop does.
fn exited(qga: &QgaClient, pid: i64) -> ocloudview_atp::qga::commands::ExecStatus {
    let t0 = std::time::Instant::now();
    loop {
        let st = qga.exec_status(pid).unwrap();
        if st.exited {
            return st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "pid {pid} still running after 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn exec_three_ways(qga: &QgaClient) {
    // 方式 1: 简单 Shell 命令
    let result = qga.exec_shell("ls -la /tmp").unwrap();
    assert!(result.decode_stdout().unwrap().contains(".."));
    assert_eq!(result.exit_code, Some(0));

    // 方式 2: 手动构造命令 (busybox has no python3: /bin/echo stands in)
    let cmd = GuestExecCommand::simple("/bin/echo", vec!["Hello QGA".to_string()]);
    let pid = qga.exec(cmd).unwrap();
    let status = exited(qga, pid);
    assert_eq!(status.exit_code, Some(0));
    assert_eq!(status.decode_stdout().as_deref(), Some("Hello QGA\n"));

    // 方式 3: 执行并等待完成
    let cmd = GuestExecCommand::simple("/bin/sleep", vec!["1".to_string()]);
    let started = std::time::Instant::now();
    let result = qga.exec_and_wait(cmd, Duration::from_millis(500)).unwrap();
    assert_eq!(result.exit_code, Some(0));
    assert!(started.elapsed() >= Duration::from_secs(1));
}

fn files(qga: &QgaClient) {
    // 方式 1: 直接读取整个文件
    let content = qga.read_file("/etc/hostname").unwrap();
    assert_eq!(content.trim(), "qga-debian");

    // 方式 2: 手动控制 (no syslog in the guest: make a 200 KiB log first)
    qga.exec_shell("i=0; while [ $i -lt 4000 ]; do echo \"log line $i: the quick brown fox\"; i=$((i+1)); done > /data/syslog")
        .unwrap();
    let handle = qga.file_open("/data/syslog", Some("r")).unwrap();
    let mut total = Vec::new();
    loop {
        let result = qga.file_read(handle, Some(4096)).unwrap();
        if let Ok(data) = STANDARD.decode(&result.buf_b64) {
            total.extend_from_slice(&data);
        }
        if result.eof {
            break;
        }
    }
    qga.file_close(handle).unwrap();
    let text = String::from_utf8(total).unwrap();
    assert_eq!(text.lines().count(), 4000);
    assert!(text.ends_with("log line 3999: the quick brown fox\n"));

    // 写入文件 方式 1 / 方式 2
    qga.write_file("/tmp/test.txt", "Hello from QGA").unwrap();
    assert_eq!(qga.read_file("/tmp/test.txt").unwrap(), "Hello from QGA");
    let handle = qga.file_open("/tmp/output.log", Some("w")).unwrap();
    qga.file_write(handle, b"Line 1\n").unwrap();
    qga.file_write(handle, b"Line 2\n").unwrap();
    qga.file_close(handle).unwrap();
    assert_eq!(
        qga.read_file("/tmp/output.log").unwrap(),
        "Line 1\nLine 2\n"
    );
}

fn system_info(qga: &QgaClient) {
    let info = qga.get_info().unwrap();
    assert!(!info.version.is_empty());
    let enabled: Vec<_> = info
        .supported_commands
        .iter()
        .filter(|c| c.enabled)
        .map(|c| c.name.as_str())
        .collect();
    assert!(enabled.contains(&"guest-exec") && enabled.contains(&"guest-file-read"));
    let os_info = qga.get_osinfo().unwrap();
    assert_eq!(os_info.id.as_deref(), Some("debian"));
    assert!(os_info.pretty_name.unwrap().starts_with("Debian GNU/Linux"));
    assert!(os_info.kernel_release.unwrap().ends_with("cloud-amd64"));
    assert_eq!(os_info.machine.as_deref(), Some("x86_64"));
}

/// 场景 1: 自动化测试环境准备
fn scenario_1_test_environment(domain: &Domain) {
    let qga = QgaClient::new(domain);
    qga.ping().unwrap();
    qga.exec_shell("mkdir -p /tmp/test-env").unwrap();
    let test_script = "#!/bin/sh\necho \"test ran on $(hostname)\"\n";
    qga.write_file("/tmp/test-env/run.sh", test_script).unwrap();
    qga.exec_shell("chmod +x /tmp/test-env/run.sh").unwrap();
    let result = qga.exec_shell("/tmp/test-env/run.sh").unwrap();
    assert_eq!(
        result.decode_stdout().as_deref(),
        Some("test ran on qga-debian\n")
    );
}

/// 场景 2: 收集诊断信息 (busybox: /proc/cpuinfo for lscpu, plain `free` for `free -h`,
/// the generated /data/syslog for /var/log/syslog)
fn scenario_2_diagnostics(domain: &Domain) {
    let qga = QgaClient::new(domain);
    let mut report = String::new();
    let os_info = qga.get_osinfo().unwrap();
    report.push_str(&format!("OS: {:?}\n", os_info.pretty_name));
    let cpu_info = qga.exec_shell("cat /proc/cpuinfo").unwrap();
    if let Some(output) = cpu_info.decode_stdout() {
        report.push_str(&format!("\nCPU Info:\n{output}\n"));
    }
    let mem_info = qga.exec_shell("free").unwrap();
    if let Some(output) = mem_info.decode_stdout() {
        report.push_str(&format!("\nMemory:\n{output}\n"));
    }
    let logs = qga.read_file("/data/syslog").unwrap();
    report.push_str(&format!(
        "\nRecent Logs:\n{}\n",
        logs.lines().rev().take(50).collect::<Vec<_>>().join("\n")
    ));
    assert!(report.contains("OS: Some(\"Debian GNU/Linux 12 (bookworm)\")"));
    assert!(report.contains("processor\t: 0"));
    assert!(report.contains("Mem:"));
    assert!(report.contains("log line 3999") && !report.contains("log line 3949:"));
}

/// 场景 3: 配置文件管理 (no service manager in the guest: the reload step is `true`)
fn scenario_3_config_update(domain: &Domain) {
    let qga = QgaClient::new(domain);
    let config_path = "/data/app.conf";
    qga.write_file(config_path, "listen 80;\n").unwrap();
    let new_config = "listen 8080;\n";
    qga.exec_shell(&format!("cp {config_path} {config_path}.bak"))
        .unwrap();
    qga.write_file(config_path, new_config).unwrap();
    let verify_result = qga.exec_shell(&format!("cat {config_path}")).unwrap();
    assert_eq!(verify_result.decode_stdout().as_deref(), Some(new_config));
    assert_eq!(
        qga.read_file(&format!("{config_path}.bak")).unwrap(),
        "listen 80;\n"
    );
    assert!(qga.exec_shell("true").unwrap().success());
}

/// 场景 4: 跨平台脚本执行 (Linux branch: `pidof qemu-ga` checks the service; restarting
/// the agent would cut this very connection, so only the check runs)
fn scenario_4_cross_platform(domain: &Domain) {
    let qga = QgaClient::new(domain);
    let os_info = qga.get_osinfo().unwrap();
    let command = match (os_info.id.as_deref(), "check_service") {
        (Some("mswindows"), "check_service") => "sc query QEMU-GA",
        (Some("mswindows"), _) => "net stop QEMU-GA && net start QEMU-GA",
        (_, "check_service") => "pidof qemu-ga",
        (_, _) => "kill -HUP $(pidof qemu-ga)",
    };
    let result = qga.exec_shell(command).unwrap();
    assert!(result.success(), "{result:?}");
    assert!(!result.decode_stdout().unwrap().trim().is_empty());
}

/// 最佳实践 1: 错误处理 — timeout and retries, exactly as the guide's loop
fn best_practice_retries(domain: &Domain) {
    let qga = QgaClient::new(domain).with_timeout(60);
    let max_retries = 3;
    let mut attempts = 0;
    let mut outcome: Result<(), String> = Err("所有重试均失败".into());
    for attempt in 1..=max_retries {
        attempts = attempt;
        match qga.exec_shell("some-command") {
            Ok(result) => {
                if result.exit_code == Some(0) {
                    outcome = Ok(());
                    break;
                }
                assert_eq!(
                    result.exit_code,
                    Some(127),
                    "command not found in the guest"
                );
                assert!(result.decode_stderr().unwrap().contains("not found"));
            }
            Err(e) if attempt < max_retries => {
                // Not synchronisation: the guide's back-off between retries.
                std::thread::sleep(Duration::from_secs(2));
                let _ = e;
                continue;
            }
            Err(e) => {
                outcome = Err(e.to_string());
                break;
            }
        }
    }
    assert_eq!((attempts, outcome), (3, Err("所有重试均失败".to_string())));
    assert!(qga.exec_shell("true").unwrap().success());
}

/// 最佳实践 2: 大文件处理 — 1 MiB chunks, compared with the guest's own sha256sum
fn best_practice_large_file(domain: &Domain) {
    let qga = QgaClient::new(domain);
    qga.exec_shell("dd if=/dev/urandom of=/data/big.bin bs=1024 count=3500 2>/dev/null")
        .unwrap();
    let handle = qga.file_open("/data/big.bin", Some("r")).unwrap();
    let mut buffer = Vec::new();
    loop {
        let result = qga.file_read(handle, Some(1024 * 1024)).unwrap();
        if let Ok(data) = STANDARD.decode(&result.buf_b64) {
            buffer.extend_from_slice(&data);
        }
        if result.eof {
            break;
        }
    }
    qga.file_close(handle).unwrap();
    assert_eq!(buffer.len(), 3500 * 1024);
    let guest_sum = qga
        .exec_shell("sha256sum /data/big.bin")
        .unwrap()
        .decode_stdout()
        .unwrap();
    let local: String = sha2::Sha256::digest(&buffer)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(guest_sum.starts_with(&local));
    assert_eq!(qga.read_file_bytes("/data/big.bin").unwrap(), buffer);
}

/// 安全考虑: allowlist before anything reaches the guest
fn security_allowlist(domain: &Domain) {
    fn safe_command_execution(domain: &Domain, user_input: &str) -> Result<(), String> {
        let allowed_commands = ["status", "info", "version"];
        if !allowed_commands.contains(&user_input) {
            return Err("不允许的命令".into());
        }
        let qga = QgaClient::new(domain);
        qga.exec_shell(&format!("echo {user_input} > /data/allowlist.log"))
            .map(drop)
            .map_err(|e| e.to_string())
    }
    assert_eq!(
        safe_command_execution(domain, "rm -rf /data"),
        Err("不允许的命令".into())
    );
    safe_command_execution(domain, "status").unwrap();
    let qga = QgaClient::new(domain);
    assert_eq!(qga.read_file("/data/allowlist.log").unwrap(), "status\n");
}

/// 故障排查 问题 2: 检查退出码
fn troubleshooting_exit_codes(qga: &QgaClient) {
    let result = qga.exec_shell("false").unwrap();
    assert_eq!(result.exit_code, Some(1));
    let result = qga.exec_shell("ls /nonexistent").unwrap();
    assert_ne!(result.exit_code, Some(0));
    assert!(result.decode_stderr().unwrap().contains("No such file"));
}

/// Bad inputs through libvirt, each a clear error, the agent healthy afterwards.
#[test]
fn bad_inputs_through_libvirt() {
    let (_rt, session, dom) = bed("atp-bad");
    let domain = lookup(&session, "atp-bad");
    let qga = QgaClient::new(&domain).with_timeout(10);

    let err = qga.read_file("/no/such/file").unwrap_err();
    assert!(
        err.to_string().contains("No such file or directory"),
        "{err}"
    );
    let err = qga.file_read(999_999, None).unwrap_err();
    assert!(err.to_string().contains("not been found"), "{err}");
    let h = qga.file_open("/etc/hostname", None).unwrap();
    qga.file_close(h).unwrap();
    assert!(
        qga.file_read(h, None)
            .unwrap_err()
            .to_string()
            .contains("not been found")
    );

    // An oversized read count is clamped below libvirt's limits; libvirt stays healthy.
    qga.exec_shell("dd if=/dev/zero of=/data/z bs=1M count=12 2>/dev/null")
        .unwrap();
    let h = qga.file_open("/data/z", None).unwrap();
    let r = qga.file_read(h, Some(64 << 20)).unwrap();
    assert!(r.count > 0 && r.count <= 2 << 20, "{}", r.count);
    qga.file_close(h).unwrap();
    qga.ping().unwrap();

    // Large captured output over libvirt travels through guest files, not one reply.
    let r = qga.exec_shell("head -c 9000000 /data/z").unwrap();
    assert_eq!(r.stdout.len(), 9_000_000);
    qga.ping().unwrap();

    // Output that is not UTF-8: bytes kept, decoding lossy.
    let r = qga.exec_shell(r"printf 'a\377b'").unwrap();
    assert_eq!(r.stdout, b"a\xffb");
    assert_eq!(r.decode_stdout().unwrap(), "a\u{fffd}b");

    // Command not found in the guest; a signal-killed process.
    let r = qga
        .exec(GuestExecCommand::simple("no-such-tool", vec![]))
        .map(|pid| exited(&qga, pid));
    let st = r.unwrap();
    assert_eq!(st.exit_code, Some(127));
    assert!(st.decode_stderr().unwrap().contains("not found"));
    let r = qga.exec_shell("kill -9 $$").unwrap();
    assert_eq!((r.exit_code, r.signal), (None, Some(9)));

    // Agent not running (nothing listens on the socket).
    let gone = QgaClient::from_socket("/nonexistent/qga.sock");
    let err = gone.ping().unwrap_err();
    assert!(
        matches!(err, QgaError::Transport(TransportError::Connect { .. })),
        "{err:?}"
    );

    // The domain shut off.
    dom.destroy();
    let err = qga.ping().unwrap_err();
    assert!(
        matches!(
            err,
            QgaError::Transport(TransportError::DomainNotRunning(_))
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("not running"), "{err}");
}
