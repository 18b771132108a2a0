//! The session core: one client's session. It reads the client's requests
//! in order, answers each with exactly one reply, and ends with a
//! disconnect notice. It knows nothing of how frames travel: a transport
//! hands it decoded [`ClientFrame`]s (or an [`InboundError`]) and drains
//! the connection's outbox.

pub mod history;

use crate::auth::{Access, Identity};
use crate::config::SessionConfig;
use crate::domain::RequestError;
use crate::domain::User;
use crate::domain::direct;
use crate::domain::validate::{self, RoomName};
use crate::hub::{
    ConnId, Hub, JoinInfo, MemberPage, Outbox, OutboxStream, disconnect_frame, member, members,
    outbox,
};
use crate::limiter::{Action, Admission, Permit, Refusal};
use crate::metrics::{CloseReason, RateLimitedAction};
use crate::store::{Ban, Kind, NewMessage, ReadState, StoredMessage};
use crate::telemetry::trace::{self, TraceParent};
use chat_proto::EncodedFrame;
use chat_proto::v1::{
    ClientFrame, DirectConversation, DisconnectReason, JoinRoomResult, LeaveRoomResult,
    ListDirectResult, ListMembersRequest, ListRoomsResult, MarkReadResult, PongResult,
    RemovedFromRoom, Reply, SendMessageResult, TypingResult, Welcome, client_frame::Request, reply,
    server_frame::Frame,
};
use chat_util::now_unix_ms;
use futures::{Stream, StreamExt};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Why a transport could not hand the session its next frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundError {
    /// The connection broke (reset, I/O error): the session ends quietly.
    ConnectionLost(String),
    /// The client sent something that is not a valid frame (garbage,
    /// oversized): the session ends with `PROTOCOL_VIOLATION`.
    Malformed(String),
}

/// A session's state; owned by its task, so it needs no lock.
pub struct Session {
    hub: Arc<Hub>,
    conn: ConnId,
    user: User,
    identity: Identity,
    /// The connection's admission and rate limits; dropped with the session.
    permit: Permit,
    outbox: Outbox,
    rooms: BTreeSet<RoomName>,
    /// The room this connection last said it is typing in, until it says
    /// it stopped: its message there, its leave or its end tells the room
    /// it stopped, so nobody waits for the indicator to expire.
    typing_in: Option<RoomName>,
    idle_timeout: Duration,
    /// When the session ends with `MAX_LIFETIME`, if ever.
    max_lifetime: Option<Duration>,
    /// How long a shutdown's notice asks this client to wait before
    /// reconnecting: its own share of `session.reconnect_spread`, so the
    /// clients of an instance that stops come back spread out.
    reconnect_after_ms: u32,
    /// The `traceparent` of the Session call, parent of each request's
    /// span unless the frame carries its own.
    trace_parent: Option<TraceParent>,
    /// Store reads already started for the joins read ahead (a client
    /// rejoining its rooms sends its joins at once: their read states are
    /// asked together, not one round trip after another). Boxed and only
    /// while a run of joins is handled: idle sessions are many.
    prefetched: Option<Box<Prefetched>>,
}

/// Join states being read ahead, by room.
type Prefetched = HashMap<RoomName, tokio::task::JoinHandle<(Instant, JoinState)>>;

/// A join's read state and ban, as the hub reads them.
type JoinState = (Option<ReadState>, Option<Ban>);

/// How old a join state read ahead may be when its join uses it; older, it
/// is read again (a ban stored meanwhile must count).
const PREFETCH_FRESH: Duration = Duration::from_secs(1);

/// Frames a session reads ahead at most while it handles a join.
const READ_AHEAD: usize = 64;

/// Frames read ahead of the one being handled, in order (`None`: the end
/// of the stream).
type Ahead = VecDeque<Option<Result<ClientFrame, InboundError>>>;

/// The next inbound frame: one read ahead, else the stream's next.
async fn next_inbound<S>(
    inbound: &mut S,
    ahead: &mut Ahead,
) -> Option<Result<ClientFrame, InboundError>>
where
    S: Stream<Item = Result<ClientFrame, InboundError>> + Unpin,
{
    match ahead.pop_front() {
        Some(item) => item,
        None => inbound.next().await,
    }
}

impl Session {
    /// Admits `identity` from `address` by the connection limits (a
    /// refusal is counted and logged here, for every transport) and opens
    /// its session; returns the session and the outbox stream the
    /// transport drains.
    pub fn admit(
        hub: Arc<Hub>,
        admission: &Arc<Admission>,
        identity: Identity,
        address: Option<std::net::IpAddr>,
        timing: &SessionConfig,
        trace_parent: Option<TraceParent>,
    ) -> Result<(Session, OutboxStream), Refusal> {
        let permit = admission
            .admit(&identity.user.user_id, address)
            .inspect_err(|refusal| {
                hub.metrics().connections_refused.inc(refusal.reason());
                tracing::info!(reason = %refusal.reason(), user = %identity.user.user_id, ?address, "connection refused: {refusal}");
            })?;
        let (outbox, frames) = outbox(hub.limits().outbound_queue);
        let session = Session::open(hub, identity, permit, outbox, timing, trace_parent);
        Ok((session, frames))
    }

    /// Registers a new session for `identity`, queueing its `Welcome`.
    pub fn open(
        hub: Arc<Hub>,
        identity: Identity,
        permit: Permit,
        outbox: Outbox,
        timing: &SessionConfig,
        trace_parent: Option<TraceParent>,
    ) -> Session {
        let idle_timeout = timing.idle_timeout;
        let user = identity.user.clone();
        let conn = hub.register(user.user_id.clone(), outbox.clone());
        let limits = hub.limits();
        let welcome = Frame::Welcome(Welcome {
            connection_id: format!("{}-{conn}", hub.server_id()),
            you: Some(member(&user)),
            server_time_unix_ms: now_unix_ms(),
            max_text_bytes: limits.max_text_bytes as u32,
            max_rooms_per_connection: limits.max_rooms_per_connection as u32,
            idle_timeout_ms: idle_timeout.as_millis().min(u32::MAX as u128) as u32,
            server_id: hub.server_id().to_string(),
        });
        outbox.push(EncodedFrame::from(welcome));
        Session {
            hub,
            conn,
            user,
            identity,
            permit,
            outbox,
            rooms: BTreeSet::new(),
            typing_in: None,
            idle_timeout,
            max_lifetime: (!timing.max_lifetime.is_zero())
                .then(|| spread(timing.max_lifetime, conn)),
            reconnect_after_ms: reconnect_after_ms(timing.reconnect_spread, conn),
            trace_parent,
            prefetched: None,
        }
    }

    /// Runs the session until the client hangs up, breaks the protocol, goes
    /// idle or is kicked, or `shutdown` fires; then leaves every room.
    pub fn run<S>(mut self, inbound: S, shutdown: CancellationToken) -> impl Future<Output = ()>
    where
        S: Stream<Item = Result<ClientFrame, InboundError>> + Unpin,
    {
        // A plain function around one `async` block: an `async fn` would
        // hold its arguments beside the block that took them, and every
        // idle connection would pay for both.
        let span = tracing::info_span!("session", conn = self.conn, user = %self.user.user_id);
        async move {
            tracing::info!("session opened");
            self.hub
                .metrics()
                .connections_opened
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let why = self.serve(inbound, shutdown).await;
            self.hub.metrics().connections_closed.inc(why);
            if let Some(room) = self.typing_in.take() {
                // Boxed: not part of every idle session's state.
                Box::pin(self.hub.typing(&room, &self.user, false)).await;
            }
            for room in std::mem::take(&mut self.rooms) {
                self.hub.leave(&room, self.conn, &self.user).await;
            }
            self.hub.unregister(self.conn);
            tracing::info!(reason = %why, "session closed");
        }
        .instrument(span)
    }

    /// Reads and answers requests until something ends the session, then
    /// tells the client why.
    async fn serve<S>(&mut self, mut inbound: S, shutdown: CancellationToken) -> CloseReason
    where
        S: Stream<Item = Result<ClientFrame, InboundError>> + Unpin,
    {
        let ended = self.outbox.ended().clone();
        let removals = self.outbox.removals();
        let idle_timeout = self.idle_timeout;
        let idle = tokio::time::sleep(idle_timeout);
        tokio::pin!(idle);
        let expiry = tokio::time::sleep(self.token_left());
        tokio::pin!(expiry);
        // Allocated only when a lifetime is set: idle sessions are many.
        let mut lifetime = self.max_lifetime.map(|d| Box::pin(tokio::time::sleep(d)));
        let mut ahead = Ahead::new();
        let reason = loop {
            break tokio::select! {
                biased;
                _ = ended.cancelled() => match self.outbox.was_disconnected() {
                    true => CloseReason::Disconnected,
                    false => CloseReason::SlowConsumer,
                },
                _ = shutdown.cancelled() => CloseReason::ServerShuttingDown,
                _ = until(lifetime.as_mut()) => CloseReason::MaxLifetime,
                _ = &mut expiry => CloseReason::TokenExpired,
                _ = &mut idle => CloseReason::IdleTimeout,
                () = removals.wait() => {
                    for (room, reason) in self.outbox.take_removals() {
                        // Boxed, like a request: its state exists only
                        // while it runs, not in every idle session.
                        Box::pin(self.removed(room, &reason)).await;
                    }
                    continue;
                }
                next = next_inbound(&mut inbound, &mut ahead) => match next {
                    Some(Ok(frame)) => {
                        idle.as_mut().reset(Instant::now() + idle_timeout);
                        let join = matches!(frame.request, Some(Request::JoinRoom(_)));
                        if join {
                            self.read_ahead(&mut inbound, &mut ahead, &frame);
                        } else {
                            // The run of joins is over: what a refused one
                            // left read is stale by the next.
                            self.prefetched = None;
                        }
                        // The request runs to completion even if shutdown
                        // fires meanwhile: in-flight requests finish. Boxed:
                        // its state exists only while it runs, not in every
                        // idle session (1.4 KB, measured).
                        Box::pin(self.handle(frame)).await;
                        if ahead.is_empty() {
                            // The run of joins is handled: what a refused
                            // one left read is stale by the next.
                            self.prefetched = None;
                        }
                        continue;
                    }
                    Some(Err(InboundError::ConnectionLost(why))) => {
                        tracing::debug!(error = %why, "connection lost");
                        CloseReason::ConnectionLost
                    }
                    Some(Err(InboundError::Malformed(why))) => {
                        tracing::info!(error = %why, "protocol violation");
                        self.outbox.kick(disconnect_frame(
                            DisconnectReason::ProtocolViolation,
                            &format!("malformed frame: {why}"),
                            0,
                        ));
                        CloseReason::ProtocolViolation
                    }
                    None => CloseReason::ClientHungUp,
                },
            };
        };
        self.goodbye(reason);
        reason
    }

    /// Handling join `first`: reads ahead the frames already arrived (at
    /// most [`READ_AHEAD`]) and starts the store reads of the joins that
    /// follow it without another request between (a client rejoining its
    /// rooms), as many as the join rate lets through now. Each is then
    /// handled in order, as ever, with its read state already asked.
    fn read_ahead<S>(&mut self, inbound: &mut S, ahead: &mut Ahead, first: &ClientFrame)
    where
        S: Stream<Item = Result<ClientFrame, InboundError>> + Unpin,
    {
        // Only what has arrived: polled with the no-op waker, which tells a
        // transport that this is a peek, not the session waiting on it.
        let mut peek = std::task::Context::from_waker(std::task::Waker::noop());
        let joins = |item: Option<&Option<Result<ClientFrame, InboundError>>>| {
            matches!(
                item,
                None | Some(Some(Ok(ClientFrame {
                    request: Some(Request::JoinRoom(_)),
                    ..
                })))
            )
        };
        // A run of joins, and the frame that ends it at most: what is held
        // here beyond one frame is small.
        while ahead.len() < READ_AHEAD && joins(ahead.back()) {
            match std::pin::Pin::new(&mut *inbound).poll_next(&mut peek) {
                std::task::Poll::Ready(item) => ahead.push_back(item),
                std::task::Poll::Pending => break,
            }
        }
        let room_left = self
            .hub
            .limits()
            .max_rooms_per_connection
            .saturating_sub(self.rooms.len());
        let budget = self.permit.limits.joins_available().min(room_left);
        let frames = std::iter::once(first).chain(ahead.iter().map_while(|item| match item {
            Some(Ok(frame)) => Some(frame),
            _ => None,
        }));
        let mut rooms: Vec<RoomName> = Vec::new();
        for frame in frames {
            let Some(Request::JoinRoom(join)) = &frame.request else {
                break;
            };
            if rooms.len() >= budget {
                break;
            }
            // Only joins that will ask: a direct room's access is the
            // store's to say, so it is not read ahead.
            match RoomName::parse(&join.room) {
                Ok(room)
                    if !self.rooms.contains(&room)
                        && !rooms.contains(&room)
                        && !direct::is_direct(&room)
                        && self.identity.rooms.access(room.as_str()) != Access::None =>
                {
                    rooms.push(room)
                }
                _ => {}
            }
        }
        if rooms.len() < 2 {
            // A lone join asks for itself.
            return;
        }
        let prefetched = self.prefetched.get_or_insert_with(Box::default);
        for room in rooms {
            if prefetched.contains_key(&room) {
                continue;
            }
            let (hub, user, asked) = (self.hub.clone(), self.user.clone(), room.clone());
            let read = tokio::spawn(async move {
                let state = hub.join_state(&asked, &user).await;
                (Instant::now(), state)
            });
            prefetched.insert(room, read);
        }
    }

    /// How long the token stays valid (a far future without tokens).
    fn token_left(&self) -> Duration {
        self.identity
            .expires_at
            .map_or(Duration::from_secs(100 * 365 * 86400), |t| {
                t.duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO)
            })
    }

    /// Queues the notice that tells the client why the server ends its
    /// session, behind what is already queued. A slow consumer's and a
    /// protocol violation's notices went ahead with the kick; a client that
    /// hung up or lost its connection reads nothing more.
    /// A shutdown's notice asks the client to wait its share of the
    /// spread; the others let it reconnect as it likes (a session's
    /// lifetime is spread already).
    fn goodbye(&self, reason: CloseReason) {
        let (code, text, wait) = match reason {
            CloseReason::ServerShuttingDown => (
                DisconnectReason::ShuttingDown,
                "the server is shutting down; reconnect shortly",
                self.reconnect_after_ms,
            ),
            CloseReason::MaxLifetime => (
                DisconnectReason::MaxLifetime,
                "the session reached its longest lifetime; reconnect to resume",
                0,
            ),
            CloseReason::TokenExpired => (
                DisconnectReason::AuthExpired,
                "the token expired; reconnect with a fresh one",
                0,
            ),
            CloseReason::IdleTimeout => (
                DisconnectReason::IdleTimeout,
                "nothing received within the idle timeout",
                0,
            ),
            CloseReason::SlowConsumer
            | CloseReason::Disconnected
            | CloseReason::ProtocolViolation
            | CloseReason::ClientHungUp
            | CloseReason::ConnectionLost => return,
        };
        self.outbox.finish(disconnect_frame(code, text, wait));
    }

    /// Handles one request, in its own span when traces are on.
    async fn handle(&mut self, frame: ClientFrame) {
        if !trace::enabled() {
            return self.handle_request(frame).await;
        }
        let kind = match &frame.request {
            Some(Request::JoinRoom(_)) => "chat.join",
            Some(Request::LeaveRoom(_)) => "chat.leave",
            Some(Request::SendMessage(_)) => "chat.send",
            Some(Request::ListMembers(_)) => "chat.list_members",
            Some(Request::ListRooms(_)) => "chat.list_rooms",
            Some(Request::Ping(_)) => "chat.ping",
            Some(Request::History(_)) => "chat.history",
            Some(Request::Typing(_)) => "chat.typing",
            Some(Request::EditMessage(_)) => "chat.edit",
            Some(Request::DeleteMessage(_)) => "chat.delete",
            Some(Request::MarkRead(_)) => "chat.mark_read",
            Some(Request::React(_)) => "chat.react",
            Some(Request::OpenDirect(_)) => "chat.open_direct",
            Some(Request::ListDirect(_)) => "chat.list_direct",
            None => "chat.unknown",
        };
        let parent = match frame.traceparent.as_str() {
            "" => self.trace_parent,
            own => TraceParent::parse(own),
        };
        let span = trace::request_span(kind, frame.request_id, self.hub.server_id(), parent);
        self.handle_request(frame).instrument(span).await
    }

    async fn handle_request(&mut self, frame: ClientFrame) {
        let request_id = frame.request_id;
        let limited = match &frame.request {
            Some(Request::JoinRoom(_)) => Some((Action::Join, "joins")),
            // Opening a conversation writes to the store and tells every
            // instance: limited like a join.
            Some(Request::OpenDirect(_)) => Some((Action::Join, "joins")),
            // A listing reads up to 500 rows: limited like a join too.
            Some(Request::ListDirect(_)) => Some((Action::Join, "joins")),
            // A request to a room the connection is not in is refused
            // below and costs no token (a client retrying while it
            // rejoins). Edits, deletes and reactions are numbered and
            // stored like messages, and share their limit.
            Some(Request::SendMessage(r)) if self.is_in(&r.room) => {
                Some((Action::Send, "messages"))
            }
            Some(Request::EditMessage(r)) if self.is_in(&r.room) => {
                Some((Action::Send, "messages"))
            }
            Some(Request::DeleteMessage(r)) if self.is_in(&r.room) => {
                Some((Action::Send, "messages"))
            }
            Some(Request::React(r)) if self.is_in(&r.room) => Some((Action::Send, "messages")),
            Some(Request::MarkRead(r)) if self.is_in(&r.room) => Some((Action::Read, "read marks")),
            // Likewise for typing, and in a read-only room.
            Some(Request::Typing(r)) if self.writable_room(&r.room).is_ok() => {
                Some((Action::Typing, "typing announcements"))
            }
            _ => None,
        };
        if let Some((action, what)) = limited
            && let Err(retry_after) = self.permit.limits.check(action)
        {
            // Over a limit: nothing is stored, delivered or changed.
            tracing::debug!(request_id, what, ?retry_after, "rate limited");
            self.hub.metrics().rate_limited.inc(match action {
                Action::Send => RateLimitedAction::Send,
                Action::Join => RateLimitedAction::Join,
                Action::Typing => RateLimitedAction::Typing,
                Action::Read => RateLimitedAction::Read,
            });
            self.reply(
                request_id,
                Err(RequestError::RateLimited { what, retry_after }),
            );
            return;
        }
        let result = match frame.request {
            Some(Request::JoinRoom(r)) => {
                match self.join(request_id, &r.room, r.since_sequence).await {
                    // The hub queued the reply, in order with presence events.
                    Ok(()) => return,
                    Err(e) => Err(e),
                }
            }
            Some(Request::LeaveRoom(r)) => self.leave(&r.room).await,
            Some(Request::SendMessage(r)) => self.send(&r.room, r.client_message_id, r.text).await,
            Some(Request::EditMessage(r)) => {
                let edit = Kind::Edit(r.sequence);
                self.change(&r.room, edit, r.client_message_id, r.text)
                    .await
                    .map(reply::Result::EditMessage)
            }
            Some(Request::MarkRead(r)) => self.mark_read(&r.room, r.sequence).await,
            Some(Request::OpenDirect(r)) => self.open_direct(&r.user_id).await,
            Some(Request::ListDirect(_)) => self.list_direct().await,
            Some(Request::React(r)) => {
                let kind = match r.add {
                    true => Kind::ReactionAdded(r.sequence),
                    false => Kind::ReactionRemoved(r.sequence),
                };
                match validate::emoji(&r.emoji) {
                    Ok(_) => self
                        .change(&r.room, kind, r.client_message_id, r.emoji)
                        .await
                        .map(reply::Result::React),
                    Err(e) => Err(e),
                }
            }
            Some(Request::DeleteMessage(r)) => {
                let delete = Kind::Delete(r.sequence);
                self.change(&r.room, delete, r.client_message_id, String::new())
                    .await
                    .map(reply::Result::DeleteMessage)
            }
            Some(Request::ListMembers(r)) => match self.list_members(request_id, &r) {
                // The hub queued the reply, in order with presence events.
                Ok(()) => return,
                Err(e) => Err(e),
            },
            Some(Request::ListRooms(_)) => Ok(reply::Result::ListRooms(ListRoomsResult {
                rooms: self.rooms.iter().map(|r| r.to_string()).collect(),
            })),
            Some(Request::History(r)) => {
                history::page(&self.hub, &self.identity, self.permit.check_history(), r)
                    .await
                    .map(reply::Result::History)
            }
            Some(Request::Typing(r)) => match self.writable_room(&r.room) {
                Ok(room) => {
                    self.typing(room, r.typing).await;
                    Ok(reply::Result::Typing(TypingResult {}))
                }
                Err(e) => Err(e),
            },
            Some(Request::Ping(p)) => Ok(reply::Result::Pong(PongResult {
                client_time_unix_ms: p.client_time_unix_ms,
                server_time_unix_ms: now_unix_ms(),
            })),
            None => Err(RequestError::InvalidArgument(
                "frame carries no request (unknown request kind?)".into(),
            )),
        };
        self.reply(request_id, result);
    }

    /// Queues the one reply to request `request_id`.
    fn reply(&self, request_id: u64, result: Result<reply::Result, RequestError>) {
        let result = result.unwrap_or_else(|e| {
            tracing::debug!(request_id, code = ?e.code(), error = %e, "request refused");
            if trace::enabled() {
                trace::record_error(&tracing::Span::current(), e.code_name());
            }
            reply::Result::Error(e.to_wire())
        });
        let reply = Frame::Reply(Reply {
            request_id,
            result: Some(result),
        });
        self.outbox.push(EncodedFrame::from(reply));
    }

    /// Whether this connection is in the room named `room` (not parsed).
    fn is_in(&self, room: &str) -> bool {
        self.rooms.iter().any(|m| m.as_str() == room)
    }

    fn member_room(&self, room: &str) -> Result<RoomName, RequestError> {
        let room = RoomName::parse(room)?;
        if !self.rooms.contains(&room) {
            return Err(RequestError::NotAMember(room.to_string()));
        }
        Ok(room)
    }

    async fn join(
        &mut self,
        request_id: u64,
        room: &str,
        since: Option<u64>,
    ) -> Result<(), RequestError> {
        let room = RoomName::parse(room)?;
        if self.rooms.contains(&room) {
            return Err(RequestError::AlreadyAMember(room.to_string()));
        }
        if history::room_access(&self.hub, &self.identity, &room).await? == Access::None {
            return Err(RequestError::PermissionDenied(format!(
                "you may not join room {room}"
            )));
        }
        let max = self.hub.limits().max_rooms_per_connection;
        if self.rooms.len() >= max {
            return Err(RequestError::TooManyRooms(max));
        }
        // The joiner's read position and unread count (zeros if the store
        // does not answer in time: the join does not wait on it longer),
        // and a ban, in one store query.
        let prefetched = match self.prefetched.as_mut().and_then(|p| p.remove(&room)) {
            Some(read) => read.await.ok(),
            None => None,
        };
        let (read, ban) = match prefetched {
            Some((at, state)) if at.elapsed() < PREFETCH_FRESH => state,
            _ => self.hub.join_state(&room, &self.user).await,
        };
        if let Some(ban) = ban {
            return Err(RequestError::Banned {
                room: room.to_string(),
                until: ban.until_ms,
                reason: ban.reason,
            });
        }
        let read = read.unwrap_or_default();
        let reply = |page: &MemberPage, join: &JoinInfo| {
            EncodedFrame::from(Frame::Reply(Reply {
                request_id,
                result: Some(reply::Result::JoinRoom(JoinRoomResult {
                    room: room.to_string(),
                    members: page.members.iter().map(member).collect(),
                    member_count: page.member_count(),
                    members_next_page: page.next_page(),
                    latest_sequence: join.latest_sequence,
                    backlog_after_sequence: join.backlog_after,
                    backlog_incomplete: join.backlog_incomplete,
                    sequence_reset: join.sequence_reset,
                    read_sequence: read.read_sequence,
                    unread_count: read.unread,
                })),
            }))
        };
        self.hub
            .join(
                &room,
                self.conn,
                &self.user,
                self.outbox.clone(),
                since,
                reply,
            )
            .await?;
        tracing::debug!(%room, "joined");
        self.rooms.insert(room);
        Ok(())
    }

    /// Tells the room this user is typing there (or stopped), and the
    /// room it was typing in before that it stopped there.
    async fn typing(&mut self, room: RoomName, typing: bool) {
        let hub = self.hub.clone();
        hub.metrics()
            .typing_received
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match (self.typing_in.take(), typing) {
            (Some(before), true) if before != room => {
                hub.typing(&before, &self.user, false).await;
            }
            (Some(before), false) if before != room => self.typing_in = Some(before),
            _ => {}
        }
        hub.typing(&room, &self.user, typing).await;
        if typing {
            self.typing_in = Some(room);
        }
    }

    /// This connection's message or leave ended its typing in `room`, if
    /// it was: the room is told.
    async fn stopped_typing(&mut self, room: &RoomName) {
        if self.typing_in.as_ref() == Some(room) {
            self.typing_in = None;
            self.hub.typing(room, &self.user, false).await;
        }
    }

    /// An application removed this user from `room`: if this connection
    /// is in it, it leaves it and the client is told why.
    async fn removed(&mut self, room: RoomName, reason: &str) {
        if !self.rooms.contains(&room) {
            return;
        }
        self.stopped_typing(&room).await;
        self.rooms.remove(&room);
        self.hub.leave(&room, self.conn, &self.user).await;
        tracing::info!(%room, reason, "removed by the server API");
        self.outbox
            .push(EncodedFrame::from(Frame::Removed(RemovedFromRoom {
                room: room.to_string(),
                reason: reason.to_string(),
            })));
    }

    async fn leave(&mut self, room: &str) -> Result<reply::Result, RequestError> {
        let room = self.member_room(room)?;
        self.stopped_typing(&room).await;
        self.rooms.remove(&room);
        self.hub.leave(&room, self.conn, &self.user).await;
        tracing::debug!(%room, "left");
        Ok(reply::Result::LeaveRoom(LeaveRoomResult {
            room: room.to_string(),
        }))
    }

    /// `room`, if this connection is in it and may write there (send, or
    /// say it is typing).
    fn writable_room(&self, room: &str) -> Result<RoomName, RequestError> {
        let room = self.member_room(room)?;
        // Only its pair could join a direct conversation; both write there.
        if direct::is_direct(&room) {
            return Ok(room);
        }
        if self.identity.rooms.access(room.as_str()) != Access::Write {
            return Err(RequestError::PermissionDenied(format!(
                "room {room} is read-only for you"
            )));
        }
        Ok(room)
    }

    async fn send(
        &mut self,
        room: &str,
        client_message_id: String,
        text: String,
    ) -> Result<reply::Result, RequestError> {
        let room = self.writable_room(room)?;
        validate::client_message_id(&client_message_id)?;
        validate::message_text(&text, self.hub.limits().max_text_bytes)?;
        let message = NewMessage {
            room,
            sender: self.user.clone(),
            client_message_id,
            text,
            kind: Kind::Message,
        };
        // The message itself ends its sender's typing there, if it was.
        let stored = if self.typing_in.as_ref() == Some(&message.room) {
            self.typing_in = None;
            self.hub.send_ending_typing(message).await?
        } else {
            self.hub.send(message).await?
        };
        tracing::debug!(room = %stored.message.room, sequence = stored.sequence, "message sent");
        Ok(reply::Result::SendMessage(acknowledgement(stored)))
    }

    /// Opens (or finds) this user's direct conversation with `peer`.
    async fn open_direct(&mut self, peer: &str) -> Result<reply::Result, RequestError> {
        let peer = direct::peer(peer, &self.user.user_id)?;
        let conversation = self.hub.open_direct(&self.user, peer).await?;
        tracing::info!(room = %conversation.room, "direct conversation opened");
        Ok(reply::Result::OpenDirect(DirectConversation {
            room: conversation.room.to_string(),
            peer: Some(member(conversation.peer(&self.user.user_id))),
        }))
    }

    /// This user's direct conversations.
    async fn list_direct(&mut self) -> Result<reply::Result, RequestError> {
        let listed = self
            .hub
            .store()
            .list_direct(&self.user.user_id)
            .await
            .map_err(|e| RequestError::Unavailable(e.to_string()))?;
        let me = &self.user.user_id;
        Ok(reply::Result::ListDirect(ListDirectResult {
            conversations: listed
                .iter()
                .map(|d| DirectConversation {
                    room: d.room.to_string(),
                    peer: Some(member(d.peer(me))),
                })
                .collect(),
        }))
    }

    /// Moves this user's read position in `room` (a member's) up to
    /// `sequence`.
    async fn mark_read(
        &mut self,
        room: &str,
        sequence: u64,
    ) -> Result<reply::Result, RequestError> {
        let room = self.member_room(room)?;
        let state = self.hub.mark_read(&room, &self.user, sequence).await?;
        Ok(reply::Result::MarkRead(MarkReadResult {
            room: room.to_string(),
            read_sequence: state.read_sequence,
            unread_count: state.unread,
        }))
    }

    /// An edit (with its new `text`) or a delete of an earlier message.
    /// The author needs write access to the room; an operator (a token with
    /// `admin`) deletes any message of a room it is a member of.
    async fn change(
        &mut self,
        room: &str,
        kind: Kind,
        client_message_id: String,
        text: String,
    ) -> Result<SendMessageResult, RequestError> {
        let operator = self.identity.admin;
        let room = match kind {
            Kind::Delete(_) if operator => self.member_room(room)?,
            _ => self.writable_room(room)?,
        };
        validate::target_sequence(kind.target())?;
        validate::client_message_id(&client_message_id)?;
        if let Kind::Edit(_) = kind {
            validate::message_text(&text, self.hub.limits().max_text_bytes)?;
        }
        let change = NewMessage {
            room,
            sender: self.user.clone(),
            client_message_id,
            text,
            kind,
        };
        let stored = self.hub.change(change, operator).await?;
        tracing::debug!(room = %stored.message.room, sequence = stored.sequence, ?kind, "message changed");
        Ok(acknowledgement(stored))
    }

    /// Queues the reply to `ListMembers` request `request_id`: read and
    /// queued under the presence lock, so the presence events before and
    /// after it are exactly the changes it does not and does show.
    fn list_members(
        &self,
        request_id: u64,
        request: &ListMembersRequest,
    ) -> Result<(), RequestError> {
        let room = self.member_room(&request.room)?;
        let limit = usize::try_from(request.limit).unwrap_or(usize::MAX);
        let (after, limit) = members::page_request(&request.page_after, limit)?;
        self.hub
            .queue_member_page(&room, after.as_ref(), limit, &self.outbox, |page| {
                EncodedFrame::from(Frame::Reply(Reply {
                    request_id,
                    result: Some(reply::Result::ListMembers(members::list_result(
                        room.as_str(),
                        page,
                    ))),
                }))
            });
        Ok(())
    }
}

/// The reply to a send, an edit or a delete: what the store numbered.
fn acknowledgement(stored: StoredMessage) -> SendMessageResult {
    SendMessageResult {
        message_id: stored.id,
        room: stored.message.room.to_string(),
        sequence: stored.sequence,
        server_time_unix_ms: stored.time_unix_ms,
        client_message_id: stored.message.client_message_id,
    }
}

/// `lifetime` give or take 10 %, the same for a given `conn`, spread
/// evenly over connections (so sessions opened together end apart).
fn spread(lifetime: Duration, conn: ConnId) -> Duration {
    lifetime.mul_f64(0.9 + 0.2 * crate::domain::random::fraction(conn))
}

/// Connection `conn`'s wait after a shutdown, in [0, `spread`] and evenly
/// spread over consecutive connections (not the same fraction as its
/// lifetime's), in milliseconds.
fn reconnect_after_ms(spread: Duration, conn: ConnId) -> u32 {
    let fraction = crate::domain::random::fraction(conn ^ 0x5bd1_e995_5bd1_e995);
    let ms = spread.as_millis().min(u128::from(u32::MAX)) as f64 * fraction;
    ms as u32
}

/// Waits for `deadline`, or forever without one.
async fn until(deadline: Option<&mut std::pin::Pin<Box<tokio::time::Sleep>>>) {
    match deadline {
        Some(deadline) => deadline.await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_spread_within_ten_percent() {
        let base = Duration::from_secs(3600);
        let spread: Vec<Duration> = (1..=1000).map(|c| spread(base, c)).collect();
        assert!(
            spread
                .iter()
                .all(|d| *d >= base.mul_f64(0.9) && *d < base.mul_f64(1.1))
        );
        let early = spread.iter().filter(|d| **d < base).count();
        assert!(
            (400..600).contains(&early),
            "{early} of 1000 below the middle"
        );
        assert_eq!(
            spread[0],
            super::spread(base, 1),
            "the same for a connection"
        );
    }

    #[test]
    fn shutdown_waits_spread_over_the_whole_window() {
        let window = Duration::from_secs(2);
        let waits: Vec<u32> = (1..=1000).map(|c| reconnect_after_ms(window, c)).collect();
        assert!(waits.iter().all(|&w| w <= 2000));
        // Each fifth of the window gets about a fifth of the connections:
        // they come back at an even rate, not in one instant.
        for fifth in 0..5u32 {
            let n = waits.iter().filter(|&&w| w / 400 == fifth).count();
            assert!((150..250).contains(&n), "{n} of 1000 in fifth {fifth}");
        }
        assert_eq!(
            reconnect_after_ms(Duration::ZERO, 7),
            0,
            "no spread asks no wait"
        );
        let lifetime = Duration::from_secs(1000);
        let same = (1..=1000)
            .filter(|&c| {
                let w = u64::from(reconnect_after_ms(window, c)) / 200;
                let l = (spread(lifetime, c).as_secs() - 900) / 20;
                w == l
            })
            .count();
        assert!(
            same < 200,
            "{same} of 1000 share a tenth with their lifetime's"
        );
    }
}
