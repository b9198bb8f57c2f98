//! Typed QGA commands and replies, one family per file. Replies tolerate unknown fields,
//! so newer agents keep working.

mod info;
mod osinfo;
mod ping;

pub use info::{AgentInfo, GuestInfo, SupportedCommand};
pub use osinfo::{GuestGetOsinfo, OsInfo};
pub use ping::GuestPing;
