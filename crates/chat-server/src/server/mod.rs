//! Starting and stopping one server instance. [`start`] reads as the list
//! of its build steps; each step lives in its own module and owns its part:
//!
//! 1. `config.validate()`, then [`listener::bind`]: fail fast (a bad
//!    setting, a port in use) before connecting to anything.
//! 2. [`core::build`]: the store, then the rooms (whether they deliver in
//!    sequence order depends on the store being shared), then the
//!    backplane (it delivers into the rooms), then the hub over all three.
//! 3. [`routes::build`]: the readiness checks (run once, so the first probe
//!    is already true), authentication, then the gRPC service and the HTTP
//!    endpoints (on their own admin listener when `admin.listen` is set).
//! 4. [`tasks::spawn`]: retention, gap repair, the cluster exchange, the
//!    health watch and notifications, all in the one [`TaskTracker`] that
//!    also holds every session, so the drain waits for all of them.
//! 5. [`listener::incoming`]: TLS (reloaded as its files change) and the
//!    TCP connection limits in front of the listener; then serving.
//!
//! Stopping: cancelling the shutdown token marks the instance draining
//! (readiness fails, so load balancers move away), stops accepting, lets
//! every session say goodbye and every task end, for at most
//! `shutdown.drain_timeout` ([`drain`]).

mod core;
mod error;
mod listener;
mod routes;
mod tasks;

pub use error::ServerError;

use crate::config::Config;
use crate::hub::Hub;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A server that is running. Cancel the shutdown token given to [`start`]
/// to stop it, then [`RunningServer::wait`] for it to finish draining.
pub struct RunningServer {
    /// Where the listener is bound (port 0 resolved), for clients and tests.
    addr: SocketAddr,
    /// Where the admin listener is bound, when `admin.listen` is set.
    admin_addr: Option<SocketAddr>,
    /// This instance's id (configured, or generated at start).
    server_id: String,
    /// The instance's state, for inspection in tests and tools.
    hub: Arc<Hub>,
    /// Serves until shutdown, then drains; its result is the server's.
    task: JoinHandle<Result<(), ServerError>>,
}

impl RunningServer {
    /// The address the listener is bound to (port 0 resolved).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin listener's address, when `admin.listen` is set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// This instance's id.
    pub fn server_id(&self) -> &str {
        &self.server_id
    }

    /// The instance's hub (for inspection in tests and tools).
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Waits until the server has stopped: after shutdown and the drain, or
    /// on a transport failure.
    pub async fn wait(self) -> Result<(), ServerError> {
        self.task.await?
    }
}

/// Starts a server on `config`; it runs until `shutdown` is cancelled.
pub async fn start(
    config: Config,
    shutdown: CancellationToken,
) -> Result<RunningServer, ServerError> {
    config.validate()?;
    let listener = listener::bind(config.listen).await?;
    let addr = listener::local_addr(&listener, config.listen)?;
    let server_id = server_id(&config);
    // Every task the drain waits for: sessions and background loops alike.
    let tasks = TaskTracker::new();

    let core = core::build(&config, &server_id, &shutdown).await?;
    let served = routes::build(&config, &core, &tasks, &shutdown).await?;
    let readiness = served.readiness;
    tasks::spawn(
        &config,
        core.background,
        &core.hub,
        &readiness,
        &tasks,
        &shutdown,
    );
    let websocket = Arc::new(served.websocket);
    let incoming = listener::incoming(&config, listener, websocket, &tasks, &shutdown)?;

    let graceful = shutdown.clone();
    let serve = tonic::transport::Server::builder()
        .accept_http1(true)
        .max_concurrent_streams(Some(config.limits.max_streams_per_connection))
        .http2_keepalive_interval(Some(config.session.keepalive_interval))
        .http2_keepalive_timeout(Some(config.session.keepalive_timeout))
        .add_routes(served.routes)
        .serve_with_incoming_shutdown(incoming, async move { graceful.cancelled().await });

    let drain_timeout = config.shutdown.drain_timeout;
    let hub = core.hub.clone();
    let task = tokio::spawn(async move {
        tokio::pin!(serve);
        tokio::select! {
            result = &mut serve => result.map_err(ServerError::from),
            _ = shutdown.cancelled() => {
                readiness.drain().await;
                tracing::info!(drain_timeout = ?drain_timeout, "shutting down: draining sessions");
                drain(serve, tasks, drain_timeout, &hub).await
            }
        }
    });
    tracing::info!(%addr, server_id, "chat-server listening (gRPC and HTTP)");
    Ok(RunningServer {
        addr,
        admin_addr: served.admin_addr,
        server_id,
        hub: core.hub,
        task,
    })
}

/// The configured id, or a short random one.
fn server_id(config: &Config) -> String {
    if config.server_id.is_empty() {
        uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
    } else {
        config.server_id.clone()
    }
}

/// Lets sessions say goodbye, tasks end and connections close, for at most
/// `timeout`.
async fn drain<F>(
    serve: std::pin::Pin<&mut F>,
    tasks: TaskTracker,
    timeout: Duration,
    hub: &Hub,
) -> Result<(), ServerError>
where
    F: Future<Output = Result<(), tonic::transport::Error>>,
{
    tasks.close();
    let all_done = async {
        let served = serve.await;
        tasks.wait().await;
        served
    };
    match tokio::time::timeout(timeout, all_done).await {
        Ok(result) => {
            tracing::info!("drained; stopped");
            result.map_err(ServerError::from)
        }
        Err(_) => {
            tracing::warn!(
                sessions = hub.session_count(),
                "drain timeout reached; closing the remaining connections"
            );
            Ok(())
        }
    }
}
