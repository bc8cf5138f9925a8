//! Cross-origin access for browsers (`--cors-origin`): which page origins may read the
//! streams and publish, and the preflight a browser sends before a publish with an
//! `Authorization` header.
//!
//! Origins are matched exactly (`https://app.example.com`, scheme and port included).
//! An allowed origin gets `Access-Control-Allow-Origin: <that origin>` with credentials
//! (cookies) allowed; `*` allows every origin but never with credentials, as the Fetch
//! standard requires. A request from any other origin gets no CORS header, so the browser
//! keeps the answer from the page.

use std::fmt::Write;
use std::str::FromStr;

/// What a preflight answer adds: the methods and request headers a page may use, and how
/// long (seconds) the browser may cache the answer.
const PREFLIGHT_HEADERS: &str = "access-control-allow-methods: GET, POST\r\n\
access-control-allow-headers: authorization, content-type, idempotency-key, last-event-id\r\n\
access-control-max-age: 600\r\n";

/// One `--cors-origin` value: an exact origin, or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsOrigin(String);

impl FromStr for CorsOrigin {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let valid = text == "*"
            || text.split_once("://").is_some_and(|(scheme, host)| {
                matches!(scheme, "http" | "https")
                    && !host.is_empty()
                    && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
            });
        if !valid {
            return Err("an origin is scheme://host[:port] (no path, no trailing slash), or *".to_owned());
        }
        Ok(CorsOrigin(text.to_ascii_lowercase()))
    }
}

/// The allowlist.
#[derive(Debug, Clone, Default)]
pub struct CorsPolicy {
    origins: Vec<String>,
    any: bool,
}

impl CorsPolicy {
    pub fn new(origins: &[CorsOrigin]) -> CorsPolicy {
        CorsPolicy {
            any: origins.iter().any(|o| o.0 == "*"),
            origins: origins.iter().filter(|o| o.0 != "*").map(|o| o.0.clone()).collect(),
        }
    }

    /// The CORS header lines (`name: value\r\n`) for a response to a request from
    /// `origin`; empty when the origin is not allowed or the request named none.
    pub fn response_headers(&self, origin: Option<&[u8]>) -> String {
        let mut lines = String::new();
        let exact = origin.and_then(|origin| self.origins.iter().find(|o| o.as_bytes().eq_ignore_ascii_case(origin)));
        if let Some(exact) = exact {
            let _ = write!(lines, "access-control-allow-origin: {exact}\r\naccess-control-allow-credentials: true\r\n");
        } else if self.any && origin.is_some() {
            lines.push_str("access-control-allow-origin: *\r\n");
        }
        if !self.origins.is_empty() {
            // The answer depends on the origin (its presence too): caches must keep one
            // per origin.
            lines.push_str("vary: origin\r\n");
        }
        lines
    }

    /// The header lines a preflight from `origin` asking for `method` adds to those of
    /// [`CorsPolicy::response_headers`], or `None` when it must be refused.
    pub fn preflight_headers(&self, origin: Option<&[u8]>, method: Option<&[u8]>) -> Option<&'static str> {
        let allowed = self.response_headers(origin).contains("access-control-allow-origin");
        (allowed && matches!(method, Some(b"GET" | b"POST"))).then_some(PREFLIGHT_HEADERS)
    }
}

/// Header lines as `(name, value)` pairs, for responses built with `http`.
pub fn header_pairs(lines: &str) -> impl Iterator<Item = (&str, &str)> {
    lines.split("\r\n").filter_map(|line| line.split_once(": "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(origins: &[&str]) -> CorsPolicy {
        CorsPolicy::new(&origins.iter().map(|o| o.parse().unwrap()).collect::<Vec<CorsOrigin>>())
    }

    #[test]
    fn only_listed_origins_get_credentials_and_star_never_does() {
        let p = policy(&["https://app.example.com", "http://localhost:3000"]);
        let allowed = p.response_headers(Some(b"https://app.example.com"));
        assert!(allowed.contains("access-control-allow-origin: https://app.example.com\r\n"), "{allowed}");
        assert!(allowed.contains("access-control-allow-credentials: true\r\n") && allowed.contains("vary: origin"));
        assert_eq!(p.response_headers(Some(b"https://evil.example.com")), "vary: origin\r\n");
        assert_eq!(p.response_headers(Some(b"https://app.example.com.evil.com")), "vary: origin\r\n");
        assert_eq!(p.response_headers(None), "vary: origin\r\n", "caches must not serve this to an allowed origin");
        assert_eq!(policy(&["*"]).response_headers(None), "");
        let any = policy(&["*"]);
        assert_eq!(any.response_headers(Some(b"https://x.example")), "access-control-allow-origin: *\r\n");
        assert_eq!(policy(&[]).response_headers(Some(b"https://x.example")), "");
    }

    #[test]
    fn preflights_are_answered_for_allowed_origins_and_methods_only() {
        let p = policy(&["https://app.example.com"]);
        let answer = p.preflight_headers(Some(b"https://app.example.com"), Some(b"POST")).unwrap();
        assert!(answer.contains("access-control-allow-headers: authorization"), "{answer}");
        assert!(p.preflight_headers(Some(b"https://app.example.com"), Some(b"DELETE")).is_none());
        assert!(p.preflight_headers(Some(b"https://other.example"), Some(b"POST")).is_none());
        assert!(p.preflight_headers(None, Some(b"POST")).is_none());
        for bad in ["app.example.com", "https://app.example.com/", "ftp://x", "https://", "https://a b"] {
            assert!(bad.parse::<CorsOrigin>().is_err(), "{bad}");
        }
    }
}
