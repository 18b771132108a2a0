//! TLS to this server's own listener: the health probe's (any
//! certificate) and the admin commands' (exactly the configured one).

use rustls_pki_types::CertificateDer;
use std::io;
use std::sync::Arc;
use tokio::net::TcpStream;

/// How a client of this server's own listener checks its certificate.
#[derive(Clone, Debug)]
pub enum SelfCheck {
    /// Any certificate: for the health probe, which runs beside the server
    /// (as a container health check), sends nothing secret, and may know
    /// neither the CA nor the name the certificate is for.
    Any,
    /// Exactly this certificate (the one the configuration names): for a
    /// request that carries a credential, which must not go to whoever
    /// answers on the port.
    Exactly(CertificateDer<'static>),
}

impl SelfCheck {
    /// The server's own certificate, from the configuration's
    /// `tls.cert_file` (its first certificate).
    pub fn own(config: &crate::config::TlsConfig) -> Result<SelfCheck, super::TlsError> {
        use rustls_pki_types::pem::PemObject;
        let first = CertificateDer::pem_file_iter(&config.cert_file)
            .and_then(|mut certs| certs.next().transpose())
            .map_err(|source| super::TlsError::Pem {
                setting: "tls.cert_file",
                path: config.cert_file.clone(),
                source,
            })?;
        first
            .map(SelfCheck::Exactly)
            .ok_or_else(|| super::TlsError::NoCertificate(config.cert_file.clone()))
    }
}

/// Opens TLS to this server's own listener, checking its certificate as
/// `check` says (the handshake's signatures are checked either way).
pub async fn connect_to_self(
    tcp: TcpStream,
    check: &SelfCheck,
) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let expected = match check {
        SelfCheck::Any => None,
        SelfCheck::Exactly(cert) => Some(cert.clone()),
    };
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(OwnCertificate { expected, provider }))
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("localhost").map_err(io::Error::other)?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

/// Accepts the expected certificate, or any when none is expected; the
/// handshake's signatures are still checked.
#[derive(Debug)]
struct OwnCertificate {
    /// The certificate the server must present, if one is required.
    expected: Option<CertificateDer<'static>>,
    /// The signature algorithms.
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for OwnCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match &self.expected {
            Some(expected) if expected.as_ref() != end_entity.as_ref() => {
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::ApplicationVerificationFailure,
                ))
            }
            _ => Ok(rustls::client::danger::ServerCertVerified::assertion()),
        }
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
