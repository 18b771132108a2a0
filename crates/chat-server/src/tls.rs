//! TLS on the one listener (rustls): certificate and key from PEM files,
//! optionally a client CA that every client must present a certificate
//! from (mTLS). The files are checked every `tls.reload_interval` and a
//! changed set is loaded for new connections; a set that fails to load
//! leaves the previous one in place.
//!
//! Handshakes run in their own tasks, bounded in number and in time, so a
//! client that connects and never completes one holds nothing for long and
//! cannot stall the accept loop. [`Conn`] is what the server serves: a
//! plain TCP stream or a TLS one, both reporting the peer's address.

use crate::config::TlsConfig;
use crate::limiter::{TcpAdmission, TcpPermit};
use futures::Stream;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// TLS handshakes in progress at once at most; connections beyond are
/// closed at once.
const MAX_HANDSHAKES: usize = 1024;

/// The TLS files do not make a server configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file cannot be read or parsed.
    #[error("{setting} {path}")]
    Pem {
        /// Which setting names the file (`tls.cert_file`, …).
        setting: &'static str,
        /// The file.
        path: String,
        /// What the PEM reader said.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("tls.cert_file {0}: no certificate")]
    NoCertificate(String),
    /// rustls refused the protocol versions or a CA certificate.
    #[error("{0}")]
    Rustls(&'static str, #[source] rustls::Error),
    /// The client CA file does not make a verifier.
    #[error("tls.client_ca_file {path}")]
    ClientVerifier {
        /// The file.
        path: String,
        /// What rustls said.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
}

/// Loads the server's rustls configuration from the files `config` names.
pub fn load(config: &TlsConfig) -> Result<ServerConfig, TlsError> {
    fn pem(
        setting: &'static str,
        path: &str,
    ) -> impl FnOnce(rustls_pki_types::pem::Error) -> TlsError {
        let path = path.to_string();
        move |source| TlsError::Pem {
            setting,
            path,
            source,
        }
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&config.cert_file)
        .and_then(|i| i.collect())
        .map_err(pem("tls.cert_file", &config.cert_file))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(config.cert_file.clone()));
    }
    let key = PrivateKeyDer::from_pem_file(&config.key_file)
        .map_err(pem("tls.key_file", &config.key_file))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls("tls: protocol versions", e))?;
    let builder = if config.client_ca_file.is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        let cas = CertificateDer::pem_file_iter(&config.client_ca_file)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(pem("tls.client_ca_file", &config.client_ca_file))?;
        for ca in cas {
            roots
                .add(ca)
                .map_err(|e| TlsError::Rustls("tls.client_ca_file: a CA certificate", e))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|source| TlsError::ClientVerifier {
                path: config.client_ca_file.clone(),
                source,
            })?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut server = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Rustls("tls: certificate and key do not fit together", e))?;
    // gRPC needs HTTP/2; the health endpoints also answer HTTP/1.1.
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(server)
}

/// The current TLS configuration, replaced when its files change.
pub struct Reloading {
    config: TlsConfig,
    current: RwLock<Arc<ServerConfig>>,
}

impl Reloading {
    /// Loads the files once; fails if they do not make a configuration.
    pub fn open(config: &TlsConfig) -> Result<Arc<Reloading>, TlsError> {
        Ok(Arc::new(Reloading {
            current: RwLock::new(Arc::new(load(config)?)),
            config: config.clone(),
        }))
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }

    fn stamps(&self) -> Vec<Option<(SystemTime, u64)>> {
        [
            &self.config.cert_file,
            &self.config.key_file,
            &self.config.client_ca_file,
        ]
        .iter()
        .filter(|f| !f.is_empty())
        .map(|f| {
            let meta = std::fs::metadata(Path::new(f)).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        })
        .collect()
    }

    /// Checks the files every `tls.reload_interval` until `shutdown`.
    pub async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        let mut seen = self.stamps();
        let mut ticks = tokio::time::interval(self.config.reload_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let now = self.stamps();
            if now == seen {
                continue;
            }
            seen = now;
            match load(&self.config) {
                Ok(loaded) => {
                    *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded);
                    tracing::info!(cert = %self.config.cert_file, "tls certificate reloaded");
                }
                // A half-written set (the key replaced before the
                // certificate) fails here and loads at the next change.
                Err(e) => {
                    tracing::warn!(error = %chat_util::Chain(&e), "tls files changed but do not load; keeping the previous ones")
                }
            }
        }
    }
}

/// A served connection, holding its place in the TCP connection counts.
pub enum Conn {
    /// Plain TCP.
    Plain(TcpStream, TcpPermit),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>, TcpPermit),
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        match self {
            Conn::Plain(s, _) => s.connect_info(),
            Conn::Tls(s, _) => s.get_ref().0.connect_info(),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s, _) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s, _) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s, _) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s, _) => s.is_write_vectored(),
            Conn::Tls(s, _) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s, _) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s, _) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// The connections to serve.
pub type Incoming = Pin<Box<dyn Stream<Item = io::Result<Conn>> + Send>>;

/// The connections from `listener` (TLS ones when `tls` is given, each
/// handshake bounded by `timeout`), each counted by `tcp`, until
/// `shutdown`.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<Reloading>>,
    timeout: Duration,
    tcp: Arc<TcpAdmission>,
    shutdown: CancellationToken,
) -> Incoming {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(accept_loop(listener, tls, timeout, tcp, shutdown, tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<Reloading>>,
    timeout: Duration,
    tcp: Arc<TcpAdmission>,
    shutdown: CancellationToken,
    ready: mpsc::Sender<io::Result<Conn>>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ready.closed() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors and the like: back off, do not spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(permit) = tcp.admit(peer.ip()) else {
            tracing::debug!(%peer, "connection limit reached (total or per address); connection closed");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let Some(tls) = &tls else {
            if ready.send(Ok(Conn::Plain(stream, permit))).await.is_err() {
                return;
            }
            continue;
        };
        let Ok(slot) = handshakes.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "too many TLS handshakes in progress; connection closed");
            continue;
        };
        let acceptor = tls.acceptor();
        let ready = ready.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    drop(slot);
                    let _ = ready.send(Ok(Conn::Tls(Box::new(stream), permit))).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "tls handshake failed"),
                Err(_) => tracing::debug!(%peer, "tls handshake timed out"),
            }
        });
    }
}

/// Opens TLS to this server's own listener for the health probe, without
/// checking its certificate: the probe runs beside the server (as a
/// container health check), sends nothing secret, and may know neither
/// the CA nor the name the certificate is for.
pub async fn connect_to_self(
    tcp: TcpStream,
) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("localhost").map_err(io::Error::other)?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

/// Accepts any certificate (the handshake's signatures are still checked).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
