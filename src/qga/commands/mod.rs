//! Typed QGA commands and replies, one family per file. Replies tolerate unknown fields,
//! so newer agents keep working; fields an older agent may omit are `Option`s.

mod access;
mod exec;
mod file;
mod info;
mod network;
mod osinfo;
mod ping;
mod storage;
mod system;

pub use access::*;
pub use exec::*;
pub use file::*;
pub use info::{AgentInfo, GuestInfo, SupportedCommand};
pub use network::*;
pub use osinfo::{GuestGetOsinfo, OsInfo};
pub use ping::{Empty, GuestPing};
pub use storage::*;
pub use system::*;
