//! Transports and endpoints: how the outside reaches the session core and
//! the hub. The gRPC service (`grpc`: the Session stream and History), the
//! health endpoints and the gRPC health reporter (`health`), the operator
//! endpoints (`admin`), the server API over HTTP JSON (`api`), `GET /metrics` (`metrics`), the WebSocket
//! transport (`websocket`) and the web chat page at `/` (`web`). Nothing
//! below this layer knows about them.

pub mod admin;
pub mod api;
pub mod grpc;
pub mod health;
pub mod metrics;
pub mod web;
pub mod websocket;
