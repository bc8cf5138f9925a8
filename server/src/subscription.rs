//! A subscriber: a cursor over its topics, a wake-up handle and an idle timer.
//!
//! [`Subscription::next`] says what the stream must write next; the lean HTTP/1.1 path
//! and the hyper path both drive it, so they cannot disagree on what a stream carries.
//! Dropping a subscription unregisters it and counts why the stream ended.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::frame;
use crate::hub::{Gap, Hub, Topic};
use crate::metrics::{DisconnectReason, Metrics};

/// What a stream writes next.
#[derive(Debug)]
pub enum Next {
    /// The opening `retry:` field, and the reset notice when the resume id was unusable.
    Opening(Bytes),
    /// Framed events in id order, for one write.
    Events(Vec<Bytes>),
    /// The stream was idle for the heartbeat interval.
    Heartbeat,
    /// The server is draining: send the goodbye and close.
    Shutdown,
    /// The cursor fell out of the window: say so and close; the client resumes by id.
    SlowConsumer,
}

/// One open event stream's position and registration.
#[derive(Debug)]
pub struct Subscription {
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    topics: Vec<Arc<Topic>>,
    id: u64,
    signal: Arc<Notify>,
    /// Last id handed out; the cursor.
    after: u64,
    /// `retry:` and any reset notice, sent before everything else.
    opening: Option<Bytes>,
    heartbeat: Duration,
    ended: DisconnectReason,
    /// Set by the connection's writer when a write timed out.
    write_timed_out: Arc<AtomicBool>,
}

impl Subscription {
    /// Registers a stream on `topics`, resuming after `last_event_id` when it can.
    pub fn open(
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
        topics: &[String],
        last_event_id: Option<&str>,
        retry: Duration,
        heartbeat: Duration,
        write_timed_out: Arc<AtomicBool>,
    ) -> Result<Subscription, crate::error::ApiError> {
        let signal = Arc::new(Notify::new());
        let (id, topics, start) = hub.subscribe(topics, last_event_id, &signal)?;
        let mut opening = BytesMut::from(&frame::retry(retry.as_millis() as u64)[..]);
        if let Some(reason) = start.reset {
            metrics.reset_sent(reason.as_str());
            opening.extend_from_slice(&frame::reset(reason));
        }
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
            ended: DisconnectReason::ClientClosed,
            write_timed_out,
        })
    }

    /// Waits for what to write next. Cancel-safe: the cursor moves only when frames are
    /// returned, so dropping the future loses nothing.
    pub async fn next(&mut self) -> Next {
        if let Some(opening) = self.opening.take() {
            return Next::Opening(opening);
        }
        let idle_until = Instant::now() + self.heartbeat;
        loop {
            if self.hub.is_closing() {
                return Next::Shutdown;
            }
            match self.hub.read_after(&self.topics, self.after) {
                Err(Gap) => return Next::SlowConsumer,
                Ok(batch) => {
                    if let Some(&(last, _)) = batch.last() {
                        self.after = last;
                        return Next::Events(batch.into_iter().map(|(_, frame)| frame).collect());
                    }
                }
            }
            tokio::select! {
                biased;
                _ = self.signal.notified() => {}
                _ = tokio::time::sleep_until(idle_until) => return Next::Heartbeat,
            }
        }
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

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(self.id, &self.topics);
        let reason =
            if self.write_timed_out.load(Ordering::Relaxed) { DisconnectReason::WriteTimeout } else { self.ended };
        self.metrics.disconnected(reason);
        self.metrics.stream_closed();
    }
}
