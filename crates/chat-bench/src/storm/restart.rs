//! The restart storm (`chat-bench storm-restart`): instance B is killed
//! (SIGKILL) while N clients, half of them on B, sit in K rooms each and
//! a steady sender on instance A posts into every room; B is restarted by
//! `--restart-cmd` and its clients (the client library, reconnecting with
//! backoff and jitter, resuming each room from its last sequence) come
//! back and rejoin everything.
//!
//! Measured: kill → B ready again → every B client has every room
//! rejoined (`resume_s`); that nothing was lost or delivered twice, for
//! every client and room, against what the sender had acknowledged by the
//! end of the drain ([`sequence`]); the delivery latency to A's clients
//! meanwhile; the servers' CPU per rejoin and their counters ([`prom`]).

use super::prom::{self, Scrape, ServerCounters};
use super::sequence::{self, Check};
use super::{
    Common, CommonArgs, Connected, CpuOut, PerOp, ServerEnd, check_shape, connect_all, cpu_now,
    every_second, is_presence, rooms_of, rss_total, servers_end, slow_statements, timed_out,
};
use crate::clock::{ms_between, now_ns};
use crate::metrics::{Hist, Summary, r3};
use crate::report::{now_utc, run_failures};
use crate::schedule::{self, room_name};
use anyhow::{Context, anyhow, bail};
use chat_client::{Client, Event, Events};
use chat_util::lock;
use futures::StreamExt;
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `chat-bench storm-restart`'s flags.
#[derive(clap::Args, Debug, Clone)]
pub struct RestartArgs {
    /// Flags shared with the join storm (`--urls`: A first, then B;
    /// `--server-pids` in the same order).
    #[command(flatten)]
    pub common: CommonArgs,
    /// Clients (N), alternating between A and B.
    #[arg(long, default_value_t = 5000)]
    pub clients: u64,
    /// Rooms each client is in (K).
    #[arg(long = "rooms-per-client", default_value_t = 10)]
    pub rooms_per_client: u64,
    /// Rooms (R).
    #[arg(long, default_value_t = 500)]
    pub rooms: u64,
    /// Sender clients on A; sender s posts into the rooms r with r mod S = s.
    #[arg(long, default_value_t = 5)]
    pub senders: u64,
    /// Messages per second, all senders together, round-robin over the rooms.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Seconds of steady traffic before the kill.
    #[arg(long = "kill-after", default_value_t = 3.0)]
    pub kill_after: f64,
    /// Seconds of traffic after every B client has resumed.
    #[arg(long = "after", default_value_t = 3.0)]
    pub after: f64,
    /// Longest seconds to wait, after the sender stops, for the last
    /// acknowledgements and deliveries.
    #[arg(long, default_value_t = 10.0)]
    pub drain: f64,
    /// The process to kill [default: the second of `--server-pids`].
    #[arg(long = "kill-pid")]
    pub kill_pid: Option<u32>,
    /// Shell command (`sh -c`) that starts instance B again in the
    /// background and returns; it writes the new process id to
    /// `--restart-pid-file`.
    #[arg(long = "restart-cmd", default_value = "")]
    pub restart_cmd: String,
    /// Where the restart command writes B's new process id (for its CPU).
    #[arg(long = "restart-pid-file", default_value = "")]
    pub restart_pid_file: String,
    /// Seconds a client's request (a join, a rejoin, a send) waits for its
    /// reply.
    #[arg(long = "request-timeout", default_value_t = 30.0)]
    pub request_timeout: f64,
}

/// `params` of the report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RestartParams {
    /// N.
    pub clients: u64,
    /// K.
    pub rooms_per_client: u64,
    /// R.
    pub rooms: u64,
    /// N·K/R.
    pub members_per_room: f64,
    /// Sender clients on A.
    pub senders: u64,
    /// Messages per second in all.
    pub rate: f64,
    /// Seconds of traffic before the kill.
    pub kill_after_s: f64,
    /// Seconds of traffic after the resume.
    pub after_s: f64,
    /// Server URLs (A, B).
    pub urls: Vec<String>,
}

/// The live traffic across the storm.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RestartLive {
    /// Messages sent.
    pub sent: u64,
    /// Sends acknowledged.
    pub acked: u64,
    /// Sends refused or failed.
    pub failed: u64,
    /// Σ over clients and rooms of the sequences owed.
    pub deliveries_expected: u64,
    /// Of those, received (once or more).
    pub deliveries_received: u64,
    /// received / expected.
    pub delivery_ratio: Option<f64>,
    /// Deliveries to A's clients over the whole run, from the send.
    pub latency_ms: Summary,
    /// Deliveries to A's clients from the kill until every B client resumed.
    pub latency_storm_ms: Summary,
    /// Deliveries to B's clients over the whole run (backlog included).
    pub latency_b_ms: Summary,
}

/// The gap and duplicate check of one side.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SideCheck {
    /// Clients checked.
    pub clients: u64,
    /// Their sequences owed, lost and duplicated.
    #[serde(flatten)]
    pub check: Check,
}

/// One restart storm's result: one JSON line.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RestartReport {
    /// `storm-restart`.
    pub workload: String,
    /// `--label`.
    pub label: String,
    /// The client driver (the client library).
    pub driver: String,
    /// Start time, ISO 8601 UTC.
    pub time_utc: String,
    /// The shape.
    pub params: RestartParams,
    /// Clients (senders included) connected.
    pub connections: u64,
    /// Clients that could not connect.
    pub connect_failed: u64,
    /// Their reasons and counts.
    pub connect_errors: BTreeMap<String, u64>,
    /// Wall seconds of the connect phase.
    pub connect_s: f64,
    /// Joins before the storm that succeeded.
    pub joins: u64,
    /// Joins before the storm that failed.
    pub join_failed: u64,
    /// Wall seconds of the joins before the storm (not a storm).
    pub initial_join_s: f64,
    /// The process killed.
    pub killed_pid: Option<u32>,
    /// B's new process.
    pub restarted_pid: Option<u32>,
    /// Clients that were on B.
    pub b_clients: u64,
    /// Of those, clients that had every room rejoined on a new session.
    pub clients_resumed: u64,
    /// Kill → B's `/health/ready` answers again.
    pub restart_ready_s: Option<f64>,
    /// Kill → every B client has every room rejoined.
    pub resume_s: Option<f64>,
    /// B ready → every B client has every room rejoined.
    pub resume_after_ready_s: Option<f64>,
    /// Rooms rejoined with success after the kill.
    pub rejoins: u64,
    /// Rejoins reported failed (the library tries again).
    pub rejoin_failed: u64,
    /// Rejoins whose backlog missed messages.
    pub backlog_incomplete: u64,
    /// Rejoins answered with `sequence_reset`.
    pub sequence_reset: u64,
    /// The servers' CPU over the storm: A from the kill, B from ready, to
    /// the last resume.
    pub server_cpu_storm: CpuOut,
    /// `server_cpu_storm` per rejoin, µs.
    pub cpu_us_per_join: PerOp,
    /// Presence frames the clients received from the kill to the end.
    pub presence_events_received: u64,
    /// Presence frames they received before the kill (the joins).
    pub presence_events_before_kill: u64,
    /// The servers' counters: A from the start of traffic, B from ready,
    /// to the end (per rejoin).
    #[serde(flatten)]
    pub counters: ServerCounters,
    /// The live traffic.
    pub live: RestartLive,
    /// Sequences lost, every client and room.
    pub lost: u64,
    /// Sequences delivered more than once, every client and room.
    pub duplicated: u64,
    /// Clients whose rooms were checked.
    pub clients_checked: u64,
    /// The check of A's clients.
    pub check_a: SideCheck,
    /// The check of B's clients.
    pub check_b: SideCheck,
    /// Sessions that ended.
    pub disconnects: u64,
    /// Each server at the end (A, then B's new process).
    pub servers: Vec<ServerEnd>,
    /// Σ `servers[].rss_mb_end`.
    pub server_rss_mb_end_total: Option<f64>,
    /// `slow statement` lines in the server logs.
    pub slow_statements: Option<u64>,
    /// What stopped the run, if something did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Wall seconds of the whole run.
    pub total_wall_s: f64,
}

impl RestartReport {
    /// Why the run fails (empty when it passes).
    pub fn failures(&self) -> Vec<String> {
        let mut why = run_failures(self.error.as_deref(), self.connect_failed, self.join_failed);
        if self.clients_resumed < self.b_clients {
            why.push(format!(
                "{} of {} B clients did not resume",
                self.b_clients - self.clients_resumed,
                self.b_clients
            ));
        }
        if self.lost > 0 || self.duplicated > 0 {
            why.push(format!(
                "{} sequences lost, {} duplicated",
                self.lost, self.duplicated
            ));
        }
        why
    }
}

/// The phases, for the progress line.
const PHASES: [&str; 6] = ["connect", "join", "traffic", "storm", "after", "drain"];

/// What one client saw, room by room.
#[derive(Default)]
struct ClientLog {
    /// Per room index: the room's latest when joined, and the sequences
    /// received there.
    rooms: BTreeMap<u64, (Option<u64>, Vec<u64>)>,
    /// A session opened after the kill.
    reconnected: bool,
    /// Rooms rejoined on that session.
    rejoined: HashSet<u64>,
    /// Every room rejoined (counted once).
    resumed: bool,
}

/// State shared by the event tasks, the sender, and the phases.
#[derive(Default)]
struct Shared {
    /// Index into [`PHASES`].
    phase: AtomicU8,
    /// When B was killed (monotonic ns; 0: not yet).
    kill_ns: AtomicU64,
    /// Between the kill and the last resume.
    storm: AtomicBool,
    /// B clients that have every room back.
    resumed: AtomicU64,
    /// When the last of them did.
    resumed_last_ns: AtomicU64,
    /// Rejoins with success after the kill.
    rejoins: AtomicU64,
    /// Rejoins reported failed.
    rejoin_failed: AtomicU64,
    /// Rejoins with an incomplete backlog.
    backlog_incomplete: AtomicU64,
    /// Rejoins with a sequence reset.
    sequence_reset: AtomicU64,
    /// Messages delivered.
    received: AtomicU64,
    /// Presence frames.
    presence: AtomicU64,
    /// Sessions that ended.
    disconnects: AtomicU64,
    /// Messages sent, acknowledged, failed.
    sent: AtomicU64,
    /// Sends acknowledged.
    acked: AtomicU64,
    /// Sends refused or failed.
    failed: AtomicU64,
    /// Per room: the highest sequence the sender had acknowledged.
    last_acked: Vec<AtomicU64>,
    /// Latency to A's clients: whole run, and during the storm.
    latency_a: Mutex<(Hist, Hist)>,
    /// Latency to B's clients.
    latency_b: Mutex<Hist>,
}

/// Room `room-000123`'s index, 123.
fn room_index(name: &str) -> Option<u64> {
    name.strip_prefix("room-")?.parse().ok()
}

/// Client `i`'s events. `k`: its rooms; `on_b`: whether it is B's.
async fn receive(
    shared: Arc<Shared>,
    log: Arc<Mutex<ClientLog>>,
    k: usize,
    on_b: bool,
    mut events: Events,
) {
    while let Some(event) = events.next().await {
        match event {
            Event::Message(m) => {
                let now = now_ns();
                shared.received.fetch_add(1, Relaxed);
                if let Some((_, _, sent)) = schedule::parse_message_id(&m.client_message_id) {
                    let ms = ms_between(sent, now);
                    if on_b {
                        lock(&shared.latency_b).record(ms);
                    } else {
                        let mut h = lock(&shared.latency_a);
                        h.0.record(ms);
                        if shared.storm.load(Relaxed) {
                            h.1.record(ms);
                        }
                    }
                }
                if let Some(r) = room_index(&m.room) {
                    lock(&log).rooms.entry(r).or_default().1.push(m.sequence);
                }
            }
            Event::Connected(_) if shared.kill_ns.load(Relaxed) > 0 => {
                let mut log = lock(&log);
                log.reconnected = true;
                log.rejoined.clear();
            }
            Event::Rejoined { room, result } => match result {
                Ok(j) => {
                    shared.rejoins.fetch_add(1, Relaxed);
                    if j.backlog_incomplete {
                        shared.backlog_incomplete.fetch_add(1, Relaxed);
                    }
                    if j.sequence_reset {
                        shared.sequence_reset.fetch_add(1, Relaxed);
                    }
                    let mut log = lock(&log);
                    if let Some(r) = room_index(&room)
                        && log.reconnected
                    {
                        log.rejoined.insert(r);
                    }
                    if log.reconnected && !log.resumed && log.rejoined.len() >= k {
                        log.resumed = true;
                        shared.resumed.fetch_add(1, Relaxed);
                        shared.resumed_last_ns.fetch_max(now_ns(), Relaxed);
                    }
                }
                Err(_) => {
                    shared.rejoin_failed.fetch_add(1, Relaxed);
                }
            },
            Event::Disconnected { .. } => {
                shared.disconnects.fetch_add(1, Relaxed);
            }
            e if is_presence(&e) => {
                shared.presence.fetch_add(1, Relaxed);
            }
            _ => {}
        }
    }
}

/// One line a second on stderr.
async fn progress(shared: Arc<Shared>, tag: String) {
    every_second(|| {
        format!(
            "{tag} {} sent={} acked={} failed={} received={} disconnects={} rejoins={} resumed={} presence={}",
            PHASES
                .get(usize::from(shared.phase.load(Relaxed)))
                .unwrap_or(&"?"),
            shared.sent.load(Relaxed),
            shared.acked.load(Relaxed),
            shared.failed.load(Relaxed),
            shared.received.load(Relaxed),
            shared.disconnects.load(Relaxed),
            shared.rejoins.load(Relaxed),
            shared.resumed.load(Relaxed),
            shared.presence.load(Relaxed),
        )
    })
    .await
}

/// Runs the restart storm; its report has `error` set if it stopped.
pub async fn run(args: RestartArgs) -> RestartReport {
    let started = Instant::now();
    let mut report = RestartReport {
        workload: "storm-restart".into(),
        label: args.common.label.clone(),
        driver: "chat-client".into(),
        time_utc: now_utc(),
        params: RestartParams {
            clients: args.clients,
            rooms_per_client: args.rooms_per_client,
            rooms: args.rooms,
            members_per_room: r3(
                args.clients as f64 * args.rooms_per_client as f64 / args.rooms.max(1) as f64
            ),
            senders: args.senders,
            rate: args.rate,
            kill_after_s: args.kill_after,
            after_s: args.after,
            urls: Vec::new(),
        },
        ..RestartReport::default()
    };
    let shared = Arc::new(Shared {
        last_acked: (0..args.rooms).map(|_| AtomicU64::new(0)).collect(),
        ..Shared::default()
    });
    let logs: Vec<Arc<Mutex<ClientLog>>> = (0..args.clients).map(|_| Arc::default()).collect();
    let progress = tokio::spawn(progress(
        shared.clone(),
        format!("[chat-bench:{}]", args.common.label),
    ));
    let mut fleet = Fleet::default();
    if let Err(e) = execute(&args, &shared, &logs, &mut fleet, &mut report).await {
        eprintln!("[chat-bench] ERROR {e:#}");
        report.error = Some(format!("{e:#}"));
    }
    progress.abort();
    drop(fleet);
    report.total_wall_s = r3(started.elapsed().as_secs_f64());
    report
}

/// The clients and the senders; both closed when dropped.
#[derive(Default)]
struct Fleet {
    /// The N clients.
    clients: Connected,
    /// The senders on A.
    senders: Connected,
}

/// The moments of the storm (monotonic ns).
#[derive(Default)]
struct Moments {
    /// B killed.
    kill: u64,
    /// B ready again.
    ready: Option<u64>,
    /// The last B client resumed.
    resumed: Option<u64>,
}

/// The phases in order, filling the report as they go.
async fn execute(
    args: &RestartArgs,
    shared: &Arc<Shared>,
    logs: &[Arc<Mutex<ClientLog>>],
    fleet: &mut Fleet,
    report: &mut RestartReport,
) -> anyhow::Result<()> {
    let c = args.common.resolve()?;
    report.params.urls = c.urls.clone();
    check_shape(args.clients, args.rooms_per_client, args.rooms)?;
    if c.urls.len() != 2 || c.server_pids.len() != 2 {
        bail!("storm-restart needs two instances: --urls A,B and --server-pids A,B");
    }
    if args.restart_cmd.trim().is_empty() {
        bail!("--restart-cmd is required: the command that starts instance B again");
    }
    if args.senders == 0 || args.rate <= 0.0 {
        bail!("--senders and --rate must be positive");
    }
    connect_and_join(args, &c, shared, logs, fleet, report).await?;

    shared.phase.store(2, Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before_a = Scrape::fetch(&c.urls[0]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let sender = tokio::spawn(send_loop(
        args.clone(),
        fleet.senders.clients.clone(),
        shared.clone(),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::try_from_secs_f64(args.kill_after).unwrap_or_default()).await;

    shared.phase.store(3, Relaxed);
    let (moments, b_ready_scrape, new_pid) = storm(args, &c, shared, report).await;
    let outcome = record_storm(&c, shared, &moments, report, new_pid);

    shared.phase.store(4, Relaxed);
    tokio::time::sleep(Duration::try_from_secs_f64(args.after).unwrap_or_default()).await;
    stop.store(true, Relaxed);
    let _ = sender.await;
    shared.phase.store(5, Relaxed);
    drain(args, shared, logs).await;

    let end = [
        Scrape::fetch(&c.urls[0]).await,
        Scrape::fetch(&c.urls[1]).await,
    ];
    report.counters = ServerCounters::between(&[before_a, b_ready_scrape], &end, report.rejoins);
    record_deliveries(shared, logs, report);
    let pids: Vec<u32> = std::iter::once(c.server_pids[0]).chain(new_pid).collect();
    report.servers = servers_end(&pids);
    report.server_rss_mb_end_total = rss_total(&report.servers);
    report.slow_statements = slow_statements(&c.server_logs);
    outcome
}

/// Connects the clients (alternating A, B) and the senders (on A), and
/// joins each to its rooms.
async fn connect_and_join(
    args: &RestartArgs,
    c: &Common,
    shared: &Arc<Shared>,
    logs: &[Arc<Mutex<ClientLog>>],
    fleet: &mut Fleet,
    report: &mut RestartReport,
) -> anyhow::Result<()> {
    let n = usize::try_from(args.clients)?;
    let k = usize::try_from(args.rooms_per_client)?;
    let request_timeout = Duration::try_from_secs_f64(args.request_timeout)
        .map_err(|_| anyhow!("bad --request-timeout"))?;
    let config = |mut cfg: chat_client::ClientConfig| {
        cfg.request_timeout = request_timeout;
        cfg
    };
    eprintln!(
        "[chat-bench] storm-restart: connecting {n} clients and {} senders",
        args.senders
    );
    let urls = c.urls.clone();
    let on_events =
        |i: usize, events: Events| receive(shared.clone(), logs[i].clone(), k, i % 2 == 1, events);
    fleet.clients = connect_all(
        n,
        |i| urls[i % 2].clone(),
        |i| format!("storm-{i}"),
        config,
        c,
        on_events,
    )
    .await?;
    let senders = usize::try_from(args.senders)?;
    fleet.senders = connect_all(
        senders,
        |_| urls[0].clone(),
        |s| format!("sender-{s}"),
        config,
        c,
        |_, events| drain_events(events),
    )
    .await?;
    report.connections = fleet.clients.count() + fleet.senders.count();
    report.connect_failed = fleet.clients.failed + fleet.senders.failed;
    report.connect_errors = fleet.clients.errors.clone();
    for (e, n) in &fleet.senders.errors {
        *report.connect_errors.entry(e.clone()).or_default() += n;
    }
    report.connect_s = fleet.clients.seconds + fleet.senders.seconds;
    report.b_clients = fleet
        .clients
        .clients
        .iter()
        .enumerate()
        .filter(|(i, c)| i % 2 == 1 && c.is_some())
        .count() as u64;
    eprintln!(
        "[chat-bench] connected {} in {:.2}s; joining",
        report.connections, report.connect_s
    );

    shared.phase.store(1, Relaxed);
    let started = Instant::now();
    let (kk, r, s) = (args.rooms_per_client, args.rooms, args.senders);
    let mut plan: Vec<JoinPlan> = Vec::new();
    for (i, client) in fleet.clients.clients.iter().enumerate() {
        if let Some(client) = client {
            let rooms = rooms_of(i as u64, kk, r).collect();
            plan.push((client.clone(), rooms, Some(logs[i].clone())));
        }
    }
    for (j, client) in fleet.senders.clients.iter().enumerate() {
        if let Some(client) = client {
            let rooms = (0..r).filter(|room| room % s == j as u64).collect();
            plan.push((client.clone(), rooms, None));
        }
    }
    let joins = futures::stream::iter(plan)
        .map(|(client, rooms, log)| join_rooms(client, rooms, log))
        .buffer_unordered(c.connect_concurrency)
        .collect::<Vec<_>>();
    let results = tokio::time::timeout(c.phase_timeout, joins)
        .await
        .map_err(|_| timed_out("the join phase", c.phase_timeout))?;
    for (ok, failed) in results {
        report.joins += ok;
        report.join_failed += failed;
    }
    report.initial_join_s = r3(started.elapsed().as_secs_f64());
    eprintln!(
        "[chat-bench] {} joins ({} failed) in {:.2}s",
        report.joins, report.join_failed, report.initial_join_s
    );
    Ok(())
}

/// One client's joins: the client, its rooms, and its log (none for a
/// sender).
type JoinPlan = (Client, Vec<u64>, Option<Arc<Mutex<ClientLog>>>);

/// Joins `client` to `rooms`, all at once; records each room's latest in
/// `log`. Returns the joins that succeeded and those that failed.
async fn join_rooms(
    client: Client,
    rooms: Vec<u64>,
    log: Option<Arc<Mutex<ClientLog>>>,
) -> (u64, u64) {
    let joins = rooms.iter().map(|&r| {
        let client = client.clone();
        async move { (r, client.join(&room_name(r)).await) }
    });
    let (mut ok, mut failed) = (0, 0);
    for (r, result) in futures::future::join_all(joins).await {
        match result {
            Ok(j) => {
                ok += 1;
                if let Some(log) = &log {
                    lock(log).rooms.entry(r).or_default().0 = Some(j.latest_sequence);
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("[chat-bench] join failed: {e}");
            }
        }
    }
    (ok, failed)
}

/// A sender's events: not measured, only drained.
async fn drain_events(mut events: Events) {
    while events.next().await.is_some() {}
}

/// Sends at `--rate` round-robin over the rooms (room r by sender
/// r mod S) until `stop`; every acknowledgement raises the room's last
/// acknowledged sequence.
async fn send_loop(
    args: RestartArgs,
    senders: Vec<Option<Client>>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
) {
    let interval_ns = (1e9 / args.rate) as u64;
    let t0 = now_ns();
    let mut k: u64 = 0;
    while !stop.load(Relaxed) {
        let r = k % args.rooms;
        let s = r % args.senders;
        if let Some(Some(client)) = senders.get(s as usize) {
            let id = schedule::message_id(s, k, now_ns());
            let (client, shared) = (client.clone(), shared.clone());
            shared.sent.fetch_add(1, Relaxed);
            tokio::spawn(async move {
                match client.send_with_id(&room_name(r), &id, "storm").await {
                    Ok(res) => {
                        shared.acked.fetch_add(1, Relaxed);
                        shared.last_acked[r as usize].fetch_max(res.sequence, Relaxed);
                    }
                    Err(_) => {
                        shared.failed.fetch_add(1, Relaxed);
                    }
                }
            });
        }
        k += 1;
        let due = t0 + k * interval_ns;
        tokio::time::sleep(Duration::from_nanos(due.saturating_sub(now_ns()))).await;
    }
}

/// Kills B, restarts it, waits until it is ready and every B client has
/// resumed. Returns the moments, B's scrape at ready, and B's new pid.
async fn storm(
    args: &RestartArgs,
    c: &Common,
    shared: &Arc<Shared>,
    report: &mut RestartReport,
) -> (Moments, Option<Scrape>, Option<u32>) {
    let victim = args.kill_pid.unwrap_or(c.server_pids[1]);
    report.killed_pid = Some(victim);
    let mut m = Moments::default();
    let cpu_a0 = cpu_now(&c.server_pids[..1]);
    eprintln!("[chat-bench] killing B (pid {victim})");
    let killed = tokio::process::Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status()
        .await;
    m.kill = now_ns();
    report.presence_events_before_kill = shared.presence.load(Relaxed);
    shared.kill_ns.store(m.kill, Relaxed);
    shared.storm.store(true, Relaxed);
    if !killed.is_ok_and(|s| s.success()) {
        eprintln!("[chat-bench] kill -KILL {victim} failed");
    }
    wait_dead(victim, &c.urls[1], Duration::from_secs(10)).await;
    let new_pid = restart(args, c).await;
    let ready = wait_ready(&c.urls[1], new_pid, c.phase_timeout).await;
    m.ready = ready.then(now_ns);
    let b_scrape = Scrape::fetch(&c.urls[1]).await;
    let cpu_b0 = new_pid.map(|p| cpu_now(&[p])).unwrap_or_default();
    eprintln!(
        "[chat-bench] B {} (pid {:?}) after {:.2} s; waiting for {} clients to resume",
        if ready { "ready" } else { "NOT ready" },
        new_pid,
        ms_between(m.kill, now_ns()) / 1000.0,
        report.b_clients
    );
    let deadline = Instant::now() + c.phase_timeout;
    while shared.resumed.load(Relaxed) < report.b_clients && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if shared.resumed.load(Relaxed) >= report.b_clients {
        m.resumed = Some(shared.resumed_last_ns.load(Relaxed).max(m.kill));
    }
    shared.storm.store(false, Relaxed);
    let window = |from: u64| Duration::from_nanos(now_ns().saturating_sub(from));
    let cpu_a = CpuOut::between(&cpu_a0, &cpu_now(&c.server_pids[..1]), window(m.kill));
    let cpu_b = match (new_pid, m.ready) {
        (Some(p), Some(ready)) => CpuOut::between(&cpu_b0, &cpu_now(&[p]), window(ready)),
        _ => CpuOut::default(),
    };
    report.server_cpu_storm = cpu_a.plus(&cpu_b);
    (m, b_scrape, new_pid)
}

/// Whether process `pid` is running (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(')')
            .is_some_and(|(_, s)| s.trim_start().starts_with('Z'))
    })
}

/// Waits until `pid` is gone (or a zombie) and nothing listens at `url`
/// any more (a zombie's other threads may still hold its listening
/// socket, and the restarted instance could not bind), at most `limit`.
async fn wait_dead(pid: u32, url: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    let authority = url.strip_prefix("http://").unwrap_or(url).to_string();
    while Instant::now() < deadline {
        let listening = tokio::net::TcpStream::connect(&authority).await.is_ok();
        if !alive(pid) && !listening {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs `--restart-cmd`; returns B's new pid from `--restart-pid-file`.
async fn restart(args: &RestartArgs, c: &Common) -> Option<u32> {
    eprintln!("[chat-bench] restarting B: {}", args.restart_cmd);
    if !args.restart_pid_file.is_empty() {
        // A file left from an earlier run must not be taken for B's.
        let _ = std::fs::remove_file(&args.restart_pid_file);
    }
    let run = tokio::process::Command::new("sh")
        .args(["-c", &args.restart_cmd])
        .kill_on_drop(true)
        .status();
    match tokio::time::timeout(c.phase_timeout, run).await {
        Ok(Ok(s)) if s.success() => {}
        other => eprintln!("[chat-bench] the restart command failed: {other:?}"),
    }
    if args.restart_pid_file.is_empty() {
        return None;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(pid) = std::fs::read_to_string(&args.restart_pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return Some(pid);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Polls `url`'s `/health/ready` until it answers 200, at most `limit`;
/// gives up as soon as the process `pid` (when known) has ended.
async fn wait_ready(url: &str, pid: Option<u32>, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if pid.is_some_and(|p| !alive(p)) {
            eprintln!("[chat-bench] the restarted B (pid {pid:?}) has ended");
            return false;
        }
        if let Some((200, _)) = prom::get(url, "/health/ready", Duration::from_secs(1)).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// The storm's fields of the report; an error if B did not come back or
/// its clients did not resume.
fn record_storm(
    c: &Common,
    shared: &Shared,
    m: &Moments,
    report: &mut RestartReport,
    new_pid: Option<u32>,
) -> anyhow::Result<()> {
    let s = |from: u64, to: u64| Some(r3(ms_between(from, to) / 1000.0));
    report.restarted_pid = new_pid;
    report.restart_ready_s = m.ready.and_then(|r| s(m.kill, r));
    report.resume_s = m.resumed.and_then(|r| s(m.kill, r));
    report.resume_after_ready_s = m.ready.zip(m.resumed).and_then(|(a, b)| s(a, b));
    report.clients_resumed = shared.resumed.load(Relaxed);
    report.rejoins = shared.rejoins.load(Relaxed);
    report.rejoin_failed = shared.rejoin_failed.load(Relaxed);
    report.backlog_incomplete = shared.backlog_incomplete.load(Relaxed);
    report.sequence_reset = shared.sequence_reset.load(Relaxed);
    report.cpu_us_per_join = report.server_cpu_storm.per(report.rejoins);
    eprintln!(
        "[chat-bench] ready after {:?} s, all resumed after {:?} s ({} rejoins)",
        report.restart_ready_s, report.resume_s, report.rejoins
    );
    if m.ready.is_none() {
        return Err(anyhow!(
            "instance B ({}) did not become ready again",
            c.urls[1]
        ));
    }
    if m.resumed.is_none() {
        return Err(timed_out("the resume", c.phase_timeout)).context(format!(
            "{} of {} B clients resumed",
            report.clients_resumed, report.b_clients
        ));
    }
    Ok(())
}

/// Every client's rooms, checked against the last acknowledged sequences:
/// A's clients, then B's.
fn check_all(shared: &Shared, logs: &[Arc<Mutex<ClientLog>>]) -> [SideCheck; 2] {
    let mut sides = [SideCheck::default(), SideCheck::default()];
    for (i, log) in logs.iter().enumerate() {
        let log = lock(log);
        if log.rooms.is_empty() {
            continue;
        }
        let side = &mut sides[i % 2];
        side.clients += 1;
        for (&r, (after, seen)) in &log.rooms {
            let last = shared.last_acked[r as usize].load(Relaxed);
            side.check.add(sequence::check(*after, last, seen));
        }
    }
    sides
}

/// Waits (at most `--drain` s) until every send is answered and every
/// client has every acknowledged sequence.
async fn drain(args: &RestartArgs, shared: &Shared, logs: &[Arc<Mutex<ClientLog>>]) {
    let deadline = Instant::now() + Duration::try_from_secs_f64(args.drain).unwrap_or_default();
    while Instant::now() < deadline {
        let answered = shared.acked.load(Relaxed) + shared.failed.load(Relaxed);
        if answered >= shared.sent.load(Relaxed)
            && check_all(shared, logs).iter().all(|s| s.check.lost == 0)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The delivery and check fields of the report.
fn record_deliveries(shared: &Shared, logs: &[Arc<Mutex<ClientLog>>], report: &mut RestartReport) {
    let [a, b] = check_all(shared, logs);
    let mut all = a.check;
    all.add(b.check);
    report.lost = all.lost;
    report.duplicated = all.duplicated;
    report.clients_checked = a.clients + b.clients;
    report.check_a = a;
    report.check_b = b;
    let (lat, storm) = {
        let h = lock(&shared.latency_a);
        (h.0.summary(), h.1.summary())
    };
    report.live = RestartLive {
        sent: shared.sent.load(Relaxed),
        acked: shared.acked.load(Relaxed),
        failed: shared.failed.load(Relaxed),
        deliveries_expected: all.expected,
        deliveries_received: all.received(),
        delivery_ratio: (all.expected > 0)
            .then(|| (all.received() as f64 / all.expected as f64 * 1e6).round() / 1e6),
        latency_ms: lat,
        latency_storm_ms: storm,
        latency_b_ms: lock(&shared.latency_b).summary(),
    };
    report.presence_events_received = shared
        .presence
        .load(Relaxed)
        .saturating_sub(report.presence_events_before_kill);
    report.disconnects = shared.disconnects.load(Relaxed);
}
