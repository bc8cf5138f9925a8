//! Deterministic simulations of `sse-server` under turmoil.
//!
//! Empty until the simulation harness lands: see DESIGN.md.
