//! Small helpers that every crate of the workspace uses and that belong to
//! none of them: a lock that survives a panicking holder, a secret that
//! never prints, an error printed with its causes, and the wall clock in the units of the contract's
//! `_unix_ms` fields. Nothing here knows about chat.

#![forbid(unsafe_code)]

pub mod error;
pub mod secret;
pub mod sync;
pub mod time;

pub use error::Chain;
pub use secret::Secret;
pub use sync::lock;
pub use time::{now_unix_ms, now_unix_us};
