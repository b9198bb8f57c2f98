//! What PushTree, PullTree and ListDir share: the refusal of an entry, and kinds from
//! mode bits.

use tonic::Status;

use crate::{pb, server::status::ApiError};

/// TREE_ENTRY_REFUSED (the client sent it) or GUEST_TREE_REFUSED (the guest's tree
/// holds it), naming the entry.
pub(super) fn entry_refused(entry: &str, message: String, from_guest: bool) -> Status {
    ApiError::TreeEntryRefused {
        entry: entry.to_owned(),
        message,
        from_guest,
    }
    .into()
}

/// The kind of a `stat` mode.
pub(super) fn kind_of_mode(mode: u32) -> pb::EntryKind {
    match mode & 0o170_000 {
        0o100_000 => pb::EntryKind::File,
        0o040_000 => pb::EntryKind::Dir,
        0o120_000 => pb::EntryKind::Symlink,
        0o010_000 => pb::EntryKind::Fifo,
        _ => pb::EntryKind::Other,
    }
}
