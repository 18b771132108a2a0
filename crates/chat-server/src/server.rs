//! Starting and stopping one server instance: binds the listener, wires the
//! hub, backplane and store, serves gRPC and HTTP on the one port, and
//! drains gracefully when told to stop.

use crate::admin;
use crate::backplane::control::control_queue;
use crate::backplane::{Backplane, BackplaneStats, LocalBackplane, NatsBackplane, RedisBackplane};
use crate::config::{BackplaneKind, Config};
use crate::error::ServerError;
use crate::grpc::ChatGrpc;
use crate::health::{self, Readiness};
use crate::hub::{Hub, Rooms};
use crate::hub::{cluster, repair};
use crate::notifier;
use crate::store::{self, MessageStore};
use chat_proto::v1::chat_service_server::ChatServiceServer;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::service::Routes;

/// How often gRPC health re-runs the readiness checks.
const HEALTH_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// A server that is running. Cancel the shutdown token given to [`start`]
/// to stop it, then [`RunningServer::wait`] for it to finish draining.
pub struct RunningServer {
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    server_id: String,
    hub: Arc<Hub>,
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
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(ServerError::Task(e.to_string())),
        }
    }
}

/// Starts a server on `config`; it runs until `shutdown` is cancelled.
pub async fn start(
    config: Config,
    shutdown: CancellationToken,
) -> Result<RunningServer, ServerError> {
    config.validate()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: config.listen,
        source,
    })?;
    let server_id = if config.server_id.is_empty() {
        uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
    } else {
        config.server_id.clone()
    };

    let store: Arc<dyn MessageStore> = store::open(&config.store.url)
        .await
        .map_err(|e| ServerError::Store(e.to_string()))?;
    // Messages can be delivered in sequence order (with gaps repaired from
    // the store) when one store numbers them for every instance.
    let ordered = config.backplane == BackplaneKind::Local || store.is_shared();
    let (repair_tx, repair_rx) = tokio::sync::mpsc::channel(repair::QUEUE);
    let rooms = Arc::new(Rooms::new(ordered, Some(repair_tx)));
    let stats = Arc::new(BackplaneStats::default());
    let (control_tx, control_rx) = control_queue();
    let backplane: Arc<dyn Backplane> = match config.backplane {
        BackplaneKind::Local => Arc::new(LocalBackplane::new(rooms.clone())),
        BackplaneKind::Redis => Arc::new(
            RedisBackplane::start(
                config.redis.clone(),
                Arc::from(server_id.as_str()),
                rooms.clone(),
                control_tx,
                stats.clone(),
                shutdown.clone(),
            )
            .map_err(|e| ServerError::Backplane(e.to_string()))?,
        ),
        BackplaneKind::Nats => Arc::new(
            NatsBackplane::start(
                config.nats.clone(),
                Arc::from(server_id.as_str()),
                rooms.clone(),
                control_tx,
                stats.clone(),
                shutdown.clone(),
            )
            .await
            .map_err(|e| ServerError::Backplane(e.to_string()))?,
        ),
    };
    if config.backplane != BackplaneKind::Local && !store.is_shared() {
        tracing::warn!(
            store = store.name(),
            "the message store is per instance: each instance numbers a room's messages on its own, \
             so sequence numbers are not comparable across instances; use store.url = postgres://… \
             for several instances"
        );
    }
    let rooms_for_repair = rooms.clone();
    let hub = Arc::new(Hub::new(
        server_id.clone(),
        config.limits.clone(),
        rooms,
        store,
        backplane,
    ));

    let (reporter, health_service) = tonic_health::server::health_reporter();
    let readiness = Arc::new(Readiness::new(hub.clone(), stats.clone(), reporter));
    readiness.refresh().await;

    let auth = Arc::new(crate::auth::Authenticator::new(&config.auth).map_err(|e| {
        ServerError::Config(crate::config::ConfigError::Inconsistent(format!(
            "auth: {e}"
        )))
    })?);
    if auth.is_enabled() {
        tracing::info!(algorithm = ?config.auth.algorithm, issuer = %config.auth.issuer, audience = %config.auth.audience, "authentication on: JWT bearer tokens required");
    } else {
        tracing::warn!(
            "AUTHENTICATION IS OFF: any client can claim any name. This is for development \
             on a loopback address only; configure auth.mode = \"jwt\" before exposing the server"
        );
    }
    let sessions = TaskTracker::new();
    let admission = crate::limiter::Admission::new(config.limits.clone());
    let access = admin::AdminAccess::new(hub.clone(), &config.admin.token, auth.clone());
    let chat = ChatGrpc::new(
        hub.clone(),
        auth.clone(),
        admission.clone(),
        config.session.clone(),
        shutdown.clone(),
        sessions.clone(),
    );
    let chat =
        ChatServiceServer::new(chat).max_decoding_message_size(config.limits.max_frame_bytes);
    let operator = health::routes(readiness.clone())
        .merge(admin::routes(
            hub.clone(),
            access.clone(),
            readiness.clone(),
        ))
        .merge(crate::metrics::routes(
            crate::metrics::Sources {
                hub: hub.clone(),
                backplane: stats.clone(),
                admission,
            },
            access,
        ));
    // With admin.listen, the operator endpoints move to their own listener
    // (health stays on both).
    let (http, admin_addr) = match config.admin.listen {
        None => (operator, None),
        Some(at) => {
            let listener = tokio::net::TcpListener::bind(at)
                .await
                .map_err(|source| ServerError::Bind { addr: at, source })?;
            let bound = listener
                .local_addr()
                .map_err(|source| ServerError::Bind { addr: at, source })?;
            let stop = shutdown.clone();
            sessions.spawn(async move {
                let served = axum::serve(listener, operator)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "admin listener failed");
                }
            });
            tracing::info!(addr = %bound, "admin listener (metrics, admin, health)");
            (health::routes(readiness.clone()), Some(bound))
        }
    };
    let routes = Routes::from(http)
        .add_service(health_service)
        .add_service(chat);

    sessions.spawn(store::retain(
        hub.store().clone(),
        config.store.retention(),
        config.store.retention_interval,
        shutdown.clone(),
    ));
    sessions.spawn(repair::run(
        rooms_for_repair,
        hub.store().clone(),
        repair_rx,
        repair::TAIL_CHECK,
        shutdown.clone(),
    ));
    sessions.spawn(cluster::run(
        hub.clone(),
        control_rx,
        config.presence.heartbeat_interval,
        config.presence.expiry,
        shutdown.clone(),
    ));
    sessions.spawn(health::watch(
        readiness.clone(),
        HEALTH_CHECK_INTERVAL,
        shutdown.clone(),
    ));
    if config.notifications.enabled {
        sessions.spawn(notifier::run(
            hub.clone(),
            config.notifications.interval,
            config.notifications.text.clone(),
            shutdown.clone(),
        ));
    }

    let tls = if config.tls.enabled() {
        let tls = crate::tls::Reloading::open(&config.tls)
            .map_err(|e| ServerError::Config(crate::config::ConfigError::Inconsistent(e)))?;
        sessions.spawn(tls.clone().watch(shutdown.clone()));
        tracing::info!(cert = %config.tls.cert_file, mtls = !config.tls.client_ca_file.is_empty(), "tls on");
        Some(tls)
    } else {
        None
    };
    let incoming = crate::tls::incoming(
        listener,
        tls,
        config.tls.handshake_timeout,
        crate::limiter::TcpAdmission::new(&config.limits),
        shutdown.clone(),
    );
    let graceful = shutdown.clone();
    let serve = tonic::transport::Server::builder()
        .accept_http1(true)
        .max_concurrent_streams(Some(config.limits.max_streams_per_connection))
        .http2_keepalive_interval(Some(config.session.keepalive_interval))
        .http2_keepalive_timeout(Some(config.session.keepalive_timeout))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, async move { graceful.cancelled().await });

    let drain_timeout = config.shutdown.drain_timeout;
    let task_hub = hub.clone();
    let task = tokio::spawn(async move {
        tokio::pin!(serve);
        tokio::select! {
            result = &mut serve => result.map_err(ServerError::from),
            _ = shutdown.cancelled() => {
                readiness.drain().await;
                tracing::info!(drain_timeout = ?drain_timeout, "shutting down: draining sessions");
                drain(serve, sessions, drain_timeout, &task_hub).await
            }
        }
    });
    tracing::info!(%addr, server_id, "chat-server listening (gRPC and HTTP)");
    Ok(RunningServer {
        addr,
        admin_addr,
        server_id,
        hub,
        task,
    })
}

/// Lets sessions say goodbye and connections close, for at most `timeout`.
async fn drain<F>(
    serve: std::pin::Pin<&mut F>,
    sessions: TaskTracker,
    timeout: Duration,
    hub: &Hub,
) -> Result<(), ServerError>
where
    F: std::future::Future<Output = Result<(), tonic::transport::Error>>,
{
    sessions.close();
    let all_done = async {
        let served = serve.await;
        sessions.wait().await;
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
