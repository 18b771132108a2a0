//! The join storm (`chat-bench storm-join`): N clients, each in K of R
//! rooms ([`rooms_of`]), ask for all their memberships at the same moment.
//!
//! Connect every client (not timed), settle 1 s, then at t0 every client
//! issues its K joins at once (one task each: none waits for another's
//! reply), and the clock stops when the last reply is back (`join_s`).
//! Over that window: the servers' CPU (user and system, per join); from t0
//! until 2 s after it (the presence events' settle): the presence events
//! the clients receive and the servers' own counters ([`prom`]). Then a
//! short live phase — a few rooms with one sender each — for the delivery
//! latency and ratio right after the storm.

use super::prom::{self, ServerCounters};
use super::{
    CommonArgs, Connected, CpuOut, PerOp, ServerEnd, check_shape, connect_all, cpu_now,
    every_second, is_presence, member_of, rooms_of, rss_total, servers_end, slow_statements,
    timed_out,
};
use crate::clock::{ms_between, now_ns};
use crate::metrics::{Hist, Summary, r3};
use crate::procstat;
use crate::report::{now_utc, run_failures};
use crate::schedule::{self, room_name};
use chat_client::{Event, Events, proto::MessageEvent};
use chat_util::lock;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `chat-bench storm-join`'s flags.
#[derive(clap::Args, Debug, Clone)]
pub struct JoinArgs {
    /// Flags shared with the restart storm.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Clients (N).
    #[arg(long, default_value_t = 200)]
    pub clients: u64,
    /// Rooms each client joins (K).
    #[arg(long = "rooms-per-client", default_value_t = 50)]
    pub rooms_per_client: u64,
    /// Rooms (R); each gets N·K/R members.
    #[arg(long, default_value_t = 100)]
    pub rooms: u64,
    /// Rooms with a sender in the live phase after the storm.
    #[arg(long = "live-rooms", default_value_t = 10)]
    pub live_rooms: u64,
    /// Messages per second per live room.
    #[arg(long = "live-rate", default_value_t = 1.0)]
    pub live_rate: f64,
    /// Seconds of the live phase.
    #[arg(long = "live-s", default_value_t = 2.0)]
    pub live_s: f64,
    /// Client driver; only `chat-client` (the client library) for now.
    #[arg(long, default_value = "chat-client")]
    pub driver: String,
}

/// `params` of the report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct JoinParams {
    /// N.
    pub clients: u64,
    /// K.
    pub rooms_per_client: u64,
    /// R.
    pub rooms: u64,
    /// N·K/R.
    pub members_per_room: f64,
    /// Rooms sending in the live phase.
    pub live_rooms: u64,
    /// Messages per second per live room.
    pub live_rate: f64,
    /// Seconds of the live phase.
    pub live_s: f64,
    /// Server URLs.
    pub urls: Vec<String>,
}

/// The live phase after the storm.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LiveOut {
    /// Messages sent.
    pub sent: u64,
    /// Sends acknowledged.
    pub acked: u64,
    /// Σ acknowledged messages × the room's members joined.
    pub deliveries_expected: u64,
    /// Deliveries received.
    pub deliveries_received: u64,
    /// received / expected (`null` when nothing was expected).
    pub delivery_ratio: Option<f64>,
    /// From the send to each delivery.
    pub latency_ms: Summary,
}

/// One join storm's result: one JSON line.
#[derive(Clone, Debug, Default, Serialize)]
pub struct JoinReport {
    /// `storm-join`.
    pub workload: String,
    /// `--label`.
    pub label: String,
    /// `--driver`.
    pub driver: String,
    /// Start time, ISO 8601 UTC.
    pub time_utc: String,
    /// The shape.
    pub params: JoinParams,
    /// Clients connected.
    pub connections: u64,
    /// Clients that could not connect.
    pub connect_failed: u64,
    /// Their reasons (first 80 characters) and counts.
    pub connect_errors: BTreeMap<String, u64>,
    /// Wall seconds of the connect phase (not part of the storm).
    pub connect_s: f64,
    /// Joins answered with success.
    pub joins: u64,
    /// Joins refused or failed.
    pub join_failed: u64,
    /// Their reasons (first 80 characters) and counts.
    pub join_errors: BTreeMap<String, u64>,
    /// t0 → the last join reply: the time until every membership is back.
    pub join_s: Option<f64>,
    /// Each join, from its request to its reply.
    pub join_latency_ms: Summary,
    /// The servers' CPU over t0 … the last reply, summed over instances.
    pub server_cpu_join: CpuOut,
    /// `server_cpu_join` per successful join, µs.
    pub cpu_us_per_join: PerOp,
    /// The broker's CPU seconds over the same window.
    pub redis_cpu_s_join: Option<f64>,
    /// Presence frames the clients received from t0 to the end of the
    /// settle after the storm (member joined / left, and any newer
    /// presence event).
    pub presence_events_received: u64,
    /// The servers' counters from just before t0 to the end of that settle.
    #[serde(flatten)]
    pub counters: ServerCounters,
    /// The live phase after the storm.
    pub live: LiveOut,
    /// Sessions that ended before the run did.
    pub disconnects: u64,
    /// Each server at the end.
    pub servers: Vec<ServerEnd>,
    /// Σ `servers[].rss_mb_end`.
    pub server_rss_mb_end_total: Option<f64>,
    /// `slow statement` lines in the server logs (`--server-logs`).
    pub slow_statements: Option<u64>,
    /// What stopped the run, if something did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Wall seconds of the whole run.
    pub total_wall_s: f64,
}

impl JoinReport {
    /// Why the run fails (empty when it passes): an error, failed
    /// connections or joins, a live delivery missing.
    pub fn failures(&self) -> Vec<String> {
        let mut why = run_failures(self.error.as_deref(), self.connect_failed, self.join_failed);
        if let Some(r) = self.live.delivery_ratio.filter(|r| *r < 1.0) {
            why.push(format!("live delivery_ratio {r} < 1"));
        }
        why
    }
}

/// The phases, for the progress line.
const PHASES: [&str; 5] = ["connect", "settle", "join storm", "presence settle", "live"];

/// What the clients' event tasks, the live senders and the progress line
/// share.
#[derive(Default)]
struct Counts {
    /// Index into [`PHASES`].
    phase: AtomicU8,
    /// Clients connected.
    connected: AtomicU64,
    /// Join replies back (either outcome).
    replies: AtomicU64,
    /// Presence frames received.
    presence: AtomicU64,
    /// Live messages delivered.
    received: AtomicU64,
    /// Messages whose id is not the live phase's.
    bad: AtomicU64,
    /// Sessions that ended.
    disconnects: AtomicU64,
    /// Live send → delivery.
    latency: Mutex<Hist>,
    /// Live sends acknowledged.
    acked: AtomicU64,
}

impl Counts {
    fn on_message(&self, m: &MessageEvent) {
        let now = now_ns();
        match schedule::parse_message_id(&m.client_message_id) {
            Some((_, _, sent)) => {
                lock(&self.latency).record(ms_between(sent, now));
                self.received.fetch_add(1, Relaxed);
            }
            None => {
                self.bad.fetch_add(1, Relaxed);
            }
        }
    }
}

/// One client's events: live messages, presence, disconnects.
async fn receive(counts: Arc<Counts>, mut events: Events) {
    while let Some(event) = events.next().await {
        match event {
            Event::Message(m) => counts.on_message(&m),
            Event::Disconnected { .. } => {
                counts.disconnects.fetch_add(1, Relaxed);
            }
            e if is_presence(&e) => {
                counts.presence.fetch_add(1, Relaxed);
            }
            _ => {}
        }
    }
}

/// One line a second on stderr.
async fn progress(counts: Arc<Counts>, tag: String) {
    every_second(|| {
        format!(
            "{tag} {} connected={} join_replies={} presence={} live_received={} disconnects={}",
            PHASES
                .get(usize::from(counts.phase.load(Relaxed)))
                .unwrap_or(&"?"),
            counts.connected.load(Relaxed),
            counts.replies.load(Relaxed),
            counts.presence.load(Relaxed),
            counts.received.load(Relaxed),
            counts.disconnects.load(Relaxed),
        )
    })
    .await
}

/// Runs the join storm; its report has `error` set if it stopped.
pub async fn run(args: JoinArgs) -> JoinReport {
    let started = Instant::now();
    let mut report = JoinReport {
        workload: "storm-join".into(),
        label: args.common.label.clone(),
        driver: args.driver.clone(),
        time_utc: now_utc(),
        params: JoinParams {
            clients: args.clients,
            rooms_per_client: args.rooms_per_client,
            rooms: args.rooms,
            members_per_room: r3(
                args.clients as f64 * args.rooms_per_client as f64 / args.rooms.max(1) as f64
            ),
            live_rooms: args.live_rooms.min(args.rooms),
            live_rate: args.live_rate,
            live_s: args.live_s,
            urls: Vec::new(),
        },
        ..JoinReport::default()
    };
    let counts = Arc::new(Counts::default());
    let tag = format!("[chat-bench:{}]", args.common.label);
    let progress = tokio::spawn(progress(counts.clone(), tag));
    let mut fleet = Connected::default();
    if let Err(e) = execute(&args, &counts, &mut fleet, &mut report).await {
        eprintln!("[chat-bench] ERROR {e:#}");
        report.error = Some(format!("{e:#}"));
    }
    progress.abort();
    drop(fleet);
    report.total_wall_s = r3(started.elapsed().as_secs_f64());
    report
}

/// The phases in order, filling the report as they go.
async fn execute(
    args: &JoinArgs,
    counts: &Arc<Counts>,
    fleet: &mut Connected,
    report: &mut JoinReport,
) -> anyhow::Result<()> {
    let c = args.common.resolve()?;
    report.params.urls = c.urls.clone();
    check_shape(args.clients, args.rooms_per_client, args.rooms)?;
    if args.driver != "chat-client" {
        anyhow::bail!("--driver: only chat-client is supported by the storms");
    }
    let n = usize::try_from(args.clients)?;
    eprintln!(
        "[chat-bench] storm-join: connecting {n} clients to {}",
        c.urls.join(" ")
    );
    let on_events = {
        let counts = counts.clone();
        move |_i: usize, events: Events| receive(counts.clone(), events)
    };
    let urls = c.urls.clone();
    let timeout = c.phase_timeout;
    *fleet = connect_all(
        n,
        |i| urls[i % urls.len()].clone(),
        |i| format!("storm-{i}"),
        |mut cfg| {
            cfg.reconnect = false;
            cfg.request_timeout = timeout;
            cfg
        },
        &c,
        on_events,
    )
    .await?;
    counts.connected.store(fleet.count(), Relaxed);
    report.connections = fleet.count();
    report.connect_failed = fleet.failed;
    report.connect_errors = fleet.errors.clone();
    report.connect_s = fleet.seconds;
    eprintln!(
        "[chat-bench] connected {}/{n} in {:.2}s",
        report.connections, report.connect_s
    );

    counts.phase.store(1, Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = prom::scrape_all(&c.urls).await;
    let redis = || c.redis_pid.and_then(|p| procstat::cpu_s(&p.to_string()));
    let (cpu0, redis0) = (cpu_now(&c.server_pids), redis());

    counts.phase.store(2, Relaxed);
    let storm = join_storm(args, fleet, counts, c.phase_timeout).await;
    let (cpu1, redis1) = (cpu_now(&c.server_pids), redis());
    let (members, t_all_ns) = record_joins(storm, report)?;
    report.server_cpu_join = CpuOut::between(&cpu0, &cpu1, report_window(report));
    report.cpu_us_per_join = report.server_cpu_join.per(report.joins);
    report.redis_cpu_s_join = redis0.zip(redis1).map(|(a, b)| r3(b - a));
    eprintln!(
        "[chat-bench] {} joins ({} failed) in {} s; settling 2 s for presence",
        report.joins,
        report.join_failed,
        report.join_s.unwrap_or(0.0)
    );

    counts.phase.store(3, Relaxed);
    let settle_end = t_all_ns + 2_000_000_000;
    tokio::time::sleep(Duration::from_nanos(settle_end.saturating_sub(now_ns()))).await;
    report.presence_events_received = counts.presence.load(Relaxed);
    let after = prom::scrape_all(&c.urls).await;
    report.counters = ServerCounters::between(&before, &after, report.joins);

    counts.phase.store(4, Relaxed);
    report.live = live_phase(args, fleet, counts, &members).await;
    report.disconnects = counts.disconnects.load(Relaxed);
    report.servers = servers_end(&c.server_pids);
    report.server_rss_mb_end_total = rss_total(&report.servers);
    report.slow_statements = slow_statements(&c.server_logs);
    Ok(())
}

/// The join window's wall time, from `join_s`.
fn report_window(report: &JoinReport) -> Duration {
    Duration::from_secs_f64(report.join_s.unwrap_or(0.0).max(0.0))
}

/// One join's outcome: its room, its latency, and when its reply came.
type JoinOutcome = (u64, f64, u64, Result<(), String>);

/// What the storm left: t0 and every join's outcome.
struct Storm {
    /// The moment every join was issued (monotonic ns).
    t0_ns: u64,
    /// Every join's outcome, or the phase's timeout.
    outcomes: anyhow::Result<Vec<JoinOutcome>>,
}

/// Issues every client's K joins at once and waits for every reply.
async fn join_storm(
    args: &JoinArgs,
    fleet: &Connected,
    counts: &Arc<Counts>,
    limit: Duration,
) -> Storm {
    let (k, r) = (args.rooms_per_client, args.rooms);
    let t0_ns = now_ns();
    let mut tasks = Vec::new();
    for (i, client) in fleet.clients.iter().enumerate() {
        let Some(client) = client else { continue };
        for room in rooms_of(i as u64, k, r) {
            let (client, counts) = (client.clone(), counts.clone());
            tasks.push(tokio::spawn(async move {
                let asked = now_ns();
                let result = client.join(&room_name(room)).await;
                let done = now_ns();
                counts.replies.fetch_add(1, Relaxed);
                let result = result.map(drop).map_err(|e| e.to_string());
                (room, ms_between(asked, done), done, result)
            }));
        }
    }
    eprintln!(
        "[chat-bench] {} joins issued in {:.1} ms",
        tasks.len(),
        ms_between(t0_ns, now_ns())
    );
    let all = futures::future::join_all(tasks);
    let outcomes = match tokio::time::timeout(limit, all).await {
        Ok(results) => Ok(results
            .into_iter()
            .map(|r| r.unwrap_or((0, 0.0, now_ns(), Err("join task failed".into()))))
            .collect()),
        Err(_) => Err(timed_out("the join storm", limit)),
    };
    Storm { t0_ns, outcomes }
}

/// The join fields of the report; returns the members joined per room and
/// when the last reply came.
fn record_joins(storm: Storm, report: &mut JoinReport) -> anyhow::Result<(Vec<u64>, u64)> {
    let outcomes = storm.outcomes?;
    let mut members = vec![0u64; report.params.rooms as usize];
    let mut latency = Hist::new();
    let mut last = storm.t0_ns;
    for (room, ms, done, result) in outcomes {
        latency.record(ms);
        last = last.max(done);
        match result {
            Ok(()) => {
                report.joins += 1;
                members[room as usize] += 1;
            }
            Err(e) => {
                report.join_failed += 1;
                *report
                    .join_errors
                    .entry(e.chars().take(80).collect())
                    .or_default() += 1;
            }
        }
    }
    report.join_s = Some(r3(ms_between(storm.t0_ns, last) / 1000.0));
    report.join_latency_ms = latency.summary();
    Ok((members, last))
}

/// A few rooms, one sender each (a member), at `--live-rate` for
/// `--live-s`; then up to 5 s for the deliveries.
async fn live_phase(
    args: &JoinArgs,
    fleet: &Connected,
    counts: &Arc<Counts>,
    members: &[u64],
) -> LiveOut {
    let per_room = (args.live_rate * args.live_s).round() as u64;
    let live = args.live_rooms.min(args.rooms);
    // Rooms spread over the range, each with a connected member to send.
    let senders: Vec<(u64, chat_client::Client)> = (0..live)
        .map(|j| j * args.rooms / live.max(1))
        .filter_map(|r| {
            let i = member_of(r, args.clients, args.rooms_per_client)?;
            Some((r, fleet.clients.get(i as usize)?.clone()?))
        })
        .collect();
    let mut out = LiveOut::default();
    let interval = Duration::from_secs_f64(1.0 / args.live_rate.max(1e-3));
    let acks = Arc::new(Mutex::new(Vec::new()));
    for seq in 0..per_room {
        for (s, (r, client)) in senders.iter().enumerate() {
            let id = schedule::message_id(s as u64, seq, now_ns());
            let (client, room, acks, counts) = (client.clone(), *r, acks.clone(), counts.clone());
            out.sent += 1;
            tokio::spawn(async move {
                if client
                    .send_with_id(&room_name(room), &id, "live")
                    .await
                    .is_ok()
                {
                    counts.acked.fetch_add(1, Relaxed);
                    lock(&acks).push(room);
                }
            });
        }
        tokio::time::sleep(interval).await;
    }
    let expected = |acked: &[u64]| -> u64 { acked.iter().map(|&r| members[r as usize]).sum() };
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let all_acked = counts.acked.load(Relaxed) >= out.sent;
        if all_acked && counts.received.load(Relaxed) >= expected(&lock(&acks)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    out.acked = counts.acked.load(Relaxed);
    out.deliveries_expected = expected(&lock(&acks));
    out.deliveries_received = counts.received.load(Relaxed);
    out.delivery_ratio = (out.deliveries_expected > 0).then(|| {
        (out.deliveries_received as f64 / out.deliveries_expected as f64 * 1e6).round() / 1e6
    });
    out.latency_ms = lock(&counts.latency).summary();
    out
}
