//! Per-client limits: open connections per peer address (`--max-connections-per-ip`)
//! and publishes per second per publisher (`--publish-rate`). Both answer 429 with
//! `Retry-After`. Their tables hold only clients that are active: an address leaves when
//! its last connection closes, a publisher's bucket once it has refilled.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// Connections open per peer address.
#[derive(Debug)]
pub struct ConnectionsPerIp {
    max: usize,
    open: Mutex<BTreeMap<IpAddr, usize>>,
}

/// A connection's place in the table: nothing without a limit, else a boxed slot (a
/// connection keeps it for its whole life, so it costs one pointer there).
pub type IpPlace = Option<Box<IpSlot>>;

/// One connection counted against its address; uncounted when dropped.
#[derive(Debug)]
pub struct IpSlot {
    table: Arc<ConnectionsPerIp>,
    ip: IpAddr,
}

impl ConnectionsPerIp {
    /// `max` 0 means no limit.
    pub fn new(max: usize) -> Arc<ConnectionsPerIp> {
        Arc::new(ConnectionsPerIp { max, open: Mutex::new(BTreeMap::new()) })
    }

    /// Counts a connection from `ip`; `None` when the address already has `max` open.
    pub fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<IpPlace> {
        if self.max == 0 {
            return Some(None);
        }
        let mut open = self.open.lock().expect("never poisoned");
        let count = open.entry(ip).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Some(Box::new(IpSlot { table: self.clone(), ip })))
    }

    /// Addresses with a connection open.
    #[cfg(test)]
    fn addresses(&self) -> usize {
        self.open.lock().expect("never poisoned").len()
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().expect("never poisoned");
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Token buckets: each key may take `per_second` a second, in bursts of up to as many.
#[derive(Debug)]
pub struct RateLimit<K> {
    per_second: u32,
    buckets: Mutex<BTreeMap<K, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Past this many buckets, full ones (idle keys) are dropped before adding another.
const SWEEP_ABOVE: usize = 4096;

impl<K: Ord + Clone> RateLimit<K> {
    /// `per_second` 0 means no limit.
    pub fn new(per_second: u32) -> RateLimit<K> {
        RateLimit { per_second, buckets: Mutex::new(BTreeMap::new()) }
    }

    /// Takes one token for `key`, or says how long until one is there.
    pub fn take(&self, key: &K) -> Result<(), Duration> {
        if self.per_second == 0 {
            return Ok(());
        }
        let rate = f64::from(self.per_second);
        let now = Instant::now();
        let refill = |bucket: &mut Bucket| {
            bucket.tokens = (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate).min(rate);
            bucket.at = now;
        };
        let mut buckets = self.buckets.lock().expect("never poisoned");
        if buckets.len() >= SWEEP_ABOVE && !buckets.contains_key(key) {
            buckets.retain(|_, bucket| {
                refill(bucket);
                bucket.tokens < rate
            });
        }
        let bucket = match buckets.get_mut(key) {
            Some(bucket) => bucket,
            None => buckets.entry(key.clone()).or_insert(Bucket { tokens: rate, at: now }),
        };
        refill(bucket);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }

    /// Keys with a bucket.
    #[cfg(test)]
    fn keys(&self) -> usize {
        self.buckets.lock().expect("never poisoned").len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_at_most_max_connections_and_leaves_the_table_when_done() {
        let table = ConnectionsPerIp::new(2);
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        let first = table.enter(a).unwrap();
        let second = table.enter(a).unwrap();
        assert!(table.enter(a).is_none(), "a third from the same address is refused");
        let other = table.enter(b).unwrap();
        drop(first);
        let again = table.enter(a).expect("a slot freed");
        drop((second, again, other));
        assert_eq!(table.addresses(), 0);
        let open = ConnectionsPerIp::new(0);
        let many: Vec<_> = (0..100).map(|_| open.enter(a).unwrap()).collect();
        assert!(many.iter().all(Option::is_none), "no limit, no slots");
        assert_eq!(open.addresses(), 0, "no limit, no table");
    }

    #[tokio::test(start_paused = true)]
    async fn a_publisher_gets_its_rate_in_bursts_and_is_told_when_to_retry() {
        let limit = RateLimit::new(10);
        for _ in 0..10 {
            limit.take(&"a").unwrap();
        }
        let wait = limit.take(&"a").unwrap_err();
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(100), "{wait:?}");
        limit.take(&"b").expect("another publisher has its own bucket");
        tokio::time::advance(Duration::from_millis(100)).await;
        limit.take(&"a").expect("one token back after 100 ms");
        assert!(limit.take(&"a").is_err());
        assert!(RateLimit::new(0).take(&"a").is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_publishers_are_forgotten_once_the_table_is_large() {
        let limit = RateLimit::new(5);
        for key in 0..SWEEP_ABOVE {
            limit.take(&key).unwrap();
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        limit.take(&usize::MAX).unwrap();
        assert_eq!(limit.keys(), 1, "every refilled bucket went");
    }

    #[tokio::test(start_paused = true)]
    async fn a_sweep_keeps_the_buckets_in_use() {
        let limit = RateLimit::new(5);
        for key in 0..SWEEP_ABOVE {
            limit.take(&key).unwrap();
        }
        for _ in 0..4 {
            limit.take(&0).unwrap();
        }
        // No time passed: every bucket is below full, so the sweep a new key starts keeps all.
        limit.take(&usize::MAX).unwrap();
        assert_eq!(limit.keys(), SWEEP_ABOVE + 1, "no bucket in use went");
        assert!(limit.take(&0).is_err(), "the drained key is still drained");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_names_the_wait_until_the_next_whole_token() {
        let limit = RateLimit::new(10);
        for _ in 0..10 {
            limit.take(&"a").unwrap();
        }
        let close = |wait: Duration, want: f64| (wait.as_secs_f64() - want).abs() < 1e-6;
        let wait = limit.take(&"a").unwrap_err();
        assert!(close(wait, 0.1), "{wait:?}");
        tokio::time::advance(Duration::from_millis(50)).await;
        let wait = limit.take(&"a").unwrap_err();
        assert!(close(wait, 0.05), "half a token back: {wait:?}");
    }
}
