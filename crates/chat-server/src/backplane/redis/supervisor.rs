//! The Redis backplane's supervisor: the task that owns the connection.
//! It connects (subscribing the control channel and every counted room),
//! PINGs every `PING_INTERVAL`, replaces a single server's connection that
//! drops, watches a cluster connection (which heals itself) and renews its
//! subscriptions when it answers again, and reconnects with backoff. It
//! runs as a loop over [`Step`]s, one small function each.

use super::{Conn, Shared};
use crate::backplane::control::ControlEvent;
use crate::backplane::subscriptions::Subscriptions;
use crate::domain::validate::RoomName;
use chat_util::lock;
use redis::{AsyncConnectionConfig, ProtocolVersion, PushInfo};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the supervisor checks that Redis answers.
const PING_INTERVAL: Duration = Duration::from_secs(1);

/// What the supervisor does next.
///
/// Ordering rules:
/// - `Connect` stores a connection only after the control channel and
///   every counted room are subscribed on it, and only then is the
///   backplane marked healthy, so a ready instance receives its rooms.
/// - `Wait` and `Backoff` give way to shutdown at once; `Replace` checks
///   for it first, so a stopping backplane counts no outage.
/// - `Replace` forgets the connection (publishes fail fast from then on)
///   before it declares the outage, and every new attempt follows a
///   `Backoff`: 100 ms after a connection that worked, doubling with each
///   failed attempt.
/// - After `Stop` the backplane stays unhealthy with no connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Connect and subscribe everything.
    Connect,
    /// Wait for the next check of connection `generation`: the next
    /// `PING_INTERVAL`, or a report that it dropped.
    Wait(u64),
    /// PING connection `generation` and act on the answer.
    Check(u64),
    /// Give the connection up and declare the outage.
    Replace,
    /// Wait before the next attempt.
    Backoff,
    /// Shut down.
    Stop,
}

/// The supervisor's state between steps.
struct Supervisor {
    /// The backplane it keeps connected.
    shared: Arc<Shared>,
    /// Ends the supervisor.
    shutdown: CancellationToken,
    /// Backoffs since the last connection, which lengthen the next one.
    attempt: u32,
    /// Where the next round of subscription retries starts.
    retry_cursor: usize,
}

/// Keeps a connection to Redis until `shutdown`.
pub(super) async fn supervise(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut supervisor = Supervisor {
        shared,
        shutdown,
        attempt: 0,
        retry_cursor: 0,
    };
    let mut step = Step::Connect;
    loop {
        step = match step {
            Step::Connect => supervisor.connect().await,
            Step::Wait(generation) => supervisor.wait(generation).await,
            Step::Check(generation) => supervisor.check(generation).await,
            Step::Replace => supervisor.replace(),
            Step::Backoff => supervisor.backoff().await,
            Step::Stop => break,
        };
    }
    supervisor.shared.outage.stopped();
    *lock(&supervisor.shared.connection) = None;
}

impl Supervisor {
    /// `Connect`: on success the outage (if any) ends and watching begins.
    async fn connect(&mut self) -> Step {
        match connect(&self.shared).await {
            Ok((generation, rooms)) => {
                self.attempt = 0;
                self.shared.outage.connected(Some(rooms));
                Step::Wait(generation)
            }
            Err(e) => {
                self.shared.outage.attempt_failed(&e, self.attempt);
                Step::Backoff
            }
        }
    }

    /// `Wait`: until the next tick or a reported drop.
    async fn wait(&self, generation: u64) -> Step {
        tokio::select! {
            _ = self.shutdown.cancelled() => return Step::Stop,
            _ = self.shared.lost.notified() => {}
            _ = tokio::time::sleep(PING_INTERVAL) => {}
        }
        Step::Check(generation)
    }

    /// `Check`: a single server that does not answer is replaced; a
    /// cluster connection heals itself, so it is only marked lost while it
    /// does not answer, and resubscribed when it answers again.
    async fn check(&mut self, generation: u64) -> Step {
        let shared = &self.shared;
        let mut cursor = self.retry_cursor;
        let Some((_, mut conn)) = shared.current() else {
            return Step::Replace;
        };
        let answered = matches!(
            tokio::time::timeout(shared.config.command_timeout, conn.ping()).await,
            Ok(Ok(()))
        );
        match (&conn, answered) {
            (Conn::Single(_), true) => retry_failed(shared, &mut conn, &mut cursor).await,
            (Conn::Single(_), false) => return Step::Replace,
            (Conn::Cluster(_), true) => {
                if shared.outage.is_healthy() {
                    retry_failed(shared, &mut conn, &mut cursor).await;
                } else {
                    self.renew_cluster(&mut conn).await;
                }
            }
            // Counted and logged once per outage.
            (Conn::Cluster(_), false) => {
                shared.outage.lost();
            }
        }
        self.retry_cursor = cursor;
        if self.shared.generation.load(Ordering::SeqCst) != generation {
            return Step::Replace;
        }
        Step::Wait(generation)
    }

    /// Resubscribes everything on a cluster connection that answers again,
    /// which ends the outage; on failure the next check tries again.
    async fn renew_cluster(&self, conn: &mut Conn) {
        match resubscribe(&self.shared, conn).await {
            Ok(rooms) => {
                self.shared.outage.connected(Some(rooms));
            }
            Err(e) => tracing::debug!(error = %e, "cluster resubscribe failed"),
        }
    }

    /// `Replace`: forgets the connection and declares the outage (once).
    fn replace(&self) -> Step {
        if self.shutdown.is_cancelled() {
            return Step::Stop;
        }
        *lock(&self.shared.connection) = None;
        self.shared.outage.lost();
        Step::Backoff
    }

    /// `Backoff`: waits longer after each failed attempt.
    async fn backoff(&mut self) -> Step {
        let delay = backoff(self.attempt, self.shared.config.reconnect_max_delay);
        self.attempt = self.attempt.saturating_add(1);
        tokio::select! {
            _ = self.shutdown.cancelled() => Step::Stop,
            _ = tokio::time::sleep(delay) => Step::Connect,
        }
    }
}

/// At most this many failed (un)subscribe commands are sent again per
/// check, so one check stays short however many rooms failed.
const RETRIES_PER_CHECK: usize = 64;

/// Sends again the (un)subscribe commands that failed while the connection
/// stayed up, each in the state its room's count wants now; those that fail
/// again stay for the next check. At most `RETRIES_PER_CHECK` rooms per
/// check, starting where the last check stopped (`cursor`), so rooms
/// refused for good do not keep the others from their turn. The room table
/// is held for one command at a time (joins and leaves go on between them),
/// and the round ends at the second I/O error or timeout: the connection
/// (or one cluster shard) is in trouble, and the next check looks again.
async fn retry_failed(shared: &Shared, conn: &mut Conn, cursor: &mut usize) {
    let mut pending: Vec<RoomName> = {
        let rooms = shared.rooms.lock().await;
        rooms.to_retry().into_iter().map(|(room, _)| room).collect()
    };
    if pending.is_empty() {
        return;
    }
    pending.sort_unstable();
    let start = *cursor % pending.len();
    pending.rotate_left(start);
    let mut trouble = 0;
    for room in pending.into_iter().take(RETRIES_PER_CHECK) {
        *cursor += 1;
        let mut rooms = shared.rooms.lock().await;
        // The state the count wants now; a join or leave since may have
        // settled it already.
        let Some(on) = rooms.retry_state(&room) else {
            continue;
        };
        match shared
            .set_subscribed(conn, &shared.channel(&room), on)
            .await
        {
            Ok(()) => {
                tracing::info!(%room, subscribe = on, "redis (un)subscribe retried: it took");
                rooms.settled(&room);
                if on {
                    let event = ControlEvent::Resubscribed(room);
                    shared.control.send(event, &shared.stats);
                }
            }
            Err(e) if connection_trouble(&e) => {
                tracing::debug!(%room, error = %e, "redis (un)subscribe retry: connection trouble");
                trouble += 1;
                if trouble >= 2 {
                    return;
                }
            }
            Err(e) => tracing::debug!(%room, error = %e, "redis (un)subscribe failed again"),
        }
    }
}

/// Whether `e` says the connection is in trouble (I/O, a timeout, a drop),
/// rather than that Redis refused one command with an error reply.
fn connection_trouble(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped()
}

/// Subscribes the control channel and every counted room on `conn`;
/// returns how many rooms. Holds the room table meanwhile, so no join or
/// leave slips between.
async fn resubscribe(shared: &Shared, conn: &mut Conn) -> redis::RedisResult<usize> {
    let mut rooms = shared.rooms.lock().await;
    resubscribe_locked(shared, conn, &mut rooms).await
}

/// [`resubscribe`] for a caller that holds the room table's lock. A room
/// Redis refuses (an ACL, `MOVED`, `CLUSTERDOWN`: an error reply) does not
/// fail the connection: it goes into the retry set and the others are
/// subscribed. The control channel refused, or an I/O error or timeout,
/// fails it. Only on success does the retry set become exactly the refused
/// rooms (every other wanted room is subscribed on `conn`).
async fn resubscribe_locked(
    shared: &Shared,
    conn: &mut Conn,
    rooms: &mut Subscriptions<()>,
) -> redis::RedisResult<usize> {
    shared
        .set_subscribed(conn, &shared.control_channel(), true)
        .await?;
    let mut subscribed = 0;
    let mut refused = Vec::new();
    for room in rooms.subscribed() {
        match shared
            .set_subscribed(conn, &shared.channel(room), true)
            .await
        {
            Ok(()) => subscribed += 1,
            Err(e) if connection_trouble(&e) => return Err(e),
            Err(e) => {
                tracing::warn!(%room, error = %e, "redis subscribe refused; retrying");
                refused.push(room.clone());
            }
        }
    }
    rooms.clear_failed();
    for room in &refused {
        rooms.failed(room);
    }
    Ok(subscribed)
}

/// Connects and subscribes every wanted room; returns the connection's
/// generation and how many rooms.
async fn connect(shared: &Arc<Shared>) -> redis::RedisResult<(u64, usize)> {
    let generation = shared.generation.fetch_add(1, Ordering::SeqCst) + 1;
    let mut conn = open(shared, generation).await?;
    // The connection is stored before the room table is let go: a join
    // after it finds this connection and subscribes on it; one before it
    // is among the rooms subscribed here.
    let mut table = shared.rooms.lock().await;
    let rooms = resubscribe_locked(shared, &mut conn, &mut table).await?;
    *lock(&shared.connection) = Some((generation, conn));
    drop(table);
    Ok((generation, rooms))
}

/// Opens connection `generation` (to the server, or to the cluster), its
/// pushes going to [`Shared::on_push`] for as long as the backplane lives.
async fn open(shared: &Arc<Shared>, generation: u64) -> redis::RedisResult<Conn> {
    let weak = Arc::downgrade(shared);
    let push = move |info: PushInfo| -> Result<(), ()> {
        match weak.upgrade() {
            Some(shared) => {
                shared.on_push(generation, info);
                Ok(())
            }
            None => Err(()),
        }
    };
    let timeout = shared.config.command_timeout;
    if shared.config.cluster {
        let client = redis::cluster::ClusterClientBuilder::new(shared.nodes.clone())
            .use_protocol(ProtocolVersion::RESP3)
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .push_sender(push)
            .build()?;
        let connect = client.get_async_connection();
        let conn = tokio::time::timeout(timeout * 2, connect)
            .await
            .map_err(|_| {
                redis::RedisError::from((redis::ErrorKind::Io, "cluster connect timed out"))
            })??;
        Ok(Conn::Cluster(conn))
    } else {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_push_sender(push);
        let client = redis::Client::open(shared.nodes[0].clone())?;
        Ok(Conn::Single(
            client
                .get_multiplexed_async_connection_with_config(&config)
                .await?,
        ))
    }
}

/// Reconnect delay: 100 ms doubling to `max`, with jitter.
fn backoff(attempt: u32, max: Duration) -> Duration {
    let base = Duration::from_millis(100)
        .saturating_mul(1u32 << attempt.min(16))
        .min(max);
    // Cheap jitter without a generator: the sub-second clock.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    base.mul_f64(0.5 + f64::from(nanos % 1000) / 2000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_100_ms_up_to_the_limit_with_jitter() {
        let max = Duration::from_secs(2);
        for (attempt, base_ms) in [
            (0, 100),
            (1, 200),
            (2, 400),
            (4, 1600),
            (5, 2000),
            (40, 2000),
        ] {
            let delay = backoff(attempt, max);
            let base = Duration::from_millis(base_ms);
            assert!(
                delay >= base / 2 && delay <= base,
                "attempt {attempt}: {delay:?} not within half of {base:?}"
            );
        }
    }
}
