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

use super::{subject, Inner};
use crate::log::{Hold, NewEvent};
use crate::store::Record;

/// Most messages handed to the hub at once.
const APPLY_BATCH: usize = 256;
/// Pause before making the consumer again after a failure.
const RETRY_AFTER: Duration = Duration::from_millis(250);
/// How often the backplane is probed.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How long a probe waits: short, because the probe is also how a node that publishes
/// nothing learns that the stream moved on (and that its consumer is stalled).
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// A consumer that delivers nothing this long while the stream holds events the node has
/// not applied is made again: its server may be gone (an ordered consumer's own
/// heartbeat check takes several times longer to notice).
const STALL_AFTER: Duration = Duration::from_secs(2);
/// How long the tasks wait for the hub being built when the log starts (microseconds,
/// unless the machine is starved).
const HUB_PATIENCE: Duration = Duration::from_secs(10);

/// Waits until the hub this log follows is built: [`crate::log::Log::start`] is called
/// while the hub is being made (`Arc::new_cyclic`), and a task that looked for it before
/// then would take it for gone (a probe that did never said the node was ready: a
/// flakiness series beside a busy core hit it 3 times in 20 runs). False if the log is
/// closed first, or no hub appears within [`HUB_PATIENCE`].
async fn hub_built(inner: &Inner) -> bool {
    let deadline = tokio::time::Instant::now() + HUB_PATIENCE;
    while inner.follower().is_none() {
        if inner.stop.is_cancelled() || tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    true
}

/// Follows the stream until the log is closed.
pub(super) async fn run(inner: Arc<Inner>) {
    if !hub_built(&inner).await {
        return;
    }
    let all = subject::all(&inner.name);
    loop {
        if inner.stop.is_cancelled() {
            return;
        }
        let from = inner.applied.load(Ordering::Acquire) + 1;
        let messages = match inner.stream.create_consumer(following(&all, from)).await {
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
        // When the consumer last delivered something (errors do not count: a consumer whose
        // server is gone can report errors for a long while without delivering).
        let mut progress = tokio::time::Instant::now();
        loop {
            let next = tokio::select! {
                biased;
                () = inner.stop.cancelled() => return,
                next = tokio::time::timeout(STALL_AFTER, messages.next()) => next,
            };
            let first = match next {
                Ok(None) => break,
                Ok(Some(Ok(message))) => message,
                Ok(Some(Err(error))) => {
                    warn!(%error, applied = inner.applied.load(Ordering::Acquire), "the stream's consumer stumbled");
                    if stalled(&inner, progress) {
                        break;
                    }
                    continue;
                }
                Err(_) => {
                    if stalled(&inner, progress) {
                        break;
                    }
                    continue;
                }
            };
            progress = tokio::time::Instant::now();
            let mut batch = Batch::default();
            take(&inner, first, &mut batch);
            while batch.records.len() < APPLY_BATCH {
                match messages.next().now_or_never() {
                    Some(Some(Ok(message))) => take(&inner, message, &mut batch),
                    _ => break,
                }
            }
            flush(&inner, &mut batch);
            if inner.follower().is_none() {
                return; // The hub is gone.
            }
        }
    }
}

/// Whether the consumer delivered nothing for [`STALL_AFTER`] while the stream holds
/// events the node has not applied: then it is made again.
fn stalled(inner: &Inner, progress: tokio::time::Instant) -> bool {
    let stalled = inner.lag() > 0 && progress.elapsed() >= STALL_AFTER;
    if stalled {
        warn!(
            applied = inner.applied.load(Ordering::Acquire),
            lag = inner.lag(),
            "the stream's consumer stalled; making it again"
        );
    }
    stalled
}

/// Messages taken from the consumer and not handed to the hub yet.
#[derive(Default)]
struct Batch {
    records: Vec<Record>,
    /// The highest sequence taken (a message with no topic takes its sequence too).
    last: u64,
}

/// The consumer that follows every topic's subject (`all`) from sequence `from`: what
/// the node applied is not read again, and another writer's subjects never arrive.
fn following(all: &str, from: u64) -> OrderedConfig {
    OrderedConfig {
        filter_subject: all.to_owned(),
        deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: from },
        ..OrderedConfig::default()
    }
}

/// Adds `message` to `batch` if it is past what was taken. A sequence that jumps means
/// the stream removed events before this node applied them: what was taken goes to the
/// hub first, then the hub is told that cursors up to the jump must read the stream
/// (which decides whether they lost events).
fn take(inner: &Inner, message: async_nats::jetstream::Message, batch: &mut Batch) {
    let Ok(info) = message.info() else { return };
    let seq = info.stream_sequence;
    inner.note_end(seq + info.pending);
    let taken = batch.last.max(inner.applied.load(Ordering::Acquire));
    if seq <= taken {
        return;
    }
    let Some(follower) = inner.follower() else { return };
    if seq > taken + 1 {
        flush(inner, batch);
        follower.skipped(seq - 1);
        inner.applied.fetch_max(seq - 1, Ordering::AcqRel);
        info!(from = taken + 1, upto = seq - 1, "the stream removed events before this node applied them");
    }
    batch.last = seq;
    // A subject that is no topic (another writer's) takes its sequence and shows nothing.
    let Some(topic) = subject::topic_of(&inner.name, &message.subject) else { return };
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
    batch.records.push(Record { seq, topic: event.topic, frame, key: None });
}

/// Hands the batch to the hub, then moves the applied position past it.
fn flush(inner: &Inner, batch: &mut Batch) {
    let records = std::mem::take(&mut batch.records);
    if !records.is_empty() {
        let Some(follower) = inner.follower() else { return };
        follower.apply(records);
    }
    if batch.last > 0 {
        let was_caught_up = inner.caught_up();
        inner.applied.fetch_max(batch.last, Ordering::AcqRel);
        if !was_caught_up && inner.caught_up() {
            info!(applied = batch.last, "caught up with the JetStream stream");
        }
    }
}

/// Asks for the stream's state every second until the log is closed: healthy while NATS
/// answers, the stream's Raft group has a leader and the node has caught up.
pub(super) async fn probe(inner: Arc<Inner>) {
    if !hub_built(&inner).await {
        return;
    }
    let mut every = tokio::time::interval(PROBE_EVERY);
    let mut was = None;
    loop {
        tokio::select! {
            biased;
            () = inner.stop.cancelled() => return,
            _ = every.tick() => {}
        }
        if inner.follower().is_none() {
            return; // The hub is gone.
        }
        // One request: the stream handle comes with the state it was asked for (a second
        // `info` request doubled the time a loaded cluster needs to answer within the
        // timeout).
        let state = tokio::time::timeout(PROBE_TIMEOUT, async {
            inner.js.get_stream(&inner.name).await.map(|stream| stream.cached_info().clone())
        })
        .await;
        // Why the stream cannot take publishes now, if it cannot.
        let unanswered = match state {
            Err(_) => Some(format!("no answer within {PROBE_TIMEOUT:?}")),
            Ok(Err(error)) => Some(error.to_string()),
            // A stream whose Raft group has no leader (just made, or electing) takes no
            // publishes yet.
            Ok(Ok(info)) if info.cluster.as_ref().is_some_and(|c| c.leader.is_none()) => {
                Some("its Raft group has no leader".to_owned())
            }
            Ok(Ok(info)) => {
                inner.note_end(info.state.last_sequence);
                if subject::epoch(info.created.unix_timestamp_nanos()) != inner.epoch
                    && !inner.replaced.swap(true, Ordering::AcqRel)
                {
                    tracing::error!(
                        stream = %inner.name,
                        "the stream was deleted and made again: a new history this node cannot continue; \
                         it refuses publishes and says /readyz 503 until it is restarted"
                    );
                }
                None
            }
        };
        let answered = unanswered.is_none();
        let healthy = answered && inner.caught_up() && !inner.replaced.load(Ordering::Acquire);
        inner.healthy.store(healthy, Ordering::Release);
        inner.metrics.set_log_up(healthy);
        inner.metrics.set_log_lag(inner.lag());
        // Said when it changes, with the reason (and when the reason changes).
        if was.as_ref() != Some(&unanswered) {
            match &unanswered {
                None => info!("the JetStream stream answers"),
                Some(reason) => {
                    warn!(%reason, "the JetStream stream does not answer: publishes get 503 and /readyz says 503")
                }
            }
            was = Some(unanswered);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_follower_reads_only_the_topics_subjects_from_past_what_it_applied() {
        let config = following("SSE.topic.>", 42);
        assert_eq!(config.filter_subject, "SSE.topic.>");
        assert!(matches!(config.deliver_policy, DeliverPolicy::ByStartSequence { start_sequence: 42 }));
    }
}
