//! Scenario C's service-level objective, the peer's rule (report.js's
//! `pass`): a step passes when the delivery ratio is at least 0.999, the
//! p99 delivery latency is below 100 ms, the achieved deliveries/s reach
//! 95 % of the offered rate, and no client failed to connect or join or was
//! disconnected. It reads a run's JSON (ours or the peer's, same fields),
//! so a missing field fails the check as it does in JavaScript.

use serde_json::Value;

/// p99 latency must be below this, ms.
pub const P99_MS: f64 = 100.0;
/// Delivery ratio must be at least this.
pub const MIN_RATIO: f64 = 0.999;
/// Achieved deliveries/s must be at least this share of the offered rate.
pub const MIN_ACHIEVED_FRAC: f64 = 0.95;

/// One line describing the SLO, for reports.
pub const DESCRIPTION: &str = "delivery ratio >= 0.999, p99 < 100 ms, achieved >= 95% of offered, \
     no connect/join failures, no disconnects";

fn num(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

/// JavaScript's truthiness of a number field (absent, null and 0 are false).
fn truthy(v: &Value, key: &str) -> bool {
    match v.get(key) {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|x| x != 0.0 && !x.is_nan()),
        Some(Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    }
}

fn show(v: Option<&Value>) -> String {
    match v {
        None => "undefined".into(),
        Some(Value::Null) => "null".into(),
        Some(v) => v.to_string(),
    }
}

/// Why the run misses the SLO; empty when it passes. The reasons are worded
/// as report.js words them.
pub fn failures(r: &Value) -> Vec<String> {
    let mut why = Vec::new();
    if truthy(r, "error") {
        let e = match r.get("error") {
            Some(Value::String(s)) => s.clone(),
            other => show(other),
        };
        why.push(format!("error: {e}"));
    }
    if truthy(r, "connect_failed") || truthy(r, "join_failed") {
        why.push("connect/join failures".into());
    }
    if !num(r, "delivery_ratio").is_some_and(|x| x >= MIN_RATIO) {
        why.push(format!(
            "delivery_ratio {} < {MIN_RATIO}",
            show(r.get("delivery_ratio"))
        ));
    }
    let p99 = r.get("latency_ms").and_then(|l| l.get("p99"));
    if !p99.and_then(Value::as_f64).is_some_and(|x| x < P99_MS) {
        why.push(format!("p99 {}ms >= {P99_MS}ms", show(p99)));
    }
    let achieved = num(r, "deliveries_per_s");
    let offered = num(r, "offered_deliveries_per_s");
    if !matches!((achieved, offered), (Some(a), Some(o)) if a >= MIN_ACHIEVED_FRAC * o) {
        why.push("achieved < 95% of offered".into());
    }
    if truthy(r, "disconnects_during_run") {
        why.push(format!(
            "{} disconnects",
            show(r.get("disconnects_during_run"))
        ));
    }
    why
}

/// Whether the run meets the SLO.
pub fn passes(r: &Value) -> bool {
    failures(r).is_empty()
}

/// `pass` or `FAIL: <reasons>`, as report.js prints it.
pub fn verdict(r: &Value) -> String {
    let why = failures(r);
    if why.is_empty() {
        "pass".into()
    } else {
        format!("FAIL: {}", why.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn good() -> Value {
        json!({
            "label": "C-100",
            "connect_failed": 0,
            "join_failed": 0,
            "delivery_ratio": 1.0,
            "latency_ms": {"p50": 3.0, "p99": 99.9},
            "offered_deliveries_per_s": 100000.0,
            "deliveries_per_s": 95000,
            "disconnects_during_run": 0,
        })
    }

    fn with(key: &str, v: Value) -> Value {
        let mut r = good();
        r[key] = v;
        r
    }

    #[test]
    fn passes_at_every_threshold() {
        assert_eq!(failures(&good()), Vec::<String>::new());
        assert_eq!(verdict(&good()), "pass");
        assert!(passes(&with("delivery_ratio", json!(0.999))));
    }

    #[test]
    fn each_rule_fails_on_its_own() {
        let cases = [
            (
                with("delivery_ratio", json!(0.9989)),
                "delivery_ratio 0.9989",
            ),
            (with("delivery_ratio", Value::Null), "delivery_ratio null"),
            (with("latency_ms", json!({"p99": 100.0})), "p99 100.0ms"),
            (with("latency_ms", json!({"p99": null})), "p99 nullms"),
            (with("deliveries_per_s", json!(94999)), "achieved < 95%"),
            (with("connect_failed", json!(1)), "connect/join failures"),
            (with("join_failed", json!(2)), "connect/join failures"),
            (with("disconnects_during_run", json!(3)), "3 disconnects"),
            (with("error", json!("boom")), "error: boom"),
        ];
        for (r, want) in cases {
            let why = failures(&r);
            assert_eq!(why.len(), 1, "{why:?}");
            assert!(why[0].starts_with(want), "{why:?} vs {want}");
            assert!(verdict(&r).starts_with("FAIL: "));
        }
    }

    #[test]
    fn a_row_without_measurements_fails() {
        // What run.sh writes when the servers did not start.
        let r = json!({"label": "C-25", "error": "servers failed to start"});
        let why = failures(&r);
        assert_eq!(why.len(), 4, "{why:?}");
        assert_eq!(why[0], "error: servers failed to start");
    }
}
