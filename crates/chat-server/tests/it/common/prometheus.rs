//! `/metrics` read and checked as Prometheus text exposition.

use super::{HttpRequest, http};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Every sample, `name{labels}` → value, checking the format on the way:
/// each sample's family has a `# TYPE`, names are `chat_…`, counters end
/// in `_total`, and values parse.
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut types = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert!(name.starts_with("chat_"), "{name}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "counter {name} ends in _total");
            }
            types.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("series value");
        let name = series.split('{').next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "{name} has a # TYPE");
        samples.insert(series.to_string(), value.parse::<f64>().expect("a number"));
    }
    samples
}

/// Scrapes `GET /metrics` at `addr` (no credentials) and parses it.
pub async fn scrape_metrics(addr: SocketAddr) -> BTreeMap<String, f64> {
    let response = http(addr, HttpRequest::get("/metrics")).await;
    assert_eq!(response.status, 200, "{}", response.body);
    parse_metrics(&response.body)
}
