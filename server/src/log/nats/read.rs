//! Catch-up reads: events on some topics after a cursor, from the stream, for a stream
//! whose cursor is behind the windows; and how a read tells that retention removed
//! events the cursor has not seen.
//!
//! JetStream does not say which messages its limits removed, so the check is
//! conservative: when the oldest event a topic still has is not the one right after the
//! cursor, and the stream's head has moved past the cursor or the topic is at its
//! per-topic limit, the cursor may have lost events and the read says `Evicted` (the
//! client gets `reset: evicted` on its next connection). It may reset a client that lost
//! nothing; it never skips an event silently.

use std::sync::Arc;

use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::consumer::DeliverPolicy;
use bytes::Bytes;
use futures_util::StreamExt;

use super::{subject, Inner, REQUEST_TIMEOUT};
use crate::log::{Hold, NewEvent};
use crate::store::{ReadOutcome, StoreError, READ_MAX_BYTES, READ_MAX_EVENTS};

fn io(what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Io(format!("{what}: {error}"))
}

/// Events on `topics` with ids in `(after, upto]`, in id order, within the read limits.
pub(super) async fn range(
    inner: Arc<Inner>,
    topics: Vec<Arc<str>>,
    after: u64,
    upto: u64,
) -> Result<ReadOutcome, StoreError> {
    if upto <= after || topics.is_empty() {
        return Ok(ReadOutcome::Events { events: Vec::new(), complete_upto: upto });
    }
    let _permit = inner.readers.acquire().await.map_err(|_| StoreError::Closed)?;
    if let Some(topic) = first_evicted(&inner, &topics, after).await? {
        tracing::debug!(%topic, after, "a cursor behind what the stream retains");
        return Ok(ReadOutcome::Evicted);
    }
    let subjects: Vec<String> = topics.iter().map(|t| subject::of_topic(&inner.name, t)).collect();
    let mut consumer =
        inner.stream.create_consumer(catching_up(subjects, after)).await.map_err(|e| io("a catch-up read", e))?;
    let pending = consumer.info().await.map_err(|e| io("a catch-up read", e))?.num_pending;
    if pending == 0 {
        return Ok(ReadOutcome::Events { events: Vec::new(), complete_upto: upto });
    }
    let Some(follower) = inner.follower() else { return Err(StoreError::Closed) };
    let mut messages = consumer.messages().await.map_err(|e| io("a catch-up read", e))?;
    let (mut events, mut bytes, mut complete_upto) = (Vec::<(u64, Bytes)>::new(), 0usize, upto);
    loop {
        let next = tokio::time::timeout(REQUEST_TIMEOUT, messages.next()).await;
        let message = match next {
            Err(_) => return Err(StoreError::Io("a catch-up read got no answer in time".into())),
            Ok(None) => break,
            Ok(Some(Err(error))) => return Err(io("a catch-up read", error)),
            Ok(Some(Ok(message))) => message,
        };
        let info = message.info().map_err(|e| io("a catch-up read", e))?;
        let (seq, left) = (info.stream_sequence, info.pending);
        if seq > upto {
            break;
        }
        // An ordered consumer made again before its first message starts over from the
        // stream's start: what the cursor has seen is never handed back.
        if seq <= after || events.last().is_some_and(|(last, _)| seq <= *last) {
            continue;
        }
        let Some(topic) = subject::topic_of(&inner.name, &message.subject) else { continue };
        let event = NewEvent {
            topic: Arc::from(topic),
            event_type: message
                .headers
                .as_ref()
                .and_then(|h| h.get(subject::EVENT_TYPE_HEADER))
                .map(|v| Box::from(v.as_str())),
            data: subject::data(&message.payload),
            key: None,
            hold: Hold::none(),
        };
        let frame = follower.frame(seq, &event);
        bytes += frame.len();
        events.push((seq, frame));
        if left == 0 {
            break;
        }
        if events.len() == READ_MAX_EVENTS || bytes >= READ_MAX_BYTES {
            complete_upto = seq;
            break;
        }
    }
    Ok(ReadOutcome::Events { events, complete_upto })
}

/// The consumer of a catch-up read: the cursor's topics from just past the cursor, so
/// what the client has seen is not read again.
fn catching_up(subjects: Vec<String>, after: u64) -> OrderedConfig {
    OrderedConfig {
        filter_subjects: subjects,
        deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: after + 1 },
        ..OrderedConfig::default()
    }
}

/// The first of `topics` that may have lost events after `after` to retention; its
/// trimmed mark is raised so the client's next connection is told `reset: evicted`.
/// The stream's head is read after the topics' oldest events, so a removal between the
/// two lookups shows as a moved head.
async fn first_evicted(inner: &Inner, topics: &[Arc<str>], after: u64) -> Result<Option<Arc<str>>, StoreError> {
    let mut stream = inner.js.get_stream(&inner.name).await.map_err(|e| io("the stream's state", e))?;
    let mut oldest = Vec::with_capacity(topics.len());
    for topic in topics {
        let subject = subject::of_topic(&inner.name, topic);
        match stream.get_first_raw_message_by_subject(&subject, 1).await {
            Ok(message) => oldest.push(Some(message.sequence)),
            Err(error) if error.kind() == async_nats::jetstream::stream::RawMessageErrorKind::NoMessageFound => {
                oldest.push(None)
            }
            Err(error) => return Err(io("the oldest event of a topic", error)),
        }
    }
    let info = stream.info().await.map_err(|e| io("the stream's state", e))?;
    let head = info.state.first_sequence;
    // The stream's own per-topic limit (it may have been made by a node with another one).
    let limit = u64::try_from(info.config.max_messages_per_subject).ok().filter(|n| *n > 0);
    let head_moved = head > after + 1;
    for (topic, oldest) in topics.iter().zip(oldest) {
        let lost = match oldest {
            // Nothing retained on the topic: whatever it had after the cursor is gone if
            // the head moved past the cursor.
            None => head_moved.then(|| head.saturating_sub(1)),
            Some(oldest) if oldest <= after + 1 => None,
            Some(oldest) => {
                let at_limit = match (head_moved, limit) {
                    (true, _) => true,
                    (false, None) => false,
                    (false, Some(limit)) => held(&mut stream, &subject::of_topic(&inner.name, topic)).await? >= limit,
                };
                at_limit.then(|| oldest - 1)
            }
        };
        if let Some(upto) = lost {
            let mut trimmed = inner.trimmed.lock().unwrap_or_else(|p| p.into_inner());
            let mark = trimmed.entry(topic.clone()).or_default();
            *mark = (*mark).max(upto);
            return Ok(Some(topic.clone()));
        }
    }
    Ok(None)
}

/// Events the stream holds on `subject`.
async fn held(stream: &mut async_nats::jetstream::stream::Stream, subject: &str) -> Result<u64, StoreError> {
    let mut held = stream.info_with_subjects(subject).await.map_err(|e| io("a topic's count", e))?;
    let mut count = 0u64;
    while let Some(entry) = held.next().await {
        let (_, n) = entry.map_err(|e| io("a topic's count", e))?;
        count += n as u64;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_catch_up_read_starts_just_past_the_cursor_on_its_topics_alone() {
        let config = catching_up(vec!["SSE.topic.a".into(), "SSE.topic.b".into()], 41);
        assert_eq!(config.filter_subjects, ["SSE.topic.a", "SSE.topic.b"]);
        assert!(matches!(config.deliver_policy, DeliverPolicy::ByStartSequence { start_sequence: 42 }));
    }
}
