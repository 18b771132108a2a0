//! `chat-server`: a horizontally scalable real-time chat server speaking
//! gRPC. Start one with [`server::start`]; see `docs/ARCHITECTURE.md` for the
//! map of modules.

pub mod admin;
pub mod auth;
pub mod backplane;
pub mod config;
pub mod error;
pub mod fuzzing;
pub mod grpc;
pub mod health;
pub mod hub;
pub mod limiter;
pub mod metrics;
pub mod notifier;
pub mod random;
pub mod server;
pub mod session;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod validate;

pub use config::Config;
pub use server::{RunningServer, start};
