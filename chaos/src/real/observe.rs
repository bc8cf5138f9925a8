//! What a real run watches while it runs: every 100 ms, whether each seat's client is
//! caught up (it has the newest event acknowledged on its topics at least a second ago,
//! or subscribed after it; a seat without a client is not sampled, and a client that has
//! no opening position a second after it joined counts as behind) and the
//! buffered bytes (for the budget check); every 2 s, the server's gauges from `/metrics`
//! (for leak trends).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sse_plan::record::Acked;
use sse_server::stream::id::EventId;
use tokio::sync::watch;
use tokio::time::Instant;

use super::roster::Seat;
use crate::load::publisher::metric;

/// How stale a client may be and still count as caught up.
pub const CAUGHT_UP_WITHIN: Duration = Duration::from_secs(1);
const AVAILABILITY_EVERY: Duration = Duration::from_millis(100);
const GAUGES_EVERY: Duration = Duration::from_secs(2);
/// The gauges sampled, as `/metrics` names them.
pub const GAUGES: [&str; 7] = [
    "process_resident_memory_bytes",
    "process_open_fds",
    "tokio_alive_tasks",
    "sse_streams",
    "sse_subscriptions",
    "sse_connections",
    "sse_buffered_bytes",
];

/// Everything observed.
#[derive(Debug, Default)]
pub struct Observed {
    /// Per seat, (time from the run's start, caught up?).
    pub caught_up: Vec<Vec<(Duration, bool)>>,
    /// Per gauge, (time, value); a sample the server did not answer is left out.
    pub gauges: BTreeMap<&'static str, Vec<(Duration, f64)>>,
    /// The most `sse_buffered_bytes` seen at any 100 ms sample.
    pub max_buffered: f64,
}

/// A metric from `/metrics`, or `None` if the server does not answer within a second
/// (down, or frozen): no wait in a run is unbounded.
pub async fn metric_within(addr: SocketAddr, name: &str) -> Option<f64> {
    tokio::time::timeout(Duration::from_secs(1), metric(addr, name)).await.ok()?.ok()
}

/// Watches until `stop`. `acked` grows as publishers are answered, in time order.
pub async fn watch(
    origin: Instant,
    service: watch::Receiver<SocketAddr>,
    acked: Arc<Mutex<Vec<Acked>>>,
    seats: Arc<Vec<Seat>>,
    mut stop: watch::Receiver<bool>,
) -> Observed {
    let mut observed = Observed { caught_up: vec![Vec::new(); seats.len()], ..Observed::default() };
    // The newest id per topic among events acknowledged at least CAUGHT_UP_WITHIN ago.
    let mut newest: BTreeMap<String, EventId> = BTreeMap::new();
    let mut frontier = 0;
    let mut next_gauges = Instant::now();
    while !*stop.borrow() {
        let now = origin.elapsed();
        {
            let acked = acked.lock().unwrap();
            while let Some(a) = acked.get(frontier).filter(|a| a.at + CAUGHT_UP_WITHIN <= now) {
                if let Some(id) = EventId::parse(&a.id) {
                    newest.insert(a.topic.clone(), id);
                }
                frontier += 1;
            }
        }
        for (n, seat) in seats.iter().enumerate() {
            let Some((record, joined)) = seat.current_since() else { continue };
            let (opened, last) = {
                let record = record.lock().unwrap();
                let opened = record.opened_at.as_ref().and_then(|(id, _)| EventId::parse(id));
                (opened, record.events.last().and_then(|e| EventId::parse(&e.id)))
            };
            let Some(opened) = opened else {
                // Not subscribed yet: a client kept waiting counts as behind.
                if now >= joined + CAUGHT_UP_WITHIN {
                    observed.caught_up[n].push((now, false));
                }
                continue;
            };
            let have = last.filter(|last| last.epoch != opened.epoch || last.seq > opened.seq).unwrap_or(opened);
            let caught_up = seat
                .topics
                .iter()
                .filter_map(|t| newest.get(t))
                .all(|wanted| have.epoch == wanted.epoch && have.seq >= wanted.seq);
            observed.caught_up[n].push((now, caught_up));
        }
        let addr = *service.borrow();
        if let Some(bytes) = metric_within(addr, "sse_buffered_bytes").await {
            observed.max_buffered = observed.max_buffered.max(bytes);
        }
        if Instant::now() >= next_gauges {
            next_gauges += GAUGES_EVERY;
            for gauge in GAUGES {
                if let Some(value) = metric_within(addr, gauge).await {
                    observed.gauges.entry(gauge).or_default().push((origin.elapsed(), value));
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(AVAILABILITY_EVERY) => {}
            _ = stop.changed() => {}
        }
    }
    observed
}

/// A least-squares line through a series: its slope per hour and that slope's standard
/// error.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slope {
    pub per_hour: f64,
    pub stderr_per_hour: f64,
    pub samples: usize,
}

impl Slope {
    /// Fits `series` (time, value); `None` with fewer than three samples.
    pub fn fit(series: &[(Duration, f64)]) -> Option<Slope> {
        let n = series.len();
        if n < 3 {
            return None;
        }
        let hours: Vec<f64> = series.iter().map(|(t, _)| t.as_secs_f64() / 3600.0).collect();
        let values: Vec<f64> = series.iter().map(|(_, v)| *v).collect();
        let mean_t = hours.iter().sum::<f64>() / n as f64;
        let mean_v = values.iter().sum::<f64>() / n as f64;
        let sxx: f64 = hours.iter().map(|t| (t - mean_t).powi(2)).sum();
        if sxx == 0.0 {
            return None;
        }
        let sxy: f64 = hours.iter().zip(&values).map(|(t, v)| (t - mean_t) * (v - mean_v)).sum();
        let slope = sxy / sxx;
        let residuals: f64 =
            hours.iter().zip(&values).map(|(t, v)| (v - (mean_v + slope * (t - mean_t))).powi(2)).sum();
        let stderr = (residuals / (n - 2) as f64 / sxx).sqrt();
        Some(Slope { per_hour: slope, stderr_per_hour: stderr, samples: n })
    }

    /// Whether the series grows distinguishably from zero: more than three standard
    /// errors above it, and more than `floor` per hour (a trend too small to matter is not
    /// a leak; a falling one is not a leak either).
    pub fn is_leak(&self, floor: f64) -> bool {
        self.per_hour > 3.0 * self.stderr_per_hour && self.per_hour > floor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(f: impl Fn(f64) -> f64) -> Vec<(Duration, f64)> {
        (0..60).map(|i| (Duration::from_secs(i * 2), f(i as f64))).collect()
    }

    #[test]
    fn a_flat_noisy_series_is_no_leak_and_a_steady_climb_is() {
        let flat = Slope::fit(&series(|i| 100.0 + if (i as u64).is_multiple_of(2) { 3.0 } else { -3.0 })).unwrap();
        assert!(!flat.is_leak(1.0), "{flat:?}");
        // One more descriptor every 2 s: 1,800 an hour.
        let climbing = Slope::fit(&series(|i| 100.0 + i)).unwrap();
        assert!((climbing.per_hour - 1800.0).abs() < 1e-6 && climbing.is_leak(1.0), "{climbing:?}");
        assert!(!climbing.is_leak(10_000.0), "under the floor");
        let falling = Slope::fit(&series(|i| 1000.0 - i)).unwrap();
        assert!(!falling.is_leak(1.0), "{falling:?}");
        assert!(Slope::fit(&series(|_| 5.0)[..2]).is_none());
    }
}
