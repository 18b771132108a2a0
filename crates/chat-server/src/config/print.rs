//! `--print-config`: the configuration as TOML, with nothing secret in it.

use super::Config;

impl Config {
    /// The configuration as TOML, as `--print-config` shows it: secrets
    /// (a [`Secret`] serializes as `<redacted>`) and credentials inside
    /// URLs are shown as `<redacted>`.
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        for url in [
            &mut shown.store.url,
            &mut shown.redis.url,
            &mut shown.nats.url,
        ] {
            *url = redact_url(url);
        }
        shown.webhooks.url = redact_path(&shown.webhooks.url);
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// `url` with everything after its host replaced by `<redacted>`: a
/// webhook URL's path and query may be its credential (Slack's
/// `/services/T…/B…/…`, a token parameter).
pub fn redact_path(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    match authority_end < rest.len() && &rest[authority_end..] != "/" {
        true => format!("{}{authority}/<redacted>", &url[..scheme_end]),
        false => format!(
            "{}{authority}{}",
            &url[..scheme_end],
            &rest[authority_end..]
        ),
    }
}

/// `url` with the credentials it carries replaced by `<redacted>`: the
/// password of `user:password@` (or the whole user part without a colon:
/// a NATS token or a Redis password alone), and the values of query
/// parameters that name a password, secret, token or key
/// (`?password=…`, `sslpassword`, `sslkey` stay paths but are redacted too).
pub fn redact_url(url: &str) -> String {
    const REDACTED: &str = "<redacted>";
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let mut out = url[..scheme_end].to_string();
    match authority.rfind('@') {
        Some(at) => {
            let (userinfo, host) = authority.split_at(at);
            match userinfo.split_once(':') {
                Some((user, _)) => out.push_str(&format!("{user}:{REDACTED}")),
                None => out.push_str(REDACTED),
            }
            out.push_str(host);
        }
        None => out.push_str(authority),
    }
    let (path, query) = match tail.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (tail, None),
    };
    out.push_str(path);
    if let Some(query) = query {
        let (query, fragment) = match query.split_once('#') {
            Some((query, fragment)) => (query, Some(fragment)),
            None => (query, None),
        };
        let sensitive = |name: &str| {
            let name = name.to_ascii_lowercase();
            ["password", "secret", "token", "key"]
                .iter()
                .any(|word| name.contains(word))
        };
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if sensitive(name) => format!("{name}={REDACTED}"),
                _ => pair.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
        if let Some(fragment) = fragment {
            out.push('#');
            out.push_str(fragment);
        }
    }
    out
}
