//! How events sit in the JetStream stream: one subject per topic under the stream's
//! name, the data as the payload, the event type in a header; and the epoch the stream's
//! identity gives its ids.

use bytes::Bytes;

/// Header carrying an event's `event:` type.
pub const EVENT_TYPE_HEADER: &str = "Sse-Event";

/// The subject of `topic` in stream `stream`: `<stream>.<topic>` with each `.` of the
/// topic written `%2E`, so a topic is one subject token (`%` is not in a topic's
/// alphabet, and neither are NATS's wildcards or whitespace).
pub fn of_topic(stream: &str, topic: &str) -> String {
    let mut subject = String::with_capacity(stream.len() + 1 + topic.len());
    subject.push_str(stream);
    subject.push('.');
    for c in topic.chars() {
        if c == '.' {
            subject.push_str("%2E");
        } else {
            subject.push(c);
        }
    }
    subject
}

/// The topic a subject of `stream` carries; `None` for a subject that is not one.
pub fn topic_of(stream: &str, subject: &str) -> Option<String> {
    let token = subject.strip_prefix(stream)?.strip_prefix('.')?;
    if token.is_empty() || token.contains('.') {
        return None;
    }
    Some(token.replace("%2E", "."))
}

/// Every subject of `stream`.
pub fn all(stream: &str) -> String {
    format!("{stream}.>")
}

/// The epoch of a stream created at `created_unix_nanos`: a recreated stream is a new
/// history, so its ids get another epoch (never 0, which no store hands out).
pub fn epoch(created_unix_nanos: i128) -> u32 {
    match crc32fast::hash(&created_unix_nanos.to_le_bytes()) {
        0 => 1,
        epoch => epoch,
    }
}

/// The data of a message, as the publisher sent it (UTF-8 was checked at publish).
pub fn data(payload: &Bytes) -> Box<str> {
    String::from_utf8_lossy(payload).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_round_trip_through_one_subject_token() {
        for topic in ["a", "orders.eu-1", "x:y/z~_", ".lead", "trail.", "a..b"] {
            let subject = of_topic("SSE", topic);
            assert_eq!(subject.matches('.').count(), 1, "{subject}");
            assert_eq!(topic_of("SSE", &subject).as_deref(), Some(topic));
        }
        assert_eq!(topic_of("SSE", "OTHER.a"), None);
        assert_eq!(topic_of("SSE", "SSE.a.b"), None);
        assert_eq!(topic_of("SSE", "SSE."), None);
    }

    #[test]
    fn another_creation_time_is_another_epoch() {
        assert_ne!(epoch(1_700_000_000_000_000_000), epoch(1_700_000_000_000_000_001));
        assert_ne!(epoch(0), 0);
    }
}
