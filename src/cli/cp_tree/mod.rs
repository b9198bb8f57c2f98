//! `atp cp -r`: a directory tree into a guest (`push`, PushTree) or out of one
//! (`pull`, PullTree). Push: DST is the new tree's root (refused if it exists, unless
//! `--overwrite`). Pull: into DST, or DST/NAME when DST is a directory; nothing is kept
//! unless the whole tree arrived and checked.

mod pull;
mod push;

pub use pull::pull;
pub use push::push;

/// A local path's error as a client error (exit 66).
fn local_err(p: &std::path::Path, e: &std::io::Error) -> super::client::ClientError {
    super::client::ClientError::local(p, e)
}
