//! What every connection task sees: the configuration, the hub, the metrics, the access
//! and limit policies, the drain's signals; and the guard that holds a connection's
//! permit. Below the connection code, so the accept loop, the head reader and both
//! stream paths import it and it imports none of them.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::cors::CorsPolicy;
use crate::access::{AccessPolicy, Publisher};
use crate::config::Config;
use crate::error::ApiError;
use crate::http::tls::Tls;
use crate::limits::{ConnectionsPerIp, IpPlace, RateLimit};
use crate::metrics::Metrics;
use crate::rng::SeededRng;
use crate::stream::frame;
use crate::stream::hub::Hub;
use crate::stream::subscription::{StreamTimes, Subscription};

/// What every connection task shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: Config,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    pub rng: SeededRng,
    /// Cancelled once the streams are gone (or the drain deadline is near): kept-alive
    /// connections finish their request and close. Until then they can still see
    /// `/readyz` answer 503.
    pub closing: CancellationToken,
    /// Every connection and stream task, so the drain can wait for them.
    pub tasks: TaskTracker,
    /// `/readyz` answers 503 once set.
    pub draining: AtomicBool,
    /// Who may publish and read private topics.
    pub access: AccessPolicy,
    /// Browser origins allowed to read and publish.
    pub cors: CorsPolicy,
    /// Connections open per peer address.
    pub per_ip: Arc<ConnectionsPerIp>,
    /// Publishes per second per publisher.
    pub publish_rate: RateLimit<Publisher>,
    /// Present when serving TLS.
    pub tls: Option<Tls>,
}

impl Shared {
    /// Opens a stream on `topics`; `token_expires` (Unix seconds) is the `exp` of the
    /// token that opened private topics, when it has one: the stream ends then.
    pub fn subscribe(
        &self,
        topics: &[String],
        last_event_id: Option<&str>,
        token_expires: Option<u64>,
        write_timed_out: Arc<AtomicBool>,
    ) -> Result<Subscription, ApiError> {
        if self.hub.is_closing() {
            return Err(draining(self.config.retry));
        }
        Subscription::open(
            self.hub.clone(),
            self.metrics.clone(),
            topics,
            last_event_id,
            StreamTimes {
                retry: self.config.retry,
                heartbeat: self.config.heartbeat,
                expires: token_expires.map(crate::access::jwt::stream_deadline),
            },
            write_timed_out,
        )
    }

    /// The goodbye sent to each stream on drain: a `retry:` with seeded jitter so that
    /// clients spread their return.
    pub fn goodbye(&self) -> Bytes {
        let jitter = self.rng.up_to(self.config.retry_jitter.as_millis() as u64);
        frame::retry(self.config.retry.as_millis() as u64 + jitter)
    }
}

pub(crate) fn draining(retry: Duration) -> ApiError {
    ApiError::Unavailable("draining", "the server is shutting down", retry)
}

/// Holds a connection's permit and keeps `sse_connections` true whichever way (and in
/// whichever task) the connection ends.
pub(crate) struct ConnGuard {
    metrics: Arc<Metrics>,
    _permit: OwnedSemaphorePermit,
    _ip_place: IpPlace,
}

impl ConnGuard {
    pub fn new(metrics: Arc<Metrics>, permit: OwnedSemaphorePermit, ip_place: IpPlace) -> ConnGuard {
        metrics.connection_opened();
        ConnGuard { metrics, _permit: permit, _ip_place: ip_place }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.metrics.connection_closed();
    }
}
