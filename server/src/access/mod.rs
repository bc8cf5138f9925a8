//! Who may publish, who may read private topics, and from which browser origins.
//!
//! - [`cors`]: the browser origin allowlist and preflights.
//! - [`secret`]: configured tokens and keys, hidden from logs, compared in constant time.
//! - [`pattern`]: topic patterns (`name`, `prefix*`, `*`).
//! - [`jwt`]: HS256 tokens whose claims list topic patterns per right.
//!
//! Publishing takes `Authorization: Bearer` only: a configured publish token (every
//! topic) or a JWT whose `publish` claim covers the topic. A cookie never authorises a
//! publish, so a page on another site cannot publish with a visitor's cookie.
//! Subscribing to a topic that a `--private-topic` pattern covers needs a JWT whose
//! `subscribe` claim covers it, from the `Authorization` header, the `sse_token` cookie or
//! the `access_token` query parameter (an `EventSource` can set no header).
//!
//! May import [`crate::stream::names`] and the crate's leaves; the front door imports it.

pub mod cors;
pub mod jwt;
pub mod pattern;
pub mod secret;

use std::net::IpAddr;

use jwt::{Grants, JwtVerifier};
use pattern::TopicPattern;
use secret::Secret;

use crate::error::ApiError;

/// The cookie a browser sends a subscribe token in.
pub const TOKEN_COOKIE: &str = "sse_token";

/// The credentials a request carries, borrowed from its head.
#[derive(Clone, Copy, Default)]
pub struct Credentials<'a> {
    /// `Authorization: Bearer <token>`.
    pub bearer: Option<&'a [u8]>,
    /// The `sse_token` cookie.
    pub cookie: Option<&'a [u8]>,
    /// The `access_token` query parameter.
    pub query: Option<&'a [u8]>,
}

impl<'a> Credentials<'a> {
    /// Reads the `Authorization` and `Cookie` header values.
    pub fn from_headers(authorization: Option<&'a [u8]>, cookies: impl Iterator<Item = &'a [u8]>) -> Self {
        // The scheme name is case-insensitive (RFC 7235).
        let bearer = authorization
            .filter(|value| value.len() > 7 && value[..7].eq_ignore_ascii_case(b"bearer "))
            .map(|value| &value[7..]);
        let cookie = cookies.flat_map(|header| header.split(|&b| b == b';')).find_map(|pair| {
            let pair = pair.trim_ascii();
            let (name, value) = pair.split_at(pair.iter().position(|&b| b == b'=')?);
            (name == TOKEN_COOKIE.as_bytes()).then_some(&value[1..])
        });
        Credentials { bearer, cookie, query: None }
    }

    /// The tokens a subscribe request presents: header, then cookie, then query.
    fn subscribe_tokens(&self) -> impl Iterator<Item = &'a [u8]> {
        [self.bearer, self.cookie, self.query].into_iter().flatten()
    }
}

impl std::fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(…)")
    }
}

/// Who a publish came from, for per-publisher rate limits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Publisher {
    /// The n-th configured publish token.
    Token(usize),
    /// A JWT's `sub`.
    Subject(String),
    /// No identity beyond the peer address (open server, or a JWT without `sub`).
    Address(IpAddr),
}

/// The access rules from configuration.
#[derive(Debug)]
pub struct AccessPolicy {
    tokens: Vec<Secret>,
    jwt: Option<JwtVerifier>,
    private: Vec<TopicPattern>,
}

impl AccessPolicy {
    pub fn new(tokens: Vec<Secret>, jwt_secret: Option<&Secret>, private: Vec<TopicPattern>) -> AccessPolicy {
        AccessPolicy { tokens, jwt: jwt_secret.map(JwtVerifier::new), private }
    }

    /// Whether anyone who can reach the server may publish.
    pub fn publishing_is_open(&self) -> bool {
        self.tokens.is_empty() && self.jwt.is_none()
    }

    /// Lets the request publish to `topic`, or says why not: 401 without a valid
    /// credential, 403 with a token whose claims do not cover the topic.
    pub fn authorize_publish(
        &self,
        credentials: &Credentials<'_>,
        topic: &str,
        peer: IpAddr,
    ) -> Result<Publisher, ApiError> {
        if self.publishing_is_open() {
            return Ok(Publisher::Address(peer));
        }
        let presented = credentials.bearer.ok_or(ApiError::Unauthorized)?;
        // Every token is compared, so the time does not tell which one nearly matched.
        let matched = self
            .tokens
            .iter()
            .enumerate()
            .fold(None, |found, (i, t)| if t.matches(presented) { Some(i) } else { found });
        if let Some(index) = matched {
            return Ok(Publisher::Token(index));
        }
        let grants = self.verify(presented)?;
        if !grants.may_publish(topic) {
            return Err(ApiError::Forbidden);
        }
        Ok(grants.subject.map_or(Publisher::Address(peer), Publisher::Subject))
    }

    /// Lets the request read `topics`: public ones need nothing; private ones need a JWT
    /// whose `subscribe` claim covers every one of them. Returns that token's `exp`, when
    /// it has one: the stream must end then.
    pub fn authorize_subscribe(
        &self,
        credentials: &Credentials<'_>,
        topics: &[String],
    ) -> Result<Option<u64>, ApiError> {
        let private: Vec<&String> = topics.iter().filter(|t| self.private.iter().any(|p| p.matches(t))).collect();
        if private.is_empty() {
            return Ok(None);
        }
        // A stale token in one place (an old cookie) must not hide a good one in another:
        // the first that covers every private topic wins; otherwise the first refusal.
        let mut refusal = ApiError::Unauthorized;
        for (i, token) in credentials.subscribe_tokens().enumerate() {
            let covered = self.verify(token).and_then(|grants| {
                if private.iter().all(|topic| grants.may_subscribe(topic)) {
                    Ok(grants.expires)
                } else {
                    Err(ApiError::Forbidden)
                }
            });
            match covered {
                Ok(expires) => return Ok(expires),
                Err(error) if i == 0 => refusal = error,
                Err(_) => {}
            }
        }
        Err(refusal)
    }

    fn verify(&self, token: &[u8]) -> Result<Grants, ApiError> {
        match &self.jwt {
            Some(verifier) => verifier.verify(token),
            // No key configured: nothing but the static tokens is valid.
            None => Err(ApiError::InvalidToken),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::jwt::tests::{sign, KEY};
    use super::*;
    use jsonwebtoken::Algorithm;

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn policy(tokens: &[&str], jwt: bool, private: &[&str]) -> AccessPolicy {
        let key: Secret = KEY.parse().unwrap();
        AccessPolicy::new(
            tokens.iter().map(|t| t.parse().unwrap()).collect(),
            jwt.then_some(&key),
            private.iter().map(|p| p.parse().unwrap()).collect(),
        )
    }

    fn bearer(token: &str) -> Credentials<'_> {
        Credentials { bearer: Some(token.as_bytes()), ..Credentials::default() }
    }

    fn status(result: Result<impl std::fmt::Debug, ApiError>) -> u16 {
        result.map_or_else(|e| e.status(), |_| 200)
    }

    #[test]
    fn credentials_never_show_their_tokens_in_debug_output() {
        let credentials = Credentials { bearer: Some(b"secret-token"), cookie: Some(b"c00kie"), query: None };
        assert_eq!(format!("{credentials:?}"), "Credentials(…)");
    }

    #[test]
    fn a_bearer_needs_a_token_after_its_scheme() {
        let read = |header: &'static [u8]| Credentials::from_headers(Some(header), std::iter::empty()).bearer;
        assert_eq!(read(b"Bearer "), None, "the scheme alone is no credential");
        assert_eq!(read(b"Bearer"), None);
        assert_eq!(read(b"bearer x"), Some(&b"x"[..]), "the scheme is case-insensitive");
        assert_eq!(read(b"Basic abcdef"), None);
    }

    #[test]
    fn publish_needs_a_static_token_or_a_jwt_that_covers_the_topic() {
        assert_eq!(
            policy(&[], false, &[]).authorize_publish(&Credentials::default(), "t", PEER).unwrap(),
            Publisher::Address(PEER)
        );
        let p = policy(&["first-token", "second-token"], true, &[]);
        assert_eq!(p.authorize_publish(&bearer("second-token"), "t", PEER).unwrap(), Publisher::Token(1));
        let jwt = sign(&serde_json::json!({"sub": "ops", "sse": {"publish": ["alerts/*"]}}), KEY, Algorithm::HS256);
        assert_eq!(p.authorize_publish(&bearer(&jwt), "alerts/disk", PEER).unwrap(), Publisher::Subject("ops".into()));
        assert_eq!(status(p.authorize_publish(&bearer(&jwt), "news", PEER)), 403);
        assert_eq!(status(p.authorize_publish(&Credentials::default(), "t", PEER)), 401);
        assert_eq!(status(p.authorize_publish(&bearer("first-toke"), "t", PEER)), 401);
        let cookie_only =
            Credentials { cookie: Some(jwt.as_bytes()), query: Some(jwt.as_bytes()), ..Credentials::default() };
        assert_eq!(
            status(p.authorize_publish(&cookie_only, "alerts/disk", PEER)),
            401,
            "publish takes the header only"
        );
    }

    #[test]
    fn private_topics_need_a_subscribe_claim_from_header_cookie_or_query() {
        let p = policy(&["first-token"], true, &["private/*"]);
        let jwt = sign(&serde_json::json!({"sse": {"subscribe": ["private/a"]}}), KEY, Algorithm::HS256);
        let topics = |t: &[&str]| t.iter().map(|t| t.to_string()).collect::<Vec<_>>();
        assert!(p.authorize_subscribe(&Credentials::default(), &topics(&["public"])).is_ok());
        assert_eq!(status(p.authorize_subscribe(&Credentials::default(), &topics(&["public", "private/a"]))), 401);
        for credentials in [
            bearer(&jwt),
            Credentials { cookie: Some(jwt.as_bytes()), ..Credentials::default() },
            Credentials { query: Some(jwt.as_bytes()), ..Credentials::default() },
        ] {
            assert!(p.authorize_subscribe(&credentials, &topics(&["public", "private/a"])).is_ok());
            assert_eq!(status(p.authorize_subscribe(&credentials, &topics(&["private/a", "private/b"]))), 403);
        }
        assert_eq!(
            status(p.authorize_subscribe(&bearer("first-token"), &topics(&["private/a"]))),
            401,
            "publish tokens do not read"
        );
        let stale = sign(&serde_json::json!({"sse": {"subscribe": ["private/old"]}}), KEY, Algorithm::HS256);
        let mixed =
            Credentials { cookie: Some(stale.as_bytes()), query: Some(jwt.as_bytes()), ..Credentials::default() };
        assert!(
            p.authorize_subscribe(&mixed, &topics(&["private/a"])).is_ok(),
            "a stale cookie does not hide a good token"
        );
        assert_eq!(
            status(p.authorize_subscribe(&mixed, &topics(&["private/b"]))),
            403,
            "the first refusal is reported"
        );
        // The first refusal, not the last: a stale cookie (403) before a forged query (401).
        let stale_then_forged =
            Credentials { cookie: Some(stale.as_bytes()), query: Some(b"forged"), ..Credentials::default() };
        assert_eq!(status(p.authorize_subscribe(&stale_then_forged, &topics(&["private/a"]))), 403);
        let forged_then_stale =
            Credentials { cookie: Some(b"forged"), query: Some(stale.as_bytes()), ..Credentials::default() };
        assert_eq!(status(p.authorize_subscribe(&forged_then_stale, &topics(&["private/a"]))), 401);
    }

    #[test]
    fn the_token_cookie_is_found_among_others() {
        let headers: [&[u8]; 2] = [b"theme=dark; sse_token=abc.def.ghi", b"other=1"];
        let found = Credentials::from_headers(Some(b"Basic x"), headers.into_iter());
        assert_eq!((found.bearer, found.cookie), (None, Some(&b"abc.def.ghi"[..])));
        let none = Credentials::from_headers(None, [&b"sse_token_old=x; xsse_token=y"[..]].into_iter());
        assert_eq!(none.cookie, None);
        assert_eq!(Credentials::from_headers(Some(b"bearer t0k"), std::iter::empty()).bearer, Some(&b"t0k"[..]));
    }
}
