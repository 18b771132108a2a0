//! Build step: the listening socket and what stands in front of it. Binding
//! (first, to fail fast), then TLS (reloaded when its files change) and the
//! TCP connection limits, counted as connections are accepted.

use super::ServerError;
use crate::config::Config;
use crate::limiter::TcpAdmission;
use crate::tls::{self, Divert, Incoming, Reloading};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Binds `addr`.
pub(super) async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

/// The address `listener` is bound to (port 0 resolved); `asked` for errors.
pub(super) fn local_addr(
    listener: &TcpListener,
    asked: SocketAddr,
) -> Result<SocketAddr, ServerError> {
    listener.local_addr().map_err(|source| ServerError::Bind {
        addr: asked,
        source,
    })
}

/// The accepted connections: admitted by the TCP limits, through the TLS
/// handshake when TLS is on (its reloader spawned into `tasks`), and those
/// that start as `divert` asks (the WebSocket endpoint) taken off.
pub(super) fn incoming(
    config: &Config,
    listener: TcpListener,
    divert: Arc<dyn Divert>,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> Result<Incoming, ServerError> {
    let tls = if config.tls.enabled() {
        let tls = Reloading::open(&config.tls)?;
        tasks.spawn(tls.clone().watch(shutdown.clone()));
        tracing::info!(cert = %config.tls.cert_file, mtls = !config.tls.client_ca_file.is_empty(), "tls on");
        Some(tls)
    } else {
        None
    };
    Ok(tls::incoming(
        listener,
        tls,
        config.tls.handshake_timeout,
        TcpAdmission::new(&config.limits),
        Some(divert),
        shutdown.clone(),
    ))
}
