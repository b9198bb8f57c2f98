//! The shape every typed QGA command has.

use serde::{Serialize, de::DeserializeOwned};

/// A QGA command: serialises to its `arguments` object and names its reply type.
///
/// A command without arguments is a unit struct; it serialises to `null` and is sent
/// without an `arguments` member.
pub trait Command: Serialize {
    /// The wire name, e.g. `guest-ping`.
    const NAME: &'static str;
    /// What `return` holds on success.
    type Reply: DeserializeOwned;
    /// False for commands that never answer on success (`guest-shutdown`,
    /// `guest-suspend-*`: QGA's `success-response: false`).
    const SUCCESS_RESPONSE: bool = true;
}
