//! Webhooks: every stored event the configuration names (messages, edits,
//! deletes, reactions; and joins and leaves) is POSTed, signed, to
//! `webhooks.url`, at least once, from a durable queue in the store.
//!
//! - Room events are queued by the store in the transaction that stores
//!   them ([`crate::store::Capture`]); membership changes reach the queue
//!   through [`feed`], which writes what the hub hands it in batches.
//! - [`run`] is each instance's sender: it claims the oldest due events
//!   (a lease: instances sharing a store take disjoint batches, and a
//!   batch whose instance died is taken again when its lease ends), POSTs
//!   them as one signed request ([`payload`], [`sign`], [`client`]), and
//!   settles them: a 2xx answer takes them out of the queue; a 400, 413,
//!   415 or 422 (the events themselves refused) splits the batch in halves
//!   until the refused event goes alone, behind the others, and drops it
//!   after 3 lone refusals while the receiver takes others; anything else
//!   makes them due again after a backoff that doubles with each failure
//!   in a row, with jitter, up to `webhooks.retry_max`.
//! - A receiver that is down never holds chat up: nothing on the message
//!   path waits for it. The queue is bounded by age and size: every
//!   [`TRIM_EVERY`] the sender drops what is older than
//!   `webhooks.max_age` and the oldest beyond `webhooks.max_pending`,
//!   counting and logging them.
//!
//! docs/WEBHOOKS.md is the receiver's guide.

pub mod client;
pub mod payload;
pub mod sign;

use crate::config::{WebhookConfig, WebhookEvent};
use crate::hub::Hub;
use crate::metrics::WebhookDrop;
use crate::store::{Capture, Claim, MembershipChange, Queued, QueuedEvent, TRIM_CHUNK};
use bytes::Bytes;
use chat_util::Secret;
use chat_util::now_unix_ms;
use client::Receiver;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use client::ClientError;

/// How often the sender trims the queue (and reads its length).
pub const TRIM_EVERY: Duration = Duration::from_secs(5);

/// Membership changes waiting for [`feed`] at most; beyond, the hub drops
/// them (counted as `busy`).
pub const FEED_QUEUE: usize = 10_000;

/// Membership changes written to the store in one statement at most.
const FEED_BATCH: usize = 500;

/// How long a claimed batch stays leased beyond the request's timeout.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// The events `events` names, as the store captures them.
pub fn capture(events: &[WebhookEvent]) -> Capture {
    events.iter().fold(Capture::NONE, |all, event| {
        all.with(match event {
            WebhookEvent::Message => Capture::MESSAGE,
            WebhookEvent::Edit => Capture::EDIT,
            WebhookEvent::Delete => Capture::DELETE,
            WebhookEvent::Reaction => Capture::REACTION,
            WebhookEvent::Join => Capture::JOIN,
            WebhookEvent::Leave => Capture::LEAVE,
        })
    })
}

/// An instance's webhook sender, built from `webhooks.*`.
pub struct Sender {
    /// Where the events go.
    receiver: Receiver,
    /// The signing key.
    secret: Secret,
    /// Events per request at most.
    batch_max: usize,
    /// How often an idle sender looks again.
    poll_interval: Duration,
    /// The backoff's first and longest waits.
    retry: (Duration, Duration),
    /// The queue's bounds.
    max_age: Duration,
    max_pending: u64,
    /// A claim's lease: the request's timeout and a margin.
    lease: Duration,
}

impl Sender {
    /// The sender `config` describes, or `None` with no `webhooks.url`.
    pub fn build(config: &WebhookConfig) -> Result<Option<Sender>, ClientError> {
        if config.url.is_empty() {
            return Ok(None);
        }
        Ok(Some(Sender {
            receiver: Receiver::new(config)?,
            secret: config.secret.clone(),
            batch_max: config.batch_max,
            poll_interval: config.poll_interval,
            retry: (config.retry_min, config.retry_max),
            max_age: config.max_age,
            max_pending: config.max_pending,
            lease: config.timeout.saturating_add(LEASE_MARGIN),
        }))
    }

    /// The wait after `failures` failed requests in a row: the first wait
    /// doubled per failure, capped, then between 80 % and 100 % of it
    /// (so instances do not retry in step).
    fn backoff(&self, failures: u32) -> Duration {
        let (first, longest) = self.retry;
        let full = first
            .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
            .min(longest);
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |t| t.subsec_nanos() as u64);
        full.mul_f64(0.8 + 0.2 * crate::domain::random::fraction(seed))
    }
}

/// What one round of the sender did.
enum Round {
    /// Nothing was due.
    Idle,
    /// A whole batch went: there may be more.
    Full,
    /// Some went; the queue is drained for now.
    Partial,
    /// The request or the store failed: wait this long.
    Failed(Duration),
}

/// Times the receiver must refuse an event sent alone, while it takes
/// others, before the event is dropped.
const REFUSALS_TO_DROP: u32 = 3;

/// Events whose lone refusals a sender remembers at most.
const REFUSALS_KEPT: usize = 1024;

/// Sends the queue's events until `shutdown`, trimming it every
/// [`TRIM_EVERY`].
pub async fn run(mut sender: Sender, hub: Arc<Hub>, shutdown: CancellationToken) {
    let mut state = SendState {
        failures: 0,
        batch: sender.batch_max,
        refusals: HashMap::new(),
    };
    let mut trimmed_at: Option<Instant> = None;
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        if trimmed_at.is_none_or(|at| at.elapsed() >= TRIM_EVERY) {
            trimmed_at = Some(Instant::now());
            trim(&sender, &hub, &shutdown).await;
        }
        let round = tokio::select! {
            _ = shutdown.cancelled() => return,
            round = send_round(&mut sender, &hub, &mut state) => round,
        };
        let wait = match round {
            Round::Full => continue,
            Round::Idle | Round::Partial => sender.poll_interval,
            Round::Failed(wait) => wait,
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// What the sender carries from one round to the next.
struct SendState {
    /// Failed requests (or store calls, or lone refusals) in a row: the
    /// backoff's exponent.
    failures: u32,
    /// Events to claim next: halved when the receiver refuses a batch (so
    /// a batch refused for one of its events is split until that event
    /// goes alone), doubled after each success, up to `batch_max`.
    batch: usize,
    /// Events the receiver refused alone: how many times, and whether it
    /// took other events since the first (a receiver that refuses
    /// everything is not telling about one event).
    refusals: HashMap<i64, (u32, bool)>,
}

/// How a request went, for what comes next.
enum Outcome {
    /// Delivered (2xx).
    Delivered,
    /// The receiver refused the events themselves (400, 413, 415, 422): it
    /// would refuse them again, so the batch is split.
    Refused(Failure),
    /// The receiver is down, slow, failing or misconfigured (a 5xx, 401,
    /// 404, …): the batch waits whole.
    Failed(Failure),
}

/// Claims a batch, sends it, settles it.
async fn send_round(sender: &mut Sender, hub: &Hub, state: &mut SendState) -> Round {
    let store = hub.store();
    let metrics = &hub.metrics().webhook;
    let now = now_unix_ms();
    let claim = Claim {
        now_ms: now,
        lease_until_ms: now.saturating_add(millis(sender.lease)),
        max: state.batch,
    };
    let events = match store.claim_events(claim).await {
        Ok(events) => events,
        Err(e) => {
            state.failures += 1;
            tracing::warn!(error = %e, "webhook: cannot claim events from the store");
            return Round::Failed(sender.backoff(state.failures));
        }
    };
    if events.is_empty() {
        return Round::Idle;
    }
    let full = events.len() >= state.batch;
    let (gone, events): (Vec<QueuedEvent>, Vec<QueuedEvent>) = events
        .into_iter()
        .partition(|e| matches!(e.what, Queued::Gone { .. }));
    let mut done: Vec<i64> = gone.iter().map(|e| e.queue_id).collect();
    let ids: Vec<i64> = events.iter().map(|e| e.queue_id).collect();
    let outcome = if events.is_empty() {
        Outcome::Delivered
    } else {
        post(sender, hub, &events).await
    };
    let mut rejected = None;
    let mut retry_in = Duration::ZERO;
    let (retry, round) = match &outcome {
        Outcome::Delivered => {
            state.failures = 0;
            state.batch = state.batch.saturating_mul(2).min(sender.batch_max);
            // The receiver takes events: those it refuses alone are its
            // own refusals now.
            for (_, took_others) in state.refusals.values_mut() {
                *took_others = true;
            }
            done.extend(&ids);
            (Vec::new(), if full { Round::Full } else { Round::Partial })
        }
        Outcome::Refused(e) if events.len() > 1 => {
            // Split at once: the halves go in the next rounds, so the
            // events the receiver takes are not held back by the one it
            // does not.
            state.batch = (events.len() / 2).max(1);
            metrics.failed.fetch_add(1, Ordering::Relaxed);
            metrics
                .retried
                .fetch_add(ids.len() as u64, Ordering::Relaxed);
            tracing::warn!(error = %e, events = ids.len(), next_batch = state.batch,
                "webhook: the receiver refused the events; sending them in smaller batches");
            (ids.clone(), Round::Full)
        }
        Outcome::Refused(e) => {
            let id = events[0].queue_id;
            if state.refusals.len() >= REFUSALS_KEPT && !state.refusals.contains_key(&id) {
                state.refusals.clear();
            }
            let (times, took_others) = state.refusals.entry(id).or_insert((0, false));
            *times += 1;
            if *times >= REFUSALS_TO_DROP && *took_others {
                tracing::warn!(error = %e, queue_id = id, refusals = *times,
                    "webhook: the receiver keeps refusing an event it was sent alone, while it \
                     takes others; the event is dropped");
                state.refusals.remove(&id);
                rejected = Some(id);
                done.push(id);
                (Vec::new(), Round::Partial)
            } else {
                // The sender waits (longer while every event is refused);
                // this event waits longer still, so the next claims take
                // the others first.
                state.failures += 1;
                let wait = sender.backoff(state.failures);
                retry_in = wait
                    .saturating_mul(2)
                    .saturating_add(sender.backoff(*times));
                metrics.failed.fetch_add(1, Ordering::Relaxed);
                metrics.retried.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, queue_id = id, refusals = *times, retry_in = ?retry_in,
                    "webhook: the receiver refused an event sent alone; it stays queued");
                (ids.clone(), Round::Failed(wait))
            }
        }
        Outcome::Failed(e) => {
            state.failures += 1;
            retry_in = sender.backoff(state.failures);
            metrics.failed.fetch_add(1, Ordering::Relaxed);
            metrics
                .retried
                .fetch_add(ids.len() as u64, Ordering::Relaxed);
            tracing::warn!(
                error = %e,
                events = ids.len(),
                failures = state.failures,
                retry_in = ?retry_in,
                "webhook: delivery failed; the events stay queued"
            );
            (ids.clone(), Round::Failed(retry_in))
        }
    };
    let retry_at = now_unix_ms().saturating_add(millis(retry_in));
    if let Err(e) = store
        .settle_events(&done, &retry, retry_at, claim.lease_until_ms)
        .await
    {
        // Delivered events not taken out are sent again when their lease
        // ends (at least once); failed ones become due then too.
        tracing::warn!(error = %e, "webhook: cannot settle events in the store");
        state.failures += 1;
        return Round::Failed(sender.backoff(state.failures));
    }
    // Counted once settled: what is sent again after a failed settle is
    // not counted twice.
    for event in &gone {
        metrics.dropped.inc(WebhookDrop::Gone);
        if let Queued::Gone { room, sequence } = &event.what {
            tracing::warn!(%room, sequence,
                "webhook: event dropped, its message is no longer stored \
                 (retention, or beyond the memory store's window)");
        }
    }
    if rejected.is_some() {
        metrics.dropped.inc(WebhookDrop::Rejected);
    } else if matches!(outcome, Outcome::Delivered) {
        let now = now_unix_ms();
        for event in &events {
            let waited = now.saturating_sub(event.queued_at_ms).max(0) as u64;
            metrics.delivery.observe(Duration::from_millis(waited));
            state.refusals.remove(&event.queue_id);
        }
        metrics
            .sent
            .fetch_add(events.len() as u64, Ordering::Relaxed);
    }
    round
}

/// `duration` in milliseconds, as the store's times count them.
fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// A failed request, as the sender logs it.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Post(#[from] client::PostError),
    #[error("the receiver answered {0}")]
    Status(http::StatusCode),
}

/// POSTs `events` as one signed request.
async fn post(sender: &mut Sender, hub: &Hub, events: &[QueuedEvent]) -> Outcome {
    let body = Bytes::from(payload::body(events));
    let timestamp = now_unix_ms() / 1000;
    let signature = sign::signature(sender.secret.expose().as_bytes(), timestamp, &body);
    let headers = [
        (sign::TIMESTAMP_HEADER, timestamp.to_string()),
        (sign::SIGNATURE_HEADER, signature),
    ];
    let started = Instant::now();
    let answer = sender.receiver.post(body, &headers).await;
    hub.metrics().webhook.request.observe(started.elapsed());
    match answer {
        Ok(status) if status.is_success() => Outcome::Delivered,
        // What says "not these events": a bad request, too large, a type
        // or content it cannot take. Anything else (401 after a secret
        // rotation, 404 while the receiver is redeployed, 5xx) is about
        // the receiver, not the events.
        Ok(
            status @ (http::StatusCode::BAD_REQUEST
            | http::StatusCode::PAYLOAD_TOO_LARGE
            | http::StatusCode::UNSUPPORTED_MEDIA_TYPE
            | http::StatusCode::UNPROCESSABLE_ENTITY),
        ) => Outcome::Refused(Failure::Status(status)),
        Ok(status) => Outcome::Failed(Failure::Status(status)),
        Err(e) => Outcome::Failed(e.into()),
    }
}

/// Drops what is beyond the queue's bounds; updates the pending gauge.
/// A store that trims in chunks ([`TRIM_CHUNK`]) is asked again while it
/// drops whole chunks, up to this many times per trim.
const TRIM_CHUNKS_AT_MOST: usize = 1000;

async fn trim(sender: &Sender, hub: &Hub, shutdown: &CancellationToken) {
    let oldest = now_unix_ms().saturating_sub(millis(sender.max_age));
    let metrics = &hub.metrics().webhook;
    let (mut expired, mut overflowed) = (0, 0);
    for _ in 0..TRIM_CHUNKS_AT_MOST {
        let trimmed = tokio::select! {
            _ = shutdown.cancelled() => return,
            trimmed = hub.store().trim_events(oldest, sender.max_pending) => trimmed,
        };
        let t = match trimmed {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "webhook: cannot trim the queue");
                break;
            }
        };
        metrics.pending.store(t.pending, Ordering::Relaxed);
        metrics.dropped.add(WebhookDrop::Expired, t.expired);
        metrics.dropped.add(WebhookDrop::Overflowed, t.overflowed);
        expired += t.expired;
        overflowed += t.overflowed;
        if t.expired < TRIM_CHUNK && t.overflowed < TRIM_CHUNK {
            break;
        }
    }
    if expired + overflowed > 0 {
        tracing::warn!(
            expired,
            overflowed,
            pending = metrics.pending.load(Ordering::Relaxed),
            "webhook: undelivered events dropped (older than webhooks.max_age, or beyond \
             webhooks.max_pending)"
        );
    }
}

/// Writes the membership changes the hub hands over to the store's queue,
/// in batches, until the hub is gone — or, after `shutdown`, until the
/// last session has said goodbye (their leaves are written too).
pub async fn feed(
    hub: Arc<Hub>,
    mut changes: mpsc::Receiver<MembershipChange>,
    shutdown: CancellationToken,
) {
    let mut batch = Vec::with_capacity(FEED_BATCH);
    loop {
        let received = if shutdown.is_cancelled() {
            if hub.session_count() == 0 {
                // The last leaves, in batches, then stop.
                loop {
                    while batch.len() < FEED_BATCH
                        && let Ok(change) = changes.try_recv()
                    {
                        batch.push(change);
                    }
                    if batch.is_empty() {
                        return;
                    }
                    write_changes(&hub, &mut batch, &shutdown).await;
                }
            }
            tokio::time::timeout(
                Duration::from_millis(50),
                changes.recv_many(&mut batch, FEED_BATCH),
            )
            .await
            .unwrap_or(1)
        } else {
            tokio::select! {
                n = changes.recv_many(&mut batch, FEED_BATCH) => n,
                _ = shutdown.cancelled() => 1,
            }
        };
        if received == 0 {
            return;
        }
        write_changes(&hub, &mut batch, &shutdown).await;
    }
}

/// Writes `batch` to the queue, retrying with a backoff while the store
/// fails (the hand-off fills meanwhile, and what does not fit is dropped
/// there); gives up only at shutdown, counting what it drops.
async fn write_changes(hub: &Hub, batch: &mut Vec<MembershipChange>, shutdown: &CancellationToken) {
    if batch.is_empty() {
        return;
    }
    let mut wait = Duration::from_millis(100);
    loop {
        match hub.store().queue_membership(batch.clone()).await {
            Ok(()) => {
                batch.clear();
                return;
            }
            Err(e) => tracing::warn!(error = %e, changes = batch.len(), retry_in = ?wait,
                "webhook: cannot queue membership changes"),
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => {
                hub.metrics().webhook.dropped.add(WebhookDrop::Busy, batch.len() as u64);
                tracing::warn!(changes = batch.len(), "webhook: membership changes dropped at shutdown");
                batch.clear();
                return;
            }
        }
        wait = (wait * 2).min(Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_its_cap_with_jitter() {
        let config = WebhookConfig {
            url: "http://127.0.0.1:9/".into(),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(10),
            ..WebhookConfig::default()
        };
        let sender = Sender::build(&config).unwrap().unwrap();
        for (failures, full) in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 10), (60, 10)] {
            let wait = sender.backoff(failures);
            let full = Duration::from_secs(full);
            assert!(
                wait <= full && wait >= full.mul_f64(0.8),
                "{failures} failures: {wait:?}, expected 80-100 % of {full:?}"
            );
        }
    }

    #[test]
    fn capture_names_what_the_configuration_lists() {
        let all = capture(&[WebhookEvent::Message, WebhookEvent::Join]);
        assert!(all.has(Capture::MESSAGE) && all.has(Capture::JOIN));
        assert!(!all.has(Capture::EDIT) && !all.has(Capture::LEAVE));
        assert!(capture(&[]).is_none());
    }
}
