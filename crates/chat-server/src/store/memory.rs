//! The in-memory store: sequences messages and keeps no history. It serves
//! a single instance and tests; nothing survives a restart.

use super::{MessageStore, NewMessage, StoreError, StoredMessage};
use crate::time::now_unix_ms;
use crate::validate::RoomName;
use futures::future::{BoxFuture, FutureExt};
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;

const SHARDS: usize = 32;

/// Per-room sequence counters, sharded so rooms do not contend.
pub struct MemoryStore {
    hasher: RandomState,
    shards: Box<[Mutex<HashMap<RoomName, u64>>]>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn shard(&self, room: &RoomName) -> &Mutex<HashMap<RoomName, u64>> {
        let i = self.hasher.hash_one(room) as usize % self.shards.len();
        &self.shards[i]
    }
}

impl MessageStore for MemoryStore {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn append(&self, message: NewMessage) -> BoxFuture<'_, Result<StoredMessage, StoreError>> {
        let sequence = {
            let mut counters = self
                .shard(&message.room)
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let counter = counters.entry(message.room.clone()).or_insert(0);
            *counter += 1;
            *counter
        };
        let stored = StoredMessage {
            id: uuid::Uuid::now_v7().to_string(),
            sequence,
            time_unix_ms: now_unix_ms(),
            message,
        };
        futures::future::ready(Ok(stored)).boxed()
    }

    fn latest_sequence<'a>(&'a self, room: &'a RoomName) -> BoxFuture<'a, Result<u64, StoreError>> {
        let counters = self.shard(room).lock().unwrap_or_else(|p| p.into_inner());
        let latest = counters.get(room).copied().unwrap_or(0);
        futures::future::ready(Ok(latest)).boxed()
    }

    fn check(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        futures::future::ready(Ok(())).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Sender;
    use std::sync::Arc;

    fn msg(room: &str, text: &str) -> NewMessage {
        NewMessage {
            room: RoomName::parse(room).unwrap(),
            sender: Sender {
                user_id: Arc::from("u"),
                display_name: Arc::from("U"),
            },
            client_message_id: text.into(),
            text: text.into(),
        }
    }

    #[tokio::test]
    async fn sequences_are_per_room_and_gap_free() {
        let store = MemoryStore::new();
        let a = RoomName::parse("a").unwrap();
        assert_eq!(store.latest_sequence(&a).await.unwrap(), 0);
        for expected in 1..=5 {
            assert_eq!(
                store.append(msg("a", "x")).await.unwrap().sequence,
                expected
            );
        }
        assert_eq!(store.append(msg("b", "y")).await.unwrap().sequence, 1);
        assert_eq!(store.latest_sequence(&a).await.unwrap(), 5);
    }

    #[tokio::test]
    async fn concurrent_appends_get_distinct_sequences() {
        let store = Arc::new(MemoryStore::new());
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut seqs = Vec::new();
                for _ in 0..100 {
                    seqs.push(store.append(msg("r", "x")).await.unwrap().sequence);
                }
                seqs
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all.sort_unstable();
        assert_eq!(all, (1..=800).collect::<Vec<u64>>());
    }
}
