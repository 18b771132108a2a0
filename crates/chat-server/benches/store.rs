//! Store appends: one at a time (each waits for the previous one) and 256
//! at once (the SQLite writer takes everything queued, up to 256, into one
//! transaction: group commit; PostgreSQL takes it into one batch
//! statement). Memory and SQLite (a file in a temporary
//! folder, WAL, `synchronous=FULL`, as the server opens it) always;
//! PostgreSQL when `CHAT_BENCH_POSTGRES_URL` names a server's database
//! (`postgres://USER@HOST:PORT/DB`): a fresh database is created on that
//! server for the run and dropped afterwards.
//!
//! Throughput is in appends. All appends go to one room, 64 bytes of text,
//! distinct client message ids (no duplicates). Each store runs twice:
//! as is, and `+webhook`, queueing every message for the webhook in the
//! append's transaction (`webhooks.url` set; nothing sends them here).
//!
//! `cargo bench -p chat-server --bench store`

use chat_server::domain::User;
use chat_server::domain::validate::RoomName;
use chat_server::store::{self, Capture, Kind, MessageStore, NewMessage};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::future::join_all;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const TEXT: &str = "The quick brown fox jumps over the lazy dog, 64 bytes of text...";
/// Appends in flight at once: the SQLite writer's largest batch.
const CONCURRENT: usize = 256;

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn message(room: &RoomName, sender: &User) -> NewMessage {
    NewMessage {
        room: room.clone(),
        sender: sender.clone(),
        client_message_id: format!("m-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed)),
        text: TEXT.into(),
        kind: Kind::Message,
    }
}

fn bench_store(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    url: &str,
    capture: Capture,
) {
    let store: Arc<dyn MessageStore> = rt
        .block_on(store::open(url))
        .unwrap_or_else(|e| panic!("open {url}: {e}"));
    rt.block_on(store.set_capture(capture))
        .expect("set the webhook capture");
    let name = match capture.is_none() {
        true => name.to_string(),
        false => format!("{name}+webhook"),
    };
    let room = RoomName::parse("bench").unwrap();
    let sender = User {
        user_id: Arc::from("alice"),
        display_name: Arc::from("Alice"),
    };

    let mut group = c.benchmark_group(format!("store_append/{name}"));
    if !name.starts_with("memory") {
        // Each one-at-a-time append waits for its own commit (fsync).
        group.sample_size(20);
    }
    group.throughput(Throughput::Elements(1));
    group.bench_function("one_at_a_time", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    let message = message(&room, &sender);
                    let start = Instant::now();
                    black_box(store.append(message).await.expect("append"));
                    elapsed += start.elapsed();
                }
                elapsed
            })
        })
    });
    group.throughput(Throughput::Elements(CONCURRENT as u64));
    group.bench_function(format!("concurrent_{CONCURRENT}"), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    let messages: Vec<_> =
                        (0..CONCURRENT).map(|_| message(&room, &sender)).collect();
                    let start = Instant::now();
                    // Unconstrained: all 256 reach the writer's queue in
                    // this one poll (tokio's budget would cut it at 128).
                    let appends = join_all(messages.into_iter().map(|m| store.append(m)));
                    let appended = tokio::task::unconstrained(appends).await;
                    elapsed += start.elapsed();
                    for a in appended {
                        black_box(a.expect("append"));
                    }
                }
                elapsed
            })
        })
    });
    group.finish();
    drop(store);
    // Let the SQLite writer see its queue close and close its connection.
    rt.block_on(async { tokio::time::sleep(Duration::from_millis(100)).await });
}

/// A database created for the run on the server of `admin_url`, dropped
/// at the end.
struct PostgresDb {
    admin_url: String,
    name: String,
}

impl PostgresDb {
    async fn create(admin_url: String) -> PostgresDb {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("CHAT_BENCH_POSTGRES_URL {admin_url}: {e}"));
        let name = format!("chat_microbench_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create the bench database");
        let _ = admin.close().await;
        PostgresDb { admin_url, name }
    }

    fn url(&self) -> String {
        let (server, _) = self
            .admin_url
            .rsplit_once('/')
            .expect("CHAT_BENCH_POSTGRES_URL must end in /DATABASE");
        format!("{server}/{}", self.name)
    }

    async fn drop_database(self) {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&self.admin_url)
            .await
            .expect("reconnect to drop the bench database");
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut admin)
        .await
        .expect("drop the bench database");
        let _ = admin.close().await;
    }
}

fn benches(c: &mut Criterion) {
    // One thread: the 256 appends are all queued before the SQLite writer
    // task runs, so each batch is one transaction. (SQLite itself works on
    // sqlx's own thread; PostgreSQL's pool has 16 connections.)
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    for capture in [Capture::NONE, Capture::MESSAGE] {
        bench_store(c, &rt, "memory", "memory", capture);
    }

    for capture in [Capture::NONE, Capture::MESSAGE] {
        let dir =
            std::env::temp_dir().join(format!("chat-microbench-{}", uuid::Uuid::new_v4().simple()));
        let url = format!("sqlite://{}/chat.db", dir.display());
        bench_store(c, &rt, "sqlite", &url, capture);
        let _ = std::fs::remove_dir_all(&dir);
    }

    if let Ok(admin_url) = std::env::var("CHAT_BENCH_POSTGRES_URL") {
        for capture in [Capture::NONE, Capture::MESSAGE] {
            let db = rt.block_on(PostgresDb::create(admin_url.clone()));
            bench_store(c, &rt, "postgres", &db.url(), capture);
            rt.block_on(db.drop_database());
        }
    } else {
        eprintln!("store_append/postgres skipped: CHAT_BENCH_POSTGRES_URL is not set");
    }
}

criterion_group! {
    name = store;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(store);
