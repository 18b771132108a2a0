//! Identical store reads in flight at once share one: when a restarted
//! instance's clients all rejoin, the joiners of one room ask the same
//! question (the room's latest sequence, the same backlog) at the same
//! moment, and the store answers it once. A read is shared only while it
//! runs; the next one asks the store again.

use chat_util::lock;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Mutex;

/// The reads in flight, by what they ask.
pub struct Coalesce<K, V: Clone> {
    /// Each read's shared answer while it runs.
    running: Mutex<HashMap<K, Shared<BoxFuture<'static, V>>>>,
}

impl<K, V: Clone> Default for Coalesce<K, V> {
    fn default() -> Self {
        Coalesce {
            running: Mutex::default(),
        }
    }
}

impl<K: Eq + Hash + Clone, V: Clone + Send + Sync + 'static> Coalesce<K, V> {
    /// The answer to `key`: a read already running for it, shared, or
    /// `read()` run now (and shared with those that ask meanwhile). The
    /// second value says whether this call started the read.
    pub async fn get<F>(&self, key: K, read: impl FnOnce() -> F) -> (V, bool)
    where
        F: Future<Output = V> + Send + 'static,
    {
        let (shared, started) = {
            let mut running = lock(&self.running);
            match running.get(&key) {
                Some(shared) => (shared.clone(), false),
                None => {
                    let shared = read().boxed().shared();
                    running.insert(key.clone(), shared.clone());
                    (shared, true)
                }
            }
        };
        // Done, or this ask dropped (those sharing it drive it on): later
        // asks read afresh.
        let _forget = started.then(|| Forget {
            running: &self.running,
            key: Some(key),
        });
        (shared.await, started)
    }
}

/// Takes a read out of the running ones when dropped.
struct Forget<'a, K: Eq + Hash, V: Clone> {
    /// The running reads.
    running: &'a Mutex<HashMap<K, Shared<BoxFuture<'static, V>>>>,
    /// The read's key.
    key: Option<K>,
}

impl<K: Eq + Hash, V: Clone> Drop for Forget<'_, K, V> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            lock(self.running).remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn asks_in_flight_together_share_one_read_and_later_ones_read_again() {
        let coalesce: Arc<Coalesce<&str, u64>> = Arc::default();
        let reads = Arc::new(AtomicUsize::new(0));
        let (release, released) = tokio::sync::watch::channel(false);
        let ask = |key| {
            let (coalesce, reads, mut released) =
                (coalesce.clone(), reads.clone(), released.clone());
            async move {
                coalesce
                    .get(key, move || async move {
                        reads.fetch_add(1, Ordering::SeqCst);
                        let _ = released.wait_for(|r| *r).await;
                        7
                    })
                    .await
            }
        };
        let asks: Vec<_> = (0..10).map(|_| tokio::spawn(ask("lobby"))).collect();
        let other = tokio::spawn(ask("dev"));
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        release.send(true).unwrap();
        let mut started = 0;
        for a in asks {
            let (value, first) = a.await.unwrap();
            assert_eq!(value, 7);
            started += usize::from(first);
        }
        assert_eq!(started, 1, "one of the ten read");
        assert!(other.await.unwrap().1, "another key reads on its own");
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        assert!(ask("lobby").await.1, "a later ask reads again");
        assert_eq!(reads.load(Ordering::SeqCst), 3);
        // The ask that started a read dropped before it ended: the next one
        // reads afresh rather than getting an old answer.
        let (release, released) = tokio::sync::watch::channel(false);
        let dropped = coalesce.get("ops", {
            let mut released = released.clone();
            move || async move {
                let _ = released.wait_for(|r| *r).await;
                1
            }
        });
        assert!(
            FutureExt::now_or_never(Box::pin(dropped)).is_none(),
            "still reading"
        );
        drop(release);
        let (value, started) = coalesce.get("ops", || async { 2 }).await;
        assert_eq!((value, started), (2, true));
    }
}
