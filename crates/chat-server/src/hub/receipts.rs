//! Read receipts: the read positions members moved since the last
//! announcement, gathered per room and published once per interval as one
//! `ReadReceipts` frame for each room (the latest position of each reader
//! wins), so a room of fast readers costs each member about one event per
//! interval however often they mark.

use super::{Hub, member};
use crate::backplane::RoomFrame;
use crate::domain::User;
use crate::domain::validate::RoomName;
use chat_proto::EncodedFrame;
use chat_proto::v1::{ReadPosition, ReadReceipts, server_frame::Frame};
use chat_util::lock;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the gathered positions are announced.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Positions moved since the last announcement: room → reader's user id →
/// (the reader, the position). Bounded by the readers of one interval:
/// each mark is rate limited per connection, and the map is emptied every
/// interval.
#[derive(Default)]
pub struct Receipts {
    pending: Mutex<HashMap<RoomName, Readers>>,
}

/// One room's readers since the last announcement: user id → (the reader,
/// the position).
type Readers = HashMap<Arc<str>, (User, u64)>;

impl Receipts {
    /// `user` has read `room` up to `sequence` (a later note for the same
    /// reader and room replaces an earlier one unless it is lower).
    pub fn note(&self, room: &RoomName, user: &User, sequence: u64) {
        let mut pending = lock(&self.pending);
        let readers = pending.entry(room.clone()).or_default();
        let entry = readers
            .entry(user.user_id.clone())
            .or_insert_with(|| (user.clone(), sequence));
        entry.1 = entry.1.max(sequence);
    }

    /// Everything gathered, one frame per room; empties the gathering.
    pub fn take(&self) -> Vec<RoomFrame> {
        let pending = std::mem::take(&mut *lock(&self.pending));
        pending
            .into_iter()
            .map(|(room, readers)| {
                let mut positions: Vec<ReadPosition> = readers
                    .into_values()
                    .map(|(user, sequence)| ReadPosition {
                        member: Some(member(&user)),
                        sequence,
                    })
                    .collect();
                positions.sort_by(|a, b| {
                    let id = |p: &ReadPosition| p.member.as_ref().map(|m| m.user_id.clone());
                    id(a).cmp(&id(b))
                });
                RoomFrame {
                    frame: EncodedFrame::from(Frame::ReadReceipts(ReadReceipts {
                        room: room.to_string(),
                        positions,
                    })),
                    room,
                    sequence: None,
                    acked_at_unix_us: 0,
                    trace: None,
                    typing: None,
                }
            })
            .collect()
    }
}

/// Announces the gathered positions every `interval` until `shutdown`
/// (then once more, so a mark just made is not lost to the members).
pub async fn run(hub: Arc<Hub>, interval: Duration, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = ticks.tick() => false,
        };
        for frame in hub.receipts.take() {
            let room = frame.room.clone();
            if let Err(e) = hub.backplane().publish(frame).await {
                tracing::debug!(%room, error = %e, "read receipts not published");
            }
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_proto::v1::ServerFrame;
    use prost::Message;

    fn user(id: &str) -> User {
        User {
            user_id: Arc::from(id),
            display_name: Arc::from(id.to_uppercase()),
        }
    }

    #[test]
    fn marks_are_gathered_per_room_the_furthest_wins_and_taking_empties() {
        let receipts = Receipts::default();
        let (lobby, dev) = (
            RoomName::parse("lobby").unwrap(),
            RoomName::parse("dev").unwrap(),
        );
        receipts.note(&lobby, &user("bob"), 5);
        receipts.note(&lobby, &user("ann"), 3);
        receipts.note(&lobby, &user("bob"), 9);
        receipts.note(&lobby, &user("bob"), 7);
        receipts.note(&dev, &user("ann"), 1);
        let mut frames = receipts.take();
        frames.sort_by(|a, b| a.room.as_str().cmp(b.room.as_str()));
        assert_eq!(frames.len(), 2, "one frame per room");
        let decoded = |f: &RoomFrame| match ServerFrame::decode(f.frame.0.clone()).unwrap().frame {
            Some(Frame::ReadReceipts(r)) => r
                .positions
                .iter()
                .map(|p| (p.member.clone().unwrap().user_id, p.sequence))
                .collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assert_eq!(decoded(&frames[0]), [("ann".to_string(), 1)]);
        assert_eq!(
            decoded(&frames[1]),
            [("ann".to_string(), 3), ("bob".to_string(), 9)]
        );
        assert!(
            frames
                .iter()
                .all(|f| f.sequence.is_none() && f.typing.is_none())
        );
        assert!(receipts.take().is_empty(), "taking empties");
    }
}
