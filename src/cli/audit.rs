//! `atp audit verify FILE [--head SEQ:HASH]` and `atp audit head FILE`.

use std::path::Path;

use anyhow::Context as _;
use ocloudview_atp::audit::{
    self, ChainBroken, VerifyError,
    head::{self, Anchor},
};

/// Checks the chain of an audit log, and that the log still holds the record of an
/// anchor: `--head SEQ:HASH` (exported earlier with `atp audit head`), else the log's own
/// head file when there is one. Prints `ok: N records, chain intact (last hash H)`; a
/// broken chain or a log cut before its anchor is a [`ChainBroken`] error (exit 65).
pub async fn verify(path: &Path, exported: Option<&str>) -> anyhow::Result<()> {
    let anchor = match exported {
        Some(text) => Some(Anchor::parse(text).map_err(|e| anyhow::anyhow!("--head: {e}"))?),
        None => head::read(&head::head_path(path))
            .with_context(|| format!("cannot read the head file of {}", path.display()))?,
    };
    let owned = path.to_owned();
    let checked = anchor.clone();
    let result = tokio::task::spawn_blocking(move || match &checked {
        Some(a) => audit::verify_against(&owned, a),
        None => audit::verify(&owned),
    })
    .await
    .context("audit verification stopped")?;
    match result {
        Ok(report) => {
            let against = anchor.map_or_else(String::new, |a| format!(", holds {a}"));
            println!(
                "ok: {} records, chain intact (last hash {}){against}",
                report.records, report.last_hash
            );
            Ok(())
        }
        Err(e) => Err(failure(path, e)),
    }
}

/// Prints the last record's `SEQ:HASH` after checking the chain, for keeping somewhere
/// the daemon's host cannot rewrite (`atp audit verify --head` checks against it).
pub async fn head(path: &Path) -> anyhow::Result<()> {
    let owned = path.to_owned();
    let report = tokio::task::spawn_blocking(move || audit::verify(&owned))
        .await
        .context("audit verification stopped")?;
    match report {
        Ok(r) => {
            println!("{}:{}", r.records, r.last_hash);
            Ok(())
        }
        Err(e) => Err(failure(path, e)),
    }
}

/// A broken chain is a [`ChainBroken`] naming the file (exit 65); anything else as is.
fn failure(path: &Path, e: VerifyError) -> anyhow::Error {
    match e {
        VerifyError::Broken { line, seq, reason } => ChainBroken {
            path: path.to_owned(),
            line,
            seq,
            reason,
        }
        .into(),
        e => e.into(),
    }
}
