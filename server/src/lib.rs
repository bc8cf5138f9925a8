//! `sse-server`: a Server-Sent Events server with bounded memory, resume by id,
//! timeouts against slow and dead peers, and seams that let simulations run it unchanged.
//!
//! Modules, in the order a request meets them:
//! - [`listener`]: the `Listener` seam (tokio TCP here, turmoil in simulations).
//! - [`server`]: `Server::run`, the accept loop, connection permits and graceful drain.
//! - `conn`: reads the request head within the header timeout and picks a path.
//! - `lean`: the lean HTTP/1.1 event-stream path that owns the socket.
//! - `http_api`: hyper for publish, health, readiness, metrics and HTTP/2.
//! - [`request`]: query, topic, event-type and resume-id validation.
//! - [`access`]: who may publish and read private topics (tokens, HS256 JWTs).
//! - [`cors`]: the browser origin allowlist and preflights.
//! - [`limits`]: per-address connection and per-publisher rate limits.
//! - [`tls`]: rustls with ALPN (`h2`, `http/1.1`).
//! - [`hub`]: sequencer, per-topic bounded windows, wake-ups.
//! - [`store`]: the storage seam; the disk store (redb) and the in-memory one.
//! - [`subscription`]: a stream's cursor and what it writes next.
//! - [`frame`]: SSE framing, once per event.
//! - [`wire`]: the stream decoded as a client reads it (for test and load clients).
//! - [`id`]: event ids (`<epoch>-<seq>`).
//! - [`signal`]: the poll-based wake-up flag each stream waits on.
//! - [`io`]: replayed head bytes and the write deadline under every connection.
//! - [`metrics`]: Prometheus metrics with typed accessors.
//! - [`config`]: flags and environment variables.
//! - [`error`]: the error type and its HTTP mapping.
//! - [`rng`]: the one seeded random source.
//!
//! Determinism: decisions use `tokio::time` only, randomness comes from [`rng`] seeded by
//! configuration, and nothing observable depends on hash-map order.

#![forbid(unsafe_code)]

pub mod access;
pub mod config;
mod conn;
pub mod cors;
pub mod error;
pub mod frame;
mod http_api;
pub mod hub;
pub mod id;
pub mod io;
mod lean;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod request;
pub mod rng;
pub mod server;
pub mod signal;
pub mod store;
pub mod subscription;
pub mod tls;
pub mod wire;

pub use config::Config;
pub use listener::Listener;
pub use server::Server;

/// Serves `listener` with `config` on the in-memory store until `shutdown` completes,
/// then drains (the binary opens the store `config.store` names: [`Server::open`]).
pub async fn run<L: Listener>(
    listener: L,
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    Server::new(config).run(listener, shutdown).await
}
