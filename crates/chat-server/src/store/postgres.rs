//! The PostgreSQL store, for several instances sharing one history: a
//! room's sequence number lives in its `rooms` row, so concurrent appends
//! to one room from any instance take turns on that row lock and get
//! consecutive numbers; migrations run at start under sqlx's advisory lock,
//! so instances starting together do not race.
//!
//! Batched appends: appends wait in a bounded queue; a batching task takes
//! everything queued (up to `MAX_BATCH`) into one statement — one round
//! trip and one commit for the whole batch — with at most `IN_FLIGHT`
//! batches running at once. Idle, a message is a batch of one and goes
//! alone; under load, batches grow by themselves while earlier ones are in
//! flight. A batch that fails (a racing retry on another instance, a
//! deadlock) is retried one message at a time, so one message never fails
//! the others.

use super::queue::queued_from_row;
use super::{
    Appended, Ban, Capture, CaptureCell, Claim, Conversation, Direction, HISTORY_COLUMNS,
    JoinStateRow, Kind, MAX_BANS_LISTED, MAX_DIRECT_LISTED, MAX_EMOJIS_PER_MESSAGE,
    MAX_REACTIONS_PER_USER, MembershipChange, MessageStore, NewMessage, Page, QueuedEvent,
    REACTORS_LISTED, ReadState, Retention, SELECT_COLUMNS, StoreError, StoredMessage, Trimmed,
    UNREAD_COUNT_CAP, ban_from_row, check_change, direct_from_row, direct_users,
    join_state_from_row, row_to_message, with_reactions,
};
use crate::domain::User;
use crate::domain::validate::RoomName;
use crate::metrics::Histogram;
use chat_util::now_unix_ms;
use futures::future::{BoxFuture, FutureExt};
use sqlx::Row;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions, PgRow};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Appends in one statement at most.
const MAX_BATCH: usize = 256;
/// Batch statements running at once at most.
const IN_FLIGHT: usize = 4;
/// Appends waiting for a batch at most.
const QUEUE: usize = 4096;
/// Joins' read states and bans asked in one statement at most.
const MAX_JOIN_BATCH: usize = 256;
/// Join-state statements running at once at most: a storm of joins holds
/// this many pool connections, and appends keep the rest.
const JOIN_IN_FLIGHT: usize = 2;
/// Joins waiting for a join-state batch at most (beyond, a join waits to
/// queue: the storm slows itself, not the appends).
const JOIN_QUEUE: usize = 8192;

type Reply = oneshot::Sender<Result<Appended, StoreError>>;

/// One join's ask: the room, the user, and where the answer goes.
struct JoinAsk {
    room: RoomName,
    user: Box<str>,
    /// Bans in force at this time count.
    now_ms: i64,
    reply: oneshot::Sender<Result<(ReadState, Option<Ban>), StoreError>>,
}

/// Messages in PostgreSQL.
pub struct PostgresStore {
    pool: PgPool,
    appends: mpsc::Sender<(NewMessage, Reply)>,
    /// Appends per batch statement.
    batches: Arc<Histogram>,
    /// Which events are queued for the webhook (the batching task reads
    /// it once per batch).
    capture: Arc<CaptureCell>,
    /// Joins' asks, answered in batches ([`join_loop`]): a storm of joins
    /// costs the pool a few statements, not one per join.
    joins: mpsc::Sender<JoinAsk>,
    /// Joins per join-state statement.
    join_batches: Arc<Histogram>,
    /// How long each append batch waited for a pool connection.
    pool_waits: Arc<Histogram>,
}

/// The append statement, built once: a CTE that checks for a stored copy,
/// upserts the room row only if there is none, and inserts the message
/// (and, if `$8`, its webhook event).
static APPEND: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH existing AS ( \
                 SELECT {SELECT_COLUMNS}, kind, target_sequence FROM messages \
                 WHERE room = $1 AND sender_id = $2 AND client_message_id = $3 \
             ), next AS ( \
                 INSERT INTO rooms (room, last_sequence) \
                 SELECT $1, 1 WHERE NOT EXISTS (SELECT 1 FROM existing) \
                 ON CONFLICT (room) DO UPDATE SET last_sequence = rooms.last_sequence + 1 \
                 RETURNING last_sequence \
             ), inserted AS ( \
                 INSERT INTO messages ({SELECT_COLUMNS}, room) \
                 SELECT last_sequence, $4, $2, $5, $3, $6, $7, $1 FROM next \
                 RETURNING {SELECT_COLUMNS}, kind, target_sequence \
             ), queued AS ( \
                 INSERT INTO webhook_queue (room, sequence, created_at_ms) \
                 SELECT $1, sequence, created_at_ms FROM inserted WHERE $8 \
             ) \
             SELECT {SELECT_COLUMNS}, kind, target_sequence, false AS duplicate FROM inserted \
             UNION ALL SELECT {SELECT_COLUMNS}, kind, target_sequence, true FROM existing"
    )
});

/// The batch append statement, built once (`$8`: queue the new messages
/// for the webhook). Its arrays hold one entry per
/// message (no two with the same room, sender and client message id):
/// rows already stored come back as they are, marked duplicate; the others
/// advance their room's counter by their count, in room order (so batches
/// on several instances lock rooms in one order and cannot deadlock), and
/// are numbered in array order within their room.
static APPEND_BATCH: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH input AS ( \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], \
                                      $5::text[], $6::text[], $7::bigint[]) \
                 WITH ORDINALITY AS t(room, sender_id, client_message_id, id, sender_name, \
                                      text, created_at_ms, ord) \
             ), existing AS ( \
                 SELECT i.ord, m.sequence, m.id, m.sender_id, m.sender_name, \
                        m.client_message_id, m.text, m.created_at_ms, m.kind, m.target_sequence \
                 FROM input i JOIN messages m ON m.room = i.room \
                      AND m.sender_id = i.sender_id AND m.client_message_id = i.client_message_id \
             ), fresh AS ( \
                 SELECT i.*, count(*) OVER (PARTITION BY i.room) AS n, \
                        row_number() OVER (PARTITION BY i.room ORDER BY i.ord) AS k \
                 FROM input i WHERE i.ord NOT IN (SELECT ord FROM existing) \
             ), next AS ( \
                 INSERT INTO rooms (room, last_sequence) \
                 SELECT room, count(*) FROM fresh GROUP BY room ORDER BY room \
                 ON CONFLICT (room) DO UPDATE \
                     SET last_sequence = rooms.last_sequence + EXCLUDED.last_sequence \
                 RETURNING room, last_sequence \
             ), inserted AS ( \
                 INSERT INTO messages ({SELECT_COLUMNS}, room) \
                 SELECT next.last_sequence - f.n + f.k, f.id, f.sender_id, f.sender_name, \
                        f.client_message_id, f.text, f.created_at_ms, f.room \
                 FROM fresh f JOIN next ON next.room = f.room \
                 RETURNING {SELECT_COLUMNS}, kind, target_sequence, room \
             ), queued AS ( \
                 INSERT INTO webhook_queue (room, sequence, created_at_ms) \
                 SELECT room, sequence, created_at_ms FROM inserted WHERE $8 \
                 ORDER BY room, sequence \
             ) \
             SELECT i.ord, ins.sequence, ins.id, ins.sender_id, ins.sender_name, \
                    ins.client_message_id, ins.text, ins.created_at_ms, ins.kind, \
                    ins.target_sequence, false AS duplicate \
             FROM inserted ins JOIN input i ON i.id = ins.id \
             UNION ALL SELECT {SELECT_COLUMNS_ORD}, true FROM existing"
    )
});

/// The claim statement, built once: leases the oldest due rows no one
/// holds (rows another instance is claiming are skipped, not waited for)
/// and reads each with the message row it names, if any.
static CLAIM: LazyLock<String> = LazyLock::new(|| {
    let message_columns = HISTORY_COLUMNS
        .split(", ")
        .map(|c| format!("m.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "WITH due AS ( \
             SELECT id FROM webhook_queue \
             WHERE next_attempt_ms <= $1 AND lease_until_ms <= $1 \
             ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED \
         ), claimed AS ( \
             UPDATE webhook_queue q SET lease_until_ms = $2, attempts = q.attempts + 1 \
             FROM due WHERE q.id = due.id \
             RETURNING q.id AS q_id, q.room AS q_room, q.sequence AS q_sequence, \
                       q.presence::bigint AS presence, q.event_id, q.user_id, q.user_name, \
                       q.created_at_ms AS queued_at_ms, q.attempts::bigint AS attempts \
         ) \
         SELECT c.*, {message_columns} FROM claimed c \
         LEFT JOIN messages m ON c.presence = 0 AND m.room = c.q_room AND m.sequence = c.q_sequence \
         ORDER BY c.q_id"
    )
});

/// The `presence` column's value for a join (1) or a leave (2).
fn presence_code(joined: bool) -> i16 {
    if joined { 1 } else { 2 }
}

/// [`SELECT_COLUMNS`] after the batch's `ord`.
const SELECT_COLUMNS_ORD: &str = "ord, sequence, id, sender_id, sender_name, client_message_id, \
     text, created_at_ms, kind, target_sequence";

fn from_row(room: &RoomName, row: &PgRow) -> Result<StoredMessage, sqlx::Error> {
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

/// An append's row: the message, and its kind (a retry may find a change).
fn from_append_row(room: &RoomName, row: &PgRow) -> Result<StoredMessage, sqlx::Error> {
    Ok(from_row(room, row)?.with_kind(
        row.try_get::<i16, _>("kind")?.into(),
        row.try_get("target_sequence")?,
    ))
}

fn from_history_row(room: &RoomName, row: &PgRow) -> Result<StoredMessage, sqlx::Error> {
    Ok(from_row(room, row)?.with_changes(
        row.try_get::<i16, _>("kind")?.into(),
        row.try_get("target_sequence")?,
        (
            row.try_get("edited_at_ms")?,
            row.try_get("edited_sequence")?,
        ),
        row.try_get("deleted")?,
    ))
}

/// A change in its own transaction: the original of a retry, or the
/// checked change stored and applied. The target's row is locked first, so
/// changes to one message from any instance take turns (and a retry racing
/// its original finds it once the lock is its own); the room's row is
/// locked after it (appends lock only room rows, so the order cannot
/// deadlock with them).
async fn change_one(
    pool: &PgPool,
    change: &NewMessage,
    operator: bool,
    queued: bool,
) -> Result<Appended, StoreError> {
    let room = change.room.as_str();
    let mut tx = pool.begin().await?;
    let target = change.kind.target().min(i64::MAX as u64) as i64;
    let row: Option<(i16, i64, String, bool)> = sqlx::query_as(
        "SELECT kind, target_sequence, sender_id, deleted FROM messages \
         WHERE room = $1 AND sequence = $2 FOR UPDATE",
    )
    .bind(room)
    .bind(target)
    .fetch_optional(&mut *tx)
    .await?;
    // After the lock: a retry of this change that committed meanwhile (on
    // any instance) is found, not refused for the state it left.
    let existing = sqlx::query(&format!(
        "SELECT {HISTORY_COLUMNS} FROM messages \
         WHERE room = $1 AND sender_id = $2 AND client_message_id = $3"
    ))
    .bind(room)
    .bind(&*change.sender.user_id)
    .bind(&change.client_message_id)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(row) = existing {
        return Ok(Appended {
            message: from_history_row(&change.room, &row)?,
            duplicate: true,
        });
    }
    let state = row.as_ref().map(|(kind, of, sender, deleted)| {
        (
            Kind::from_columns((*kind).into(), *of),
            sender.as_str(),
            *deleted,
        )
    });
    check_change(change.kind, state, &change.sender.user_id, operator)?;
    if let Kind::ReactionAdded(_) = change.kind {
        let others: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM reactions \
             WHERE room = $1 AND sequence = $2 AND user_id = $3 AND emoji <> $4",
        )
        .bind(room)
        .bind(target)
        .bind(&*change.sender.user_id)
        .bind(&change.text)
        .fetch_one(&mut *tx)
        .await?;
        let emojis: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT emoji) FROM reactions \
             WHERE room = $1 AND sequence = $2 AND emoji <> $3",
        )
        .bind(room)
        .bind(target)
        .bind(&change.text)
        .fetch_one(&mut *tx)
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
        "WITH next AS ( \
             UPDATE rooms SET last_sequence = last_sequence + 1 WHERE room = $1 \
             RETURNING last_sequence \
         ) \
         INSERT INTO messages (room, sequence, id, sender_id, sender_name, client_message_id, \
                               text, created_at_ms, kind, target_sequence) \
         SELECT $1, last_sequence, $2, $3, $4, $5, $6, $7, $8, $9 FROM next \
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
    .fetch_one(&mut *tx)
    .await?;
    if queued {
        sqlx::query(
            "INSERT INTO webhook_queue (room, sequence, created_at_ms) VALUES ($1, $2, $3)",
        )
        .bind(room)
        .bind(sequence)
        .bind(time_unix_ms)
        .execute(&mut *tx)
        .await?;
    }
    match change.kind {
        Kind::Edit(_) => {
            sqlx::query(
                "UPDATE messages SET text = $3, edited_at_ms = $4, edited_sequence = $5 \
                 WHERE room = $1 AND sequence = $2",
            )
            .bind(room)
            .bind(target)
            .bind(&change.text)
            .bind(time_unix_ms)
            .bind(sequence)
            .execute(&mut *tx)
            .await?;
        }
        Kind::ReactionAdded(_) => {
            sqlx::query(
                "INSERT INTO reactions (room, sequence, emoji, user_id, display_name, created_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            )
            .bind(room)
            .bind(target)
            .bind(&change.text)
            .bind(&*change.sender.user_id)
            .bind(&*change.sender.display_name)
            .bind(time_unix_ms)
            .execute(&mut *tx)
            .await?;
        }
        Kind::ReactionRemoved(_) => {
            sqlx::query(
                "DELETE FROM reactions WHERE room = $1 AND sequence = $2 AND emoji = $3 AND user_id = $4",
            )
            .bind(room)
            .bind(target)
            .bind(&change.text)
            .bind(&*change.sender.user_id)
            .execute(&mut *tx)
            .await?;
        }
        Kind::Delete(_) | Kind::Message => {
            sqlx::query("DELETE FROM reactions WHERE room = $1 AND sequence = $2")
                .bind(room)
                .bind(target)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE messages SET text = '', deleted = (sequence = $2) \
                 WHERE room = $1 AND (sequence = $2 OR (target_sequence = $2 AND kind = 1))",
            )
            .bind(room)
            .bind(target)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
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

/// A user's read position and unread count in a room, as SQL: the
/// position's expression (to select `AS s` into a relation `r`) and the
/// columns `read` and `unread` over `r`. `room` and `user` are
/// parameters or columns of an outer query.
fn read_state_sql(room: &str, user: &str) -> (String, String) {
    let position = format!(
        "COALESCE((SELECT sequence FROM read_positions \
                   WHERE room = {room} AND user_id = {user}), 0)"
    );
    let columns = format!(
        "r.s AS read, (SELECT count(*) FROM (SELECT 1 FROM messages \
             WHERE room = {room} AND sequence > r.s AND kind = 0 AND NOT deleted \
             AND sender_id <> {user} LIMIT {UNREAD_COUNT_CAP}) unread) AS unread"
    );
    (position, columns)
}

/// A user's read position and unread count.
static READ_STATE: LazyLock<String> = LazyLock::new(|| {
    let (position, columns) = read_state_sql("$1", "$2");
    format!("SELECT {columns} FROM (SELECT {position} AS s) r")
});

/// A join's read state (as [`READ_STATE`]) and the ban on the user in
/// force, for a batch of joins: rooms `$1`, users `$2` and times `$3` side
/// by side (bans in force at each ask's time); one row per ask, in the
/// asks' order.
static JOIN_STATES: LazyLock<String> = LazyLock::new(|| {
    let (position, columns) = read_state_sql("a.room", "a.user_id");
    format!(
        "SELECT {columns}, b.until_ms, b.reason, b.created_at_ms \
         FROM unnest($1::text[], $2::text[], $3::bigint[]) WITH ORDINALITY AS a(room, user_id, at, i) \
         CROSS JOIN LATERAL (SELECT {position} AS s) r \
         LEFT JOIN bans b ON b.room = a.room AND b.user_id = a.user_id AND b.until_ms > a.at \
         ORDER BY a.i"
    )
});

/// The reactions of a page's messages (room, first and last sequence):
/// per message and emoji, the first [`REACTORS_LISTED`] users and the
/// count, emojis in the order first given.
static REACTIONS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT sequence, emoji, user_id, display_name, n FROM ( \
             SELECT sequence, emoji, user_id, display_name, \
                    row_number() OVER (PARTITION BY sequence, emoji ORDER BY created_at_ms, user_id) AS k, \
                    count(*) OVER (PARTITION BY sequence, emoji) AS n, \
                    min(created_at_ms) OVER (PARTITION BY sequence, emoji) AS first_at \
             FROM reactions WHERE room = $1 AND sequence BETWEEN $2 AND $3) t \
         WHERE k <= {REACTORS_LISTED} ORDER BY sequence, first_at, emoji, k"
    )
});

/// Reads `user`'s state in `room`.
async fn read_state(pool: &PgPool, room: &RoomName, user: &str) -> Result<ReadState, StoreError> {
    let (read, unread): (i64, i64) = sqlx::query_as(&READ_STATE)
        .bind(room.as_str())
        .bind(user)
        .fetch_one(pool)
        .await?;
    Ok(ReadState {
        read_sequence: read.max(0) as u64,
        unread: unread.clamp(0, i64::from(UNREAD_COUNT_CAP)) as u32,
    })
}

impl PostgresStore {
    /// Connects to `url` and migrates the schema.
    pub async fn open(url: &str) -> Result<PostgresStore, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        let (appends, queue) = mpsc::channel(QUEUE);
        let batches = Arc::new(Histogram::sizes());
        let capture = Arc::new(CaptureCell::default());
        let (joins, asks) = mpsc::channel(JOIN_QUEUE);
        let join_batches = Arc::new(Histogram::sizes());
        tokio::spawn(join_loop(pool.clone(), asks, join_batches.clone()));
        let pool_waits = Arc::new(Histogram::latency());
        tokio::spawn(batch_loop(
            pool.clone(),
            queue,
            batches.clone(),
            capture.clone(),
            pool_waits.clone(),
        ));
        Ok(PostgresStore {
            pool,
            appends,
            batches,
            capture,
            joins,
            join_batches,
            pool_waits,
        })
    }
}

/// Takes queued join asks into batches of up to [`MAX_JOIN_BATCH`], at
/// most [`JOIN_IN_FLIGHT`] statements at once, until every sender of the
/// queue is gone. While the statements run, the next asks gather: the
/// busier the joins, the bigger the batches.
async fn join_loop(pool: PgPool, mut asks: mpsc::Receiver<JoinAsk>, batches: Arc<Histogram>) {
    let in_flight = Arc::new(Semaphore::new(JOIN_IN_FLIGHT));
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut batch: Vec<JoinAsk> = Vec::with_capacity(MAX_JOIN_BATCH);
        if asks.recv_many(&mut batch, MAX_JOIN_BATCH).await == 0 {
            return;
        }
        // A join that stopped waiting (its time ran out while the store
        // was busy) needs no answer: the statement does not read it.
        batch.retain(|ask| !ask.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let pool = pool.clone();
        let batches = batches.clone();
        tokio::spawn(async move {
            batches.observe_count(batch.len() as u64);
            answer_joins(&pool, batch).await;
            drop(permit);
        });
    }
}

/// Reads a batch of joins' states in one statement and answers each ask
/// (every one with the error if the statement fails).
async fn answer_joins(pool: &PgPool, batch: Vec<JoinAsk>) {
    let rooms: Vec<&str> = batch.iter().map(|a| a.room.as_str()).collect();
    let users: Vec<&str> = batch.iter().map(|a| &*a.user).collect();
    let times: Vec<i64> = batch.iter().map(|a| a.now_ms).collect();
    let rows: Result<Vec<JoinStateRow>, sqlx::Error> = sqlx::query_as(&JOIN_STATES)
        .bind(&rooms[..])
        .bind(&users[..])
        .bind(&times[..])
        .fetch_all(pool)
        .await;
    match rows {
        Ok(rows) if rows.len() == batch.len() => {
            for (ask, row) in batch.into_iter().zip(rows) {
                let _ = ask.reply.send(Ok(join_state_from_row(&ask.user, row)));
            }
        }
        Ok(rows) => {
            let e = format!("{} join states read for {} asks", rows.len(), batch.len());
            for ask in batch {
                let _ = ask.reply.send(Err(StoreError::Unavailable(e.clone())));
            }
        }
        Err(e) => {
            let e = e.to_string();
            for ask in batch {
                let _ = ask.reply.send(Err(StoreError::Unavailable(e.clone())));
            }
        }
    }
}

/// Takes queued appends into batches, at most [`IN_FLIGHT`] running at
/// once, until every sender of the queue is gone.
async fn batch_loop(
    pool: PgPool,
    mut queue: mpsc::Receiver<(NewMessage, Reply)>,
    batches: Arc<Histogram>,
    capture: Arc<CaptureCell>,
    waits: Arc<Histogram>,
) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        // The permit first: while every batch slot is busy, appends keep
        // queueing and the next batch takes them all.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut batch = Vec::with_capacity(MAX_BATCH);
        if queue.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        let (pool, batches, waits) = (pool.clone(), batches.clone(), waits.clone());
        let queued = capture.get().has(Capture::MESSAGE);
        tokio::spawn(async move {
            append_batch(&pool, batch, &batches, queued, &waits).await;
            drop(permit);
        });
    }
}

/// Appends `batch` in one statement and answers each message.
///
/// A batch refused because another instance committed one of its messages
/// (a racing retry) or because of a deadlock is run again: what the other
/// transaction committed is then read as stored. If it still fails, each
/// message is appended on its own, so one message cannot fail the others.
/// `batches` counts the statements, by the messages each wrote; `queued`
/// says whether new messages are queued for the webhook.
async fn append_batch(
    pool: &PgPool,
    mut batch: Vec<(NewMessage, Reply)>,
    batches: &Histogram,
    queued: bool,
    waits: &Histogram,
) {
    // The wait for a connection, timed: how ready the store is for appends.
    let asked = std::time::Instant::now();
    let mut conn = match pool.acquire().await {
        Ok(conn) => conn,
        Err(e) => {
            let e = e.to_string();
            for (_, reply) in batch {
                let _ = reply.send(Err(StoreError::Unavailable(e.clone())));
            }
            return;
        }
    };
    waits.observe(asked.elapsed());
    if batch.len() == 1 {
        batches.observe_count(1);
        let (message, reply) = batch.remove(0);
        let _ = reply.send(append_one(&mut conn, &message, queued).await);
        return;
    }
    let mut attempts = 0;
    let error = loop {
        attempts += 1;
        match append_many(&mut conn, batch.iter().map(|(m, _)| m), queued).await {
            Ok(results) => {
                batches.observe_count(batch.len() as u64);
                for ((_, reply), result) in batch.into_iter().zip(results) {
                    let _ = reply.send(Ok(result));
                }
                return;
            }
            Err(e) if attempts < BATCH_ATTEMPTS && is_transient(&e) => continue,
            Err(e) => break e,
        }
    };
    tracing::debug!(error = %error, size = batch.len(), "postgres batch failed; appending one by one");
    // The batch's connection may be what failed: each goes on a fresh one.
    drop(conn);
    for (message, reply) in batch {
        batches.observe_count(1);
        let appended = match pool.acquire().await {
            Ok(mut conn) => append_one(&mut conn, &message, queued).await,
            Err(e) => Err(StoreError::from(e)),
        };
        let _ = reply.send(appended);
    }
}

/// Times a batch is tried before its messages go one by one.
const BATCH_ATTEMPTS: u32 = 3;

/// Whether running the statement again may succeed: a unique violation
/// (another instance stored one of the messages meanwhile), a deadlock or
/// a serialization failure (SQLSTATE class 40).
fn is_transient(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|e| {
        e.is_unique_violation() || e.code().is_some_and(|code| code.starts_with("40"))
    })
}

/// One statement for several messages; answers in their order.
///
/// Repeats of one message within the batch (same room, sender and client
/// message id) go to the database once; the later ones answer with its
/// stored copy, marked duplicate.
async fn append_many<'m>(
    conn: &mut PgConnection,
    messages: impl ExactSizeIterator<Item = &'m NewMessage>,
    queued: bool,
) -> Result<Vec<Appended>, sqlx::Error> {
    let (unique, slot) = first_occurrences(messages);
    let rows = insert_batch(conn, &unique, queued).await?;
    let stored = answers(&unique, &rows)?;
    // Every repeat after the first of the same message in the batch is a
    // duplicate of it.
    let mut answered = vec![false; unique.len()];
    Ok(slot
        .into_iter()
        .map(|index| {
            let mut result = stored[index].clone();
            result.duplicate |= std::mem::replace(&mut answered[index], true);
            result
        })
        .collect())
}

/// The batch's distinct messages (by room, sender and client message id),
/// and for each message the index of its first occurrence among them.
fn first_occurrences<'m>(
    messages: impl ExactSizeIterator<Item = &'m NewMessage>,
) -> (Vec<&'m NewMessage>, Vec<usize>) {
    let mut first: HashMap<(&str, &str, &str), usize> = HashMap::with_capacity(messages.len());
    let mut slot = Vec::with_capacity(messages.len());
    let mut unique: Vec<&NewMessage> = Vec::with_capacity(messages.len());
    for message in messages {
        let key = (
            message.room.as_str(),
            &*message.sender.user_id,
            message.client_message_id.as_str(),
        );
        let next = unique.len();
        let index = *first.entry(key).or_insert(next);
        if index == next {
            unique.push(message);
        }
        slot.push(index);
    }
    (unique, slot)
}

/// Runs the batch statement over `unique`, its columns as arrays.
async fn insert_batch(
    conn: &mut PgConnection,
    unique: &[&NewMessage],
    queued: bool,
) -> Result<Vec<PgRow>, sqlx::Error> {
    let column = |f: fn(&NewMessage) -> &str| unique.iter().map(|m| f(m)).collect::<Vec<_>>();
    let ids: Vec<String> = unique
        .iter()
        .map(|_| uuid::Uuid::now_v7().to_string())
        .collect();
    sqlx::query(&APPEND_BATCH)
        .bind(column(|m| m.room.as_str()))
        .bind(column(|m| &m.sender.user_id))
        .bind(column(|m| m.client_message_id.as_str()))
        .bind(&ids)
        .bind(column(|m| &m.sender.display_name))
        .bind(column(|m| m.text.as_str()))
        .bind(vec![now_unix_ms(); unique.len()])
        .bind(queued)
        .fetch_all(conn)
        .await
}

/// The stored message for each of `unique`, from the statement's rows
/// (each names its entry by `ord`); an error if one is missing.
fn answers(unique: &[&NewMessage], rows: &[PgRow]) -> Result<Vec<Appended>, sqlx::Error> {
    let mut stored: Vec<Option<Appended>> = vec![None; unique.len()];
    for row in rows {
        let ord: i64 = row.try_get("ord")?;
        let index = usize::try_from(ord - 1)
            .ok()
            .filter(|&i| i < unique.len())
            .ok_or_else(|| sqlx::Error::Protocol(format!("batch answered for entry {ord}")))?;
        stored[index] = Some(Appended {
            message: from_append_row(&unique[index].room, row)?,
            duplicate: row.try_get("duplicate")?,
        });
    }
    stored
        .into_iter()
        .collect::<Option<_>>()
        .ok_or_else(|| sqlx::Error::Protocol("batch left a message unanswered".into()))
}

/// One message, one statement (its webhook event with it if `queued`).
async fn append_one(
    conn: &mut PgConnection,
    message: &NewMessage,
    queued: bool,
) -> Result<Appended, StoreError> {
    let room = message.room.as_str();
    let id = uuid::Uuid::now_v7().to_string();
    // One round trip, one implicit transaction. The upsert of the room
    // row takes its lock, so appends to a room from every instance take
    // turns and get consecutive numbers; it is skipped for a retry of a
    // message already stored, which then takes no number.
    let appended = sqlx::query(&APPEND)
        .bind(room)
        .bind(&*message.sender.user_id)
        .bind(&message.client_message_id)
        .bind(&id)
        .bind(&*message.sender.display_name)
        .bind(&message.text)
        .bind(now_unix_ms())
        .bind(queued)
        .fetch_one(&mut *conn)
        .await;
    let row =
        match appended {
            Ok(row) => row,
            // The same message committed by a concurrent retry after this
            // statement took its snapshot: the idempotency index refused
            // the second copy (and the statement took no number). Read it.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => sqlx::query(&format!(
                "SELECT {SELECT_COLUMNS}, kind, target_sequence, true AS duplicate FROM messages \
                 WHERE room = $1 AND sender_id = $2 AND client_message_id = $3"
            ))
            .bind(room)
            .bind(&*message.sender.user_id)
            .bind(&message.client_message_id)
            .fetch_one(&mut *conn)
            .await?,
            Err(e) => return Err(e.into()),
        };
    Ok(Appended {
        message: from_append_row(&message.room, &row)?,
        duplicate: row.try_get("duplicate")?,
    })
}

impl MessageStore for PostgresStore {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn batch_sizes(&self) -> Option<&Histogram> {
        Some(&self.batches)
    }

    fn append(&self, message: NewMessage) -> BoxFuture<'_, Result<Appended, StoreError>> {
        async move {
            let stopped = || StoreError::Unavailable("the postgres batching task stopped".into());
            let (reply, answer) = oneshot::channel();
            self.appends
                .send((message, reply))
                .await
                .map_err(|_| stopped())?;
            answer.await.map_err(|_| stopped())?
        }
        .boxed()
    }

    fn change(
        &self,
        change: NewMessage,
        operator: bool,
    ) -> BoxFuture<'_, Result<Appended, StoreError>> {
        async move {
            let queued = self.capture.get().room_event(change.kind);
            match change_one(&self.pool, &change, operator, queued).await {
                // A retry of this change committed on another instance
                // between this one's look and its insert: read it.
                Err(StoreError::Database(sqlx::Error::Database(e))) if e.is_unique_violation() => {
                    change_one(&self.pool, &change, operator, queued).await
                }
                outcome => outcome,
            }
        }
        .boxed()
    }

    fn read_state<'a>(
        &'a self,
        room: &'a RoomName,
        user: &'a str,
    ) -> BoxFuture<'a, Result<ReadState, StoreError>> {
        read_state(&self.pool, room, user).boxed()
    }

    fn set_ban<'a>(
        &'a self,
        room: &'a RoomName,
        user: &'a str,
        ban: Option<Ban>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        async move {
            let now = ban.as_ref().map_or_else(now_unix_ms, |b| b.created_at_ms);
            let mut tx = self.pool.begin().await?;
            let before: Option<i64> = sqlx::query_scalar(
                "SELECT until_ms FROM bans WHERE room = $1 AND user_id = $2 FOR UPDATE",
            )
            .bind(room.as_str())
            .bind(user)
            .fetch_optional(&mut *tx)
            .await?;
            match ban {
                Some(ban) => {
                    sqlx::query(
                        "INSERT INTO bans (room, user_id, until_ms, reason, created_at_ms) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (room, user_id) DO UPDATE SET \
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
                    sqlx::query("DELETE FROM bans WHERE room = $1 AND user_id = $2")
                        .bind(room.as_str())
                        .bind(user)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            // The room's bans that ended go with any change to its bans;
            // rows another change holds are left to it (two changes each
            // holding its own row and waiting for the other's would
            // deadlock).
            sqlx::query(
                "DELETE FROM bans WHERE room = $1 AND user_id IN ( \
                     SELECT user_id FROM bans WHERE room = $1 AND user_id <> $2 \
                     AND until_ms <= $3 FOR UPDATE SKIP LOCKED)",
            )
            .bind(room.as_str())
            .bind(user)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(before.is_some_and(|until| until > now))
        }
        .boxed()
    }

    /// Asked in batches with other joins ([`join_loop`]).
    fn join_state<'a>(
        &'a self,
        room: &'a RoomName,
        user: &'a str,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<(ReadState, Option<Ban>), StoreError>> {
        async move {
            let (reply, answer) = oneshot::channel();
            let ask = JoinAsk {
                room: room.clone(),
                user: user.into(),
                now_ms,
                reply,
            };
            let gone = || StoreError::Unavailable("the store is closing".into());
            self.joins.send(ask).await.map_err(|_| gone())?;
            answer.await.map_err(|_| gone())?
        }
        .boxed()
    }

    fn join_batches(&self) -> Option<&Histogram> {
        Some(&self.join_batches)
    }

    fn pool_waits(&self) -> Option<&Histogram> {
        Some(&self.pool_waits)
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
                 WHERE room = $1 AND user_id = $2 AND until_ms > $3",
            )
            .bind(room.as_str())
            .bind(user)
            .bind(now_ms)
            .fetch_optional(&self.pool)
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
                 WHERE room = $1 AND until_ms > $2 ORDER BY user_id LIMIT $3",
            )
            .bind(room.as_str())
            .bind(now_ms)
            .bind(MAX_BANS_LISTED as i64)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows.into_iter().map(ban_from_row).collect())
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
            // One statement: never backwards (GREATEST), never past the
            // room's latest (LEAST); concurrent marks from any instance
            // serialize on the row.
            sqlx::query(
                "INSERT INTO read_positions (room, user_id, sequence, updated_at_ms) \
                 VALUES ($1, $2, LEAST($3, COALESCE((SELECT last_sequence FROM rooms WHERE room = $1), 0)), $4) \
                 ON CONFLICT (room, user_id) DO UPDATE \
                 SET sequence = GREATEST(read_positions.sequence, EXCLUDED.sequence), \
                     updated_at_ms = EXCLUDED.updated_at_ms",
            )
            .bind(room.as_str())
            .bind(user)
            .bind(sequence.min(i64::MAX as u64) as i64)
            .bind(now_unix_ms())
            .execute(&self.pool)
            .await?;
            read_state(&self.pool, room, user).await
        }
        .boxed()
    }

    fn open_direct<'a>(
        &'a self,
        me: &'a User,
        peer: &'a str,
    ) -> BoxFuture<'a, Result<Conversation, StoreError>> {
        async move {
            let room = crate::domain::direct::new_room();
            let [a, b] = direct_users(me, peer);
            let (room, user_a, name_a, user_b, name_b): (String, String, String, String, String) =
                sqlx::query_as(
                    "INSERT INTO direct_conversations (room, user_a, name_a, user_b, name_b, opened_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (user_a, user_b) DO UPDATE SET \
                     name_a = CASE WHEN direct_conversations.user_a = $7 \
                                   THEN EXCLUDED.name_a ELSE direct_conversations.name_a END, \
                     name_b = CASE WHEN direct_conversations.user_b = $7 \
                                   THEN EXCLUDED.name_b ELSE direct_conversations.name_b END, \
                     opened_at_ms = EXCLUDED.opened_at_ms \
                 RETURNING room, user_a, name_a, user_b, name_b",
                )
                .bind(room.as_str())
                .bind(&*a.user_id)
                .bind(&*a.display_name)
                .bind(&*b.user_id)
                .bind(&*b.display_name)
                .bind(now_unix_ms())
                .bind(&*me.user_id)
                .fetch_one(&self.pool)
                .await?;
            let found = direct_from_row(&room, (user_a, name_a), (user_b, name_b))
                .ok_or_else(|| StoreError::Unavailable("a bad direct room name".into()))?;
            Ok(found)
        }
        .boxed()
    }

    fn direct<'a>(
        &'a self,
        room: &'a RoomName,
    ) -> BoxFuture<'a, Result<Option<Conversation>, StoreError>> {
        async move {
            let row: Option<(String, String, String, String)> = sqlx::query_as(
                "SELECT user_a, name_a, user_b, name_b FROM direct_conversations WHERE room = $1",
            )
            .bind(room.as_str())
            .fetch_optional(&self.pool)
            .await?;
            Ok(row.and_then(|(ua, na, ub, nb)| direct_from_row(room.as_str(), (ua, na), (ub, nb))))
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
                 WHERE user_a = $1 OR user_b = $1 ORDER BY opened_at_ms DESC, room LIMIT $2",
            )
            .bind(user_id)
            .bind(MAX_DIRECT_LISTED as i64)
            .fetch_all(&self.pool)
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
                sqlx::query_scalar("SELECT last_sequence FROM rooms WHERE room = $1")
                    .bind(room.as_str())
                    .fetch_optional(&self.pool)
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
                        "SELECT {HISTORY_COLUMNS} FROM messages WHERE room = $1 AND sequence > $2 \
                         ORDER BY sequence ASC LIMIT $3"
                    ))
                    .bind(room.as_str())
                    .bind(from)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?,
                    Direction::Backward => {
                        let before = if from == 0 { i64::MAX } else { from };
                        let mut rows = sqlx::query(&format!(
                        "SELECT {HISTORY_COLUMNS} FROM messages WHERE room = $1 AND sequence < $2 \
                         ORDER BY sequence DESC LIMIT $3"
                    ))
                    .bind(room.as_str())
                    .bind(before)
                    .bind(limit)
                    .fetch_all(&self.pool)
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
                    .fetch_all(&self.pool)
                    .await?;
                with_reactions(&mut messages, reactions);
            }
            Ok(messages)
        }
        .boxed()
    }

    fn set_capture(&self, capture: Capture) -> BoxFuture<'_, Result<(), StoreError>> {
        self.capture.set(capture);
        futures::future::ready(Ok(())).boxed()
    }

    fn queue_membership(
        &self,
        changes: Vec<MembershipChange>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            let column = |f: fn(&MembershipChange) -> &str| {
                changes.iter().map(f).collect::<Vec<_>>()
            };
            sqlx::query(
                "INSERT INTO webhook_queue (room, presence, event_id, user_id, user_name, created_at_ms) \
                 SELECT * FROM unnest($1::text[], $2::smallint[], $3::text[], $4::text[], \
                                      $5::text[], $6::bigint[])",
            )
            .bind(column(|c| c.room.as_str()))
            .bind(changes.iter().map(|c| presence_code(c.joined)).collect::<Vec<_>>())
            .bind(column(|c| &c.event_id))
            .bind(column(|c| &c.user.user_id))
            .bind(column(|c| &c.user.display_name))
            .bind(changes.iter().map(|c| c.time_unix_ms).collect::<Vec<_>>())
            .execute(&self.pool)
            .await?;
            Ok(())
        }
        .boxed()
    }

    fn claim_events(&self, claim: Claim) -> BoxFuture<'_, Result<Vec<QueuedEvent>, StoreError>> {
        async move {
            let rows = sqlx::query(&CLAIM)
                .bind(claim.now_ms)
                .bind(claim.lease_until_ms)
                .bind(claim.max.min(i64::MAX as usize) as i64)
                .fetch_all(&self.pool)
                .await?;
            rows.iter()
                .map(|row| queued_from_row(row, from_history_row))
                .collect::<Result<_, _>>()
                .map_err(StoreError::from)
        }
        .boxed()
    }

    fn settle_events<'a>(
        &'a self,
        done: &'a [i64],
        retry: &'a [i64],
        retry_at_ms: i64,
        lease_until_ms: i64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            if !done.is_empty() {
                sqlx::query("DELETE FROM webhook_queue WHERE id = ANY($1)")
                    .bind(done)
                    .execute(&self.pool)
                    .await?;
            }
            if !retry.is_empty() {
                sqlx::query(
                    "UPDATE webhook_queue SET lease_until_ms = 0, next_attempt_ms = $2 \
                     WHERE id = ANY($1) AND lease_until_ms = $3",
                )
                .bind(retry)
                .bind(retry_at_ms)
                .bind(lease_until_ms)
                .execute(&self.pool)
                .await?;
            }
            Ok(())
        }
        .boxed()
    }

    fn trim_events(
        &self,
        oldest_ms: i64,
        max_pending: u64,
    ) -> BoxFuture<'_, Result<Trimmed, StoreError>> {
        async move {
            let expired = sqlx::query("DELETE FROM webhook_queue WHERE created_at_ms < $1")
                .bind(oldest_ms)
                .execute(&self.pool)
                .await?
                .rows_affected();
            let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_queue")
                .fetch_one(&self.pool)
                .await?;
            let pending = pending.max(0) as u64;
            if pending <= max_pending {
                return Ok(Trimmed {
                    expired,
                    overflowed: 0,
                    pending,
                });
            }
            // One statement that keeps the newest `max_pending`: instances
            // trimming at once delete the same rows, never twice the excess.
            let overflowed = sqlx::query(
                "DELETE FROM webhook_queue WHERE id <= \
                 (SELECT id FROM webhook_queue ORDER BY id DESC OFFSET $1 LIMIT 1)",
            )
            .bind(max_pending.min(i64::MAX as u64) as i64)
            .execute(&self.pool)
            .await?
            .rows_affected();
            Ok(Trimmed {
                expired,
                overflowed,
                pending: pending.saturating_sub(overflowed),
            })
        }
        .boxed()
    }

    fn check(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            if self.appends.is_closed() {
                return Err(StoreError::Unavailable(
                    "the postgres batching task stopped".into(),
                ));
            }
            Ok(())
        }
        .boxed()
    }

    fn enforce_retention(&self, retention: Retention) -> BoxFuture<'_, Result<u64, StoreError>> {
        async move {
            let mut deleted = 0;
            if retention.max_age.is_some() {
                deleted += sqlx::query("DELETE FROM messages WHERE created_at_ms < $1")
                    .bind(retention.cutoff_ms())
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
            }
            if let Some(keep) = retention.max_messages_per_room {
                deleted += sqlx::query(
                    "DELETE FROM messages m USING rooms r \
                     WHERE m.room = r.room AND m.sequence <= r.last_sequence - $1",
                )
                .bind(keep.min(i64::MAX as u64) as i64)
                .execute(&self.pool)
                .await?
                .rows_affected();
            }
            if deleted > 0 {
                // What the messages that went leave behind: their reactions,
                // and the text of their edits (the numbered rows stay, so
                // the sequence has no holes).
                sqlx::query(
                    "DELETE FROM reactions r WHERE NOT EXISTS \
                     (SELECT 1 FROM messages m WHERE m.room = r.room AND m.sequence = r.sequence)",
                )
                .execute(&self.pool)
                .await?;
                sqlx::query(
                    "UPDATE messages c SET text = '' WHERE c.kind = 1 AND c.text <> '' AND NOT EXISTS \
                     (SELECT 1 FROM messages m WHERE m.room = c.room AND m.sequence = c.target_sequence)",
                )
                .execute(&self.pool)
                .await?;
            }
            Ok(deleted)
        }
        .boxed()
    }
}
