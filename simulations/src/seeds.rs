//! Seeds for a test run: a fixed set that `cargo test` always covers, plus fresh ones
//! (`SIM_SEEDS=N`, default a few), printed so that any of them can be replayed.

/// Seeds always run by `cargo test`: 1 to 200, the same every run, so a red test is
/// always a regression; fresh seeds explore.
pub fn fixed() -> impl Iterator<Item = u64> {
    1..=200
}

/// How many fresh seeds to add: `SIM_SEEDS`, else `default`.
pub fn fresh_count(default: usize) -> usize {
    std::env::var("SIM_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `count` fresh seeds, from `SIM_SEED_BASE` if set (to repeat a batch), else from the
/// process's random hasher (the one place randomness enters, and it is printed).
pub fn fresh(count: usize) -> Vec<u64> {
    use std::hash::{BuildHasher, RandomState};
    let base = std::env::var("SIM_SEED_BASE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| RandomState::new().hash_one(std::process::id()) >> 16);
    (0..count as u64).map(|i| base.wrapping_add(i)).collect()
}
