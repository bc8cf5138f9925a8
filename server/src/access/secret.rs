//! Secrets from configuration (publish tokens, the JWT key): never in `Debug` output or
//! logs, compared in constant time.

use std::fmt;
use std::str::FromStr;

/// A token or key from configuration; its `Debug` form hides it.
#[derive(Clone)]
pub struct Secret(String);

impl FromStr for Secret {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() < 8 || !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("a secret is at least 8 visible ASCII characters".to_owned());
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
    /// Whether `candidate` is this secret; the time taken does not depend on where they
    /// differ.
    pub(crate) fn matches(&self, candidate: &[u8]) -> bool {
        let token = self.0.as_bytes();
        let differ = token.iter().zip(candidate).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        differ == 0 && token.len() == candidate.len()
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn secrets_match_exactly_and_never_print() {
        let secret: Secret = "first-token".parse().unwrap();
        assert!(secret.matches(b"first-token"));
        // Two bytes off by the same bit: differences that cancel out still differ.
        for other in [&b"first-toke"[..], b"first-token2", b"First-token", b"girst-tokeo", b""] {
            assert!(!secret.matches(other), "{other:?}");
        }
        assert_eq!(format!("{secret:?}"), "Secret(…)");
        assert!("8-chars!".parse::<Secret>().is_ok(), "eight is enough");
        assert!("7-chars".parse::<Secret>().is_err());
        assert!("short".parse::<Secret>().is_err());
        assert!("has a space".parse::<Secret>().is_err());
    }
}
