//! `sse-server`: a Server-Sent Events server with bounded memory, resume by id,
//! timeouts against slow and dead peers, and seams that let simulations run it unchanged.
//!
//! The folders show the layers, in the order a request meets them; imports run one way,
//! down this list:
//! - [`server`]: the lifecycle: `Server::run`, the accept loop, connection permits and
//!   the graceful drain; [`config`] (flags and environment variables) beside it.
//! - [`http`]: the front door: the request head, the lean event-stream path, hyper for
//!   everything else, TLS, request parsing, the state every connection sees.
//! - [`access`]: who may publish, read private topics, and from which browser origins.
//! - [`stream`]: the hub (bounded windows following the log), subscriptions (cursors),
//!   SSE framing, event ids and wake-ups.
//! - [`log`]: the log the hub follows, which assigns ids: the single-node sequencer over
//!   a store, and idempotency keys.
//! - [`store`]: the storage seam; the disk store (redb) and the in-memory one.
//! - Leaves every layer may use: [`listener`] (the `Listener` seam: tokio TCP here,
//!   turmoil in simulations), [`limits`] (per-address connections, publish rates),
//!   [`metrics`] (Prometheus, typed accessors), [`error`] (the error type and its HTTP
//!   mapping), [`rng`] (the one seeded random source).
//!
//! Determinism: decisions use `tokio::time` only, randomness comes from [`rng`] seeded by
//! configuration, and nothing observable depends on hash-map order.

#![forbid(unsafe_code)]

pub mod access;
pub mod config;
pub mod error;
pub mod http;
pub mod limits;
pub mod listener;
pub mod log;
pub mod metrics;
pub mod rng;
pub mod server;
pub mod store;
pub mod stream;

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
