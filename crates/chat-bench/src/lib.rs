//! `chat-bench`: the peer benchmark's load generator (`load.js` in
//! `shared/peers/socketio`) for the chat server, speaking gRPC through
//! `chat-client` (or, leaner, the generated client: [`raw`]) or WebSocket
//! ([`ws`]). Same workload definition, same flags, same JSON fields.
//!
//! [`args`] turns flags into [`args::Params`]; [`scenario::run`] connects,
//! joins, sends on the open-loop [`schedule`], drains and measures;
//! [`report::Report`] is the one JSON object printed per run.
//!
//! The helpers of `bench/run.sh` (report.js in the peer's folder):
//! [`slo`] is scenario C's pass rule, [`saturation`] its stepping rule and
//! [`summary`] the Markdown tables of a whole benchmark run.
//!
//! [`storm`] holds the storm workloads (`storm-join`, `storm-restart`):
//! many memberships asked for at once, and their rejoin after an instance
//! is killed.

pub mod args;
pub mod clock;
pub mod metrics;
pub mod procstat;
pub mod raw;
pub mod replies;
pub mod report;
pub mod saturation;
pub mod scenario;
pub mod schedule;
pub mod slo;
pub mod storm;
pub mod summary;
pub mod ws;

pub use args::{Cli, Params};
pub use report::Report;
pub use scenario::run;
