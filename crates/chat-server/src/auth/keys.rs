//! The keys tokens are verified with: an HS256 secret (given inline or in
//! a file), a PEM public key, or a JWKS file whose keys a token's `kid`
//! picks. Files are re-read when they change (checked at most once per
//! [`RECHECK`]), so keys rotate without a restart; a file that fails to
//! load keeps the keys it had.

use crate::config::{AuthConfig, JwtAlgorithm};
use chat_util::lock;
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::JwkSet;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// Least time between two looks at a key file.
pub const RECHECK: Duration = Duration::from_secs(1);
/// Most keys a JWKS file may hold.
const MAX_JWKS_KEYS: usize = 64;

/// Where keys come from.
#[derive(Debug)]
enum Source {
    Secret(Vec<u8>),
    SecretFile(PathBuf),
    PublicKeyFile(PathBuf),
    JwksFile(PathBuf),
}

/// The keys loaded from a source.
#[derive(Clone)]
enum Keys {
    One(DecodingKey),
    ByKid(HashMap<String, DecodingKey>),
}

struct Loaded {
    keys: Keys,
    /// The file's modification time and length when it was read.
    stamp: Option<(SystemTime, u64)>,
    checked: Instant,
}

/// A reloading key set.
pub struct KeySet {
    source: Source,
    algorithm: JwtAlgorithm,
    loaded: Mutex<Loaded>,
}

/// No key for a token.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The token names a key the set does not hold (or names none where
    /// the set holds several).
    #[error("{0}")]
    UnknownKey(String),
}

/// The configured keys cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyLoadError {
    /// No secret, public key or JWKS is configured.
    #[error("auth: no key configured")]
    NotConfigured,
    /// A key file cannot be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A secret file holds too short a secret.
    #[error("{}: the secret must be at least {} bytes", path.display(), crate::config::MIN_SECRET_BYTES)]
    ShortSecret {
        /// The file.
        path: PathBuf,
    },
    /// HS256 was configured with a public key file.
    #[error("HS256 takes a secret, not a public key")]
    PublicKeyForHs256,
    /// The file does not hold a public key of the algorithm.
    #[error("{}: not a {algorithm:?} public key", path.display())]
    PublicKey {
        /// The file.
        path: PathBuf,
        /// The configured algorithm.
        algorithm: JwtAlgorithm,
        /// What the PEM decoder said.
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    /// The file is not a JWKS document.
    #[error("{}: not a JWKS document", path.display())]
    Jwks {
        /// The file.
        path: PathBuf,
        /// What the JSON decoder said.
        #[source]
        source: serde_json::Error,
    },
    /// The JWKS holds no key, too many, or none this server can use.
    #[error("{}: a JWKS must hold 1 to {MAX_JWKS_KEYS} keys this server can use", path.display())]
    JwksKeys {
        /// The file.
        path: PathBuf,
    },
}

impl KeySet {
    /// Loads the keys `config` names; fails if they cannot be read.
    pub fn open(config: &AuthConfig) -> Result<KeySet, KeyLoadError> {
        let source = if !config.secret.is_empty() {
            Source::Secret(config.secret.expose().as_bytes().to_vec())
        } else if !config.secret_file.is_empty() {
            Source::SecretFile(config.secret_file.clone().into())
        } else if !config.public_key_file.is_empty() {
            Source::PublicKeyFile(config.public_key_file.clone().into())
        } else if !config.jwks_file.is_empty() {
            Source::JwksFile(config.jwks_file.clone().into())
        } else {
            return Err(KeyLoadError::NotConfigured);
        };
        let (keys, stamp) = load(&source, config.algorithm)?;
        Ok(KeySet {
            source,
            algorithm: config.algorithm,
            loaded: Mutex::new(Loaded {
                keys,
                stamp,
                checked: Instant::now(),
            }),
        })
    }

    /// The key for a token whose header names `kid`.
    pub fn key(&self, kid: Option<&str>) -> Result<DecodingKey, KeyError> {
        let keys = self.current();
        match (keys, kid) {
            (Keys::One(key), _) => Ok(key),
            (Keys::ByKid(keys), Some(kid)) => keys
                .get(kid)
                .cloned()
                .ok_or_else(|| KeyError::UnknownKey(format!("no key with kid {kid:?}"))),
            (Keys::ByKid(keys), None) if keys.len() == 1 => {
                Ok(keys.into_values().next().expect("one key"))
            }
            (Keys::ByKid(_), None) => Err(KeyError::UnknownKey(
                "the token names no kid and the key set holds several keys".into(),
            )),
        }
    }

    /// The keys, re-read first if their file changed.
    fn current(&self) -> Keys {
        let mut loaded = lock(&self.loaded);
        let path = match &self.source {
            Source::Secret(_) => return loaded.keys.clone(),
            Source::SecretFile(p) | Source::PublicKeyFile(p) | Source::JwksFile(p) => p,
        };
        if loaded.checked.elapsed() >= RECHECK {
            loaded.checked = Instant::now();
            let stamp = stamp(path);
            if stamp.is_none() && loaded.stamp.is_some() {
                // Said once; the keys that were read stay in use.
                loaded.stamp = None;
                tracing::error!(file = %path.display(), "auth key file missing; still using the keys read before");
            }
            if stamp.is_some() && stamp != loaded.stamp {
                match load(&self.source, self.algorithm) {
                    Ok((keys, stamp)) => {
                        tracing::info!(file = %path.display(), "auth keys reloaded");
                        loaded.keys = keys;
                        loaded.stamp = stamp;
                    }
                    Err(e) => {
                        // Keep serving with the keys that worked; look again
                        // after the next change.
                        loaded.stamp = stamp;
                        tracing::warn!(file = %path.display(), error = %chat_util::Chain(&e), "auth keys not reloaded; keeping the previous ones");
                    }
                }
            }
        }
        loaded.keys.clone()
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn read(path: &Path) -> Result<Vec<u8>, KeyLoadError> {
    std::fs::read(path).map_err(|source| KeyLoadError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn load(
    source: &Source,
    algorithm: JwtAlgorithm,
) -> Result<(Keys, Option<(SystemTime, u64)>), KeyLoadError> {
    match source {
        Source::Secret(secret) => Ok((Keys::One(DecodingKey::from_secret(secret)), None)),
        Source::SecretFile(path) => {
            let stamp = stamp(path);
            let secret = read(path)?;
            // A trailing newline from an editor or `echo` is not key material.
            let secret = secret.trim_ascii_end();
            if secret.len() < crate::config::MIN_SECRET_BYTES {
                return Err(KeyLoadError::ShortSecret { path: path.clone() });
            }
            Ok((Keys::One(DecodingKey::from_secret(secret)), stamp))
        }
        Source::PublicKeyFile(path) => {
            let stamp = stamp(path);
            let pem = read(path)?;
            let key = match algorithm {
                JwtAlgorithm::RS256 => DecodingKey::from_rsa_pem(&pem),
                JwtAlgorithm::ES256 => DecodingKey::from_ec_pem(&pem),
                JwtAlgorithm::EdDSA => DecodingKey::from_ed_pem(&pem),
                JwtAlgorithm::HS256 => return Err(KeyLoadError::PublicKeyForHs256),
            }
            .map_err(|source| KeyLoadError::PublicKey {
                path: path.clone(),
                algorithm,
                source,
            })?;
            Ok((Keys::One(key), stamp))
        }
        Source::JwksFile(path) => {
            let stamp = stamp(path);
            Ok((jwks(path)?, stamp))
        }
    }
}

/// The keys of the JWKS document at `path`, by `kid` (a key without one is
/// named by its position); keys this server cannot use are skipped.
fn jwks(path: &Path) -> Result<Keys, KeyLoadError> {
    let set: JwkSet =
        serde_json::from_slice(&read(path)?).map_err(|source| KeyLoadError::Jwks {
            path: path.to_path_buf(),
            source,
        })?;
    if set.keys.is_empty() || set.keys.len() > MAX_JWKS_KEYS {
        return Err(KeyLoadError::JwksKeys {
            path: path.to_path_buf(),
        });
    }
    let mut keys = HashMap::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        let kid = jwk.common.key_id.clone().unwrap_or_else(|| i.to_string());
        // One key this server cannot use (another key type, say)
        // must not keep the whole set, and a revoked key, in place.
        match DecodingKey::from_jwk(jwk) {
            Ok(key) => {
                keys.insert(kid, key);
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), kid, error = %e, "JWKS key skipped")
            }
        }
    }
    if keys.is_empty() {
        return Err(KeyLoadError::JwksKeys {
            path: path.to_path_buf(),
        });
    }
    Ok(Keys::ByKid(keys))
}
