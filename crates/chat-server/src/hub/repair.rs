//! Gap repair: rooms report when a message arrived after a gap (a lost
//! publish, a backplane outage, publishers racing), or when a delivery may
//! have been missed (a fresh subscription, a reconnected backplane). After
//! a short hold — most gaps close by themselves when the late message
//! lands — the task reads what is missing from the store, the source of
//! truth, and offers it to the room, which delivers in sequence order.
//! Every `TAIL_CHECK` it also compares every local room with the store.

use super::{Rooms, message_event};
use crate::domain::validate::RoomName;
use crate::store::{Direction, MessageStore, Page};
use chat_proto::EncodedFrame;
use chat_proto::v1::server_frame::Frame;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long a gap may stay open before the store is asked.
pub const HOLD: Duration = Duration::from_millis(100);
/// How often every room is compared with the store anyway: a message
/// whose publish was lost while nothing followed it in its room leaves no
/// gap to notice, and a repair that failed (the store was busy) is retried.
pub const TAIL_CHECK: Duration = Duration::from_secs(5);
/// Repair requests waiting at most.
pub const QUEUE: usize = 4096;
/// Messages read per store query.
const PAGE: usize = 500;
/// Pages read per repair at most (the rest waits for the next request).
const MAX_PAGES: usize = 20;

/// Runs until `shutdown`, comparing every room with the store every
/// `tail_check` besides the requested repairs.
pub async fn run(
    rooms: Arc<Rooms>,
    store: Arc<dyn MessageStore>,
    mut requests: mpsc::Receiver<RoomName>,
    tail_check: Duration,
    shutdown: CancellationToken,
) {
    let mut tail_check = tokio::time::interval(tail_check);
    tail_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut todo = HashSet::new();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tail_check.tick() => {
                if !rooms.is_ordered() {
                    continue;
                }
                todo.extend(rooms.names());
            }
            r = requests.recv() => match r {
                Some(room) => {
                    todo.insert(room);
                }
                None => return,
            },
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(HOLD) => {}
        }
        while let Ok(room) = requests.try_recv() {
            todo.insert(room);
        }
        // A store that hangs (it is down) does not hold up the shutdown.
        let repairs = async {
            for room in todo {
                fill(&rooms, &*store, &room).await;
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            () = repairs => {}
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::User;
    use crate::hub::outbox;
    use crate::store::{Kind, MemoryStore, NewMessage};
    use futures::StreamExt;

    #[tokio::test]
    async fn a_lost_last_message_is_fetched_from_the_store() {
        let store = Arc::new(MemoryStore::new());
        let lobby = RoomName::parse("lobby").unwrap();
        for i in 1..=5 {
            let message = NewMessage {
                room: lobby.clone(),
                sender: User {
                    user_id: Arc::from("u"),
                    display_name: Arc::from("u"),
                },
                client_message_id: i.to_string(),
                text: format!("m{i}"),
                kind: Kind::Message,
            };
            store.append(message).await.unwrap();
        }
        // The room here delivered up to 3; 4 and 5 were published while it
        // was not listening, and nothing came after them.
        let rooms = Arc::new(Rooms::new(true, None));
        let (o, mut stream) = outbox(16);
        rooms.begin_join(&lobby, 1, &Arc::from("u"), o, 3);
        rooms.finish_join(&lobby, 1, Vec::new(), 0);
        let (_tx, rx) = mpsc::channel(4);
        let shutdown = CancellationToken::new();
        tokio::spawn(run(
            rooms.clone(),
            store,
            rx,
            Duration::from_millis(20),
            shutdown.clone(),
        ));
        let mut got = Vec::new();
        for _ in 0..2 {
            let frame = tokio::time::timeout(Duration::from_secs(5), stream.next())
                .await
                .expect("repaired within the bound")
                .unwrap();
            let decoded = <chat_proto::v1::ServerFrame as prost::Message>::decode(frame.0).unwrap();
            match decoded.frame {
                Some(Frame::Message(m)) => got.push(m.sequence),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got, vec![4, 5]);
        assert_eq!(rooms.delivered(&lobby), Some(5));
        shutdown.cancel();
    }

    /// Issue 15, report 14: the repair task stops at shutdown even while a
    /// store call hangs (the store is down).
    #[tokio::test]
    async fn repair_stops_at_shutdown_while_the_store_hangs() {
        let lobby = RoomName::parse("lobby").unwrap();
        let rooms = Arc::new(Rooms::new(true, None));
        let (o, _stream) = outbox(16);
        rooms.begin_join(&lobby, 1, &Arc::from("u"), o, 0);
        rooms.finish_join(&lobby, 1, Vec::new(), 0);
        let (tx, rx) = mpsc::channel(4);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(
            rooms,
            Arc::new(crate::store::GatedStore::default()),
            rx,
            Duration::from_secs(3600),
            shutdown.clone(),
        ));
        tx.send(lobby).await.unwrap();
        // Past the hold: the repair is waiting on the store.
        tokio::time::sleep(HOLD * 3).await;
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("the repair task ended with the shutdown")
            .unwrap();
    }
}
