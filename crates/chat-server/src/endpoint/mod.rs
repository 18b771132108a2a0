//! Transports and endpoints: how the outside reaches the session core and
//! the hub. The gRPC service (`grpc`: the Session stream and History), the
//! health endpoints and the gRPC health reporter (`health`), the operator
//! endpoints (`admin`) and `GET /metrics` (`metrics`). Nothing below this
//! layer knows about them.

pub mod admin;
pub mod grpc;
pub mod health;
pub mod metrics;
pub mod websocket;
