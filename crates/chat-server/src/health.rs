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
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long one dependency check may take before it counts as down.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether this instance should receive new clients.
pub struct Readiness {
    hub: Arc<Hub>,
    draining: AtomicBool,
    grpc: tonic_health::server::HealthReporter,
}

/// The `/health/ready` body.
#[derive(Debug, Serialize)]
pub struct ReadyReport {
    /// `ready` or `not_ready`.
    pub status: &'static str,
    /// Each check by name: `up`, `down` or `draining`.
    pub checks: BTreeMap<&'static str, String>,
}

impl Readiness {
    /// Readiness of `hub`, mirrored into the gRPC health `reporter`.
    pub fn new(hub: Arc<Hub>, grpc: tonic_health::server::HealthReporter) -> Self {
        Readiness {
            hub,
            draining: AtomicBool::new(false),
            grpc,
        }
    }

    /// Marks the instance as serving (at start).
    pub async fn serving(&self) {
        use chat_proto::v1::chat_service_server::ChatServiceServer;
        self.grpc
            .set_serving::<ChatServiceServer<crate::grpc::ChatGrpc>>()
            .await;
        self.grpc
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
    }

    /// Marks the instance as draining: not ready, NOT_SERVING, from now on.
    pub async fn drain(&self) {
        use chat_proto::v1::chat_service_server::ChatServiceServer;
        self.draining.store(true, Ordering::SeqCst);
        self.grpc
            .set_not_serving::<ChatServiceServer<crate::grpc::ChatGrpc>>()
            .await;
        self.grpc
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
    }

    /// Runs every check.
    pub async fn report(&self) -> ReadyReport {
        let mut checks = BTreeMap::new();
        let draining = self.draining.load(Ordering::SeqCst);
        checks.insert(
            "accepting",
            if draining { "draining" } else { "up" }.to_string(),
        );
        let store = self.hub.store();
        let store_state = match tokio::time::timeout(CHECK_TIMEOUT, store.check()).await {
            Ok(Ok(())) => "up".to_string(),
            Ok(Err(e)) => format!("down: {e}"),
            Err(_) => "down: timed out".to_string(),
        };
        checks.insert("store", store_state);
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
    let report = readiness.report().await;
    let code = if report.status == "ready" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(report))
}
