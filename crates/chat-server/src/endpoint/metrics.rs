//! `GET /metrics`: renders the hub's [`Metrics`](crate::metrics::Metrics),
//! the rooms' own counts and delivery latency, the store's batch sizes, the
//! backplane's counters and histograms and the admission's connection count
//! in the Prometheus text format (0.0.4). With authentication on it asks
//! for the same credentials as the admin endpoints.

use super::admin::AdminAccess;
use crate::backplane::BackplaneStats;
use crate::hub::Hub;
use crate::limiter::Admission;
use crate::metrics::{Family, JoinQuery, Label, Metrics, WebhookMetrics};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

/// What `/metrics` reads.
pub struct Sources {
    /// The hub (its metrics, rooms, sessions).
    pub hub: Arc<Hub>,
    /// The backplane's counters.
    pub backplane: Arc<BackplaneStats>,
    /// Connection counts.
    pub admission: Arc<Admission>,
}

/// The whole exposition: connections, messages, limits and auth, the
/// store, delivery, then the backplane.
pub fn render(sources: &Sources) -> String {
    let mut out = String::with_capacity(8 * 1024);
    connections(&mut out, sources);
    messages(&mut out, &sources.hub);
    refusals(&mut out, sources.hub.metrics());
    store(&mut out, &sources.hub);
    webhook(&mut out, &sources.hub.metrics().webhook);
    backplane(&mut out, &sources.backplane);
    out
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Session streams and room memberships.
fn connections(out: &mut String, sources: &Sources) {
    let m = sources.hub.metrics();
    gauge(
        out,
        "chat_connections",
        "Session streams open on this instance.",
        sources.admission.connections() as u64,
    );
    counter(
        out,
        "chat_connections_opened_total",
        "Session streams opened.",
        load(&m.connections_opened),
    );
    m.connections_closed.render(
        out,
        "chat_connections_closed_total",
        "reason",
        "Session streams ended, by reason.",
    );
    m.connections_refused.render(
        out,
        "chat_connections_refused_total",
        "limit",
        "Session calls refused by a connection limit.",
    );
    gauge(
        out,
        "chat_rooms",
        "Rooms with members on this instance.",
        sources.hub.rooms().len() as u64,
    );
    gauge(
        out,
        "chat_room_members",
        "Room memberships of this instance's connections.",
        sources.hub.rooms().memberships() as u64,
    );
}

/// Messages received, delivered and repaired, and how long delivery took.
fn messages(out: &mut String, hub: &Hub) {
    counter(
        out,
        "chat_cluster_duplicate_server_id_total",
        "Control messages from another process using this instance's server_id (the others cannot keep the two's presence apart).",
        load(&hub.metrics().duplicate_server_id),
    );
    counter(
        out,
        "chat_cluster_control_publish_failed_total",
        "Control messages (heartbeats, presence changes, snapshot parts) the backplane did not take.",
        load(&hub.metrics().control_publish_failed),
    );
    counter(
        out,
        "chat_cluster_presence_repairs_total",
        "Snapshots asked of another instance because what was known of its presence kept differing from the digest in its heartbeats.",
        load(&hub.metrics().presence_repairs),
    );
    counter(
        out,
        "chat_messages_received_total",
        "Messages accepted from this instance's clients and stored.",
        load(&hub.metrics().messages_received),
    );
    counter(
        out,
        "chat_messages_edited_total",
        "Edits accepted from this instance's clients and stored.",
        load(&hub.metrics().messages_edited),
    );
    counter(
        out,
        "chat_messages_deleted_total",
        "Deletes accepted from this instance's clients and stored.",
        load(&hub.metrics().messages_deleted),
    );
    counter(
        out,
        "chat_direct_opened_total",
        "Direct conversations opened (or opened again) by this instance's clients.",
        load(&hub.metrics().directs_opened),
    );
    counter(
        out,
        "chat_reactions_total",
        "Reactions added or removed by this instance's clients, stored.",
        load(&hub.metrics().reactions),
    );
    counter(
        out,
        "chat_read_marks_total",
        "Read marks (a user's read position in a room moved up) from this instance's clients, stored.",
        load(&hub.metrics().read_marks),
    );
    counter(
        out,
        "chat_typing_received_total",
        "Typing announcements accepted from this instance's clients (ephemeral: not stored).",
        load(&hub.metrics().typing_received),
    );
    counter(
        out,
        "chat_typing_events_sent_total",
        "Typing events (who is typing in a room, coalesced to about one a second per room) queued for this instance's connections.",
        hub.rooms().typing_events(),
    );
    counter(
        out,
        "chat_joins_total",
        "Joins answered with success on this instance (rejoins included).",
        load(&hub.metrics().joins),
    );
    // A store that reads joins' states in batches counts its statements.
    let queries = Family::<JoinQuery>::new();
    for &query in JoinQuery::ALL {
        queries.add(query, hub.metrics().join_store_queries.get(query));
    }
    if let Some(batches) = hub.store().join_batches() {
        queries.add(JoinQuery::JoinState, batches.count());
    }
    queries.render(
        out,
        "chat_join_store_queries_total",
        "query",
        "Store statements joins issued, by what they asked (a batched statement counts once).",
    );
    counter(
        out,
        "chat_presence_frames_total",
        "Presence frames (MembersChanged: a room's joins and leaves of one tick) queued for this instance's connections.",
        load(&hub.metrics().presence_frames),
    );
    counter(
        out,
        "chat_messages_delivered_total",
        "Message frames queued for this instance's connections.",
        hub.rooms().deliveries(),
    );
    counter(
        out,
        "chat_gap_repairs_total",
        "Messages fetched from the store to fill a gap in a room's sequence.",
        hub.rooms().repaired(),
    );
    hub.rooms().delivery_latency().render(
        out,
        "chat_delivery_latency_seconds",
        "From the store's acknowledgement of a message to its hand-off to this instance's connections (across instances, clock differences included).",
    );
}

/// Requests refused by a rate limit, and refused tokens.
fn refusals(out: &mut String, m: &Metrics) {
    m.api_calls.render(
        out,
        "chat_api_calls_total",
        "call",
        "Server API calls answered by this instance (refusals included).",
    );
    m.api_errors.render(
        out,
        "chat_api_errors_total",
        "call",
        "Server API calls refused (unauthorized, invalid, rate limited) or failed.",
    );
    m.rate_limited.render(
        out,
        "chat_rate_limited_total",
        "action",
        "Requests refused by a rate limit.",
    );
    m.auth_failures.render(
        out,
        "chat_auth_failures_total",
        "reason",
        "Refused tokens, by reason.",
    );
}

/// The webhook sender's counters.
fn webhook(out: &mut String, w: &WebhookMetrics) {
    counter(
        out,
        "chat_webhook_events_sent_total",
        "Webhook events this instance delivered (the receiver answered 2xx).",
        load(&w.sent),
    );
    counter(
        out,
        "chat_webhook_requests_failed_total",
        "Webhook requests that failed (no connection, timeout, or an answer other than 2xx).",
        load(&w.failed),
    );
    counter(
        out,
        "chat_webhook_events_retried_total",
        "Webhook events made due again after a failed request.",
        load(&w.retried),
    );
    w.dropped.render(
        out,
        "chat_webhook_events_dropped_total",
        "reason",
        "Webhook events that left the queue undelivered (logged), by reason.",
    );
    gauge(
        out,
        "chat_webhook_events_pending",
        "Webhook events waiting in the store's queue (all instances'), at this instance's last trim.",
        load(&w.pending),
    );
    w.delivery.render(
        out,
        "chat_webhook_delivery_seconds",
        "From an event's queueing to the receiver's acknowledgement.",
    );
    w.request.render(
        out,
        "chat_webhook_request_seconds",
        "One webhook request, from sending to the receiver's answer.",
    );
}

/// Append latency and, for stores that batch, batch sizes.
fn store(out: &mut String, hub: &Hub) {
    hub.metrics().store_append.render(
        out,
        "chat_store_append_seconds",
        "Time to store a message (the store's acknowledgement).",
    );
    if let Some(batches) = hub.store().batch_sizes() {
        batches.render(
            out,
            "chat_store_batch_messages",
            "Messages written per store commit or statement (group commit).",
        );
    }
    if let Some(waits) = hub.store().pool_waits() {
        waits.render(
            out,
            "chat_store_pool_wait_seconds",
            "How long each batch of appends waited for a store connection (a storm of joins must not make it wait).",
        );
    }
    if let Some(batches) = hub.store().join_batches() {
        batches.render(
            out,
            "chat_store_join_batch_joins",
            "Joins whose read states and bans one store statement read.",
        );
    }
}

/// The backplane's counters and latencies.
fn backplane(out: &mut String, b: &BackplaneStats) {
    for (name, help, value) in [
        (
            "chat_backplane_published_total",
            "Room events published to the backplane.",
            &b.published,
        ),
        (
            "chat_backplane_publish_failures_total",
            "Publishes that failed; the event reached local members only.",
            &b.publish_failed,
        ),
        (
            "chat_backplane_received_total",
            "Room events received from the backplane.",
            &b.received,
        ),
        (
            "chat_backplane_malformed_total",
            "Received backplane messages that did not decode.",
            &b.malformed,
        ),
        (
            "chat_backplane_dropped_total",
            "Times the backplane client dropped messages it could not buffer.",
            &b.dropped,
        ),
        (
            "chat_backplane_outages_total",
            "Times the backplane connection was lost.",
            &b.outages,
        ),
        (
            "chat_backplane_control_dropped_total",
            "Control messages dropped because the cluster task lagged.",
            &b.control_dropped,
        ),
        (
            "chat_backplane_reconnects_total",
            "Times the backplane connection came back after an outage.",
            &b.reconnects,
        ),
    ] {
        counter(out, name, help, load(value));
    }
    b.publish_latency.render(
        out,
        "chat_backplane_publish_seconds",
        "Time to publish a room event to the backplane.",
    );
    b.receive_delay.render(
        out,
        "chat_backplane_receive_delay_seconds",
        "From the store's acknowledgement on the publishing instance to the receipt of the event here (clock differences included).",
    );
}

struct Endpoint {
    sources: Sources,
    access: AdminAccess,
}

/// `GET /metrics`.
pub fn routes(sources: Sources, access: AdminAccess) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(Arc::new(Endpoint { sources, access }))
}

async fn scrape(State(endpoint): State<Arc<Endpoint>>, headers: HeaderMap) -> Response {
    if endpoint.access.auth_enabled()
        && let Some(refused) = endpoint.access.refusal(&headers)
    {
        return refused.into_response();
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(&endpoint.sources),
    )
        .into_response()
}
