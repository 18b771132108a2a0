//! Running one workload, step by step as the peer's "Workload definition":
//! connect every client (bounded concurrency, per-connection timeout, no
//! reconnects), join each to its room, settle, send on the open-loop
//! schedule without waiting for acknowledgements, count every delivery in
//! the window t0 … end of drain, and snapshot `/proc` before connecting,
//! after settling and after the drain.

use crate::args::Params;
use crate::clock::{self, ms_between, now_ns};
use crate::metrics::{Hist, r3};
use crate::procstat::{self, MachineCpu, ProcSnap};
use crate::raw::{self, RawClient};
use crate::report::{
    BrokerOut, DelayOut, LoadgenOut, MachineOut, ParamsOut, Report, ServerOut, TypingOut, mb,
    now_utc,
};
use crate::schedule::{self, Plan};
use crate::ws::WsClient;
use anyhow::{Context, anyhow};
use chat_client::{Client, ClientConfig, Event, Events, proto::MessageEvent};
use chat_util::lock;
use futures::StreamExt;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Receivers record into this many histogram shards (by client index), so
/// a thousand receiving tasks rarely wait on one lock.
const SHARDS: usize = 32;

/// Delivery latencies from the actual and from the scheduled send time.
#[derive(Default)]
struct RecvHists {
    /// From the send time carried in the message id to its delivery.
    actual: Hist,
    /// From the slot the schedule gave the message to its delivery, so a
    /// sender running late shows up as latency (no coordinated omission).
    scheduled: Hist,
}

/// The steps of a run, in order; the progress line names the current one.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Opening every client's connection.
    Connect,
    /// Joining each connected client to its room.
    Join,
    /// Idle for `settle` seconds, all joined.
    Settle,
    /// Sending on the open-loop schedule.
    Run,
    /// Waiting for the last deliveries.
    Drain,
}

impl Phase {
    /// Every phase, indexed by its `u8` value.
    const ALL: [Phase; 5] = [
        Phase::Connect,
        Phase::Join,
        Phase::Settle,
        Phase::Run,
        Phase::Drain,
    ];

    /// The phase stored as `value`, if any.
    fn from_u8(value: u8) -> Option<Phase> {
        Phase::ALL.get(usize::from(value)).copied()
    }

    /// Its name on the progress line.
    fn name(self) -> &'static str {
        match self {
            Phase::Connect => "connect",
            Phase::Join => "join",
            Phase::Settle => "settle",
            Phase::Run => "run",
            Phase::Drain => "drain",
        }
    }
}

/// State shared by the senders, the receivers and the progress line.
struct Shared {
    /// Who sends what when; maps a delivered message back to its index.
    plan: Plan,
    /// Whether deliveries and timer delays count (from t0 to the drain's end).
    running: AtomicBool,
    /// The schedule's origin (monotonic ns), set when the run phase starts.
    t0_ns: AtomicU64,
    /// The current [`Phase`] as its `u8`; see [`Shared::enter`].
    phase: AtomicU8,
    /// Clients connected so far (progress line).
    connected: AtomicU64,
    /// Clients joined so far (progress line).
    joined: AtomicU64,
    /// Messages sent so far.
    sent: AtomicU64,
    /// Sends acknowledged with success.
    acks_ok: AtomicU64,
    /// Sends answered with an error (or failed).
    acks_err: AtomicU64,
    /// Deliveries counted while running.
    received: AtomicU64,
    /// Deliveries whose id was not one of this run's messages.
    bad: AtomicU64,
    /// Clients whose connection ended during the run.
    disconnects: AtomicU64,
    /// When the last delivery arrived (monotonic ns), the end of the window.
    last_recv_ns: AtomicU64,
    /// Deliveries counted per message index `k`.
    per_message: Vec<AtomicU32>,
    /// Whether message `k` was acknowledged.
    acked: Vec<AtomicBool>,
    /// Delivery latencies, [`SHARDS`] shards by client index.
    recv: Vec<Mutex<RecvHists>>,
    /// Send-to-acknowledgement round trips.
    ack_rtt: Mutex<Hist>,
    /// Typing announcements made (`--typing-rate`).
    typing_sent: AtomicU64,
    /// Typing announcements accepted.
    typing_ok: AtomicU64,
    /// Typing announcements refused or failed.
    typing_refused: AtomicU64,
    /// Typing events delivered while running.
    typing_received: AtomicU64,
}

impl Shared {
    fn new(plan: Plan) -> Shared {
        let m = usize::try_from(plan.messages()).unwrap_or(0);
        Shared {
            plan,
            running: AtomicBool::new(false),
            t0_ns: AtomicU64::new(0),
            phase: AtomicU8::new(Phase::Connect as u8),
            connected: AtomicU64::new(0),
            joined: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            acks_ok: AtomicU64::new(0),
            acks_err: AtomicU64::new(0),
            received: AtomicU64::new(0),
            bad: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            last_recv_ns: AtomicU64::new(0),
            per_message: (0..m).map(|_| AtomicU32::new(0)).collect(),
            acked: (0..m).map(|_| AtomicBool::new(false)).collect(),
            recv: (0..SHARDS).map(|_| Mutex::default()).collect(),
            ack_rtt: Mutex::default(),
            typing_sent: AtomicU64::new(0),
            typing_ok: AtomicU64::new(0),
            typing_refused: AtomicU64::new(0),
            typing_received: AtomicU64::new(0),
        }
    }

    /// Moves the run (and the progress line) to `phase`.
    fn enter(&self, phase: Phase) {
        self.phase.store(phase as u8, Relaxed);
    }

    /// The phase the run is in (`None` only if the stored byte is not one).
    fn phase(&self) -> Option<Phase> {
        Phase::from_u8(self.phase.load(Relaxed))
    }

    /// A typing event reached a client.
    fn on_typing(&self) {
        if self.running.load(Relaxed) {
            self.typing_received.fetch_add(1, Relaxed);
        }
    }

    /// One delivery to client `i`.
    fn on_message(&self, i: usize, m: &MessageEvent) {
        let now = now_ns();
        if !self.running.load(Relaxed) {
            return;
        }
        let parsed = schedule::parse_message_id(&m.client_message_id)
            .map(|(s, seq, sent)| (self.plan.index(s, seq), sent))
            .and_then(|(k, sent)| Some((usize::try_from(k).ok()?, k, sent)))
            .filter(|(k, _, _)| *k < self.per_message.len());
        let Some((k, k64, sent_ns)) = parsed else {
            self.bad.fetch_add(1, Relaxed);
            return;
        };
        let due = self.t0_ns.load(Relaxed) + self.plan.message(k64).2;
        {
            let mut h = lock(&self.recv[i % SHARDS]);
            h.actual.record(ms_between(sent_ns, now));
            h.scheduled.record(ms_between(due, now));
        }
        self.per_message[k].fetch_add(1, Relaxed);
        self.received.fetch_add(1, Relaxed);
        self.last_recv_ns.fetch_max(now, Relaxed);
    }
}

/// Drains one client's events: deliveries and disconnects.
async fn receive(shared: Arc<Shared>, i: usize, mut events: Events) {
    while let Some(event) = events.next().await {
        match event {
            Event::Message(m) => shared.on_message(i, &m),
            Event::Typing(_) => shared.on_typing(),
            Event::Disconnected { .. } => {
                shared.disconnects.fetch_add(1, Relaxed);
            }
            _ => {}
        }
    }
}

/// One connected client, through one of the drivers.
#[derive(Clone)]
enum Driver {
    /// Through `chat_client::Client`, as an application would.
    Library(Client),
    /// Through the leaner raw gRPC driver (`--driver raw`).
    Raw(RawClient),
    /// Through the WebSocket transport (`--driver ws`).
    Ws(WsClient),
}

impl Driver {
    async fn join(&self, room: &str) -> Result<(), String> {
        match self {
            Driver::Library(c) => c.join(room).await.map(drop).map_err(|e| e.to_string()),
            Driver::Raw(c) => c.join(room).await,
            Driver::Ws(c) => c.join(room).await,
        }
    }

    async fn send_with_id(&self, room: &str, id: &str, text: &str) -> Result<(), String> {
        match self {
            Driver::Library(c) => c
                .send_with_id(room, id, text)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Driver::Raw(c) => c.send_with_id(room, id, text).await,
            Driver::Ws(c) => c.send_with_id(room, id, text).await,
        }
    }

    async fn typing(&self, room: &str) -> Result<(), String> {
        match self {
            Driver::Library(c) => c.typing(room, true).await.map_err(|e| e.to_string()),
            Driver::Raw(c) => c.typing(room).await,
            Driver::Ws(c) => c.typing(room).await,
        }
    }

    fn close(&self) {
        match self {
            Driver::Library(c) => c.close(),
            Driver::Raw(c) => c.close(),
            Driver::Ws(c) => c.close(),
        }
    }
}

/// Where a lean driver's reading task (`raw`, `ws`) reports client `i`'s
/// deliveries.
struct RawSink {
    /// Where deliveries and disconnects are counted.
    shared: Arc<Shared>,
    /// The client's index (its histogram shard).
    i: usize,
}

impl raw::Sink for RawSink {
    fn message(&self, m: &MessageEvent) {
        self.shared.on_message(self.i, m);
    }

    fn typing(&self) {
        self.shared.on_typing();
    }

    fn disconnected(&self) {
        self.shared.disconnects.fetch_add(1, Relaxed);
    }
}

/// Connects client `i` to `url` with the chosen driver.
async fn connect_one(
    driver: &str,
    url: String,
    i: usize,
    timeout: Duration,
    shared: Arc<Shared>,
) -> Result<Driver, String> {
    let name = format!("bench-{i}");
    match driver {
        "raw" => {
            let sink = Arc::new(RawSink { shared, i });
            return RawClient::connect(&url, &name, timeout, sink)
                .await
                .map(Driver::Raw);
        }
        "ws" => {
            let sink = Arc::new(RawSink { shared, i });
            return WsClient::connect(&url, &name, timeout, sink)
                .await
                .map(Driver::Ws);
        }
        _ => {}
    }
    let mut config = ClientConfig::new(url, name);
    config.reconnect = false;
    config.connect_timeout = timeout;
    config.request_timeout = timeout;
    let (client, events) = Client::connect(config);
    tokio::spawn(receive(shared, i, events));
    match client.wait_connected(timeout).await {
        Ok(_) => Ok(Driver::Library(client)),
        Err(e) => {
            client.close();
            Err(e.to_string())
        }
    }
}

/// Every client of the run; closed when dropped, whatever happened.
#[derive(Default)]
struct Fleet {
    /// Client `i`, or `None` where its connection failed.
    clients: Vec<Option<Driver>>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for c in self.clients.iter().flatten() {
            c.close();
        }
    }
}

/// `/proc` readings at one moment.
struct Snap {
    /// When (monotonic ns), for the run's wall time.
    t_ns: u64,
    /// Each server process, in `server_pids` order.
    servers: Vec<ProcSnap>,
    /// The broker process, when its pid was given.
    redis: Option<ProcSnap>,
    /// This process.
    loadgen: ProcSnap,
    /// The whole machine's CPU counters, where readable.
    machine: Option<MachineCpu>,
}

/// Reads every process of the run and the machine now.
fn snap(p: &Params) -> Snap {
    Snap {
        t_ns: now_ns(),
        servers: p
            .server_pids
            .iter()
            .map(|pid| procstat::snap(&pid.to_string()))
            .collect(),
        redis: p.redis_pid.map(|pid| procstat::snap(&pid.to_string())),
        loadgen: procstat::snap("self"),
        machine: procstat::machine(),
    }
}

fn cpu_delta(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(r3(b? - a?))
}

fn sum(values: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    let mut t = 0.0;
    for v in values {
        t += v?;
    }
    Some(r3(t))
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX)
}

/// Runs the workload; returns its report (with `error` set if it stopped).
pub async fn run(params: Params) -> Report {
    let started = Instant::now();
    let plan = params.plan;
    let mut report = Report {
        label: params.label.clone(),
        driver: params.driver.clone(),
        time_utc: now_utc(),
        params: ParamsOut {
            rooms: plan.rooms,
            clients_per_room: plan.cpr,
            senders_per_room: plan.spr,
            rate_per_sender: plan.rate,
            duration_s: params.duration,
            text_bytes: params.text_bytes,
            drain_s: params.drain,
            settle_s: params.settle,
            workers: 1,
            urls: params.urls.clone(),
        },
        ..Report::default()
    };
    let shared = Arc::new(Shared::new(plan));
    let progress = tokio::spawn(progress(shared.clone(), params.label.clone()));
    let mut fleet = Fleet::default();
    if let Err(e) = execute(&params, &shared, &mut fleet, &mut report).await {
        eprintln!("[chat-bench] ERROR {e:#}");
        report.error = Some(format!("{e:#}"));
    }
    progress.abort();
    drop(fleet);
    report.total_wall_s = (started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    report
}

async fn connect_phase(
    p: &Params,
    shared: &Arc<Shared>,
    fleet: &mut Fleet,
    report: &mut Report,
) -> anyhow::Result<()> {
    let n = usize::try_from(p.plan.clients()).context("too many clients")?;
    let timeout = secs(p.connect_timeout);
    eprintln!(
        "[chat-bench] connecting {n} clients to {}",
        p.urls.join(" ")
    );
    let started = Instant::now();
    let attempts = futures::stream::iter(0..n)
        .map(|i| {
            let url = p.urls[i % p.urls.len()].clone();
            let shared = shared.clone();
            let driver = p.driver.clone();
            async move {
                let r = connect_one(&driver, url, i, timeout, shared.clone()).await;
                if r.is_ok() {
                    shared.connected.fetch_add(1, Relaxed);
                }
                (i, r)
            }
        })
        .buffer_unordered(p.connect_concurrency)
        .collect::<Vec<_>>();
    let results = tokio::time::timeout(secs(p.phase_timeout), attempts)
        .await
        .map_err(|_| anyhow!("connect phase timed out"))?;
    fleet.clients = (0..n).map(|_| None).collect();
    for (i, r) in results {
        match r {
            Ok(c) => {
                fleet.clients[i] = Some(c);
                report.connections += 1;
            }
            Err(e) => {
                report.connect_failed += 1;
                let key: String = e.chars().take(80).collect();
                *report.connect_errors.entry(key).or_default() += 1;
            }
        }
    }
    report.connect_s = r3(started.elapsed().as_secs_f64());
    eprintln!(
        "[chat-bench] connected {}/{n} in {:.2}s{}",
        report.connections,
        report.connect_s,
        if report.connect_failed > 0 {
            format!(" errors={:?}", report.connect_errors)
        } else {
            String::new()
        }
    );
    Ok(())
}

/// Joins every connected client to its room; returns members per room.
async fn join_phase(
    p: &Params,
    shared: &Arc<Shared>,
    fleet: &Fleet,
    report: &mut Report,
) -> anyhow::Result<Vec<u64>> {
    let started = Instant::now();
    let plan = p.plan;
    let joins = futures::stream::iter(
        fleet
            .clients
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Some((i, c.as_ref()?.clone()))),
    )
    .map(|(i, c)| {
        let shared = shared.clone();
        async move {
            let room = plan.room_of_client(i as u64);
            let r = c.join(&schedule::room_name(room)).await;
            if r.is_ok() {
                shared.joined.fetch_add(1, Relaxed);
            }
            (room, r)
        }
    })
    .buffer_unordered(p.connect_concurrency)
    .collect::<Vec<_>>();
    let results = tokio::time::timeout(secs(p.phase_timeout), joins)
        .await
        .map_err(|_| anyhow!("join phase timed out"))?;
    let mut per_room = vec![0u64; usize::try_from(plan.rooms).context("too many rooms")?];
    for (room, r) in results {
        match r {
            Ok(_) => {
                report.joined += 1;
                per_room[room as usize] += 1;
            }
            Err(e) => {
                report.join_failed += 1;
                eprintln!("[chat-bench] join failed: {e}");
            }
        }
    }
    eprintln!(
        "[chat-bench] joined {} in {:.2}s; settling {}s",
        report.joined,
        started.elapsed().as_secs_f64(),
        p.settle
    );
    Ok(per_room)
}

/// Sends every message on the open-loop schedule from `t0_ns`; never
/// waits for an acknowledgement. Returns messages sent per room.
async fn send_phase(
    p: &Params,
    shared: &Arc<Shared>,
    fleet: &Fleet,
    t0_ns: u64,
    lag: &mut Hist,
) -> Vec<u64> {
    let plan = p.plan;
    let senders: Vec<Option<(Driver, Arc<str>)>> = (0..plan.senders())
        .map(|s| {
            let c = fleet
                .clients
                .get(plan.client_of_sender(s) as usize)?
                .clone()?;
            Some((c, schedule::room_name(plan.room_of_sender(s)).into()))
        })
        .collect();
    let mut sent_per_room = vec![0u64; plan.rooms as usize];
    let total = plan.messages();
    let mut k = 0;
    while k < total {
        let now = now_ns();
        while k < total {
            let (s, seq, due) = plan.message(k);
            let due = t0_ns + due;
            if due > now {
                break;
            }
            if let Some((client, room)) = &senders[s as usize] {
                let ts = now_ns();
                lag.record(ms_between(due, ts));
                let text = schedule::text(s, seq, p.text_bytes);
                let id = schedule::message_id(s, seq, ts);
                let (client, room, acks) = (client.clone(), room.clone(), shared.clone());
                let ki = k as usize;
                tokio::spawn(async move {
                    match client.send_with_id(&room, &id, &text).await {
                        Ok(_) => {
                            let rtt = ms_between(ts, now_ns());
                            acks.acked[ki].store(true, Relaxed);
                            acks.acks_ok.fetch_add(1, Relaxed);
                            lock(&acks.ack_rtt).record(rtt);
                        }
                        Err(_) => {
                            acks.acks_err.fetch_add(1, Relaxed);
                        }
                    }
                });
                shared.sent.fetch_add(1, Relaxed);
                sent_per_room[plan.room_of_sender(s) as usize] += 1;
            }
            k += 1;
        }
        if k < total {
            let next = t0_ns + plan.message(k).2;
            tokio::time::sleep_until(clock::instant_at(next).into()).await;
        }
    }
    sent_per_room
}

/// Every client says it is typing in its room `--typing-rate` times a
/// second through the send window, the clients taking turns evenly; never
/// waits for the replies.
async fn typing_phase(p: Params, shared: Arc<Shared>, typists: Vec<Option<Driver>>, t0_ns: u64) {
    let plan = p.plan;
    let clients = typists.len() as u64;
    let total = (clients as f64 * p.typing_rate * plan.send_window_s()).round() as u64;
    if clients == 0 || total == 0 {
        return;
    }
    let interval_ns = 1e9 / (clients as f64 * p.typing_rate);
    let rooms: Vec<Arc<str>> = (0..plan.rooms)
        .map(|r| schedule::room_name(r).into())
        .collect();
    let due = |k: u64| t0_ns + (k as f64 * interval_ns) as u64;
    let mut k = 0;
    while k < total {
        let now = now_ns();
        while k < total && due(k) <= now {
            let i = k % clients;
            if let Some(client) = &typists[i as usize] {
                let room = rooms[plan.room_of_client(i) as usize].clone();
                let (client, counts) = (client.clone(), shared.clone());
                tokio::spawn(async move {
                    match client.typing(&room).await {
                        Ok(()) => counts.typing_ok.fetch_add(1, Relaxed),
                        Err(_) => counts.typing_refused.fetch_add(1, Relaxed),
                    };
                });
                shared.typing_sent.fetch_add(1, Relaxed);
            }
            k += 1;
        }
        if k < total {
            tokio::time::sleep_until(clock::instant_at(due(k)).into()).await;
        }
    }
}

/// How late a 5 ms timer fires while `running` (load.js's event-loop
/// delay probe, for tokio).
async fn delay_probe(shared: Arc<Shared>, hist: Arc<Mutex<Hist>>) {
    const TICK: Duration = Duration::from_millis(5);
    loop {
        let start = Instant::now();
        tokio::time::sleep(TICK).await;
        let late = start.elapsed().saturating_sub(TICK);
        if shared.running.load(Relaxed) {
            lock(&hist).record(late.as_secs_f64() * 1000.0);
        }
    }
}

/// One line a second on stderr.
async fn progress(shared: Arc<Shared>, label: String) {
    let tag = if label.is_empty() {
        "[chat-bench]".to_string()
    } else {
        format!("[chat-bench:{label}]")
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = 0;
    loop {
        tick.tick().await;
        let received = shared.received.load(Relaxed);
        eprintln!(
            "{tag} {} connected={} joined={} sent={} acked={} errors={} received={} ({}/s) disconnects={}",
            shared.phase().map_or("?", Phase::name),
            shared.connected.load(Relaxed),
            shared.joined.load(Relaxed),
            shared.sent.load(Relaxed),
            shared.acks_ok.load(Relaxed),
            shared.acks_err.load(Relaxed),
            received,
            received - last,
            shared.disconnects.load(Relaxed),
        );
        last = received;
    }
}

/// Runs the phases in order (connect, join, settle, run, drain) with a
/// `/proc` snapshot before connecting, after settling and after the drain,
/// then fills the report from what they counted.
async fn execute(
    p: &Params,
    shared: &Arc<Shared>,
    fleet: &mut Fleet,
    report: &mut Report,
) -> anyhow::Result<()> {
    let baseline = snap(p); // before any client connects
    shared.enter(Phase::Connect);
    connect_phase(p, shared, fleet, report).await?;
    shared.enter(Phase::Join);
    let joined_per_room = join_phase(p, shared, fleet, report).await?;
    shared.enter(Phase::Settle);
    tokio::time::sleep(secs(p.settle)).await;
    let joined = snap(p); // all connected and joined, idle

    let t0 = now_ns() + 100_000_000; // the first send slot, 100 ms from now
    shared.t0_ns.store(t0, Relaxed);
    shared.enter(Phase::Run);
    let sending = run_phase(p, shared, fleet, t0).await;
    shared.enter(Phase::Drain);
    drain_phase(p, shared, &sending).await;
    let end = snap(p);

    record_deliveries(p, shared, &sending, &joined_per_room, report);
    record_resources(p, [&baseline, &joined, &end], report);
    Ok(())
}

/// What the run phase leaves for the drain and the report.
struct Sending {
    /// The schedule's origin (monotonic ns).
    t0_ns: u64,
    /// Messages sent per room, for the deliveries expected.
    sent_per_room: Vec<u64>,
    /// How late each send left against its slot.
    lag: Hist,
    /// The event-loop delay probe's readings.
    delay: Arc<Mutex<Hist>>,
    /// The probe itself, stopped when the drain ends.
    probe: JoinHandle<()>,
}

/// Starts counting (deliveries and the delay probe) and sends every message
/// on the schedule from `t0_ns`.
async fn run_phase(p: &Params, shared: &Arc<Shared>, fleet: &Fleet, t0_ns: u64) -> Sending {
    let plan = p.plan;
    eprintln!(
        "[chat-bench] sending: {} senders x {}/s x {}s = {} msgs, offered {:.0} deliveries/s",
        plan.senders(),
        plan.rate,
        p.duration,
        plan.messages(),
        plan.offered_deliveries_per_s()
    );
    shared.running.store(true, Relaxed);
    let delay = Arc::new(Mutex::new(Hist::new()));
    let probe: JoinHandle<()> = tokio::spawn(delay_probe(shared.clone(), delay.clone()));
    let mut lag = Hist::new();
    let typing = (p.typing_rate > 0.0).then(|| {
        let typists: Vec<Option<Driver>> = fleet.clients.clone();
        tokio::spawn(typing_phase(p.clone(), shared.clone(), typists, t0_ns))
    });
    let sent_per_room = send_phase(p, shared, fleet, t0_ns, &mut lag).await;
    if let Some(typing) = typing {
        let _ = typing.await;
    }
    Sending {
        t0_ns,
        sent_per_room,
        lag,
        delay,
        probe,
    }
}

/// Waits for every planned delivery and every send's answer, or DRAIN
/// seconds after the last send slot, then stops counting.
async fn drain_phase(p: &Params, shared: &Shared, sending: &Sending) {
    let plan = p.plan;
    let planned = plan.clients() * plan.spr * plan.per_sender;
    let send_end = sending.t0_ns + (plan.send_window_s() * 1e9) as u64;
    let deadline = send_end.max(now_ns()) + (p.drain * 1e9) as u64;
    // Every delivery, and every send's answer (the last acknowledgements
    // may come after the last deliveries).
    let pending = || {
        let answered = shared.acks_ok.load(Relaxed) + shared.acks_err.load(Relaxed);
        shared.received.load(Relaxed) < planned || answered < shared.sent.load(Relaxed)
    };
    while pending() && now_ns() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shared.running.store(false, Relaxed);
    sending.probe.abort();
}

/// The report's message, delivery and latency fields, aggregated as
/// load.js does.
fn record_deliveries(
    p: &Params,
    shared: &Shared,
    sending: &Sending,
    joined_per_room: &[u64],
    report: &mut Report,
) {
    let plan = p.plan;
    let mut recv = Hist::new();
    let mut scheduled = Hist::new();
    for shard in &shared.recv {
        let h = lock(shard);
        recv.merge(&h.actual);
        scheduled.merge(&h.scheduled);
    }
    let received = shared.received.load(Relaxed);
    let expected: u64 = sending
        .sent_per_room
        .iter()
        .zip(joined_per_room)
        .map(|(sent, joined)| sent * joined)
        .sum();
    let window_s = delivery_window_s(shared, plan, sending.t0_ns);
    let (incomplete, duplicates) = incomplete_and_duplicates(shared, plan, joined_per_room);

    report.messages_planned = plan.messages();
    report.messages_sent = shared.sent.load(Relaxed);
    report.acks_ok = shared.acks_ok.load(Relaxed);
    report.acks_err = shared.acks_err.load(Relaxed);
    report.deliveries_received = received;
    report.deliveries_expected = expected;
    report.delivery_ratio =
        (expected > 0).then(|| (received as f64 / expected as f64 * 1e6).round() / 1e6);
    report.offered_deliveries_per_s = r3(plan.offered_deliveries_per_s());
    report.deliveries_per_s = if window_s > 0.0 {
        (received as f64 / window_s).round() as u64
    } else {
        0
    };
    report.window_s = r3(window_s);
    report.latency_ms = recv.summary();
    report.ack_rtt_ms = lock(&shared.ack_rtt).summary();
    report.send_lag_ms = sending.lag.summary();
    let d = lock(&sending.delay).summary();
    report.loadgen_event_loop_delay_ms = DelayOut {
        p99: d.p99.unwrap_or(0.0),
        max: d.max.unwrap_or(0.0),
    };
    report.bad_messages = shared.bad.load(Relaxed);
    report.disconnects_during_run = shared.disconnects.load(Relaxed);
    report.latency_from_schedule_ms = scheduled.summary();
    report.messages_unacked = report
        .messages_sent
        .saturating_sub(report.acks_ok + report.acks_err);
    report.messages_incomplete = incomplete;
    report.duplicate_deliveries = duplicates;
    if p.typing_rate > 0.0 {
        let received = shared.typing_received.load(Relaxed);
        report.typing = Some(TypingOut {
            rate_per_client: p.typing_rate,
            sent: shared.typing_sent.load(Relaxed),
            ok: shared.typing_ok.load(Relaxed),
            refused: shared.typing_refused.load(Relaxed),
            received,
            received_per_s: if window_s > 0.0 {
                (received as f64 / window_s).round() as u64
            } else {
                0
            },
        });
    }
}

/// Seconds from t0 to the last delivery, and at least the send window.
fn delivery_window_s(shared: &Shared, plan: Plan, t0_ns: u64) -> f64 {
    let last_recv = shared.last_recv_ns.load(Relaxed);
    plan.send_window_s().max(if last_recv > 0 {
        ms_between(t0_ns, last_recv) / 1000.0
    } else {
        0.0
    })
}

/// Acknowledged messages that reached fewer than their room's members, and
/// deliveries beyond one per member.
fn incomplete_and_duplicates(shared: &Shared, plan: Plan, joined_per_room: &[u64]) -> (u64, u64) {
    let (mut incomplete, mut duplicates) = (0, 0);
    for (k, count) in shared.per_message.iter().enumerate() {
        let (s, _, _) = plan.message(k as u64);
        let members = joined_per_room[plan.room_of_sender(s) as usize];
        let got = u64::from(count.load(Relaxed));
        if shared.acked[k].load(Relaxed) && got < members {
            incomplete += 1;
        }
        duplicates += got.saturating_sub(members);
    }
    (incomplete, duplicates)
}

/// The report's process and machine fields from the three snapshots
/// (before connecting, joined and idle, after the drain).
fn record_resources(p: &Params, snaps: [&Snap; 3], report: &mut Report) {
    record_servers(p, snaps, report);
    let [s0, s1, s2] = snaps;
    report.redis = s0.redis.map(|_| BrokerOut {
        rss_mb_end: mb(s2.redis.and_then(|r| r.mem.rss_kb)),
        cpu_s_run: cpu_delta(
            s1.redis.and_then(|r| r.cpu_s),
            s2.redis.and_then(|r| r.cpu_s),
        ),
    });
    report.loadgen = LoadgenOut {
        processes: 1,
        cpu_s_run: cpu_delta(s1.loadgen.cpu_s, s2.loadgen.cpu_s),
        cpu_s_connect_join: cpu_delta(s0.loadgen.cpu_s, s1.loadgen.cpu_s),
        rss_mb_joined_total: mb(s1.loadgen.mem.rss_kb),
    };
    report.run_wall_s = r3(ms_between(s1.t_ns, s2.t_ns) / 1000.0);
    report.machine = MachineOut {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        busy_pct_run: match (s1.machine, s2.machine) {
            (Some(a), Some(b)) => procstat::busy_pct(a, b),
            _ => None,
        },
    };
}

/// The server processes' fields: memory, CPU over the run (in all, and
/// user and system apart), the totals and the per-delivery figures.
fn record_servers(p: &Params, [s0, s1, s2]: [&Snap; 3], report: &mut Report) {
    let user = |s: &Snap, i: usize| s.servers[i].times.map(|t| t.user_s);
    let sys = |s: &Snap, i: usize| s.servers[i].times.map(|t| t.sys_s);
    report.servers = p
        .server_pids
        .iter()
        .enumerate()
        .map(|(i, pid)| ServerOut {
            pid: *pid,
            rss_mb_baseline: mb(s0.servers[i].mem.rss_kb),
            rss_mb_joined: mb(s1.servers[i].mem.rss_kb),
            rss_mb_end: mb(s2.servers[i].mem.rss_kb),
            hwm_mb: mb(s2.servers[i].mem.hwm_kb),
            cpu_s_run: cpu_delta(s1.servers[i].cpu_s, s2.servers[i].cpu_s),
            cpu_s_connect_join: cpu_delta(s0.servers[i].cpu_s, s1.servers[i].cpu_s),
            cpu_user_s_run: cpu_delta(user(s1, i), user(s2, i)),
            cpu_sys_s_run: cpu_delta(sys(s1, i), sys(s2, i)),
        })
        .collect();
    report.server_rss_mb_joined_total = sum(report.servers.iter().map(|s| s.rss_mb_joined));
    report.server_rss_mb_end_total = sum(report.servers.iter().map(|s| s.rss_mb_end));
    report.server_cpu_s_run_total = sum(report.servers.iter().map(|s| s.cpu_s_run));
    report.server_cpu_user_s_run_total = sum(report.servers.iter().map(|s| s.cpu_user_s_run));
    report.server_cpu_sys_s_run_total = sum(report.servers.iter().map(|s| s.cpu_sys_s_run));
    let rss_delta_kb: Option<i64> = s0
        .servers
        .iter()
        .zip(&s1.servers)
        .map(|(a, b)| Some(b.mem.rss_kb? as i64 - a.mem.rss_kb? as i64))
        .sum();
    report.server_rss_kb_per_connection = match (rss_delta_kb, report.connections) {
        (Some(d), c) if c > 0 => Some((d as f64 / c as f64 * 100.0).round() / 100.0),
        _ => None,
    };
    let received = report.deliveries_received;
    let per_delivery = |cpu: Option<f64>| match cpu {
        Some(cpu) if received > 0 && !p.server_pids.is_empty() => {
            Some((cpu * 1e6 / received as f64 * 100.0).round() / 100.0)
        }
        _ => None,
    };
    report.server_cpu_us_per_delivery = per_delivery(report.server_cpu_s_run_total);
    report.server_cpu_user_us_per_delivery = per_delivery(report.server_cpu_user_s_run_total);
    report.server_cpu_sys_us_per_delivery = per_delivery(report.server_cpu_sys_s_run_total);
}
