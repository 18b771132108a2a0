//! The chat server's integration tests: one test binary, one module per
//! area, all sharing the harness in [`common`] (compiled once).
//!
//! `cargo test -p chat-server --test it` runs them all; a module or a test
//! is picked by name, e.g. `cargo test -p chat-server --test it cluster::`
//! or `… --test it chaos -- --nocapture`. `CHAT_TEST_LOG=1` shows the
//! servers' logs in a failing test's output (see `common::log`).

#![forbid(unsafe_code)]

mod common;

mod api;
mod auth;
mod binary;
mod browser;
mod chaos;
mod chat;
mod cluster;
mod compose;
mod dashboard;
mod hostile;
mod lifecycle;
mod limits;
mod log_level;
mod metrics;
mod store;
mod storm;
mod tls;
mod traces;
mod typescript;
mod web;
mod webhook;
mod websocket;
