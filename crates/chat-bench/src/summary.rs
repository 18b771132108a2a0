//! The Markdown summary of a benchmark run (`chat-bench report`): the
//! tables of the peer's summary.md (report.js's `summary`) — throughput and
//! latency with server CPU µs per delivery, connection memory with the
//! D → D2x marginal, diagnostics — plus the saturation outcome of every
//! C stepping, and the servers' CPU per delivery split into user and
//! system time beside the kernel's own floor (`loopback-floor`'s results). It reads results files of one JSON object per line, ours or
//! the peer's (same field names), so the peer's rows can sit beside ours:
//! each of our rows is followed by the peer's row with the same label, and
//! the peer's other rows come last. The storm workloads' rows (`workload`
//! `storm-join`, `storm-restart`, ours and `bench/peer-storm.js`'s) have a
//! table of their own, Storms, where the peer's `peer-<label>` row follows
//! ours.

use crate::saturation;
use crate::slo;
use anyhow::Context;
use serde_json::Value;
use std::fmt::Write as _;
use std::path::Path;

/// The rows of one system under test.
#[derive(Clone, Debug)]
pub struct Source {
    /// Its name (`chat-server`, `socket.io`); rows show it with their
    /// instance count.
    pub name: String,
    /// One JSON object per run.
    pub rows: Vec<Value>,
}

/// Reads a results file: one JSON object per line, blank lines skipped.
pub fn read_rows(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_rows(&text).with_context(|| format!("in {}", path.display()))
}

/// Parses JSON lines.
pub fn parse_rows(text: &str) -> anyhow::Result<Vec<Value>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("line {}", i + 1)))
        .collect()
}

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

fn num(v: &Value, path: &[&str]) -> Option<f64> {
    get(v, path).and_then(Value::as_f64)
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// report.js's `fmt`: fixed decimals, `-` when absent.
fn fmt(x: Option<f64>, decimals: usize) -> String {
    match x {
        Some(x) if x.is_finite() => format!("{x:.decimals$}"),
        Some(x) => x.to_string(),
        None => "-".into(),
    }
}

/// report.js's `int`: rounded, with thousands separators.
fn int(x: Option<f64>) -> String {
    let Some(x) = x.filter(|x| x.is_finite()) else {
        return "-".into();
    };
    let n = x.round() as i64;
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// Whether the row is a storm workload's (`storm-join`, `storm-restart`).
fn is_storm(r: &Value) -> bool {
    text(r, "workload").starts_with("storm")
}

/// Whether the run is an idle (connection memory) run.
fn is_idle(r: &Value) -> bool {
    num(r, &["messages_planned"]) == Some(0.0)
}

fn servers(r: &Value) -> &[Value] {
    r.get("servers")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// How many server instances served the run.
fn instances(r: &Value) -> usize {
    let n = servers(r).len();
    if n > 0 {
        n
    } else {
        get(r, &["params", "urls"])
            .and_then(Value::as_array)
            .map_or(0, Vec::len)
    }
}

/// `name ×N` for a row.
fn system(name: &str, r: &Value) -> String {
    match instances(r) {
        0 => name.to_string(),
        n => format!("{name} ×{n}"),
    }
}

/// Rows in display order: ours, each followed by the peer's row with the
/// same label; then the peer's remaining rows.
fn interleave<'a>(ours: &'a Source, peer: Option<&'a Source>) -> Vec<(&'a str, &'a Value)> {
    let mut out = Vec::new();
    let mut used = vec![false; peer.map_or(0, |p| p.rows.len())];
    for r in &ours.rows {
        out.push((ours.name.as_str(), r));
        if let Some(p) = peer {
            let label = text(r, "label");
            if let Some(j) = p
                .rows
                .iter()
                .enumerate()
                .position(|(j, q)| !used[j] && text(q, "label") == label)
            {
                used[j] = true;
                out.push((p.name.as_str(), &p.rows[j]));
            }
        }
    }
    if let Some(p) = peer {
        for (j, q) in p.rows.iter().enumerate() {
            if !used[j] {
                out.push((p.name.as_str(), q));
            }
        }
    }
    out
}

fn throughput_table(out: &mut String, rows: &[(&str, &Value)]) {
    let rows: Vec<_> = rows.iter().filter(|(_, r)| !is_idle(r)).collect();
    if rows.is_empty() {
        return;
    }
    out.push_str(
        "### Throughput / latency (CPU seconds are over the send+drain window, `wall`)\n\n",
    );
    out.push_str(
        "| system | run | conns | msgs sent | deliveries recv / expected | ratio | offered/s | achieved/s \
         | p50 ms | p90 ms | p99 ms | max ms | wall s | srv CPU s (per instance = total) \
         | srv CPU µs/delivery | broker CPU s | loadgen CPU s | box busy % | srv RSS MB (end, sum) | SLO |\n",
    );
    out.push_str(
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (name, r) in rows {
        let per = servers(r)
            .iter()
            .map(|s| fmt(num(s, &["cpu_s_run"]), 2))
            .collect::<Vec<_>>()
            .join("+");
        let cpu = num(r, &["server_cpu_s_run_total"]);
        let recv = num(r, &["deliveries_received"]).filter(|&d| d > 0.0);
        let us = cpu.zip(recv).map(|(c, d)| c * 1e6 / d);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} / {} | {} | {} | {} | {} | {} | {} | {} | {} | {} = {} | {} | {} | {} | {} | {} | {} |",
            system(name, r),
            text(r, "label"),
            int(num(r, &["connections"])),
            int(num(r, &["messages_sent"])),
            int(num(r, &["deliveries_received"])),
            int(num(r, &["deliveries_expected"])),
            fmt(num(r, &["delivery_ratio"]), 4),
            int(num(r, &["offered_deliveries_per_s"])),
            int(num(r, &["deliveries_per_s"])),
            fmt(num(r, &["latency_ms", "p50"]), 2),
            fmt(num(r, &["latency_ms", "p90"]), 2),
            fmt(num(r, &["latency_ms", "p99"]), 2),
            fmt(num(r, &["latency_ms", "max"]), 2),
            fmt(num(r, &["run_wall_s"]), 2),
            per,
            fmt(cpu, 2),
            fmt(us, 2),
            fmt(num(r, &["redis", "cpu_s_run"]), 2),
            fmt(num(r, &["loadgen", "cpu_s_run"]), 2),
            fmt(num(r, &["machine", "busy_pct_run"]), 1),
            fmt(num(r, &["server_rss_mb_end_total"]), 1),
            slo::verdict(r),
        );
    }
}

/// Σ joined server RSS, kB.
fn joined_kb(r: &Value) -> Option<f64> {
    let s = servers(r);
    if s.is_empty() {
        return None;
    }
    s.iter()
        .map(|x| num(x, &["rss_mb_joined"]))
        .sum::<Option<f64>>()
        .map(|mb| mb * 1024.0)
}

fn memory_table(out: &mut String, rows: &[(&str, &Value)], sources: &[&Source]) {
    let idle: Vec<_> = rows.iter().filter(|(_, r)| is_idle(r)).collect();
    if idle.is_empty() {
        return;
    }
    out.push_str("\n### Connection memory (idle, joined)\n\n");
    out.push_str(
        "| system | run | conns | rooms | connect s | srv RSS MB baseline (per instance) \
         | srv RSS MB joined (per instance) | srv RSS KB / connection | srv CPU s connect+join \
         | loadgen CPU s connect+join | loadgen RSS MB |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (name, r) in idle {
        let s = servers(r);
        let list = |key: &str| {
            s.iter()
                .map(|x| fmt(num(x, &[key]), 1))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let cpu = s
            .iter()
            .map(|x| num(x, &["cpu_s_connect_join"]).unwrap_or(0.0))
            .sum::<f64>();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            system(name, r),
            text(r, "label"),
            int(num(r, &["connections"])),
            int(num(r, &["params", "rooms"])),
            fmt(num(r, &["connect_s"]), 2),
            list("rss_mb_baseline"),
            list("rss_mb_joined"),
            fmt(num(r, &["server_rss_kb_per_connection"]), 2),
            fmt(Some(cpu), 2),
            fmt(num(r, &["loadgen", "cpu_s_connect_join"]), 2),
            fmt(num(r, &["loadgen", "rss_mb_joined_total"]), 1),
        );
    }
    for src in sources {
        for (small, large) in [("D", "D2x"), ("D-ws", "D2x-ws")] {
            marginal(out, src, small, large);
        }
    }
}

/// The line on the marginal RSS per connection between the idle runs
/// labelled `small` and `large` of `src`, when both are there.
fn marginal(out: &mut String, src: &Source, small: &str, large: &str) {
    let find = |label: &str| {
        src.rows
            .iter()
            .find(|r| is_idle(r) && text(r, "label") == label)
    };
    let (Some(d1), Some(d2)) = (find(small), find(large)) else {
        return;
    };
    let (Some(c1), Some(c2)) = (num(d1, &["connections"]), num(d2, &["connections"])) else {
        return;
    };
    let (Some(j1), Some(j2)) = (joined_kb(d1), joined_kb(d2)) else {
        return;
    };
    if c2 > c1 {
        let _ = writeln!(
            out,
            "\n{}: marginal server RSS per connection between {small} ({}) and {large} ({}): \
             **{} KB/connection** (removes the fixed baseline; separate server processes, \
             so heap layout noise remains).",
            system(&src.name, d2),
            int(Some(c1)),
            int(Some(c2)),
            fmt(Some((j2 - j1) / (c2 - c1)), 2),
        );
    }
}

fn saturation_section(out: &mut String, sources: &[&Source]) {
    let mut lines = Vec::new();
    for src in sources {
        for prefix in saturation::prefixes(&src.rows) {
            let steps = saturation::steps(&src.rows, &prefix);
            let (best, first_fail) = saturation::outcome(&steps);
            let cpr = src
                .rows
                .iter()
                .find(|r| saturation::rate_of(text(r, "label"), &prefix).is_some())
                .and_then(|r| num(r, &["params", "clients_per_room"]))
                .unwrap_or(1000.0);
            let sys = src
                .rows
                .iter()
                .find(|r| saturation::rate_of(text(r, "label"), &prefix).is_some())
                .map_or_else(|| src.name.clone(), |r| system(&src.name, r));
            let fail = match first_fail {
                Some(f) => format!("first failing rate {f}"),
                None => "no step failed: the list of rates ran out".into(),
            };
            let trail = steps
                .iter()
                .map(|s| format!("{} {}", s.rate, if s.pass { "pass" } else { "FAIL" }))
                .collect::<Vec<_>>()
                .join(", ");
            lines.push(format!(
                "- {sys}, {prefix}: highest passing rate {best} msg/s per sender = **{} deliveries/s**; {fail} (steps: {trail})",
                int(Some(best as f64 * cpr)),
            ));
        }
    }
    if lines.is_empty() {
        return;
    }
    let _ = write!(
        out,
        "\n### Saturation (scenario C: A's shape; SLO: {})\n\n{}\n",
        slo::DESCRIPTION,
        lines.join("\n")
    );
}

/// Whether the run is one step of a saturation stepping (`C-50`,
/// `C-ws-50`).
fn is_step(r: &Value) -> bool {
    let label = text(r, "label");
    label.rsplit_once('-').is_some_and(|(prefix, _)| {
        prefix.starts_with('C') && saturation::rate_of(label, prefix).is_some()
    })
}

/// The servers' CPU per delivery, in all and as user and system time
/// (where the row has them: the peer's load.js reports only the sum), for
/// every run that is neither idle nor a saturation step; then the kernel's
/// floor from `loopback-floor`'s results (`floors`), measured in the same
/// benchmark run.
fn cpu_split_section(out: &mut String, rows: &[(&str, &Value)], floors: &[Value]) {
    let rows: Vec<_> = rows
        .iter()
        .filter(|(_, r)| !is_idle(r) && !is_step(r))
        .collect();
    if rows.is_empty() && floors.is_empty() {
        return;
    }
    out.push_str("\n### Server CPU per delivery: user and system, and the kernel's floor\n\n");
    out.push_str(
        "user: the servers' own code; system: the kernel working for them (on loopback it \
         includes the receiving side's TCP processing). `loopback-floor`: one thread writes one \
         record to each loopback connection in turn, one write per delivery, and nothing else; \
         its CPU per delivery is what the kernel alone charges on this machine, measured in this \
         run.\n\n",
    );
    out.push_str(
        "| system | run | driver | deliveries | srv CPU µs/delivery | user µs/delivery \
         | system µs/delivery | p50 ms | p99 ms |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for (name, r) in rows {
        let recv = num(r, &["deliveries_received"]).filter(|&d| d > 0.0);
        let per = |key: &str| num(r, &[key]).zip(recv).map(|(c, d)| c * 1e6 / d);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            system(name, r),
            text(r, "label"),
            text(r, "driver"),
            int(recv),
            fmt(per("server_cpu_s_run_total"), 2),
            fmt(per("server_cpu_user_s_run_total"), 2),
            fmt(per("server_cpu_sys_s_run_total"), 2),
            fmt(num(r, &["latency_ms", "p50"]), 2),
            fmt(num(r, &["latency_ms", "p99"]), 2),
        );
    }
    for f in floors {
        let _ = writeln!(
            out,
            "| loopback-floor (kernel only) | {} conns × {} B, {} per write | - | {} | {} | {} | {} | - | - |",
            int(num(f, &["connections"])),
            int(num(f, &["bytes"])),
            int(num(f, &["coalesce"])),
            int(num(f, &["deliveries"])),
            fmt(num(f, &["writer_cpu_us_per_delivery"]), 2),
            fmt(num(f, &["writer_user_us_per_delivery"]), 2),
            fmt(num(f, &["writer_sys_us_per_delivery"]), 2),
        );
    }
}

fn diagnostics_table(out: &mut String, rows: &[(&str, &Value)]) {
    let rows: Vec<_> = rows.iter().filter(|(_, r)| !is_idle(r)).collect();
    if rows.is_empty() {
        return;
    }
    out.push_str("\n### Diagnostics\n\n");
    out.push_str(
        "| system | run | ack RTT p50/p99 ms | send lag p99/max ms | loadgen loop delay p99/max ms \
         | acks ok/err | disconnects | connect s | p99 from schedule ms |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for (name, r) in rows {
        let pair =
            |a: &[&str], b: &[&str]| format!("{} / {}", fmt(num(r, a), 2), fmt(num(r, b), 2));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} / {} | {} | {} | {} |",
            system(name, r),
            text(r, "label"),
            pair(&["ack_rtt_ms", "p50"], &["ack_rtt_ms", "p99"]),
            pair(&["send_lag_ms", "p99"], &["send_lag_ms", "max"]),
            pair(
                &["loadgen_event_loop_delay_ms", "p99"],
                &["loadgen_event_loop_delay_ms", "max"]
            ),
            int(num(r, &["acks_ok"])),
            int(num(r, &["acks_err"])),
            int(num(r, &["disconnects_during_run"])),
            fmt(num(r, &["connect_s"]), 2),
            fmt(num(r, &["latency_from_schedule_ms", "p99"]), 2),
        );
    }
}

/// One run in one line, for progress logs: deliveries, rate, latency,
/// CPU, and for idle runs the memory per connection.
pub fn one_line(r: &Value) -> String {
    let mut s = format!(
        "{}: conns {}",
        text(r, "label"),
        int(num(r, &["connections"]))
    );
    if is_storm(r) {
        let _ = write!(
            s,
            ", joins {} (failed {}), join {} s, rejoins {}, resume {} s (ready {} s), \
             CPU µs/join user {} sys {}, store queries/join {}, presence events {}, \
             live p99 {} ms (during the restart {} ms) ratio {}, lost {} dup {}, slow statements {}",
            int(num(r, &["joins"])),
            int(num(r, &["join_failed"])),
            fmt(num(r, &["join_s"]), 2),
            int(num(r, &["rejoins"])),
            fmt(num(r, &["resume_s"]), 2),
            fmt(num(r, &["restart_ready_s"]), 2),
            fmt(num(r, &["cpu_us_per_join", "user"]), 1),
            fmt(num(r, &["cpu_us_per_join", "sys"]), 1),
            fmt(num(r, &["store_queries_per_join"]), 2),
            int(num(r, &["presence_events_received"])),
            fmt(num(r, &["live", "latency_ms", "p99"]), 2),
            fmt(num(r, &["live", "latency_storm_ms", "p99"]), 2),
            fmt(num(r, &["live", "delivery_ratio"]), 4),
            int(num(r, &["lost"])),
            int(num(r, &["duplicated"])),
            int(num(r, &["slow_statements"])),
        );
    } else if is_idle(r) {
        let _ = write!(
            s,
            ", srv RSS {} KB/connection, connect {} s",
            fmt(num(r, &["server_rss_kb_per_connection"]), 2),
            fmt(num(r, &["connect_s"]), 2)
        );
    } else {
        let cpu = num(r, &["server_cpu_s_run_total"]);
        let recv = num(r, &["deliveries_received"]).filter(|&d| d > 0.0);
        let _ = write!(
            s,
            ", recv {}/{} (ratio {}), {}/s of {} offered, p50 {} p99 {} max {} ms, srv CPU {} s ({} µs/delivery: user {}, system {}), loadgen CPU {} s",
            int(num(r, &["deliveries_received"])),
            int(num(r, &["deliveries_expected"])),
            fmt(num(r, &["delivery_ratio"]), 4),
            int(num(r, &["deliveries_per_s"])),
            int(num(r, &["offered_deliveries_per_s"])),
            fmt(num(r, &["latency_ms", "p50"]), 2),
            fmt(num(r, &["latency_ms", "p99"]), 2),
            fmt(num(r, &["latency_ms", "max"]), 2),
            fmt(cpu, 2),
            fmt(cpu.zip(recv).map(|(c, d)| c * 1e6 / d), 2),
            fmt(num(r, &["server_cpu_user_us_per_delivery"]), 2),
            fmt(num(r, &["server_cpu_sys_us_per_delivery"]), 2),
            fmt(num(r, &["loadgen", "cpu_s_run"]), 2),
        );
    }
    if let Some(e) = r.get("error").and_then(Value::as_str) {
        let _ = write!(s, ", ERROR {e}");
    }
    s
}

/// The Markdown tables for our rows and, if given, the peer's, with the
/// kernel's floor (`loopback-floor`'s JSON objects, possibly none) beside
/// the CPU split.
pub fn render(ours: &Source, peer: Option<&Source>, floors: &[Value]) -> String {
    let (storms, rows): (Vec<_>, Vec<_>) = interleave(ours, peer)
        .into_iter()
        .partition(|(_, r)| is_storm(r));
    let sources: Vec<&Source> = std::iter::once(ours).chain(peer).collect();
    let mut out = String::new();
    throughput_table(&mut out, &rows);
    memory_table(&mut out, &rows, &sources);
    saturation_section(&mut out, &sources);
    cpu_split_section(&mut out, &rows, floors);
    diagnostics_table(&mut out, &rows);
    storms_table(&mut out, &storms);
    out
}

/// A storm row's label without the peer's `peer-` prefix, to pair rows.
fn storm_key(r: &Value) -> &str {
    let label = text(r, "label");
    label.strip_prefix("peer-").unwrap_or(label)
}

/// The storm rows: each of ours followed by the peer's of the same shape
/// (`peer-<label>`), then the peer's others.
fn storms_table(out: &mut String, rows: &[(&str, &Value)]) {
    if rows.is_empty() {
        return;
    }
    let ours = rows.first().map_or("", |(name, _)| *name);
    let mut ordered: Vec<&(&str, &Value)> = Vec::new();
    for row in rows.iter().filter(|(name, _)| *name == ours) {
        ordered.push(row);
        ordered.extend(
            rows.iter()
                .filter(|(name, r)| *name != ours && storm_key(r) == storm_key(row.1)),
        );
    }
    for row in rows {
        if !ordered.iter().any(|o| std::ptr::eq(*o, row)) {
            ordered.push(row);
        }
    }
    out.push_str("\n### Storms (many memberships at once)\n\n");
    out.push_str(
        "join: every client asks for all its rooms at the same moment; `s` is the time until \
         every join reply is back. restart: one instance is SIGKILLed and restarted; `s` is \
         the time from the kill until every one of its clients has every room rejoined. CPU: \
         both servers over that window, per (re)join. live p99: deliveries right after the \
         join storm; for a restart, to the other instance's clients from the kill until every \
         client resumed (the target), then over the whole run. lost / dup: \
         sequences (or, for the peer, acknowledged messages) missed or repeated by some \
         client in some room.\n\n",
    );
    out.push_str(
        "| system | run | workload | clients × rooms | (re)joins | s | CPU µs/join user / sys \
         | store queries/join | presence events | live p99 ms | lost / dup | error |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (name, r) in ordered {
        let restart = text(r, "workload") == "storm-restart";
        let (joins, secs) = if restart {
            (num(r, &["rejoins"]), num(r, &["resume_s"]))
        } else {
            (num(r, &["joins"]), num(r, &["join_s"]))
        };
        let live = if restart {
            format!(
                "{} / {}",
                fmt(num(r, &["live", "latency_storm_ms", "p99"]), 2),
                fmt(num(r, &["live", "latency_ms", "p99"]), 2)
            )
        } else {
            fmt(num(r, &["live", "latency_ms", "p99"]), 2)
        };
        let lost_dup = if restart {
            format!(
                "{} / {}",
                int(num(r, &["lost"])),
                int(num(r, &["duplicated"]))
            )
        } else {
            "-".into()
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} × {} | {} | {} | {} / {} | {} | {} | {} | {} | {} |",
            system(name, r),
            text(r, "label"),
            text(r, "workload").trim_start_matches("storm-"),
            int(num(r, &["params", "clients"])),
            int(num(r, &["params", "rooms_per_client"])),
            int(joins),
            fmt(secs, 2),
            fmt(num(r, &["cpu_us_per_join", "user"]), 1),
            fmt(num(r, &["cpu_us_per_join", "sys"]), 1),
            fmt(num(r, &["store_queries_per_join"]), 2),
            int(num(r, &["presence_events_received"])),
            live,
            lost_dup,
            text(r, "error").chars().take(60).collect::<String>(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(label: &str, rate: f64, p99: f64, servers: usize) -> Value {
        let srv: Vec<Value> = (0..servers)
            .map(|i| {
                json!({"pid": 10 + i, "cpu_s_run": 1.5, "rss_mb_baseline": 10.0,
                            "rss_mb_joined": 20.0, "rss_mb_end": 21.0, "cpu_s_connect_join": 0.5})
            })
            .collect();
        json!({
            "label": label, "driver": "chat-client", "params": {"rooms": 1, "clients_per_room": 1000},
            "connections": 1000, "connect_failed": 0, "join_failed": 0,
            "messages_planned": (rate * 10.0) as u64, "messages_sent": (rate * 10.0) as u64,
            "acks_ok": (rate * 10.0) as u64, "acks_err": 0,
            "deliveries_received": (rate * 10_000.0) as u64, "deliveries_expected": (rate * 10_000.0) as u64,
            "delivery_ratio": 1.0, "offered_deliveries_per_s": rate * 1000.0,
            "deliveries_per_s": (rate * 1000.0) as u64,
            "latency_ms": {"p50": 1.0, "p90": 2.0, "p99": p99, "max": 150.0},
            "ack_rtt_ms": {"p50": 0.5, "p99": 1.0}, "send_lag_ms": {"p99": 0.1, "max": 0.2},
            "loadgen_event_loop_delay_ms": {"p99": 0.1, "max": 0.3},
            "disconnects_during_run": 0, "servers": srv, "server_cpu_s_run_total": 3.0,
            "server_rss_mb_end_total": 42.0, "redis": {"cpu_s_run": 0.25},
            "loadgen": {"cpu_s_run": 4.0}, "run_wall_s": 10.5, "machine": {"busy_pct_run": 55.5},
            "connect_s": 0.7
        })
    }

    fn idle(label: &str, conns: u64, joined_mb: f64) -> Value {
        json!({
            "label": label, "params": {"rooms": conns / 10}, "connections": conns,
            "messages_planned": 0, "connect_s": 1.0,
            "servers": [{"rss_mb_baseline": 10.0, "rss_mb_joined": joined_mb, "cpu_s_connect_join": 0.25},
                        {"rss_mb_baseline": 10.0, "rss_mb_joined": joined_mb, "cpu_s_connect_join": 0.25}],
            "server_rss_kb_per_connection": 7.5,
            "loadgen": {"cpu_s_connect_join": 1.0, "rss_mb_joined_total": 80.0}
        })
    }

    #[test]
    fn numbers_like_report_js() {
        assert_eq!(int(Some(1_000_000.0)), "1,000,000");
        assert_eq!(int(Some(999.6)), "1,000");
        assert_eq!(int(Some(12.0)), "12");
        assert_eq!(int(Some(-1234.0)), "-1,234");
        assert_eq!(int(None), "-");
        assert_eq!(fmt(Some(9.781), 2), "9.78");
        assert_eq!(fmt(None, 2), "-");
    }

    #[test]
    fn tables_saturation_and_the_peer_beside_us() {
        let ours = Source {
            name: "chat-server".into(),
            rows: vec![
                run("A", 50.0, 5.0, 2),
                run("C-25", 25.0, 5.0, 2),
                run("C-50", 50.0, 150.0, 2),
                run("C-37", 37.0, 50.0, 2),
                run("C-43", 43.0, 120.0, 2),
                idle("D", 5000, 60.0),
                idle("D2x", 10000, 100.0),
                run("single-A", 50.0, 5.0, 1),
            ],
        };
        let peer = Source {
            name: "socket.io".into(),
            rows: vec![
                run("A", 50.0, 21.0, 2),
                run("A-raw", 50.0, 17.0, 2),
                idle("D", 5000, 120.0),
            ],
        };
        let md = render(&ours, Some(&peer), &[]);
        let lines: Vec<&str> = md.lines().collect();
        let at = |needle: &str| {
            lines
                .iter()
                .position(|l| l.starts_with(needle))
                .unwrap_or_else(|| panic!("no line {needle:?} in\n{md}"))
        };
        // The peer's A right after ours; its unmatched A-raw after our rows.
        assert_eq!(at("| socket.io ×2 | A |"), at("| chat-server ×2 | A |") + 1);
        assert!(at("| socket.io ×2 | A-raw |") > at("| chat-server ×1 | single-A |"));
        let a = lines[at("| chat-server ×2 | A |")];
        assert!(
            a.contains("| 500,000 / 500,000 | 1.0000 | 50,000 | 50,000 |"),
            "{a}"
        );
        assert!(a.contains("| 1.50+1.50 = 3.00 | 6.00 |"), "{a}");
        assert!(a.ends_with("| pass |"), "{a}");
        assert!(lines[at("| chat-server ×2 | C-50 |")].contains("FAIL: p99 150.0ms >= 100ms"));
        // Memory: rows and the marginal (2 × (100 − 60) MB over 5000 connections).
        assert!(lines[at("| chat-server ×2 | D |")].contains("| 10.0, 10.0 | 60.0, 60.0 | 7.50 |"));
        assert!(md.contains("chat-server ×2: marginal server RSS per connection between D (5,000) and D2x (10,000): **16.38 KB/connection**"), "{md}");
        assert!(
            !md.contains("socket.io ×2: marginal"),
            "the peer has no D2x here"
        );
        // Saturation: best 37, first failing above it 43.
        assert!(md.contains(
            "- chat-server ×2, C: highest passing rate 37 msg/s per sender = **37,000 deliveries/s**; \
             first failing rate 43 (steps: 25 pass, 50 FAIL, 37 pass, 43 FAIL)"
        ), "{md}");
        assert!(md.contains("### Diagnostics"));
        // Without a peer: only our rows.
        let alone = render(&ours, None, &[]);
        assert!(!alone.contains("socket.io"));
    }

    #[test]
    fn cpu_split_beside_the_floor_and_the_ws_rows() {
        let with_split = |label: &str, driver: &str, user: f64, sys: f64| {
            let mut r = run(label, 50.0, 5.0, 2);
            r["driver"] = json!(driver);
            r["server_cpu_s_run_total"] = json!(user + sys);
            r["server_cpu_user_s_run_total"] = json!(user);
            r["server_cpu_sys_s_run_total"] = json!(sys);
            r
        };
        let ours = Source {
            name: "chat-server".into(),
            rows: vec![
                with_split("A", "chat-client", 3.0, 3.5),
                with_split("A-ws", "ws", 0.5, 3.0),
                with_split("C-ws-50", "ws", 0.5, 3.0),
                idle("D-ws", 5000, 40.0),
                idle("D2x-ws", 10000, 70.0),
            ],
        };
        let mut peer_a = run("A", 50.0, 21.0, 2);
        peer_a["driver"] = json!("socketio");
        let peer = Source {
            name: "socket.io".into(),
            rows: vec![peer_a],
        };
        let floor = json!({"connections": 1000, "bytes": 128, "coalesce": 1, "deliveries": 300000,
            "writer_user_us_per_delivery": 0.15, "writer_sys_us_per_delivery": 6.5,
            "writer_cpu_us_per_delivery": 6.65});
        let md = render(&ours, Some(&peer), &[floor]);
        let start = md.find("### Server CPU per delivery").expect("the section");
        let end = md.find("### Diagnostics").expect("diagnostics after it");
        let section = &md[start..end];
        // 500,000 deliveries: 3.5 s of system time is 7 µs each.
        assert!(
            section.contains(
                "| chat-server ×2 | A | chat-client | 500,000 | 13.00 | 6.00 | 7.00 | 1.00 | 5.00 |"
            ),
            "{section}"
        );
        assert!(
            section.contains("| chat-server ×2 | A-ws | ws | 500,000 | 7.00 | 1.00 | 6.00 |"),
            "{section}"
        );
        assert!(
            section.contains("| socket.io ×2 | A | socketio | 500,000 | 6.00 | - | - |"),
            "{section}"
        );
        assert!(section.contains("| loopback-floor (kernel only) | 1,000 conns × 128 B, 1 per write | - | 300,000 | 6.65 | 0.15 | 6.50 | - | - |"), "{section}");
        assert!(
            !section.contains("C-ws-50"),
            "saturation steps stay in their own section"
        );
        assert!(
            md.contains("- chat-server ×2, C-ws: highest passing rate 50"),
            "{md}"
        );
        // The WebSocket pair of idle runs has its marginal: 2 × 30 MB over 5,000.
        assert!(md.contains("marginal server RSS per connection between D-ws (5,000) and D2x-ws (10,000): **12.29 KB/connection**"), "{md}");
    }

    #[test]
    fn storms_have_their_own_table_with_the_peer_beside_us() {
        let join = |label: &str, peer: bool| {
            json!({"workload": "storm-join", "label": label, "connections": 200,
                "params": {"clients": 200, "rooms_per_client": 50},
                "joins": 10000, "join_s": 1.25,
                "cpu_us_per_join": {"user": 80.0, "sys": 20.5, "total": 100.5},
                "store_queries_per_join": if peer { Value::Null } else { json!(0.5) },
                "presence_events_received": if peer { Value::Null } else { json!(495000) },
                "live": {"latency_ms": {"p99": 3.5}, "delivery_ratio": 1.0},
                "servers": [{"pid": 1}, {"pid": 2}]})
        };
        let restart = json!({"workload": "storm-restart", "label": "SR-5000x10",
            "params": {"clients": 5000, "rooms_per_client": 10}, "rejoins": 25000,
            "resume_s": 4.5, "cpu_us_per_join": {"user": 40.0, "sys": 10.0},
            "lost": 0, "duplicated": 0,
            "live": {"latency_ms": {"p99": 12.0}, "latency_storm_ms": {"p99": 30.0}},
            "servers": [{"pid": 1}, {"pid": 3}]});
        let ours = Source {
            name: "chat-server".into(),
            rows: vec![run("A", 50.0, 5.0, 2), join("SJ-200x50", false), restart],
        };
        let peer = Source {
            name: "socket.io".into(),
            rows: vec![join("peer-SJ-200x50", true)],
        };
        let md = render(&ours, Some(&peer), &[]);
        let storms = &md[md.find("### Storms").expect("a Storms table")..];
        let lines: Vec<&str> = storms.lines().collect();
        let at = |needle: &str| {
            lines
                .iter()
                .position(|l| l.starts_with(needle))
                .unwrap_or_else(|| panic!("no line {needle:?} in\n{storms}"))
        };
        let sj = at("| chat-server ×2 | SJ-200x50 |");
        assert_eq!(at("| socket.io ×2 | peer-SJ-200x50 |"), sj + 1);
        assert!(
            lines[sj].contains(
                "| join | 200 × 50 | 10,000 | 1.25 | 80.0 / 20.5 | 0.50 | 495,000 | 3.50 | - |"
            ),
            "{}",
            lines[sj]
        );
        assert!(
            lines[sj + 1].contains("| - | - | 3.50 |"),
            "{}",
            lines[sj + 1]
        );
        assert!(lines[at("| chat-server ×2 | SR-5000x10 |")].contains(
            "| restart | 5,000 × 10 | 25,000 | 4.50 | 40.0 / 10.0 | - | - | 30.00 / 12.00 | 0 / 0 |"
        ));
        // Storm rows stay out of the other tables.
        let before = &md[..md.find("### Storms").expect("storms")];
        assert!(!before.contains("SJ-200x50") && !before.contains("SR-5000x10"));
        assert!(one_line(&join("SJ-200x50", false)).contains("join 1.25 s"));
    }

    #[test]
    fn parses_json_lines() {
        let rows = parse_rows("{\"label\":\"A\"}\n\n{\"label\":\"B\"}\n").expect("valid");
        assert_eq!(rows.len(), 2);
        assert!(parse_rows("{\"label\":\"A\"}\nnot json\n").is_err());
    }
}
