//! `chat-server`: a horizontally scalable real-time chat server speaking
//! gRPC. Start one with [`server::start`].
//!
//! The modules are layers; each uses only the layers below it (checked by
//! the `layers` test, the table is [`layers::LAYERS`]; the picture is in
//! `docs/ARCHITECTURE.md`):
//!
//! | layer | modules |
//! |---|---|
//! | domain | `domain` (users, room names, validation, request errors, secrets) |
//! | configuration | `config` |
//! | the parts behind seams | `metrics` (building blocks), `telemetry`, `store`, `backplane`, `auth`, `limiter`, `tls`, `http_client` |
//! | the hub | `hub` (rooms, presence, repair, cluster, outboxes, notifications) |
//! | the session core | `session` (a client's session), `api` (the server API for applications) |
//! | transports and endpoints | `endpoint` (gRPC, health, admin, `/metrics`), `webhook` (events POSTed to applications), `fuzzing` |
//! | wiring | `server` |

#![forbid(unsafe_code)]

pub mod domain;

pub mod config;

pub mod auth;
pub mod backplane;
pub mod http_client;
pub mod limiter;
pub mod metrics;
pub mod store;
pub mod telemetry;
pub mod tls;

pub mod hub;

pub mod api;
pub mod session;

pub mod endpoint;
pub mod fuzzing;
pub mod webhook;

pub mod server;

pub mod layers;

pub use config::Config;
pub use server::{RunningServer, ServerError, start};
