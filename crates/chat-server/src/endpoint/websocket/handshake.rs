//! The WebSocket opening handshake (RFC 6455 §4), server side: the HTTP/1.1
//! request head read with a size bound and a deadline, checked (method,
//! path, upgrade headers, version, the `chat.v1` subprotocol, the Origin),
//! the credentials taken from the subprotocol list, and the answer written:
//! `101 Switching Protocols`, or a plain HTTP refusal.

use crate::domain::Secret;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::BytesMut;
use sha1::{Digest, Sha1};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The path of the endpoint (docs/PROTOCOL.md).
pub const PATH: &str = "/v1/ws";
/// The subprotocol every client offers and the server selects.
pub const SUBPROTOCOL: &str = "chat.v1";
/// Largest request head accepted: above a browser's with cookies and a
/// token in the protocol list, and bounded.
const MAX_HEAD: usize = 16 * 1024;
/// Headers parsed at most.
const MAX_HEADERS: usize = 64;
/// RFC 6455's GUID for `Sec-WebSocket-Accept`.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// What the client offers as credentials.
#[derive(Debug, PartialEq, Eq)]
pub enum Credentials {
    /// `bearer.<JWT>`.
    Bearer(Secret),
    /// `name.<base64url>`, decoded (not yet validated).
    Name(String),
    /// Neither.
    None,
}

/// A request that may be upgraded.
#[derive(Debug)]
pub struct Upgrade {
    /// `Sec-WebSocket-Key`, for the accept value.
    key: String,
    /// The credentials from the subprotocol list.
    pub credentials: Credentials,
    /// Bytes the client sent after the head (its first frames, if eager).
    pub rest: BytesMut,
}

/// A refusal before the upgrade: the status line and a short body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status.
    pub status: u16,
    /// Said in the body and the log.
    pub why: &'static str,
}

impl Refusal {
    fn bad(why: &'static str) -> Refusal {
        Refusal { status: 400, why }
    }

    /// The server is shutting down.
    pub const SHUTTING_DOWN: Refusal = Refusal {
        status: 503,
        why: "the server is shutting down",
    };
}

/// Which `Origin`s may open a session: loopback ones, the configured ones,
/// and the server's own (the `Host` the request was sent to). The last only
/// with authentication on or a loopback `Host`: with auth off, a page whose
/// name was rebound to this server's address (DNS rebinding) would
/// otherwise pass as same-origin.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    /// `websocket.allowed_origins`, lower-cased, without a trailing `/`.
    allowed: Vec<String>,
    /// Whether tokens are required (same-origin by `Host` is then safe).
    auth: bool,
}

impl Origins {
    /// The default rule plus `allowed`; `auth`: whether tokens are required.
    pub fn new(allowed: &[String], auth: bool) -> Origins {
        Origins {
            allowed: allowed
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
            auth,
        }
    }

    /// Whether a request from `origin` to `host` may open a session.
    pub fn allows(&self, origin: &str, host: Option<&str>) -> bool {
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        let Some((scheme, authority)) = origin.split_once("://") else {
            return false;
        };
        if (scheme != "http" && scheme != "https") || authority.contains(['@', '/', '\\']) {
            return false;
        }
        if self.allowed.contains(&origin) || is_loopback(authority) {
            return true;
        }
        let host = host.map(str::to_ascii_lowercase);
        host.is_some_and(|host| authority == host && (self.auth || is_loopback(&host)))
    }
}

/// Whether `authority` (`name[:port]`) names this machine's loopback.
fn is_loopback(authority: &str) -> bool {
    let name = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    matches!(name, "localhost" | "127.0.0.1" | "::1")
}

/// Reads and checks the request head on `io` (whose first bytes may already
/// be in `buf`), within `deadline`.
pub async fn read<S>(
    io: &mut S,
    mut buf: BytesMut,
    origins: &Origins,
    deadline: Duration,
) -> Result<Upgrade, Refusal>
where
    S: AsyncRead + Unpin,
{
    let head_end = tokio::time::timeout(deadline, async {
        loop {
            if let Some(end) = find_head_end(&buf) {
                return Ok(end);
            }
            if buf.len() >= MAX_HEAD {
                return Err(Refusal {
                    status: 431,
                    why: "request head too large",
                });
            }
            buf.reserve(1024);
            match io.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return Err(Refusal::bad("the connection closed mid-request")),
                Ok(_) => {}
            }
        }
    })
    .await
    .map_err(|_| Refusal {
        status: 408,
        why: "request head not received in time",
    })??;
    let head = buf.split_to(head_end);
    let mut upgrade = check(&head, origins)?;
    upgrade.rest = buf;
    Ok(upgrade)
}

/// Where the head ends (after its blank line), if it is all there.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Checks a whole request head.
fn check(head: &[u8], origins: &Origins) -> Result<Upgrade, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(Refusal::bad("malformed HTTP request")),
    }
    if request.method != Some("GET") {
        return Err(Refusal::bad("a WebSocket upgrade is a GET"));
    }
    let path = request.path.unwrap_or_default();
    if path.split('?').next() != Some(PATH) {
        return Err(Refusal {
            status: 404,
            why: "no such endpoint",
        });
    }
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    let has_token = |name: &str, token: &str| {
        request
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| std::str::from_utf8(h.value).ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
        return Err(Refusal::bad("not a WebSocket upgrade"));
    }
    if header("sec-websocket-version").map(str::trim) != Some("13") {
        return Err(Refusal {
            status: 426,
            why: "Sec-WebSocket-Version 13 is required",
        });
    }
    let key = header("sec-websocket-key")
        .map(str::trim)
        .unwrap_or_default();
    if STANDARD.decode(key).map(|k| k.len()) != Ok(16) {
        return Err(Refusal::bad("Sec-WebSocket-Key is not 16 bytes in base64"));
    }
    let mut given = request
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("origin"));
    if let Some(origin) = given.next() {
        let allowed = std::str::from_utf8(origin.value)
            .is_ok_and(|origin| origins.allows(origin, header("host")));
        // One Origin, readable, allowed.
        if !allowed || given.next().is_some() {
            return Err(Refusal {
                status: 403,
                why: "this Origin may not open chat sessions (websocket.allowed_origins)",
            });
        }
    }
    let offered: Vec<&str> = request
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-protocol"))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    if !offered.contains(&SUBPROTOCOL) {
        return Err(Refusal::bad("offer the chat.v1 subprotocol"));
    }
    Ok(Upgrade {
        key: key.to_string(),
        credentials: credentials(&offered),
        rest: BytesMut::new(),
    })
}

/// The credentials among the offered subprotocols.
fn credentials(offered: &[&str]) -> Credentials {
    for protocol in offered {
        if let Some(token) = protocol.strip_prefix("bearer.") {
            return Credentials::Bearer(Secret::new(token));
        }
        if let Some(name) = protocol.strip_prefix("name.") {
            return match URL_SAFE_NO_PAD.decode(name).map(String::from_utf8) {
                Ok(Ok(name)) => Credentials::Name(name),
                // Not a name: refused by the name check (empty).
                _ => Credentials::Name(String::new()),
            };
        }
    }
    Credentials::None
}

/// Writes `101 Switching Protocols` for `upgrade`.
pub async fn accept<S>(io: &mut S, upgrade: &Upgrade) -> std::io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    let mut sha = Sha1::new();
    sha.update(upgrade.key.as_bytes());
    sha.update(GUID.as_bytes());
    let accept = STANDARD.encode(sha.finalize());
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\r\n"
    );
    io.write_all(answer.as_bytes()).await?;
    io.flush().await
}

/// Writes `refusal` as a plain HTTP answer and closes.
pub async fn refuse<S>(io: &mut S, refusal: Refusal) -> std::io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    let reason = match refusal.status {
        400 => "Bad Request",
        403 => "Forbidden",
        426 => "Upgrade Required",
        404 => "Not Found",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let body = format!("{}\n", refusal.why);
    // A version mismatch says which version is spoken (RFC 6455 §4.4).
    let version = if refusal.status == 426 {
        "Sec-WebSocket-Version: 13\r\n"
    } else {
        ""
    };
    let answer = format!(
        "HTTP/1.1 {} {reason}\r\n{version}Content-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        refusal.status,
        body.len()
    );
    io.write_all(answer.as_bytes()).await?;
    io.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(extra: &str) -> String {
        format!(
            "GET /v1/ws HTTP/1.1\r\nHost: chat.example.com:5000\r\nUpgrade: websocket\r\n\
             Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
        )
    }

    fn checked(extra: &str) -> Result<Upgrade, Refusal> {
        check(request(extra).as_bytes(), &Origins::new(&[], true))
    }

    #[test]
    fn a_browser_upgrade_with_a_token_is_accepted() {
        let upgrade = checked(
            "Origin: http://chat.example.com:5000\r\nSec-WebSocket-Protocol: chat.v1, bearer.aaa.bbb.ccc\r\n",
        )
        .unwrap();
        assert_eq!(
            upgrade.credentials,
            Credentials::Bearer(Secret::new("aaa.bbb.ccc"))
        );
    }

    #[test]
    fn names_travel_in_base64url() {
        let name = URL_SAFE_NO_PAD.encode("Zoë".as_bytes());
        let upgrade = checked(&format!(
            "Sec-WebSocket-Protocol: chat.v1\r\nSec-WebSocket-Protocol: name.{name}\r\n"
        ))
        .unwrap();
        assert_eq!(upgrade.credentials, Credentials::Name("Zoë".into()));
    }

    #[test]
    fn refusals_say_why() {
        let status = |extra: &str| checked(extra).unwrap_err().status;
        assert_eq!(status(""), 400, "no chat.v1");
        assert_eq!(
            status("Origin: https://evil.example\r\nSec-WebSocket-Protocol: chat.v1\r\n"),
            403
        );
        assert_eq!(
            status("Origin: null\r\nSec-WebSocket-Protocol: chat.v1\r\n"),
            403
        );
        let no_upgrade =
            request("Sec-WebSocket-Protocol: chat.v1\r\n").replace("Upgrade: websocket\r\n", "");
        assert_eq!(
            check(no_upgrade.as_bytes(), &Origins::new(&[], true))
                .unwrap_err()
                .status,
            400
        );
        let old =
            request("Sec-WebSocket-Protocol: chat.v1\r\n").replace("Version: 13", "Version: 8");
        assert_eq!(
            check(old.as_bytes(), &Origins::new(&[], true))
                .unwrap_err()
                .status,
            426
        );
        let other = request("Sec-WebSocket-Protocol: chat.v1\r\n").replace("/v1/ws", "/v2/ws");
        assert_eq!(
            check(other.as_bytes(), &Origins::new(&[], true))
                .unwrap_err()
                .status,
            404
        );
    }

    #[test]
    fn origins_own_loopback_and_configured() {
        let origins = Origins::new(&["https://Chat.Example.com/".to_string()], true);
        let host = Some("server:5000");
        assert!(origins.allows("http://server:5000", host));
        // Same-origin by Host only with auth on (DNS rebinding), or loopback.
        let open = Origins::new(&[], false);
        assert!(!open.allows("http://server:5000", host));
        assert!(open.allows("http://127.0.0.1:5000", Some("127.0.0.1:5000")));
        assert!(!origins.allows("http://localhost:1@evil.example", host));
        assert!(origins.allows("http://localhost:8080", host));
        assert!(origins.allows("http://127.0.0.1", host));
        assert!(origins.allows("http://[::1]:3000", host));
        assert!(origins.allows("https://chat.example.com", host));
        assert!(!origins.allows("https://evil.example", host));
        assert!(!origins.allows("http://localhost.evil.example", host));
        assert!(!origins.allows("file://", host));
        assert!(!origins.allows("null", host));
    }

    #[tokio::test]
    async fn the_accept_value_follows_rfc_6455() {
        let upgrade = checked("Sec-WebSocket-Protocol: chat.v1\r\n").unwrap();
        let mut out = Vec::new();
        accept(&mut out, &upgrade).await.unwrap();
        let answer = String::from_utf8(out).unwrap();
        // RFC 6455 §1.3's example key and answer.
        assert!(answer.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(answer.contains("Sec-WebSocket-Protocol: chat.v1\r\n"));
    }

    #[tokio::test]
    async fn a_head_that_never_ends_is_bounded() {
        let endless = vec![b'a'; MAX_HEAD + 10];
        let err = read(
            &mut &endless[..],
            BytesMut::new(),
            &Origins::default(),
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert_eq!(err.status, 431);
    }
}
