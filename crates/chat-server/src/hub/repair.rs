//! Gap repair: rooms report when a message arrived after a gap (a lost
//! publish, a backplane outage, publishers racing), or when a delivery may
//! have been missed (a fresh subscription, a reconnected backplane). After
//! a short hold — most gaps close by themselves when the late message
//! lands — the task reads what is missing from the store, the source of
//! truth, and offers it to the room, which delivers in sequence order.

use super::{Rooms, message_event};
use crate::store::{Direction, MessageStore, Page};
use crate::validate::RoomName;
use chat_proto::EncodedFrame;
use chat_proto::v1::server_frame::Frame;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long a gap may stay open before the store is asked.
pub const HOLD: Duration = Duration::from_millis(100);
/// Repair requests waiting at most.
pub const QUEUE: usize = 4096;
/// Messages read per store query.
const PAGE: usize = 500;
/// Pages read per repair at most (the rest waits for the next request).
const MAX_PAGES: usize = 20;

/// Runs until `shutdown`.
pub async fn run(
    rooms: Arc<Rooms>,
    store: Arc<dyn MessageStore>,
    mut requests: mpsc::Receiver<RoomName>,
    shutdown: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = requests.recv() => match r {
                Some(room) => room,
                None => return,
            },
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(HOLD) => {}
        }
        let mut todo = HashSet::from([first]);
        while let Ok(room) = requests.try_recv() {
            todo.insert(room);
        }
        for room in todo {
            fill(&rooms, &*store, &room).await;
        }
    }
}

/// Offers the room every stored message after what it delivered.
async fn fill(rooms: &Rooms, store: &dyn MessageStore, room: &RoomName) {
    for _ in 0..MAX_PAGES {
        let Some(delivered) = rooms.delivered(room) else {
            return;
        };
        let latest = match store.latest_sequence(room).await {
            Ok(latest) => latest,
            Err(e) => {
                tracing::warn!(%room, error = %e, "gap repair: store unavailable");
                return;
            }
        };
        if latest <= delivered {
            return;
        }
        let page = Page {
            direction: Direction::Forward,
            from: delivered,
            limit: PAGE,
        };
        let messages = match store.history(room, page).await {
            Ok(messages) => messages,
            Err(e) => {
                tracing::warn!(%room, error = %e, "gap repair: store unavailable");
                return;
            }
        };
        let Some(first) = messages.first() else {
            // The store no longer has them (retention): move on.
            rooms.skip_to(room, latest);
            return;
        };
        if first.sequence > delivered + 1 {
            rooms.skip_to(room, first.sequence - 1);
        }
        tracing::debug!(%room, from = delivered + 1, count = messages.len(), "gap repair");
        for m in &messages {
            let frame = EncodedFrame::from(Frame::Message(message_event(m)));
            rooms.offer(room, m.sequence, &frame);
        }
    }
}
