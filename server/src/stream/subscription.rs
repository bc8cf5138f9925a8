//! A subscriber: a cursor over its topics, a wake-up handle and an idle timer.
//!
//! [`Subscription::poll_next`] says what the stream must write next; the lean HTTP/1.1
//! path and the hyper path both drive it, so they cannot disagree on what a stream
//! carries. It is poll-based, so a stream's whole state is a plain struct.
//! Dropping a subscription unregisters it and counts why the stream ended.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::{Instant, Sleep};

use crate::metrics::{DisconnectReason, Metrics};
use crate::store::{ReadOutcome, StoreFuture};
use crate::stream::frame;
use crate::stream::hub::{Gap, Hub, Topic};
use crate::stream::id::EventId;
use crate::stream::signal::Signal;

/// What a stream writes next.
#[derive(Debug)]
pub enum Next {
    /// The opening `retry:` field, the reset notice when the resume id was unusable, and
    /// the starting position (`id:` without data).
    Opening(Bytes),
    /// Framed events in id order, for one write.
    Events(Vec<Bytes>),
    /// The stream was idle for the heartbeat interval.
    Heartbeat,
    /// The server is draining: send the goodbye and close.
    Shutdown,
    /// Say the farewell and close, counting the reason; the client resumes by id. A
    /// cursor behind what the store retains is a slow consumer; a failed store read is a
    /// store error.
    Disconnect(DisconnectReason, &'static [u8]),
}

/// One open event stream's position and registration.
#[derive(Debug)]
pub struct Subscription {
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    topics: Vec<Arc<Topic>>,
    id: u64,
    signal: Arc<Signal>,
    /// Last id handed out; the cursor.
    after: u64,
    /// `retry:` and any reset notice, sent before everything else.
    opening: Option<Bytes>,
    heartbeat: Duration,
    /// Fires after `heartbeat` without a write; armed at the first wait after a write.
    idle: Pin<Box<Sleep>>,
    idle_armed: bool,
    ended: DisconnectReason,
    /// Set by the connection's writer when a write timed out.
    write_timed_out: Arc<AtomicBool>,
    /// A store read in progress, while the cursor is behind the windows.
    catch_up: Option<CatchUp>,
    /// When the token that opened private topics expires (boxed: most streams have
    /// none, and every idle stream's size counts).
    expires: Option<Box<Instant>>,
}

/// A store read in progress.
struct CatchUp(StoreFuture<ReadOutcome>);

impl std::fmt::Debug for CatchUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CatchUp")
    }
}

/// A stream's timing.
#[derive(Debug, Clone, Copy)]
pub struct StreamTimes {
    /// The reconnection delay sent in the opening `retry:`.
    pub retry: Duration,
    /// Idle time before a heartbeat comment.
    pub heartbeat: Duration,
    /// When the token that opened private topics expires: the stream ends then.
    pub expires: Option<Instant>,
}

impl Subscription {
    /// Registers a stream on `topics`, resuming after `last_event_id` when it can.
    pub fn open(
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
        topics: &[String],
        last_event_id: Option<&str>,
        times: StreamTimes,
        write_timed_out: Arc<AtomicBool>,
    ) -> Result<Subscription, crate::error::ApiError> {
        let StreamTimes { retry, heartbeat, expires } = times;
        let signal = Arc::new(Signal::default());
        let (id, topics, start) = hub.subscribe(topics, last_event_id, &signal)?;
        let mut opening = BytesMut::from(&frame::retry(retry.as_millis() as u64)[..]);
        if let Some(reason) = start.reset {
            metrics.reset_sent(reason.as_str());
            opening.extend_from_slice(&frame::reset(reason));
        }
        opening.extend_from_slice(&frame::position(EventId { epoch: hub.epoch(), seq: start.after }));
        metrics.stream_opened();
        Ok(Subscription {
            hub,
            metrics,
            topics,
            id,
            signal,
            after: start.after,
            opening: Some(opening.freeze()),
            heartbeat,
            idle: Box::pin(tokio::time::sleep(heartbeat)),
            idle_armed: false,
            ended: DisconnectReason::ClientClosed,
            write_timed_out,
            catch_up: None,
            expires: expires.map(Box::new),
        })
    }

    /// What to write next, or `Pending` until there is something. The cursor moves only
    /// when events are returned, so a caller that stops polling loses nothing.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Next> {
        if let Some(opening) = self.opening.take() {
            return Poll::Ready(Next::Opening(opening));
        }
        loop {
            if self.hub.is_closing() {
                return Poll::Ready(Next::Shutdown);
            }
            if self.expired() {
                return Poll::Ready(Next::Disconnect(DisconnectReason::TokenExpired, frame::TOKEN_EXPIRED));
            }
            if let Some(read) = self.catch_up.as_mut() {
                // While the store read waits (for one of the few read slots, or the disk),
                // the stream still heartbeats and hears the shutdown signal below.
                if let Poll::Ready(outcome) = read.0.as_mut().poll(cx) {
                    self.catch_up = None;
                    match outcome {
                        Ok(ReadOutcome::Events { events, complete_upto }) => {
                            if let Some(&(last, _)) = events.last() {
                                self.after = last;
                                self.idle_armed = false;
                                return Poll::Ready(Next::Events(events.into_iter().map(|(_, frame)| frame).collect()));
                            }
                            if complete_upto <= self.after {
                                return Poll::Ready(slow_consumer());
                            }
                            self.after = complete_upto;
                        }
                        Ok(ReadOutcome::Evicted) => return Poll::Ready(slow_consumer()),
                        Err(error) => {
                            tracing::warn!(%error, "a catch-up read from the store failed; closing the stream");
                            return Poll::Ready(Next::Disconnect(DisconnectReason::StoreError, frame::STORE_ERROR));
                        }
                    }
                    continue;
                }
            } else {
                match self.hub.read_after(&self.topics, self.after) {
                    Err(Gap) => {
                        self.catch_up = Some(CatchUp(self.hub.read_store(&self.topics, self.after)));
                        continue;
                    }
                    Ok(batch) => {
                        if let Some(&(last, _)) = batch.last() {
                            self.after = last;
                            self.idle_armed = false;
                            return Poll::Ready(Next::Events(batch.into_iter().map(|(_, frame)| frame).collect()));
                        }
                    }
                }
            }
            if self.signal.poll_wait(cx).is_ready() {
                continue;
            }
            if !self.idle_armed {
                // The idle timer also wakes the stream when its token expires.
                let heartbeat_at = Instant::now() + self.heartbeat;
                let wake_at = self.expires.as_deref().map_or(heartbeat_at, |at| heartbeat_at.min(*at));
                self.idle.as_mut().reset(wake_at);
                self.idle_armed = true;
            }
            if self.idle.as_mut().poll(cx).is_ready() {
                self.idle_armed = false;
                if self.expired() {
                    continue;
                }
                return Poll::Ready(Next::Heartbeat);
            }
            return Poll::Pending;
        }
    }

    /// Whether the token that opened the stream has expired (never, without one).
    fn expired(&self) -> bool {
        self.expires.as_deref().is_some_and(|at| Instant::now() >= *at)
    }

    /// Waits for what to write next (cancel-safe, as [`Subscription::poll_next`]).
    pub async fn next(&mut self) -> Next {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// Records why the stream is ending (counted when it is dropped).
    pub fn end(&mut self, reason: DisconnectReason) {
        self.ended = reason;
    }

    /// Counts `n` events as written to the client.
    pub fn delivered(&self, n: usize) {
        self.metrics.delivered(n);
    }
}

fn slow_consumer() -> Next {
    Next::Disconnect(DisconnectReason::SlowConsumer, frame::SLOW_CONSUMER)
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(self.id, &self.topics);
        let reason =
            if self.write_timed_out.load(Ordering::Relaxed) { DisconnectReason::WriteTimeout } else { self.ended };
        self.metrics.disconnected(reason);
        self.metrics.stream_closed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{FsyncPolicy, MemoryStore, Record, Recovery, Store, TailLimits};
    use crate::stream::hub::HubLimits;

    /// A store whose reads never finish: a catch-up stuck behind busy read slots.
    #[derive(Debug)]
    struct StalledReads(MemoryStore);

    impl Store for StalledReads {
        fn recover(&self, tail: TailLimits) -> Recovery {
            self.0.recover(tail)
        }
        fn append(&self, record: Record) -> StoreFuture<()> {
            self.0.append(record)
        }
        fn read(&self, _: Vec<Arc<str>>, _: u64, _: u64) -> StoreFuture<ReadOutcome> {
            Box::pin(std::future::pending())
        }
        fn trimmed_upto(&self, topic: &str) -> u64 {
            self.0.trimmed_upto(topic)
        }
        fn is_healthy(&self) -> bool {
            true
        }
        fn close(&self) -> StoreFuture<()> {
            self.0.close()
        }
    }

    fn hub_on(store: Arc<dyn Store>) -> (Arc<Hub>, Arc<Metrics>) {
        let limits = HubLimits {
            window: 2,
            window_bytes: 1 << 20,
            max_topics: 10,
            coalesce: crate::stream::pacing::Coalesce::Fixed(Duration::ZERO),
            max_buffered_bytes: usize::MAX,
        };
        let metrics = Arc::new(Metrics::new());
        let log = Arc::new(crate::log::LocalLog::new(store, Duration::from_secs(60)));
        (Hub::new(log, limits, metrics.clone()), metrics)
    }

    const HEARTBEAT: Duration = Duration::from_secs(1);

    fn open(hub: &Arc<Hub>, metrics: &Arc<Metrics>, resume: Option<&str>, expires: Option<Instant>) -> Subscription {
        let timed_out = Arc::new(AtomicBool::new(false));
        let times = StreamTimes { retry: HEARTBEAT, heartbeat: HEARTBEAT, expires };
        Subscription::open(hub.clone(), metrics.clone(), &["t".into()], resume, times, timed_out).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_waiting_on_a_store_read_still_heartbeats_and_hears_the_shutdown() {
        let (hub, metrics) = hub_on(Arc::new(StalledReads(MemoryStore::new(7, 100, 1 << 20, FsyncPolicy::Always))));
        for _ in 0..5 {
            hub.publish("t", None, "x").await.unwrap();
        }
        // Id 1 is behind the two-event window: the stream must read the store, which stalls.
        let mut stream = open(&hub, &metrics, Some("00000007-1"), None);
        assert!(matches!(stream.next().await, Next::Opening(_)));
        let next = tokio::time::timeout(HEARTBEAT * 2, stream.next()).await;
        assert!(matches!(next, Ok(Next::Heartbeat)), "a heartbeat while the read waits: {next:?}");
        hub.close_streams();
        let next = tokio::time::timeout(HEARTBEAT * 2, stream.next()).await;
        assert!(matches!(next, Ok(Next::Shutdown)), "the shutdown is heard while the read waits: {next:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_ends_when_its_token_expires_even_when_idle() {
        let (hub, metrics) = hub_on(Arc::new(MemoryStore::new(7, 2, 1 << 20, FsyncPolicy::Always)));
        let started = Instant::now();
        let expires = started + Duration::from_millis(2500);
        let mut stream = open(&hub, &metrics, None, Some(expires));
        assert!(matches!(stream.next().await, Next::Opening(_)));
        for _ in 0..2 {
            assert!(matches!(stream.next().await, Next::Heartbeat), "heartbeats until the token expires");
        }
        let next = stream.next().await;
        assert!(matches!(next, Next::Disconnect(DisconnectReason::TokenExpired, _)), "{next:?}");
        assert_eq!(Instant::now() - started, Duration::from_millis(2500), "at the expiry, not a heartbeat later");
    }
}
