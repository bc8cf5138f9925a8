//! Publish authorisation: bearer tokens from configuration, compared in constant time.
//! Tokens are [`Secret`]s: they never appear in `Debug` output or logs.

use std::fmt;
use std::str::FromStr;

use http::HeaderMap;

use crate::error::ApiError;

/// A token from configuration; its `Debug` form hides it.
#[derive(Clone)]
pub struct Secret(String);

impl FromStr for Secret {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() < 8 || !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("a token is at least 8 visible ASCII characters".to_owned());
        }
        Ok(Secret(text.to_owned()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl Secret {
    /// Whether `candidate` is this token; the time taken does not depend on where they
    /// differ.
    fn matches(&self, candidate: &[u8]) -> bool {
        let token = self.0.as_bytes();
        let differ = token.iter().zip(candidate).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        differ == 0 && token.len() == candidate.len()
    }
}

/// Lets the request publish when no token is configured, or when it carries
/// `Authorization: Bearer <one of them>`; otherwise 401.
pub fn authorize_publish(headers: &HeaderMap, tokens: &[Secret]) -> Result<(), ApiError> {
    if tokens.is_empty() {
        return Ok(());
    }
    // The scheme name is case-insensitive (RFC 7235).
    let presented = headers
        .get(http::header::AUTHORIZATION)
        .map(|value| value.as_bytes())
        .filter(|value| value.len() > 7 && value[..7].eq_ignore_ascii_case(b"bearer "))
        .map_or(&b""[..], |value| &value[7..]);
    // Every token is compared, so the time does not tell which one nearly matched.
    let accepted = tokens.iter().fold(false, |ok, token| token.matches(presented) | ok);
    if accepted {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(auth) = auth {
            headers.insert(http::header::AUTHORIZATION, auth.parse().unwrap());
        }
        headers
    }

    #[test]
    fn only_a_configured_bearer_token_publishes_and_tokens_never_print() {
        let tokens: Vec<Secret> = vec!["first-token".parse().unwrap(), "second-token".parse().unwrap()];
        assert!(authorize_publish(&headers(None), &[]).is_ok(), "open without tokens");
        assert!(authorize_publish(&headers(Some("Bearer second-token")), &tokens).is_ok());
        assert!(authorize_publish(&headers(Some("bearer first-token")), &tokens).is_ok(), "scheme case");
        for refused in
            [None, Some("Bearer first-toke"), Some("Bearer first-token2"), Some("first-token"), Some("Basic x")]
        {
            let error = authorize_publish(&headers(refused), &tokens).unwrap_err();
            assert_eq!((error.status(), error.code()), (401, "unauthorized"), "{refused:?}");
        }
        assert!(!format!("{tokens:?}").contains("token"), "{tokens:?}");
        assert!("short".parse::<Secret>().is_err());
    }
}
