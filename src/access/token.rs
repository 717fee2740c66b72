//! Connection tokens (JWT): who may connect, and which rooms and name the connection may
//! then use. The token comes from the `token` query parameter (all a socket.io 2.x app can
//! send) or the Socket.IO v5 CONNECT `auth` payload `{token}`.
//!
//! Errors say what is wrong with the token (missing, malformed, expired, bad signature) and
//! never echo the token or the key.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::TokenConfig;

/// A protocol's token verifier.
pub struct Tokens {
    required: bool,
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("required", &self.required)
            .finish_non_exhaustive()
    }
}

/// What a valid token allows. Stored in the socket's extensions at connect.
#[derive(Debug, Clone, Default)]
pub struct Claims {
    /// `sub`: who the token was issued to (the TURN user name).
    pub subject: Option<String>,
    /// `room`: the rooms the connection may join; `None`: any.
    pub rooms: Option<Vec<String>>,
    /// `name`: the only user name the connection may use; `None`: any.
    pub name: Option<String>,
    /// `exp`, unix seconds.
    pub expires: Option<u64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct RawClaims {
    sub: Option<String>,
    room: Option<OneOrMany>,
    name: Option<String>,
    exp: Option<u64>,
}

/// Why a token was refused; the text is what the client's `connect_error` says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Tokens are required and none was given.
    #[error("unauthorized: token missing")]
    Missing,
    /// Not a JWT, or its claims have the wrong types.
    #[error("unauthorized: token malformed")]
    Malformed,
    /// Past `exp` (plus leeway).
    #[error("unauthorized: token expired")]
    Expired,
    /// The signature does not verify with the configured key, or uses another algorithm.
    #[error("unauthorized: token signature invalid")]
    BadSignature,
    /// Well-formed and signed, but a claim check failed (issuer, audience, not yet valid).
    #[error("unauthorized: token not accepted ({0})")]
    Rejected(&'static str),
}

impl TokenError {
    /// Metric reason.
    pub fn kind(&self) -> &'static str {
        match self {
            TokenError::Missing => "token_missing",
            TokenError::Malformed => "token_malformed",
            TokenError::Expired => "token_expired",
            TokenError::BadSignature => "token_bad_signature",
            TokenError::Rejected(_) => "token_rejected",
        }
    }
}

impl Tokens {
    /// The verifier `config` describes; `None` when it sets no key (tokens off).
    pub fn from_config(config: &TokenConfig) -> Result<Option<Arc<Self>>, String> {
        let (key, algorithms) = match (&config.secret, &config.public_key_file) {
            (None, None) if config.required => {
                return Err("required = true needs a secret or a public_key_file".into())
            }
            (None, None) => return Ok(None),
            (Some(_), Some(_)) => {
                return Err("set either secret or public_key_file, not both".into())
            }
            (Some(secret), None) => {
                if secret.is_empty() {
                    return Err("secret must not be empty".into());
                }
                (
                    DecodingKey::from_secret(secret.expose().as_bytes()),
                    vec![Algorithm::HS256],
                )
            }
            (None, Some(path)) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("public_key_file {}: {e}", path.display()))?;
                public_key(&pem).ok_or_else(|| {
                    format!(
                        "public_key_file {}: no RSA, EC or Ed25519 public key in PEM form",
                        path.display()
                    )
                })?
            }
        };
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        validation.leeway = config.leeway.as_secs();
        // `exp` is checked when present; a deployment that wants it mandatory issues it.
        validation.required_spec_claims = HashSet::new();
        validation.validate_nbf = true;
        if let Some(iss) = &config.issuer {
            validation.set_issuer(&[iss]);
        }
        match &config.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Ok(Some(Arc::new(Self {
            required: config.required,
            key,
            validation,
        })))
    }

    /// A verifier no token passes (a random key nobody has) and that requires one.
    pub fn refusing_all() -> Arc<Self> {
        let key = uuid::Uuid::new_v4();
        Arc::new(Self {
            required: true,
            key: DecodingKey::from_secret(key.as_bytes()),
            validation: Validation::new(Algorithm::HS256),
        })
    }

    /// Checks a connection's token. `Ok(None)`: no token and none required.
    pub fn verify(&self, token: Option<&str>) -> Result<Option<Claims>, TokenError> {
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return if self.required {
                Err(TokenError::Missing)
            } else {
                Ok(None)
            };
        };
        let data =
            jsonwebtoken::decode::<RawClaims>(token, &self.key, &self.validation).map_err(|e| {
                match e.kind() {
                    ErrorKind::ExpiredSignature => TokenError::Expired,
                    ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => {
                        TokenError::BadSignature
                    }
                    ErrorKind::InvalidIssuer => TokenError::Rejected("wrong issuer"),
                    ErrorKind::InvalidAudience => TokenError::Rejected("wrong audience"),
                    ErrorKind::ImmatureSignature => TokenError::Rejected("not valid yet"),
                    _ => TokenError::Malformed,
                }
            })?;
        let raw = data.claims;
        Ok(Some(Claims {
            subject: raw.sub,
            rooms: raw.room.map(|r| match r {
                OneOrMany::One(room) => vec![room],
                OneOrMany::Many(rooms) => rooms,
            }),
            name: raw.name,
            expires: raw.exp,
        }))
    }
}

/// An RS*/PS*, ES256/ES384 or EdDSA public key from PEM, with the algorithms it verifies.
fn public_key(pem: &[u8]) -> Option<(DecodingKey, Vec<Algorithm>)> {
    use Algorithm::*;
    if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
        return Some((k, vec![RS256, RS384, RS512, PS256, PS384, PS512]));
    }
    if let Ok(k) = DecodingKey::from_ec_pem(pem) {
        return Some((k, vec![ES256, ES384]));
    }
    DecodingKey::from_ed_pem(pem).ok().map(|k| (k, vec![EdDSA]))
}

/// Why a join is outside a token's claims.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimRefusal {
    /// The room is not in the `room` claim.
    #[error("your token does not allow this room")]
    Room,
    /// The user name is not the `name` claim.
    #[error("your token does not allow this name")]
    Name,
    /// The token expired since the connection was opened.
    #[error("your token has expired")]
    Expired,
}

impl ClaimRefusal {
    /// Metric reason.
    pub fn kind(&self) -> &'static str {
        match self {
            ClaimRefusal::Room => "token_room",
            ClaimRefusal::Name => "token_name",
            ClaimRefusal::Expired => "token_expired",
        }
    }
}

impl Claims {
    /// Whether these claims let the connection join `room` as `name` (if it has one).
    pub fn allow_join(&self, room: &str, name: Option<&str>) -> Result<(), ClaimRefusal> {
        if let Some(exp) = self.expires {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            if now >= exp {
                return Err(ClaimRefusal::Expired);
            }
        }
        if let Some(rooms) = &self.rooms {
            if !rooms.iter().any(|r| r == room) {
                return Err(ClaimRefusal::Room);
            }
        }
        if let (Some(allowed), Some(name)) = (&self.name, name) {
            if allowed != name {
                return Err(ClaimRefusal::Name);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    fn tokens(required: bool) -> Arc<Tokens> {
        let config = TokenConfig {
            required,
            secret: Some("k".into()),
            ..TokenConfig::default()
        };
        Tokens::from_config(&config).expect("valid").expect("on")
    }

    fn sign(claims: serde_json::Value, key: &str) -> String {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(key.as_bytes()),
        )
        .expect("signs")
    }

    #[test]
    fn each_failure_says_which() {
        let t = tokens(true);
        assert_eq!(t.verify(None).unwrap_err(), TokenError::Missing);
        assert_eq!(t.verify(Some("abc")).unwrap_err(), TokenError::Malformed);
        assert_eq!(
            t.verify(Some(&sign(json!({"exp": 1}), "k"))).unwrap_err(),
            TokenError::Expired
        );
        assert_eq!(
            t.verify(Some(&sign(json!({}), "other"))).unwrap_err(),
            TokenError::BadSignature
        );
        let claims = t
            .verify(Some(&sign(
                json!({"room": ["a", "b"], "name": "ann", "sub": "u1"}),
                "k",
            )))
            .expect("valid")
            .expect("claims");
        assert_eq!(claims.allow_join("a", Some("ann")), Ok(()));
        assert_eq!(claims.allow_join("c", Some("ann")), Err(ClaimRefusal::Room));
        assert_eq!(claims.allow_join("b", Some("bob")), Err(ClaimRefusal::Name));
        assert!(tokens(false).verify(None).expect("optional").is_none());
    }
}
