//! The client: a background task owns the session stream; requests from any
//! task go out on it and wait for their reply by request id.

use crate::backoff::Backoff;
use crate::error::ClientError;
use crate::event::{Event, Events};
use crate::token::{TokenProvider, set_bearer};
use chat_proto::v1::chat_service_client::ChatServiceClient;
use chat_proto::v1::{
    ClientFrame, DisconnectNotice, ErrorCode, HistoryDirection, HistoryRequest, HistoryResponse,
    JoinRoomRequest, JoinRoomResult, LeaveRoomRequest, LeaveRoomResult, ListMembersRequest,
    ListRoomsRequest, Member, PingRequest, PongResult, SendMessageRequest, SendMessageResult,
    ServerFrame, Welcome, client_frame::Request, reply, server_frame::Frame,
};
use chat_util::lock;
use chat_util::now_unix_ms;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

/// How a [`Client`] connects and behaves.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Server URL, e.g. `http://127.0.0.1:5000`.
    pub server: String,
    /// Display name (and, without authentication, identity). With a token,
    /// the server takes the name from the token instead.
    pub name: String,
    /// The bearer token for servers that require one; asked before every
    /// connection attempt.
    pub token: Option<TokenProvider>,
    /// TLS settings for `https://` servers.
    pub tls: ClientTls,
    /// Rooms to join on every session, before any joined later.
    pub rooms: Vec<String>,
    /// How long a request waits for its reply.
    pub request_timeout: Duration,
    /// How long a connection attempt may take.
    pub connect_timeout: Duration,
    /// How often to ping the server.
    pub heartbeat_interval: Duration,
    /// If nothing arrives from the server for this long, the session is
    /// considered dead and replaced.
    pub heartbeat_timeout: Duration,
    /// Delays between reconnect attempts.
    pub backoff: Backoff,
    /// Whether to reconnect after a session ends.
    pub reconnect: bool,
    /// How long a send keeps being retried (with its original client
    /// message id, so it is stored once) across lost connections.
    pub send_retry_window: Duration,
}

impl ClientConfig {
    /// Defaults for `server` and `name`.
    pub fn new(server: impl Into<String>, name: impl Into<String>) -> Self {
        ClientConfig {
            server: server.into(),
            name: name.into(),
            token: None,
            tls: ClientTls::default(),
            rooms: Vec::new(),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(10),
            heartbeat_timeout: Duration::from_secs(30),
            backoff: Backoff::default(),
            reconnect: true,
            send_retry_window: Duration::from_secs(30),
        }
    }
}

/// TLS for `https://` server URLs.
#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    /// PEM CA certificates to trust; none: the public web PKI roots.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM client certificate chain and private key, for servers that
    /// require client certificates (mTLS).
    pub identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// The name the server's certificate must carry, if not the URL's host.
    pub domain: Option<String>,
}

impl ClientTls {
    fn config(&self) -> tonic::transport::ClientTlsConfig {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let mut tls = ClientTlsConfig::new();
        tls = match &self.ca_pem {
            Some(pem) => tls.ca_certificate(Certificate::from_pem(pem)),
            None => tls.with_webpki_roots(),
        };
        if let Some((cert, key)) = &self.identity_pem {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        if let Some(domain) = &self.domain {
            tls = tls.domain_name(domain.clone());
        }
        tls
    }
}

/// Where the client's connection stands.
#[derive(Clone, Debug)]
pub enum ConnectionState {
    /// Connecting or waiting to reconnect.
    Connecting,
    /// A session is open.
    Connected(Welcome),
    /// Closed for good.
    Closed,
}

/// A connection to a chat server that survives reconnects. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    next_request: AtomicU64,
    pending: Mutex<HashMap<u64, oneshot::Sender<reply::Result>>>,
    outbound: Mutex<Option<mpsc::Sender<ClientFrame>>>,
    /// The current session's transport, for unary calls.
    channel: Mutex<Option<tonic::transport::Channel>>,
    rooms: Mutex<BTreeSet<String>>,
    /// The last sequence seen per room: where a rejoin resumes.
    last_seen: Mutex<HashMap<String, u64>>,
    /// Request ids of rejoins in flight, by room: their replies become
    /// `Event::Rejoined` in stream order, ahead of the backlog that follows.
    rejoins: Mutex<HashMap<u64, String>>,
    state: watch::Sender<ConnectionState>,
    close: CancellationToken,
    /// Cancelled to end the current session and reconnect at once.
    cut: Mutex<CancellationToken>,
}

/// How one session ended.
struct SessionEnd {
    notice: Option<DisconnectNotice>,
    reason: String,
    /// Whether a session was established (resets the backoff).
    established: bool,
    /// Whether another attempt cannot succeed (credentials refused, and no
    /// others to try).
    hopeless: bool,
}

impl Client {
    /// Starts connecting in the background; returns at once. Watch
    /// [`Events`] or call [`Client::wait_connected`].
    pub fn connect(config: ClientConfig) -> (Client, Events) {
        let (events_tx, events_rx) = mpsc::channel(1024);
        let (state, _) = watch::channel(ConnectionState::Connecting);
        let inner = Arc::new(Inner {
            rooms: Mutex::new(config.rooms.iter().cloned().collect()),
            config,
            next_request: AtomicU64::new(1),
            pending: Mutex::default(),
            outbound: Mutex::default(),
            channel: Mutex::default(),
            last_seen: Mutex::default(),
            rejoins: Mutex::default(),
            state,
            close: CancellationToken::new(),
            cut: Mutex::new(CancellationToken::new()),
        });
        tokio::spawn(run(inner.clone(), events_tx));
        (Client { inner }, Events { rx: events_rx })
    }

    /// Waits until a session is open; returns its welcome.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<Welcome, ClientError> {
        let mut state = self.inner.state.subscribe();
        let wait = async {
            loop {
                match &*state.borrow_and_update() {
                    ConnectionState::Connected(w) => return Ok(w.clone()),
                    ConnectionState::Closed => return Err(ClientError::Closed),
                    ConnectionState::Connecting => {}
                }
                if state.changed().await.is_err() {
                    return Err(ClientError::Closed);
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
    }

    /// The connection's current state.
    pub fn state(&self) -> ConnectionState {
        self.inner.state.borrow().clone()
    }

    /// The rooms this client is in (and rejoins after a reconnect).
    pub fn rooms(&self) -> Vec<String> {
        lock(&self.inner.rooms).iter().cloned().collect()
    }

    /// Drops the current session and connects again at once (rejoining
    /// and resuming as after any reconnect), e.g. after a network change.
    pub fn reconnect(&self) {
        lock(&self.inner.cut).cancel();
    }

    /// Stops the client: ends the session and stops reconnecting.
    pub fn close(&self) {
        self.inner.close.cancel();
    }

    /// Joins `room`; it is rejoined after every reconnect until left.
    pub async fn join(&self, room: &str) -> Result<JoinRoomResult, ClientError> {
        let request = Request::JoinRoom(JoinRoomRequest {
            room: room.into(),
            since_sequence: None,
        });
        match self.inner.request(request).await? {
            reply::Result::JoinRoom(r) => {
                lock(&self.inner.rooms).insert(room.to_string());
                lock(&self.inner.last_seen).insert(room.to_string(), r.latest_sequence);
                Ok(r)
            }
            _ => Err(ClientError::UnexpectedReply),
        }
    }

    /// Leaves `room`.
    pub async fn leave(&self, room: &str) -> Result<LeaveRoomResult, ClientError> {
        let request = Request::LeaveRoom(LeaveRoomRequest { room: room.into() });
        let result = self.inner.request(request).await;
        // Whatever the server said, do not rejoin a room the user left,
        // except when it is unknown whether the leave happened.
        if !matches!(
            result,
            Err(ClientError::NotConnected | ClientError::Timeout(_))
        ) {
            lock(&self.inner.rooms).remove(room);
        }
        match result? {
            reply::Result::LeaveRoom(r) => Ok(r),
            _ => Err(ClientError::UnexpectedReply),
        }
    }

    /// Sends `text` to `room` with a fresh client message id.
    pub async fn send(&self, room: &str, text: &str) -> Result<SendMessageResult, ClientError> {
        self.send_with_id(room, &uuid::Uuid::new_v4().to_string(), text)
            .await
    }

    /// Sends `text` to `room` under the caller's own message id. If the
    /// connection is lost before the acknowledgement, the send is retried
    /// with the same id after reconnecting (within `send_retry_window`);
    /// the server stores and delivers it once.
    pub async fn send_with_id(
        &self,
        room: &str,
        client_message_id: &str,
        text: &str,
    ) -> Result<SendMessageResult, ClientError> {
        let deadline = tokio::time::Instant::now() + self.inner.config.send_retry_window;
        let mut retrying = false;
        loop {
            let request = Request::SendMessage(SendMessageRequest {
                room: room.into(),
                client_message_id: client_message_id.into(),
                text: text.into(),
            });
            match self.inner.request(request).await {
                Ok(reply::Result::SendMessage(r)) => return Ok(r),
                Ok(_) => return Err(ClientError::UnexpectedReply),
                Err(
                    e @ (ClientError::NotConnected
                    | ClientError::Disconnected
                    | ClientError::Timeout(_)),
                ) => {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    if left.is_zero() || self.wait_connected(left).await.is_err() {
                        return Err(e);
                    }
                    retrying = true;
                }
                // After a reconnect the room may not be rejoined yet.
                Err(
                    e @ ClientError::Server {
                        code: ErrorCode::NotAMember,
                        ..
                    },
                ) if retrying && lock(&self.inner.rooms).contains(room) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(e);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The last sequence seen in `room` (where a rejoin resumes from).
    pub fn last_seen(&self, room: &str) -> Option<u64> {
        lock(&self.inner.last_seen).get(room).copied()
    }

    /// The members of `room`.
    pub async fn list_members(&self, room: &str) -> Result<Vec<Member>, ClientError> {
        let request = Request::ListMembers(ListMembersRequest { room: room.into() });
        match self.inner.request(request).await? {
            reply::Result::ListMembers(r) => Ok(r.members),
            _ => Err(ClientError::UnexpectedReply),
        }
    }

    /// The rooms this connection is in, as the server sees it.
    pub async fn list_rooms(&self) -> Result<Vec<String>, ClientError> {
        match self
            .inner
            .request(Request::ListRooms(ListRoomsRequest {}))
            .await?
        {
            reply::Result::ListRooms(r) => Ok(r.rooms),
            _ => Err(ClientError::UnexpectedReply),
        }
    }

    /// A page of `room`'s stored history, oldest first: messages before
    /// sequence `from` (`Backward`; 0 = the latest) or after it (`Forward`).
    /// `limit` 0 means the server's default.
    pub async fn history(
        &self,
        room: &str,
        direction: HistoryDirection,
        from: u64,
        limit: u32,
    ) -> Result<HistoryResponse, ClientError> {
        let channel = lock(&self.inner.channel)
            .clone()
            .ok_or(ClientError::NotConnected)?;
        let mut request = tonic::Request::new(HistoryRequest {
            room: room.into(),
            direction: direction as i32,
            from_sequence: from,
            limit,
        });
        let invalid = |message| ClientError::Server {
            code: ErrorCode::InvalidArgument,
            message,
            retry_after_ms: 0,
        };
        set_name(request.metadata_mut(), &self.inner.config.name).map_err(invalid)?;
        if let Some(provider) = &self.inner.config.token {
            let token = provider
                .token()
                .await
                .map_err(|message| ClientError::Server {
                    code: ErrorCode::Unauthenticated,
                    message: format!("no token: {message}"),
                    retry_after_ms: 0,
                })?;
            set_bearer(request.metadata_mut(), &token).map_err(invalid)?;
        }
        request.set_timeout(self.inner.config.request_timeout);
        let mut grpc = ChatServiceClient::new(channel);
        let call = grpc.history(request);
        match tokio::time::timeout(self.inner.config.request_timeout, call).await {
            Err(_) => Err(ClientError::Timeout(self.inner.config.request_timeout)),
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(ClientError::Server {
                code: match status.code() {
                    tonic::Code::InvalidArgument => ErrorCode::InvalidArgument,
                    tonic::Code::Unavailable => ErrorCode::Unavailable,
                    tonic::Code::Unauthenticated => ErrorCode::Unauthenticated,
                    tonic::Code::PermissionDenied => ErrorCode::PermissionDenied,
                    tonic::Code::ResourceExhausted => ErrorCode::RateLimited,
                    _ => ErrorCode::Internal,
                },
                message: status.message().to_string(),
                // Set on RATE_LIMITED: when a retry succeeds.
                retry_after_ms: status
                    .metadata()
                    .get("chat-retry-after-ms")
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .unwrap_or(0),
            }),
        }
    }

    /// Round trip to the server.
    pub async fn ping(&self) -> Result<PongResult, ClientError> {
        let request = Request::Ping(PingRequest {
            client_time_unix_ms: now_unix_ms(),
        });
        match self.inner.request(request).await? {
            reply::Result::Pong(r) => Ok(r),
            _ => Err(ClientError::UnexpectedReply),
        }
    }
}

impl Inner {
    /// Sends one request on the current session and waits for its reply.
    async fn request(&self, request: Request) -> Result<reply::Result, ClientError> {
        self.request_as(request, None).await
    }

    /// [`Inner::request`], marking a rejoin of `rejoin_room`.
    async fn request_as(
        &self,
        request: Request,
        rejoin_room: Option<&str>,
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
        if let Some(room) = rejoin_room {
            lock(&self.rejoins).insert(request_id, room.to_string());
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
        lock(&self.rejoins).remove(&request_id);
        match outcome {
            Err(_) => Err(ClientError::Timeout(timeout)),
            Ok(Err(e)) => Err(e),
            Ok(Ok(result)) => to_result(result),
        }
    }

    /// Fails every waiting request: their session is gone.
    fn fail_pending(&self) {
        // Dropping the senders wakes each waiter with `Disconnected`.
        lock(&self.pending).clear();
    }
}

/// The connection task: sessions one after another until closed.
async fn run(inner: Arc<Inner>, events: mpsc::Sender<Event>) {
    let mut attempt: u32 = 0;
    loop {
        inner.state.send_replace(ConnectionState::Connecting);
        let end = session(&inner, &events).await;
        // Not connected from this moment: waiters must not see a dead session.
        inner.state.send_replace(ConnectionState::Connecting);
        *lock(&inner.outbound) = None;
        *lock(&inner.channel) = None;
        inner.fail_pending();
        if end.established {
            attempt = 0;
            let _ = events
                .send(Event::Disconnected {
                    notice: end.notice.clone(),
                    reason: end.reason.clone(),
                })
                .await;
        }
        if end.hopeless {
            let _ = events.send(Event::Stopped { reason: end.reason }).await;
            break;
        }
        if inner.close.is_cancelled() || !inner.config.reconnect {
            break;
        }
        attempt += 1;
        let delay = inner.config.backoff.delay(attempt - 1);
        let delay = match &end.notice {
            Some(n) if n.reconnect_after_ms > 0 => {
                delay.max(Duration::from_millis(n.reconnect_after_ms.into()))
            }
            _ => delay,
        };
        let _ = events
            .send(Event::Reconnecting {
                attempt,
                delay,
                error: end.reason,
            })
            .await;
        tokio::select! {
            _ = inner.close.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    inner.state.send_replace(ConnectionState::Closed);
}

/// Whether the server refused the token for a reason that the same token
/// keeps (`chat-auth-reason`): not an unknown signing key (keys rotate)
/// nor a `nbf` still ahead (clocks disagree), and not a server that gives
/// no reason.
fn refused_for_good(status: &tonic::Status) -> bool {
    let reason = status.metadata().get("chat-auth-reason");
    matches!(
        reason.and_then(|r| r.to_str().ok()),
        Some(
            "missing"
                | "malformed"
                | "expired"
                | "algorithm"
                | "signature"
                | "issuer"
                | "audience"
                | "claims"
        )
    )
}

fn ended(reason: impl Into<String>) -> SessionEnd {
    SessionEnd {
        notice: None,
        reason: reason.into(),
        established: false,
        hopeless: false,
    }
}

/// One session: connect, read the welcome, rejoin rooms, then relay frames
/// and ping until it ends.
async fn session(inner: &Arc<Inner>, events: &mpsc::Sender<Event>) -> SessionEnd {
    let config = &inner.config;
    let endpoint = match Endpoint::from_shared(config.server.clone()) {
        Ok(e) => e
            .connect_timeout(config.connect_timeout)
            .timeout(Duration::from_secs(24 * 3600))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(config.heartbeat_interval)
            .keep_alive_timeout(config.heartbeat_timeout)
            .keep_alive_while_idle(true),
        Err(e) => return ended(format!("invalid server URL {}: {e}", config.server)),
    };
    let endpoint = if config.server.starts_with("https://") {
        match endpoint.tls_config(config.tls.config()) {
            Ok(e) => e,
            Err(e) => {
                return ended(format!(
                    "TLS settings for {}: {}",
                    config.server,
                    error_chain(&e)
                ));
            }
        }
    } else {
        endpoint
    };
    let channel = tokio::select! {
        _ = inner.close.cancelled() => return ended("closed"),
        c = endpoint.connect() => match c {
            Ok(c) => c,
            Err(e) => return ended(format!("cannot connect to {}: {}", config.server, error_chain(&e))),
        },
    };
    let (tx, rx) = mpsc::channel::<ClientFrame>(256);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if let Err(e) = set_name(request.metadata_mut(), &config.name) {
        return ended(e);
    }
    if let Some(provider) = &config.token {
        let token = tokio::select! {
            _ = inner.close.cancelled() => return ended("closed"),
            t = provider.token() => t,
        };
        match token.map(|t| set_bearer(request.metadata_mut(), &t)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) | Err(e) => return ended(format!("no token: {e}")),
        }
    }
    *lock(&inner.channel) = Some(channel.clone());
    let mut client = ChatServiceClient::new(channel).max_decoding_message_size(16 * 1024 * 1024);
    let opened = tokio::time::timeout(config.connect_timeout, client.session(request)).await;
    let mut stream = match opened {
        Ok(Ok(response)) => response.into_inner(),
        Ok(Err(status)) => {
            let mut end = ended(format!("session refused: {}", status.message()));
            end.hopeless = status.code() == tonic::Code::Unauthenticated
                && config.token.as_ref().is_none_or(TokenProvider::is_fixed)
                && refused_for_good(&status);
            return end;
        }
        Err(_) => return ended("session not opened within the connect timeout"),
    };
    let welcome = match tokio::time::timeout(config.connect_timeout, stream.message()).await {
        Ok(Ok(Some(ServerFrame {
            frame: Some(Frame::Welcome(w)),
        }))) => w,
        Ok(Ok(Some(_))) => return ended("the server did not start with a welcome"),
        Ok(Ok(None)) => return ended("the server closed the session at once"),
        Ok(Err(status)) => return ended(format!("session failed: {}", status.message())),
        Err(_) => return ended("no welcome within the connect timeout"),
    };

    let cut = {
        let mut cut = lock(&inner.cut);
        *cut = CancellationToken::new();
        cut.clone()
    };
    *lock(&inner.outbound) = Some(tx.clone());
    inner
        .state
        .send_replace(ConnectionState::Connected(welcome.clone()));
    let _ = events.send(Event::Connected(welcome.clone())).await;
    // Rejoin concurrently: the replies arrive through the loop below.
    let rejoin = tokio::spawn(rejoin(inner.clone(), events.clone()));

    let mut interval = config.heartbeat_interval;
    if welcome.idle_timeout_ms > 0 {
        interval = interval.min(Duration::from_millis(
            u64::from(welcome.idle_timeout_ms) / 3,
        ));
    }
    let mut heartbeat = tokio::time::interval(interval.max(Duration::from_millis(10)));
    let mut last_heard = Instant::now();
    let mut notice = None;
    let reason = loop {
        tokio::select! {
            _ = inner.close.cancelled() => break "closed by the client".to_string(),
            _ = cut.cancelled() => break "reconnect requested".to_string(),
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > config.heartbeat_timeout {
                    break format!("nothing heard from the server for {:?}", config.heartbeat_timeout);
                }
                // Ping replies carry an id nobody waits for; they are dropped.
                let ping = ClientFrame {
                    request_id: inner.next_request.fetch_add(1, Ordering::Relaxed),
                    traceparent: String::new(),
                    request: Some(Request::Ping(PingRequest { client_time_unix_ms: now_unix_ms() })),
                };
                if tx.try_send(ping).is_err() && tx.is_closed() {
                    break "the session stream closed".to_string();
                }
            }
            frame = stream.message() => match frame {
                Ok(Some(frame)) => {
                    last_heard = Instant::now();
                    if let Some(Frame::Disconnect(n)) = &frame.frame {
                        notice = Some(n.clone());
                    }
                    dispatch(inner, events, frame).await;
                }
                Ok(None) => break match &notice {
                    Some(n) => format!("server closed the session: {}", n.message),
                    None => "server closed the session".to_string(),
                },
                Err(status) => break match &notice {
                    Some(n) => format!("server closed the session: {}", n.message),
                    None => format!("session failed: {}", status.message()),
                },
            },
        }
    };
    rejoin.abort();
    SessionEnd {
        notice,
        reason,
        established: true,
        hopeless: false,
    }
}

/// Rejoins every room the client is in, reporting each outcome.
async fn rejoin(inner: Arc<Inner>, events: mpsc::Sender<Event>) {
    let rooms: Vec<String> = lock(&inner.rooms).iter().cloned().collect();
    for room in rooms {
        // A join the server could not do now (its store or backplane is
        // busy, or the reply was late) is tried again within the session,
        // or the client would sit connected but outside the room.
        let mut delay = Duration::from_millis(100);
        loop {
            if !lock(&inner.rooms).contains(&room) {
                break;
            }
            let since = lock(&inner.last_seen).get(&room).copied();
            let request = Request::JoinRoom(JoinRoomRequest {
                room: room.clone(),
                since_sequence: since,
            });
            let retry = match inner.request_as(request, Some(&room)).await {
                // A reply was reported by `dispatch` when it arrived.
                Ok(_) => false,
                // After a late reply the join may have happened after all.
                Err(ClientError::Server {
                    code: ErrorCode::AlreadyAMember,
                    ..
                }) => false,
                Err(ClientError::Server { code, .. }) => retryable(code),
                Err(ClientError::UnexpectedReply) => false,
                Err(e @ ClientError::Timeout(_)) => {
                    let _ = events
                        .send(Event::Rejoined {
                            room: room.clone(),
                            result: Err(e),
                        })
                        .await;
                    true
                }
                // The session is gone; the next one rejoins.
                Err(e) => {
                    let _ = events
                        .send(Event::Rejoined {
                            room: room.clone(),
                            result: Err(e),
                        })
                        .await;
                    break;
                }
            };
            if !retry {
                break;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }
}

/// Whether a refused join may succeed if tried again later.
fn retryable(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::Unavailable | ErrorCode::RateLimited | ErrorCode::Internal
    )
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

/// Routes one server frame: replies to their waiters, the rest to events.
async fn dispatch(inner: &Inner, events: &mpsc::Sender<Event>, frame: ServerFrame) {
    let event = match frame.frame {
        Some(Frame::Reply(r)) => {
            let rejoined = lock(&inner.rejoins).remove(&r.request_id);
            if let (Some(room), Some(result)) = (rejoined, &r.result) {
                // Reported here, in stream order: before the backlog.
                let result = match to_result(result.clone()) {
                    Ok(reply::Result::JoinRoom(j)) => Ok(j),
                    Ok(_) => Err(ClientError::UnexpectedReply),
                    Err(e) => Err(e),
                };
                if let Ok(j) = &result {
                    // What the client has from here on: the backlog (each
                    // message raises it as it arrives), then live messages.
                    // The next rejoin resumes from it, also for rooms
                    // first joined through `ClientConfig::rooms`.
                    let mut last_seen = lock(&inner.last_seen);
                    let seen = last_seen.entry(room.clone()).or_insert(0);
                    *seen = (*seen).max(j.backlog_after_sequence);
                }
                if let Err(ClientError::Server { code, .. }) = &result
                    && !retryable(*code)
                    && *code != ErrorCode::AlreadyAMember
                {
                    // The server will never accept this room (e.g. an
                    // invalid name): stop trying. Other failures are retried
                    // on the next session.
                    lock(&inner.rooms).remove(&room);
                }
                let _ = events.send(Event::Rejoined { room, result }).await;
            }
            let waiter = lock(&inner.pending).remove(&r.request_id);
            if let (Some(waiter), Some(result)) = (waiter, r.result) {
                let _ = waiter.send(result);
            }
            return;
        }
        Some(Frame::Message(m)) => {
            let mut last_seen = lock(&inner.last_seen);
            if let Some(seen) = last_seen.get_mut(&m.room) {
                *seen = (*seen).max(m.sequence);
            }
            drop(last_seen);
            Event::Message(m)
        }
        Some(Frame::MemberJoined(m)) => Event::MemberJoined(m),
        Some(Frame::MemberLeft(m)) => Event::MemberLeft(m),
        Some(Frame::Notification(n)) => Event::Notification(n),
        // The notice is reported with `Disconnected` when the stream ends.
        Some(Frame::Disconnect(_)) | Some(Frame::Welcome(_)) | None => return,
    };
    // Waiting here when the application lags pushes back on the server,
    // which disconnects a client that falls too far behind.
    let _ = events.send(event).await;
}

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

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        // Transport errors often repeat their source's text; say it once.
        let text = cause.to_string();
        if !s.ends_with(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = cause.source();
    }
    s
}
