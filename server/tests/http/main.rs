//! End-to-end tests of the HTTP contract over real loopback sockets.

mod contract;
mod durability;
mod injection;
mod lifecycle;
mod resume;
mod support;
