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
    /// 401: publishing needs a valid bearer token.
    #[error("a valid publish token is required")]
    Unauthorized,
    /// 404: no such path.
    #[error("no such resource")]
    NotFound,
    /// 405: the path exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    /// 413: the body exceeds `--max-event-bytes`.
    #[error("the event body exceeds the configured maximum")]
    PayloadTooLarge,
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
            ApiError::Unauthorized => 401,
            ApiError::NotFound => 404,
            ApiError::MethodNotAllowed(_) => 405,
            ApiError::PayloadTooLarge => 413,
            ApiError::HeadersTooLarge => 431,
            ApiError::Unavailable(..) => 503,
        }
    }

    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(code, _) => code,
            ApiError::Unauthorized => "unauthorized",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::HeadersTooLarge => "headers_too_large",
            ApiError::Unavailable(code, ..) => code,
        }
    }

    /// Extra headers the status calls for (`Allow`, `Retry-After`).
    pub fn extra_header(&self) -> Option<(&'static str, String)> {
        match self {
            ApiError::MethodNotAllowed(allow) => Some(("allow", (*allow).to_owned())),
            ApiError::Unauthorized => Some(("www-authenticate", "Bearer".to_owned())),
            ApiError::Unavailable(_, _, after) => Some(("retry-after", after.as_secs().max(1).to_string())),
            _ => None,
        }
    }

    /// The JSON body. Codes and messages are fixed ASCII without quotes, so no escaping.
    pub fn body(&self) -> String {
        format!("{{\"error\":\"{}\",\"message\":\"{}\"}}", self.code(), self)
    }

    /// A whole HTTP/1.1 response that closes the connection, for the lean path.
    pub fn raw_http1(&self) -> Vec<u8> {
        let body = self.body();
        let extra = self.extra_header().map(|(k, v)| format!("{k}: {v}\r\n")).unwrap_or_default();
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
