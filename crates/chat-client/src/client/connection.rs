//! The connection task: sessions one after another until the client is
//! closed. Each session opens the stream (endpoint, transport, identity,
//! the call, the welcome), goes live, rejoins the client's rooms and relays
//! frames with a heartbeat until it ends; then the task waits out the
//! backoff and starts the next.

use super::dispatch::dispatch;
use super::rejoin::rejoin;
use super::{ClientConfig, ConnectionState, Inner, set_name};
use crate::event::Event;
use crate::token::{TokenProvider, set_bearer};
use chat_proto::v1::chat_service_client::ChatServiceClient;
use chat_proto::v1::{
    ClientFrame, DisconnectNotice, PingRequest, ServerFrame, Welcome, client_frame::Request,
    server_frame::Frame,
};
use chat_util::{Chain, lock, now_unix_ms};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;
use tonic::transport::{Channel, Endpoint};

/// The longest wait taken from a server (a shutdown notice's, or a
/// refusal for its pace); the TypeScript client's bound too.
const MAX_SERVER_WAIT: Duration = Duration::from_secs(60);

/// How one session ended.
struct SessionEnd {
    /// The server's notice, if it sent one before closing.
    notice: Option<DisconnectNotice>,
    /// What ended it, in words.
    reason: String,
    /// Whether a session was established (resets the backoff).
    established: bool,
    /// Whether another attempt cannot succeed (credentials refused, and no
    /// others to try).
    hopeless: bool,
    /// The server refused the session for its pace of new sessions and
    /// said when to come back.
    retry_after: Option<Duration>,
}

/// A session that never went live: ended by `reason`.
fn ended(reason: impl Into<String>) -> SessionEnd {
    SessionEnd {
        notice: None,
        reason: reason.into(),
        established: false,
        hopeless: false,
        retry_after: None,
    }
}

/// The connection task: sessions one after another until closed.
pub(super) async fn run(inner: Arc<Inner>, events: mpsc::Sender<Event>) {
    let mut attempt: u32 = 0;
    loop {
        inner.state.send_replace(ConnectionState::Connecting);
        let end = session(&inner, &events).await;
        forget_session(&inner);
        if end.established {
            attempt = 0;
            let _ = events
                .send(Event::Disconnected {
                    notice: end.notice.clone(),
                    reason: end.reason.clone(),
                })
                .await;
        }
        if inner.close.is_cancelled() {
            break;
        }
        // Stopped for good: credentials the server keeps refusing, or a
        // session an application ended (a person signs in again, the
        // client does not). Closed from here on: requests fail `Closed`.
        let stopped = match end.notice.as_ref().filter(|n| n.stay_disconnected) {
            _ if end.hopeless => Some(end.reason.clone()),
            Some(notice) if !notice.message.is_empty() => Some(notice.message.clone()),
            Some(_) => Some(end.reason.clone()),
            None => None,
        };
        if let Some(reason) = stopped {
            inner.close.cancel();
            let _ = events.send(Event::Stopped { reason }).await;
            break;
        }
        if inner.close.is_cancelled() || !inner.config.reconnect {
            break;
        }
        attempt += 1;
        let delay = reconnect_delay(&inner.config, attempt, &end);
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

/// Not connected from this moment: waiters must not see a dead session.
fn forget_session(inner: &Inner) {
    inner.state.send_replace(ConnectionState::Connecting);
    *lock(&inner.outbound) = None;
    *lock(&inner.channel) = None;
    inner.fail_pending();
}

/// The wait before reconnect `attempt` (from 1) after `end`: the
/// backoff's, or longer if the server asked for it: the wait its notice
/// named, or, when it refused the session for its pace, the retry time
/// stretched by a random share of itself (up to twice), so that the
/// clients it refused together do not return together.
fn reconnect_delay(config: &ClientConfig, attempt: u32, end: &SessionEnd) -> Duration {
    let mut delay = config.backoff.delay(attempt - 1);
    if let Some(n) = &end.notice
        && n.reconnect_after_ms > 0
    {
        delay = delay.max(Duration::from_millis(n.reconnect_after_ms.into()).min(MAX_SERVER_WAIT));
    }
    if let Some(retry) = end.retry_after {
        delay = delay.max(retry.mul_f64(1.0 + rand::random::<f64>()));
    }
    delay
}

/// One session: open it, go live, rejoin the rooms, then relay frames and
/// ping until it ends.
async fn session(inner: &Arc<Inner>, events: &mpsc::Sender<Event>) -> SessionEnd {
    let mut open = match open_session(inner).await {
        Ok(open) => open,
        Err(end) => return end,
    };
    let cut = go_live(inner, events, &open).await;
    // Rejoin concurrently: the replies arrive through the relay loop.
    let rejoin = tokio::spawn(rejoin(inner.clone(), events.clone()));
    let (reason, notice) = relay(inner, events, &mut open, &cut).await;
    rejoin.abort();
    SessionEnd {
        notice,
        reason,
        established: true,
        hopeless: false,
        retry_after: None,
    }
}

/// A session stream that is open and has said welcome.
struct OpenSession {
    /// Frames to the server: requests and pings.
    tx: mpsc::Sender<ClientFrame>,
    /// Frames from the server.
    stream: Streaming<ServerFrame>,
    /// The server's first frame.
    welcome: Welcome,
}

/// Connects, identifies the caller, opens the Session call and reads its
/// welcome; any failure ends the attempt.
async fn open_session(inner: &Inner) -> Result<OpenSession, SessionEnd> {
    let config = &inner.config;
    let endpoint = endpoint(config).map_err(ended)?;
    let channel = tokio::select! {
        _ = inner.close.cancelled() => return Err(ended("closed")),
        c = endpoint.connect() => c.map_err(|e| {
            ended(format!("cannot connect to {}: {}", config.server, Chain(&e)))
        })?,
    };
    let (tx, rx) = mpsc::channel::<ClientFrame>(256);
    let request = session_request(inner, rx).await?;
    *lock(&inner.channel) = Some(channel.clone());
    let mut stream = open_stream(config, channel, request).await?;
    let welcome = read_welcome(config, &mut stream).await?;
    Ok(OpenSession {
        tx,
        stream,
        welcome,
    })
}

/// The server's endpoint with the client's timeouts, keep-alive and, for
/// `https://`, TLS.
fn endpoint(config: &ClientConfig) -> Result<Endpoint, String> {
    let endpoint = Endpoint::from_shared(config.server.clone())
        .map_err(|e| format!("invalid server URL {}: {e}", config.server))?
        .connect_timeout(config.connect_timeout)
        .timeout(Duration::from_secs(24 * 3600))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(config.heartbeat_interval)
        .keep_alive_timeout(config.heartbeat_timeout)
        .keep_alive_while_idle(true);
    if !config.server.starts_with("https://") {
        return Ok(endpoint);
    }
    endpoint
        .tls_config(config.tls.config())
        .map_err(|e| format!("TLS settings for {}: {}", config.server, Chain(&e)))
}

/// The Session call's request: the outgoing frames from `rx`, the caller's
/// name and, where there is a provider, its current token.
async fn session_request(
    inner: &Inner,
    rx: mpsc::Receiver<ClientFrame>,
) -> Result<tonic::Request<ReceiverStream<ClientFrame>>, SessionEnd> {
    let config = &inner.config;
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    set_name(request.metadata_mut(), &config.name).map_err(ended)?;
    if let Some(provider) = &config.token {
        let token = tokio::select! {
            _ = inner.close.cancelled() => return Err(ended("closed")),
            t = provider.token() => t,
        };
        match token.map(|t| set_bearer(request.metadata_mut(), &t)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) | Err(e) => return Err(ended(format!("no token: {e}"))),
        }
    }
    Ok(request)
}

/// Makes the Session call on `channel`. A refusal of credentials that the
/// client cannot replace makes the end hopeless.
async fn open_stream(
    config: &ClientConfig,
    channel: Channel,
    request: tonic::Request<ReceiverStream<ClientFrame>>,
) -> Result<Streaming<ServerFrame>, SessionEnd> {
    let mut client = ChatServiceClient::new(channel).max_decoding_message_size(16 * 1024 * 1024);
    match tokio::time::timeout(config.connect_timeout, client.session(request)).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => {
            let mut end = ended(format!("session refused: {}", status.message()));
            end.hopeless = status.code() == tonic::Code::Unauthenticated
                && config.token.as_ref().is_none_or(TokenProvider::is_fixed)
                && refused_for_good(&status);
            end.retry_after = (status.code() == tonic::Code::ResourceExhausted)
                .then(|| status.metadata().get("chat-retry-after-ms"))
                .flatten()
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .filter(|&ms| ms > 0)
                .map(|ms| Duration::from_millis(ms).min(MAX_SERVER_WAIT));
            Err(end)
        }
        Err(_) => Err(ended("session not opened within the connect timeout")),
    }
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

/// The stream's first frame, which must be the welcome.
async fn read_welcome(
    config: &ClientConfig,
    stream: &mut Streaming<ServerFrame>,
) -> Result<Welcome, SessionEnd> {
    match tokio::time::timeout(config.connect_timeout, stream.message()).await {
        Ok(Ok(Some(ServerFrame {
            frame: Some(Frame::Welcome(w)),
        }))) => Ok(w),
        Ok(Ok(Some(_))) => Err(ended("the server did not start with a welcome")),
        Ok(Ok(None)) => Err(ended("the server closed the session at once")),
        Ok(Err(status)) => Err(ended(format!("session failed: {}", status.message()))),
        Err(_) => Err(ended("no welcome within the connect timeout")),
    }
}

/// Makes the open session the current one: requests go out on it, the
/// state says connected and the application hears `Connected`. Returns the
/// session's fresh cut token ([`Client::reconnect`](super::Client::reconnect)).
async fn go_live(
    inner: &Inner,
    events: &mpsc::Sender<Event>,
    open: &OpenSession,
) -> CancellationToken {
    let cut = {
        let mut cut = lock(&inner.cut);
        *cut = CancellationToken::new();
        cut.clone()
    };
    *lock(&inner.outbound) = Some(open.tx.clone());
    inner
        .state
        .send_replace(ConnectionState::Connected(open.welcome.clone()));
    let _ = events.send(Event::Connected(open.welcome.clone())).await;
    cut
}

/// Relays the server's frames to [`dispatch`] and pings on the heartbeat
/// until the session ends: closed, cut, silent too long or closed by the
/// server. Returns why, and the server's notice if it sent one.
async fn relay(
    inner: &Arc<Inner>,
    events: &mpsc::Sender<Event>,
    open: &mut OpenSession,
    cut: &CancellationToken,
) -> (String, Option<DisconnectNotice>) {
    let config = &inner.config;
    let OpenSession {
        tx,
        stream,
        welcome,
    } = open;
    let mut heartbeat = tokio::time::interval(heartbeat_period(config, welcome));
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
                if tx.try_send(ping(inner)).is_err() && tx.is_closed() {
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
                Ok(None) => break closed_reason(notice.as_ref(), None),
                Err(status) => break closed_reason(notice.as_ref(), Some(&status)),
            },
        }
    };
    (reason, notice)
}

/// How often to ping: the configured interval, or a third of the server's
/// idle timeout if that is shorter (at least every 10 ms).
fn heartbeat_period(config: &ClientConfig, welcome: &Welcome) -> Duration {
    let mut interval = config.heartbeat_interval;
    if welcome.idle_timeout_ms > 0 {
        interval = interval.min(Duration::from_millis(
            u64::from(welcome.idle_timeout_ms) / 3,
        ));
    }
    interval.max(Duration::from_millis(10))
}

/// A heartbeat ping. Its reply carries an id nobody waits for; it is dropped.
fn ping(inner: &Inner) -> ClientFrame {
    ClientFrame {
        request_id: inner.next_request.fetch_add(1, Ordering::Relaxed),
        traceparent: String::new(),
        request: Some(Request::Ping(PingRequest {
            client_time_unix_ms: now_unix_ms(),
        })),
    }
}

/// Why the server's side of the stream ended: its notice if it sent one,
/// else the stream's error (`None`: closed cleanly).
fn closed_reason(notice: Option<&DisconnectNotice>, status: Option<&tonic::Status>) -> String {
    match (notice, status) {
        (Some(n), _) => format!("server closed the session: {}", n.message),
        (None, None) => "server closed the session".to_string(),
        (None, Some(status)) => format!("session failed: {}", status.message()),
    }
}
