//! The seed guide (`qga-guide.zh.md`) verbatim on a real distribution: every example, the
//! four scenarios and the best practices, exactly as the guide writes them (`python3`,
//! `lscpu`, `free -h`, `/var/log/syslog`, `systemctl reload nginx`, `sudo`, `su`), with the
//! blocking `QgaClient` against the Debian 12 guest through a real libvirtd. The busybox
//! sibling, `seed_guide.rs`, adapts them to that guest. One guest, one test: every step
//! runs in order on it.
#![allow(clippy::unwrap_used)] // a test fails by panicking, helpers included

mod common;

use std::time::{Duration, Instant};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use ocloudview_atp::{
    libvirt::{Domain, LibvirtManager},
    qga::{GuestExecCommand, QgaClient},
    testbed::{DEBIAN_HOSTNAME, DebianImage, LibvirtSession},
};
use sha2::Digest;

const NAME: &str = "atp-seed-deb";

#[test]
fn seed_guide_verbatim_on_debian() {
    common::init_logging();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (session, dom) = rt.block_on(async {
        let image = tokio::task::spawn_blocking(DebianImage::ensure)
            .await
            .unwrap()
            .expect("Debian image build failed (run scripts/setup.sh)");
        let session = LibvirtSession::start().await.unwrap();
        let dom = session.create_debian_domain(NAME, &image).await.unwrap();
        (session, dom)
    });
    eprintln!(
        "Debian domain: agent through libvirt after {:.2?}",
        dom.boot_time()
    );

    // 基本用法: 连接到 Libvirt + 查找虚拟机 + 创建 QGA 客户端 + 测试连通性
    let libvirt = LibvirtManager::connect_uri(session.uri()).unwrap();
    let domain = libvirt.lookup_domain_by_name(NAME).unwrap();
    let qga = QgaClient::new(&domain);
    qga.ping().unwrap();

    basic_usage_via_default_uri(&session);
    host_and_guest_checks(&session, &qga);
    exec_three_ways(&qga);
    files(&qga);
    system_info(&qga);
    scenario_1_test_environment(&domain);
    scenario_2_diagnostics(&domain);
    scenario_3_config_update(&domain);
    best_practice_retries(&domain);
    best_practice_large_file(&domain);
    best_practice_sudo(&domain);
    security_allowlist(&domain);
    troubleshooting(&qga);
    // Last: it restarts the agent this client talks to.
    scenario_4_cross_platform(&domain);
}

/// The guide's basic example (`examples/guide_basic.rs`) with libvirt's default URI.
fn basic_usage_via_default_uri(session: &LibvirtSession) {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["run", "--quiet", "--example", "guide_basic", "--", NAME])
        .env("LIBVIRT_DEFAULT_URI", session.uri())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("退出码: 0"), "{stdout}");
    assert!(
        stdout.contains("操作系统: Some(\"Debian GNU/Linux 12 (bookworm)\")"),
        "{stdout}"
    );
    assert!(stdout.contains("架构: Some(\"x86_64\")"), "{stdout}");
}

/// 前置条件: the guide's enable/start (its `apt install` was the image build: the guest has
/// no network); 验证: `virsh qemu-agent-command ... guest-ping` on the host, `systemctl
/// status qemu-guest-agent` and the port device in the guest.
fn host_and_guest_checks(session: &LibvirtSession, qga: &QgaClient) {
    for cmd in [
        "sudo systemctl enable qemu-guest-agent",
        "sudo systemctl start qemu-guest-agent",
    ] {
        let r = qga.exec_shell(cmd).unwrap();
        eprintln!("{cmd}: {:?}", r.decode_stderr());
        assert_eq!(r.exit_code, Some(0), "{cmd}: {r:?}");
    }

    let out = std::process::Command::new("virsh")
        .args(["-c", session.uri(), "qemu-agent-command", NAME])
        .arg(r#"{"execute":"guest-ping"}"#)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"{"return":{}}"#
    );

    let r = qga.exec_shell("systemctl status qemu-guest-agent").unwrap();
    let text = r.decode_stdout().unwrap();
    assert_eq!(r.exit_code, Some(0), "{text}");
    assert!(text.contains("Active: active (running)"), "{text}");
    let r = qga
        .exec_shell("ls -l /dev/virtio-ports/org.qemu.guest_agent.0")
        .unwrap();
    assert_eq!(r.exit_code, Some(0), "{r:?}");
    assert!(r.decode_stdout().unwrap().contains("-> ../vport"), "{r:?}");
}

fn exec_three_ways(qga: &QgaClient) {
    // 方式 1: 简单 Shell 命令
    let result = qga.exec_shell("ls -la /tmp").unwrap();
    assert!(result.decode_stdout().unwrap().contains(".."));
    assert_eq!(result.exit_code, Some(0));

    // 方式 2: 手动构造命令
    let cmd = GuestExecCommand::simple(
        "/usr/bin/python3",
        vec!["-c".to_string(), "print('Hello QGA')".to_string()],
    );
    let pid = qga.exec(cmd).unwrap();
    let t0 = Instant::now();
    let status = loop {
        let status = qga.exec_status(pid).unwrap();
        if status.exited {
            break status;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "python3 never exited"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.exit_code, Some(0), "{status:?}");
    assert_eq!(status.decode_stdout().as_deref(), Some("Hello QGA\n"));

    // 方式 3: 执行并等待完成
    let cmd = GuestExecCommand::simple("/bin/sleep", vec!["5".to_string()]);
    let started = Instant::now();
    let result = qga.exec_and_wait(cmd, Duration::from_millis(500)).unwrap();
    assert_eq!(result.exit_code, Some(0));
    assert!(started.elapsed() >= Duration::from_secs(5));
}

fn files(qga: &QgaClient) {
    // 读取文件 方式 1
    let content = qga.read_file("/etc/hostname").unwrap();
    assert_eq!(content.trim(), DEBIAN_HOSTNAME);

    // 读取文件 方式 2: the real /var/log/syslog (rsyslog), 4 KiB at a time
    let handle = qga.file_open("/var/log/syslog", Some("r")).unwrap();
    let mut total = Vec::new();
    let mut reads = 0;
    loop {
        let result = qga.file_read(handle, Some(4096)).unwrap();
        reads += 1;
        if let Ok(data) = STANDARD.decode(&result.buf_b64) {
            total.extend_from_slice(&data);
        }
        if result.eof {
            break;
        }
    }
    qga.file_close(handle).unwrap();
    let text = String::from_utf8_lossy(&total);
    assert!(
        reads > 2 && text.lines().count() > 50,
        "{reads} reads: {text}"
    );
    assert!(text.contains("systemd"), "{text}");

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
    assert!(info.version.starts_with("7.2"), "{}", info.version);
    let enabled: Vec<_> = info
        .supported_commands
        .iter()
        .filter(|c| c.enabled)
        .map(|c| c.name.as_str())
        .collect();
    assert!(enabled.contains(&"guest-exec") && enabled.contains(&"guest-file-read"));
    let os_info = qga.get_osinfo().unwrap();
    assert_eq!(
        os_info.pretty_name.as_deref(),
        Some("Debian GNU/Linux 12 (bookworm)")
    );
    assert!(os_info.kernel_release.unwrap().ends_with("cloud-amd64"));
    assert_eq!(os_info.machine.as_deref(), Some("x86_64"));
}

/// 场景 1: 自动化测试环境准备
fn scenario_1_test_environment(domain: &Domain) {
    let qga = QgaClient::new(domain);
    qga.ping().unwrap();
    qga.exec_shell("mkdir -p /tmp/test-env").unwrap();
    let test_script = include_str!("seed_guide_debian/test_script.sh");
    qga.write_file("/tmp/test-env/run.sh", test_script).unwrap();
    qga.exec_shell("chmod +x /tmp/test-env/run.sh").unwrap();
    let result = qga.exec_shell("/tmp/test-env/run.sh").unwrap();
    assert_eq!(result.exit_code, Some(0), "{result:?}");
    assert_eq!(
        result.decode_stdout(),
        Some(format!(
            "test ran on {DEBIAN_HOSTNAME} as root\npython 3\nactive\n"
        ))
    );
}

/// 场景 2: 收集诊断信息
fn scenario_2_diagnostics(domain: &Domain) {
    let qga = QgaClient::new(domain);
    let mut report = String::new();
    let os_info = qga.get_osinfo().unwrap();
    report.push_str(&format!("OS: {:?}\n", os_info.pretty_name));
    let cpu_info = qga.exec_shell("lscpu").unwrap();
    if let Some(output) = cpu_info.decode_stdout() {
        report.push_str(&format!("\nCPU Info:\n{output}\n"));
    }
    let mem_info = qga.exec_shell("free -h").unwrap();
    if let Some(output) = mem_info.decode_stdout() {
        report.push_str(&format!("\nMemory:\n{output}\n"));
    }
    let logs = qga.read_file("/var/log/syslog").unwrap();
    report.push_str(&format!(
        "\nRecent Logs:\n{}\n",
        logs.lines().rev().take(50).collect::<Vec<_>>().join("\n")
    ));
    assert!(report.contains("OS: Some(\"Debian GNU/Linux 12 (bookworm)\")"));
    assert!(
        report.contains("Architecture:") && report.contains("CPU(s):"),
        "{report}"
    );
    assert!(report.contains("Mem:") && report.contains("Mi"), "{report}");
    let recent = report.split("Recent Logs:\n").nth(1).unwrap();
    assert_eq!(recent.trim_end().lines().count(), 50, "{recent}");
    // What else df -h shows on a real distribution: the root disk.
    let df = qga.exec_shell("df -h").unwrap().decode_stdout().unwrap();
    assert!(
        df.lines()
            .any(|l| l.starts_with("/dev/vda") && l.ends_with(" /")),
        "{df}"
    );
}

/// 场景 3: 配置文件管理, on nginx's real site config; the reload must really apply it.
fn scenario_3_config_update(domain: &Domain) {
    fn update_config(domain: &Domain, config_path: &str, new_config: &str) -> String {
        let qga = QgaClient::new(domain);
        let backup_cmd = format!("cp {config_path} {config_path}.bak");
        let r = qga.exec_shell(&backup_cmd).unwrap();
        assert_eq!(r.exit_code, Some(0), "{r:?}");
        qga.write_file(config_path, new_config).unwrap();
        let verify_result = qga.exec_shell(&format!("cat {config_path}")).unwrap();
        let r = qga.exec_shell("systemctl reload nginx").unwrap();
        assert_eq!(r.exit_code, Some(0), "{r:?}");
        verify_result.decode_stdout().unwrap()
    }
    let path = "/etc/nginx/sites-enabled/default";
    let new_config =
        "server {\n  listen 127.0.0.1:8080;\n  location / { return 200 'atp-seed\\n'; }\n}\n";
    assert_eq!(update_config(domain, path, new_config), new_config);
    let qga = QgaClient::new(domain);
    assert!(
        qga.read_file(&format!("{path}.bak"))
            .unwrap()
            .contains("listen 80 default_server")
    );
    // nginx reloads asynchronously: poll its new listener (bounded).
    let fetch = "python3 -c \"import urllib.request as u; print(u.urlopen('http://127.0.0.1:8080/').read().decode(), end='')\"";
    let t0 = Instant::now();
    loop {
        let r = qga.exec_shell(fetch).unwrap();
        if r.exit_code == Some(0) {
            assert_eq!(r.decode_stdout().as_deref(), Some("atp-seed\n"));
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "reload not applied: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// 最佳实践 1: 错误处理 — timeout and retries, exactly as the guide's loop
fn best_practice_retries(domain: &Domain) {
    let qga = QgaClient::new(domain).with_timeout(60);
    let max_retries = 3;
    let mut attempts = 0;
    let mut last = None;
    for attempt in 1..=max_retries {
        attempts = attempt;
        match qga.exec_shell("some-command") {
            Ok(result) => {
                if result.exit_code == Some(0) {
                    panic!("some-command succeeded");
                }
                last = Some(result);
            }
            Err(e) if attempt < max_retries => {
                eprintln!("尝试 {attempt} 失败: {e}, 重试中...");
                std::thread::sleep(Duration::from_secs(2));
                continue;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(attempts, 3);
    let last = last.unwrap();
    assert_eq!(last.exit_code, Some(127), "dash: command not found");
    assert!(
        last.decode_stderr()
            .unwrap()
            .contains("some-command: not found")
    );
}

/// 最佳实践 2: 大文件处理 — 1 MiB chunks, compared with the guest's own sha256sum
fn best_practice_large_file(domain: &Domain) {
    fn read_large_file(domain: &Domain, path: &str) -> Vec<u8> {
        let qga = QgaClient::new(domain);
        let handle = qga.file_open(path, Some("r")).unwrap();
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
        buffer
    }
    let qga = QgaClient::new(domain);
    qga.exec_shell("head -c 3500000 /dev/urandom > /tmp/big.bin")
        .unwrap();
    let buffer = read_large_file(domain, "/tmp/big.bin");
    assert_eq!(buffer.len(), 3_500_000);
    let guest_sum = qga.exec_shell("sha256sum /tmp/big.bin").unwrap();
    let local: String = sha2::Sha256::digest(&buffer)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(guest_sum.decode_stdout().unwrap().starts_with(&local));
}

/// 最佳实践 3: 权限管理 — `sudo` and `su -c`, both present in the image.
fn best_practice_sudo(domain: &Domain) {
    let qga = QgaClient::new(domain);
    let command = "id -un";
    let sudo_cmd = format!("sudo {command}");
    let r = qga.exec_shell(&sudo_cmd).unwrap();
    assert_eq!(
        (r.exit_code, r.decode_stdout()),
        (Some(0), Some("root\n".into())),
        "{r:?}"
    );
    let su_cmd = format!("su -c '{command}'");
    let r = qga.exec_shell(&su_cmd).unwrap();
    assert_eq!(
        (r.exit_code, r.decode_stdout()),
        (Some(0), Some("root\n".into())),
        "{r:?}"
    );
}

/// 安全考虑: the allowlist stops the rest before anything reaches the guest; `status`
/// passes and runs (no such program in Debian: exit 127, an answer, not an error).
fn security_allowlist(domain: &Domain) {
    fn safe_command_execution(domain: &Domain, user_input: &str) -> Result<i32, String> {
        let allowed_commands = ["status", "info", "version"];
        if !allowed_commands.contains(&user_input) {
            return Err("不允许的命令".into());
        }
        let qga = QgaClient::new(domain);
        let r = qga.exec_shell(user_input).map_err(|e| e.to_string())?;
        Ok(r.exit_code.unwrap_or(-1))
    }
    assert_eq!(
        safe_command_execution(domain, "rm -rf /"),
        Err("不允许的命令".into())
    );
    assert_eq!(safe_command_execution(domain, "status"), Ok(127));
}

/// 故障排查 问题 2 and 3, as written (`/path/to/file` does not exist).
fn troubleshooting(qga: &QgaClient) {
    let result = qga.exec_shell("false").unwrap();
    assert_eq!(result.exit_code, Some(1));
    let test_read = qga
        .exec_shell("test -r /path/to/file && echo 'readable' || echo 'not readable'")
        .unwrap();
    assert_eq!(test_read.decode_stdout().as_deref(), Some("not readable\n"));
    let r = qga.exec_shell("chmod 644 /path/to/file").unwrap();
    assert_eq!(r.exit_code, Some(1));
    assert!(
        r.decode_stderr()
            .unwrap()
            .contains("No such file or directory")
    );
}

/// 场景 4: 跨平台脚本执行: `check_service`, then `restart_service`, which restarts the very
/// agent that runs it. The restart must really happen (a new main PID) and the agent must
/// answer through libvirt again.
fn scenario_4_cross_platform(domain: &Domain) {
    fn execute_cross_platform(
        domain: &Domain,
        task: &str,
    ) -> Result<ocloudview_atp::qga::ExecResult, ocloudview_atp::qga::QgaError> {
        let qga = QgaClient::new(domain);
        let os_info = qga.get_osinfo()?;
        let command = match os_info.id.as_deref() {
            Some("windows") => match task {
                "check_service" => "sc query QEMU-GA",
                "restart_service" => "net stop QEMU-GA && net start QEMU-GA",
                _ => unreachable!("Unknown task"),
            },
            _ => match task {
                "check_service" => "systemctl status qemu-guest-agent",
                "restart_service" => "systemctl restart qemu-guest-agent",
                _ => unreachable!("Unknown task"),
            },
        };
        qga.exec_shell(command)
    }
    let qga = QgaClient::new(domain);
    let main_pid = || {
        let r = qga
            .exec_shell("systemctl show -P MainPID qemu-guest-agent")
            .unwrap();
        r.decode_stdout().unwrap().trim().parse::<u32>().unwrap()
    };
    let r = execute_cross_platform(domain, "check_service").unwrap();
    assert_eq!(r.exit_code, Some(0), "{r:?}");
    assert!(r.decode_stdout().unwrap().contains("active (running)"));
    let before = main_pid();

    // The agent that started `systemctl restart` is stopped under it: its reply about the
    // exec's status, if any, comes from the new agent, which never heard of that pid.
    let outcome = execute_cross_platform(domain, "restart_service");
    eprintln!("restart_service through the agent it restarts: {outcome:?}");
    let t0 = Instant::now();
    while qga.ping().is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "agent never came back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let after = main_pid();
    assert_ne!(before, after, "qemu-guest-agent was not restarted");
}
