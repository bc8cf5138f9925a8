//! The server timing every backend runs plans with, and the catch-up bound it implies.

use std::time::Duration;

/// Server timeouts for plan runs: short enough that a run stays short, the same in the
/// simulation and for real so that a plan means the same thing in both.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub heartbeat: Duration,
    pub retry: Duration,
    pub retry_jitter: Duration,
    pub write_timeout: Duration,
    pub header_timeout: Duration,
    pub drain_timeout: Duration,
}

impl Timing {
    /// What plans run with.
    pub const PLANS: Timing = Timing {
        heartbeat: Duration::from_secs(1),
        retry: Duration::from_millis(500),
        retry_jitter: Duration::from_millis(500),
        write_timeout: Duration::from_secs(3),
        header_timeout: Duration::from_secs(2),
        drain_timeout: Duration::from_secs(2),
    };

    /// How long after the last fault heals every client must have caught up: a dead stream
    /// is noticed after three heartbeats, the reconnect waits at most `retry + jitter`, and
    /// the server's write timeout frees the old stream; one second of slack.
    pub fn catch_up_bound(&self) -> Duration {
        self.heartbeat * 3 + self.retry + self.retry_jitter + self.write_timeout + Duration::from_secs(1)
    }
}
