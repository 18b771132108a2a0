//! Health: liveness and readiness over HTTP (`/health/live`,
//! `/health/ready`) and the standard `grpc.health.v1.Health` service.

use crate::hub::Hub;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

/// `Readiness::serving` before the first check.
const UNKNOWN: u8 = 2;

/// How long a store check's answer is reused.
const STORE_CHECK_REUSE: Duration = Duration::from_secs(1);

/// How long one dependency check may take before it counts as down.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether this instance should receive new clients.
pub struct Readiness {
    hub: Arc<Hub>,
    stats: Arc<crate::backplane::BackplaneStats>,
    draining: AtomicBool,
    /// What gRPC health last said (`UNKNOWN` before the first check), so
    /// it is only updated on a change.
    serving: AtomicU8,
    grpc: tonic_health::server::HealthReporter,
    /// Held while gRPC health changes, so the last change made is what it
    /// says (a check that began before a drain cannot undo it).
    transition: tokio::sync::Mutex<()>,
    /// The store's last check and when it ran: however often (and by
    /// whomever) `/health/ready` is asked, the store is asked at most once
    /// per [`STORE_CHECK_REUSE`]; asks meanwhile wait for the one running.
    store_check: tokio::sync::Mutex<Option<(tokio::time::Instant, String)>>,
}

/// The `/health/ready` body.
#[derive(Debug, Serialize)]
pub struct ReadyReport {
    /// `ready` or `not_ready`.
    pub status: &'static str,
    /// Each check by name: `up`, `down` or `draining`.
    pub checks: BTreeMap<&'static str, String>,
    /// The backplane's counters (publishes, failures, drops, outages, …).
    pub backplane: BTreeMap<&'static str, u64>,
}

impl Readiness {
    /// Readiness of `hub`, mirrored into the gRPC health `reporter`.
    pub fn new(
        hub: Arc<Hub>,
        stats: Arc<crate::backplane::BackplaneStats>,
        grpc: tonic_health::server::HealthReporter,
    ) -> Self {
        Readiness {
            hub,
            stats,
            draining: AtomicBool::new(false),
            serving: AtomicU8::new(UNKNOWN),
            grpc,
            transition: tokio::sync::Mutex::new(()),
            store_check: tokio::sync::Mutex::new(None),
        }
    }

    /// Sets gRPC health for the server (`""`) and the chat service.
    async fn set_grpc(&self, serving: bool) {
        use chat_proto::v1::chat_service_server::ChatServiceServer;
        use tonic_health::ServingStatus;
        let _one_at_a_time = self.transition.lock().await;
        // A draining instance stays NOT_SERVING, whatever a check that began
        // before the drain found.
        let serving = serving && !self.draining.load(Ordering::SeqCst);
        if self.serving.swap(u8::from(serving), Ordering::SeqCst) == u8::from(serving) {
            return;
        }
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.grpc.set_service_status("", status).await;
        if serving {
            self.grpc
                .set_serving::<ChatServiceServer<super::grpc::ChatGrpc>>()
                .await;
        } else {
            self.grpc
                .set_not_serving::<ChatServiceServer<super::grpc::ChatGrpc>>()
                .await;
        }
    }

    /// Brings gRPC health in line with the checks; returns the report.
    pub async fn refresh(&self) -> ReadyReport {
        let report = self.report().await;
        self.set_grpc(report.status == "ready").await;
        self.hub.set_ready(report.status == "ready");
        report
    }

    /// Marks the instance as draining: not ready, NOT_SERVING, from now on.
    pub async fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.set_grpc(false).await;
    }

    /// Runs every check.
    pub async fn report(&self) -> ReadyReport {
        let mut checks = BTreeMap::new();
        let draining = self.draining.load(Ordering::SeqCst);
        checks.insert(
            "accepting",
            if draining { "draining" } else { "up" }.to_string(),
        );
        checks.insert("store", self.store_state().await);
        let backplane_state = if self.hub.backplane().is_healthy() {
            "up"
        } else {
            "down"
        };
        checks.insert("backplane", backplane_state.to_string());
        let ready = checks.values().all(|s| s == "up");
        ReadyReport {
            status: if ready { "ready" } else { "not_ready" },
            checks,
            backplane: self.stats.snapshot(),
        }
    }
}

impl Readiness {
    /// The store's state, from its last check if that is recent enough.
    async fn store_state(&self) -> String {
        let mut last = self.store_check.lock().await;
        if let Some((at, state)) = &*last
            && at.elapsed() < STORE_CHECK_REUSE
        {
            return state.clone();
        }
        let store = self.hub.store();
        let state = match tokio::time::timeout(CHECK_TIMEOUT, store.check()).await {
            Ok(Ok(())) => "up".to_string(),
            Ok(Err(e)) => format!("down: {e}"),
            Err(_) => "down: timed out".to_string(),
        };
        *last = Some((tokio::time::Instant::now(), state.clone()));
        state
    }
}

/// Re-runs the checks every `interval` until `shutdown`, so gRPC health
/// follows dependencies (e.g. NOT_SERVING while the backplane is away).
pub async fn watch(
    readiness: Arc<Readiness>,
    interval: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {
                readiness.refresh().await;
            }
        }
    }
}

/// The HTTP health routes.
pub fn routes(readiness: Arc<Readiness>) -> Router {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .with_state(readiness)
}

async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "live" }))
}

async fn ready(State(readiness): State<Arc<Readiness>>) -> (StatusCode, Json<ReadyReport>) {
    let report = readiness.refresh().await;
    let code = if report.status == "ready" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(report))
}

/// Asks the server listening on `addr` for `/health/ready` over HTTP/1.1
/// (in TLS when `tls`, without checking the certificate: see
/// [`crate::tls::connect_to_self`]); returns the status code and body. An
/// unspecified address (`0.0.0.0`, `::`) is asked on loopback.
pub async fn probe(
    addr: std::net::SocketAddr,
    tls: bool,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    let check = tls.then_some(crate::tls::SelfCheck::Any);
    get_own(addr, check, "/health/ready", None, timeout).await
}

/// GETs `path` from the server's own listener at `addr` (see [`probe`]),
/// over TLS checked as `tls` says if given, with `bearer` as the bearer
/// token if given (over TLS only with `SelfCheck::Exactly`: refused with
/// `SelfCheck::Any`).
pub async fn get_own(
    addr: std::net::SocketAddr,
    tls: Option<crate::tls::SelfCheck>,
    path: &str,
    bearer: Option<&str>,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    if bearer.is_some() && matches!(tls, Some(crate::tls::SelfCheck::Any)) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a credential goes over TLS only to the configured certificate",
        ));
    }
    let response = crate::http_client::HttpClient::new(addr)
        .tls(tls)
        .timeout(timeout)
        .send(&crate::http_client::HttpRequest::get(path).bearer(bearer))
        .await?;
    Ok((response.status, response.body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backplane::{BackplaneStats, LocalBackplane};
    use crate::hub::Rooms;
    use crate::store::GatedStore;
    use tonic_health::pb::health_server::Health;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

    fn readiness(store: Arc<GatedStore>) -> (Arc<Readiness>, impl Health + use<>) {
        let rooms = Arc::new(Rooms::new(false, None));
        let backplane = Arc::new(LocalBackplane::new(rooms.clone()));
        let hub = Arc::new(Hub::new(
            "t".into(),
            crate::config::Limits::default(),
            rooms,
            store,
            backplane,
        ));
        let reporter = tonic_health::server::HealthReporter::new();
        let service = tonic_health::server::HealthService::from_health_reporter(reporter.clone());
        let stats = Arc::new(BackplaneStats::default());
        (Arc::new(Readiness::new(hub, stats, reporter)), service)
    }

    async fn grpc_status(service: &impl Health) -> ServingStatus {
        let request = tonic::Request::new(HealthCheckRequest {
            service: String::new(),
        });
        let status = service.check(request).await.unwrap().into_inner().status;
        ServingStatus::try_from(status).unwrap()
    }

    /// Issue 15, report 8: a check that started before the drain cannot
    /// turn gRPC health back to SERVING after it.
    #[tokio::test]
    async fn a_check_that_ends_after_the_drain_leaves_not_serving() {
        let store = Arc::new(GatedStore::default());
        let (readiness, service) = readiness(store.clone());
        let before = tokio::spawn({
            let readiness = readiness.clone();
            async move { readiness.refresh().await }
        });
        while store.checks.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        readiness.drain().await;
        store.open.notify_waiters();
        before.await.unwrap();
        assert_eq!(grpc_status(&service).await, ServingStatus::NotServing);
    }

    /// Issue 15, report 8: `/health/ready` asked many times at once and in
    /// quick succession asks the store once.
    #[tokio::test]
    async fn ready_requests_share_one_store_check() {
        let store = Arc::new(GatedStore::default());
        let (readiness, _service) = readiness(store.clone());
        let asks: Vec<_> = (0..20)
            .map(|_| {
                let readiness = readiness.clone();
                tokio::spawn(async move { readiness.refresh().await.status })
            })
            .collect();
        while store.checks.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        store.open.notify_waiters();
        for ask in asks {
            assert_eq!(ask.await.unwrap(), "ready");
        }
        assert_eq!(
            readiness.refresh().await.status,
            "ready",
            "answered from the last check"
        );
        assert_eq!(store.checks.load(Ordering::SeqCst), 1);
    }
}
