//! HS256 JSON Web Tokens: minted by `chat-gateway token`, checked before every WebSocket upgrade.
//!
//! Tokens are standard (RFC 7519) so any JWT library can mint them: header `{"alg":"HS256","typ":"JWT"}`, claims
//! `sub` (the user id, non-empty) and `exp` (expiry, seconds since the Unix epoch). An `nbf` claim, if present, is
//! honoured; other claims are ignored.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The key that signs and verifies tokens. Its `Debug` output never shows the bytes.
///
/// ```
/// use chat_gateway::auth::Secret;
/// let secret = Secret::new("correct horse battery staple").unwrap();
/// assert_eq!(format!("{secret:?}"), "Secret([redacted; 28 bytes])");
/// assert!(Secret::new("").is_none());
/// ```
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// A secret made of `bytes`, or `None` if they are empty.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Option<Secret> {
        let bytes = bytes.into();
        if bytes.is_empty() { None } else { Some(Secret(bytes)) }
    }

    /// A fresh secret for `serve --dev`: 32 bytes from the operating system's random number generator
    /// (`getrandom`). Production secrets come from the environment.
    ///
    /// # Panics
    ///
    /// If the operating system has no random number generator to offer, which no supported platform lacks.
    pub fn random() -> Secret {
        let mut bytes = vec![0; 32];
        getrandom::fill(&mut bytes).unwrap_or_else(|err| panic!("the OS random number generator failed: {err}"));
        Secret(bytes)
    }

    /// The number of bytes in the key.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always `false`: a secret is never empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length; the error case cannot happen.
        HmacSha256::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret([redacted; {} bytes])", self.0.len())
    }
}

/// The claims of a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The user id (`sub`).
    pub user: String,
    /// When the token expires (`exp`), in seconds since the Unix epoch.
    pub expires_at: u64,
}

/// Why a token was refused. Every variant is the client's mistake: the gateway answers 401 and does not log it as
/// an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Neither an `Authorization: Bearer` header nor a `token` query parameter was given.
    #[error("missing token: send `Authorization: Bearer <token>` or `?token=<token>`")]
    Missing,
    /// The token is not three base64url parts of JSON.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The header names an algorithm other than HS256 (including `none`).
    #[error("unsupported token algorithm `{0}`; only HS256 is accepted")]
    UnsupportedAlgorithm(String),
    /// The signature does not match the secret.
    #[error("bad token signature")]
    BadSignature,
    /// A required claim is absent or has the wrong type.
    #[error("token claim `{0}` is missing or invalid")]
    InvalidClaim(&'static str),
    /// `exp` is not in the future.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not valid yet")]
    NotYetValid,
    /// `sub` is longer than [`MAX_SUBJECT_BYTES`].
    #[error("token claim `sub` has {0} bytes; a user id may have at most {MAX_SUBJECT_BYTES}")]
    SubjectTooLong(usize),
}

/// The longest user id (`sub`) a token may carry, in bytes.
pub const MAX_SUBJECT_BYTES: usize = 256;

/// Seconds since the Unix epoch, now.
pub fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs())
}

/// Mints an HS256 token for `user` that expires `ttl` after `now` (seconds since the Unix epoch).
///
/// ```
/// use std::time::Duration;
/// use chat_gateway::auth::{mint_token, verify_token, Secret};
///
/// let secret = Secret::new("s3cret").unwrap();
/// let token = mint_token(&secret, "alice", Duration::from_secs(3600), 1_000);
/// let claims = verify_token(&secret, &token, 1_000).unwrap();
/// assert_eq!((claims.user.as_str(), claims.expires_at), ("alice", 4_600));
/// assert!(verify_token(&secret, &token, 4_600).is_err()); // expired
/// ```
pub fn mint_token(secret: &Secret, user: &str, ttl: Duration, now: u64) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = serde_json::json!({ "sub": user, "iat": now, "exp": now.saturating_add(ttl.as_secs()) });
    let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{claims}");
    let mut mac = secret.mac();
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

/// Verifies `token` against `secret` at time `now` (seconds since the Unix epoch) and returns its claims.
///
/// Checks, in order: shape, `alg` is HS256, the signature (constant-time comparison), then `sub`, `exp` and `nbf`.
pub fn verify_token(secret: &Secret, token: &str, now: u64) -> Result<Claims, AuthError> {
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed("expected three dot-separated parts"));
    };

    let header_len = header.len();
    let header: serde_json::Value = decode_json(header, "header is not base64url-encoded JSON")?;
    match header.get("alg").and_then(serde_json::Value::as_str) {
        Some("HS256") => {}
        Some(other) => return Err(AuthError::UnsupportedAlgorithm(other.to_owned())),
        None => return Err(AuthError::Malformed("header has no `alg`")),
    }

    let signature =
        URL_SAFE_NO_PAD.decode(signature).map_err(|_| AuthError::Malformed("signature is not base64url"))?;
    let mut mac = secret.mac();
    mac.update(&token.as_bytes()[..header_len + 1 + claims.len()]);
    mac.verify_slice(&signature).map_err(|_| AuthError::BadSignature)?;

    let claims: serde_json::Value = decode_json(claims, "claims are not base64url-encoded JSON")?;
    let user = claims.get("sub").and_then(serde_json::Value::as_str).filter(|sub| !sub.is_empty());
    let user = user.ok_or(AuthError::InvalidClaim("sub"))?;
    if user.len() > MAX_SUBJECT_BYTES {
        return Err(AuthError::SubjectTooLong(user.len()));
    }
    let user = user.to_owned();
    let expires_at = numeric_date(claims.get("exp")).ok_or(AuthError::InvalidClaim("exp"))?;
    if expires_at <= now {
        return Err(AuthError::Expired);
    }
    if let Some(not_before) = claims.get("nbf") {
        let not_before = numeric_date(Some(not_before)).ok_or(AuthError::InvalidClaim("nbf"))?;
        if not_before > now {
            return Err(AuthError::NotYetValid);
        }
    }
    Ok(Claims { user, expires_at })
}

fn decode_json(part: &str, problem: &'static str) -> Result<serde_json::Value, AuthError> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| AuthError::Malformed(problem))?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed(problem))?;
    if value.is_object() { Ok(value) } else { Err(AuthError::Malformed(problem)) }
}

/// A JWT NumericDate: a non-negative number of seconds, possibly fractional (the fraction is dropped).
fn numeric_date(value: Option<&serde_json::Value>) -> Option<u64> {
    let value = value?;
    value.as_u64().or_else(|| value.as_f64().filter(|secs| secs.is_finite() && *secs >= 0.0).map(|secs| secs as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::new("test-secret").unwrap()
    }

    fn forge(header: &str, claims: &str, key: &str) -> String {
        let signing_input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
        let mut mac = HmacSha256::new_from_slice(key.as_bytes()).unwrap();
        mac.update(signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }

    #[track_caller]
    fn check(token: &str, expect: Result<(&str, u64), AuthError>) {
        let actual = verify_token(&secret(), token, 1_000);
        let actual = actual.as_ref().map(|claims| (claims.user.as_str(), claims.expires_at)).map_err(Clone::clone);
        assert_eq!(actual, expect);
    }

    const HS256: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

    #[test]
    fn accepts_tokens_from_any_minter() {
        check(&forge(HS256, r#"{"sub":"bob","exp":2000}"#, "test-secret"), Ok(("bob", 2000)));
        check(
            &forge(r#"{"alg":"HS256"}"#, r#"{"sub":"bob","exp":2000.5,"nbf":999}"#, "test-secret"),
            Ok(("bob", 2000)),
        );
        check(&mint_token(&secret(), "alice", Duration::from_secs(60), 1_000), Ok(("alice", 1_060)));
    }

    #[test]
    fn refuses_bad_tokens() {
        check("", Err(AuthError::Malformed("expected three dot-separated parts")));
        check("a.b", Err(AuthError::Malformed("expected three dot-separated parts")));
        check("a.b.c.d", Err(AuthError::Malformed("expected three dot-separated parts")));
        check("!!.b.c", Err(AuthError::Malformed("header is not base64url-encoded JSON")));
        check(&forge(HS256, r#"{"sub":"bob","exp":2000}"#, "other"), Err(AuthError::BadSignature));
        check(
            &forge(r#"{"alg":"none"}"#, r#"{"sub":"bob","exp":2000}"#, "test-secret"),
            Err(AuthError::UnsupportedAlgorithm("none".into())),
        );
        check(
            &forge(r#"{"alg":"HS512"}"#, r#"{"sub":"bob","exp":2000}"#, "test-secret"),
            Err(AuthError::UnsupportedAlgorithm("HS512".into())),
        );
        check(&forge(HS256, r#"{"sub":"bob","exp":1000}"#, "test-secret"), Err(AuthError::Expired));
        check(&forge(HS256, r#"{"sub":"bob","exp":2000,"nbf":1001}"#, "test-secret"), Err(AuthError::NotYetValid));
        check(&forge(HS256, r#"{"exp":2000}"#, "test-secret"), Err(AuthError::InvalidClaim("sub")));
        check(&forge(HS256, r#"{"sub":"","exp":2000}"#, "test-secret"), Err(AuthError::InvalidClaim("sub")));
        check(&forge(HS256, r#"{"sub":"bob"}"#, "test-secret"), Err(AuthError::InvalidClaim("exp")));
        let at_most = format!(r#"{{"sub":"{}","exp":2000}}"#, "u".repeat(MAX_SUBJECT_BYTES));
        check(&forge(HS256, &at_most, "test-secret"), Ok((&"u".repeat(MAX_SUBJECT_BYTES), 2000)));
        let too_long = format!(r#"{{"sub":"{}","exp":2000}}"#, "u".repeat(MAX_SUBJECT_BYTES + 1));
        check(&forge(HS256, &too_long, "test-secret"), Err(AuthError::SubjectTooLong(MAX_SUBJECT_BYTES + 1)));
        check(&forge(HS256, r#"{"sub":"bob","exp":"soon"}"#, "test-secret"), Err(AuthError::InvalidClaim("exp")));
        check(&forge(HS256, "[1]", "test-secret"), Err(AuthError::Malformed("claims are not base64url-encoded JSON")));
    }

    #[test]
    fn random_secrets_differ() {
        assert_ne!(Secret::random().0, Secret::random().0);
        assert_eq!(Secret::random().len(), 32);
    }
}
