//! Storm workloads (`chat-bench storm-join`, `chat-bench storm-restart`):
//! many memberships asked for at once, by clients that each sit in many
//! rooms. [`join`] is the join storm (every client joins all its rooms at
//! the same moment), [`restart`] the rejoin storm after one instance is
//! killed and restarted. This module holds what both use: the flags they
//! share, which rooms a client is in, connecting the clients, the servers'
//! CPU over a window, and the servers' own counters ([`prom`]); the gap and
//! duplicate check of the restart is [`sequence`].
//!
//! Each prints one JSON object on stdout like the other runs (progress on
//! stderr); its `workload` field (`storm-join`, `storm-restart`) tells the
//! summary to put it in the Storms table rather than the others.

pub mod join;
pub mod prom;
pub mod restart;
pub mod sequence;

use crate::metrics::r3;
use crate::procstat::{self, CpuTimes};
use crate::report::mb;
use anyhow::{Context, anyhow, bail};
use chat_client::{Client, ClientConfig, Event, Events};
use futures::StreamExt;
use serde::Serialize;
use std::time::{Duration, Instant};

/// The flags both storms take.
#[derive(clap::Args, Debug, Clone)]
pub struct CommonArgs {
    /// Label of the run in the JSON.
    #[arg(long, default_value = "")]
    pub label: String,
    /// Comma-separated server URLs; client i connects to URL i mod U.
    #[arg(long, default_value = "http://127.0.0.1:5000")]
    pub urls: String,
    /// Comma-separated server process ids, in `--urls` order (CPU and RSS
    /// from /proc).
    #[arg(long = "server-pids", default_value = "")]
    pub server_pids: String,
    /// The broker's process id (accepted for run.sh; its CPU is reported).
    #[arg(long = "redis-pid", default_value = "")]
    pub redis_pid: String,
    /// Comma-separated server log files: their `slow statement` lines are
    /// counted at the end.
    #[arg(long = "server-logs", default_value = "")]
    pub server_logs: String,
    /// Concurrent connection attempts.
    #[arg(long = "connect-concurrency", default_value_t = 100)]
    pub connect_concurrency: usize,
    /// Seconds per connection attempt.
    #[arg(long = "connect-timeout", default_value_t = 20.0)]
    pub connect_timeout: f64,
    /// Longest seconds of each phase (connect, join, resume, drain): past
    /// it the run ends with `error` set.
    #[arg(long = "phase-timeout", default_value_t = 60.0)]
    pub phase_timeout: f64,
}

/// [`CommonArgs`], checked.
#[derive(Clone, Debug)]
pub struct Common {
    /// The run's label.
    pub label: String,
    /// Server URLs.
    pub urls: Vec<String>,
    /// Server process ids, in URL order.
    pub server_pids: Vec<u32>,
    /// The broker's process id.
    pub redis_pid: Option<u32>,
    /// Server log files.
    pub server_logs: Vec<String>,
    /// Concurrent connection attempts.
    pub connect_concurrency: usize,
    /// Per connection attempt.
    pub connect_timeout: Duration,
    /// Per phase.
    pub phase_timeout: Duration,
}

fn list(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn seconds(v: f64, what: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v).map_err(|_| anyhow!("bad --{what}: {v}"))
}

impl CommonArgs {
    /// Checks the values.
    pub fn resolve(&self) -> anyhow::Result<Common> {
        let pids = |text: &str, what: &str| -> anyhow::Result<Vec<u32>> {
            list(text)
                .map(|s| s.parse().with_context(|| format!("bad --{what}: {s:?}")))
                .collect()
        };
        let urls: Vec<String> = list(&self.urls).map(String::from).collect();
        if urls.is_empty() {
            bail!("no urls");
        }
        Ok(Common {
            label: self.label.clone(),
            urls,
            server_pids: pids(&self.server_pids, "server-pids")?,
            redis_pid: pids(&self.redis_pid, "redis-pid")?.first().copied(),
            server_logs: list(&self.server_logs).map(String::from).collect(),
            connect_concurrency: self.connect_concurrency.max(1),
            connect_timeout: seconds(self.connect_timeout, "connect-timeout")?,
            phase_timeout: seconds(self.phase_timeout, "phase-timeout")?,
        })
    }
}

/// Prints `line()` on stderr once a second, until the caller drops it.
pub async fn every_second(line: impl Fn() -> String) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        eprintln!("{}", line());
    }
}

/// Whether `event` tells of members joining or leaving: a coalesced
/// `MembersChanged`, or one change from a server before it.
pub fn is_presence(event: &Event) -> bool {
    matches!(
        event,
        Event::MembersChanged(_) | Event::MemberJoined(_) | Event::MemberLeft(_)
    )
}

/// The rooms client `i` is in: `(i·K + j) mod R` for `j` in `0..K`, so
/// consecutive clients cover consecutive rooms and every room gets
/// `N·K/R` members (one more for some when it does not divide).
pub fn rooms_of(i: u64, per_client: u64, rooms: u64) -> impl Iterator<Item = u64> {
    (0..per_client).map(move |j| (i * per_client + j) % rooms.max(1))
}

/// Members per room when `clients` clients each join their
/// [`rooms_of`].
pub fn members_per_room(clients: u64, per_client: u64, rooms: u64) -> Vec<u64> {
    let mut members = vec![0; rooms as usize];
    for i in 0..clients {
        for r in rooms_of(i, per_client, rooms) {
            members[r as usize] += 1;
        }
    }
    members
}

/// One client that sits in room `r` (the first whose rooms include it),
/// if any does.
pub fn member_of(r: u64, clients: u64, per_client: u64) -> Option<u64> {
    let i = r / per_client.max(1);
    (i < clients).then_some(i)
}

/// Checks the shape: at least one client and room, and no client asked
/// to join a room twice.
pub fn check_shape(clients: u64, per_client: u64, rooms: u64) -> anyhow::Result<()> {
    if clients == 0 || per_client == 0 || rooms == 0 {
        bail!("--clients, --rooms-per-client and --rooms must be positive");
    }
    if per_client > rooms {
        bail!("--rooms-per-client ({per_client}) > --rooms ({rooms})");
    }
    Ok(())
}

/// Connects `n` library clients, client `i` to `url_of(i)` as
/// `name_of(i)`, at most `concurrency` at a time; hands each one's events
/// to `receive(i, events)` (spawned). Returns the clients (`None` where
/// the connection failed), the failures by reason, and the seconds taken.
pub async fn connect_all<F, R>(
    n: usize,
    url_of: impl Fn(usize) -> String,
    name_of: impl Fn(usize) -> String,
    config: impl Fn(ClientConfig) -> ClientConfig,
    c: &Common,
    receive: F,
) -> anyhow::Result<Connected>
where
    F: Fn(usize, Events) -> R,
    R: Future<Output = ()> + Send + 'static,
{
    let started = Instant::now();
    let timeout = c.connect_timeout;
    let attempts = futures::stream::iter(0..n)
        .map(|i| {
            let mut cfg = config(ClientConfig::new(url_of(i), name_of(i)));
            cfg.connect_timeout = timeout;
            let (client, events) = Client::connect(cfg);
            tokio::spawn(receive(i, events));
            async move {
                match client.wait_connected(timeout).await {
                    Ok(_) => (i, Ok(client)),
                    Err(e) => {
                        client.close();
                        (i, Err(e.to_string()))
                    }
                }
            }
        })
        .buffer_unordered(c.connect_concurrency)
        .collect::<Vec<_>>();
    let results = tokio::time::timeout(c.phase_timeout, attempts)
        .await
        .map_err(|_| anyhow!("connect phase timed out"))?;
    let mut out = Connected::default();
    out.clients = (0..n).map(|_| None).collect();
    for (i, r) in results {
        match r {
            Ok(client) => out.clients[i] = Some(client),
            Err(e) => {
                out.failed += 1;
                *out.errors.entry(e.chars().take(80).collect()).or_default() += 1;
            }
        }
    }
    out.seconds = r3(started.elapsed().as_secs_f64());
    Ok(out)
}

/// The outcome of [`connect_all`]; closes every client when dropped.
#[derive(Default)]
pub struct Connected {
    /// Client `i`, or `None` where its connection failed.
    pub clients: Vec<Option<Client>>,
    /// Failed connections.
    pub failed: u64,
    /// Failure reasons (first 80 characters) and counts.
    pub errors: std::collections::BTreeMap<String, u64>,
    /// Wall seconds of the connect phase.
    pub seconds: f64,
}

impl Connected {
    /// How many connected.
    pub fn count(&self) -> u64 {
        self.clients.iter().flatten().count() as u64
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        for c in self.clients.iter().flatten() {
            c.close();
        }
    }
}

/// The servers' CPU counters at one moment, in `--server-pids` order
/// (`None` where a process could not be read).
pub fn cpu_now(pids: &[u32]) -> Vec<Option<CpuTimes>> {
    pids.iter()
        .map(|pid| procstat::cpu_times(&pid.to_string()))
        .collect()
}

/// Server CPU over a window, summed over the instances.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CpuOut {
    /// User CPU seconds: the servers' own code.
    pub user_s: Option<f64>,
    /// System CPU seconds: the kernel working for them.
    pub sys_s: Option<f64>,
    /// Wall seconds of the window.
    pub wall_s: f64,
}

impl CpuOut {
    /// The CPU between two readings of the same processes, over `wall`.
    pub fn between(a: &[Option<CpuTimes>], b: &[Option<CpuTimes>], wall: Duration) -> CpuOut {
        let delta = |f: fn(&CpuTimes) -> f64| -> Option<f64> {
            if a.is_empty() {
                return None;
            }
            let mut total = 0.0;
            for (x, y) in a.iter().zip(b) {
                total += f(y.as_ref()?) - f(x.as_ref()?);
            }
            Some(r3(total))
        };
        CpuOut {
            user_s: delta(|t| t.user_s),
            sys_s: delta(|t| t.sys_s),
            wall_s: r3(wall.as_secs_f64()),
        }
    }

    /// Adds another window's CPU (another process over its own window).
    pub fn plus(&self, other: &CpuOut) -> CpuOut {
        let add = |a: Option<f64>, b: Option<f64>| Some(r3(a? + b?));
        CpuOut {
            user_s: add(self.user_s, other.user_s),
            sys_s: add(self.sys_s, other.sys_s),
            wall_s: self.wall_s.max(other.wall_s),
        }
    }

    /// Microseconds per operation, when there were some.
    pub fn per(&self, ops: u64) -> PerOp {
        let us = |s: Option<f64>| s.filter(|_| ops > 0).map(|s| r2(s * 1e6 / ops as f64));
        PerOp {
            user: us(self.user_s),
            sys: us(self.sys_s),
            total: us(self.user_s.zip(self.sys_s).map(|(u, s)| u + s)),
        }
    }
}

/// CPU microseconds per operation (join, rejoin).
#[derive(Clone, Debug, Default, Serialize)]
pub struct PerOp {
    /// User time.
    pub user: Option<f64>,
    /// System time.
    pub sys: Option<f64>,
    /// Both.
    pub total: Option<f64>,
}

/// Rounds to 2 decimals.
pub fn r2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// One server process at the end of a run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ServerEnd {
    /// Process id.
    pub pid: u32,
    /// VmRSS, MB.
    pub rss_mb_end: Option<f64>,
    /// VmHWM, MB.
    pub hwm_mb: Option<f64>,
}

/// The servers' memory now.
pub fn servers_end(pids: &[u32]) -> Vec<ServerEnd> {
    pids.iter()
        .map(|&pid| {
            let m = procstat::mem(&pid.to_string());
            ServerEnd {
                pid,
                rss_mb_end: mb(m.rss_kb),
                hwm_mb: mb(m.hwm_kb),
            }
        })
        .collect()
}

/// Σ `rss_mb_end`, `None` if one is unknown.
pub fn rss_total(servers: &[ServerEnd]) -> Option<f64> {
    if servers.is_empty() {
        return None;
    }
    servers
        .iter()
        .map(|s| s.rss_mb_end)
        .sum::<Option<f64>>()
        .map(|x| (x * 10.0).round() / 10.0)
}

/// Lines saying `slow statement` in the server logs (sqlx's warning for
/// a statement over its threshold); `None` when no log was given or none
/// could be read.
pub fn slow_statements(logs: &[String]) -> Option<u64> {
    let counts: Vec<u64> = logs
        .iter()
        .filter_map(|path| std::fs::read(path).ok())
        .map(|bytes| count_lines(&String::from_utf8_lossy(&bytes), "slow statement"))
        .collect();
    (!counts.is_empty()).then(|| counts.iter().sum())
}

/// Lines of `text` containing `needle`.
pub fn count_lines(text: &str, needle: &str) -> u64 {
    text.lines().filter(|l| l.contains(needle)).count() as u64
}

/// The per-phase deadline helper: `what` timed out after `limit`.
pub fn timed_out(what: &str, limit: Duration) -> anyhow::Error {
    anyhow!("{what} timed out after {:.0} s", limit.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_follow_the_formula_and_spread_evenly() {
        let r: Vec<u64> = rooms_of(3, 50, 100).collect();
        assert_eq!(r[0], 50);
        assert_eq!(r[49], 99);
        let r: Vec<u64> = rooms_of(1, 50, 100).collect();
        assert_eq!((r[0], r[49]), (50, 99));
        assert_eq!(rooms_of(2, 50, 100).next(), Some(0));
        // 200 × 50 over 100: 100 members each; 5000 × 10 over 500: 100.
        assert!(members_per_room(200, 50, 100).iter().all(|&m| m == 100));
        assert!(members_per_room(5000, 10, 500).iter().all(|&m| m == 100));
        // Not divisible: 7 × 3 over 5 = 21 memberships, 4 or 5 per room.
        let m = members_per_room(7, 3, 5);
        assert_eq!(m.iter().sum::<u64>(), 21);
        assert!(m.iter().all(|&x| x == 4 || x == 5), "{m:?}");
        // A client never gets a room twice when K ≤ R.
        for i in 0..50 {
            let mut r: Vec<u64> = rooms_of(i, 7, 7).collect();
            r.sort_unstable();
            r.dedup();
            assert_eq!(r.len(), 7);
        }
    }

    #[test]
    fn a_member_of_each_room() {
        for r in 0..100 {
            let i = member_of(r, 200, 50).expect("a member");
            assert!(rooms_of(i, 50, 100).any(|x| x == r), "room {r}");
        }
        assert_eq!(member_of(99, 1, 50), None);
        assert!(check_shape(1, 51, 50).is_err());
        assert!(check_shape(0, 1, 1).is_err());
        assert!(check_shape(200, 50, 100).is_ok());
    }

    #[test]
    fn cpu_windows_and_per_op() {
        let t = |u: f64, s: f64| {
            Some(CpuTimes {
                user_s: u,
                sys_s: s,
                total_s: u + s,
            })
        };
        let a = [t(1.0, 0.5), t(2.0, 1.0)];
        let b = [t(1.5, 0.75), t(3.0, 1.25)];
        let w = CpuOut::between(&a, &b, Duration::from_millis(1500));
        assert_eq!((w.user_s, w.sys_s, w.wall_s), (Some(1.5), Some(0.5), 1.5));
        let per = w.per(10_000);
        assert_eq!(
            (per.user, per.sys, per.total),
            (Some(150.0), Some(50.0), Some(200.0))
        );
        assert_eq!(w.per(0).total, None);
        let gone = CpuOut::between(&a, &[t(1.5, 0.75), None], Duration::ZERO);
        assert_eq!(gone.user_s, None);
        assert_eq!(CpuOut::between(&[], &[], Duration::ZERO).user_s, None);
        assert_eq!(w.plus(&w).user_s, Some(3.0));
    }

    #[test]
    fn counts_slow_statements() {
        let log = "INFO x\nWARN sqlx::query: slow statement: execution time exceeded\nok\n";
        assert_eq!(count_lines(log, "slow statement"), 1);
        assert_eq!(slow_statements(&[]), None);
        assert_eq!(slow_statements(&["/nonexistent/log".into()]), None);
    }
}
