//! End-to-end tests of the HTTP contract over real loopback sockets.

mod access;
mod cluster;
mod contract;
mod durability;
mod fuzz;
mod hardening;
mod idempotency;
mod injection;
mod lifecycle;
mod resume;
mod support;
mod tls;
