//! The server's error type and its one mapping to HTTP answers:
//! `{"error":"<code>","message":"…"}` with the matching status.

use std::time::Duration;

/// Everything a request can fail with. Codes and messages are fixed strings: an error
/// never echoes client input or leaks internals.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed.
    #[error("{1}")]
    BadRequest(&'static str, &'static str),
    /// 401: the request needs a credential and carries none.
    #[error("a valid token is required")]
    Unauthorized,
    /// 401: the token presented is not valid (signature, algorithm, expiry or claims).
    #[error("the token is invalid or expired")]
    InvalidToken,
    /// 403: the token is valid but does not cover the topic.
    #[error("the token does not allow this topic")]
    Forbidden,
    /// 403: a preflight from an origin not on `--cors-origin`.
    #[error("this origin is not allowed")]
    OriginNotAllowed,
    /// 404: no such path.
    #[error("no such resource")]
    NotFound,
    /// 405: the path exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    /// 408: the body did not arrive within `--body-timeout`.
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    /// 409: an earlier request with the same idempotency key is still being handled;
    /// retry after the given delay for its answer.
    #[error("{1}")]
    Conflict(&'static str, &'static str, Duration),
    /// 413: the body exceeds `--max-event-bytes`.
    #[error("the event body exceeds the configured maximum")]
    PayloadTooLarge,
    /// 414: the request target is longer than the server reads.
    #[error("the request target is too long")]
    UriTooLong,
    /// 429: a per-client limit was reached; try again after the given delay.
    #[error("{1}")]
    TooManyRequests(&'static str, &'static str, Duration),
    /// 431: the request head is too large.
    #[error("the request head is too large")]
    HeadersTooLarge,
    /// 503: try again after the given delay.
    #[error("{1}")]
    Unavailable(&'static str, &'static str, Duration),
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(..) => 400,
            ApiError::Unauthorized | ApiError::InvalidToken => 401,
            ApiError::Forbidden | ApiError::OriginNotAllowed => 403,
            ApiError::NotFound => 404,
            ApiError::MethodNotAllowed(_) => 405,
            ApiError::BodyTimeout => 408,
            ApiError::Conflict(..) => 409,
            ApiError::PayloadTooLarge => 413,
            ApiError::UriTooLong => 414,
            ApiError::TooManyRequests(..) => 429,
            ApiError::HeadersTooLarge => 431,
            ApiError::Unavailable(..) => 503,
        }
    }

    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(code, _) => code,
            ApiError::Unauthorized => "unauthorized",
            ApiError::InvalidToken => "invalid_token",
            ApiError::Forbidden => "forbidden",
            ApiError::OriginNotAllowed => "origin_not_allowed",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::BodyTimeout => "body_timeout",
            ApiError::Conflict(code, ..) => code,
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UriTooLong => "uri_too_long",
            ApiError::TooManyRequests(code, ..) => code,
            ApiError::HeadersTooLarge => "headers_too_large",
            ApiError::Unavailable(code, ..) => code,
        }
    }

    /// Extra headers the status calls for (`Allow`, `Retry-After`).
    pub fn extra_header(&self) -> Option<(&'static str, String)> {
        match self {
            ApiError::MethodNotAllowed(allow) => Some(("allow", (*allow).to_owned())),
            ApiError::Unauthorized => Some(("www-authenticate", "Bearer".to_owned())),
            ApiError::InvalidToken => Some(("www-authenticate", "Bearer error=\"invalid_token\"".to_owned())),
            ApiError::Unavailable(_, _, after)
            | ApiError::TooManyRequests(_, _, after)
            | ApiError::Conflict(_, _, after) => Some(("retry-after", after.as_secs().max(1).to_string())),
            _ => None,
        }
    }

    /// The JSON body. Codes and messages are fixed ASCII without quotes, so no escaping.
    pub fn body(&self) -> String {
        format!("{{\"error\":\"{}\",\"message\":\"{}\"}}", self.code(), self)
    }

    /// A whole HTTP/1.1 response that closes the connection, for the lean path.
    pub fn raw_http1(&self) -> Vec<u8> {
        self.raw_http1_with("")
    }

    /// The same, with `more_headers` (whole `name: value\r\n` lines) in its head.
    pub fn raw_http1_with(&self, more_headers: &str) -> Vec<u8> {
        let body = self.body();
        let mut extra = self.extra_header().map(|(k, v)| format!("{k}: {v}\r\n")).unwrap_or_default();
        extra.push_str(more_headers);
        format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}connection: close\r\n\r\n{body}",
            self.status(),
            reason_phrase(self.status()),
            body.len()
        )
        .into_bytes()
    }
}

fn reason_phrase(status: u16) -> &'static str {
    http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Error")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raw_answer_has_its_status_line_with_the_standard_reason_and_its_json() {
        let raw = String::from_utf8(ApiError::NotFound.raw_http1()).unwrap();
        assert!(raw.starts_with("HTTP/1.1 404 Not Found\r\n"), "{raw}");
        assert!(raw.contains("content-type: application/json\r\n") && raw.contains("connection: close\r\n"), "{raw}");
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())), "{raw}");
        assert_eq!(body, ApiError::NotFound.body());
        assert_eq!(reason_phrase(431), "Request Header Fields Too Large");
        assert_eq!(reason_phrase(599), "Error", "a status without a standard reason");
    }
}
