//! The seed guide's basic usage, as a program: connect to libvirt's default URI, find a
//! domain, and talk to its guest agent with the blocking [`QgaClient`].
//!
//! ```sh
//! LIBVIRT_DEFAULT_URI=qemu:///system cargo run --example guide_basic -- test-vm
//! ```

use ocloudview_atp::{libvirt::LibvirtManager, qga::QgaClient};

fn main() -> anyhow::Result<()> {
    let name = std::env::args().nth(1).unwrap_or_else(|| "test-vm".into());

    // 连接到 Libvirt / connect to libvirt
    let libvirt = LibvirtManager::connect()?;
    // 查找虚拟机 / find the domain
    let domain = libvirt.lookup_domain_by_name(&name)?;
    // 创建 QGA 客户端 / create the agent client
    let qga = QgaClient::new(&domain);
    // 测试连通性 / is the agent there?
    qga.ping()?;

    let result = qga.exec_shell("ls -la /tmp")?;
    if let Some(stdout) = result.decode_stdout() {
        println!("输出:\n{stdout}");
    }
    if let Some(exit_code) = result.exit_code {
        println!("退出码: {exit_code}");
    }

    let info = qga.get_info()?;
    println!("QGA 版本: {}", info.version);
    let enabled = info.supported_commands.iter().filter(|c| c.enabled).count();
    println!("支持的命令: {enabled} enabled");

    let os_info = qga.get_osinfo()?;
    println!("操作系统: {:?}", os_info.pretty_name);
    println!("内核版本: {:?}", os_info.kernel_release);
    println!("架构: {:?}", os_info.machine);
    Ok(())
}
