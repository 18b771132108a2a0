//! Command line: load.js's options (same names, same environment variables,
//! same defaults), plus `--scenario` to preset one row of the peer's
//! scenario table (run.sh). Precedence: flag, then environment variable,
//! then the scenario's value, then load.js's default. The subcommands are
//! run.sh's helpers that the peer keeps in report.js: the SLO check
//! (`pass`), scenario C's stepping (`step`) and the Markdown tables
//! (`report`).

use crate::schedule::Plan;
use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// The client drivers `--driver` accepts.
pub const DRIVERS: [&str; 3] = ["chat-client", "raw", "ws"];

/// A row of the peer's scenario table (run.sh).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Fan-out: 1 room × 1000 clients, 1 sender at 50 msg/s, 20 s.
    #[value(name = "A")]
    A,
    /// Many rooms: 100 rooms × 10 clients, 2 senders per room at 5 msg/s, 20 s.
    #[value(name = "B")]
    B,
    /// One saturation step: A's shape at `--rate` msg/s (required), 10 s.
    #[value(name = "C")]
    C,
    /// Idle memory: 500 rooms × 10 clients, nobody sends, settle 5 s.
    #[value(name = "D")]
    D,
    /// Idle memory, twice as many: 1000 rooms × 10 clients, settle 5 s.
    #[value(name = "D2x")]
    D2x,
}

/// Preset values of one scenario (`None`: load.js's default, or for C's
/// rate, no default).
struct Preset {
    rooms: u64,
    cpr: u64,
    spr: u64,
    rate: Option<f64>,
    duration: f64,
    settle: Option<f64>,
}

impl Scenario {
    fn preset(self) -> Preset {
        let p = |rooms, cpr, spr, rate, duration, settle| Preset {
            rooms,
            cpr,
            spr,
            rate,
            duration,
            settle,
        };
        match self {
            Scenario::A => p(1, 1000, 1, Some(50.0), 20.0, None),
            Scenario::B => p(100, 10, 2, Some(5.0), 20.0, None),
            Scenario::C => p(1, 1000, 1, None, 10.0, None),
            Scenario::D => p(500, 10, 0, Some(0.0), 0.0, Some(5.0)),
            Scenario::D2x => p(1000, 10, 0, Some(0.0), 0.0, Some(5.0)),
        }
    }

    /// Its label (`A`, `B`, `C-<rate>`, `D`, `D2x`), as the peer's run.sh
    /// names its runs.
    pub fn label(self, rate: f64) -> String {
        match self {
            Scenario::A => "A".into(),
            Scenario::B => "B".into(),
            Scenario::C => format!("C-{rate}"),
            Scenario::D => "D".into(),
            Scenario::D2x => "D2x".into(),
        }
    }
}

/// run.sh's helpers (report.js in the peer's folder).
#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Checks one run's JSON against scenario C's SLO (report.js's `pass`):
    /// prints the run in one line and `pass` or `FAIL: <why>`; exits 0 when
    /// it passes, 1 when it does not.
    Pass {
        /// The run's JSON object; `-` or nothing: read it from stdin.
        json: Option<String>,
    },
    /// Scenario C's stepping: from the `<prefix>-<rate>` runs already in a
    /// results file, prints the next rate to run, or nothing once stepping
    /// is over (then the outcome goes to stderr).
    Step {
        /// Results file, one JSON object per line.
        results: PathBuf,
        /// Label prefix of the steps.
        #[arg(long, default_value = "C")]
        prefix: String,
        /// Rates to step through, msg/s per sender, in order.
        #[arg(long, value_delimiter = ',', default_value = crate::saturation::DEFAULT_RATES)]
        rates: Vec<u64>,
    },
    /// Markdown tables (throughput and latency, connection memory,
    /// saturation, CPU per delivery as user and system time beside the
    /// kernel's floor, diagnostics) from results files.
    Report {
        /// Our results file, one JSON object per line.
        results: PathBuf,
        /// The peer's results file (its run.sh's results.jsonl), shown beside ours.
        #[arg(long)]
        peer: Option<PathBuf>,
        /// Name of the system in our rows.
        #[arg(long, default_value = "chat-server")]
        name: String,
        /// Name of the system in the peer's rows.
        #[arg(long = "peer-name", default_value = "socket.io")]
        peer_name: String,
        /// `loopback-floor`'s results (one JSON object per line), shown
        /// beside the servers' user and system CPU per delivery.
        #[arg(long)]
        floor: Option<PathBuf>,
    },
    /// The join storm: N clients, each in K of R rooms, ask for every
    /// membership at once; time until every join is back, server CPU per
    /// join, presence events, the servers' store and presence counters.
    StormJoin(crate::storm::join::JoinArgs),
    /// The restart storm: instance B is killed and restarted while its
    /// clients sit in many rooms and a sender posts on A; time until every
    /// B client has rejoined, lost and duplicated messages, A's latency.
    StormRestart(crate::storm::restart::RestartArgs),
}

/// The flags, as given.
#[derive(Parser, Debug, Clone, Default)]
#[command(
    name = "chat-bench",
    version,
    about = "Load generator for the chat server (the peer benchmark's load.js workloads)",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// A helper instead of a run.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Preset of the peer's scenario table; explicit flags override it.
    #[arg(long, env = "SCENARIO", ignore_case = true)]
    pub scenario: Option<Scenario>,
    /// Rooms [default: 1].
    #[arg(long, env = "ROOMS")]
    pub rooms: Option<u64>,
    /// Clients per room [default: 10].
    #[arg(long = "clients-per-room", env = "CLIENTS_PER_ROOM")]
    pub clients_per_room: Option<u64>,
    /// Senders per room (the room's first clients) [default: 1].
    #[arg(long = "senders-per-room", env = "SENDERS_PER_ROOM")]
    pub senders_per_room: Option<u64>,
    /// Messages per second per sender [default: 1].
    #[arg(long, env = "RATE")]
    pub rate: Option<f64>,
    /// Seconds of sending [default: 10].
    #[arg(long, env = "DURATION")]
    pub duration: Option<f64>,
    /// Comma-separated server URLs; client i connects to URL i mod U.
    #[arg(long, env = "URLS", default_value = "http://127.0.0.1:5000")]
    pub urls: String,
    /// Comma-separated server process ids (CPU and RSS from /proc).
    #[arg(long = "server-pids", env = "SERVER_PIDS", default_value = "")]
    pub server_pids: String,
    /// The broker's process id (Redis or NATS), if any.
    #[arg(long = "redis-pid", env = "REDIS_PID", default_value = "")]
    pub redis_pid: String,
    /// Bytes of each message's text.
    #[arg(long = "text-bytes", env = "TEXT_BYTES", default_value_t = 64)]
    pub text_bytes: u64,
    /// Longest wait for deliveries after the last send slot, seconds.
    #[arg(long, env = "DRAIN", default_value_t = 5.0)]
    pub drain: f64,
    /// Idle seconds between "all joined" and the first send [default: 1].
    #[arg(long, env = "SETTLE")]
    pub settle: Option<f64>,
    /// Load-generator processes; this tool is one process, only 1 is accepted.
    #[arg(long, env = "WORKERS", default_value_t = 1)]
    pub workers: u64,
    /// Concurrent connection (and join) attempts.
    #[arg(
        long = "connect-concurrency",
        env = "CONNECT_CONCURRENCY",
        default_value_t = 100
    )]
    pub connect_concurrency: u64,
    /// Seconds per connection (and per join).
    #[arg(
        long = "connect-timeout",
        env = "CONNECT_TIMEOUT",
        default_value_t = 20.0
    )]
    pub connect_timeout: f64,
    /// Seconds for the whole connect or join phase.
    #[arg(long = "phase-timeout", env = "PHASE_TIMEOUT", default_value_t = 120.0)]
    pub phase_timeout: f64,
    /// Client driver: `chat-client` (the client library, as an application
    /// would use it), `raw` (the generated gRPC client and one reading task
    /// per connection: less load-generator CPU, like the peer's
    /// `socketio-raw`) or `ws` (the WebSocket transport, `/v1/ws` on the
    /// same URLs, lean like `raw`).
    #[arg(long, env = "DRIVER", default_value = "chat-client")]
    pub driver: String,
    /// Label of the run in the JSON [default: the scenario's name].
    #[arg(long, env = "LABEL")]
    pub label: Option<String>,
    /// Typing announcements per second by every client in its room during
    /// the send window (spread evenly over the clients); 0: none. Measures
    /// what typing traffic costs the message deliveries beside it.
    #[arg(long = "typing-rate", env = "TYPING_RATE", default_value_t = 0.0)]
    pub typing_rate: f64,
}

/// The resolved, validated parameters of one run.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    /// The run's label.
    pub label: String,
    /// The transport.
    pub driver: String,
    /// The workload's shape.
    pub plan: Plan,
    /// Seconds of sending.
    pub duration: f64,
    /// Server URLs.
    pub urls: Vec<String>,
    /// Server process ids.
    pub server_pids: Vec<u32>,
    /// Broker process id.
    pub redis_pid: Option<u32>,
    /// Bytes of text.
    pub text_bytes: usize,
    /// Drain seconds.
    pub drain: f64,
    /// Settle seconds.
    pub settle: f64,
    /// Concurrent connects / joins.
    pub connect_concurrency: usize,
    /// Seconds per connect / join.
    pub connect_timeout: f64,
    /// Seconds per phase.
    pub phase_timeout: f64,
    /// Typing announcements per second per client (0: none).
    pub typing_rate: f64,
}

fn pids(list: &str, what: &str) -> anyhow::Result<Vec<u32>> {
    list.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse()
                .with_context(|| format!("bad --{what}: {s:?}"))
        })
        .collect()
}

fn non_negative(v: f64, what: &str) -> anyhow::Result<f64> {
    if !v.is_finite() || v < 0.0 {
        bail!("bad --{what}: {v}");
    }
    Ok(v)
}

impl Cli {
    /// Applies the scenario preset and load.js's defaults, and checks the
    /// values as load.js does.
    pub fn resolve(&self) -> anyhow::Result<Params> {
        let preset = self.scenario.map(Scenario::preset);
        let rooms = self.rooms.or(preset.as_ref().map(|p| p.rooms)).unwrap_or(1);
        let cpr = self
            .clients_per_room
            .or(preset.as_ref().map(|p| p.cpr))
            .unwrap_or(10);
        let spr = self
            .senders_per_room
            .or(preset.as_ref().map(|p| p.spr))
            .unwrap_or(1);
        if self.scenario == Some(Scenario::C) && self.rate.is_none() {
            bail!("--scenario C needs --rate (msg/s per sender)");
        }
        let rate = self
            .rate
            .or(preset.as_ref().and_then(|p| p.rate))
            .unwrap_or(1.0);
        let duration = self
            .duration
            .or(preset.as_ref().map(|p| p.duration))
            .unwrap_or(10.0);
        let settle = self
            .settle
            .or(preset.as_ref().and_then(|p| p.settle))
            .unwrap_or(1.0);
        let rate = non_negative(rate, "rate")?;
        let duration = non_negative(duration, "duration")?;
        if spr > cpr {
            bail!("senders-per-room > clients-per-room");
        }
        if spr > 0 && rate == 0.0 && duration > 0.0 {
            bail!("--rate must be positive when there are senders");
        }
        let urls: Vec<String> = self
            .urls
            .split(',')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if urls.is_empty() {
            bail!("no urls");
        }
        if self.workers != 1 {
            bail!("--workers: chat-bench is one process (multi-threaded); only 1 is supported");
        }
        if !DRIVERS.contains(&self.driver.as_str()) {
            bail!("--driver: one of {}", DRIVERS.join(", "));
        }
        let redis = pids(&self.redis_pid, "redis-pid")?;
        Ok(Params {
            label: self
                .label
                .clone()
                .or(self.scenario.map(|s| s.label(rate)))
                .unwrap_or_default(),
            driver: self.driver.clone(),
            plan: Plan::new(rooms, cpr, spr, rate, duration),
            duration,
            urls,
            server_pids: pids(&self.server_pids, "server-pids")?,
            redis_pid: redis.first().copied(),
            text_bytes: usize::try_from(self.text_bytes).context("bad --text-bytes")?,
            drain: non_negative(self.drain, "drain")?,
            settle: non_negative(settle, "settle")?,
            connect_concurrency: usize::try_from(self.connect_concurrency.max(1))
                .context("bad --connect-concurrency")?,
            connect_timeout: non_negative(self.connect_timeout, "connect-timeout")?,
            phase_timeout: non_negative(self.phase_timeout, "phase-timeout")?,
            typing_rate: non_negative(self.typing_rate, "typing-rate")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<Params> {
        let mut all = vec!["chat-bench"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all)?.resolve()
    }

    #[test]
    fn load_js_defaults() {
        let p = parse(&[]).expect("valid");
        assert_eq!(p.plan, Plan::new(1, 10, 1, 1.0, 10.0));
        assert_eq!((p.text_bytes, p.drain, p.settle), (64, 5.0, 1.0));
        assert_eq!(p.label, "");
    }

    #[test]
    fn scenario_presets_and_overrides() {
        let a = parse(&["--scenario", "A", "--server-pids", "12,13"]).expect("valid");
        assert_eq!(a.plan, Plan::new(1, 1000, 1, 50.0, 20.0));
        assert_eq!(a.server_pids, vec![12, 13]);
        assert_eq!(a.label, "A");
        let b = parse(&["--scenario=b", "--duration=3", "--label", "B-short"]).expect("valid");
        assert_eq!(b.plan, Plan::new(100, 10, 2, 5.0, 3.0));
        assert_eq!(b.label, "B-short");
        let c = parse(&["--scenario", "C", "--rate", "400"]).expect("valid");
        assert_eq!(c.plan, Plan::new(1, 1000, 1, 400.0, 10.0));
        assert_eq!(c.label, "C-400");
        assert!(parse(&["--scenario", "C"]).is_err(), "C needs a rate");
        let d = parse(&["--scenario", "D2x"]).expect("valid");
        assert_eq!(d.plan.clients(), 10_000);
        assert_eq!(d.plan.messages(), 0);
        assert_eq!(d.settle, 5.0);
    }

    #[test]
    fn rejects_what_load_js_rejects() {
        assert!(parse(&["--clients-per-room", "2", "--senders-per-room", "3"]).is_err());
        assert!(parse(&["--urls", ""]).is_err());
        assert!(parse(&["--rate", "-1"]).is_err());
        assert!(parse(&["--bogus", "1"]).is_err());
        assert!(parse(&["--server-pids", "x"]).is_err());
        assert!(parse(&["--driver", "tcp"]).is_err());
        assert_eq!(parse(&["--driver", "ws"]).expect("valid").driver, "ws");
    }
}
