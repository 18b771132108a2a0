//! Operator endpoints on the HTTP side. They answer requests that carry,
//! as a bearer token, either `admin.token` or (with `auth.mode = "jwt"`) a
//! valid JWT with the claim `admin: true`; with neither configured they
//! do not exist (404).

use crate::auth::Authenticator;
use crate::domain::{Secret, validate};
use crate::hub::Hub;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{get, post};
use serde::Deserialize;
use std::sync::Arc;

/// Largest request body an admin endpoint reads.
const MAX_BODY: usize = 64 * 1024;

struct Admin {
    hub: Arc<Hub>,
    access: AdminAccess,
    readiness: Arc<super::health::Readiness>,
}

/// Who may use the operator endpoints (and `/metrics` when auth is on).
#[derive(Clone)]
pub struct AdminAccess {
    hub: Arc<Hub>,
    token: Secret,
    auth: Arc<Authenticator>,
}

/// Body of `POST /admin/broadcast`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BroadcastRequest {
    text: String,
}

/// The admin routes; empty (everything 404) when `access` opens nothing
/// (no admin token, authentication off).
pub fn routes(
    hub: Arc<Hub>,
    access: AdminAccess,
    readiness: Arc<super::health::Readiness>,
) -> Router {
    if !access.is_open() {
        return Router::new();
    }
    let admin = Arc::new(Admin {
        hub,
        access,
        readiness,
    });
    Router::new()
        .route("/admin/broadcast", post(broadcast))
        .route("/admin/log-level", get(log_level).put(set_log_level))
        .route("/admin/status", get(status))
        .route("/admin/errors", get(errors))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(admin)
        // The operator's view: files only, no data (they ask for the
        // credentials and read the routes above and the server API).
        .merge(super::web::operator_routes())
}

/// The process's recent warnings and errors, the newest first.
async fn errors(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Reply {
    if let Some(refused) = admin.access.refusal(&headers) {
        return refused;
    }
    (
        StatusCode::OK,
        Json(serde_json::json!({ "errors": crate::telemetry::recent::recent() })),
    )
}

/// Compares in time independent of where the strings differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorized(headers: &HeaderMap, token: &str) -> bool {
    !token.is_empty()
        && headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes()))
}

impl AdminAccess {
    /// Opens to `token` (if not empty) and, with `auth` on, to JWTs with
    /// `admin: true`; refusals are counted in `hub`'s metrics.
    pub fn new(hub: Arc<Hub>, token: &Secret, auth: Arc<Authenticator>) -> AdminAccess {
        AdminAccess {
            hub,
            token: token.clone(),
            auth,
        }
    }

    /// Whether tokens are checked at all.
    pub fn auth_enabled(&self) -> bool {
        self.auth.is_enabled()
    }

    /// `None` if the request may proceed, else the refusal.
    pub fn refusal(&self, headers: &HeaderMap) -> Option<Reply> {
        self.refusal_unless(headers, "admin", |identity| identity.admin)
    }

    /// [`AdminAccess::refusal`] for the server API: the admin token, or a
    /// JWT with `api: true` (or `admin: true`).
    pub fn api_refusal(&self, headers: &HeaderMap) -> Option<Reply> {
        self.refusal_unless(headers, "api", |identity| identity.api)
    }

    /// Whether the access opens anything at all (an admin token, or auth
    /// on).
    pub fn is_open(&self) -> bool {
        !self.token.is_empty() || self.auth.is_enabled()
    }

    fn refusal_unless(
        &self,
        headers: &HeaderMap,
        grant: &str,
        granted: impl Fn(&crate::auth::Identity) -> bool,
    ) -> Option<Reply> {
        if authorized(headers, self.token.expose()) {
            return None;
        }
        if !self.auth.is_enabled() {
            return Some(error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token",
            ));
        }
        let header = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
        match self.auth.check_header(header) {
            Ok(identity) if granted(&identity) => None,
            Ok(identity) => {
                tracing::info!(user = %identity.user.user_id, grant, "endpoint refused: the token does not grant it");
                Some(error(
                    StatusCode::FORBIDDEN,
                    &format!("the token does not grant {grant}"),
                ))
            }
            Err(e) => {
                tracing::info!(reason = %e.reason(), error = %e, "admin authentication failed");
                self.hub.metrics().auth_failures.inc(e.reason());
                Some(error(StatusCode::UNAUTHORIZED, &e.to_string()))
            }
        }
    }
}

/// An endpoint's answer.
pub type Reply = (StatusCode, Json<serde_json::Value>);

/// A refusal: `status` and `{"error": message}`.
pub fn error(status: StatusCode, message: &str) -> Reply {
    (status, Json(serde_json::json!({ "error": message })))
}

/// A JSON request body from a caller with the admin credentials, or the
/// refusal to answer with (unauthorized, or a malformed body).
fn admitted<T>(
    admin: &Admin,
    headers: &HeaderMap,
    body: Result<Json<T>, axum::extract::rejection::JsonRejection>,
) -> Result<T, Reply> {
    if let Some(refused) = admin.access.refusal(headers) {
        return Err(refused);
    }
    body.map(|Json(request)| request)
        .map_err(|e| error(StatusCode::BAD_REQUEST, &e.body_text()))
}

/// Sends a notification to every client of every instance, once each.
async fn broadcast(
    State(admin): State<Arc<Admin>>,
    headers: HeaderMap,
    body: Result<Json<BroadcastRequest>, axum::extract::rejection::JsonRejection>,
) -> Reply {
    let request = match admitted(&admin, &headers, body) {
        Ok(request) => request,
        Err(refused) => return refused,
    };
    if let Err(e) = validate::message_text(&request.text, admin.hub.limits().max_text_bytes) {
        return error(StatusCode::BAD_REQUEST, &e.to_string());
    }
    let sent = admin.hub.operator_broadcast(&request.text).await;
    tracing::info!(sessions = sent, "operator broadcast sent");
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "delivered_locally": sent })),
    )
}

/// This instance and the others it hears from, for `chat-server status`.
async fn status(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Reply {
    if let Some(refused) = admin.access.refusal(&headers) {
        return refused;
    }
    let hub = &admin.hub;
    let ready = admin.readiness.refresh().await;
    let instances: Vec<serde_json::Value> = hub
        .instances_seen()
        .into_iter()
        .map(|(id, since, load)| {
            let mut instance = serde_json::json!({
                "server_id": &*id,
                "connections": load.connections,
                "rooms": load.rooms,
                "last_heard_ms": since.as_millis() as u64,
            });
            // Instances that predate the counters leave them out.
            if let Some(c) = load.counters {
                instance["ready"] = c.ready.into();
                instance["messages_received"] = c.messages_received.into();
                instance["messages_delivered"] = c.messages_delivered.into();
                instance["backplane_counters"] = serde_json::json!({
                    "published": c.backplane_published,
                    "received": c.backplane_received,
                    "publish_failed": c.backplane_publish_failures,
                });
            }
            instance
        })
        .collect();
    (
        StatusCode::OK,
        Json(serde_json::json!({
            "server_id": hub.server_id(),
            "status": ready.status,
            "connections": hub.session_count(),
            "rooms": hub.rooms().len(),
            "messages_received": hub
                .metrics()
                .messages_received
                .load(std::sync::atomic::Ordering::Relaxed),
            "messages_delivered": hub.rooms().deliveries(),
            "store": hub.store().name(),
            "backplane": hub.backplane().name(),
            "checks": ready.checks,
            "backplane_counters": ready.backplane,
            "instances": instances,
        })),
    )
}

/// Body of `PUT /admin/log-level`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogLevelRequest {
    level: String,
}

/// The log filter in force.
async fn log_level(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Reply {
    if let Some(refused) = admin.access.refusal(&headers) {
        return refused;
    }
    match crate::telemetry::filter() {
        Some(level) => (StatusCode::OK, Json(serde_json::json!({ "level": level }))),
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            &crate::telemetry::FilterError::NotInstalled.to_string(),
        ),
    }
}

/// Replaces the log filter without a restart.
async fn set_log_level(
    State(admin): State<Arc<Admin>>,
    headers: HeaderMap,
    body: Result<Json<LogLevelRequest>, axum::extract::rejection::JsonRejection>,
) -> Reply {
    let request = match admitted(&admin, &headers, body) {
        Ok(request) => request,
        Err(refused) => return refused,
    };
    match crate::telemetry::set_filter(&request.level) {
        Ok(level) => (StatusCode::OK, Json(serde_json::json!({ "level": level }))),
        Err(e @ crate::telemetry::FilterError::Invalid(_)) => {
            error(StatusCode::BAD_REQUEST, &e.to_string())
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_exactly() {
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, "s3cret"));
        h.insert("authorization", "Bearer s3cret".parse().unwrap());
        assert!(authorized(&h, "s3cret"));
        assert!(!authorized(&h, "s3cre"));
        assert!(!authorized(&h, "s3cret!"));
        h.insert("authorization", "Basic s3cret".parse().unwrap());
        assert!(!authorized(&h, "s3cret"));
        h.insert("authorization", "Bearer ".parse().unwrap());
        assert!(!authorized(&h, ""), "an empty token matches nothing");
    }
}
