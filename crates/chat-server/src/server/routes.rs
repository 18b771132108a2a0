//! Build step: what the listeners serve. The readiness checks (run once
//! here, so the first probe is already true) and the `grpc.health.v1`
//! service they report to; authentication, then the gRPC service (Session
//! and History), the WebSocket endpoint; and the HTTP
//! endpoints: health always; the web chat page (`/`, on the main listener
//! only); admin and `/metrics` on the main listener, or on their own admin
//! listener when `admin.listen` is set.

use super::ServerError;
use super::core::Core;
use crate::api::ServerApi;
use crate::auth::Authenticator;
use crate::config::Config;
use crate::endpoint::admin::{self, AdminAccess};
use crate::endpoint::api;
use crate::endpoint::grpc::ChatGrpc;
use crate::endpoint::health::{self, Readiness};
use crate::endpoint::metrics;
use crate::endpoint::web;
use crate::endpoint::websocket::{self, WebSocket};
use crate::limiter::Admission;
use chat_proto::v1::chat_service_server::ChatServiceServer;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::service::Routes;

/// What the main listener serves, and where the admin listener is.
pub(super) struct Served {
    /// gRPC services and HTTP endpoints on the main listener.
    pub routes: Routes,
    /// The admin listener's address, when `admin.listen` is set.
    pub admin_addr: Option<SocketAddr>,
    /// The readiness checks (the health watch refreshes them; the drain
    /// marks them draining).
    pub readiness: Arc<Readiness>,
    /// The WebSocket endpoint, which takes its connections off the
    /// listener before the HTTP server sees them.
    pub websocket: WebSocket,
}

/// Builds the services; binds and spawns the admin listener if configured.
pub(super) async fn build(
    config: &Config,
    core: &Core,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> Result<Served, ServerError> {
    let (reporter, grpc_health) = tonic_health::server::health_reporter();
    let readiness = Arc::new(Readiness::new(
        core.hub.clone(),
        core.stats.clone(),
        reporter,
    ));
    readiness.refresh().await;
    let auth = Arc::new(authenticator(config)?);
    let admission = Admission::new(config.limits.clone());
    let chat = ChatGrpc::new(
        core.hub.clone(),
        auth.clone(),
        admission.clone(),
        config.session.clone(),
        shutdown.clone(),
        tasks.clone(),
    );
    let chat =
        ChatServiceServer::new(chat).max_decoding_message_size(config.limits.max_frame_bytes);
    let websocket = WebSocket::new(websocket::Parts {
        hub: core.hub.clone(),
        auth: auth.clone(),
        admission: admission.clone(),
        timing: config.session.clone(),
        config: config.websocket.clone(),
        handshake_timeout: config.tls.handshake_timeout,
        max_message: config.limits.max_frame_bytes,
        shutdown: shutdown.clone(),
        tasks: tasks.clone(),
    });
    let access = AdminAccess::new(core.hub.clone(), &config.admin.token, auth);
    let operator = health::routes(readiness.clone())
        .merge(admin::routes(
            core.hub.clone(),
            access.clone(),
            readiness.clone(),
        ))
        .merge(api::routes(
            ServerApi::new(
                core.hub.clone(),
                config.limits.api_rate,
                config.limits.api_burst,
            ),
            access.clone(),
            api::Limits {
                max_text_bytes: config.limits.max_text_bytes,
                max_frame_bytes: config.limits.max_frame_bytes,
            },
        ))
        .merge(metrics::routes(
            metrics::Sources {
                hub: core.hub.clone(),
                backplane: core.stats.clone(),
                admission,
            },
            access,
        ));
    // With admin.listen, the operator endpoints move to their own listener
    // (health stays on both). The page is for the clients' listener.
    let (http, admin_addr) = match config.admin.listen {
        None => (operator, None),
        Some(at) => {
            let bound = serve_admin(at, operator, tasks, shutdown).await?;
            (health::routes(readiness.clone()), Some(bound))
        }
    };
    let http = http.merge(web::routes());
    Ok(Served {
        routes: Routes::from(http)
            .add_service(grpc_health)
            .add_service(chat),
        admin_addr,
        readiness,
        websocket,
    })
}

/// The authenticator `auth` describes, its keys loaded; says which mode is
/// on (loudly when auth is off).
fn authenticator(config: &Config) -> Result<Authenticator, ServerError> {
    let auth = Authenticator::new(&config.auth)?;
    if auth.is_enabled() {
        tracing::info!(algorithm = ?config.auth.algorithm, issuer = %config.auth.issuer, audience = %config.auth.audience, "authentication on: JWT bearer tokens required");
    } else {
        tracing::warn!(
            "AUTHENTICATION IS OFF: any client can claim any name. This is for development \
             on a loopback address only; configure auth.mode = \"jwt\" before exposing the server"
        );
    }
    Ok(auth)
}

/// Binds `at` and serves the operator endpoints there until shutdown.
async fn serve_admin(
    at: SocketAddr,
    operator: axum::Router,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> Result<SocketAddr, ServerError> {
    let listener = super::listener::bind(at).await?;
    let bound = super::listener::local_addr(&listener, at)?;
    let stop = shutdown.clone();
    tasks.spawn(async move {
        let served = axum::serve(listener, operator)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "admin listener failed");
        }
    });
    tracing::info!(addr = %bound, "admin listener (metrics, admin, health)");
    Ok(bound)
}
