//! When a topic wakes its subscribers after new events: at once, after a fixed gathering
//! time, or (`auto`) after a latency budget only while the topic is busy enough for
//! fewer, larger writes to pay, so a quiet topic is never held.
//!
//! Every wake-up costs one write per subscriber, and past a few hundred thousand writes
//! per CPU-second only fewer writes help. A topic whose events come further apart than
//! the budget gains nothing from a hold (no second event would join the first), and one
//! with few subscribers costs too little to be worth any delay; auto mode holds only a
//! topic whose wake-ups come faster than the budget *and* would cost at least
//! [`AUTO_MIN_WRITES_PER_SEC`]. A held event waits at most the budget: the hold starts
//! with the first event that finds no hold pending. Time is `tokio::time`, so the
//! simulations decide exactly as a real server does.

use std::time::Duration;

use tokio::time::Instant;

/// How a topic paces its subscribers' wake-ups (`--coalesce`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coalesce {
    /// Gather events this long before waking (zero: wake at once).
    Fixed(Duration),
    /// Wake at once while the topic is quiet; while it is busy, gather for `budget`.
    Auto {
        /// The longest an event waits for others to join its write (`--coalesce-budget`).
        budget: Duration,
    },
}

/// The wake-up rate times subscribers (writes per second) below which auto mode never
/// holds a topic: about 3.5% of a core at the kernel's loopback write cost (3.5 µs), too
/// little to trade latency for.
pub const AUTO_MIN_WRITES_PER_SEC: u64 = 10_000;

/// The longest gap between arrivals counted (a topic idle for an hour is simply quiet).
const LONGEST_GAP: Duration = Duration::from_secs(10);

/// A topic's recent pace of arrivals (batches of events the log hands over), for auto mode.
#[derive(Debug, Default)]
pub(crate) struct Pace {
    last: Option<Instant>,
    /// Smoothed time between arrivals (a quarter of each new gap joins it); `None` until
    /// two arrivals were seen.
    gap: Option<Duration>,
}

impl Pace {
    /// Records an arrival at `now`; returns the smoothed gap between arrivals.
    fn arrive(&mut self, now: Instant) -> Option<Duration> {
        if let Some(last) = self.last.replace(now) {
            let sample = now.saturating_duration_since(last).min(LONGEST_GAP);
            self.gap = Some(match self.gap {
                None => sample,
                Some(gap) => (gap * 3 + sample) / 4,
            });
        }
        self.gap
    }
}

impl Coalesce {
    /// Records an arrival of events at `now` on a topic with `subscribers`, and says how
    /// long to gather before waking them (zero: at once).
    pub(crate) fn hold(&self, pace: &mut Pace, now: Instant, subscribers: usize) -> Duration {
        match *self {
            Coalesce::Fixed(hold) => hold,
            Coalesce::Auto { budget } => {
                let Some(gap) = pace.arrive(now) else { return Duration::ZERO };
                if is_busy(gap, subscribers, budget) {
                    budget
                } else {
                    Duration::ZERO
                }
            }
        }
    }
}

/// Arrivals closer together than the budget, at a fan-out cost worth a hold:
/// `subscribers / gap ≥ AUTO_MIN_WRITES_PER_SEC`.
fn is_busy(gap: Duration, subscribers: usize, budget: Duration) -> bool {
    gap < budget && subscribers as u128 * 1_000_000_000 >= u128::from(AUTO_MIN_WRITES_PER_SEC) * gap.as_nanos().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: Duration = Duration::from_millis(5);

    /// The holds auto mode picks for arrivals `every` apart on a topic with `subscribers`.
    fn holds(every: Duration, subscribers: usize, arrivals: usize) -> Vec<Duration> {
        let (auto, mut pace, start) = (Coalesce::Auto { budget: BUDGET }, Pace::default(), Instant::now());
        (0..arrivals).map(|i| auto.hold(&mut pace, start + every * i as u32, subscribers)).collect()
    }

    #[test]
    fn a_busy_topic_is_held_for_the_budget_and_its_first_arrival_is_not() {
        // 1 ms apart × 100 subscribers: 100,000 writes a second.
        let held = holds(Duration::from_millis(1), 100, 5);
        assert_eq!(held, [Duration::ZERO, BUDGET, BUDGET, BUDGET, BUDGET]);
    }

    #[test]
    fn a_topic_slower_than_the_budget_is_woken_at_once_whatever_its_fan_out() {
        // 10 ms apart, 100,000 subscribers: 10 million writes a second, but no second
        // event would join a 5 ms hold.
        assert!(holds(Duration::from_millis(10), 100_000, 20).iter().all(|h| h.is_zero()));
        // Exactly the budget apart is not faster than it.
        assert!(holds(BUDGET, 100_000, 20).iter().all(|h| h.is_zero()));
    }

    #[test]
    fn a_fast_topic_with_a_small_fan_out_is_woken_at_once() {
        // 1 ms apart × 9 subscribers: 9,000 writes a second, under the floor; 10 reach it.
        assert!(holds(Duration::from_millis(1), 9, 20).iter().all(|h| h.is_zero()));
        assert_eq!(holds(Duration::from_millis(1), 10, 3)[2], BUDGET);
    }

    #[test]
    fn a_busy_topic_that_falls_quiet_is_woken_at_once_after_one_long_gap() {
        let (auto, mut pace, start) = (Coalesce::Auto { budget: BUDGET }, Pace::default(), Instant::now());
        for i in 0..50 {
            auto.hold(&mut pace, start + Duration::from_millis(i), 1000);
        }
        assert_eq!(auto.hold(&mut pace, start + Duration::from_millis(50), 1000), BUDGET);
        // 100 ms of quiet: the smoothed gap is past the budget at once.
        assert_eq!(auto.hold(&mut pace, start + Duration::from_millis(150), 1000), Duration::ZERO);
    }

    #[test]
    fn fixed_pacing_holds_its_time_whatever_the_pace() {
        let (fixed, mut pace, now) = (Coalesce::Fixed(Duration::from_millis(10)), Pace::default(), Instant::now());
        assert_eq!(fixed.hold(&mut pace, now, 0), Duration::from_millis(10));
        assert_eq!(Coalesce::Fixed(Duration::ZERO).hold(&mut pace, now, 1000), Duration::ZERO);
    }
}
