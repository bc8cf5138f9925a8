//! One connection, from accept to close: the TLS handshake when serving TLS, the request
//! head within the header timeout, then the lean event-stream path (HTTP/1.1
//! `GET /events`, access checked here) or hyper (everything else, HTTP/2 included).
//!
//! The head buffer is dropped before a lean stream starts, so a long-lived stream keeps
//! only its socket, its cursor and a small task.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::OwnedSemaphorePermit;
use tracing::debug;

use crate::access::Credentials;
use crate::error::ApiError;
use crate::http::api;
use crate::http::io::ConnIo;
use crate::http::lean::LeanStream;
use crate::http::request::{self, SubscribeRequest};
use crate::http::shared::{ConnGuard, Shared};
use crate::http::tls::Tls;
use crate::http::tls_stream;
use crate::limits::IpPlace;
use crate::metrics::DisconnectReason;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The head buffer's first size; it doubles up to [`request::MAX_HEAD_BYTES`].
const HEAD_BUF_START: usize = 1024;
const _: () = assert!(
    request::MAX_HEAD_BYTES.is_power_of_two() && request::MAX_HEAD_BYTES >= HEAD_BUF_START,
    "doubling from HEAD_BUF_START must reach MAX_HEAD_BYTES exactly"
);

/// What the first bytes of a connection turned out to be.
enum Head {
    /// HTTP/1.x `GET /events`: served by the lean path, with the CORS header lines its
    /// answer carries.
    Stream(Result<(SubscribeRequest, Option<u64>), ApiError>, String),
    /// Any other HTTP/1.x request: hyper, with the bytes read so far replayed.
    Http1(Bytes),
    /// The HTTP/2 prior-knowledge preface: hyper's HTTP/2 server.
    Http2(Bytes),
}

enum HeadError {
    Closed,
    Reject(ApiError),
}

/// Serves one accepted connection; the permit and the address slot are released when it
/// ends.
pub(crate) async fn serve<S>(
    shared: Arc<Shared>,
    io: S,
    permit: OwnedSemaphorePermit,
    ip_place: IpPlace,
    peer: SocketAddr,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let guard = ConnGuard::new(shared.metrics.clone(), permit, ip_place);
    // The handshake and the request head share the header timeout.
    let head_deadline = tokio::time::Instant::now() + shared.config.header_timeout;
    match shared.tls.clone() {
        None => serve_http(shared, io, guard, peer, head_deadline).await,
        // Boxed: a cleartext connection's task must not reserve room for a TLS session.
        Some(tls) => Box::pin(serve_tls(shared, tls, io, guard, peer, head_deadline)).await,
    }
}

/// The TLS handshake, then the head reader (which tells HTTP/2 by its preface).
async fn serve_tls<S>(
    shared: Arc<Shared>,
    tls: Tls,
    io: S,
    guard: ConnGuard,
    peer: SocketAddr,
    head_deadline: tokio::time::Instant,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let handshake = tokio::select! {
        biased;
        _ = shared.closing.cancelled() => return,
        handshake = tokio::time::timeout_at(head_deadline, tls_stream::accept(tls.config(), io)) => handshake,
    };
    match handshake {
        // HTTP/2 (ALPN `h2`) is told from HTTP/1 by its preface, as on plain connections,
        // and its preface is due within the same deadline as a head.
        Ok(Ok(tls)) => serve_http(shared, tls, guard, peer, head_deadline).await,
        Ok(Err(error)) => {
            debug!(%error, "TLS handshake failed");
            shared.metrics.rejected("tls_handshake");
        }
        Err(_elapsed) => shared.metrics.disconnected(DisconnectReason::HeaderTimeout),
    }
}

/// Serves HTTP on a plain or decrypted byte stream.
async fn serve_http<S>(
    shared: Arc<Shared>,
    mut io: S,
    guard: ConnGuard,
    peer: SocketAddr,
    head_deadline: tokio::time::Instant,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = &shared.config;
    let head = tokio::select! {
        biased;
        _ = shared.closing.cancelled() => return,
        head = tokio::time::timeout_at(head_deadline, read_head(&shared, &mut io)) => head,
    };
    let head = match head {
        Err(_elapsed) => {
            debug!("no request head within the header timeout");
            shared.metrics.disconnected(DisconnectReason::HeaderTimeout);
            return;
        }
        Ok(Err(HeadError::Closed)) => return,
        Ok(Err(HeadError::Reject(error))) => return answer_error(&shared, &mut io, &error, "").await,
        Ok(Ok(head)) => head,
    };
    let timed_out = Arc::new(AtomicBool::new(false));
    match head {
        Head::Stream(request, cors) => {
            let subscribed = request.and_then(|(r, expires)| {
                shared.subscribe(&r.topics, r.last_event_id.as_deref(), expires, timed_out.clone())
            });
            match subscribed {
                Ok(subscription) => {
                    // The stream goes on as a task of its own holding only the stream's
                    // state; this task's (head parsing, the hyper branches) is freed now.
                    let io = ConnIo::new(io, None, config.write_timeout, timed_out);
                    shared.tasks.spawn(LeanStream::new(shared.clone(), io, subscription, guard, &cors));
                }
                Err(error) => answer_error(&shared, &mut io, &error, &cors).await,
            }
        }
        Head::Http1(prefix) => {
            let io = ConnIo::new(io, Some(prefix), config.write_timeout, timed_out.clone());
            api::serve_http1(shared.clone(), io, timed_out, peer).await;
            drop(guard);
        }
        Head::Http2(prefix) => {
            let io = ConnIo::new(io, Some(prefix), config.write_timeout, timed_out.clone());
            api::serve_http2(shared.clone(), io, timed_out, peer).await;
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

/// Answers an error (with `more_headers`, whole header lines) and closes, bounded by the
/// write timeout.
async fn answer_error<S: AsyncWrite + Unpin>(shared: &Shared, io: &mut S, error: &ApiError, more_headers: &str) {
    shared.metrics.rejected(error.code());
    let answer = error.raw_http1_with(more_headers);
    // Flushed and shut down: a TLS stream holds its last write until then.
    let said = async {
        io.write_all(&answer).await?;
        io.flush().await?;
        io.shutdown().await
    };
    let _ = tokio::time::timeout(shared.config.write_timeout, said).await;
}

async fn read_head<S: AsyncRead + Unpin>(shared: &Shared, io: &mut S) -> Result<Head, HeadError> {
    let mut buf = BytesMut::with_capacity(HEAD_BUF_START);
    loop {
        if buf.len() == buf.capacity() {
            if buf.len() >= request::MAX_HEAD_BYTES {
                return Err(HeadError::Reject(ApiError::HeadersTooLarge));
            }
            // Doubles: from 1 KiB through powers of two, the last step ends at the limit.
            buf.reserve(buf.len());
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
        match parse_http1(shared, &buf)? {
            None => {}
            Some(Http1::Stream(request, cors)) => return Ok(Head::Stream(request, cors)),
            Some(Http1::Other) => return Ok(Head::Http1(buf.freeze())),
        }
    }
}

/// A whole HTTP/1.x head, classified.
enum Http1 {
    /// `GET /events`, already parsed and its access checked: the head bytes are no
    /// longer needed. With the CORS header lines for its answer.
    Stream(Result<(SubscribeRequest, Option<u64>), ApiError>, String),
    /// Anything else: hyper parses it again from the raw bytes.
    Other,
}

/// `Some` once a whole head is in `buf`.
fn parse_http1(shared: &Shared, buf: &[u8]) -> Result<Option<Http1>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; request::MAX_HEADERS];
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
            let header =
                |name: &str| request.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
            let cors = shared.cors.response_headers(header("origin"));
            let cookies = request.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("cookie")).map(|h| h.value);
            let credentials = Credentials::from_headers(header("authorization"), cookies);
            let parsed = request::parse_subscribe(query, header("last-event-id")).and_then(|wanted| {
                let expires = wanted.authorize(&shared.access, credentials)?;
                Ok((wanted, expires))
            });
            Ok(Some(Http1::Stream(parsed, cors)))
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
