//! Where a client gets its bearer token. The provider is asked before every
//! connection attempt, so after a token expires (the server ends the
//! session with `AUTH_EXPIRED`) the client reconnects with a fresh one.

use futures::future::BoxFuture;
use std::future::Future;
use std::sync::Arc;

type Fetch = dyn Fn() -> BoxFuture<'static, Result<String, String>> + Send + Sync;

/// A source of bearer tokens. Cheap to clone.
#[derive(Clone)]
pub struct TokenProvider {
    fetch: Arc<Fetch>,
    /// Always the same token: once the server refuses it, retrying cannot
    /// help.
    fixed: bool,
}

impl TokenProvider {
    /// Always the same token.
    pub fn fixed(token: impl Into<String>) -> TokenProvider {
        let token: Arc<str> = Arc::from(token.into());
        TokenProvider {
            fetch: Arc::new(move || {
                let token = token.to_string();
                Box::pin(async move { Ok(token) })
            }),
            fixed: true,
        }
    }

    /// A token from `fetch` for every connection attempt (from an identity
    /// provider, a file that is rotated, …). An error ends the attempt; the
    /// client retries after its backoff.
    pub fn new<F, Fut>(fetch: F) -> TokenProvider
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, String>> + Send + 'static,
    {
        TokenProvider {
            fetch: Arc::new(move || Box::pin(fetch())),
            fixed: false,
        }
    }

    /// The token to use now.
    pub async fn token(&self) -> Result<String, String> {
        (self.fetch)().await
    }

    /// Whether this provider always gives the same token
    /// ([`TokenProvider::fixed`]).
    pub fn is_fixed(&self) -> bool {
        self.fixed
    }
}

impl std::fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenProvider")
    }
}

/// Puts `token` into `metadata` as `authorization: Bearer <token>`.
pub(crate) fn set_bearer(
    metadata: &mut tonic::metadata::MetadataMap,
    token: &str,
) -> Result<(), String> {
    let mut value: tonic::metadata::MetadataValue<_> =
        format!("Bearer {}", token.trim())
            .parse()
            .map_err(|_| "the token cannot be sent as metadata (not ASCII?)".to_string())?;
    // Kept out of HPACK's dynamic table and out of debug output.
    value.set_sensitive(true);
    metadata.insert("authorization", value);
    Ok(())
}
