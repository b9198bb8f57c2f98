//! `atp audit verify FILE`.

use std::path::Path;

use anyhow::Context as _;
use ocloudview_atp::audit::{self, ChainBroken, VerifyError};

/// Checks the chain of an audit log. Prints `ok: N records, chain intact (last hash H)` on
/// success; a broken chain is a [`ChainBroken`] error naming the file, line and seq.
pub async fn verify(path: &Path) -> anyhow::Result<()> {
    let owned = path.to_owned();
    let result = tokio::task::spawn_blocking(move || audit::verify(&owned))
        .await
        .context("audit verification stopped")?;
    match result {
        Ok(report) => {
            println!(
                "ok: {} records, chain intact (last hash {})",
                report.records, report.last_hash
            );
            Ok(())
        }
        Err(VerifyError::Broken { line, seq, reason }) => Err(ChainBroken {
            path: path.to_owned(),
            line,
            seq,
            reason,
        }
        .into()),
        Err(e) => Err(e.into()),
    }
}
