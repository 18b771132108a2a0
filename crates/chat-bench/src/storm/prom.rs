//! The servers' own counters: `GET /metrics` (Prometheus text) from each
//! instance, and what a storm reports from two scrapes — the store
//! queries of joins, the presence frames sent, the store pool's waits.
//! A server that does not answer, or a metric it does not have (yet),
//! gives `null`, never a failure. Also the plain HTTP GET both use (the
//! scrape, and `/health/ready` while an instance restarts).

use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The join's store queries (summed over its labels).
pub const JOIN_QUERIES: &str = "chat_join_store_queries_total";
/// Presence frames sent to clients.
pub const PRESENCE_FRAMES: &str = "chat_presence_frames_total";
/// The store pool's waits for a connection (a histogram).
pub const POOL_WAIT: &str = "chat_store_pool_wait_seconds";

/// Largest answer read.
const MAX_BODY: u64 = 32 * 1024 * 1024;

/// `GET path` on the server at `url` (`http://host:port`) over HTTP/1.0;
/// its status and body.
pub async fn get(url: &str, path: &str, timeout: Duration) -> Option<(u16, String)> {
    let authority = url
        .strip_prefix("http://")
        .unwrap_or(url)
        .split('/')
        .next()?
        .to_string();
    let fetch = async {
        let mut s = TcpStream::connect(&authority).await.ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n");
        s.write_all(request.as_bytes()).await.ok()?;
        let mut bytes = Vec::new();
        s.take(MAX_BODY).read_to_end(&mut bytes).await.ok()?;
        let text = String::from_utf8_lossy(&bytes);
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, body.to_string()))
    };
    tokio::time::timeout(timeout, fetch).await.ok().flatten()
}

/// One instance's `/metrics`, parsed.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    /// Sample values by series (`name{labels}` as written).
    samples: BTreeMap<String, f64>,
    /// Metric names declared by a `# TYPE` line.
    declared: Vec<String>,
}

/// The name of a series (`name{labels}` or `name`).
fn name_of(series: &str) -> &str {
    series.split('{').next().unwrap_or(series)
}

/// The value of label `key` in a series, if it has it.
fn label<'a>(series: &'a str, key: &str) -> Option<&'a str> {
    let labels = series.split_once('{')?.1.strip_suffix('}')?;
    labels.split(',').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"'))
    })
}

impl Scrape {
    /// Parses Prometheus text exposition.
    pub fn parse(text: &str) -> Scrape {
        let mut out = Scrape::default();
        for line in text.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                if let Some(name) = rest.split_whitespace().next() {
                    out.declared.push(name.to_string());
                }
                continue;
            }
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // The value follows the series (whose labels may hold spaces).
            let split = line.rfind('}').map_or(0, |i| i + 1);
            let (series, rest) = line.split_at(split.max(line.find(' ').unwrap_or(0)));
            let value = rest.split_whitespace().next().and_then(|v| v.parse().ok());
            if let Some(v) = value {
                out.samples.insert(series.trim().to_string(), v);
            }
        }
        out
    }

    /// Scrapes `url`'s `/metrics`; `None` if it does not answer 200.
    pub async fn fetch(url: &str) -> Option<Scrape> {
        match get(url, "/metrics", Duration::from_secs(5)).await {
            Some((200, body)) => Some(Scrape::parse(&body)),
            _ => None,
        }
    }

    /// Whether the server has metric `name` (a sample, or its `# TYPE`,
    /// also as a histogram's `_count`, `_sum` or `_bucket`).
    fn has(&self, name: &str) -> bool {
        let base = ["_count", "_sum", "_bucket"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        self.declared.iter().any(|d| d == name || d == base)
            || self.samples.keys().any(|s| name_of(s) == name)
    }

    /// Σ of `name` over its labels; `None` if the server does not have it.
    pub fn sum(&self, name: &str) -> Option<f64> {
        self.has(name).then(|| {
            self.samples
                .iter()
                .filter(|(s, _)| name_of(s) == name)
                .map(|(_, v)| v)
                .sum()
        })
    }

    /// A histogram's cumulative bucket counts by upper bound (`le` as
    /// written), summed over its other labels.
    pub fn buckets(&self, name: &str) -> BTreeMap<String, f64> {
        let bucket = format!("{name}_bucket");
        let mut out = BTreeMap::new();
        for (s, v) in &self.samples {
            if name_of(s) == bucket
                && let Some(le) = label(s, "le")
            {
                *out.entry(le.to_string()).or_insert(0.0) += v;
            }
        }
        out
    }
}

/// `after − before` of `name` summed over the instances, where instance
/// `i` was scraped as `before[i]` and `after[i]`. `None` when an instance
/// did not answer after, or does not have the metric; a `before` scrape
/// that is missing or lacks it counts as 0 (a restarted instance starts
/// from 0).
pub fn delta(before: &[Option<Scrape>], after: &[Option<Scrape>], name: &str) -> Option<f64> {
    if after.is_empty() {
        return None;
    }
    let mut total = 0.0;
    for (i, a) in after.iter().enumerate() {
        let a = a.as_ref()?.sum(name)?;
        let b = before
            .get(i)
            .and_then(Option::as_ref)
            .and_then(|b| b.sum(name))
            .unwrap_or(0.0);
        total += a - b;
    }
    Some(total)
}

/// The bucket bound (`le`) that the slowest of the waits between two
/// scrapes reached: the smallest bound holding all of them.
pub fn max_bucket(
    before: &[Option<Scrape>],
    after: &[Option<Scrape>],
    name: &str,
) -> Option<String> {
    let mut counts: BTreeMap<String, f64> = BTreeMap::new();
    for (i, a) in after.iter().enumerate() {
        let a = a.as_ref()?;
        let b = before.get(i).and_then(Option::as_ref);
        for (le, v) in a.buckets(name) {
            let was = b
                .and_then(|b| b.buckets(name).get(&le).copied())
                .unwrap_or(0.0);
            *counts.entry(le).or_insert(0.0) += v - was;
        }
    }
    let total = delta(before, after, &format!("{name}_count"))?;
    if total <= 0.0 {
        return None;
    }
    let bound = |le: &str| {
        if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or(f64::INFINITY)
        }
    };
    counts
        .into_iter()
        .filter(|(_, c)| *c >= total)
        .min_by(|(a, _), (b, _)| bound(a).total_cmp(&bound(b)))
        .map(|(le, _)| le)
}

/// What the servers' counters say about a window (every field `null`
/// where the servers do not have the metric).
#[derive(Clone, Debug, Default, Serialize)]
pub struct ServerCounters {
    /// Δ `chat_join_store_queries_total`, over its labels.
    pub store_queries: Option<f64>,
    /// `store_queries` per join (or rejoin).
    pub store_queries_per_join: Option<f64>,
    /// Δ `chat_presence_frames_total`.
    pub presence_frames_sent: Option<f64>,
    /// Δ `chat_store_pool_wait_seconds_count`: waits for a pool connection.
    pub pool_waits: Option<f64>,
    /// Δ `chat_store_pool_wait_seconds_sum`, seconds.
    pub pool_wait_s: Option<f64>,
    /// The bucket bound (`le`) the slowest wait reached.
    pub pool_wait_max_le: Option<String>,
    /// Instances that answered `/metrics` at the end, of those asked.
    pub scraped: String,
}

impl ServerCounters {
    /// The window between two scrapes of every instance, for `joins` joins.
    pub fn between(before: &[Option<Scrape>], after: &[Option<Scrape>], joins: u64) -> Self {
        let queries = delta(before, after, JOIN_QUERIES);
        let r3 = |x: f64| (x * 1000.0).round() / 1000.0;
        ServerCounters {
            store_queries: queries,
            store_queries_per_join: queries.filter(|_| joins > 0).map(|q| r3(q / joins as f64)),
            presence_frames_sent: delta(before, after, PRESENCE_FRAMES),
            pool_waits: delta(before, after, &format!("{POOL_WAIT}_count")),
            pool_wait_s: delta(before, after, &format!("{POOL_WAIT}_sum")).map(r3),
            pool_wait_max_le: max_bucket(before, after, POOL_WAIT),
            scraped: format!("{}/{}", after.iter().flatten().count(), after.len()),
        }
    }
}

/// Scrapes every URL, in order.
pub async fn scrape_all(urls: &[String]) -> Vec<Option<Scrape>> {
    futures::future::join_all(urls.iter().map(|u| Scrape::fetch(u))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "# HELP chat_join_store_queries_total Store queries of joins.\n\
        # TYPE chat_join_store_queries_total counter\n\
        chat_join_store_queries_total{kind=\"latest\"} 3\n\
        chat_join_store_queries_total{kind=\"backlog\"} 1\n\
        # TYPE chat_store_pool_wait_seconds histogram\n\
        chat_store_pool_wait_seconds_bucket{le=\"0.001\"} 2\n\
        chat_store_pool_wait_seconds_bucket{le=\"0.01\"} 2\n\
        chat_store_pool_wait_seconds_bucket{le=\"+Inf\"} 2\n\
        chat_store_pool_wait_seconds_sum 0.0005\n\
        chat_store_pool_wait_seconds_count 2\n\
        chat_rooms 4\n";

    const AFTER: &str = "# TYPE chat_join_store_queries_total counter\n\
        chat_join_store_queries_total{kind=\"latest\"} 13\n\
        chat_join_store_queries_total{kind=\"backlog\"} 1\n\
        # TYPE chat_presence_frames_total counter\n\
        # TYPE chat_store_pool_wait_seconds histogram\n\
        chat_store_pool_wait_seconds_bucket{le=\"0.001\"} 3\n\
        chat_store_pool_wait_seconds_bucket{le=\"0.01\"} 5\n\
        chat_store_pool_wait_seconds_bucket{le=\"+Inf\"} 5\n\
        chat_store_pool_wait_seconds_sum 0.0205\n\
        chat_store_pool_wait_seconds_count 5\n\
        chat_rooms 9\n";

    #[test]
    fn sums_over_labels_and_knows_what_is_missing() {
        let s = Scrape::parse(BEFORE);
        assert_eq!(s.sum(JOIN_QUERIES), Some(4.0));
        assert_eq!(s.sum("chat_rooms"), Some(4.0));
        assert_eq!(s.sum(PRESENCE_FRAMES), None);
        assert_eq!(s.sum("chat_store_pool_wait_seconds_count"), Some(2.0));
        // Declared without samples yet: 0, not missing.
        assert_eq!(Scrape::parse(AFTER).sum(PRESENCE_FRAMES), Some(0.0));
        assert_eq!(label("x{a=\"1\",le=\"+Inf\"}", "le"), Some("+Inf"));
    }

    #[test]
    fn deltas_over_instances() {
        let before = vec![Some(Scrape::parse(BEFORE)), Some(Scrape::parse(BEFORE))];
        let after = vec![Some(Scrape::parse(AFTER)), Some(Scrape::parse(AFTER))];
        let c = ServerCounters::between(&before, &after, 10);
        assert_eq!(c.store_queries, Some(20.0));
        assert_eq!(c.store_queries_per_join, Some(2.0));
        assert_eq!(c.presence_frames_sent, Some(0.0));
        assert_eq!(c.pool_waits, Some(6.0));
        assert_eq!(c.pool_wait_s, Some(0.04));
        // 4 of the 6 new waits are above 1 ms, all within 10 ms.
        assert_eq!(c.pool_wait_max_le.as_deref(), Some("0.01"));
        assert_eq!(c.scraped, "2/2");
        // An instance that did not answer: null, not a failure.
        let c = ServerCounters::between(&before, &[Some(Scrape::parse(AFTER)), None], 10);
        assert_eq!((c.store_queries, c.scraped.as_str()), (None, "1/2"));
        // A restarted instance (no scrape before) counts from 0.
        assert_eq!(
            delta(&[None], &[Some(Scrape::parse(AFTER))], JOIN_QUERIES),
            Some(14.0)
        );
        // Servers without these metrics at all.
        let bare = vec![Some(Scrape::parse("chat_rooms 1\n"))];
        let c = ServerCounters::between(&bare, &bare, 10);
        assert_eq!(
            (c.store_queries, c.pool_waits, c.pool_wait_max_le),
            (None, None, None)
        );
    }
}
