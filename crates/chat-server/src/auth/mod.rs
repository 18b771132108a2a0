//! Who is connecting: JWT bearer tokens checked against the configured key
//! and algorithm, turned into an [`Identity`] (user id, display name, room
//! permissions, expiry). With `auth.mode = "off"` (development, loopback
//! only) clients name themselves and every room follows the default.
//!
//! The algorithm is pinned by configuration: a token whose `alg` header
//! names another (including `none`) is refused before its signature is
//! looked at. `exp`, `iss`, `aud` and `sub` are required.

mod keys;
pub mod rooms;

pub use keys::RECHECK as KEY_RECHECK;
pub use rooms::{Access, RoomAccess};

use crate::config::{AuthConfig, AuthMode, JwtAlgorithm};
use crate::domain::User;
use crate::domain::{user, validate};
use crate::metrics::AuthFailure;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, EncodingKey, Header, Validation};
pub use keys::KeyLoadError;
use keys::KeySet;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest token accepted, in bytes: far above any real token, far below
/// what would cost anything to refuse.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Who a client is, and what it may do.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The user, as messages record it.
    pub user: User,
    /// When the token stops being valid (with the configured leeway);
    /// `None` without tokens.
    pub expires_at: Option<SystemTime>,
    /// Room permissions.
    pub rooms: Arc<RoomAccess>,
    /// Whether the token grants the operator endpoints (`admin: true`).
    pub admin: bool,
    /// Whether the token grants the server API (`api: true`; `admin`
    /// grants it too).
    pub api: bool,
}

impl Identity {
    /// `user` without a token, allowed into every room (for tools and
    /// benchmarks that drive a session directly).
    pub fn open(user: User) -> Identity {
        Identity {
            user,
            expires_at: None,
            rooms: Arc::new(RoomAccess::with_default(
                crate::config::DefaultRoomAccess::Open,
            )),
            admin: false,
            api: false,
        }
    }
}

/// Why a token was refused. [`AuthError::reason`] is the short, bounded
/// label logs (and metrics) use.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `authorization: Bearer …` was sent.
    #[error("missing bearer token: send `authorization: Bearer <token>`")]
    Missing,
    /// The header or token is not well formed.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The token has expired.
    #[error("token expired")]
    Expired,
    /// Signed with another algorithm than the configured one (or `none`).
    #[error("token algorithm not accepted; this server requires {0:?}")]
    WrongAlgorithm(JwtAlgorithm),
    /// The signature does not verify.
    #[error("invalid token signature")]
    BadSignature,
    /// Issued by someone else.
    #[error("token issuer not accepted")]
    WrongIssuer,
    /// Meant for someone else.
    #[error("token audience not accepted")]
    WrongAudience,
    /// A claim is missing or unusable.
    #[error("invalid token claims: {0}")]
    Claims(String),
    /// Its `nbf` is still ahead (or the clocks disagree).
    #[error("token not valid yet (nbf)")]
    NotYetValid,
    /// No key to check it with.
    #[error("no key for this token: {0}")]
    UnknownKey(String),
}

impl AuthError {
    /// Why, as the label logs, metrics and the `chat-auth-reason` metadata
    /// use.
    pub fn reason(&self) -> AuthFailure {
        match self {
            AuthError::Missing => AuthFailure::Missing,
            AuthError::Malformed(_) => AuthFailure::Malformed,
            AuthError::Expired => AuthFailure::Expired,
            AuthError::WrongAlgorithm(_) => AuthFailure::Algorithm,
            AuthError::BadSignature => AuthFailure::Signature,
            AuthError::WrongIssuer => AuthFailure::Issuer,
            AuthError::WrongAudience => AuthFailure::Audience,
            AuthError::Claims(_) => AuthFailure::Claims,
            AuthError::NotYetValid => AuthFailure::NotYetValid,
            AuthError::UnknownKey(_) => AuthFailure::Key,
        }
    }
}

/// The claims the server reads. Unknown claims are ignored; `iss`, `aud`
/// and `exp` are checked by the validation itself.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    name: Option<String>,
    exp: u64,
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    read_only_rooms: Vec<String>,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    api: bool,
}

/// Checks tokens, or (auth off) takes the client's word.
pub struct Authenticator {
    config: AuthConfig,
    jwt: Option<Jwt>,
    /// The room access of every client without a token (auth off).
    anonymous_rooms: Arc<RoomAccess>,
}

struct Jwt {
    keys: KeySet,
    validation: Validation,
}

fn algorithm(a: JwtAlgorithm) -> Algorithm {
    match a {
        JwtAlgorithm::HS256 => Algorithm::HS256,
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
    }
}

impl Authenticator {
    /// An authenticator for `config`; with `mode = "jwt"`, loads the keys
    /// (an error if they cannot be read).
    pub fn new(config: &AuthConfig) -> Result<Authenticator, KeyLoadError> {
        let jwt = match config.mode {
            AuthMode::Off => None,
            AuthMode::Jwt => {
                let mut validation = Validation::new(algorithm(config.algorithm));
                validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
                validation.set_issuer(&[&config.issuer]);
                validation.set_audience(&[&config.audience]);
                validation.leeway = config.leeway.as_secs();
                validation.validate_nbf = true;
                Some(Jwt {
                    keys: KeySet::open(config)?,
                    validation,
                })
            }
        };
        Ok(Authenticator {
            config: config.clone(),
            jwt,
            anonymous_rooms: Arc::new(RoomAccess::with_default(config.default_room_access)),
        })
    }

    /// Whether tokens are required.
    pub fn is_enabled(&self) -> bool {
        self.jwt.is_some()
    }

    /// The identity of an unauthenticated client that calls itself `name`
    /// (auth off only).
    pub fn anonymous(&self, name: String) -> Identity {
        let name: Arc<str> = Arc::from(name);
        Identity {
            user: User {
                user_id: name.clone(),
                display_name: name,
            },
            expires_at: None,
            rooms: self.anonymous_rooms.clone(),
            admin: false,
            api: false,
        }
    }

    /// Checks an `authorization` header value (`Bearer <token>`).
    pub fn check_header(&self, header: Option<&[u8]>) -> Result<Identity, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        if header.len() > MAX_TOKEN_BYTES + 7 {
            return Err(AuthError::Malformed(format!(
                "longer than {MAX_TOKEN_BYTES} bytes"
            )));
        }
        let header = std::str::from_utf8(header)
            .map_err(|_| AuthError::Malformed("the authorization header is not text".into()))?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| AuthError::Malformed("expected `Bearer <token>`".into()))?;
        self.check(token.trim())
    }

    /// Checks a token and returns whose it is.
    pub fn check(&self, token: &str) -> Result<Identity, AuthError> {
        let Some(jwt) = &self.jwt else {
            return Err(AuthError::Claims("authentication is off".into()));
        };
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed(format!(
                "longer than {MAX_TOKEN_BYTES} bytes"
            )));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            // `alg: none` and names the library does not know.
            ErrorKind::InvalidAlgorithmName | ErrorKind::Json(_) if token.contains('.') => {
                AuthError::WrongAlgorithm(self.config.algorithm)
            }
            _ => AuthError::Malformed(e.to_string()),
        })?;
        if header.alg != algorithm(self.config.algorithm) {
            return Err(AuthError::WrongAlgorithm(self.config.algorithm));
        }
        let key = jwt
            .keys
            .key(header.kid.as_deref())
            .map_err(|e| AuthError::UnknownKey(e.to_string()))?;
        let data =
            jsonwebtoken::decode::<Claims>(token, &key, &jwt.validation).map_err(|e| {
                match e.kind() {
                    ErrorKind::ExpiredSignature => AuthError::Expired,
                    ErrorKind::InvalidSignature => AuthError::BadSignature,
                    ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
                    ErrorKind::InvalidAudience => AuthError::WrongAudience,
                    ErrorKind::InvalidAlgorithm => AuthError::WrongAlgorithm(self.config.algorithm),
                    ErrorKind::MissingRequiredClaim(c) => {
                        AuthError::Claims(format!("missing claim {c:?}"))
                    }
                    ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                    ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
                        AuthError::Malformed(e.to_string())
                    }
                    _ => AuthError::Claims(e.to_string()),
                }
            })?;
        self.identity(data.claims)
    }

    fn identity(&self, claims: Claims) -> Result<Identity, AuthError> {
        user::client_user_id(&claims.sub).map_err(|e| AuthError::Claims(format!("sub: {e}")))?;
        let name = claims.name.unwrap_or_else(|| claims.sub.clone());
        validate::display_name(&name).map_err(|e| AuthError::Claims(format!("name: {e}")))?;
        let rooms = RoomAccess::from_claims(
            &claims.rooms,
            &claims.read_only_rooms,
            self.config.default_room_access,
        )
        .map_err(AuthError::Claims)?;
        let expires_at = UNIX_EPOCH
            .checked_add(Duration::from_secs(claims.exp))
            .and_then(|t| t.checked_add(self.config.leeway))
            .unwrap_or(SystemTime::UNIX_EPOCH + Duration::from_secs(u32::MAX as u64));
        Ok(Identity {
            user: User {
                user_id: Arc::from(claims.sub),
                display_name: Arc::from(name),
            },
            expires_at: Some(expires_at),
            rooms: Arc::new(rooms),
            admin: claims.admin,
            api: claims.api || claims.admin,
        })
    }
}

/// What `chat-server token` puts in a token.
#[derive(Clone, Debug, Default)]
pub struct TokenRequest {
    /// The user id (`sub`).
    pub sub: String,
    /// The display name (`name`); none: the user id is shown.
    pub name: Option<String>,
    /// How long it is valid.
    pub ttl: Duration,
    /// Rooms the user may join and send to (`rooms`).
    pub rooms: Vec<String>,
    /// Rooms the user may only join and read (`read_only_rooms`).
    pub read_only_rooms: Vec<String>,
    /// Grants the operator endpoints.
    pub admin: bool,
    /// Grants the server API.
    pub api: bool,
    /// The key id to name in the header (for a JWKS).
    pub kid: Option<String>,
}

#[derive(Serialize)]
struct MintedClaims<'a> {
    sub: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    iss: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    rooms: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    read_only_rooms: &'a [String],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    admin: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    api: bool,
}

/// The key `chat-server token` signs with: the HS256 secret, or the private
/// key of `auth.private_key_file` for the other algorithms.
fn signing_key(config: &AuthConfig) -> Result<EncodingKey, String> {
    let read = |file: &str| std::fs::read(file).map_err(|e| format!("cannot read {file}: {e}"));
    match config.algorithm {
        JwtAlgorithm::HS256 => {
            let secret = if !config.secret.is_empty() {
                config.secret.expose().as_bytes().to_vec()
            } else if !config.secret_file.is_empty() {
                read(&config.secret_file)?.trim_ascii_end().to_vec()
            } else {
                return Err("set auth.secret or auth.secret_file to mint HS256 tokens".into());
            };
            Ok(EncodingKey::from_secret(&secret))
        }
        other => {
            if config.private_key_file.is_empty() {
                return Err(format!(
                    "set auth.private_key_file to mint {other:?} tokens"
                ));
            }
            let pem = read(&config.private_key_file)?;
            match other {
                JwtAlgorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
                JwtAlgorithm::ES256 => EncodingKey::from_ec_pem(&pem),
                _ => EncodingKey::from_ed_pem(&pem),
            }
            .map_err(|e| {
                format!(
                    "{}: not a {other:?} private key: {e}",
                    config.private_key_file
                )
            })
        }
    }
}

/// Mints a token with the configured algorithm and key (the secret for
/// HS256, `auth.private_key_file` otherwise), for development and scripts.
pub fn mint(config: &AuthConfig, request: &TokenRequest) -> Result<String, String> {
    user::client_user_id(&request.sub).map_err(|e| format!("--sub: {e}"))?;
    if let Some(name) = &request.name {
        validate::display_name(name).map_err(|e| format!("--name: {e}"))?;
    }
    RoomAccess::from_claims(
        &request.rooms,
        &request.read_only_rooms,
        config.default_room_access,
    )?;
    let key = signing_key(config)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = MintedClaims {
        sub: &request.sub,
        name: request.name.as_deref(),
        iss: &config.issuer,
        aud: &config.audience,
        iat: now,
        exp: now.saturating_add(request.ttl.as_secs()),
        rooms: &request.rooms,
        read_only_rooms: &request.read_only_rooms,
        admin: request.admin,
        api: request.api,
    };
    let mut header = Header::new(algorithm(config.algorithm));
    header.kid = request.kid.clone();
    jsonwebtoken::encode(&header, &claims, &key).map_err(|e| format!("cannot sign: {e}"))
}
