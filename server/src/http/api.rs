//! Everything served through hyper: publish, CORS preflights, health, readiness,
//! metrics, the console page, and event streams over HTTP/2 or on a kept-alive HTTP/1.1
//! connection.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::access::cors;
use crate::access::Credentials;
use crate::error::ApiError;
use crate::http::io::ConnIo;
use crate::http::request;
use crate::http::shared::{draining, Shared};
use crate::metrics::DisconnectReason;
use crate::stream::frame;
use crate::stream::subscription::{Next, Subscription};

type Body = UnsyncBoxBody<Bytes, Infallible>;

const CONSOLE_PAGE: &str = include_str!("console.html");

/// Streams one HTTP/2 connection may carry at once: room for a browser's tabs, and the
/// bound on what `--max-connections-per-ip` connections from one address can hold.
pub const MAX_H2_STREAMS: u32 = 128;

/// Serves HTTP/1.1 requests (keep-alive) until the client leaves or the server drains.
pub(crate) async fn serve_http1<S>(shared: Arc<Shared>, io: ConnIo<S>, timed_out: Arc<AtomicBool>, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service(shared.clone(), timed_out, peer);
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(shared.config.header_timeout)
        .max_buf_size(request::MAX_HEAD_BYTES.max(8192))
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        biased;
        _ = connection.as_mut() => {}
        _ = shared.closing.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// Serves an HTTP/2 connection (prior knowledge, or `h2` negotiated over TLS).
pub(crate) async fn serve_http2<S>(shared: Arc<Shared>, io: ConnIo<S>, timed_out: Arc<AtomicBool>, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service(shared.clone(), timed_out, peer);
    // Pings find a dead or frozen HTTP/2 peer even while its streams are flow-control
    // blocked and no socket write is pending.
    let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_H2_STREAMS)
        .keep_alive_interval(Some(shared.config.heartbeat))
        .keep_alive_timeout(shared.config.write_timeout)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        biased;
        _ = connection.as_mut() => {}
        _ = shared.closing.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

fn service(
    shared: Arc<Shared>,
    timed_out: Arc<AtomicBool>,
    peer: SocketAddr,
) -> impl hyper::service::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible, Future: Send> + Clone
{
    service_fn(move |req: Request<Incoming>| {
        let (shared, timed_out) = (shared.clone(), timed_out.clone());
        async move {
            // Every answer under /events, errors included, carries the CORS headers, so
            // a page on an allowed origin can read why it was refused.
            let cors = match req.uri().path() {
                "/events" => shared.cors.response_headers(req.headers().get(header::ORIGIN).map(|v| v.as_bytes())),
                _ => String::new(),
            };
            let mut response =
                route(&shared, req, timed_out, peer).await.unwrap_or_else(|e| error_response(&shared, &e));
            add_header_lines(&mut response, &cors);
            Ok::<_, Infallible>(response)
        }
    })
}

async fn route(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    timed_out: Arc<AtomicBool>,
    peer: SocketAddr,
) -> Result<Response<Body>, ApiError> {
    match (req.uri().path(), req.method()) {
        ("/events", &Method::GET) => subscribe(shared, &req, timed_out),
        ("/events", &Method::POST) => publish(shared, req, peer).await,
        ("/events", &Method::OPTIONS) => preflight(shared, &req),
        ("/events", _) => Err(ApiError::MethodNotAllowed("GET, POST, OPTIONS")),
        ("/healthz", &Method::GET) => Ok(text(StatusCode::OK, "text/plain", "ok\n")),
        ("/readyz", &Method::GET) if shared.draining.load(Ordering::SeqCst) => Err(draining(shared.config.retry)),
        ("/readyz", &Method::GET) if !shared.hub.store_is_healthy() => {
            Err(ApiError::Unavailable("store_unavailable", "the event store cannot write", Duration::from_secs(1)))
        }
        ("/readyz", &Method::GET) => Ok(text(StatusCode::OK, "text/plain", "ready\n")),
        ("/metrics", &Method::GET) => {
            Ok(text(StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", {
                shared.metrics.set_log_up(shared.hub.store_is_healthy());
                shared.metrics.render()
            }))
        }
        ("/", &Method::GET) => Ok(text(StatusCode::OK, "text/html; charset=utf-8", CONSOLE_PAGE)),
        ("/healthz" | "/readyz" | "/metrics" | "/", _) => Err(ApiError::MethodNotAllowed("GET")),
        _ => Err(ApiError::NotFound),
    }
}

/// The credentials in a request's headers.
fn credentials(headers: &http::HeaderMap) -> Credentials<'_> {
    let authorization = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    Credentials::from_headers(authorization, headers.get_all(header::COOKIE).iter().map(|v| v.as_bytes()))
}

async fn publish(shared: &Shared, req: Request<Incoming>, peer: SocketAddr) -> Result<Response<Body>, ApiError> {
    let target = request::parse_publish(req.uri().query())?;
    let key =
        request::parse_idempotency_key(req.headers().get("idempotency-key").map(|v| v.as_bytes()))?.map(str::to_owned);
    // Publishing reads the header only: no cookie is looked at.
    let bearer =
        Credentials::from_headers(req.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes()), std::iter::empty());
    let publisher = shared.access.authorize_publish(&bearer, &target.topic, peer.ip())?;
    if let Err(wait) = shared.publish_rate.take(&publisher) {
        return Err(ApiError::TooManyRequests("rate_limited", "too many publishes; slow down", wait));
    }
    let max = shared.config.max_event_bytes;
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return Err(ApiError::PayloadTooLarge);
    }
    let body = tokio::time::timeout(shared.config.body_timeout, Limited::new(req.into_body(), max).collect());
    let body = match body.await {
        Err(_elapsed) => return Err(ApiError::BodyTimeout),
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => return Err(ApiError::PayloadTooLarge),
        Ok(Err(_)) => return Err(ApiError::BadRequest("incomplete_body", "the request body ended early")),
    };
    let data =
        std::str::from_utf8(&body).map_err(|_| ApiError::BadRequest("invalid_utf8", "event data must be UTF-8"))?;
    let published = shared.hub.publish_keyed(&target.topic, target.event_type.as_deref(), data, key.as_deref()).await?;
    let json = format!("{{\"id\":\"{}\",\"topic\":\"{}\"}}", published.id, target.topic);
    let mut response = text(StatusCode::CREATED, "application/json", json);
    if published.duplicate {
        // The answer the first publish got; nothing new was stored.
        response.headers_mut().insert("idempotent-replayed", http::HeaderValue::from_static("true"));
    }
    Ok(response)
}

fn subscribe(
    shared: &Arc<Shared>,
    req: &Request<Incoming>,
    timed_out: Arc<AtomicBool>,
) -> Result<Response<Body>, ApiError> {
    let header_id = req.headers().get("last-event-id").map(|v| v.as_bytes());
    let wanted = request::parse_subscribe(req.uri().query(), header_id)?;
    let expires = wanted.authorize(&shared.access, credentials(req.headers()))?;
    let subscription = shared.subscribe(&wanted.topics, wanted.last_event_id.as_deref(), expires, timed_out)?;
    let state = StreamState { shared: shared.clone(), subscription, pending: VecDeque::new(), finished: false };
    let frames = futures_util::stream::unfold(state, |mut state| async move {
        let frame = state.next_frame().await?;
        Some((Ok(Frame::data(frame)), state))
    });
    let response = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no")
        .body(StreamBody::new(frames).boxed_unsync())
        .expect("static head is valid");
    Ok(response)
}

/// Answers a CORS preflight: 204 with the allowed methods and headers for an allowed
/// origin, 403 otherwise; a plain `OPTIONS` (no `Origin`) gets the methods in `Allow`.
fn preflight(shared: &Shared, req: &Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let origin = req.headers().get(header::ORIGIN).map(|v| v.as_bytes());
    let mut response = text(StatusCode::NO_CONTENT, "text/plain", "");
    if origin.is_none() {
        response.headers_mut().insert(header::ALLOW, http::HeaderValue::from_static("GET, POST, OPTIONS"));
        return Ok(response);
    }
    let method = req.headers().get(header::ACCESS_CONTROL_REQUEST_METHOD).map(|v| v.as_bytes());
    // The service adds the origin lines to every answer; these are the preflight's own.
    let lines = shared.cors.preflight_headers(origin, method).ok_or(ApiError::OriginNotAllowed)?;
    add_header_lines(&mut response, lines);
    Ok(response)
}

fn add_header_lines(response: &mut Response<Body>, lines: &str) {
    for (name, value) in cors::header_pairs(lines) {
        if let (Ok(name), Ok(value)) = (http::HeaderName::try_from(name), http::HeaderValue::try_from(value)) {
            response.headers_mut().append(name, value);
        }
    }
}

/// Feeds a subscription's frames to hyper one `Bytes` at a time.
struct StreamState {
    shared: Arc<Shared>,
    subscription: Subscription,
    pending: VecDeque<Bytes>,
    finished: bool,
}

impl StreamState {
    async fn next_frame(&mut self) -> Option<Bytes> {
        loop {
            if let Some(frame) = self.pending.pop_front() {
                return Some(frame);
            }
            if self.finished {
                return None;
            }
            match self.subscription.next().await {
                Next::Opening(opening) => self.pending.push_back(opening),
                Next::Events(frames) => {
                    // Counted when handed to hyper, which writes them out next.
                    self.subscription.delivered(frames.len());
                    self.pending.extend(frames);
                }
                Next::Heartbeat => self.pending.push_back(Bytes::from_static(frame::HEARTBEAT)),
                Next::Shutdown => {
                    self.subscription.end(DisconnectReason::Shutdown);
                    self.pending.push_back(self.shared.goodbye());
                    self.finished = true;
                }
                Next::Disconnect(reason, farewell) => {
                    self.subscription.end(reason);
                    self.pending.push_back(Bytes::from_static(farewell));
                    self.finished = true;
                }
            }
        }
    }
}

fn text(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(body.into()).boxed_unsync())
        .expect("static head is valid")
}

fn error_response(shared: &Shared, error: &ApiError) -> Response<Body> {
    shared.metrics.rejected(error.code());
    let mut response =
        text(StatusCode::from_u16(error.status()).expect("known status"), "application/json", error.body());
    if let Some((name, value)) = error.extra_header() {
        response.headers_mut().insert(name, value.parse().expect("fixed text or digits"));
    }
    response
}
