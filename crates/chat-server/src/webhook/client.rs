//! The webhook's HTTP client: HTTP/1.1 POSTs to the configured URL over one
//! kept-alive connection (TLS for `https://`, checked against the public
//! roots and `webhooks.ca_file`), opened again after any failure. Every
//! request, from connecting to reading the answer, is bounded by
//! `webhooks.timeout`; the answer's body is read (at most
//! [`MAX_ANSWER_BYTES`]) and dropped, so the connection can carry the next
//! request.

use crate::config::WebhookConfig;
use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// An answer's body is read up to this and dropped.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The client cannot be built from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `webhooks.url` does not parse as an absolute http(s) URL.
    #[error("webhooks.url {0:?} is not an http:// or https:// URL with a host")]
    Url(String),
    /// `webhooks.ca_file` cannot be read.
    #[error("webhooks.ca_file {path:?}: {source}")]
    CaFile {
        path: String,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// `webhooks.ca_file` holds no certificate.
    #[error("webhooks.ca_file {0:?} holds no PEM certificate")]
    NoCa(String),
    /// A certificate of `webhooks.ca_file` is not usable.
    #[error("webhooks.ca_file: a CA certificate: {0}")]
    Ca(#[source] rustls::Error),
    /// The TLS configuration cannot be built.
    #[error("webhooks: TLS: {0}")]
    Tls(#[source] rustls::Error),
}

/// A request failed: the event stays queued for a later attempt.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    /// No answer within `webhooks.timeout`.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection could not be opened.
    #[error("cannot connect: {0}")]
    Connect(#[source] std::io::Error),
    /// The connection failed (HTTP).
    #[error("connection failed: {0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built.
    #[error("bad request: {0}")]
    Request(#[from] http::Error),
}

/// The receiver at `webhooks.url`.
pub struct Receiver {
    /// Host name (or address) and port to connect to.
    host: String,
    port: u16,
    /// The `Host` header.
    authority: String,
    /// The path and query asked for.
    path: String,
    /// For `https://`: the TLS client and the name the certificate must
    /// carry.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// A request's whole budget.
    timeout: Duration,
    /// The kept-alive connection, if one is open.
    connection: Option<SendRequest<Full<Bytes>>>,
}

impl Receiver {
    /// The receiver `config` names (no connection yet).
    pub fn new(config: &WebhookConfig) -> Result<Receiver, ClientError> {
        let bad = || ClientError::Url(config.url.clone());
        let uri: Uri = config.url.parse().map_err(|_| bad())?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad()),
        };
        let authority = uri.authority().ok_or_else(bad)?.clone();
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        let tls = match https {
            true => {
                let name = ServerName::try_from(host.clone()).map_err(|_| bad())?;
                Some((TlsConnector::from(Arc::new(tls_config(config)?)), name))
            }
            false => None,
        };
        Ok(Receiver {
            host,
            port,
            authority: authority.as_str().to_string(),
            path,
            tls,
            timeout: config.timeout,
            connection: None,
        })
    }

    /// POSTs `body` (JSON) with `headers`; the answer's status. Any
    /// failure closes the connection.
    pub async fn post(
        &mut self,
        body: Bytes,
        headers: &[(&'static str, String)],
    ) -> Result<StatusCode, PostError> {
        let outcome = match tokio::time::timeout(self.timeout, self.send(body, headers)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(PostError::Timeout(self.timeout)),
        };
        if outcome.is_err() {
            self.connection = None;
        }
        outcome
    }

    /// Sends on the kept-alive connection; if that connection fails (the
    /// receiver closed it while idle, say), once more on a new one.
    async fn send(
        &mut self,
        body: Bytes,
        headers: &[(&'static str, String)],
    ) -> Result<StatusCode, PostError> {
        let reused = self.connection.as_ref().is_some_and(|c| !c.is_closed());
        match self.send_once(body.clone(), headers).await {
            Err(PostError::Http(e)) if reused => {
                tracing::debug!(error = %e, "webhook: the kept-alive connection failed; a new one");
                self.connection = None;
                self.send_once(body, headers).await
            }
            outcome => outcome,
        }
    }

    async fn send_once(
        &mut self,
        body: Bytes,
        headers: &[(&'static str, String)],
    ) -> Result<StatusCode, PostError> {
        let mut request = Request::post(self.path.as_str())
            .header(header::HOST, self.authority.as_str())
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::USER_AGENT,
                concat!("chat-server/", env!("CARGO_PKG_VERSION")),
            );
        for (name, value) in headers {
            request = request.header(*name, value.as_str());
        }
        let request = request.body(Full::new(body))?;
        let connection = match self.connection.take() {
            Some(open) if !open.is_closed() => open,
            _ => self.connect().await?,
        };
        let connection = self.connection.insert(connection);
        connection.ready().await?;
        let answer = connection.send_request(request).await?;
        let status = answer.status();
        // Read to the end (bounded) so the connection can be used again; an
        // answer too long to read closes it instead.
        if Limited::new(answer.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .is_err()
        {
            self.connection = None;
        }
        Ok(status)
    }

    /// Opens a connection (TCP, then TLS for `https://`).
    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, PostError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(PostError::Connect)?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(PostError::Connect)?;
                handshake(tls).await
            }
            None => handshake(tcp).await,
        }
    }
}

/// HTTP/1.1 over `io`; the connection's task runs until it closes.
async fn handshake<I>(io: I) -> Result<SendRequest<Full<Bytes>>, PostError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "webhook connection closed");
        }
    });
    Ok(sender)
}

/// TLS for `https://` receivers: the public roots and `webhooks.ca_file`.
fn tls_config(config: &WebhookConfig) -> Result<rustls::ClientConfig, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if !config.ca_file.is_empty() {
        let cas = CertificateDer::pem_file_iter(&config.ca_file)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|source| ClientError::CaFile {
                path: config.ca_file.clone(),
                source,
            })?;
        if cas.is_empty() {
            return Err(ClientError::NoCa(config.ca_file.clone()));
        }
        for ca in cas {
            roots.add(ca).map_err(ClientError::Ca)?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ClientError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}
