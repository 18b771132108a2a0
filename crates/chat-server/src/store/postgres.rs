//! The PostgreSQL store, for several instances sharing one history: a
//! room's sequence number lives in its `rooms` row, so concurrent appends
//! to one room from any instance take turns on that row lock and get
//! consecutive numbers; migrations run at start under sqlx's advisory lock,
//! so instances starting together do not race.

use super::{
    Appended, Direction, MessageStore, NewMessage, Page, Retention, StoreError, StoredMessage,
    row_to_message,
};
use crate::time::now_unix_ms;
use crate::validate::RoomName;
use futures::future::{BoxFuture, FutureExt};
use sqlx::Row;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use std::sync::LazyLock;
use std::time::Duration;

/// Messages in PostgreSQL.
pub struct PostgresStore {
    pool: PgPool,
}

const SELECT_COLUMNS: &str =
    "sequence, id, sender_id, sender_name, client_message_id, text, created_at_ms";

/// The append statement, built once: a CTE that checks for a stored copy,
/// upserts the room row only if there is none, and inserts the message.
static APPEND: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH existing AS ( \
                 SELECT {SELECT_COLUMNS} FROM messages \
                 WHERE room = $1 AND sender_id = $2 AND client_message_id = $3 \
             ), next AS ( \
                 INSERT INTO rooms (room, last_sequence) \
                 SELECT $1, 1 WHERE NOT EXISTS (SELECT 1 FROM existing) \
                 ON CONFLICT (room) DO UPDATE SET last_sequence = rooms.last_sequence + 1 \
                 RETURNING last_sequence \
             ), inserted AS ( \
                 INSERT INTO messages ({SELECT_COLUMNS}, room) \
                 SELECT last_sequence, $4, $2, $5, $3, $6, $7, $1 FROM next \
                 RETURNING {SELECT_COLUMNS} \
             ) \
             SELECT {SELECT_COLUMNS}, false AS duplicate FROM inserted \
             UNION ALL SELECT {SELECT_COLUMNS}, true FROM existing"
    )
});

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

impl PostgresStore {
    /// Connects to `url` and migrates the schema.
    pub async fn open(url: &str) -> Result<PostgresStore, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(PostgresStore { pool })
    }

    async fn append_one(&self, message: &NewMessage) -> Result<Appended, StoreError> {
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
            .fetch_one(&self.pool)
            .await;
        let row = match appended {
            Ok(row) => row,
            // The same message committed by a concurrent retry after this
            // statement took its snapshot: the idempotency index refused
            // the second copy (and the statement took no number). Read it.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                sqlx::query(&format!(
                    "SELECT {SELECT_COLUMNS}, true AS duplicate FROM messages \
                     WHERE room = $1 AND sender_id = $2 AND client_message_id = $3"
                ))
                .bind(room)
                .bind(&*message.sender.user_id)
                .bind(&message.client_message_id)
                .fetch_one(&self.pool)
                .await?
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Appended {
            message: from_row(&message.room, &row)?,
            duplicate: row.try_get("duplicate")?,
        })
    }
}

impl MessageStore for PostgresStore {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn append(&self, message: NewMessage) -> BoxFuture<'_, Result<Appended, StoreError>> {
        async move { self.append_one(&message).await }.boxed()
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
                        "SELECT {SELECT_COLUMNS} FROM messages WHERE room = $1 AND sequence > $2 \
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
                        "SELECT {SELECT_COLUMNS} FROM messages WHERE room = $1 AND sequence < $2 \
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
            rows.iter()
                .map(|row| from_row(room, row).map_err(StoreError::from))
                .collect()
        }
        .boxed()
    }

    fn check(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
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
            Ok(deleted)
        }
        .boxed()
    }
}
