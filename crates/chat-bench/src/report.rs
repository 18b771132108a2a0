//! The one JSON object printed per run: load.js's fields, same names, same
//! units, same rounding, in the same order, plus a few of our own at the
//! end (`latency_from_schedule_ms`, `messages_unacked`,
//! `messages_incomplete`, `duplicate_deliveries`,
//! `server_cpu_us_per_delivery`, and the servers' CPU split into user and
//! system time: `servers[].cpu_user_s_run` / `cpu_sys_s_run`,
//! `server_cpu_{user,sys}_s_run_total`,
//! `server_cpu_{user,sys}_us_per_delivery`), and the pass rule.

use crate::metrics::Summary;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// `params`: the run's parameters.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ParamsOut {
    /// Rooms.
    pub rooms: u64,
    /// Clients per room.
    pub clients_per_room: u64,
    /// Senders per room.
    pub senders_per_room: u64,
    /// Messages/s per sender.
    pub rate_per_sender: f64,
    /// Seconds of sending.
    pub duration_s: f64,
    /// Bytes of text.
    pub text_bytes: usize,
    /// Drain seconds.
    pub drain_s: f64,
    /// Settle seconds.
    pub settle_s: f64,
    /// Load-generator processes (always 1).
    pub workers: u64,
    /// Server URLs.
    pub urls: Vec<String>,
}

/// `servers[]`: one server process.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ServerOut {
    /// Process id.
    pub pid: u32,
    /// VmRSS before the first connection, MB.
    pub rss_mb_baseline: Option<f64>,
    /// VmRSS after join + settle, MB.
    pub rss_mb_joined: Option<f64>,
    /// VmRSS after the drain, MB.
    pub rss_mb_end: Option<f64>,
    /// VmHWM after the drain, MB.
    pub hwm_mb: Option<f64>,
    /// CPU seconds over the run window.
    pub cpu_s_run: Option<f64>,
    /// CPU seconds over connect + join + settle.
    pub cpu_s_connect_join: Option<f64>,
    /// User CPU seconds over the run window (ours, not in load.js).
    pub cpu_user_s_run: Option<f64>,
    /// System CPU seconds over the run window (ours, not in load.js).
    pub cpu_sys_s_run: Option<f64>,
}

/// `redis`: the broker process.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BrokerOut {
    /// VmRSS after the drain, MB.
    pub rss_mb_end: Option<f64>,
    /// CPU seconds over the run window.
    pub cpu_s_run: Option<f64>,
}

/// `loadgen`: this process.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LoadgenOut {
    /// Processes (1).
    pub processes: u64,
    /// CPU seconds over the run window.
    pub cpu_s_run: Option<f64>,
    /// CPU seconds over connect + join + settle.
    pub cpu_s_connect_join: Option<f64>,
    /// VmRSS after join + settle, MB.
    pub rss_mb_joined_total: Option<f64>,
}

/// `loadgen_event_loop_delay_ms`: here, how late a 5 ms tokio timer fires.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DelayOut {
    /// 99th percentile, ms beyond 5 ms.
    pub p99: f64,
    /// Maximum, ms beyond 5 ms.
    pub max: f64,
}

/// `machine`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MachineOut {
    /// CPUs available to this process.
    pub cores: usize,
    /// Non-idle share of all cores over the run window, %.
    pub busy_pct_run: Option<f64>,
}

/// One run's result.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// `--label`.
    pub label: String,
    /// `--driver`.
    pub driver: String,
    /// Start time, ISO 8601 UTC.
    pub time_utc: String,
    /// Parameters.
    pub params: ParamsOut,
    /// Connected clients.
    pub connections: u64,
    /// Failed connections.
    pub connect_failed: u64,
    /// Failure reasons (first 80 characters) and counts.
    pub connect_errors: BTreeMap<String, u64>,
    /// Wall seconds of the connect phase.
    pub connect_s: f64,
    /// Clients joined.
    pub joined: u64,
    /// Failed joins.
    pub join_failed: u64,
    /// `M`.
    pub messages_planned: u64,
    /// Send calls made.
    pub messages_sent: u64,
    /// Sends acknowledged.
    pub acks_ok: u64,
    /// Sends refused or failed.
    pub acks_err: u64,
    /// Deliveries in the window t0 … end of drain.
    pub deliveries_received: u64,
    /// Σ over rooms of messages sent × members joined.
    pub deliveries_expected: u64,
    /// received / expected, 6 decimals; `null` when nothing was expected.
    pub delivery_ratio: Option<f64>,
    /// `S × rate × CPR`.
    pub offered_deliveries_per_s: f64,
    /// received / `window_s`.
    pub deliveries_per_s: u64,
    /// `max(M / (S × rate), t_last_delivery − t0)`.
    pub window_s: f64,
    /// Delivery latency from the actual send time.
    pub latency_ms: Summary,
    /// Send → acknowledgement.
    pub ack_rtt_ms: Summary,
    /// Actual − scheduled send time.
    pub send_lag_ms: Summary,
    /// Generator health (timer lateness).
    pub loadgen_event_loop_delay_ms: DelayOut,
    /// Deliveries whose id could not be parsed.
    pub bad_messages: u64,
    /// Sessions that ended after connecting.
    pub disconnects_during_run: u64,
    /// Per server process.
    pub servers: Vec<ServerOut>,
    /// Σ `rss_mb_joined`.
    pub server_rss_mb_joined_total: Option<f64>,
    /// Σ `rss_mb_end`.
    pub server_rss_mb_end_total: Option<f64>,
    /// Σ `cpu_s_run`.
    pub server_cpu_s_run_total: Option<f64>,
    /// (Σ joined RSS − Σ baseline RSS) / connections, kB.
    pub server_rss_kb_per_connection: Option<f64>,
    /// The broker, if `--redis-pid` was given.
    pub redis: Option<BrokerOut>,
    /// This process.
    pub loadgen: LoadgenOut,
    /// Seconds of the CPU accounting window (just before t0 … end of drain).
    pub run_wall_s: f64,
    /// The machine.
    pub machine: MachineOut,
    /// What stopped the run, if something did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Wall seconds of the whole run.
    pub total_wall_s: f64,
    // ---- ours, not in load.js
    /// Delivery latency from the *scheduled* send time (includes generator
    /// lateness: corrected for coordinated omission).
    pub latency_from_schedule_ms: Summary,
    /// Messages sent but not acknowledged by the end of the drain.
    pub messages_unacked: u64,
    /// Acknowledged messages that some member of their room did not get.
    pub messages_incomplete: u64,
    /// Deliveries beyond one per member for a message.
    pub duplicate_deliveries: u64,
    /// `server_cpu_s_run_total` / `deliveries_received`, µs.
    pub server_cpu_us_per_delivery: Option<f64>,
    /// Σ `servers[].cpu_user_s_run`: the servers' own code.
    pub server_cpu_user_s_run_total: Option<f64>,
    /// Σ `servers[].cpu_sys_s_run`: the kernel working for the servers.
    pub server_cpu_sys_s_run_total: Option<f64>,
    /// `server_cpu_user_s_run_total` / `deliveries_received`, µs.
    pub server_cpu_user_us_per_delivery: Option<f64>,
    /// `server_cpu_sys_s_run_total` / `deliveries_received`, µs.
    pub server_cpu_sys_us_per_delivery: Option<f64>,
    /// The typing traffic beside the messages (`--typing-rate`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub typing: Option<TypingOut>,
}

/// The typing traffic of a run with `--typing-rate`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TypingOut {
    /// `--typing-rate`: announcements per second per client.
    pub rate_per_client: f64,
    /// Announcements made.
    pub sent: u64,
    /// Announcements accepted.
    pub ok: u64,
    /// Announcements refused (rate limited) or failed.
    pub refused: u64,
    /// Typing events delivered to the clients while running.
    pub received: u64,
    /// `received` / `window_s`.
    pub received_per_s: u64,
}

/// What fails any run: the error that stopped it, and connections or
/// joins that failed.
pub fn run_failures(error: Option<&str>, connect_failed: u64, join_failed: u64) -> Vec<String> {
    let mut why = Vec::new();
    if let Some(e) = error {
        why.push(format!("error: {e}"));
    }
    if connect_failed > 0 || join_failed > 0 {
        why.push(format!(
            "{connect_failed} connect and {join_failed} join failures"
        ));
    }
    why
}

impl Report {
    /// Why this run fails, empty when it passes: an error, connect or
    /// join failures, or a delivery ratio below 1 (every acknowledged
    /// message must reach every member of its room).
    pub fn failures(&self) -> Vec<String> {
        let mut why = run_failures(self.error.as_deref(), self.connect_failed, self.join_failed);
        if let Some(r) = self.delivery_ratio
            && r < 1.0
        {
            why.push(format!(
                "delivery_ratio {r} < 1 ({} of {} deliveries)",
                self.deliveries_received, self.deliveries_expected
            ));
        }
        if self.messages_incomplete > 0 {
            why.push(format!(
                "{} acknowledged messages missed some member",
                self.messages_incomplete
            ));
        }
        why
    }
}

/// kB → MB with one decimal (load.js's `mb`).
pub fn mb(kb: Option<u64>) -> Option<f64> {
    kb.map(|kb| (kb as f64 / 102.4).round() / 10.0)
}

/// Now as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn now_utc() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    iso_utc(d.as_millis() as i64)
}

/// Milliseconds since the Unix epoch as ISO 8601 UTC (JavaScript's
/// `toISOString`).
pub fn iso_utc(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Hist;

    #[test]
    fn iso_dates() {
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_utc(1_764_201_600_123), "2025-11-27T00:00:00.123Z");
        assert_eq!(iso_utc(951_825_600_000), "2000-02-29T12:00:00.000Z");
    }

    #[test]
    fn mb_rounds_like_load_js() {
        assert_eq!(mb(Some(40960)), Some(40.0));
        assert_eq!(mb(Some(1126)), Some(1.1));
        assert_eq!(mb(None), None);
    }

    #[test]
    fn json_has_load_js_fields_in_order() {
        let r = Report {
            latency_ms: Hist::new().summary(),
            servers: vec![ServerOut::default()],
            ..Report::default()
        };
        let text = serde_json::to_string(&r).expect("serializes");
        let load_js = [
            "label",
            "driver",
            "time_utc",
            "params",
            "connections",
            "connect_failed",
            "connect_errors",
            "connect_s",
            "joined",
            "join_failed",
            "messages_planned",
            "messages_sent",
            "acks_ok",
            "acks_err",
            "deliveries_received",
            "deliveries_expected",
            "delivery_ratio",
            "offered_deliveries_per_s",
            "deliveries_per_s",
            "window_s",
            "latency_ms",
            "ack_rtt_ms",
            "send_lag_ms",
            "loadgen_event_loop_delay_ms",
            "bad_messages",
            "disconnects_during_run",
            "servers",
            "server_rss_mb_joined_total",
            "server_rss_mb_end_total",
            "server_cpu_s_run_total",
            "server_rss_kb_per_connection",
            "redis",
            "loadgen",
            "run_wall_s",
            "machine",
            "total_wall_s",
        ];
        let mut at = 0;
        for key in load_js {
            let found = text[at..]
                .find(&format!("\"{key}\":"))
                .unwrap_or_else(|| panic!("{key} missing or out of order"));
            at += found;
        }
        let v: serde_json::Value = serde_json::from_str(&text).expect("parses");
        for key in ["p50", "p90", "p99", "p999", "max", "mean", "n"] {
            assert!(v["latency_ms"].get(key).is_some(), "latency_ms.{key}");
        }
        for key in [
            "pid",
            "rss_mb_baseline",
            "rss_mb_joined",
            "rss_mb_end",
            "hwm_mb",
            "cpu_s_run",
            "cpu_s_connect_join",
            "cpu_user_s_run",
            "cpu_sys_s_run",
        ] {
            assert!(v["servers"][0].get(key).is_some(), "servers[].{key}");
        }
        for key in [
            "server_cpu_us_per_delivery",
            "server_cpu_user_s_run_total",
            "server_cpu_sys_s_run_total",
            "server_cpu_user_us_per_delivery",
            "server_cpu_sys_us_per_delivery",
        ] {
            assert!(v.get(key).is_some(), "{key}");
        }
        assert!(v.get("error").is_none());
        assert!(r.failures().is_empty());
    }

    #[test]
    fn fails_loudly_below_full_delivery() {
        let r = Report {
            delivery_ratio: Some(0.999),
            deliveries_received: 999,
            deliveries_expected: 1000,
            ..Report::default()
        };
        assert_eq!(r.failures().len(), 1);
        let r = Report {
            error: Some("boom".into()),
            join_failed: 1,
            ..Report::default()
        };
        assert_eq!(r.failures().len(), 2);
    }
}
