//! Requests waiting for their `Reply`, for the lean drivers (`raw` over
//! gRPC, `ws` over WebSocket): each request gets an id and a oneshot, the
//! connection's reading task answers it when the `Reply` with that id
//! arrives, and [`request`] turns the wait into a result with a timeout.

use chat_client::proto::{ClientFrame, Reply, client_frame, reply};
use chat_util::lock;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::sync::oneshot;

/// The outstanding requests of one connection.
pub struct Pending {
    /// Where each outstanding request's reply goes, by request id.
    waiting: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    /// The next request id.
    next_id: AtomicU64,
}

impl Default for Pending {
    fn default() -> Pending {
        Pending {
            waiting: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        }
    }
}

impl Pending {
    /// A new request id and where its reply will arrive.
    fn open(&self) -> (u64, oneshot::Receiver<Reply>) {
        let id = self.next_id.fetch_add(1, Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.waiting).insert(id, tx);
        (id, rx)
    }

    /// Hands `reply` to the request waiting for it, if one still is.
    pub fn answer(&self, reply: Reply) {
        if let Some(waiting) = lock(&self.waiting).remove(&reply.request_id) {
            let _ = waiting.send(reply);
        }
    }

    /// Drops every waiting request (the connection ended): each fails.
    pub fn clear(&self) {
        lock(&self.waiting).clear();
    }
}

/// Sends `request` through `send` (which writes the frame to the
/// connection) and waits for its reply, at most `timeout`; a reply that
/// carries an error becomes `Err` with its code and message.
pub async fn request<F, W>(
    pending: &Pending,
    timeout: Duration,
    request: client_frame::Request,
    send: F,
) -> Result<reply::Result, String>
where
    F: FnOnce(ClientFrame) -> W,
    W: Future<Output = Result<(), String>>,
{
    let (id, rx) = pending.open();
    let frame = ClientFrame {
        request_id: id,
        traceparent: String::new(),
        request: Some(request),
    };
    let answer = async {
        send(frame).await?;
        rx.await.map_err(|_| "stream closed".to_string())
    };
    let reply = match tokio::time::timeout(timeout, answer).await {
        Ok(r) => r,
        Err(_) => {
            lock(&pending.waiting).remove(&id);
            Err("request timed out".into())
        }
    }?;
    match reply.result {
        Some(reply::Result::Error(e)) => Err(format!("{:?}: {}", e.code(), e.message)),
        Some(r) => Ok(r),
        None => Err("empty reply".into()),
    }
}
