//! The node's consumer of the whole stream, and the backplane's health.
//!
//! [`run`] follows the stream with an ordered consumer from the node's applied position:
//! each message is framed under its stream sequence and handed to the hub in sequence
//! order. When the consumer fails (NATS gone, a leader change) it is made again from the
//! applied position, and a message at or below that position (an ordered consumer made
//! again can start over) is dropped: the hub sees each sequence once, in order. A
//! consumer that stalls while the stream holds more is made again too.
//! [`probe`] asks for the stream's state every second: `/readyz` and publishes follow it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::consumer::DeliverPolicy;
use futures_util::{FutureExt, StreamExt};
use tracing::{info, warn};

use super::{subject, Inner, REQUEST_TIMEOUT};
use crate::log::{Hold, NewEvent};
use crate::store::Record;

/// Most messages handed to the hub at once.
const APPLY_BATCH: usize = 256;
/// Pause before making the consumer again after a failure.
const RETRY_AFTER: Duration = Duration::from_millis(250);
/// How often the backplane is probed.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// A consumer that delivers nothing this long while the stream holds events the node has
/// not applied is made again: its server may be gone (an ordered consumer's own
/// heartbeat check takes several times longer to notice).
const STALL_AFTER: Duration = Duration::from_secs(2);

/// Follows the stream until the log is closed.
pub(super) async fn run(inner: Arc<Inner>) {
    let all = subject::all(&inner.name);
    loop {
        if inner.stop.is_cancelled() {
            return;
        }
        let from = inner.applied.load(Ordering::Acquire) + 1;
        let config = OrderedConfig {
            filter_subject: all.clone(),
            deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: from },
            ..OrderedConfig::default()
        };
        let messages = match inner.stream.create_consumer(config).await {
            Ok(consumer) => consumer.messages().await.map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        let mut messages = match messages {
            Ok(messages) => messages,
            Err(error) => {
                warn!(%error, from, "cannot follow the JetStream stream yet; retrying");
                tokio::select! {
                    biased;
                    () = inner.stop.cancelled() => return,
                    () = tokio::time::sleep(RETRY_AFTER) => continue,
                }
            }
        };
        loop {
            let next = tokio::select! {
                biased;
                () = inner.stop.cancelled() => return,
                next = tokio::time::timeout(STALL_AFTER, messages.next()) => next,
            };
            let Ok(next) = next else {
                if inner.lag() > 0 {
                    warn!(
                        applied = inner.applied.load(Ordering::Acquire),
                        lag = inner.lag(),
                        "the stream's consumer stalled; making it again"
                    );
                    break;
                }
                continue;
            };
            let first = match next {
                None => break,
                Some(Err(error)) => {
                    warn!(%error, applied = inner.applied.load(Ordering::Acquire), "the stream's consumer stumbled");
                    continue;
                }
                Some(Ok(message)) => message,
            };
            let mut batch = Vec::new();
            let mut last = take(&inner, first, &mut batch);
            while batch.len() < APPLY_BATCH {
                match messages.next().now_or_never() {
                    Some(Some(Ok(message))) => last = last.max(take(&inner, message, &mut batch)),
                    _ => break,
                }
            }
            apply(&inner, batch, last);
        }
    }
}

/// Adds `message` to `batch` if it is past what was applied; returns its sequence (0 when
/// it was dropped).
fn take(inner: &Inner, message: async_nats::jetstream::Message, batch: &mut Vec<Record>) -> u64 {
    let Ok(info) = message.info() else { return 0 };
    let seq = info.stream_sequence;
    inner.note_end(seq + info.pending);
    let applied = batch.last().map_or(inner.applied.load(Ordering::Acquire), |r: &Record| r.seq);
    if seq <= applied {
        return 0;
    }
    let Some(follower) = inner.follower() else { return seq };
    // A subject that is no topic (another writer's) takes its sequence and shows nothing.
    let Some(topic) = subject::topic_of(&inner.name, &message.subject) else { return seq };
    let event_type = message
        .headers
        .as_ref()
        .and_then(|headers| headers.get(subject::EVENT_TYPE_HEADER))
        .map(|value| Box::from(value.as_str()));
    let event = NewEvent {
        topic: Arc::from(topic),
        event_type,
        data: subject::data(&message.payload),
        key: None,
        hold: Hold::none(),
    };
    let frame = follower.frame(seq, &event);
    batch.push(Record { seq, topic: event.topic, frame, key: None });
    seq
}

/// Hands `batch` to the hub, then moves the applied position to `last`.
fn apply(inner: &Inner, batch: Vec<Record>, last: u64) {
    if !batch.is_empty() {
        if let Some(follower) = inner.follower() {
            follower.apply(batch);
        }
    }
    if last > 0 {
        let was_caught_up = inner.caught_up();
        inner.applied.fetch_max(last, Ordering::AcqRel);
        if !was_caught_up && inner.caught_up() {
            info!(applied = last, "caught up with the JetStream stream");
        }
    }
}

/// Asks for the stream's state every second until the log is closed: healthy while NATS
/// answers (the stream has a leader) and the node has caught up.
pub(super) async fn probe(inner: Arc<Inner>) {
    let mut every = tokio::time::interval(PROBE_EVERY);
    let mut was = None;
    loop {
        tokio::select! {
            biased;
            () = inner.stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let state = tokio::time::timeout(REQUEST_TIMEOUT, inner.js.get_stream(&inner.name)).await;
        let answered = match state {
            Ok(Ok(mut stream)) => match stream.info().await {
                Ok(info) => {
                    inner.note_end(info.state.last_sequence);
                    true
                }
                Err(_) => false,
            },
            _ => false,
        };
        let healthy = answered && inner.caught_up();
        inner.healthy.store(healthy, Ordering::Release);
        inner.metrics.set_log_up(healthy);
        inner.metrics.set_log_lag(inner.lag());
        if was != Some(answered) {
            if answered {
                info!("the JetStream stream answers");
            } else {
                warn!("the JetStream stream does not answer: publishes get 503 and /readyz says 503");
            }
            was = Some(answered);
        }
    }
}
