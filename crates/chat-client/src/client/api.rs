//! The public [`Client`] handle: starting it, watching its connection, and
//! its requests (join, leave, send, list, history, ping).

use super::{ClientConfig, Inner, Join, connection, set_name};
use crate::error::ClientError;
use crate::event::Events;
use crate::token::set_bearer;
use chat_proto::v1::chat_service_client::ChatServiceClient;
use chat_proto::v1::{
    DeleteMessageRequest, DirectConversation, EditMessageRequest, ErrorCode, HistoryDirection,
    HistoryRequest, HistoryResponse, JoinRoomRequest, JoinRoomResult, LeaveRoomRequest,
    LeaveRoomResult, ListDirectRequest, ListMembersRequest, ListMembersResult, ListRoomsRequest,
    MarkReadRequest, MarkReadResult, Member, OpenDirectRequest, PingRequest, PongResult,
    ReactRequest, SendMessageRequest, SendMessageResult, TypingRequest, Welcome,
    client_frame::Request, reply,
};
use chat_util::{lock, now_unix_ms};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// The most pages [`Client::list_members`] reads (of 1000 members each).
pub const MAX_MEMBER_PAGES: usize = 100;

/// The first pause before a send refused as UNAVAILABLE is tried again;
/// it doubles with each refusal.
const UNAVAILABLE_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause between such tries.
const UNAVAILABLE_PAUSE_MAX: Duration = Duration::from_secs(2);
/// How long a send refused for a room not yet rejoined waits for a rejoin
/// reply before it asks again.
const REJOIN_WAIT: Duration = Duration::from_secs(1);

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
    /// The state shared with the connection task.
    inner: Arc<Inner>,
}
impl Client {
    /// A handle on the client whose state is `inner` (for the connection
    /// task's own requests).
    pub(super) fn from_inner(inner: Arc<Inner>) -> Client {
        Client { inner }
    }

    /// Starts connecting in the background; returns at once. Watch
    /// [`Events`] or call [`Client::wait_connected`].
    pub fn connect(config: ClientConfig) -> (Client, Events) {
        let (events_tx, events_rx) = mpsc::channel(1024);
        let (state, _) = watch::channel(ConnectionState::Connecting);
        let inner = Arc::new(Inner {
            rooms: Mutex::new(
                (config.rooms.iter().cloned())
                    .chain(config.resume_from.iter().map(|(room, _)| room.clone()))
                    .collect(),
            ),
            last_seen: Mutex::new(config.resume_from.iter().cloned().collect()),
            rejoined_rooms: Mutex::default(),
            config,
            next_request: AtomicU64::new(1),
            pending: Mutex::default(),
            outbound: Mutex::default(),
            channel: Mutex::default(),
            joins: Mutex::default(),
            rejoined: watch::channel(0).0,
            state,
            close: CancellationToken::new(),
            cut: Mutex::new(CancellationToken::new()),
        });
        tokio::spawn(connection::run(inner.clone(), events_tx));
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

    /// Stops the client: ends the session and stops reconnecting. A frame
    /// being handed on when it is called still is: wait for
    /// [`Client::closed`] before reading resume points to keep.
    pub fn close(&self) {
        self.inner.close.cancel();
    }

    /// Waits until the client has stopped (after [`Client::close`], or for
    /// good after a refusal): from then on no event follows and
    /// [`Client::last_seen`] is final, so the points it gives are exactly
    /// where what the application received ends (to resume from later
    /// with `ClientConfig::resume_from`).
    pub async fn closed(&self) {
        let mut state = self.inner.state.subscribe();
        loop {
            if matches!(&*state.borrow_and_update(), ConnectionState::Closed) {
                return;
            }
            // The connection task ended without saying so: stopped too.
            if state.changed().await.is_err() {
                return;
            }
        }
    }

    /// Joins `room`; it is rejoined after every reconnect until left. A
    /// room the client is in already (its rejoin may still be on the way)
    /// is joined from its resume point, so nothing missed is skipped.
    pub async fn join(&self, room: &str) -> Result<JoinRoomResult, ClientError> {
        let since = match lock(&self.inner.rooms).contains(room) {
            true => lock(&self.inner.last_seen).get(room).copied(),
            false => None,
        };
        let request = Request::JoinRoom(JoinRoomRequest {
            room: room.into(),
            since_sequence: since,
        });
        // The resume point is set by the connection task when the reply
        // arrives, before any message behind it; the room is added to the
        // client's rooms there too.
        let join = Join {
            room: room.to_string(),
            rejoin: false,
            resumed: since.is_some(),
            timed_out: false,
        };
        match self.inner.request_as(request, Some(join)).await? {
            reply::Result::JoinRoom(r) => Ok(r),
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
            self.inner.forget(room);
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
    /// connection is lost before the acknowledgement, or the server answers
    /// UNAVAILABLE (it may have stored the message before failing), the send
    /// is retried with the same id (within `send_retry_window`); the server
    /// stores and delivers it once.
    pub async fn send_with_id(
        &self,
        room: &str,
        client_message_id: &str,
        text: &str,
    ) -> Result<SendMessageResult, ClientError> {
        self.numbered(room, || {
            Request::SendMessage(SendMessageRequest {
                room: room.into(),
                client_message_id: client_message_id.into(),
                text: text.into(),
            })
        })
        .await
    }

    /// Replaces the text of this user's message `sequence` in `room`. The
    /// room's members (this client too) receive it as a message event of
    /// kind EDIT with its own sequence number. Retried like a send, under
    /// one fresh client message id. Refused with `MESSAGE_NOT_FOUND` (no
    /// such message, or deleted) or `NOT_THE_AUTHOR`.
    pub async fn edit(
        &self,
        room: &str,
        sequence: u64,
        text: &str,
    ) -> Result<SendMessageResult, ClientError> {
        let client_message_id = uuid::Uuid::new_v4().to_string();
        self.numbered(room, || {
            Request::EditMessage(EditMessageRequest {
                room: room.into(),
                sequence,
                text: text.into(),
                client_message_id: client_message_id.clone(),
            })
        })
        .await
    }

    /// Takes back message `sequence` of `room` (this user's, or anyone's
    /// with an operator's token): its text is gone from the server. The
    /// members receive a message event of kind DELETE. Retried like a send;
    /// refused like [`Client::edit`].
    pub async fn delete(
        &self,
        room: &str,
        sequence: u64,
    ) -> Result<SendMessageResult, ClientError> {
        let client_message_id = uuid::Uuid::new_v4().to_string();
        self.numbered(room, || {
            Request::DeleteMessage(DeleteMessageRequest {
                room: room.into(),
                sequence,
                client_message_id: client_message_id.clone(),
            })
        })
        .await
    }

    /// Asks for what `request` builds (a send, an edit or a delete: one
    /// client message id across attempts) until it is numbered, retrying
    /// through lost connections, a rejoin under way and UNAVAILABLE within
    /// `send_retry_window`.
    async fn numbered(
        &self,
        room: &str,
        request: impl Fn() -> Request,
    ) -> Result<SendMessageResult, ClientError> {
        let deadline = tokio::time::Instant::now() + self.inner.config.send_retry_window;
        let mut retrying = false;
        let mut pause = UNAVAILABLE_PAUSE;
        loop {
            // Rejoin replies from here on wake a send refused for its room.
            let mut rejoined = self.inner.rejoined.subscribe();
            let asked = request();
            let wanted = Numbered::asked(&asked);
            match self.inner.request(asked).await {
                Ok(reply) => {
                    return match Numbered::answered(reply) {
                        Some((kind, r)) if Some(kind) == wanted => Ok(r),
                        _ => Err(ClientError::UnexpectedReply),
                    };
                }
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
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    if left.is_zero() {
                        return Err(e);
                    }
                    // Asking again before the rejoin's reply would only be
                    // refused again: wait for it (or, if it came between
                    // the send and its refusal, go at once). Bounded, in
                    // case this session's rejoin of the room is not coming.
                    let _ = tokio::time::timeout(left.min(REJOIN_WAIT), rejoined.changed()).await;
                }
                Err(
                    e @ ClientError::Server {
                        code: ErrorCode::Unavailable,
                        ..
                    },
                ) => {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    if left.is_zero() {
                        return Err(e);
                    }
                    tokio::time::sleep(pause.min(left)).await;
                    pause = (pause * 2).min(UNAVAILABLE_PAUSE_MAX);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The last sequence seen in `room` (where a rejoin resumes from).
    pub fn last_seen(&self, room: &str) -> Option<u64> {
        lock(&self.inner.last_seen).get(room).copied()
    }

    /// The members of `room`, all of them (page after page, at most
    /// [`MAX_MEMBER_PAGES`] of 1000).
    pub async fn list_members(&self, room: &str) -> Result<Vec<Member>, ClientError> {
        let mut members = Vec::new();
        let mut after = String::new();
        for _ in 0..MAX_MEMBER_PAGES {
            let page = self.list_members_page(room, &after, 1000).await?;
            members.extend(page.members);
            if page.next_page.is_empty() {
                break;
            }
            after = page.next_page;
        }
        Ok(members)
    }

    /// One page of `room`'s members: after `page_after` (empty: from the
    /// first; else a previous page's `next_page`), at most `limit` (0: the
    /// server's default, 100; at most 1000).
    pub async fn list_members_page(
        &self,
        room: &str,
        page_after: &str,
        limit: u32,
    ) -> Result<ListMembersResult, ClientError> {
        let request = Request::ListMembers(ListMembersRequest {
            room: room.into(),
            page_after: page_after.into(),
            limit,
        });
        match self.inner.request(request).await? {
            reply::Result::ListMembers(r) => Ok(r),
            _ => Err(ClientError::UnexpectedReply),
        }
    }

    /// Tells `room`'s other members that this user is typing there
    /// (`true`; repeat it every few seconds while typing) or stopped
    /// (`false`). Ephemeral: not stored, not resumed, rate limited per
    /// connection (`RATE_LIMITED`); `NOT_A_MEMBER` for a room this
    /// connection is not in.
    pub async fn typing(&self, room: &str, typing: bool) -> Result<(), ClientError> {
        match self
            .inner
            .request(Request::Typing(TypingRequest {
                room: room.to_string(),
                typing,
            }))
            .await?
        {
            reply::Result::Typing(_) => Ok(()),
            _ => Err(ClientError::UnexpectedReply),
        }
    }

    /// Adds (`add`) or takes back this user's reaction `emoji` to message
    /// `sequence` of `room`. Numbered like an edit: the members receive a
    /// message event of kind REACTION_ADDED or REACTION_REMOVED. Retried
    /// like a send; refused with `MESSAGE_NOT_FOUND`, `INVALID_ARGUMENT`
    /// (the emoji) or `TOO_MANY_REACTIONS`.
    pub async fn react(
        &self,
        room: &str,
        sequence: u64,
        emoji: &str,
        add: bool,
    ) -> Result<SendMessageResult, ClientError> {
        let client_message_id = uuid::Uuid::new_v4().to_string();
        self.numbered(room, || {
            Request::React(ReactRequest {
                room: room.into(),
                sequence,
                emoji: emoji.into(),
                add,
                client_message_id: client_message_id.clone(),
            })
        })
        .await
    }

    /// Opens (or finds) this user's direct conversation with the user
    /// `user_id`, a room only the two may join, read and write to, and
    /// joins it (rejoined like any room). Both users' other sessions
    /// receive [`crate::Event::DirectOpened`] (and join it, with
    /// [`crate::ClientConfig::join_direct`]).
    pub async fn open_direct(&self, user_id: &str) -> Result<DirectConversation, ClientError> {
        let request = Request::OpenDirect(OpenDirectRequest {
            user_id: user_id.to_string(),
        });
        let conversation = match self.inner.request(request).await? {
            reply::Result::OpenDirect(d) => d,
            _ => return Err(ClientError::UnexpectedReply),
        };
        match self.join(&conversation.room).await {
            // This session's own DirectOpened may have joined it already.
            Ok(_) => {}
            Err(e) if e.code() == Some(ErrorCode::AlreadyAMember) => {}
            Err(e) => return Err(e),
        }
        Ok(conversation)
    }

    /// This user's direct conversations, the most recently opened first.
    pub async fn list_direct(&self) -> Result<Vec<DirectConversation>, ClientError> {
        match self
            .inner
            .request(Request::ListDirect(ListDirectRequest {}))
            .await?
        {
            reply::Result::ListDirect(r) => Ok(r.conversations),
            _ => Err(ClientError::UnexpectedReply),
        }
    }

    /// Marks `room` read up to `sequence` for this user (all of its
    /// sessions): stored, never moved back, clamped to the room's latest,
    /// and announced to the room's members (coalesced). Returns the read
    /// position and the unread count after it. Rate limited per connection
    /// (`RATE_LIMITED`); `NOT_A_MEMBER` for a room this connection is not in.
    pub async fn mark_read(
        &self,
        room: &str,
        sequence: u64,
    ) -> Result<MarkReadResult, ClientError> {
        match self
            .inner
            .request(Request::MarkRead(MarkReadRequest {
                room: room.to_string(),
                sequence,
            }))
            .await?
        {
            reply::Result::MarkRead(r) => Ok(r),
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
        let request = HistoryRequest {
            room: room.into(),
            direction: direction as i32,
            from_sequence: from,
            limit,
        };
        let request = self.unary_request(request).await?;
        let mut grpc = ChatServiceClient::new(channel);
        let call = grpc.history(request);
        match tokio::time::timeout(self.inner.config.request_timeout, call).await {
            Err(_) => Err(ClientError::Timeout(self.inner.config.request_timeout)),
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(status_error(&status)),
        }
    }

    /// `message` as a unary call: identified like the session (name, and
    /// the token if there is one), with the request timeout.
    async fn unary_request<T>(&self, message: T) -> Result<tonic::Request<T>, ClientError> {
        let config = &self.inner.config;
        let mut request = tonic::Request::new(message);
        let invalid = |message| ClientError::Server {
            code: ErrorCode::InvalidArgument,
            message,
            retry_after_ms: 0,
        };
        set_name(request.metadata_mut(), &config.name).map_err(invalid)?;
        if let Some(provider) = &config.token {
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
        request.set_timeout(config.request_timeout);
        Ok(request)
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

/// A failed unary call as the error a session reply would have given.
fn status_error(status: &tonic::Status) -> ClientError {
    ClientError::Server {
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
    }
}

/// The requests the server numbers, to match each with its own reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Numbered {
    Send,
    Edit,
    Delete,
    React,
}

impl Numbered {
    /// Which one `request` is.
    fn asked(request: &Request) -> Option<Numbered> {
        match request {
            Request::SendMessage(_) => Some(Numbered::Send),
            Request::EditMessage(_) => Some(Numbered::Edit),
            Request::DeleteMessage(_) => Some(Numbered::Delete),
            Request::React(_) => Some(Numbered::React),
            _ => None,
        }
    }

    /// Which one `reply` answers, and its result.
    fn answered(reply: reply::Result) -> Option<(Numbered, SendMessageResult)> {
        match reply {
            reply::Result::SendMessage(r) => Some((Numbered::Send, r)),
            reply::Result::EditMessage(r) => Some((Numbered::Edit, r)),
            reply::Result::DeleteMessage(r) => Some((Numbered::Delete, r)),
            reply::Result::React(r) => Some((Numbered::React, r)),
            _ => None,
        }
    }
}
