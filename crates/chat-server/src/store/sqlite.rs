//! The SQLite store, the embedded default: one file (WAL journal), one
//! writer connection that commits appends in groups, and a small pool of
//! read-only connections for history and latest sequences.
//!
//! Group commit: the writer task takes every append waiting in its queue
//! (up to `MAX_BATCH`) into one `BEGIN IMMEDIATE … COMMIT`, so under load
//! many messages share one fsync; idle, each message commits on its own.
//! The queue is bounded, so a slow disk pushes back on senders instead of
//! buffering without limit.

use super::queue::queued_from_row;
use super::{
    Appended, Ban, Capture, Claim, Conversation, Direction, HISTORY_COLUMNS, JoinStateRow, Kind,
    MAX_BANS_LISTED, MAX_DIRECT_LISTED, MAX_EMOJIS_PER_MESSAGE, MAX_REACTIONS_PER_USER,
    MembershipChange, MessageStore, NewMessage, Page, QueuedEvent, REACTORS_LISTED, ReadState,
    Retention, SELECT_COLUMNS, StoreError, StoredMessage, TRIM_CHUNK, Trimmed, UNREAD_COUNT_CAP,
    ban_from_row, check_change, direct_from_row, direct_users, join_state_from_row, row_to_message,
    with_reactions,
};
use crate::domain::User;
use crate::domain::validate::RoomName;
use crate::metrics::Histogram;
use chat_util::now_unix_ms;
use futures::future::{BoxFuture, FutureExt};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Row};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Appends committed together at most.
const MAX_BATCH: usize = 256;
/// Appends waiting for the writer at most.
const QUEUE: usize = 4096;

type Reply = oneshot::Sender<Result<Appended, StoreError>>;

/// What the writer task is asked to do.
enum Write {
    Append(NewMessage, Reply),
    /// An edit or a delete, and whether an operator makes it.
    Change(NewMessage, bool, Reply),
    /// A user opens a direct conversation: the user, the other's id.
    OpenDirect(
        User,
        String,
        oneshot::Sender<Result<Conversation, StoreError>>,
    ),
    /// A user's read position moves up: room, user, sequence.
    MarkRead(
        RoomName,
        String,
        u64,
        oneshot::Sender<Result<ReadState, StoreError>>,
    ),
    Retain(Retention, oneshot::Sender<Result<u64, StoreError>>),
    /// A ban set (or, `None`, lifted): room, user; whether one was in
    /// force before.
    SetBan(
        RoomName,
        String,
        Option<Ban>,
        oneshot::Sender<Result<bool, StoreError>>,
    ),
    /// A change to the webhook queue.
    Queue(QueueWrite),
}

/// What the writer is asked to do to the webhook queue, with the reply.
enum QueueWrite {
    /// The room event kinds captured, as `Capture::kind_mask`.
    Capture(i64, oneshot::Sender<Result<(), StoreError>>),
    Presence(
        Vec<MembershipChange>,
        oneshot::Sender<Result<(), StoreError>>,
    ),
    Claim(Claim, oneshot::Sender<Result<Vec<QueuedEvent>, StoreError>>),
    /// Done, to retry, when to retry, the claim's lease.
    Settle(
        Vec<i64>,
        Vec<i64>,
        i64,
        i64,
        oneshot::Sender<Result<(), StoreError>>,
    ),
    /// Oldest kept (Unix ms), most kept.
    Trim(i64, u64, oneshot::Sender<Result<Trimmed, StoreError>>),
}

/// Messages in a SQLite file.
pub struct SqliteStore {
    writer: mpsc::Sender<Write>,
    readers: SqlitePool,
    /// Appends per commit.
    batches: Arc<Histogram>,
}

impl SqliteStore {
    /// Opens (creating if needed, with its folder) the database `url`
    /// (`sqlite://PATH`) and migrates it.
    pub async fn open(url: &str) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("store.url {url:?}: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit is on disk before the sender is acknowledged;
            // group commit keeps that affordable.
            .synchronous(SqliteSynchronous::Full)
            // A deleted message's text is overwritten in the file, not
            // left in a free page.
            .pragma("secure_delete", "ON")
            .busy_timeout(Duration::from_secs(5));
        if let Some(folder) = options.get_filename().parent()
            && !folder.as_os_str().is_empty()
        {
            std::fs::create_dir_all(folder).map_err(|e| {
                StoreError::Config(format!("cannot create {}: {e}", folder.display()))
            })?;
        }
        let mut writer = options.connect().await?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&mut writer)
            .await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let batches = Arc::new(Histogram::sizes());
        tokio::spawn(write_loop(writer, rx, batches.clone()));
        Ok(SqliteStore {
            writer: tx,
            readers,
            batches,
        })
    }
}

/// The one writer: commits queued appends in groups, and deletes for
/// retention in chunks between them, until every sender of the queue is
/// gone.
async fn write_loop(
    mut conn: SqliteConnection,
    mut queue: mpsc::Receiver<Write>,
    batches: Arc<Histogram>,
) {
    let mut requests = Vec::with_capacity(MAX_BATCH);
    // The retention pass under way, one chunk per turn of the loop.
    let mut retaining: Option<Retaining> = None;
    loop {
        if retaining.is_some() {
            // Appends waiting now go before the next chunk; none waiting
            // is no reason to stop.
            while requests.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(request) => requests.push(request),
                    Err(_) => break,
                }
            }
        } else if queue.recv_many(&mut requests, MAX_BATCH).await == 0 {
            break;
        }
        let mut batch = Vec::with_capacity(requests.len());
        let mut changes = Vec::new();
        let mut marks = Vec::new();
        for request in requests.drain(..) {
            match request {
                Write::Append(message, reply) => batch.push((message, reply)),
                Write::Change(change, operator, reply) => changes.push((change, operator, reply)),
                Write::MarkRead(room, user, sequence, reply) => {
                    marks.push((room, user, sequence, reply))
                }
                Write::OpenDirect(me, peer, reply) => {
                    let _ = reply.send(open_direct(&mut conn, &me, &peer).await);
                }
                Write::SetBan(room, user, ban, reply) => {
                    let _ = reply.send(set_ban(&mut conn, &room, &user, ban).await);
                }
                Write::Queue(write) => queue_write(&mut conn, write).await,
                Write::Retain(retention, reply) => match &retaining {
                    // One pass at a time: the one under way answers for
                    // both (the next interval's starts afresh).
                    Some(_) => {
                        let _ = reply.send(Ok(0));
                    }
                    None => retaining = Some(Retaining::new(retention, reply)),
                },
            }
        }
        commit_batch(&mut conn, &mut batch, &batches).await;
        // Changes are rare: each its own transaction, after the appends
        // that were queued with it.
        for (change, operator, reply) in changes {
            let outcome = commit_change(&mut conn, &change, operator).await;
            if matches!((&outcome, change.kind), (Ok(a), Kind::Delete(_)) if !a.duplicate) {
                // The deleted text is overwritten in the database file
                // (secure_delete); the log still holds the pages it was on
                // until a checkpoint copies them back and truncates it. Best
                // effort: a reader holding an old snapshot can hold the log
                // until the next checkpoint.
                if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .execute(&mut conn)
                    .await
                {
                    tracing::debug!(error = %e, "checkpoint after a delete failed");
                }
            }
            let _ = reply.send(outcome);
        }
        for (room, user, sequence, reply) in marks {
            let _ = reply.send(mark_read(&mut conn, &room, &user, sequence).await);
        }
        if let Some(pass) = &mut retaining {
            match pass.step(&mut conn).await {
                Ok(false) => {}
                Ok(true) => {
                    let pass = retaining.take().expect("under way");
                    let _ = pass.reply.send(Ok(pass.deleted));
                }
                Err(e) => {
                    let pass = retaining.take().expect("under way");
                    let _ = pass.reply.send(Err(e));
                }
            }
        }
    }
    let _ = conn.close().await;
}

/// Commits `batch` (appends with their replies) and answers each.
async fn commit_batch(
    conn: &mut SqliteConnection,
    batch: &mut Vec<(NewMessage, Reply)>,
    batches: &Histogram,
) {
    if batch.is_empty() {
        return;
    }
    match commit(conn, batch.iter().map(|(m, _)| m)).await {
        Ok(results) => {
            batches.observe_count(batch.len() as u64);
            for ((_, reply), result) in batch.drain(..).zip(results) {
                let _ = reply.send(Ok(result));
            }
        }
        Err(e) => {
            // One bad append must not fail the others: retry each alone.
            tracing::warn!(error = %e, size = batch.len(), "sqlite batch failed; retrying one by one");
            for (message, reply) in batch.drain(..) {
                batches.observe_count(1);
                let result = commit(conn, std::iter::once(&message)).await;
                let _ = reply.send(result.map(|mut r| r.remove(0)));
            }
        }
    }
}

/// Rows one retention chunk deletes at most: a few milliseconds of the
/// writer, after which waiting appends go first.
const RETAIN_CHUNK: i64 = 1000;

/// A retention pass under way: by age (through `messages_by_time`), then
/// by count, room after room (through the primary key).
struct Retaining {
    /// What to delete.
    retention: Retention,
    /// Messages created before this go (fixed when the pass starts).
    cutoff_ms: i64,
    /// The age phase is over.
    aged: bool,
    /// The count phase's position: rooms up to this one are done.
    after_room: String,
    /// Both message phases are over: what is left is the reactions of the
    /// messages that went.
    messages_done: bool,
    /// Deleted so far.
    deleted: u64,
    /// Where the total goes.
    reply: oneshot::Sender<Result<u64, StoreError>>,
}

impl Retaining {
    fn new(retention: Retention, reply: oneshot::Sender<Result<u64, StoreError>>) -> Retaining {
        Retaining {
            cutoff_ms: retention.cutoff_ms(),
            aged: retention.max_age.is_none(),
            retention,
            after_room: String::new(),
            messages_done: false,
            deleted: 0,
            reply,
        }
    }

    /// Deletes one chunk; returns whether the pass is over.
    async fn step(&mut self, conn: &mut SqliteConnection) -> Result<bool, StoreError> {
        if !self.messages_done {
            self.messages_done = self.step_messages(conn).await?;
            return Ok(false);
        }
        // What the messages that went leave behind, a chunk at a time: their
        // reactions, and the text of their edits (the numbered rows stay, so
        // the sequence has no holes).
        let reactions = sqlx::query(
            "DELETE FROM reactions WHERE rowid IN (SELECT r.rowid FROM reactions r \
             WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.room = r.room AND m.sequence = r.sequence) \
             LIMIT ?)",
        )
        .bind(RETAIN_CHUNK)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        let edits = sqlx::query(
            "UPDATE messages SET text = '' WHERE rowid IN (SELECT c.rowid FROM messages c \
             WHERE c.kind = 1 AND c.text <> '' AND NOT EXISTS \
             (SELECT 1 FROM messages m WHERE m.room = c.room AND m.sequence = c.target_sequence) \
             LIMIT ?)",
        )
        .bind(RETAIN_CHUNK)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        Ok(reactions < RETAIN_CHUNK as u64 && edits < RETAIN_CHUNK as u64)
    }

    /// Deletes one chunk of messages; returns whether they are done.
    async fn step_messages(&mut self, conn: &mut SqliteConnection) -> Result<bool, StoreError> {
        if !self.aged {
            let n = sqlx::query(
                "DELETE FROM messages WHERE rowid IN \
                 (SELECT rowid FROM messages WHERE created_at_ms < ? LIMIT ?)",
            )
            .bind(self.cutoff_ms)
            .bind(RETAIN_CHUNK)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            self.deleted += n;
            self.aged = n < RETAIN_CHUNK as u64;
            return Ok(false);
        }
        let Some(keep) = self.retention.max_messages_per_room else {
            return Ok(true);
        };
        let next: Option<(String, i64)> = sqlx::query_as(
            "SELECT room, last_sequence FROM rooms WHERE room > ? ORDER BY room LIMIT 1",
        )
        .bind(&self.after_room)
        .fetch_optional(&mut *conn)
        .await?;
        let Some((room, last)) = next else {
            return Ok(true);
        };
        let up_to = last.saturating_sub(keep.min(i64::MAX as u64) as i64);
        let n = if up_to > 0 {
            sqlx::query(
                "DELETE FROM messages WHERE rowid IN \
                 (SELECT rowid FROM messages WHERE room = ? AND sequence <= ? LIMIT ?)",
            )
            .bind(&room)
            .bind(up_to)
            .bind(RETAIN_CHUNK)
            .execute(&mut *conn)
            .await?
            .rows_affected()
        } else {
            0
        };
        self.deleted += n;
        if n < RETAIN_CHUNK as u64 {
            // This room is done.
            self.after_room = room;
        }
        Ok(false)
    }
}

/// Appends `messages` in one transaction; all or nothing. (The new ones
/// are queued for the webhook by a trigger, migration 0010, when
/// `webhook_capture` says so.)
///
/// A lone message is its INSERT alone, in SQLite's implicit transaction:
/// an explicit BEGIN and COMMIT would be two more hand-offs to sqlx's
/// SQLite thread, which is most of an append's cost when the server is
/// not busy enough to batch.
async fn commit<'m>(
    conn: &mut SqliteConnection,
    messages: impl ExactSizeIterator<Item = &'m NewMessage>,
) -> Result<Vec<Appended>, StoreError> {
    let mut results = Vec::with_capacity(messages.len());
    if messages.len() == 1 {
        for message in messages {
            results.push(append_one(conn, message).await?);
        }
        return Ok(results);
    }
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    for message in messages {
        match append_one(conn, message).await {
            Ok(r) => results.push(r),
            Err(e) => {
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                return Err(e);
            }
        }
    }
    if let Err(e) = sqlx::query("COMMIT").execute(&mut *conn).await {
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
        return Err(e.into());
    }
    Ok(results)
}

/// Does `write` to the webhook queue on the writer's connection and
/// answers it.
async fn queue_write(conn: &mut SqliteConnection, write: QueueWrite) {
    match write {
        QueueWrite::Capture(mask, reply) => {
            let set = sqlx::query("UPDATE webhook_capture SET kinds = ? WHERE id = 1")
                .bind(mask)
                .execute(&mut *conn)
                .await;
            let _ = reply.send(set.map(|_| ()).map_err(StoreError::from));
        }
        QueueWrite::Presence(changes, reply) => {
            let _ = reply.send(queue_membership(conn, &changes).await);
        }
        QueueWrite::Claim(claim, reply) => {
            let _ = reply.send(claim_events(conn, claim).await);
        }
        QueueWrite::Settle(done, retry, at, lease, reply) => {
            let _ = reply.send(settle_events(conn, &done, &retry, at, lease).await);
        }
        QueueWrite::Trim(oldest_ms, max_pending, reply) => {
            let _ = reply.send(trim_events(conn, oldest_ms, max_pending).await);
        }
    }
}

/// Queues presence changes, in one statement.
async fn queue_membership(
    conn: &mut SqliteConnection,
    changes: &[MembershipChange],
) -> Result<(), StoreError> {
    let rows: Vec<_> = changes
        .iter()
        .map(|c| {
            serde_json::json!([
                c.room.as_str(),
                if c.joined { 1 } else { 2 },
                c.event_id,
                &*c.user.user_id,
                &*c.user.display_name,
                c.time_unix_ms
            ])
        })
        .collect();
    sqlx::query(
        "INSERT INTO webhook_queue (room, presence, event_id, user_id, user_name, created_at_ms) \
         SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), \
                json_extract(value, '$[2]'), json_extract(value, '$[3]'), \
                json_extract(value, '$[4]'), json_extract(value, '$[5]') FROM json_each(?)",
    )
    .bind(serde_json::Value::Array(rows).to_string())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Reads claimed rows with the message rows they name: the columns a
/// claim's [`queued_from_row`] reads.
static CLAIMED: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let message_columns = HISTORY_COLUMNS
        .split(", ")
        .map(|c| format!("m.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT q.id AS q_id, q.room AS q_room, q.sequence AS q_sequence, q.presence, \
                q.event_id, q.user_id, q.user_name, q.created_at_ms AS queued_at_ms, \
                q.attempts, {message_columns} \
         FROM webhook_queue q \
         LEFT JOIN messages m ON q.presence = 0 AND m.room = q.room AND m.sequence = q.sequence \
         WHERE q.id IN (SELECT value FROM json_each(?)) ORDER BY q.id"
    )
});

/// Leases the oldest due events (one writer: no one claims meanwhile).
async fn claim_events(
    conn: &mut SqliteConnection,
    claim: Claim,
) -> Result<Vec<QueuedEvent>, StoreError> {
    let ids: Vec<i64> = sqlx::query_scalar(
        "UPDATE webhook_queue SET lease_until_ms = ?2, attempts = attempts + 1 \
         WHERE id IN (SELECT id FROM webhook_queue \
                      WHERE next_attempt_ms <= ?1 AND lease_until_ms <= ?1 \
                      ORDER BY id LIMIT ?3) \
         RETURNING id",
    )
    .bind(claim.now_ms)
    .bind(claim.lease_until_ms)
    .bind(claim.max.min(i64::MAX as usize) as i64)
    .fetch_all(&mut *conn)
    .await?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(&CLAIMED)
        .bind(serde_json::to_string(&ids).expect("numbers serialize"))
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows
        .iter()
        .map(|row| queued_from_row(row, from_history_row))
        .collect::<Result<_, _>>()?)
}

/// Takes `done` out of the queue; makes `retry` due at `retry_at_ms`,
/// those still under the claim's lease.
async fn settle_events(
    conn: &mut SqliteConnection,
    done: &[i64],
    retry: &[i64],
    retry_at_ms: i64,
    lease_until_ms: i64,
) -> Result<(), StoreError> {
    if !done.is_empty() {
        sqlx::query("DELETE FROM webhook_queue WHERE id IN (SELECT value FROM json_each(?))")
            .bind(serde_json::to_string(done).expect("numbers serialize"))
            .execute(&mut *conn)
            .await?;
    }
    if !retry.is_empty() {
        sqlx::query(
            "UPDATE webhook_queue SET lease_until_ms = 0, next_attempt_ms = ?2 \
             WHERE id IN (SELECT value FROM json_each(?1)) AND lease_until_ms = ?3",
        )
        .bind(serde_json::to_string(retry).expect("numbers serialize"))
        .bind(retry_at_ms)
        .bind(lease_until_ms)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Drops events queued before `oldest_ms`, then the oldest beyond
/// `max_pending`, at most [`TRIM_CHUNK`] of each (the writer's appends go
/// between two calls).
async fn trim_events(
    conn: &mut SqliteConnection,
    oldest_ms: i64,
    max_pending: u64,
) -> Result<Trimmed, StoreError> {
    let expired = sqlx::query(
        // By time, so the index finds the expired ones (none, usually)
        // without reading the queue.
        "DELETE FROM webhook_queue WHERE id IN (SELECT id FROM webhook_queue \
         WHERE created_at_ms < ? ORDER BY created_at_ms LIMIT ?)",
    )
    .bind(oldest_ms)
    .bind(TRIM_CHUNK as i64)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_queue")
        .fetch_one(&mut *conn)
        .await?;
    let count = count.max(0) as u64;
    let excess = count.saturating_sub(max_pending);
    let overflowed = if excess > 0 {
        sqlx::query(
            "DELETE FROM webhook_queue WHERE id IN \
             (SELECT id FROM webhook_queue ORDER BY id LIMIT ?)",
        )
        .bind(excess.min(TRIM_CHUNK) as i64)
        .execute(&mut *conn)
        .await?
        .rows_affected()
    } else {
        0
    };
    Ok(Trimmed {
        expired,
        overflowed,
        pending: count.saturating_sub(overflowed),
    })
}

/// The read position statement: never backwards, never past the room's
/// latest.
const MARK_READ: &str = "INSERT INTO read_positions (room, user_id, sequence, updated_at_ms) \
     VALUES (?1, ?2, MIN(?3, COALESCE((SELECT last_sequence FROM rooms WHERE room = ?1), 0)), ?4) \
     ON CONFLICT (room, user_id) DO UPDATE \
     SET sequence = MAX(sequence, excluded.sequence), updated_at_ms = excluded.updated_at_ms";

/// A user's read position and the unread messages after it, counted up to
/// the cap (`?1` room, `?2` user): the query up to its `FROM`.
static READ_STATE_SELECT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH r AS (SELECT COALESCE((SELECT sequence FROM read_positions \
                                     WHERE room = ?1 AND user_id = ?2), 0) AS s) \
         SELECT r.s AS read, (SELECT count(*) FROM (SELECT 1 FROM messages \
             WHERE room = ?1 AND sequence > r.s AND kind = 0 AND deleted = 0 AND sender_id <> ?2 \
             LIMIT {UNREAD_COUNT_CAP})) AS unread"
    )
});

/// A user's read position and unread count.
static READ_STATE: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("{} FROM r", *READ_STATE_SELECT));

/// [`READ_STATE`] with the user's ban in force at `?3`, if any: a join's
/// one query.
static JOIN_STATE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{}, b.until_ms, b.reason, b.created_at_ms \
         FROM r LEFT JOIN bans b ON b.room = ?1 AND b.user_id = ?2 AND b.until_ms > ?3",
        *READ_STATE_SELECT
    )
});

/// Reads `user`'s state in `room` on `conn` (a reader or the writer).
async fn read_state<'c, E>(conn: E, room: &RoomName, user: &str) -> Result<ReadState, StoreError>
where
    E: sqlx::Executor<'c, Database = sqlx::Sqlite>,
{
    let (read, unread): (i64, i64) = sqlx::query_as(&READ_STATE)
        .bind(room.as_str())
        .bind(user)
        .fetch_one(conn)
        .await?;
    Ok(ReadState {
        read_sequence: read.max(0) as u64,
        unread: unread.clamp(0, i64::from(UNREAD_COUNT_CAP)) as u32,
    })
}

/// Sets (or lifts) `user`'s ban in `room` in one transaction; whether one
/// was in force before.
async fn set_ban(
    conn: &mut SqliteConnection,
    room: &RoomName,
    user: &str,
    ban: Option<Ban>,
) -> Result<bool, StoreError> {
    let now = ban.as_ref().map_or_else(now_unix_ms, |b| b.created_at_ms);
    let mut tx = Connection::begin(&mut *conn).await?;
    let before: Option<i64> =
        sqlx::query_scalar("SELECT until_ms FROM bans WHERE room = ?1 AND user_id = ?2")
            .bind(room.as_str())
            .bind(user)
            .fetch_optional(&mut *tx)
            .await?;
    match ban {
        Some(ban) => {
            sqlx::query(
                "INSERT INTO bans (room, user_id, until_ms, reason, created_at_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (room, user_id) DO UPDATE SET \
                 until_ms = excluded.until_ms, reason = excluded.reason, \
                 created_at_ms = excluded.created_at_ms",
            )
            .bind(room.as_str())
            .bind(user)
            .bind(ban.until_ms)
            .bind(&ban.reason)
            .bind(ban.created_at_ms)
            .execute(&mut *tx)
            .await?;
        }
        None => {
            sqlx::query("DELETE FROM bans WHERE room = ?1 AND user_id = ?2")
                .bind(room.as_str())
                .bind(user)
                .execute(&mut *tx)
                .await?;
        }
    }
    // The room's bans that ended go with any change to its bans.
    sqlx::query("DELETE FROM bans WHERE room = ?1 AND user_id <> ?2 AND until_ms <= ?3")
        .bind(room.as_str())
        .bind(user)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(before.is_some_and(|until| until > now))
}

/// Opens (or finds) `me`'s conversation with `peer`, in the writer.
async fn open_direct(
    conn: &mut SqliteConnection,
    me: &User,
    peer: &str,
) -> Result<Conversation, StoreError> {
    let room = crate::domain::direct::new_room();
    let [a, b] = direct_users(me, peer);
    let (room, user_a, name_a, user_b, name_b): (String, String, String, String, String) =
        sqlx::query_as(
            "INSERT INTO direct_conversations (room, user_a, name_a, user_b, name_b, opened_at_ms) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
     ON CONFLICT (user_a, user_b) DO UPDATE SET \
         name_a = CASE WHEN user_a = ?7 THEN excluded.name_a ELSE name_a END, \
         name_b = CASE WHEN user_b = ?7 THEN excluded.name_b ELSE name_b END, \
         opened_at_ms = excluded.opened_at_ms \
     RETURNING room, user_a, name_a, user_b, name_b",
        )
        .bind(room.as_str())
        .bind(&*a.user_id)
        .bind(&*a.display_name)
        .bind(&*b.user_id)
        .bind(&*b.display_name)
        .bind(now_unix_ms())
        .bind(&*me.user_id)
        .fetch_one(&mut *conn)
        .await?;
    let found = direct_from_row(&room, (user_a, name_a), (user_b, name_b))
        .ok_or_else(|| StoreError::Unavailable("a bad direct room name".into()))?;
    Ok(found)
}

/// Moves the read position up (in the writer), then reads the state.
async fn mark_read(
    conn: &mut SqliteConnection,
    room: &RoomName,
    user: &str,
    sequence: u64,
) -> Result<ReadState, StoreError> {
    sqlx::query(MARK_READ)
        .bind(room.as_str())
        .bind(user)
        .bind(sequence.min(i64::MAX as u64) as i64)
        .bind(now_unix_ms())
        .execute(&mut *conn)
        .await?;
    read_state(&mut *conn, room, user).await
}

/// The reactions of a page's messages (room, first and last sequence):
/// per message and emoji, the first [`REACTORS_LISTED`] users and the
/// count, emojis in the order first given.
static REACTIONS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT sequence, emoji, user_id, display_name, n FROM ( \
             SELECT sequence, emoji, user_id, display_name, \
                    row_number() OVER (PARTITION BY sequence, emoji ORDER BY created_at_ms, user_id) AS k, \
                    count(*) OVER (PARTITION BY sequence, emoji) AS n, \
                    min(created_at_ms) OVER (PARTITION BY sequence, emoji) AS first_at \
             FROM reactions WHERE room = ?1 AND sequence BETWEEN ?2 AND ?3) \
         WHERE k <= {REACTORS_LISTED} ORDER BY sequence, first_at, emoji, k"
    )
});

/// Stores `change` and applies it to its message, in one transaction.
async fn commit_change(
    conn: &mut SqliteConnection,
    change: &NewMessage,
    operator: bool,
) -> Result<Appended, StoreError> {
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    let result = change_one(conn, change, operator).await;
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    if let Err(e) = sqlx::query(end).execute(&mut *conn).await {
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
        // The change's own failure is the cause worth reporting.
        return Err(match result {
            Err(cause) => cause,
            Ok(_) => e.into(),
        });
    }
    result
}

/// Inside the change's transaction: the original of a retry, or the
/// checked change stored and applied.
async fn change_one(
    conn: &mut SqliteConnection,
    change: &NewMessage,
    operator: bool,
) -> Result<Appended, StoreError> {
    let room = change.room.as_str();
    let existing = sqlx::query(&format!(
        "SELECT {HISTORY_COLUMNS} FROM messages WHERE room = ? AND sender_id = ? AND client_message_id = ?"
    ))
    .bind(room)
    .bind(&*change.sender.user_id)
    .bind(&change.client_message_id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = existing {
        return Ok(Appended {
            message: from_history_row(&change.room, &row)?,
            duplicate: true,
        });
    }
    let target = change.kind.target().min(i64::MAX as u64) as i64;
    let row: Option<(i64, i64, String, bool)> = sqlx::query_as(
        "SELECT kind, target_sequence, sender_id, deleted FROM messages WHERE room = ? AND sequence = ?",
    )
    .bind(room)
    .bind(target)
    .fetch_optional(&mut *conn)
    .await?;
    let state = row.as_ref().map(|(kind, of, sender, deleted)| {
        (Kind::from_columns(*kind, *of), sender.as_str(), *deleted)
    });
    check_change(change.kind, state, &change.sender.user_id, operator)?;
    if let Kind::ReactionAdded(_) = change.kind {
        let others: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM reactions WHERE room = ? AND sequence = ? AND user_id = ? AND emoji <> ?",
        )
        .bind(room)
        .bind(target)
        .bind(&*change.sender.user_id)
        .bind(&change.text)
        .fetch_one(&mut *conn)
        .await?;
        let emojis: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT emoji) FROM reactions WHERE room = ? AND sequence = ? AND emoji <> ?",
        )
        .bind(room)
        .bind(target)
        .bind(&change.text)
        .fetch_one(&mut *conn)
        .await?;
        if others >= i64::from(MAX_REACTIONS_PER_USER)
            || emojis >= i64::from(MAX_EMOJIS_PER_MESSAGE)
        {
            return Err(StoreError::TooManyReactions(change.kind.target()));
        }
    }
    let id = uuid::Uuid::now_v7().to_string();
    let time_unix_ms = now_unix_ms();
    let sequence: i64 = sqlx::query_scalar(
        "INSERT INTO messages (room, sequence, id, sender_id, sender_name, client_message_id, text, \
                               created_at_ms, kind, target_sequence) \
         VALUES (?1, COALESCE((SELECT last_sequence FROM rooms WHERE room = ?1), 0) + 1, \
                 ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
         RETURNING sequence",
    )
    .bind(room)
    .bind(&id)
    .bind(&*change.sender.user_id)
    .bind(&*change.sender.display_name)
    .bind(&change.client_message_id)
    .bind(&change.text)
    .bind(time_unix_ms)
    .bind(change.kind.code())
    .bind(target)
    .fetch_one(&mut *conn)
    .await?;
    match change.kind {
        Kind::Edit(_) => {
            sqlx::query(
                "UPDATE messages SET text = ?, edited_at_ms = ?, edited_sequence = ? \
                 WHERE room = ? AND sequence = ?",
            )
            .bind(&change.text)
            .bind(time_unix_ms)
            .bind(sequence)
            .bind(room)
            .bind(target)
            .execute(&mut *conn)
            .await?;
        }
        Kind::ReactionAdded(_) => {
            sqlx::query(
                "INSERT INTO reactions (room, sequence, emoji, user_id, display_name, created_at_ms) \
                 VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            )
            .bind(room)
            .bind(target)
            .bind(&change.text)
            .bind(&*change.sender.user_id)
            .bind(&*change.sender.display_name)
            .bind(time_unix_ms)
            .execute(&mut *conn)
            .await?;
        }
        Kind::ReactionRemoved(_) => {
            sqlx::query(
                "DELETE FROM reactions WHERE room = ? AND sequence = ? AND emoji = ? AND user_id = ?",
            )
            .bind(room)
            .bind(target)
            .bind(&change.text)
            .bind(&*change.sender.user_id)
            .execute(&mut *conn)
            .await?;
        }
        Kind::Delete(_) | Kind::Message => {
            sqlx::query(
                "UPDATE messages SET text = '', deleted = 1 WHERE room = ?1 AND sequence = ?2",
            )
            .bind(room)
            .bind(target)
            .execute(&mut *conn)
            .await?;
            sqlx::query("DELETE FROM reactions WHERE room = ?1 AND sequence = ?2")
                .bind(room)
                .bind(target)
                .execute(&mut *conn)
                .await?;
            sqlx::query(
                "UPDATE messages SET text = '' WHERE room = ?1 AND target_sequence = ?2 AND kind = 1",
            )
            .bind(room)
            .bind(target)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(Appended {
        message: StoredMessage {
            id,
            sequence: sequence as u64,
            time_unix_ms,
            message: change.clone(),
            edited_at_ms: 0,
            edited_sequence: 0,
            deleted: false,
            reactions: Vec::new(),
        },
        duplicate: false,
    })
}

fn from_history_row(
    room: &RoomName,
    row: &sqlx::sqlite::SqliteRow,
) -> Result<StoredMessage, sqlx::Error> {
    Ok(from_row(room, row)?.with_changes(
        row.try_get("kind")?,
        row.try_get("target_sequence")?,
        (
            row.try_get("edited_at_ms")?,
            row.try_get("edited_sequence")?,
        ),
        row.try_get("deleted")?,
    ))
}

fn from_row(room: &RoomName, row: &sqlx::sqlite::SqliteRow) -> Result<StoredMessage, sqlx::Error> {
    Ok(row_to_message(
        room,
        row.try_get("sequence")?,
        row.try_get("id")?,
        row.try_get("sender_id")?,
        row.try_get("sender_name")?,
        row.try_get("client_message_id")?,
        row.try_get("text")?,
        row.try_get("created_at_ms")?,
    ))
}

/// Inside the writer's transaction: the next sequence number and the new
/// row, or the original of a retry.
///
/// One statement in the common case: each statement is a hand-off to
/// sqlx's SQLite thread and back, which costs far more than SQLite's own
/// work, so the sequence is computed inside the INSERT and the room's
/// counter is advanced by a trigger (migration 0002). A retry conflicts on
/// the idempotency index, inserts nothing, and costs a second statement.
async fn append_one(
    conn: &mut SqliteConnection,
    message: &NewMessage,
) -> Result<Appended, StoreError> {
    let room = message.room.as_str();
    let id = uuid::Uuid::now_v7().to_string();
    let time_unix_ms = now_unix_ms();
    let sequence: Option<i64> = sqlx::query_scalar(
        "INSERT INTO messages (room, sequence, id, sender_id, sender_name, client_message_id, text, created_at_ms) \
         VALUES (?1, COALESCE((SELECT last_sequence FROM rooms WHERE room = ?1), 0) + 1, ?2, ?3, ?4, ?5, ?6, ?7) \
         ON CONFLICT (room, sender_id, client_message_id) DO NOTHING \
         RETURNING sequence",
    )
    .bind(room)
    .bind(&id)
    .bind(&*message.sender.user_id)
    .bind(&*message.sender.display_name)
    .bind(&message.client_message_id)
    .bind(&message.text)
    .bind(time_unix_ms)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(sequence) = sequence {
        return Ok(Appended {
            message: StoredMessage {
                id,
                sequence: sequence as u64,
                time_unix_ms,
                message: message.clone(),
                edited_at_ms: 0,
                edited_sequence: 0,
                deleted: false,
                reactions: Vec::new(),
            },
            duplicate: false,
        });
    }
    let row = sqlx::query(&format!(
        "SELECT {SELECT_COLUMNS}, kind, target_sequence FROM messages \
         WHERE room = ? AND sender_id = ? AND client_message_id = ?"
    ))
    .bind(room)
    .bind(&*message.sender.user_id)
    .bind(&message.client_message_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Appended {
        message: from_row(&message.room, &row)?
            .with_kind(row.try_get("kind")?, row.try_get("target_sequence")?),
        duplicate: true,
    })
}

impl SqliteStore {
    /// Sends the writer the queue write `write` makes with its reply, and
    /// waits for the answer.
    fn queue<T: Send + 'static>(
        &self,
        write: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> QueueWrite + Send + 'static,
    ) -> BoxFuture<'_, Result<T, StoreError>> {
        async move {
            let stopped = || StoreError::Unavailable("the sqlite writer stopped".into());
            let (reply, answer) = oneshot::channel();
            self.writer
                .send(Write::Queue(write(reply)))
                .await
                .map_err(|_| stopped())?;
            answer.await.map_err(|_| stopped())?
        }
        .boxed()
    }
}

impl MessageStore for SqliteStore {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn is_shared(&self) -> bool {
        false
    }

    fn batch_sizes(&self) -> Option<&Histogram> {
        Some(&self.batches)
    }

    fn append(&self, message: NewMessage) -> BoxFuture<'_, Result<Appended, StoreError>> {
        async move {
            let (reply, answer) = oneshot::channel();
            self.writer
                .send(Write::Append(message, reply))
                .await
                .map_err(|_| StoreError::Unavailable("the sqlite writer stopped".into()))?;
            answer
                .await
                .map_err(|_| StoreError::Unavailable("the sqlite writer stopped".into()))?
        }
        .boxed()
    }

    fn change(
        &self,
        change: NewMessage,
        operator: bool,
    ) -> BoxFuture<'_, Result<Appended, StoreError>> {
        async move {
            let stopped = || StoreError::Unavailable("the sqlite writer stopped".into());
            let (reply, answer) = oneshot::channel();
            self.writer
                .send(Write::Change(change, operator, reply))
                .await
                .map_err(|_| stopped())?;
            answer.await.map_err(|_| stopped())?
        }
        .boxed()
    }

    fn read_state<'a>(
        &'a self,
        room: &'a RoomName,
        user: &'a str,
    ) -> BoxFuture<'a, Result<ReadState, StoreError>> {
        read_state(&self.readers, room, user).boxed()
    }

    fn join_state<'a>(
        &'a self,
        room: &'a RoomName,
        user: &'a str,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<(ReadState, Option<Ban>), StoreError>> {
        async move {
            let row: JoinStateRow = sqlx::query_as(&JOIN_STATE)
                .bind(room.as_str())
                .bind(user)
                .bind(now_ms)
                .fetch_one(&self.readers)
                .await?;
            Ok(join_state_from_row(user, row))
        }
        .boxed()
    }

    fn mark_read<'a>(
        &'a self,
        room: &'a RoomName,
        user: &'a str,
        sequence: u64,
    ) -> BoxFuture<'a, Result<ReadState, StoreError>> {
        async move {
            let stopped = || StoreError::Unavailable("the sqlite writer stopped".into());
            let (reply, answer) = oneshot::channel();
            self.writer
                .send(Write::MarkRead(
                    room.clone(),
                    user.to_string(),
                    sequence,
                    reply,
                ))
                .await
                .map_err(|_| stopped())?;
            answer.await.map_err(|_| stopped())?
        }
        .boxed()
    }

    fn open_direct<'a>(
        &'a self,
        me: &'a User,
        peer: &'a str,
    ) -> BoxFuture<'a, Result<Conversation, StoreError>> {
        async move {
            let stopped = || StoreError::Unavailable("the sqlite writer stopped".into());
            let (reply, answer) = oneshot::channel();
            self.writer
                .send(Write::OpenDirect(me.clone(), peer.to_string(), reply))
                .await
                .map_err(|_| stopped())?;
            answer.await.map_err(|_| stopped())?
        }
        .boxed()
    }

    fn direct<'a>(
        &'a self,
        room: &'a RoomName,
    ) -> BoxFuture<'a, Result<Option<Conversation>, StoreError>> {
        async move {
            let row: Option<(String, String, String, String)> = sqlx::query_as(
                "SELECT user_a, name_a, user_b, name_b FROM direct_conversations WHERE room = ?",
            )
            .bind(room.as_str())
            .fetch_optional(&self.readers)
            .await?;
            Ok(row.and_then(|(ua, na, ub, nb)| direct_from_row(room.as_str(), (ua, na), (ub, nb))))
        }
        .boxed()
    }

    fn set_ban<'a>(
        &'a self,
        room: &'a RoomName,
        user: &'a str,
        ban: Option<Ban>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        async move {
            let stopped = || StoreError::Unavailable("the sqlite writer stopped".into());
            let (reply, answer) = oneshot::channel();
            self.writer
                .send(Write::SetBan(room.clone(), user.to_string(), ban, reply))
                .await
                .map_err(|_| stopped())?;
            answer.await.map_err(|_| stopped())?
        }
        .boxed()
    }

    fn ban<'a>(
        &'a self,
        room: &'a RoomName,
        user: &'a str,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Option<Ban>, StoreError>> {
        async move {
            let row: Option<(String, i64, String, i64)> = sqlx::query_as(
                "SELECT user_id, until_ms, reason, created_at_ms FROM bans \
                 WHERE room = ?1 AND user_id = ?2 AND until_ms > ?3",
            )
            .bind(room.as_str())
            .bind(user)
            .bind(now_ms)
            .fetch_optional(&self.readers)
            .await?;
            Ok(row.map(ban_from_row))
        }
        .boxed()
    }

    fn bans<'a>(
        &'a self,
        room: &'a RoomName,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<Ban>, StoreError>> {
        async move {
            let rows: Vec<(String, i64, String, i64)> = sqlx::query_as(
                "SELECT user_id, until_ms, reason, created_at_ms FROM bans \
                 WHERE room = ?1 AND until_ms > ?2 ORDER BY user_id LIMIT ?3",
            )
            .bind(room.as_str())
            .bind(now_ms)
            .bind(MAX_BANS_LISTED as i64)
            .fetch_all(&self.readers)
            .await?;
            Ok(rows.into_iter().map(ban_from_row).collect())
        }
        .boxed()
    }

    fn list_direct<'a>(
        &'a self,
        user_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Conversation>, StoreError>> {
        async move {
            let rows: Vec<(String, String, String, String, String)> = sqlx::query_as(
                "SELECT room, user_a, name_a, user_b, name_b FROM direct_conversations \
                 WHERE user_a = ?1 OR user_b = ?1 ORDER BY opened_at_ms DESC, room LIMIT ?2",
            )
            .bind(user_id)
            .bind(MAX_DIRECT_LISTED as i64)
            .fetch_all(&self.readers)
            .await?;
            Ok(rows
                .into_iter()
                .filter_map(|(room, ua, na, ub, nb)| direct_from_row(&room, (ua, na), (ub, nb)))
                .collect())
        }
        .boxed()
    }

    fn latest_sequence<'a>(&'a self, room: &'a RoomName) -> BoxFuture<'a, Result<u64, StoreError>> {
        async move {
            let last: Option<i64> =
                sqlx::query_scalar("SELECT last_sequence FROM rooms WHERE room = ?")
                    .bind(room.as_str())
                    .fetch_optional(&self.readers)
                    .await?;
            Ok(last.unwrap_or(0).max(0) as u64)
        }
        .boxed()
    }

    fn history<'a>(
        &'a self,
        room: &'a RoomName,
        page: Page,
    ) -> BoxFuture<'a, Result<Vec<StoredMessage>, StoreError>> {
        async move {
            let limit = page.limit.min(i64::MAX as usize) as i64;
            let from = page.from.min(i64::MAX as u64) as i64;
            let rows =
                match page.direction {
                    Direction::Forward => sqlx::query(&format!(
                        "SELECT {HISTORY_COLUMNS} FROM messages WHERE room = ? AND sequence > ? \
                         ORDER BY sequence ASC LIMIT ?"
                    ))
                    .bind(room.as_str())
                    .bind(from)
                    .bind(limit)
                    .fetch_all(&self.readers)
                    .await?,
                    Direction::Backward => {
                        let before = if from == 0 { i64::MAX } else { from };
                        let mut rows = sqlx::query(&format!(
                        "SELECT {HISTORY_COLUMNS} FROM messages WHERE room = ? AND sequence < ? \
                         ORDER BY sequence DESC LIMIT ?"
                    ))
                    .bind(room.as_str())
                    .bind(before)
                    .bind(limit)
                    .fetch_all(&self.readers)
                    .await?;
                        rows.reverse();
                        rows
                    }
                };
            let mut messages = rows
                .iter()
                .map(|row| from_history_row(room, row))
                .collect::<Result<Vec<_>, _>>()?;
            if let (Some(first), Some(last)) = (messages.first(), messages.last()) {
                let reactions = sqlx::query_as(&REACTIONS)
                    .bind(room.as_str())
                    .bind(first.sequence as i64)
                    .bind(last.sequence as i64)
                    .fetch_all(&self.readers)
                    .await?;
                with_reactions(&mut messages, reactions);
            }
            Ok(messages)
        }
        .boxed()
    }

    fn enforce_retention(&self, retention: Retention) -> BoxFuture<'_, Result<u64, StoreError>> {
        async move {
            let stopped = || StoreError::Unavailable("the sqlite writer stopped".into());
            let (reply, answer) = oneshot::channel();
            self.writer
                .send(Write::Retain(retention, reply))
                .await
                .map_err(|_| stopped())?;
            answer.await.map_err(|_| stopped())?
        }
        .boxed()
    }

    fn set_capture(&self, capture: Capture) -> BoxFuture<'_, Result<(), StoreError>> {
        let mask = capture.kind_mask();
        self.queue(move |reply| QueueWrite::Capture(mask, reply))
    }

    fn queue_membership(
        &self,
        changes: Vec<MembershipChange>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        self.queue(move |reply| QueueWrite::Presence(changes, reply))
    }

    fn claim_events(&self, claim: Claim) -> BoxFuture<'_, Result<Vec<QueuedEvent>, StoreError>> {
        self.queue(move |reply| QueueWrite::Claim(claim, reply))
    }

    fn settle_events<'a>(
        &'a self,
        done: &'a [i64],
        retry: &'a [i64],
        retry_at_ms: i64,
        lease_until_ms: i64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let (done, retry) = (done.to_vec(), retry.to_vec());
        self.queue(move |reply| QueueWrite::Settle(done, retry, retry_at_ms, lease_until_ms, reply))
    }

    fn trim_events(
        &self,
        oldest_ms: i64,
        max_pending: u64,
    ) -> BoxFuture<'_, Result<Trimmed, StoreError>> {
        self.queue(move |reply| QueueWrite::Trim(oldest_ms, max_pending, reply))
    }

    fn check(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            sqlx::query("SELECT 1").execute(&self.readers).await?;
            if self.writer.is_closed() {
                return Err(StoreError::Unavailable("the sqlite writer stopped".into()));
            }
            Ok(())
        }
        .boxed()
    }
}
