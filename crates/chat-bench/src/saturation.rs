//! Scenario C's stepping rule (the peer's run.sh): run the rates in list
//! order until the first step misses the SLO, then two bisection steps
//! (integer midpoint) between the best passing and the first failing rate,
//! skipped once they are at most 5 msg/s apart. The reported value is the
//! highest passing rate × clients per room.
//!
//! Each step needs fresh server processes, so the loop lives in the
//! script; the rule lives here, replayed from the steps already in the
//! results file (`<prefix>-<rate>` labels, in file order), which keeps the
//! script stateless and the rule testable.

use crate::slo;
use serde_json::Value;

/// The peer's list (25 … 300), extended so the stepping can go past our
/// goal of 400 msg/s per sender (400,000 deliveries/s with 1000 members).
pub const DEFAULT_RATES: &str = "25,50,75,100,125,150,200,300,400,600,800,1000,1200,1600,2000";

/// Bisection steps after the first failure.
pub const BISECTIONS: usize = 2;

/// Bisection stops when the failing and passing rates are this close.
pub const MIN_GAP: u64 = 5;

/// One step that ran.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// msg/s per sender.
    pub rate: u64,
    /// Whether it met the SLO.
    pub pass: bool,
    /// `pass` or `FAIL: …`.
    pub verdict: String,
}

/// Where the stepping stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Run this rate next.
    Run(u64),
    /// Stepping is over.
    Done {
        /// Highest passing rate (0: none passed).
        best: u64,
        /// Lowest failing rate above it (`None`: the list ran out first).
        first_fail: Option<u64>,
    },
}

/// Replays the rule over the steps that ran (in order) and says what comes
/// next. Steps are taken by position: the rate a step actually ran at is
/// what counts, whatever the list said.
pub fn next(rates: &[u64], steps: &[Step]) -> Next {
    let mut done = steps.iter();
    let mut best = 0;
    let mut fail = None;
    for &rate in rates {
        match done.next() {
            None => return Next::Run(rate),
            Some(s) if s.pass => best = best.max(s.rate),
            Some(s) => {
                fail = Some(s.rate);
                break;
            }
        }
    }
    let Some(mut fail) = fail else {
        return Next::Done {
            best,
            first_fail: None,
        };
    };
    for _ in 0..BISECTIONS {
        if fail <= best || fail - best <= MIN_GAP {
            break;
        }
        match done.next() {
            None => return Next::Run((best + fail) / 2),
            Some(s) if s.pass => best = best.max(s.rate),
            Some(s) => fail = fail.min(s.rate),
        }
    }
    Next::Done {
        best,
        first_fail: Some(fail),
    }
}

/// The rate of a `<prefix>-<rate>` label.
pub fn rate_of(label: &str, prefix: &str) -> Option<u64> {
    let rest = label.strip_prefix(prefix)?.strip_prefix('-')?;
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok()
}

/// The steps of one prefix among result rows, in row order.
pub fn steps(rows: &[Value], prefix: &str) -> Vec<Step> {
    rows.iter()
        .filter_map(|r| {
            let rate = rate_of(r.get("label")?.as_str()?, prefix)?;
            Some(Step {
                rate,
                pass: slo::passes(r),
                verdict: slo::verdict(r),
            })
        })
        .collect()
}

/// The outcome of the steps whatever list produced them: the highest
/// passing rate and the lowest failing rate above it (what the stepping
/// reports once it is over).
pub fn outcome(steps: &[Step]) -> (u64, Option<u64>) {
    let best = steps
        .iter()
        .filter(|s| s.pass)
        .map(|s| s.rate)
        .max()
        .unwrap_or(0);
    let first_fail = steps
        .iter()
        .filter(|s| !s.pass && s.rate > best)
        .map(|s| s.rate)
        .min();
    (best, first_fail)
}

/// The prefixes of saturation runs among result rows (`C`, and the peer's
/// `C-raw`), in order of first appearance: labels `<prefix>-<integer>`
/// whose prefix starts with `C`.
pub fn prefixes(rows: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in rows {
        let Some(label) = r.get("label").and_then(Value::as_str) else {
            continue;
        };
        let Some((prefix, _)) = label.rsplit_once('-') else {
            continue;
        };
        if prefix.starts_with('C')
            && rate_of(label, prefix).is_some()
            && !out.iter().any(|p| p == prefix)
        {
            out.push(prefix.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn default_rates() -> Vec<u64> {
        DEFAULT_RATES
            .split(',')
            .map(|s| s.parse().expect("number"))
            .collect()
    }

    fn step(rate: u64, pass: bool) -> Step {
        Step {
            rate,
            pass,
            verdict: String::new(),
        }
    }

    /// Runs the whole stepping against a system that passes below `limit`.
    fn run_against(rates: &[u64], limit: u64) -> (Vec<u64>, Next) {
        let mut ran = Vec::new();
        loop {
            match next(rates, &ran) {
                Next::Run(r) => {
                    assert!(ran.len() < 100, "stepping must end");
                    ran.push(step(r, r < limit));
                }
                done => return (ran.iter().map(|s| s.rate).collect(), done),
            }
        }
    }

    #[test]
    fn steps_until_the_first_failure_then_bisects_twice() {
        // The peer's reference run: 125 failed, then 112 and 106 failed.
        let (ran, done) = run_against(&[25, 50, 75, 100, 125, 150, 200, 300], 101);
        assert_eq!(ran, [25, 50, 75, 100, 125, 112, 106]);
        assert_eq!(
            done,
            Next::Done {
                best: 100,
                first_fail: Some(106)
            }
        );
        // A bisection step that passes raises the best.
        let (ran, done) = run_against(&default_rates(), 700);
        assert_eq!(
            ran,
            [25, 50, 75, 100, 125, 150, 200, 300, 400, 600, 800, 700, 650]
        );
        assert_eq!(
            done,
            Next::Done {
                best: 650,
                first_fail: Some(700)
            }
        );
    }

    #[test]
    fn edge_cases() {
        // Everything passes: the list runs out, no bisection.
        let (ran, done) = run_against(&[25, 50], u64::MAX);
        assert_eq!(ran, [25, 50]);
        assert_eq!(
            done,
            Next::Done {
                best: 50,
                first_fail: None
            }
        );
        // Nothing passes: bisect below the first rate, as the peer does.
        let (ran, done) = run_against(&[25, 50], 0);
        assert_eq!(ran, [25, 12, 6]);
        assert_eq!(
            done,
            Next::Done {
                best: 0,
                first_fail: Some(6)
            }
        );
        // Close rates: no bisection step when they are <= 5 apart.
        let (ran, _) = run_against(&[100, 104], 102);
        assert_eq!(ran, [100, 104]);
        // An empty list is over at once.
        assert_eq!(
            next(&[], &[]),
            Next::Done {
                best: 0,
                first_fail: None
            }
        );
    }

    #[test]
    fn outcome_matches_the_replay() {
        for limit in [0, 1, 30, 101, 399, 400, 401, 555, 5000] {
            let (ran, done) = run_against(&default_rates(), limit);
            let steps: Vec<Step> = ran.iter().map(|&r| step(r, r < limit)).collect();
            let (best, first_fail) = outcome(&steps);
            assert_eq!(done, Next::Done { best, first_fail }, "limit {limit}");
        }
    }

    #[test]
    fn reads_steps_from_result_rows() {
        let ok = |label: &str| {
            json!({"label": label, "connect_failed": 0, "join_failed": 0, "delivery_ratio": 1.0,
                   "latency_ms": {"p99": 5.0}, "offered_deliveries_per_s": 1000.0,
                   "deliveries_per_s": 1000, "disconnects_during_run": 0})
        };
        let rows = vec![
            ok("A"),
            ok("C-25"),
            ok("C-raw-25"),
            json!({"label": "C-50", "error": "servers failed to start"}),
            ok("C-37"),
            ok("single-C-25"),
        ];
        let s = steps(&rows, "C");
        assert_eq!(
            s.iter().map(|s| (s.rate, s.pass)).collect::<Vec<_>>(),
            [(25, true), (50, false), (37, true)]
        );
        assert!(
            s[1].verdict
                .starts_with("FAIL: error: servers failed to start")
        );
        assert_eq!(next(&[25, 50, 75], &s), Next::Run(43));
        assert_eq!(prefixes(&rows), ["C", "C-raw"]);
        assert_eq!(rate_of("C-raw-25", "C"), None);
        assert_eq!(rate_of("C-", "C"), None);
        assert_eq!(rate_of("C-+5", "C"), None);
    }
}
