//! Ansible through the `ocloudview.atp` collection (ansible/ocloudview/atp), for real:
//! ansible-core from the repo's `.venv` installs the collection from the repo path and runs
//! `ansible/playbooks/ci.yml` through the `ocloudview.atp.atp` connection plugin against
//! `atp serve` in front of a real qemu-ga: the host agent (`host`: everything the playbook
//! creates stays in the agent's temp directory, the controller's state in another) and the
//! Debian 12 TCG guest (`debian`: the same playbook, plus `ansible.builtin.systemd`
//! restarting nginx). Also: the shipped gRPC stubs match `proto/`, and an unknown guest or
//! a daemon that is not there make the host UNREACHABLE rather than failing a module.
//! Needs `.venv` with ansible/requirements.txt from `scripts/setup.sh`; without it the
//! tests fail, never skip.
#![allow(clippy::unwrap_used)] // a test fails by panicking, helpers included

#[path = "../common/mod.rs"]
mod common;

mod controller;
mod debian;
mod host;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The policy the playbook's denied tasks meet: no Exec argument with "forbidden", no
/// file RPC on a path with "/secret/"; everything else allowed.
pub(crate) const POLICY: &str = r#"fn authorize(req) {
  if req.rpc == "Exec" {
    for a in req.exec.args { if a.contains("forbidden") { return deny("forbidden commands are off limits"); } }
  }
  if (req.rpc == "ReadFile" || req.rpc == "WriteFile") && req.file.path.contains("/secret/") {
    return deny("secret files stay in the guest");
  }
  allow("the ansible test")
}
"#;
