//! What can stop the server: failures at start, each keeping its cause
//! (print with `{:#}` through anyhow, or `chat_util::Chain`), and while
//! serving.

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The message store cannot be opened.
    #[error("cannot open the message store")]
    Store(#[from] crate::store::StoreError),
    /// The backplane cannot be set up.
    #[error("cannot set up the backplane")]
    Backplane(#[from] crate::backplane::BackplaneError),
    /// The authentication keys cannot be loaded.
    #[error("cannot load the authentication keys")]
    Auth(#[from] crate::auth::KeyLoadError),
    /// The TLS certificate, key or client CA cannot be loaded.
    #[error("cannot load the TLS configuration")]
    Tls(#[from] crate::tls::TlsError),
    /// The webhook's client cannot be built (its URL or CA file).
    #[error("cannot set up the webhook")]
    Webhook(#[from] crate::webhook::ClientError),
    /// The transport failed while serving.
    #[error("server transport failed")]
    Transport(#[from] tonic::transport::Error),
    /// The server task panicked or was aborted.
    #[error("server task failed")]
    Task(#[from] tokio::task::JoinError),
}
