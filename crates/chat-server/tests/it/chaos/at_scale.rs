//! Chaos at scale (issue 15): two instances (real processes) on a private
//! Redis or NATS and one fresh PostgreSQL database.
//!
//! - A crowd of 200 clients on the first instance, each in 100 rooms:
//!   20,000 memberships, which the other instance must learn, learn again
//!   after the first is killed and restarted (from the crowd's rejoins),
//!   and learn again after it is itself restarted (from the first's
//!   snapshot, about 1.5 MB: more than one NATS message at the default
//!   `max_payload`).
//! - Twelve talkers (the client library, default rate limits) send to four
//!   rooms through connection cuts and the restart.
//! - A resumer leaves while traffic flows and comes back (a new client
//!   with the first one's resume points) with about 800 messages to catch
//!   up on in one room and hundreds in three others: more than its
//!   outbound queue, while live traffic goes on.
//! - Over Redis, PUBLISH is refused for moments while the connections stay
//!   up (an ACL), so message and presence publishes fail on their own.
//!
//! The checker of `chaos` judges the messages; then every instance must
//! list the same members in sampled rooms, and the ones expected.

use super::{Checked, Instance, Log, Tracked, check, read_rooms, record};
use crate::common::services::{NatsServer, RedisServer};
use crate::common::*;
use chat_client::{Client, ClientConfig};
use chat_server::domain::validate::RoomName;
use chat_server::store::{self, MessageStore};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Crowd clients, all on the first instance.
const CROWD: usize = 200;
/// Rooms per crowd client; client `c` is in the 100 rooms of group `c % 10`
/// (so 1,000 rooms of 20 members each).
const CROWD_ROOMS: usize = 100;
const GROUPS: usize = 10;
/// Talkers, alternating between the instances.
const TALKERS: usize = 12;
/// The rooms messages flow in: every talker sends to `hot` and to one of
/// the others.
const TALK_ROOMS: [&str; 4] = ["hot", "t0", "t1", "t2"];
/// Crowd rooms whose member lists are compared at the end.
const SAMPLE: [usize; 3] = [0, 555, 999];
/// Messages the resumer misses in `hot` before it comes back.
const RESUME_BACKLOG: u64 = 800;

/// The backplane under test, running for the test's length.
enum Backplane {
    Redis(RedisServer),
    Nats(NatsServer),
}

impl Backplane {
    fn env(&self) -> Vec<(String, String)> {
        let pairs = match self {
            Backplane::Redis(r) => [("CHAT_BACKPLANE", "redis"), ("CHAT_REDIS__URL", &r.url())]
                .map(|(k, v)| (k.to_string(), v.to_string())),
            Backplane::Nats(n) => [("CHAT_BACKPLANE", "nats"), ("CHAT_NATS__URL", &n.url())]
                .map(|(k, v)| (k.to_string(), v.to_string())),
        };
        pairs.to_vec()
    }

    fn name(&self) -> &'static str {
        match self {
            Backplane::Redis(_) => "redis",
            Backplane::Nats(_) => "nats",
        }
    }
}

/// Crowd client `c`'s name, long (30 characters) so that the crowd's
/// presence snapshot (about 1.5 MB) is bigger than NATS's default
/// `max_payload`.
fn crowd_name(c: usize) -> String {
    format!("crowd-member-with-long-name{c:03}")
}

fn crowd_room(n: usize) -> String {
    format!("m{n:04}")
}

/// The rooms of crowd client `c`.
fn crowd_rooms(c: usize) -> Vec<String> {
    let group = c % GROUPS;
    (0..CROWD_ROOMS)
        .map(|k| crowd_room(group * CROWD_ROOMS + k))
        .collect()
}

/// The rooms of talker `t`.
fn talker_rooms(t: usize) -> Vec<String> {
    vec![TALK_ROOMS[0].to_string(), TALK_ROOMS[1 + t % 3].to_string()]
}

/// A client of `url` named `name` in `rooms` (joined by the library on
/// every session), whose messages go to `log`.
fn client(url: &str, name: &str, rooms: Vec<String>, log: &Arc<Mutex<Log>>) -> Client {
    let mut config = ClientConfig::new(url, name);
    config.rooms = rooms;
    let (client, events) = Client::connect(config);
    record(events, log.clone());
    client
}

/// Waits (bounded by `within`) until every client has joined all its rooms.
async fn all_joined(clients: &[(Client, Vec<String>)], within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    loop {
        let missing = clients
            .iter()
            .filter(|(c, rooms)| rooms.iter().any(|r| c.last_seen(r).is_none()))
            .count();
        if missing == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} {what} clients not in all their rooms"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The members `client` is told `room` has, by name.
async fn members(client: &Client, room: &str) -> BTreeSet<String> {
    match client.list_members(room).await {
        Ok(members) => members.into_iter().map(|m| m.display_name).collect(),
        Err(e) => BTreeSet::from([format!("<{e}>")]),
    }
}

/// Waits (bounded) until `observer` lists each of `rooms` with exactly
/// its `expected` members; `how` says how they were to be learned.
async fn lists_all(
    observer: &Client,
    rooms: &[String],
    expected: &BTreeMap<String, BTreeSet<String>>,
    how: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(120);
    for room in rooms {
        loop {
            let listed = members(observer, room).await;
            if listed == expected[room] {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "never learned {room} {how}: {} of {} members",
                listed.len(),
                expected[room].len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn latest(store: &dyn MessageStore, room: &str) -> u64 {
    let name = RoomName::parse(room).unwrap();
    store.latest_sequence(&name).await.unwrap_or(0)
}

async fn chaos_at_scale(backplane: Backplane) {
    let db = or_skip!(postgres_db().await);
    let kind = backplane.name();
    let mut env = backplane.env();
    env.extend(
        [
            ("CHAT_STORE__URL", db.url().as_str()),
            ("CHAT_NOTIFICATIONS__ENABLED", "false"),
            ("CHAT_PRESENCE__HEARTBEAT_INTERVAL", "500ms"),
            ("CHAT_PRESENCE__EXPIRY", "3s"),
            ("CHAT_REDIS__RECONNECT_MAX_DELAY", "300ms"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let mut instances = [Instance::new("i0", &env), Instance::new("i1", &env)];
    for instance in &mut instances {
        instance.start();
    }
    for instance in &instances {
        instance.wait_ready().await;
    }
    let urls = [instances[0].url(), instances[1].url()];
    let store = store::open(&db.url()).await.unwrap();

    // The crowd. Their events are recorded (and so read) but not checked.
    let started = Instant::now();
    let crowd_log = Arc::new(Mutex::new(Log::default()));
    let crowd: Vec<(Client, Vec<String>)> = (0..CROWD)
        .map(|c| {
            let rooms = crowd_rooms(c);
            let client = client(&urls[0], &crowd_name(c), rooms.clone(), &crowd_log);
            (client, rooms)
        })
        .collect();
    all_joined(&crowd, Duration::from_secs(120), "crowd").await;
    let crowd_joined = started.elapsed();

    // Observers (one per instance), talkers and the resumer, all in their
    // rooms before the first message.
    let sample: Vec<String> = SAMPLE.iter().map(|n| crowd_room(*n)).collect();
    let observer_rooms: Vec<String> = TALK_ROOMS
        .iter()
        .map(|r| r.to_string())
        .chain(sample.iter().cloned())
        .collect();
    let mut tracked = Vec::new();
    let mut everyone = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        let log = Arc::default();
        let name = format!("observer{i}");
        let c = client(url, &name, observer_rooms.clone(), &log);
        everyone.push((c.clone(), observer_rooms.clone()));
        tracked.push(Tracked {
            name,
            rooms: TALK_ROOMS.iter().map(|r| r.to_string()).collect(),
            logs: vec![log],
            client: c,
        });
    }
    let mut talkers = Vec::new();
    for t in 0..TALKERS {
        let log = Arc::default();
        let name = format!("talker{t}");
        let c = client(&urls[t % 2], &name, talker_rooms(t), &log);
        everyone.push((c.clone(), talker_rooms(t)));
        talkers.push((c.clone(), log.clone()));
        tracked.push(Tracked {
            name,
            rooms: talker_rooms(t),
            logs: vec![log],
            client: c,
        });
    }
    let resumer_rooms: Vec<String> = TALK_ROOMS.iter().map(|r| r.to_string()).collect();
    let resumer_log: Arc<Mutex<Log>> = Arc::default();
    let resumer = client(&urls[1], "resumer", resumer_rooms.clone(), &resumer_log);
    everyone.push((resumer.clone(), resumer_rooms.clone()));
    all_joined(
        &everyone,
        Duration::from_secs(30),
        "observer, talker or resumer",
    )
    .await;

    // Who each compared room has, for the presence checks.
    let mut expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for room in &observer_rooms {
        let names = expected.entry(room.clone()).or_default();
        names.extend(["observer0".to_string(), "observer1".to_string()]);
    }
    for room in &resumer_rooms {
        expected.get_mut(room).unwrap().insert("resumer".into());
    }
    for t in 0..TALKERS {
        for room in talker_rooms(t) {
            expected
                .get_mut(&room)
                .unwrap()
                .insert(format!("talker{t}"));
        }
    }
    for c in 0..CROWD {
        for room in crowd_rooms(c) {
            if let Some(names) = expected.get_mut(&room) {
                names.insert(crowd_name(c));
            }
        }
    }
    // The talkers send (about 6 messages a second each, within the
    // default limits) until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = talkers
        .iter()
        .enumerate()
        .map(|(t, (client, log))| {
            let (client, log, stop) = (client.clone(), log.clone(), stop.clone());
            let rooms = talker_rooms(t);
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let room = &rooms[n as usize % 2];
                    let id = format!("t{t}-{n}");
                    if let Ok(ack) = client.send_with_id(room, &id, &format!("m {id}")).await {
                        log.lock()
                            .unwrap()
                            .acked
                            .insert(id, (room.clone(), ack.sequence));
                    }
                    tokio::time::sleep(Duration::from_millis(160)).await;
                }
            })
        })
        .collect();

    let mut faults: BTreeMap<&str, usize> = BTreeMap::new();
    let mut rng = super::Rng(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(7),
    );
    // The crowd's instance is killed and restarted: 20,000 memberships to
    // learn again, and a reconnect storm.
    tokio::time::sleep(Duration::from_secs(2)).await;
    instances[0].kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let restarted = Instant::now();
    instances[0].start();
    *faults
        .entry("crowd's instance killed and restarted")
        .or_default() += 1;
    instances[0].wait_ready().await;
    // The other instance learns the crowd again.
    let observers = [tracked[0].client.clone(), tracked[1].client.clone()];
    lists_all(&observers[1], &sample, &expected, "again").await;
    let relearned = restarted.elapsed();
    // The other instance is restarted: it learns the 20,000 memberships
    // from the crowd's instance's snapshot.
    instances[1].kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let restarted = Instant::now();
    instances[1].start();
    *faults
        .entry("the other instance killed and restarted")
        .or_default() += 1;
    instances[1].wait_ready().await;
    lists_all(&observers[1], &sample, &expected, "from a snapshot").await;
    let snapshot_learned = restarted.elapsed();

    // The resumer leaves, keeping its points (after the restarts, so that
    // what it misses stays within one resume) once it has stopped: a
    // message still being handed on when it closed is in its log, so it
    // must be in its points too.
    resumer.close();
    tokio::time::timeout(WAIT, resumer.closed())
        .await
        .expect("the resumer stops");
    let points: Vec<(String, u64)> = resumer_rooms
        .iter()
        .map(|r| (r.clone(), resumer.last_seen(r).unwrap_or(0)))
        .collect();
    let hot_point = points[0].1;

    // Until the resumer has enough to catch up on: connection cuts, and
    // over Redis refused publishes.
    let admin = match &backplane {
        Backplane::Redis(r) => {
            let client = ::redis::Client::open(r.url()).unwrap();
            Some(client.get_multiplexed_async_connection().await.unwrap())
        }
        Backplane::Nats(_) => None,
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while latest(&*store, "hot").await < hot_point + RESUME_BACKLOG {
        assert!(
            Instant::now() < deadline,
            "traffic too slow for the resume backlog"
        );
        tokio::time::sleep(Duration::from_millis(500 + rng.below(500))).await;
        match (rng.below(2), admin.clone()) {
            (0, Some(mut admin)) => {
                let set = |rule: &str| {
                    let mut command = ::redis::cmd("ACL");
                    command.arg("SETUSER").arg("default").arg(rule);
                    command
                };
                let _: () = set("-publish").query_async(&mut admin).await.unwrap();
                tokio::time::sleep(Duration::from_millis(200 + rng.below(300))).await;
                let _: () = set("+publish").query_async(&mut admin).await.unwrap();
                *faults
                    .entry("redis refused PUBLISH for a moment")
                    .or_default() += 1;
            }
            _ => {
                for _ in 0..3 {
                    talkers[rng.below(TALKERS as u64) as usize].0.reconnect();
                }
                *faults.entry("talker connections cut (x3)").or_default() += 1;
            }
        }
    }
    // The resumer comes back as a new client with the old one's points.
    let mut backlog = 0;
    for (room, point) in &points {
        let missed = latest(&*store, room).await - point;
        // Beyond one resume the server says what was lost instead.
        assert!(
            missed < 1000,
            "{missed} missed in {room}: more than one resume"
        );
        backlog += missed;
    }
    let resumer_log2: Arc<Mutex<Log>> = Arc::default();
    let mut config = ClientConfig::new(&urls[1], "resumer");
    config.resume_from = points;
    let (resumer, events) = Client::connect(config);
    record(events, resumer_log2.clone());
    tracked.push(Tracked {
        name: "resumer".into(),
        rooms: resumer_rooms.clone(),
        logs: vec![resumer_log, resumer_log2],
        client: resumer.clone(),
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        tokio::time::timeout(Duration::from_secs(60), sender)
            .await
            .expect("senders finish")
            .unwrap();
    }

    // Every tracked client catches up with the store (bounded).
    let mut ends = BTreeMap::new();
    for room in TALK_ROOMS {
        ends.insert(room.to_string(), latest(&*store, room).await);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline
        && !tracked.iter().all(|t| {
            t.rooms
                .iter()
                .all(|r| t.client.last_seen(r) == Some(ends[r]))
        })
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stored = read_rooms(&*store, &TALK_ROOMS).await;
    let Checked {
        mut violations,
        deliveries,
        acked,
    } = check(&tracked, &stored);

    // Presence: both instances list exactly the expected members (within
    // a bound: the digests repair what the faults left out of step).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut differing = Vec::new();
    loop {
        differing.clear();
        for (room, names) in &expected {
            for (i, observer) in observers.iter().enumerate() {
                let listed = members(observer, room).await;
                if listed != *names {
                    let missing: Vec<_> = names.difference(&listed).take(3).collect();
                    let extra: Vec<_> = listed.difference(names).take(3).collect();
                    differing.push(format!(
                        "i{i} lists {} members of {room}, expected {}; missing {missing:?}, extra {extra:?}",
                        listed.len(),
                        names.len()
                    ));
                }
            }
        }
        if differing.is_empty() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    violations.extend(differing);

    let messages: usize = stored.values().map(Vec::len).sum();
    println!(
        "chaos at scale ({kind}): {} memberships (joined in {crowd_joined:.1?}), the sampled rooms' members re-learned {relearned:.1?} after the crowd's instance restarted and {snapshot_learned:.1?} after the other did; {messages} messages stored, {acked} acknowledged sends, {deliveries} deliveries checked, a resume of {backlog} messages in 4 rooms; faults {faults:?}, violations = {}",
        CROWD * CROWD_ROOMS,
        violations.len()
    );
    assert!(
        violations.is_empty(),
        "violations:\n{}",
        violations.join("\n")
    );
    assert!(acked > 100, "too little traffic: {acked}");
    for (c, _) in &crowd {
        c.close();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_at_scale_over_redis() {
    let redis = or_skip!(redis());
    chaos_at_scale(Backplane::Redis(redis)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_at_scale_over_nats() {
    let nats = or_skip!(nats());
    chaos_at_scale(Backplane::Nats(nats)).await;
}
