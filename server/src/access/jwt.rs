//! HS256 JSON Web Tokens whose claims say which topics their holder may publish to and
//! subscribe to:
//!
//! ```json
//! {"sub": "billing", "exp": 1767225600, "sse": {"publish": ["orders/*"], "subscribe": ["orders/*"]}}
//! ```
//!
//! Only HS256 is accepted (never `none`, never another algorithm named by the token);
//! `exp` and `nbf` are checked when present (whole seconds, anything else is refused),
//! with 30 s of leeway for clock skew. A token with an `aud` claim is refused: audiences
//! are not configurable.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::pattern::TopicPattern;
use super::secret::Secret;
use crate::error::ApiError;

/// Longest token looked at; longer ones are refused unread.
pub const MAX_TOKEN_BYTES: usize = 8 << 10;
/// Most topic patterns one token may list per right.
pub const MAX_PATTERNS: usize = 64;

/// What a valid token lets its holder do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// The `sub` claim, when present (the publisher's name for rate limits).
    pub subject: Option<String>,
    /// Topics it may publish to.
    pub publish: Vec<TopicPattern>,
    /// Topics it may subscribe to, private ones included.
    pub subscribe: Vec<TopicPattern>,
    /// The `exp` claim (Unix seconds), when present.
    pub expires: Option<u64>,
}

impl Grants {
    pub fn may_publish(&self, topic: &str) -> bool {
        self.publish.iter().any(|p| p.matches(topic))
    }

    pub fn may_subscribe(&self, topic: &str) -> bool {
        self.subscribe.iter().any(|p| p.matches(topic))
    }
}

/// Seconds a token is still accepted after its `exp` (clock skew between issuer and
/// server).
pub const LEEWAY_SECS: u64 = 30;

/// When a stream opened with a token expiring at `exp` (Unix seconds) must end: `exp`
/// plus the leeway, on the runtime's clock.
pub fn stream_deadline(exp: u64) -> tokio::time::Instant {
    let left = (exp + LEEWAY_SECS).saturating_sub(jsonwebtoken::get_current_timestamp());
    tokio::time::Instant::now() + std::time::Duration::from_secs(left)
}

/// Checks tokens signed with the configured key.
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtVerifier(HS256)")
    }
}

impl JwtVerifier {
    pub fn new(secret: &Secret) -> JwtVerifier {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.required_spec_claims.clear();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        JwtVerifier { key: DecodingKey::from_secret(secret.as_bytes()), validation }
    }

    /// The grants of a valid token; `invalid_token` for anything else (bad signature,
    /// another algorithm, expired, malformed claims), without saying which.
    pub fn verify(&self, token: &[u8]) -> Result<Grants, ApiError> {
        let token =
            std::str::from_utf8(token).ok().filter(|t| t.len() <= MAX_TOKEN_BYTES).ok_or(ApiError::InvalidToken)?;
        let data =
            jsonwebtoken::decode::<Value>(token, &self.key, &self.validation).map_err(|_| ApiError::InvalidToken)?;
        grants(&data.claims).ok_or(ApiError::InvalidToken)
    }
}

/// Reads the claims; `None` when `sse`, `sub`, `exp` or `nbf` has the wrong shape (the
/// library skips an `exp` it cannot read as whole seconds: such a token must not live
/// forever).
fn grants(claims: &Value) -> Option<Grants> {
    if ["exp", "nbf"].iter().any(|time| claims.get(time).is_some_and(|t| t.as_u64().is_none())) {
        return None;
    }
    let subject = match claims.get("sub") {
        None => None,
        Some(Value::String(sub)) => Some(sub.clone()),
        Some(_) => return None,
    };
    let expires = claims.get("exp").and_then(Value::as_u64);
    let rights = match claims.get("sse") {
        None => return Some(Grants { subject, expires, ..Grants::default() }),
        Some(Value::Object(rights)) => rights,
        Some(_) => return None,
    };
    let patterns = |name: &str| -> Option<Vec<TopicPattern>> {
        match rights.get(name) {
            None => Some(Vec::new()),
            Some(Value::Array(list)) if list.len() <= MAX_PATTERNS => {
                list.iter().map(|p| p.as_str().and_then(|p| p.parse().ok())).collect()
            }
            Some(_) => None,
        }
    };
    Some(Grants { subject, publish: patterns("publish")?, subscribe: patterns("subscribe")?, expires })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    pub(crate) const KEY: &str = "a-test-key-of-32-bytes-or-more!!";

    #[test]
    fn a_stream_ends_at_its_tokens_expiry_plus_the_leeway() {
        let now = jsonwebtoken::get_current_timestamp();
        let from = tokio::time::Instant::now();
        let left = stream_deadline(now + 100) - from;
        assert!((129..=131).contains(&left.as_secs()), "100 s left and 30 s of leeway: {left:?}");
        let past = stream_deadline(now - 100);
        assert!(past <= tokio::time::Instant::now(), "a token expired past its leeway ends the stream at once");
    }

    pub(crate) fn sign(claims: &Value, key: &str, algorithm: Algorithm) -> String {
        encode(&Header::new(algorithm), claims, &EncodingKey::from_secret(key.as_bytes())).unwrap()
    }

    fn verifier() -> JwtVerifier {
        JwtVerifier::new(&KEY.parse().unwrap())
    }

    #[test]
    fn a_valid_token_grants_exactly_its_claims() {
        let claims =
            serde_json::json!({"sub": "billing", "sse": {"publish": ["orders/*"], "subscribe": ["orders/eu"]}});
        let grants = verifier().verify(sign(&claims, KEY, Algorithm::HS256).as_bytes()).unwrap();
        assert_eq!(grants.subject.as_deref(), Some("billing"));
        assert!(grants.may_publish("orders/eu") && grants.may_publish("orders/us"));
        assert!(!grants.may_publish("invoices"));
        assert!(grants.may_subscribe("orders/eu") && !grants.may_subscribe("orders/us"));
        let empty = verifier().verify(sign(&serde_json::json!({}), KEY, Algorithm::HS256).as_bytes()).unwrap();
        assert_eq!(empty, Grants::default(), "no claims, no rights");
    }

    /// A token with no `sse` claim grants no topic but still names its holder (for the
    /// publish rate limits) and still expires (ending a stream opened with it).
    #[test]
    fn a_token_without_rights_keeps_its_subject_and_expiry() {
        let exp = jsonwebtoken::get_current_timestamp() + 600;
        let claims = serde_json::json!({"sub": "kiosk-7", "exp": exp});
        let grants = verifier().verify(sign(&claims, KEY, Algorithm::HS256).as_bytes()).unwrap();
        assert_eq!(grants, Grants { subject: Some("kiosk-7".into()), expires: Some(exp), ..Grants::default() });
    }

    #[test]
    fn a_token_names_at_most_max_patterns_per_right() {
        let with = |n: usize| {
            let claims = serde_json::json!({"sse": {"subscribe": vec!["t"; n]}});
            verifier().verify(sign(&claims, KEY, Algorithm::HS256).as_bytes())
        };
        assert!(with(MAX_PATTERNS).unwrap().may_subscribe("t"));
        assert_eq!(with(MAX_PATTERNS + 1).unwrap_err().code(), "invalid_token");
    }

    #[test]
    fn forged_expired_foreign_and_malformed_tokens_are_refused_alike() {
        let rights = serde_json::json!({"sse": {"publish": ["*"]}});
        let now = jsonwebtoken::get_current_timestamp();
        let expired = serde_json::json!({"exp": now - 120, "sse": {"publish": ["*"]}});
        let not_yet = serde_json::json!({"nbf": now + 120, "sse": {"publish": ["*"]}});
        let valid = sign(&rights, KEY, Algorithm::HS256);
        // `{"alg":"none","typ":"JWT"}`, the valid token's claims, no signature.
        let unsigned = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", valid.split('.').nth(1).unwrap());
        let cases = [
            ("another key", sign(&rights, "another-key-of-32-bytes-or-more!", Algorithm::HS256)),
            ("HS512", sign(&rights, KEY, Algorithm::HS512)),
            ("expired", sign(&expired, KEY, Algorithm::HS256)),
            ("not yet valid", sign(&not_yet, KEY, Algorithm::HS256)),
            ("bad pattern", sign(&serde_json::json!({"sse": {"publish": ["a b"]}}), KEY, Algorithm::HS256)),
            ("rights not a list", sign(&serde_json::json!({"sse": {"publish": "*"}}), KEY, Algorithm::HS256)),
            ("sub not a string", sign(&serde_json::json!({"sub": 7}), KEY, Algorithm::HS256)),
            ("fractional exp", sign(&serde_json::json!({"exp": now as f64 + 3600.5}), KEY, Algorithm::HS256)),
            ("exp as text", sign(&serde_json::json!({"exp": (now + 3600).to_string()}), KEY, Algorithm::HS256)),
            ("nbf as text", sign(&serde_json::json!({"nbf": "0"}), KEY, Algorithm::HS256)),
            ("an audience", sign(&serde_json::json!({"aud": "someone"}), KEY, Algorithm::HS256)),
            ("alg none", unsigned),
            ("garbage", "not.a.token".to_owned()),
            ("huge", "a".repeat(MAX_TOKEN_BYTES + 1)),
        ];
        for (what, token) in cases {
            let error = verifier().verify(token.as_bytes()).unwrap_err();
            assert_eq!((error.status(), error.code()), (401, "invalid_token"), "{what}");
        }
        assert!(verifier().verify(valid.as_bytes()).is_ok(), "the unaltered token is fine");
    }
}
