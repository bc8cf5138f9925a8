//! `sse-chaos`: load generation and real chaos runs against the `sse-server` binary.
//!
//! Empty until the chaos suite lands: see DESIGN.md.

fn main() {}
