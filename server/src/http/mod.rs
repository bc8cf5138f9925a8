//! The front door: from an accepted socket to a request, and both ways of serving it.
//!
//! - `conn`: one connection from accept to close: the TLS handshake, the request head
//!   within the header timeout, then the lean path or hyper.
//! - `lean`: the lean HTTP/1.1 event-stream path that owns the socket.
//! - `api`: hyper for publish, health, readiness, metrics, the console page and HTTP/2.
//! - [`request`]: what clients send, parsed and limited (queries, resume ids, head sizes).
//! - [`io`]: replayed head bytes and the write deadline under every connection.
//! - [`tls`]: rustls with ALPN (`h2`, `http/1.1`).
//! - `tls_keys`: TLS 1.3 record protection keeping only key bytes between records.
//! - [`tls_stream`]: the TLS stream on rustls's unbuffered API, holding no buffer idle.
//! - `shared`: the state every connection sees and the connection guard.
//!
//! Imports run `conn` → `lean`, `api` → `shared`, `request`, `io`, `tls` (→ `tls_keys`),
//! `tls_stream`. This folder may import [`crate::stream`], [`crate::access`],
//! [`crate::store`] and the crate's leaves (config, error, metrics, limits, rng); nothing
//! below imports it.

mod api;
pub(crate) mod conn;
pub mod io;
mod lean;
pub mod request;
pub(crate) mod shared;
pub mod tls;
mod tls_keys;
pub mod tls_stream;
