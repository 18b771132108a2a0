//! One small HTTP/1.1 client for the server's own HTTP endpoints (health,
//! metrics, admin), used by `chat-server status` and `healthcheck` and by
//! the tests.
//!
//! An [`HttpRequest`] is a method, a path, an optional bearer token and an
//! optional JSON body; [`HttpClient::send`] sends it on a connection of
//! its own (`Connection: close`), reads the answer until the server closes
//! it — at most [`HttpClient::max_response_bytes`], all within
//! [`HttpClient::timeout`] — and parses the status line and headers once
//! into an [`HttpResponse`] (a chunked body is decoded). With
//! [`HttpClient::tls`] it speaks TLS to a server asking itself, checking
//! the certificate as a [`crate::tls::SelfCheck`] says
//! ([`crate::tls::connect_to_self`]).

use std::io::{Error, ErrorKind};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// What to ask.
#[derive(Clone, Copy)]
pub struct HttpRequest<'a> {
    /// `GET`, `POST`, `PUT`, …
    pub method: &'a str,
    /// The path (and query) asked for, e.g. `/health/ready`.
    pub path: &'a str,
    /// Sent as `Authorization: Bearer …` when set.
    pub bearer: Option<&'a str>,
    /// Sent as the body, with `Content-Type: application/json`, when set.
    pub json: Option<&'a str>,
}

impl std::fmt::Debug for HttpRequest<'_> {
    /// Never shows the bearer token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("bearer", &self.bearer.map(|_| "<redacted>"))
            .field("json", &self.json)
            .finish()
    }
}

impl<'a> HttpRequest<'a> {
    /// A request without credentials or body.
    pub fn new(method: &'a str, path: &'a str) -> Self {
        HttpRequest {
            method,
            path,
            bearer: None,
            json: None,
        }
    }

    /// `GET path`.
    pub fn get(path: &'a str) -> Self {
        HttpRequest::new("GET", path)
    }

    /// With `token` (if any) as the bearer token.
    pub fn bearer(self, token: impl Into<Option<&'a str>>) -> Self {
        HttpRequest {
            bearer: token.into(),
            ..self
        }
    }

    /// With `body` as its JSON body.
    pub fn json(self, body: &'a str) -> Self {
        HttpRequest {
            json: Some(body),
            ..self
        }
    }

    /// The request as sent.
    fn encode(&self) -> String {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n",
            self.method, self.path
        );
        if let Some(token) = self.bearer {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        let body = self.json.unwrap_or_default();
        if self.json.is_some() {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head + "\r\n" + body
    }
}

/// What came back.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    /// The status code, from the status line.
    pub status: u16,
    /// The headers as sent (names as the server spelled them).
    pub headers: Vec<(String, String)>,
    /// The body (decoded if chunked), as text (invalid UTF-8 replaced).
    pub body: String,
}

impl HttpResponse {
    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Parses a whole response, as read until the server closed.
    fn parse(raw: &[u8]) -> std::io::Result<HttpResponse> {
        let invalid = |what: &str| Error::new(ErrorKind::InvalidData, what.to_string());
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| invalid("not an HTTP response: no end of headers"))?;
        let head = String::from_utf8_lossy(&raw[..end]);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let (version, code) = (parts.next(), parts.next());
        let status = match (version, code) {
            (Some(v), Some(c)) if v.starts_with("HTTP/1.") && c.len() == 3 => c.parse().ok(),
            _ => None,
        }
        .ok_or_else(|| invalid(&format!("not an HTTP status line: {status_line:?}")))?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        let mut response = HttpResponse {
            status,
            headers,
            body: String::new(),
        };
        let body = &raw[end + 4..];
        let chunked = response
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        response.body = if chunked {
            String::from_utf8_lossy(&dechunk(body).ok_or_else(|| invalid("bad chunked body"))?)
                .into_owned()
        } else {
            String::from_utf8_lossy(body).into_owned()
        };
        Ok(response)
    }
}

/// The data of a chunked body; `None` when it is malformed or cut short.
fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut data = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        // Chunk extensions (`;name=value`) are allowed and ignored.
        let size_hex = size_text.split(';').next()?.trim();
        let size = usize::from_str_radix(size_hex, 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(data);
        }
        data.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

/// Where and how to ask: one server address, and the bounds of one
/// exchange.
#[derive(Clone, Debug)]
pub struct HttpClient {
    /// The server; an unspecified address (`0.0.0.0`, `::`) is asked on
    /// loopback, as a server's own listen address means "here".
    addr: SocketAddr,
    /// Whether to speak TLS, and how the certificate is checked.
    tls: Option<crate::tls::SelfCheck>,
    /// Bound on connecting, sending and reading the whole answer.
    timeout: Duration,
    /// The largest response (head and body) accepted; a longer one is an
    /// error rather than buffered.
    max_response_bytes: usize,
}

impl HttpClient {
    /// Plain HTTP to `addr`, a 5 s timeout and answers up to 64 KiB.
    pub fn new(addr: SocketAddr) -> Self {
        let mut addr = addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
            });
        }
        HttpClient {
            addr,
            tls: None,
            timeout: Duration::from_secs(5),
            max_response_bytes: 64 * 1024,
        }
    }

    /// Over TLS when `tls` is given, checking the certificate as it says.
    pub fn tls(self, tls: Option<crate::tls::SelfCheck>) -> Self {
        HttpClient { tls, ..self }
    }

    /// With `timeout` for the whole exchange.
    pub fn timeout(self, timeout: Duration) -> Self {
        HttpClient { timeout, ..self }
    }

    /// Accepting answers up to `bytes`.
    pub fn max_response_bytes(self, bytes: usize) -> Self {
        HttpClient {
            max_response_bytes: bytes,
            ..self
        }
    }

    /// Sends `request` and reads the answer (see the module documentation).
    pub async fn send(&self, request: &HttpRequest<'_>) -> std::io::Result<HttpResponse> {
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect(self.addr).await?;
            if let Some(check) = &self.tls {
                let stream = crate::tls::connect_to_self(tcp, check).await?;
                self.exchange(stream, request).await
            } else {
                self.exchange(tcp, request).await
            }
        };
        let raw = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| Error::new(ErrorKind::TimedOut, "no answer in time"))??;
        HttpResponse::parse(&raw)
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> std::io::Result<HttpResponse> {
        self.send(&HttpRequest::get(path)).await
    }

    /// Writes the request and reads until the server closes (bounded).
    async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut stream: S,
        request: &HttpRequest<'_>,
    ) -> std::io::Result<Vec<u8>> {
        stream.write_all(request.encode().as_bytes()).await?;
        let mut raw = Vec::new();
        // One byte over the bound tells a response that is too long.
        let limit = self.max_response_bytes as u64 + 1;
        let read = (&mut stream).take(limit).read_to_end(&mut raw).await;
        // A TLS peer may close without close_notify after the answer.
        if raw.is_empty() {
            read?;
        }
        if raw.len() > self.max_response_bytes {
            return Err(Error::new(
                ErrorKind::InvalidData,
                format!("answer longer than {} bytes", self.max_response_bytes),
            ));
        }
        Ok(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_the_token_and_the_json_body() {
        let plain = HttpRequest::get("/health/ready").encode();
        assert_eq!(
            plain,
            "GET /health/ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        );
        let full = HttpRequest::new("PUT", "/admin/log-level")
            .bearer("ops")
            .json(r#"{"level":"info"}"#)
            .encode();
        assert!(full.contains("Authorization: Bearer ops\r\n"), "{full}");
        assert!(
            full.contains("Content-Type: application/json\r\n"),
            "{full}"
        );
        assert!(full.ends_with("Content-Length: 16\r\n\r\n{\"level\":\"info\"}"));
        assert!(
            !HttpRequest::get("/")
                .bearer(None)
                .encode()
                .contains("Bearer")
        );
    }

    #[test]
    fn the_status_line_headers_and_body_are_parsed_once() {
        let r = HttpResponse::parse(
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
        )
        .unwrap();
        assert_eq!(r.status, 503);
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        assert_eq!(r.body, "{}");
        let chunked = HttpResponse::parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n7;x=y\r\n, world\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(chunked.body, "hello, world");
        for bad in [
            &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
        ] {
            assert_eq!(
                HttpResponse::parse(bad).unwrap_err().kind(),
                ErrorKind::InvalidData,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[tokio::test]
    async fn an_answer_over_the_bound_is_refused_and_silence_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            // First connection: a long answer; second: never answers.
            let (mut long, _) = listener.accept().await.unwrap();
            let mut body = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
            body.resize(200, b'x');
            long.write_all(&body).await.unwrap();
            drop(long);
            let (_silent, _) = listener.accept().await.unwrap();
            std::future::pending::<()>().await;
        });
        let client = HttpClient::new(addr).max_response_bytes(100);
        let error = client.get("/").await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidData, "{error}");
        let error = client
            .timeout(Duration::from_millis(100))
            .get("/")
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::TimedOut, "{error}");
    }
}
