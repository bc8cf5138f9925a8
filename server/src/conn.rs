//! One connection, from accept to close: read the request head within the header
//! timeout, then hand the socket to the lean event-stream path (HTTP/1.1
//! `GET /events`) or to hyper (everything else, HTTP/2 included).
//!
//! The head buffer is dropped before a lean stream starts, so a long-lived stream keeps
//! only its socket, its cursor and a small task.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::OwnedSemaphorePermit;
use tracing::debug;

use crate::error::ApiError;
use crate::http_api;
use crate::io::ConnIo;
use crate::lean::LeanStream;
use crate::metrics::{DisconnectReason, Metrics};
use crate::request::{self, SubscribeRequest};
use crate::server::Shared;

/// Largest request head read before answering 431.
pub const MAX_HEAD_BYTES: usize = 16 << 10;
/// Most header lines in a request head before answering 431.
pub const MAX_HEADERS: usize = 64;
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the first bytes of a connection turned out to be.
enum Head {
    /// HTTP/1.x `GET /events`: served by the lean path.
    Stream(Result<SubscribeRequest, ApiError>),
    /// Any other HTTP/1.x request: hyper, with the bytes read so far replayed.
    Http1(Bytes),
    /// The HTTP/2 prior-knowledge preface: hyper's HTTP/2 server.
    Http2(Bytes),
}

enum HeadError {
    Closed,
    Reject(ApiError),
}

/// Holds a connection's permit and keeps `sse_connections` true whichever way (and in
/// whichever task) the connection ends.
pub(crate) struct ConnGuard {
    metrics: Arc<Metrics>,
    _permit: OwnedSemaphorePermit,
}

impl ConnGuard {
    fn new(metrics: Arc<Metrics>, permit: OwnedSemaphorePermit) -> ConnGuard {
        metrics.connection_opened();
        ConnGuard { metrics, _permit: permit }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.metrics.connection_closed();
    }
}

/// Serves one accepted connection; the permit is released when it ends.
pub(crate) async fn serve<S>(shared: Arc<Shared>, mut io: S, permit: OwnedSemaphorePermit)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let guard = ConnGuard::new(shared.metrics.clone(), permit);
    let config = &shared.config;
    let head = tokio::select! {
        biased;
        _ = shared.closing.cancelled() => return,
        head = tokio::time::timeout(config.header_timeout, read_head(&mut io)) => head,
    };
    let head = match head {
        Err(_elapsed) => {
            debug!("no request head within the header timeout");
            shared.metrics.disconnected(DisconnectReason::HeaderTimeout);
            return;
        }
        Ok(Err(HeadError::Closed)) => return,
        Ok(Err(HeadError::Reject(error))) => return answer_error(&shared, &mut io, &error).await,
        Ok(Ok(head)) => head,
    };
    let timed_out = Arc::new(AtomicBool::new(false));
    match head {
        Head::Stream(request) => {
            match request.and_then(|r| shared.subscribe(&r.topics, r.last_event_id.as_deref(), timed_out.clone())) {
                Ok(subscription) => {
                    // The stream goes on as a task of its own holding only the stream's
                    // state; this task's (head parsing, the hyper branches) is freed now.
                    let io = ConnIo::new(io, None, config.write_timeout, timed_out);
                    shared.tasks.spawn(LeanStream::new(shared.clone(), io, subscription, guard));
                }
                Err(error) => answer_error(&shared, &mut io, &error).await,
            }
        }
        Head::Http1(prefix) => {
            let io = ConnIo::new(io, Some(prefix), config.write_timeout, timed_out.clone());
            http_api::serve_http1(shared.clone(), io, timed_out).await;
            drop(guard);
        }
        Head::Http2(prefix) => {
            let io = ConnIo::new(io, Some(prefix), config.write_timeout, timed_out.clone());
            http_api::serve_http2(shared.clone(), io, timed_out).await;
            drop(guard);
        }
    }
}

/// The path-and-query of a request target: servers must accept the absolute form
/// (`http://host/path?q`, RFC 9112 section 3.2.2) as well as the usual origin form.
fn origin_form(target: &str) -> &str {
    let absolute = target
        .split_once("://")
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https"));
    match absolute {
        None => target,
        Some((_, rest)) => rest.find(['/', '?']).map_or("/", |at| &rest[at..]),
    }
}

/// Answers an error and closes, bounded by the write timeout.
async fn answer_error<S: AsyncWrite + Unpin>(shared: &Shared, io: &mut S, error: &ApiError) {
    shared.metrics.rejected(error.code());
    let _ = tokio::time::timeout(shared.config.write_timeout, io.write_all(&error.raw_http1())).await;
}

async fn read_head<S: AsyncRead + Unpin>(io: &mut S) -> Result<Head, HeadError> {
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if buf.len() == buf.capacity() {
            if buf.len() >= MAX_HEAD_BYTES {
                return Err(HeadError::Reject(ApiError::HeadersTooLarge));
            }
            buf.reserve(buf.len().min(MAX_HEAD_BYTES - buf.len()));
        }
        match io.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return Err(HeadError::Closed),
            Ok(_) => {}
        }
        if buf.len() >= H2_PREFACE.len() && buf.starts_with(H2_PREFACE) {
            return Ok(Head::Http2(buf.freeze()));
        }
        if H2_PREFACE.starts_with(&buf) {
            continue;
        }
        match parse_http1(&buf)? {
            None => {}
            Some(Http1::Stream(request)) => return Ok(Head::Stream(request)),
            Some(Http1::Other) => return Ok(Head::Http1(buf.freeze())),
        }
    }
}

/// A whole HTTP/1.x head, classified.
enum Http1 {
    /// `GET /events`, already parsed: the head bytes are no longer needed.
    Stream(Result<SubscribeRequest, ApiError>),
    /// Anything else: hyper parses it again from the raw bytes.
    Other,
}

/// `Some` once a whole head is in `buf`.
fn parse_http1(buf: &[u8]) -> Result<Option<Http1>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf) {
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::Reject(ApiError::HeadersTooLarge)),
        Err(_) => Err(HeadError::Reject(ApiError::BadRequest("bad_request", "the request head is malformed"))),
        Ok(httparse::Status::Complete(_)) => {
            let target = origin_form(request.path.unwrap_or(""));
            let (path, query) = match target.split_once('?') {
                Some((path, query)) => (path, Some(query)),
                None => (target, None),
            };
            if request.method != Some("GET") || path != "/events" {
                return Ok(Some(Http1::Other));
            }
            let last_event_id =
                request.headers.iter().find(|h| h.name.eq_ignore_ascii_case("last-event-id")).map(|h| h.value);
            let parsed = request::parse_subscribe(query, last_event_id);
            Ok(Some(Http1::Stream(parsed)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::origin_form;

    #[test]
    fn absolute_form_targets_become_origin_form() {
        assert_eq!(origin_form("/events?topic=a"), "/events?topic=a");
        assert_eq!(origin_form("http://h:1/events?topic=a"), "/events?topic=a");
        assert_eq!(origin_form("HTTPS://h/events"), "/events");
        assert_eq!(origin_form("http://h"), "/");
        assert_eq!(origin_form("http://h?x"), "?x");
        assert_eq!(origin_form("*"), "*");
    }
}
