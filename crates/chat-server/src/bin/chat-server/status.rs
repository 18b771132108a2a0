//! The commands that ask a running server: `status` (`GET /admin/status`,
//! for a person or as JSON) and `healthcheck` (`GET /health/ready`, for
//! container health checks, which have no curl).

use anyhow::Context;
use chat_server::config::Config;
use chat_server::domain::Secret;
use std::time::Duration;

/// `chat-server status`: this instance and the cluster it sees.
pub async fn status(config: &Config, token: Option<Secret>, json: bool) -> anyhow::Result<()> {
    let bearer =
        token.or_else(|| (!config.admin.token.is_empty()).then(|| config.admin.token.clone()));
    // The admin listener, when there is one, speaks plain HTTP. Over TLS the
    // credential goes only to the server presenting the configured
    // certificate, never to whoever answers on the port.
    let (at, tls) = match config.admin.listen {
        Some(admin) => (admin, None),
        None if config.tls.enabled() => {
            let own = chat_server::tls::SelfCheck::own(&config.tls).context(
                "the server's certificate (tls.cert_file) is needed to check whom the admin token goes to",
            )?;
            (config.listen, Some(own))
        }
        None => (config.listen, None),
    };
    let (status, body) = chat_server::endpoint::health::get_own(
        at,
        tls,
        "/admin/status",
        bearer.as_ref().map(Secret::expose),
        Duration::from_secs(5),
    )
    .await
    .map_err(|e| {
        let cause = std::error::Error::source(&e)
            .map(ToString::to_string)
            .unwrap_or_default();
        if e.to_string().contains("certificate") || cause.contains("certificate") {
            anyhow::anyhow!(
                "{at} presents another certificate than tls.cert_file (rotated and not reloaded \
                 yet, or another process on the port); the token was not sent: {e}"
            )
        } else {
            anyhow::Error::new(e).context(format!("no answer from {at}"))
        }
    })?;
    match status {
        200 if json => println!("{}", body.trim()),
        200 => print!("{}", render_status(&body)?),
        404 => anyhow::bail!(
            "the admin endpoints are off on {at}: set admin.token (or turn on auth and pass --token)"
        ),
        _ => anyhow::bail!("HTTP {status}: {}", body.trim()),
    }
    Ok(())
}

/// `chat-server healthcheck`: exits 0 if the server is ready.
pub async fn healthcheck(config: &Config) -> anyhow::Result<()> {
    let (status, body) = chat_server::endpoint::health::probe(
        config.listen,
        config.tls.enabled(),
        Duration::from_secs(3),
    )
    .await
    .with_context(|| format!("no answer from {}", config.listen))?;
    println!("{}", body.trim());
    anyhow::ensure!(status == 200, "not ready (HTTP {status})");
    Ok(())
}

/// `GET /admin/status`'s answer, for a person.
fn render_status(body: &str) -> anyhow::Result<String> {
    use std::fmt::Write;
    let s: serde_json::Value = serde_json::from_str(body).context("not a status answer")?;
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("?").to_string();
    let mut out = String::new();
    writeln!(
        out,
        "{} (this instance): {}, {} connections, {} rooms; store {}, backplane {}",
        text(&s["server_id"]),
        text(&s["status"]),
        s["connections"],
        s["rooms"],
        text(&s["store"]),
        text(&s["backplane"]),
    )?;
    if let Some(checks) = s["checks"].as_object() {
        let list: Vec<String> = checks
            .iter()
            .map(|(k, v)| format!("{k} {}", text(v)))
            .collect();
        writeln!(out, "  checks: {}", list.join(", "))?;
    }
    if let Some(counters) = s["backplane_counters"].as_object() {
        let list: Vec<String> = counters.iter().map(|(k, v)| format!("{k} {v}")).collect();
        writeln!(out, "  backplane: {}", list.join(", "))?;
    }
    match s["instances"].as_array() {
        Some(others) if !others.is_empty() => {
            writeln!(out, "other instances it hears from:")?;
            for o in others {
                let ago = o["last_heard_ms"].as_u64().unwrap_or(0) as f64 / 1000.0;
                writeln!(
                    out,
                    "  {}: {} connections, {} rooms, last heard {ago:.1} s ago",
                    text(&o["server_id"]),
                    o["connections"],
                    o["rooms"],
                )?;
            }
        }
        _ => writeln!(out, "other instances it hears from: none")?,
    }
    Ok(out)
}
