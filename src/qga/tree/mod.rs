//! Directory trees: the entry rules both directions share ([`check`]), the guest helpers
//! that pack, extract and list ([`guest`]), and the host-side tar writer ([`archive`]).

pub mod archive;
pub mod check;
pub mod guest;
