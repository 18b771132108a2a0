//! TLS on the one listener (rustls): certificate and key from PEM files,
//! optionally a client CA that every client must present a certificate
//! from (mTLS). The files are checked every `tls.reload_interval` and a
//! changed set is loaded for new connections; a set that fails to load
//! leaves the previous one in place.
//!
//! The listener's connections (`accept`): each is admitted by the TCP
//! connection limits, goes through its TLS handshake, and then its first
//! bytes say who serves it: a [`Divert`] (the WebSocket endpoint) or the
//! HTTP server (gRPC and the HTTP endpoints). Handshakes and first bytes
//! are awaited in their own tasks, bounded in number and in time, so a
//! client that connects and sends nothing holds nothing for long and
//! cannot stall the accept loop. [`Conn`] (`conn`) is what is served: a
//! plain TCP stream or a TLS one, both reporting the peer's address.

mod accept;
mod conn;
mod probe;

pub use accept::{Divert, Incoming, incoming};
pub use conn::Conn;
pub use probe::{SelfCheck, connect_to_self};

use crate::config::TlsConfig;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

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
