//! The client: a background task owns the session stream; requests from any
//! task go out on it and wait for their reply by request id.
//!
//! - [`config`]: how a client connects ([`ClientConfig`], [`ClientTls`]);
//! - [`api`]: the public [`Client`] handle and its requests;
//! - [`connection`]: the task that opens sessions one after another;
//! - [`rejoin`]: joining the client's rooms again on each new session;
//! - [`dispatch`]: routing each server frame to a waiter or an event;
//! - here: the state they share ([`Inner`]) and sending one request.

mod api;
mod config;
mod connection;
mod dispatch;
mod rejoin;
#[cfg(test)]
mod tests;

pub use api::{Client, ConnectionState};
pub use config::{ClientConfig, ClientTls};

use crate::error::ClientError;
use chat_proto::v1::{ClientFrame, ErrorCode, client_frame::Request, reply};
use chat_util::lock;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

/// What the [`Client`] handles and the connection task share.
struct Inner {
    /// The settings the client was made with.
    config: ClientConfig,
    /// The next request id (also used by heartbeat pings).
    next_request: AtomicU64,
    /// Waiters for replies, by request id.
    pending: Mutex<HashMap<u64, oneshot::Sender<reply::Result>>>,
    /// The current session's outgoing frames; `None` between sessions.
    outbound: Mutex<Option<mpsc::Sender<ClientFrame>>>,
    /// The current session's transport, for unary calls.
    channel: Mutex<Option<tonic::transport::Channel>>,
    /// The rooms the client is in, rejoined on every session.
    rooms: Mutex<BTreeSet<String>>,
    /// The last sequence seen per room: where a rejoin resumes.
    last_seen: Mutex<HashMap<String, u64>>,
    /// Joins in flight on the current session, by request id. Their
    /// replies set the room's resume point in the connection task, in
    /// stream order, before any message behind them is dispatched, also when
    /// the caller stopped waiting (a late reply still tells where the room
    /// stands); a rejoin's reply also becomes `Event::Rejoined`. Cleared
    /// when the session ends.
    joins: Mutex<HashMap<u64, Join>>,
    /// Rooms whose rejoin was reported as done on the current session: a
    /// repeated rejoin's ALREADY_A_MEMBER for one of them is not reported
    /// again. Cleared when the session ends.
    rejoined_rooms: Mutex<HashSet<String>>,
    /// Counts rejoin replies: a send refused because its room is not
    /// rejoined yet waits for this to move instead of polling.
    rejoined: watch::Sender<u64>,
    /// Where the connection stands, for [`Client::wait_connected`].
    state: watch::Sender<ConnectionState>,
    /// Cancelled by [`Client::close`]: ends the session and the task.
    close: CancellationToken,
    /// Cancelled to end the current session and reconnect at once.
    cut: Mutex<CancellationToken>,
}

/// Most joins [`Inner::joins`] keeps on one session.
const MAX_JOINS_IN_FLIGHT: usize = 4096;

/// A join in flight (see [`Inner::joins`]).
struct Join {
    /// The room joined.
    room: String,
    /// Whether the session's rejoin asked rather than the application.
    rejoin: bool,
    /// Whether it resumes from the room's point (`since_sequence` sent):
    /// its reply raises the point rather than setting it.
    resumed: bool,
    /// Whether its caller stopped waiting: only such joins are dropped
    /// when there are too many.
    timed_out: bool,
}

impl Inner {
    /// Sends one request on the current session and waits for its reply.
    async fn request(&self, request: Request) -> Result<reply::Result, ClientError> {
        self.request_as(request, None).await
    }

    /// [`Inner::request`] for a join (`join`, its entry in
    /// [`Inner::joins`]), whose reply the connection task also records.
    async fn request_as(
        &self,
        request: Request,
        join: Option<Join>,
    ) -> Result<reply::Result, ClientError> {
        if self.close.is_cancelled() {
            return Err(ClientError::Closed);
        }
        let outbound = lock(&self.outbound)
            .clone()
            .ok_or(ClientError::NotConnected)?;
        let request_id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(request_id, tx);
        if let Some(join) = join {
            let mut joins = lock(&self.joins);
            // Bounded against a server that never answers: past the bound
            // the oldest timed-out join's late reply is no longer recorded
            // (joins still awaited are bounded by their callers).
            if joins.len() >= MAX_JOINS_IN_FLIGHT
                && let Some(oldest) = joins
                    .iter()
                    .filter(|(_, j)| j.timed_out)
                    .map(|(id, _)| *id)
                    .min()
            {
                joins.remove(&oldest);
            }
            joins.insert(request_id, join);
        }
        let frame = ClientFrame {
            request_id,
            traceparent: String::new(),
            request: Some(request),
        };
        let timeout = self.config.request_timeout;
        let outcome = tokio::time::timeout(timeout, async {
            outbound
                .send(frame)
                .await
                .map_err(|_| ClientError::Disconnected)?;
            rx.await.map_err(|_| ClientError::Disconnected)
        })
        .await;
        lock(&self.pending).remove(&request_id);
        if outcome.is_ok() {
            // Answered, or the session is gone.
            lock(&self.joins).remove(&request_id);
        } else if let Some(join) = lock(&self.joins).get_mut(&request_id) {
            // A join that timed out stays listed: its reply may still come
            // on this session.
            join.timed_out = true;
        }
        match outcome {
            Err(_) => Err(ClientError::Timeout(timeout)),
            Ok(Err(e)) => Err(e),
            Ok(Ok(result)) => to_result(result),
        }
    }

    /// Forgets `room`: it is not rejoined, and its resume point is gone (a
    /// later fresh join starts where the room stands then).
    fn forget(&self, room: &str) {
        lock(&self.rooms).remove(room);
        lock(&self.last_seen).remove(room);
    }

    /// Fails every waiting request: their session is gone.
    fn fail_pending(&self) {
        // Dropping the senders wakes each waiter with `Disconnected`.
        lock(&self.pending).clear();
        lock(&self.joins).clear();
        lock(&self.rejoined_rooms).clear();
    }
}

/// A reply's result, with a server error as a [`ClientError`].
fn to_result(result: reply::Result) -> Result<reply::Result, ClientError> {
    match result {
        reply::Result::Error(e) => Err(ClientError::Server {
            code: ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Internal),
            message: e.message,
            retry_after_ms: e.retry_after_ms,
        }),
        result => Ok(result),
    }
}

/// Names the caller in a call's metadata, as the server expects without
/// authentication: `chat-name`, or `chat-name-bin` for a non-ASCII name.
fn set_name(metadata: &mut tonic::metadata::MetadataMap, name: &str) -> Result<(), String> {
    if name.is_ascii() {
        let value = name
            .parse()
            .map_err(|_| format!("display name {name:?} cannot be sent as metadata"))?;
        metadata.insert("chat-name", value);
    } else {
        metadata.insert_bin(
            "chat-name-bin",
            tonic::metadata::MetadataValue::from_bytes(name.as_bytes()),
        );
    }
    Ok(())
}
