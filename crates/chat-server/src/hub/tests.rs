//! The hub's paths against a store that misbehaves in ways the real ones
//! can (an append that the store kept but reported as failed), or that
//! counts what the hub asks of it.

use super::*;
use crate::backplane::LocalBackplane;
use crate::store::{Appended, Conversation, MemoryStore, Retention, StoreError};
use futures::StreamExt;
use futures::future::BoxFuture;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// A memory store that misbehaves as real ones can, and counts: its next
/// append may keep the message and then report an error (a database whose
/// commit went through before the connection broke), and it counts its
/// `latest_sequence` reads.
#[derive(Default)]
struct ProbeStore {
    /// Where the messages are kept.
    inner: MemoryStore,
    /// Whether the next append reports an error after keeping the message.
    fail_next: AtomicBool,
    /// `latest_sequence` calls so far.
    latest_reads: std::sync::atomic::AtomicUsize,
    /// `history` calls so far.
    history_reads: std::sync::atomic::AtomicUsize,
    /// How long `latest_sequence` and `history` take, in milliseconds (a
    /// busy store).
    read_delay_ms: AtomicU64,
}

/// A hub in ordered mode over a fresh [`ProbeStore`], and the store.
fn probe_hub() -> (Hub, Arc<ProbeStore>) {
    let rooms = Arc::new(Rooms::new(true, None));
    let store = Arc::new(ProbeStore::default());
    let backplane = Arc::new(LocalBackplane::new(rooms.clone()));
    let hub = Hub::new(
        "a".into(),
        Limits::default(),
        rooms,
        store.clone(),
        backplane,
    );
    (hub, store)
}

impl ProbeStore {
    /// Waits as long as a read takes.
    async fn read_delay(&self) {
        let ms = self.read_delay_ms.load(Ordering::SeqCst);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }
}

impl MessageStore for ProbeStore {
    fn name(&self) -> &'static str {
        "probe"
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn append(&self, message: NewMessage) -> BoxFuture<'_, Result<Appended, StoreError>> {
        Box::pin(async move {
            let appended = self.inner.append(message).await?;
            if self.fail_next.swap(false, Ordering::SeqCst) {
                return Err(StoreError::Unavailable("connection reset".into()));
            }
            Ok(appended)
        })
    }

    fn change(
        &self,
        change: NewMessage,
        operator: bool,
    ) -> BoxFuture<'_, Result<Appended, StoreError>> {
        self.inner.change(change, operator)
    }

    fn read_state<'a>(
        &'a self,
        room: &'a RoomName,
        user: &'a str,
    ) -> BoxFuture<'a, Result<ReadState, StoreError>> {
        self.inner.read_state(room, user)
    }

    fn join_state<'a>(
        &'a self,
        room: &'a RoomName,
        user: &'a str,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<(ReadState, Option<Ban>), StoreError>> {
        self.inner.join_state(room, user, now_ms)
    }

    fn set_ban<'a>(
        &'a self,
        room: &'a RoomName,
        user: &'a str,
        ban: Option<Ban>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.inner.set_ban(room, user, ban)
    }

    fn ban<'a>(
        &'a self,
        room: &'a RoomName,
        user: &'a str,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Option<Ban>, StoreError>> {
        self.inner.ban(room, user, now_ms)
    }

    fn bans<'a>(
        &'a self,
        room: &'a RoomName,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<Ban>, StoreError>> {
        self.inner.bans(room, now_ms)
    }

    fn mark_read<'a>(
        &'a self,
        room: &'a RoomName,
        user: &'a str,
        sequence: u64,
    ) -> BoxFuture<'a, Result<ReadState, StoreError>> {
        self.inner.mark_read(room, user, sequence)
    }

    fn open_direct<'a>(
        &'a self,
        me: &'a User,
        peer: &'a str,
    ) -> BoxFuture<'a, Result<Conversation, StoreError>> {
        self.inner.open_direct(me, peer)
    }

    fn direct<'a>(
        &'a self,
        room: &'a RoomName,
    ) -> BoxFuture<'a, Result<Option<Conversation>, StoreError>> {
        self.inner.direct(room)
    }

    fn list_direct<'a>(
        &'a self,
        user_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Conversation>, StoreError>> {
        self.inner.list_direct(user_id)
    }

    fn latest_sequence<'a>(&'a self, room: &'a RoomName) -> BoxFuture<'a, Result<u64, StoreError>> {
        self.latest_reads.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            self.read_delay().await;
            self.inner.latest_sequence(room).await
        })
    }

    fn history<'a>(
        &'a self,
        room: &'a RoomName,
        page: Page,
    ) -> BoxFuture<'a, Result<Vec<StoredMessage>, StoreError>> {
        self.history_reads.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            self.read_delay().await;
            self.inner.history(room, page).await
        })
    }

    fn set_capture(&self, capture: Capture) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.set_capture(capture)
    }

    fn queue_membership(
        &self,
        changes: Vec<MembershipChange>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.queue_membership(changes)
    }

    fn claim_events(
        &self,
        claim: crate::store::Claim,
    ) -> BoxFuture<'_, Result<Vec<crate::store::QueuedEvent>, StoreError>> {
        self.inner.claim_events(claim)
    }

    fn settle_events<'a>(
        &'a self,
        done: &'a [i64],
        retry: &'a [i64],
        retry_at_ms: i64,
        lease_until_ms: i64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner
            .settle_events(done, retry, retry_at_ms, lease_until_ms)
    }

    fn trim_events(
        &self,
        oldest_ms: i64,
        max_pending: u64,
    ) -> BoxFuture<'_, Result<crate::store::Trimmed, StoreError>> {
        self.inner.trim_events(oldest_ms, max_pending)
    }

    fn check(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.check()
    }

    fn enforce_retention(&self, retention: Retention) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.inner.enforce_retention(retention)
    }
}

fn user(name: &str) -> User {
    User {
        user_id: Arc::from(name),
        display_name: Arc::from(name),
    }
}

/// Review of issue 15, report 12: a send whose first attempt the store
/// kept but reported as failed is retried by the client with the same id;
/// the retry is a duplicate for the store, and must still reach the room's
/// members (nothing published it the first time).
#[tokio::test]
async fn a_retried_send_the_store_had_kept_reaches_the_members() {
    let (hub, store) = probe_hub();
    store.fail_next.store(true, Ordering::SeqCst);
    let lobby = RoomName::parse("lobby").unwrap();
    let (outbox, mut stream) = outbox(16);
    hub.join(&lobby, 1, &user("bob"), outbox, None, |_, _| {
        EncodedFrame(bytes::Bytes::new())
    })
    .await
    .unwrap();
    let message = NewMessage {
        room: lobby.clone(),
        sender: user("alice"),
        client_message_id: "m1".into(),
        text: "hello".into(),
        kind: Kind::Message,
    };
    assert!(matches!(
        hub.send(message.clone()).await,
        Err(RequestError::Unavailable(_))
    ));
    let stored = hub.send(message).await.expect("the retry is acknowledged");
    assert_eq!(stored.sequence, 1);
    let delivered = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(frame) = stream.next().await {
            let decoded = <chat_proto::v1::ServerFrame as prost::Message>::decode(frame.0);
            if let Ok(chat_proto::v1::ServerFrame {
                frame: Some(Frame::Message(m)),
                ..
            }) = decoded
            {
                return m;
            }
        }
        panic!("the outbox ended");
    })
    .await
    .expect("the member got the message");
    assert_eq!((delivered.sequence, delivered.text.as_str()), (1, "hello"));
    // Sent again (a second retry): delivered once all the same.
    let message = NewMessage {
        room: lobby.clone(),
        sender: user("alice"),
        client_message_id: "m1".into(),
        text: "hello".into(),
        kind: Kind::Message,
    };
    hub.send(message).await.unwrap();
    let again = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
    assert!(again.is_err(), "delivered twice: {again:?}");
}

/// Issue 18, point 2: a join into a room this instance serves, fresh or
/// resuming from no further than where the room stands, reads nothing from
/// the store; a resume point beyond it asks the store (and is a reset when
/// the store is behind it).
#[tokio::test]
async fn an_up_to_date_resume_reads_nothing_from_the_store() {
    let (hub, store) = probe_hub();
    let lobby = RoomName::parse("lobby").unwrap();
    let reads = || store.latest_reads.load(Ordering::SeqCst);
    let join = |conn: ConnId, since: Option<u64>| {
        let (outbox, stream) = outbox(16);
        let hub = &hub;
        let lobby = &lobby;
        async move {
            let mut reset = false;
            hub.join(lobby, conn, &user("bob"), outbox, since, |_, info| {
                reset = info.sequence_reset;
                EncodedFrame(bytes::Bytes::new())
            })
            .await
            .unwrap();
            (stream, reset)
        }
    };
    let _first = join(1, None).await;
    assert_eq!(reads(), 1, "a room new here asks the store");
    let message = NewMessage {
        room: lobby.clone(),
        sender: user("alice"),
        client_message_id: "m1".into(),
        text: "hello".into(),
        kind: Kind::Message,
    };
    hub.send(message).await.unwrap();
    let _resumed = join(2, Some(1)).await;
    let _behind = join(3, Some(0)).await;
    let _fresh = join(4, None).await;
    assert_eq!(reads(), 1, "up to date, behind or fresh: no store read");
    let (_, reset) = join(5, Some(7)).await;
    assert_eq!(reads(), 2, "beyond where the room stands: the store says");
    assert!(reset, "the store is behind the point");
}

/// Issue 18: the clients of a restarted instance rejoin a room at once,
/// each resuming from the same point, while the store is slow: they share
/// one read of the room's latest sequence and one of the backlog, and each
/// gets the backlog.
#[tokio::test]
async fn joiners_resuming_a_room_at_once_share_its_store_reads() {
    let (hub, store) = probe_hub();
    let lobby = RoomName::parse("lobby").unwrap();
    for i in 0..3 {
        let message = NewMessage {
            room: lobby.clone(),
            sender: user("alice"),
            client_message_id: format!("m{i}"),
            text: "hello".into(),
            kind: Kind::Message,
        };
        store.inner.append(message).await.unwrap();
    }
    store.read_delay_ms.store(50, Ordering::SeqCst);
    let joins = (0..20).map(|conn| {
        let (outbox, stream) = outbox(16);
        let (hub, lobby) = (&hub, &lobby);
        async move {
            hub.join(
                lobby,
                conn,
                &user(&format!("u{conn}")),
                outbox,
                Some(1),
                |_, info| {
                    assert_eq!(info.latest_sequence, 3);
                    EncodedFrame(bytes::Bytes::new())
                },
            )
            .await
            .unwrap();
            stream
        }
    });
    let streams = futures::future::join_all(joins).await;
    assert_eq!(
        (
            store.latest_reads.load(Ordering::SeqCst),
            store.history_reads.load(Ordering::SeqCst)
        ),
        (1, 1),
        "20 joiners, one read of each"
    );
    for mut stream in streams {
        // The reply, then the backlog: messages 2 and 3.
        for _ in 0..3 {
            let frame = tokio::time::timeout(Duration::from_secs(1), stream.next()).await;
            assert!(matches!(frame, Ok(Some(_))), "the reply and the backlog");
        }
    }
}

/// Review of issue 16: a client message id names one request. Reused for
/// another kind (a send's id for an edit, an edit's for a send, one
/// reaction's for another emoji) it is refused, not answered with the
/// other request's acknowledgement (nor republished as this one).
#[tokio::test]
async fn a_client_message_id_reused_for_another_kind_of_request_is_refused() {
    let rooms = Arc::new(Rooms::new(true, None));
    let store = Arc::new(MemoryStore::new());
    let backplane = Arc::new(LocalBackplane::new(rooms.clone()));
    let hub = Hub::new("a".into(), Limits::default(), rooms, store, backplane);
    let lobby = RoomName::parse("lobby").unwrap();
    let (outbox, _stream) = outbox(64);
    hub.join(&lobby, 1, &user("ann"), outbox, None, |_, _| {
        EncodedFrame(bytes::Bytes::new())
    })
    .await
    .unwrap();
    let request = |id: &str, text: &str, kind: Kind| NewMessage {
        room: lobby.clone(),
        sender: user("ann"),
        client_message_id: id.into(),
        text: text.into(),
        kind,
    };
    hub.send(request("s1", "hello", Kind::Message))
        .await
        .unwrap();
    let edit = hub
        .change(request("e1", "hello!", Kind::Edit(1)), false)
        .await
        .unwrap();
    assert_eq!(edit.sequence, 2);
    let invalid = |r: Result<StoredMessage, RequestError>| {
        assert!(matches!(r, Err(RequestError::InvalidArgument(_))), "{r:?}")
    };
    invalid(hub.change(request("s1", "x", Kind::Edit(1)), false).await);
    invalid(hub.send(request("e1", "x", Kind::Message)).await);
    invalid(hub.change(request("e1", "", Kind::Delete(1)), false).await);
    hub.change(request("r1", "👍", Kind::ReactionAdded(1)), false)
        .await
        .unwrap();
    invalid(
        hub.change(request("r1", "🎉", Kind::ReactionAdded(1)), false)
            .await,
    );
    // A true retry is still answered with the original.
    let again = hub
        .change(request("e1", "hello!", Kind::Edit(1)), false)
        .await
        .unwrap();
    assert_eq!(again.sequence, 2);
    assert_eq!(hub.store().latest_sequence(&lobby).await.unwrap(), 3);
}
