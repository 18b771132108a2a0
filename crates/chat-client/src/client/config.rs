//! How a [`Client`](super::Client) connects and behaves: [`ClientConfig`]
//! and its TLS settings, [`ClientTls`].

use crate::backoff::Backoff;
use crate::token::TokenProvider;
use std::time::Duration;

/// How a [`Client`](super::Client) connects and behaves.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Server URL, e.g. `http://127.0.0.1:5000`.
    pub server: String,
    /// Display name (and, without authentication, identity). With a token,
    /// the server takes the name from the token instead.
    pub name: String,
    /// The bearer token for servers that require one; asked before every
    /// connection attempt.
    pub token: Option<TokenProvider>,
    /// TLS settings for `https://` servers.
    pub tls: ClientTls,
    /// Rooms to join on every session, before any joined later.
    pub rooms: Vec<String>,
    /// Rooms to join on every session like `rooms`, the first time resuming
    /// after the given sequence: the points an earlier client had reached
    /// ([`Client::last_seen`](super::Client::last_seen), read once
    /// [`Client::closed`](super::Client::closed) has returned), kept across
    /// an application restart, so the first session gets what was missed.
    pub resume_from: Vec<(String, u64)>,
    /// How long a request waits for its reply.
    pub request_timeout: Duration,
    /// How long a connection attempt may take.
    pub connect_timeout: Duration,
    /// How often to ping the server.
    pub heartbeat_interval: Duration,
    /// If nothing arrives from the server for this long, the session is
    /// considered dead and replaced.
    pub heartbeat_timeout: Duration,
    /// Delays between reconnect attempts.
    pub backoff: Backoff,
    /// Whether to reconnect after a session ends.
    pub reconnect: bool,
    /// How long a send keeps being retried (with its original client
    /// message id, so it is stored once) across lost connections.
    pub send_retry_window: Duration,
    /// Whether to join a direct conversation's room as soon as the server
    /// says it was opened ([`crate::Event::DirectOpened`]); it is then
    /// rejoined like any room.
    pub join_direct: bool,
}

impl ClientConfig {
    /// Defaults for `server` and `name`.
    pub fn new(server: impl Into<String>, name: impl Into<String>) -> Self {
        ClientConfig {
            server: server.into(),
            name: name.into(),
            token: None,
            tls: ClientTls::default(),
            rooms: Vec::new(),
            resume_from: Vec::new(),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(10),
            heartbeat_timeout: Duration::from_secs(30),
            backoff: Backoff::default(),
            reconnect: true,
            send_retry_window: Duration::from_secs(30),
            join_direct: true,
        }
    }
}

/// TLS for `https://` server URLs.
#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    /// PEM CA certificates to trust; none: the public web PKI roots.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM client certificate chain and private key, for servers that
    /// require client certificates (mTLS).
    pub identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// The name the server's certificate must carry, if not the URL's host.
    pub domain: Option<String>,
}

impl ClientTls {
    /// These settings as tonic's.
    pub(super) fn config(&self) -> tonic::transport::ClientTlsConfig {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let mut tls = ClientTlsConfig::new();
        tls = match &self.ca_pem {
            Some(pem) => tls.ca_certificate(Certificate::from_pem(pem)),
            None => tls.with_webpki_roots(),
        };
        if let Some((cert, key)) = &self.identity_pem {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        if let Some(domain) = &self.domain {
            tls = tls.domain_name(domain.clone());
        }
        tls
    }
}
