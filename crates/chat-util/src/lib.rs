//! Small helpers that every crate of the workspace uses and that belong to
//! none of them: a lock that survives a panicking holder, an error printed
//! with its causes, and the wall clock in the units of the contract's
//! `_unix_ms` fields. Nothing here knows about chat.

pub mod error;
pub mod sync;
pub mod time;

pub use error::Chain;
pub use sync::lock;
pub use time::{now_unix_ms, now_unix_us};
