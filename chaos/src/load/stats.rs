//! Percentiles of sorted samples, used by the benchmarks.

/// The `p`-quantile (0.0 to 1.0) of `sorted` (ascending); the default when empty.
pub fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    let at = ((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1));
    sorted.get(at).copied().unwrap_or_default()
}

/// The `p`-quantile of microsecond samples, in milliseconds.
pub fn percentile_ms<T: Copy + Default + Into<u64>>(sorted_us: &[T], p: f64) -> f64 {
    percentile(sorted_us, p).into() as f64 / 1000.0
}
