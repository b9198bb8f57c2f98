//! `atp ls DOM:/path`: a guest directory's entries (ListDir), like `ls -la`, or JSON.

use ocloudview_atp::pb;
use serde_json::json;

use super::{
    client::{ClientError, Connection, exit, explain},
    cp::guest_side,
    remote::Output,
};

/// Arguments of `atp ls`.
#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// DOM:/path to list; without it, the guests the daemon can reach.
    pub target: Option<String>,
    /// Most entries to list (the daemon's default 1000, at most 10000).
    #[arg(long, default_value_t = 0)]
    pub limit: u32,
    /// Output format.
    #[arg(long, short, value_enum, default_value = "text")]
    pub output: Output,
}

/// `ls -l`'s mode string.
fn mode_text(kind: i32, mode: u32) -> String {
    let t = match pb::EntryKind::try_from(kind) {
        Ok(pb::EntryKind::Dir) => 'd',
        Ok(pb::EntryKind::Symlink) => 'l',
        Ok(pb::EntryKind::Fifo) => 'p',
        Ok(pb::EntryKind::File) => '-',
        _ => '?',
    };
    let mut s = String::from(t);
    for (i, c) in "rwxrwxrwx".chars().enumerate() {
        s.push(if mode & (0o400 >> i) != 0 { c } else { '-' });
    }
    s
}

fn kind_name(kind: i32) -> &'static str {
    match pb::EntryKind::try_from(kind) {
        Ok(pb::EntryKind::Dir) => "dir",
        Ok(pb::EntryKind::Symlink) => "symlink",
        Ok(pb::EntryKind::Fifo) => "fifo",
        Ok(pb::EntryKind::File) => "file",
        _ => "other",
    }
}

/// `atp ls DOM:/path`.
pub async fn ls(
    conn: &Connection,
    target: &str,
    limit: u32,
    output: Output,
) -> Result<(), ClientError> {
    let Some((dom, path)) = guest_side(target) else {
        return Err(ClientError::new(exit::OTHER, "atp ls takes DOM:/path"));
    };
    let server = conn.server();
    let mut c = conn.connect().await?;
    let r = c
        .list_dir(pb::ListDirRequest {
            domain: dom.to_owned(),
            path: path.to_owned(),
            limit,
        })
        .await
        .map_err(|s| explain(&server, &s))?
        .into_inner();
    let entries = if r.entries.is_empty()
        && r.stat
            .as_ref()
            .is_some_and(|s| s.kind != pb::EntryKind::Dir as i32)
    {
        r.stat.clone().into_iter().collect()
    } else {
        r.entries.clone()
    };
    match output {
        Output::Json => {
            let list: Vec<_> = entries
                .iter()
                .map(|e| {
                    json!({"name": e.path, "kind": kind_name(e.kind), "mode": format!("{:04o}", e.mode),
                           "size": e.size, "mtime": e.mtime, "uid": e.uid, "gid": e.gid, "target": e.target})
                })
                .collect();
            let doc = json!({"path": path, "entries": list, "truncated": r.truncated});
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        }
        Output::Text => {
            for e in &entries {
                let link = if e.target.is_empty() {
                    String::new()
                } else {
                    format!(" -> {:?}", e.target)
                };
                let when = humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH
                        + std::time::Duration::from_secs(u64::try_from(e.mtime).unwrap_or(0)),
                );
                // Names are quoted when they hold anything a terminal would act on.
                let name = if e.path.chars().any(char::is_control) {
                    format!("{:?}", e.path)
                } else {
                    e.path.clone()
                };
                println!(
                    "{} {:>6} {:>6} {:>12} {when} {name}{link}",
                    mode_text(e.kind, e.mode),
                    e.uid,
                    e.gid,
                    e.size
                );
            }
            if r.truncated {
                eprintln!("(more entries than listed; --limit raises the bound)");
            }
        }
    }
    Ok(())
}
