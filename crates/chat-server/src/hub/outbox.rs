//! The bounded outbound queue of one connection.
//!
//! Every producer (its own session loop, room fan-out, notifications) pushes
//! without waiting. A full queue means the client does not read fast
//! enough: it is kicked as a slow consumer, its disconnect notice jumps the
//! queue, and the stream ends, so one slow client never holds memory or
//! delays anyone else.
//!
//! A transport may attach a [`Wire`] to the consuming end: then a frame
//! pushed while nothing is queued and the consumer is not writing goes
//! straight to the client's socket from the producer, without waking the
//! connection's task (a room's fan-out costs one write per recipient and
//! nothing else); only what the socket does not take at once is queued, and
//! the consumer writes it, in order, before anything newer.

use crate::domain::validate::RoomName;
use chat_proto::EncodedFrame;
use chat_proto::v1::{DisconnectNotice, DisconnectReason, server_frame::Frame};
use chat_util::lock;
use futures::Stream;
use futures::task::AtomicWaker;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Frames of resume bursts a connection may still have unread when its
/// next join starts (a join's reply is one).
pub const BURST_SLACK: usize = 64;

/// How often [`Outbox::burst_read`] looks.
const BURST_POLL: Duration = Duration::from_millis(10);

/// Rooms a session must leave, each with why.
type RoomsToLeave = Vec<(RoomName, Arc<str>)>;

/// Removals a session may have waiting at most (more are dropped: the
/// session takes them as soon as it runs).
const MAX_REMOVALS: usize = 256;

/// Queue slots an empty queue keeps; a larger queue (a burst's) is
/// released once drained.
const KEEP_QUEUE: usize = 8;

/// Writes frames to a client's socket without waiting (a transport's
/// write side, attached with [`OutboxStream::attach`]).
pub trait Wire: Send + Sync {
    /// Writes `frame` now, as far as the socket takes it at once.
    fn write(&self, frame: &EncodedFrame) -> Direct;
}

/// How far a [`Wire::write`] got.
#[derive(Debug, PartialEq)]
pub enum Direct {
    /// All of it is written.
    Sent,
    /// Part is written; these bytes, already in the wire's own framing,
    /// must be written next, before anything else.
    Rest(bytes::Bytes),
    /// Nothing is written (the socket is full, or failed): it is queued.
    Blocked,
}

/// What the consumer takes with [`OutboxStream::take`].
#[derive(Debug)]
pub enum Taken {
    /// The rest of a frame a direct write left unfinished, in the wire's
    /// framing.
    Rest(bytes::Bytes),
    /// A frame.
    Frame(EncodedFrame),
}

/// The producing end, cheap to clone (one per room the connection is in).
/// The stream ends once every clone is gone and the queue is drained.
#[derive(Debug)]
pub struct Outbox {
    shared: Arc<Shared>,
}

/// The consuming end: the response stream of the Session RPC, or what a
/// transport's writer drains with [`OutboxStream::take`].
#[derive(Debug)]
pub struct OutboxStream {
    shared: Arc<Shared>,
    /// The end was handed out.
    done: bool,
}

/// What both ends share.
struct Shared {
    /// The queue and the direct path's state, behind one lock: a push
    /// takes it once.
    state: Mutex<State>,
    /// Wakes the consumer when something is queued while it waits.
    consumer: AtomicWaker,
    /// Cancelled when the session must end; the session loop selects on it.
    ended: CancellationToken,
    /// Frames the queue holds at most before the connection is kicked.
    capacity: usize,
    /// Live producing ends: the stream ends when the last one goes.
    producers: AtomicUsize,
    /// Whether the kick that ended it was [`Outbox::disconnect`] (an
    /// application's), not an overflow.
    disconnected: AtomicBool,
    /// Wakes the session when rooms it must leave are waiting in
    /// `State::removals` (a waker and a flag, not a `Notify`: idle
    /// sessions are many, and this is all they hold for it).
    removed: AtomicWaker,
    /// Whether `State::removals` holds any (read without the lock).
    removals_waiting: AtomicBool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    /// Frames waiting for the consumer, oldest first.
    queue: VecDeque<EncodedFrame>,
    /// What a direct write left unwritten: ahead of everything queued.
    rest: Option<bytes::Bytes>,
    /// A kick's notice: goes before the queue (after `rest`, which keeps
    /// the wire's framing whole), then the stream ends.
    notice: Option<EncodedFrame>,
    /// A finish's last frame: goes after the queue, then the stream ends.
    last: Option<EncodedFrame>,
    /// No more frames are accepted (kicked, finished, every producer gone,
    /// or the consumer gone).
    closed: bool,
    /// Frames ever taken off the front of `queue`: the position of its
    /// first frame.
    popped: u64,
    /// Positions of resume bursts ([`Outbox::queue_burst`]) not yet all
    /// taken, oldest first: their frames do not count against the capacity.
    bursts: VecDeque<std::ops::Range<u64>>,
    /// The consumer holds frames it has taken but not yet written:
    /// producers queue behind them instead of writing directly.
    taken: bool,
    /// Where frames go directly while nothing is queued or taken.
    wire: Option<Box<dyn Wire>>,
    /// Rooms an application removed the user from, and why, for the
    /// session to leave ([`Outbox::remove_from`]); boxed, as most
    /// connections never have any.
    removals: Option<Box<RoomsToLeave>>,
}

/// How a push may reach the socket.
enum Mode<'a> {
    /// Written now if nothing is ahead.
    Now,
    /// Written when the [`Deferred`] drops, if nothing is ahead by then.
    Later(&'a mut Deferred),
    /// Left to the consumer.
    Queue,
}

/// Frames a fan-out queued for connections whose socket may take them at
/// once: written when this is dropped, which the fan-out does after it let
/// go of the room's lock, so no lock is held across the system calls.
/// Whatever a socket does not take goes to its connection's task.
pub struct Deferred {
    /// The outboxes holding such a frame.
    pending: Vec<Arc<Shared>>,
    /// Whether frames may be written directly at all.
    direct: bool,
}

impl Default for Deferred {
    /// Direct writes allowed.
    fn default() -> Deferred {
        Deferred {
            pending: Vec::new(),
            direct: true,
        }
    }
}

impl Deferred {
    /// No direct writes: every frame is left to its connection's task (for
    /// a fan-out under a lock many wait on, e.g. presence's).
    pub fn none() -> Deferred {
        Deferred {
            pending: Vec::new(),
            direct: false,
        }
    }

    /// Makes room for `recipients` more.
    pub fn reserve(&mut self, recipients: usize) {
        if self.direct {
            self.pending.reserve(recipients);
        }
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        for shared in self.pending.drain(..) {
            shared.write_deferred();
        }
    }
}

impl Shared {
    /// Writes the frame a fan-out left queued (see [`Deferred`]) when it is
    /// still the only one and the consumer is not writing; otherwise wakes
    /// the consumer to write what is queued, in one go.
    fn write_deferred(&self) {
        let mut state = lock(&self.state);
        if state.taken || state.rest.is_some() || state.queue.is_empty() {
            // The consumer is writing, or was woken for the rest, or has
            // taken the frame already: it looks at the queue before it waits.
            return;
        }
        if state.queue.len() == 1
            && let Some(wire) = &state.wire
        {
            match wire.write(&state.queue[0]) {
                Direct::Sent => {
                    state.pop();
                    return;
                }
                Direct::Rest(rest) => {
                    state.pop();
                    state.rest = Some(rest);
                }
                Direct::Blocked => {}
            }
        }
        drop(state);
        self.consumer.wake();
    }
}

impl State {
    /// What counts against the capacity: the queued frames (the rest of a
    /// partly written one too), except those of resume bursts.
    fn backlog(&self) -> usize {
        let queued = self.queue.len() + usize::from(self.rest.is_some());
        queued - self.exempt().min(queued)
    }

    /// Queued frames of resume bursts.
    fn exempt(&self) -> usize {
        self.bursts
            .iter()
            .map(|b| b.end.saturating_sub(b.start.max(self.popped)) as usize)
            .sum()
    }

    /// Takes the front frame.
    fn pop(&mut self) -> Option<EncodedFrame> {
        let frame = self.queue.pop_front()?;
        self.popped += 1;
        while self.bursts.front().is_some_and(|b| b.end <= self.popped) {
            self.bursts.pop_front();
        }
        Some(frame)
    }

    /// Drops everything queued (a kick, the consumer gone).
    fn clear(&mut self) {
        self.popped += self.queue.len() as u64;
        self.queue = VecDeque::new();
        self.bursts = VecDeque::new();
    }
}

/// Creates a connection's queue holding at most `capacity` frames.
pub fn outbox(capacity: usize) -> (Outbox, OutboxStream) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        consumer: AtomicWaker::new(),
        ended: CancellationToken::new(),
        capacity,
        producers: AtomicUsize::new(1),
        disconnected: AtomicBool::new(false),
        removed: AtomicWaker::new(),
        removals_waiting: AtomicBool::new(false),
    });
    let stream = OutboxStream {
        shared: shared.clone(),
        done: false,
    };
    (Outbox { shared }, stream)
}

/// Encodes a disconnect notice that asks the client to wait
/// `reconnect_after_ms` before reconnecting (0: as it likes).
pub fn disconnect_frame(
    reason: DisconnectReason,
    message: &str,
    reconnect_after_ms: u32,
) -> EncodedFrame {
    EncodedFrame::from(Frame::Disconnect(DisconnectNotice {
        reason: reason as i32,
        message: message.to_string(),
        reconnect_after_ms,
        stay_disconnected: false,
    }))
}

impl Clone for Outbox {
    fn clone(&self) -> Outbox {
        self.shared.producers.fetch_add(1, Ordering::Relaxed);
        Outbox {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        if self.shared.producers.fetch_sub(1, Ordering::AcqRel) == 1 {
            lock(&self.shared.state).closed = true;
            self.shared.consumer.wake();
        }
    }
}

impl Outbox {
    /// Sends `frame` without waiting: written to the socket now when the
    /// consumer has a wire and nothing is ahead of it, queued otherwise. On
    /// a full queue the connection is kicked as a slow consumer; returns
    /// whether the frame was written or queued. The write is a system call:
    /// the caller must hold no lock that others wait on (see
    /// [`push_deferred`](Self::push_deferred) and [`queue`](Self::queue)).
    pub fn push(&self, frame: EncodedFrame) -> bool {
        self.push_with(frame, Mode::Now)
    }

    /// [`push`](Self::push) for a caller under a lock (a room's fan-out):
    /// a frame the socket may take at once is queued and written when
    /// `writes` is dropped, after the caller let go of its lock.
    pub fn push_deferred(&self, frame: EncodedFrame, writes: &mut Deferred) -> bool {
        self.push_with(frame, Mode::Later(writes))
    }

    /// [`push_deferred`](Self::push_deferred) for a frame that may be
    /// lost (a typing announcement): dropped, not kicking the connection,
    /// when its queue is over half full. True if it was taken.
    pub fn offer_deferred(&self, frame: EncodedFrame, writes: &mut Deferred) -> bool {
        if lock(&self.shared.state).backlog() * 2 >= self.shared.capacity {
            return false;
        }
        self.push_with(frame, Mode::Later(writes))
    }

    /// Queues `frame` for the connection's task to write, never writing
    /// here (for callers under a lock many wait on, and for bursts the
    /// task writes in one go).
    pub fn queue(&self, frame: EncodedFrame) -> bool {
        self.push_with(frame, Mode::Queue)
    }

    /// Queues a resume's reply and backlog (at most `RESUME_LIMIT`
    /// messages) for the connection's task, outside the capacity: a client
    /// that reads is never kicked for the size of what it asked to catch up
    /// on. Before the next join the session waits until little of it is
    /// left ([`burst_read`](Self::burst_read)), so a client that does not
    /// read holds one burst at most.
    pub fn queue_burst(&self, frames: impl IntoIterator<Item = EncodedFrame>) {
        let mut state = lock(&self.shared.state);
        if state.closed {
            return;
        }
        let before = state.queue.len();
        let start = state.popped + before as u64;
        state.queue.extend(frames);
        let end = state.popped + state.queue.len() as u64;
        if end > start {
            state.bursts.push_back(start..end);
        }
        let wake = before == 0 && state.rest.is_none() && end > start && !state.taken;
        drop(state);
        if wake {
            self.shared.consumer.wake();
        }
    }

    /// Waits until at most [`BURST_SLACK`] frames of resume bursts are left
    /// unread (or the stream ended); false if the consumer took nothing at
    /// all for `stalled` meanwhile (it does not read).
    pub async fn burst_read(&self, stalled: Duration) -> bool {
        let mut progress = (0, tokio::time::Instant::now() + stalled);
        loop {
            let popped = {
                let state = lock(&self.shared.state);
                if state.exempt() <= BURST_SLACK || state.closed {
                    return true;
                }
                state.popped
            };
            let now = tokio::time::Instant::now();
            if popped != progress.0 {
                progress = (popped, now + stalled);
            } else if now >= progress.1 {
                return false;
            }
            tokio::time::sleep(BURST_POLL).await;
        }
    }

    fn push_with(&self, frame: EncodedFrame, mode: Mode<'_>) -> bool {
        let mut state = lock(&self.shared.state);
        if state.closed {
            return false;
        }
        if state.queue.is_empty()
            && state.rest.is_none()
            && !state.taken
            && let Some(wire) = &state.wire
        {
            match mode {
                Mode::Now => match wire.write(&frame) {
                    Direct::Sent => return true,
                    Direct::Rest(rest) => {
                        state.rest = Some(rest);
                        drop(state);
                        self.shared.consumer.wake();
                        return true;
                    }
                    Direct::Blocked => {}
                },
                Mode::Later(writes) if writes.direct => {
                    // Not woken now: `writes` writes it, or wakes the
                    // consumer, when dropped.
                    state.queue.push_back(frame);
                    drop(state);
                    writes.pending.push(self.shared.clone());
                    return true;
                }
                Mode::Later(_) | Mode::Queue => {}
            }
        }
        let backlog = state.queue.len() + usize::from(state.rest.is_some());
        if state.backlog() >= self.shared.capacity {
            drop(state);
            self.push_overflowed();
            return false;
        }
        // The consumer looks again before it waits; it needs waking only
        // when it may be waiting already.
        let wake = backlog == 0 && !state.taken;
        state.queue.push_back(frame);
        drop(state);
        if wake {
            self.shared.consumer.wake();
        }
        true
    }

    /// Kicks the connection as a slow consumer: what is queued for it
    /// exceeds its bound.
    pub fn push_overflowed(&self) {
        self.kick(disconnect_frame(
            DisconnectReason::SlowConsumer,
            "the client did not read its stream fast enough; reconnect to catch up",
            0,
        ));
    }

    /// [`Outbox::kick`] for an application ending the session through the
    /// server API (the session then closes as disconnected).
    pub fn disconnect(&self, notice: EncodedFrame) {
        self.end_now(notice, true);
    }

    /// Asks the session to leave `room` (an application removed its user),
    /// telling the client `reason`.
    pub fn remove_from(&self, room: &RoomName, reason: &Arc<str>) {
        let mut state = lock(&self.shared.state);
        let removals = state.removals.get_or_insert_with(Box::default);
        if let Some(known) = removals.iter_mut().find(|(r, _)| r == room) {
            // The newest reason for the room wins.
            known.1 = reason.clone();
        } else if removals.len() < MAX_REMOVALS {
            removals.push((room.clone(), reason.clone()));
        } else {
            // More distinct rooms than a connection can be in, waiting:
            // the session is stuck in a request; it leaves the rest when
            // the user is removed again.
            tracing::warn!(%room, "a removal was dropped: too many waiting for one session");
        }
        self.shared.removals_waiting.store(true, Ordering::Release);
        drop(state);
        self.shared.removed.wake();
    }

    /// What the session waits on for rooms to leave (not a producer: it
    /// keeps no stream open).
    pub fn removals(&self) -> Removals {
        Removals(self.shared.clone())
    }

    /// The rooms to leave, and why; empties them.
    pub fn take_removals(&self) -> Vec<(RoomName, Arc<str>)> {
        let mut state = lock(&self.shared.state);
        self.shared.removals_waiting.store(false, Ordering::Release);
        state
            .removals
            .take()
            .map_or_else(Vec::new, |removals| *removals)
    }

    /// Whether [`Outbox::disconnect`] ended the stream.
    pub fn was_disconnected(&self) -> bool {
        self.shared.disconnected.load(Ordering::Relaxed)
    }

    /// Ends the stream now: `notice` is sent before anything still queued
    /// (which is dropped), and the session loop is told to stop. Only the
    /// first kick's notice is sent.
    pub fn kick(&self, notice: EncodedFrame) {
        self.end_now(notice, false);
    }

    /// [`Outbox::kick`]; `disconnected`: by an application, if this is the
    /// kick that ends it (decided under the lock, so a racing overflow
    /// does not take the other's reason).
    fn end_now(&self, notice: EncodedFrame, disconnected: bool) {
        let mut state = lock(&self.shared.state);
        if !state.closed || state.last.is_some() {
            state.closed = true;
            state.last = None;
            state.clear();
            state.notice = Some(notice);
            if disconnected {
                self.shared.disconnected.store(true, Ordering::Relaxed);
            }
        }
        drop(state);
        self.shared.consumer.wake();
        self.shared.ended.cancel();
    }

    /// Ends the stream gracefully: everything queued is sent, then `notice`.
    /// Falls back to [`Outbox::kick`] when the queue is full.
    pub fn finish(&self, notice: EncodedFrame) {
        let mut state = lock(&self.shared.state);
        if state.closed {
            drop(state);
        } else if state.backlog() >= self.shared.capacity {
            drop(state);
            self.kick(notice);
        } else {
            state.closed = true;
            state.last = Some(notice);
            drop(state);
            self.shared.consumer.wake();
        }
        self.shared.ended.cancel();
    }

    /// Cancelled once the connection was kicked or finished.
    pub fn ended(&self) -> &CancellationToken {
        &self.shared.ended
    }

    /// Whether the connection was kicked or finished.
    pub fn is_ended(&self) -> bool {
        self.shared.ended.is_cancelled()
    }
}

/// Waits for rooms an application removed the session's user from.
pub struct Removals(Arc<Shared>);

impl Removals {
    /// Resolves when rooms to leave are waiting ([`Outbox::take_removals`]).
    pub async fn wait(&self) {
        std::future::poll_fn(|cx| {
            self.0.removed.register(cx.waker());
            if self.0.removals_waiting.load(Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

impl OutboxStream {
    /// From now on, frames pushed while nothing is queued or taken are
    /// written by their producer through `wire`.
    pub fn attach(&mut self, wire: Box<dyn Wire>) {
        lock(&self.shared.state).wire = Some(wire);
    }

    /// Ready when there is something to [`take`](Self::take) or the
    /// stream has ended. While it waits, the consumer holds nothing: direct
    /// writes go ahead.
    pub fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.done {
            return Poll::Ready(());
        }
        self.shared.consumer.register(cx.waker());
        let mut state = lock(&self.shared.state);
        if state.rest.is_some() || state.notice.is_some() || !state.queue.is_empty() || state.closed
        {
            Poll::Ready(())
        } else {
            state.taken = false;
            Poll::Pending
        }
    }

    /// Takes what is waiting, oldest first, until about `max_bytes` are
    /// handed to `put`; producers queue behind it until the consumer waits
    /// again ([`poll_ready`](Self::poll_ready) with nothing left), so what
    /// the consumer writes next (its own control frames too) cannot be
    /// interleaved with a direct write. Returns whether the stream ended
    /// with what was taken.
    pub fn take(&mut self, max_bytes: usize, mut put: impl FnMut(Taken)) -> bool {
        if self.done {
            return true;
        }
        let mut state = lock(&self.shared.state);
        state.taken = true;
        let mut bytes = 0;
        if let Some(rest) = state.rest.take() {
            bytes += rest.len();
            put(Taken::Rest(rest));
        }
        if let Some(notice) = state.notice.take() {
            put(Taken::Frame(notice));
            self.done = true;
            return true;
        }
        while bytes < max_bytes {
            let Some(frame) = state.pop() else {
                break;
            };
            bytes += frame.len();
            put(Taken::Frame(frame));
        }
        if state.queue.is_empty() {
            if state.closed {
                if let Some(last) = state.last.take() {
                    put(Taken::Frame(last));
                }
                self.done = true;
            }
            if state.queue.capacity() > KEEP_QUEUE {
                // A burst's queue is not kept by an idle connection.
                state.queue = VecDeque::new();
            }
        }
        self.done
    }
}

impl Drop for OutboxStream {
    fn drop(&mut self) {
        let mut state = lock(&self.shared.state);
        state.closed = true;
        state.clear();
        state.rest = None;
        // The wire holds the socket's write side: it goes with the consumer.
        state.wire = None;
    }
}

impl Stream for OutboxStream {
    type Item = EncodedFrame;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        self.shared.consumer.register(cx.waker());
        let mut state = lock(&self.shared.state);
        // A kick's notice goes before whatever is still queued. (No wire is
        // attached to a stream read this way: there is no `rest`.)
        if let Some(notice) = state.notice.take() {
            drop(state);
            self.done = true;
            return Poll::Ready(Some(notice));
        }
        if let Some(frame) = state.pop() {
            if state.queue.is_empty() && state.queue.capacity() > KEEP_QUEUE {
                state.queue = VecDeque::new();
            }
            return Poll::Ready(Some(frame));
        }
        if state.closed {
            let last = state.last.take();
            state.queue = VecDeque::new();
            drop(state);
            self.done = true;
            return Poll::Ready(last);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn removals_wake_the_session_once_per_room_the_newest_reason_winning() {
        let (o, _s) = outbox(8);
        let waiting = o.removals();
        let lobby = RoomName::parse("lobby").unwrap();
        let dev = RoomName::parse("dev").unwrap();
        o.remove_from(&lobby, &Arc::from("first"));
        o.remove_from(&dev, &Arc::from("dev"));
        o.remove_from(&lobby, &Arc::from("second"));
        tokio::time::timeout(Duration::from_secs(1), waiting.wait())
            .await
            .expect("woken");
        let taken: Vec<(String, String)> = o
            .take_removals()
            .into_iter()
            .map(|(r, why)| (r.to_string(), why.to_string()))
            .collect();
        assert_eq!(
            taken,
            [
                ("lobby".into(), "second".into()),
                ("dev".into(), "dev".into())
            ]
        );
        assert!(o.take_removals().is_empty());
    }
    use bytes::Bytes;
    use futures::StreamExt;

    fn frame(n: u8) -> EncodedFrame {
        EncodedFrame(Bytes::from(vec![n]))
    }

    #[tokio::test]
    async fn full_queue_kicks_with_notice_first() {
        let (outbox, mut stream) = outbox(2);
        assert!(outbox.push(frame(1)));
        assert!(outbox.push(frame(2)));
        assert!(!outbox.is_ended());
        assert!(!outbox.push(frame(3)), "third frame overflows");
        assert!(outbox.is_ended());
        let first = stream.next().await.unwrap();
        let decoded = <chat_proto::v1::ServerFrame as prost::Message>::decode(first.0).unwrap();
        match decoded.frame {
            Some(Frame::Disconnect(n)) => {
                assert_eq!(n.reason, DisconnectReason::SlowConsumer as i32)
            }
            other => panic!("expected the notice, got {other:?}"),
        }
        assert!(
            stream.next().await.is_none(),
            "stream ends after the notice"
        );
    }

    #[tokio::test]
    async fn finish_drains_then_ends() {
        let (outbox, mut stream) = outbox(4);
        outbox.push(frame(1));
        outbox.push(frame(2));
        outbox.finish(frame(9));
        assert!(outbox.is_ended());
        assert!(!outbox.push(frame(3)), "nothing is accepted after finish");
        let got: Vec<_> = (&mut stream).map(|f| f.0[0]).collect().await;
        assert_eq!(got, vec![1, 2, 9]);
    }

    #[tokio::test]
    async fn stream_ends_when_every_producer_is_gone() {
        let (outbox, mut stream) = outbox(4);
        let clone = outbox.clone();
        outbox.push(frame(1));
        drop(outbox);
        clone.push(frame(2));
        drop(clone);
        let got: Vec<_> = (&mut stream).map(|f| f.0[0]).collect().await;
        assert_eq!(got, vec![1, 2]);
    }

    #[tokio::test]
    async fn a_waiting_consumer_is_woken() {
        let (outbox, mut stream) = outbox(4);
        let next = tokio::spawn(async move { stream.next().await.map(|f| f.0[0]) });
        tokio::task::yield_now().await;
        outbox.push(frame(7));
        assert_eq!(next.await.unwrap(), Some(7));
    }

    /// A wire that records what it wrote and takes what `budget` allows.
    #[derive(Clone, Default)]
    struct FakeWire {
        written: Arc<Mutex<Vec<u8>>>,
        /// Bytes the socket takes before it is full.
        budget: Arc<Mutex<usize>>,
    }

    impl Wire for FakeWire {
        fn write(&self, frame: &EncodedFrame) -> Direct {
            let mut budget = lock(&self.budget);
            let n = frame.len().min(*budget);
            *budget -= n;
            lock(&self.written).extend_from_slice(&frame.0[..n]);
            match n {
                0 => Direct::Blocked,
                n if n == frame.len() => Direct::Sent,
                n => Direct::Rest(frame.0.slice(n..)),
            }
        }
    }

    /// A queue of `capacity` with a [`FakeWire`] taking `budget` bytes.
    fn wired(capacity: usize, budget: usize) -> (Outbox, OutboxStream, FakeWire) {
        let (outbox, mut stream) = outbox(capacity);
        let wire = FakeWire::default();
        *lock(&wire.budget) = budget;
        stream.attach(Box::new(wire.clone()));
        (outbox, stream, wire)
    }

    fn bytes(v: &[u8]) -> EncodedFrame {
        EncodedFrame(Bytes::copy_from_slice(v))
    }

    /// Drains what the consumer can take, as the writer would write it.
    fn drain(stream: &mut OutboxStream, into: &Mutex<Vec<u8>>) -> bool {
        stream.take(usize::MAX, |taken| match taken {
            Taken::Rest(b) => lock(into).extend_from_slice(&b),
            Taken::Frame(f) => lock(into).extend_from_slice(&f.0),
        })
    }

    fn ready(stream: &mut OutboxStream) -> bool {
        let waker = futures::task::noop_waker();
        stream
            .poll_ready(&mut Context::from_waker(&waker))
            .is_ready()
    }

    #[test]
    fn direct_writes_skip_the_queue_and_keep_order_when_the_socket_fills() {
        let (outbox, mut stream, wire) = wired(8, 5);
        assert!(!ready(&mut stream), "nothing queued");
        assert!(outbox.push(bytes(b"abc")), "written directly");
        assert!(!ready(&mut stream), "a direct write queues nothing");
        assert!(outbox.push(bytes(b"defg")), "two bytes go, two stay");
        assert!(outbox.push(bytes(b"hi")), "queued behind the rest");
        assert_eq!(&lock(&wire.written)[..], b"abcde");
        assert!(ready(&mut stream));
        // The socket has room again, but the consumer has not written yet:
        // producers must not overtake it.
        *lock(&wire.budget) = 100;
        assert!(!drain(&mut stream, &wire.written));
        assert!(
            outbox.push(bytes(b"jk")),
            "queued: the consumer holds the wire"
        );
        assert!(ready(&mut stream));
        assert!(!drain(&mut stream, &wire.written));
        assert!(!ready(&mut stream), "drained: the consumer lets go");
        assert!(outbox.push(bytes(b"lm")), "direct again");
        assert_eq!(&lock(&wire.written)[..], b"abcdefghijklm");
    }

    #[test]
    fn a_deferred_frame_is_written_when_the_fan_out_is_done() {
        let (outbox, mut stream, wire) = wired(8, 100);
        let mut writes = Deferred::default();
        assert!(outbox.push_deferred(bytes(b"ab"), &mut writes));
        assert!(
            lock(&wire.written).is_empty(),
            "not under the caller's lock"
        );
        drop(writes);
        assert_eq!(&lock(&wire.written)[..], b"ab");
        assert!(!ready(&mut stream), "written, not queued");
    }

    #[test]
    fn frames_behind_a_deferred_one_go_to_the_consumer_in_order() {
        let (outbox, mut stream, wire) = wired(8, 100);
        let mut writes = Deferred::default();
        assert!(outbox.push_deferred(bytes(b"ab"), &mut writes));
        assert!(
            outbox.push(bytes(b"cd")),
            "queued behind the deferred frame"
        );
        drop(writes);
        assert!(
            lock(&wire.written).is_empty(),
            "two frames: the consumer writes them together"
        );
        assert!(ready(&mut stream));
        assert!(!drain(&mut stream, &wire.written));
        assert_eq!(&lock(&wire.written)[..], b"abcd");
    }

    #[test]
    fn queued_and_no_direct_pushes_leave_the_writing_to_the_consumer() {
        let (outbox, mut stream, wire) = wired(8, 100);
        let mut writes = Deferred::none();
        assert!(outbox.push_deferred(bytes(b"ab"), &mut writes));
        drop(writes);
        assert!(outbox.queue(bytes(b"cd")));
        assert!(lock(&wire.written).is_empty());
        assert!(ready(&mut stream));
        assert!(!drain(&mut stream, &wire.written));
        assert_eq!(&lock(&wire.written)[..], b"abcd");
    }

    #[tokio::test]
    async fn a_resume_burst_is_outside_the_capacity_and_read_before_the_next() {
        let (outbox, mut stream) = outbox(2);
        outbox.queue(frame(200));
        outbox.queue_burst((0..100).map(frame));
        assert!(
            !outbox.is_ended(),
            "a hundred frames in a queue of two: a burst"
        );
        assert!(outbox.push(frame(101)), "a live frame fits beside it");
        assert!(
            !outbox.burst_read(Duration::from_millis(30)).await,
            "nothing read for the whole wait"
        );
        // The frame queued before the burst is not one of it.
        assert_eq!(stream.next().await.unwrap().0[0], 200);
        for n in 0..36 {
            assert_eq!(stream.next().await.unwrap().0[0], n);
        }
        assert!(
            outbox.burst_read(Duration::ZERO).await,
            "64 of the burst left: the next join may go"
        );
        assert!(outbox.push(frame(102)), "two live frames: the capacity");
        assert!(
            !outbox.push(frame(103)),
            "the capacity holds for live frames"
        );
        assert!(outbox.is_ended(), "kicked");
    }

    #[tokio::test]
    async fn a_slow_reader_keeps_a_join_waiting_without_being_kicked() {
        let (outbox, mut stream) = outbox(2);
        outbox.queue_burst((0..100).map(frame));
        let reader = tokio::spawn(async move {
            for _ in 0..100 {
                stream.next().await.unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        assert!(
            outbox.burst_read(Duration::from_millis(50)).await,
            "it reads, if slowly: longer than the stall bound in all"
        );
        reader.await.unwrap();
    }

    #[test]
    fn a_burst_written_directly_is_counted_as_read() {
        let (outbox, mut stream, wire) = wired(8, 100);
        let mut writes = Deferred::default();
        assert!(outbox.push_deferred(bytes(b"f"), &mut writes));
        assert!(
            !drain(&mut stream, &wire.written),
            "the consumer takes it first"
        );
        outbox.queue_burst([bytes(b"r")]);
        drop(writes);
        assert!(!ready(&mut stream) || !drain(&mut stream, &wire.written));
        assert_eq!(&lock(&wire.written)[..], b"fr");
        assert_eq!(
            lock(&outbox.shared.state).exempt(),
            0,
            "nothing of the burst left"
        );
    }

    #[test]
    fn a_kick_keeps_the_wire_framing_whole() {
        let (outbox, mut stream, wire) = wired(8, 2);
        outbox.push(bytes(b"abcd"));
        outbox.push(bytes(b"ef"));
        outbox.kick(bytes(b"!"));
        assert!(!outbox.push(bytes(b"gh")), "closed");
        assert!(
            drain(&mut stream, &wire.written),
            "the kick ends the stream"
        );
        assert_eq!(
            &lock(&wire.written)[..],
            b"abcd!",
            "the rest, then the notice"
        );
    }

    #[test]
    fn a_slow_socket_fills_the_queue_and_is_kicked() {
        let (outbox, mut stream, wire) = wired(2, 0);
        assert!(outbox.push(bytes(b"a")));
        assert!(outbox.push(bytes(b"b")));
        assert!(!outbox.push(bytes(b"c")), "over capacity");
        assert!(outbox.is_ended());
        assert!(drain(&mut stream, &wire.written));
        let notice = lock(&wire.written).clone();
        let decoded = <chat_proto::v1::ServerFrame as prost::Message>::decode(&notice[..]).unwrap();
        assert!(matches!(decoded.frame, Some(Frame::Disconnect(_))));
    }

    #[test]
    fn dropping_the_consumer_drops_the_wire() {
        let (outbox, stream, wire) = wired(2, 100);
        assert_eq!(Arc::strong_count(&wire.written), 2);
        drop(stream);
        assert_eq!(Arc::strong_count(&wire.written), 1, "the wire went");
        assert!(!outbox.push(bytes(b"a")), "nobody reads any more");
    }
}
