//! `chat-bench`: the peer benchmark's load generator (`load.js` in
//! `shared/peers/socketio`) for the chat server, speaking gRPC through
//! `chat-client`. Same workload definition, same flags, same JSON fields.
//!
//! [`args`] turns flags into [`args::Params`]; [`scenario::run`] connects,
//! joins, sends on the open-loop [`schedule`], drains and measures;
//! [`report::Report`] is the one JSON object printed per run.

pub mod args;
pub mod clock;
pub mod metrics;
pub mod procstat;
pub mod report;
pub mod scenario;
pub mod schedule;

pub use args::{Cli, Params};
pub use report::Report;
pub use scenario::run;
