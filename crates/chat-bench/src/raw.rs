//! The lean driver (`--driver raw`): the generated gRPC client and one
//! task per connection that reads frames and hands each delivery straight
//! to a callback. No reconnects, no event channel, no per-room bookkeeping:
//! what the client library adds on top of the protocol is left out, as the
//! peer's `socketio-raw` driver leaves out socket.io-client. It measures the
//! same thing with less of the load generator's CPU in the way.

use crate::replies::{self, Pending};
use chat_client::proto::chat_service_client::ChatServiceClient;
use chat_client::proto::{
    ClientFrame, JoinRoomRequest, MessageEvent, SendMessageRequest, TypingRequest, client_frame,
    reply, server_frame::Frame,
};
use chat_util::lock;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

/// Requests one connection may have outstanding before `request` waits.
const OUTBOUND: usize = 256;

/// What a lean driver's reading task reports (`raw` here, and `ws`).
pub trait Sink: Send + Sync + 'static {
    /// A message was delivered to this connection.
    fn message(&self, m: &MessageEvent);
    /// A typing event was delivered to this connection.
    fn typing(&self);
    /// The stream ended or failed while the client had not closed it.
    fn disconnected(&self);
}

/// One connection and its Session stream; cheap to clone.
#[derive(Clone)]
pub struct RawClient {
    inner: Arc<Inner>,
}

struct Inner {
    /// The Session stream's outbound half.
    frames: mpsc::Sender<ClientFrame>,
    /// Requests waiting for their reply.
    pending: Pending,
    /// Set by [`RawClient::close`]: the end of the stream is no disconnect.
    closed: AtomicBool,
    /// The reading task, aborted on close.
    reader: Mutex<Option<AbortHandle>>,
    /// Longest wait for a reply.
    timeout: Duration,
}

impl RawClient {
    /// Connects to `url` as `name`, opens the Session stream and waits for
    /// its Welcome; every later delivery goes to `sink`.
    pub async fn connect(
        url: &str,
        name: &str,
        timeout: Duration,
        sink: Arc<dyn Sink>,
    ) -> Result<RawClient, String> {
        let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
            .map_err(|e| format!("bad url {url}: {e}"))?
            .connect_timeout(timeout)
            .tcp_nodelay(true);
        let channel = tokio::time::timeout(timeout, endpoint.connect())
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| format!("connect: {e}"))?;
        let (frames, mut outbound) = mpsc::channel::<ClientFrame>(OUTBOUND);
        let requests = futures::stream::poll_fn(move |cx| outbound.poll_recv(cx));
        let mut request = tonic::Request::new(requests);
        request.metadata_mut().insert(
            "chat-name",
            name.parse().map_err(|_| format!("bad name {name}"))?,
        );
        let mut stream =
            tokio::time::timeout(timeout, ChatServiceClient::new(channel).session(request))
                .await
                .map_err(|_| "session open timed out".to_string())?
                .map_err(|e| format!("session: {e}"))?
                .into_inner();
        match tokio::time::timeout(timeout, stream.message()).await {
            Ok(Ok(Some(f))) if matches!(f.frame, Some(Frame::Welcome(_))) => {}
            Ok(Ok(other)) => return Err(format!("expected a welcome, got {other:?}")),
            Ok(Err(e)) => return Err(format!("session: {e}")),
            Err(_) => return Err("no welcome in time".into()),
        }
        let inner = Arc::new(Inner {
            frames,
            pending: Pending::default(),
            closed: AtomicBool::new(false),
            reader: Mutex::new(None),
            timeout,
        });
        let reading = inner.clone();
        let task = tokio::spawn(async move {
            // Until the stream ends or fails.
            while let Ok(Some(f)) = stream.message().await {
                match f.frame {
                    Some(Frame::Message(m)) => sink.message(&m),
                    Some(Frame::Typing(_)) => sink.typing(),
                    Some(Frame::Reply(r)) => reading.pending.answer(r),
                    _ => {}
                }
            }
            if !reading.closed.load(Relaxed) {
                sink.disconnected();
            }
            reading.pending.clear();
        });
        *lock(&inner.reader) = Some(task.abort_handle());
        Ok(RawClient { inner })
    }

    async fn request(&self, request: client_frame::Request) -> Result<reply::Result, String> {
        let inner = &self.inner;
        replies::request(&inner.pending, inner.timeout, request, |frame| async move {
            inner
                .frames
                .send(frame)
                .await
                .map_err(|_| "stream closed".to_string())
        })
        .await
    }

    /// Joins `room`.
    pub async fn join(&self, room: &str) -> Result<(), String> {
        self.request(client_frame::Request::JoinRoom(JoinRoomRequest {
            room: room.to_string(),
            since_sequence: None,
        }))
        .await
        .map(drop)
    }

    /// Sends `text` to `room` with the client message id `id`; returns once
    /// it is acknowledged.
    pub async fn send_with_id(&self, room: &str, id: &str, text: &str) -> Result<(), String> {
        self.request(client_frame::Request::SendMessage(SendMessageRequest {
            room: room.to_string(),
            client_message_id: id.to_string(),
            text: text.to_string(),
        }))
        .await
        .map(drop)
    }

    /// Says this client is typing in `room`; returns once it is accepted.
    pub async fn typing(&self, room: &str) -> Result<(), String> {
        self.request(client_frame::Request::Typing(TypingRequest {
            room: room.to_string(),
            typing: true,
        }))
        .await
        .map(drop)
    }

    /// Stops reading and lets the connection go.
    pub fn close(&self) {
        self.inner.closed.store(true, Relaxed);
        if let Some(reader) = lock(&self.inner.reader).take() {
            reader.abort();
        }
    }
}
