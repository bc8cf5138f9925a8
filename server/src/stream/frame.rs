//! SSE wire framing. Every event is framed once into `Bytes` that all subscribers share.
//!
//! Data is split on `\r\n`, `\n` and `\r` into several `data:` lines, so a
//! spec-compliant parser hands the published body back with line breaks normalised to
//! `\n`. Event types and ids never contain line breaks (validated before framing).

use bytes::{BufMut, Bytes, BytesMut};

use crate::stream::id::EventId;

/// Frames one event: `id:`, optional `event:`, one `data:` line per line of `data`.
pub fn event(id: EventId, event_type: Option<&str>, data: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 48 + event_type.map_or(0, |t| t.len() + 8));
    out.put_slice(b"id: ");
    out.put_slice(id.to_string().as_bytes());
    out.put_u8(b'\n');
    if let Some(event_type) = event_type {
        out.put_slice(b"event: ");
        out.put_slice(event_type.as_bytes());
        out.put_u8(b'\n');
    }
    for line in split_lines(data) {
        out.put_slice(b"data: ");
        out.put_slice(line.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_u8(b'\n');
    out.freeze()
}

/// The length [`event`] gives for an id at most `widest` (the widest possible when
/// `None`), without framing: what a publish reserves before the log assigns its id.
pub fn event_len(widest: Option<u64>, event_type: Option<&str>, data: &str) -> usize {
    let seq_digits = widest.map_or(20, |seq| seq.checked_ilog10().map_or(1, |log| log as usize + 1));
    let id = "id: ".len() + 8 + 1 + seq_digits + 1;
    let event_type = event_type.map_or(0, |t| "event: ".len() + t.len() + 1);
    let data: usize = split_lines(data).map(|line| "data: ".len() + line.len() + 1).sum();
    id + event_type + data + 1
}

/// Splits on CRLF, LF and CR, as the EventSource parser does; always at least one line.
fn split_lines(data: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let text = rest?;
        match text.find(['\r', '\n']) {
            None => {
                rest = None;
                Some(text)
            }
            Some(at) => {
                let skip = if text[at..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&text[at + skip..]);
                Some(&text[..at])
            }
        }
    })
}

/// `retry: <ms>` on its own: sets the client's reconnection delay, dispatches nothing.
pub fn retry(retry_ms: u64) -> Bytes {
    Bytes::from(format!("retry: {retry_ms}\n\n"))
}

/// An idle keep-alive: a comment line, ignored by parsers.
pub const HEARTBEAT: &[u8] = b":\n\n";

/// Why a resume point could not be honoured; sent as `event: reset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetReason {
    /// The id is not one this server produces.
    Malformed,
    /// The id belongs to another history (store wiped or replaced, server restarted).
    OtherEpoch,
    /// Events after the id are no longer retained.
    Evicted,
    /// The id is ahead of anything this server has produced.
    Unknown,
}

impl ResetReason {
    /// The label used in the notice and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ResetReason::Malformed => "malformed",
            ResetReason::OtherEpoch => "other_epoch",
            ResetReason::Evicted => "evicted",
            ResetReason::Unknown => "unknown",
        }
    }
}

/// The stream's starting position as an `id:` with no data: per the HTML standard it sets
/// the client's last event id without dispatching an event, so a client that loses the
/// stream before its first event still resumes from where it subscribed.
pub fn position(id: EventId) -> Bytes {
    Bytes::from(format!("id: {id}\n\n"))
}

/// The in-stream notice that history was reset; replay continues from the oldest
/// retained event after it. It carries no `id:` (the position that follows it does).
pub fn reset(reason: ResetReason) -> Bytes {
    Bytes::from(format!("event: reset\ndata: {{\"reason\":\"{}\"}}\n\n", reason.as_str()))
}

/// The last words to a subscriber that fell out of the window: it resumes by id.
pub const SLOW_CONSUMER: &[u8] = b": disconnected: slow consumer, reconnect with Last-Event-ID\n\n";

/// The last words to a subscriber whose catch-up read from the store failed.
pub const STORE_ERROR: &[u8] = b": disconnected: the event store could not be read, reconnect with Last-Event-ID\n\n";
/// Ends a stream whose token expired: the client must come back with a fresh one (an
/// `EventSource` reconnecting with the expired token gets 401 and reports an error).
pub const TOKEN_EXPIRED: &[u8] = b": disconnected: the access token expired, reconnect with a fresh token\n\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserved_length_is_the_framed_length_at_the_widest_id() {
        for (seq, event_type, data) in
            [(1, None, "x"), (9, Some("t"), "a\r\nb\rc\n"), (10, None, ""), (99_999, Some("type"), "\n\n")]
        {
            let framed = event(EventId { epoch: 7, seq }, event_type, data).len();
            assert_eq!(event_len(Some(seq), event_type, data), framed, "{seq} {data:?}");
            assert!(event_len(Some(seq * 10), event_type, data) > framed);
            assert!(event_len(None, event_type, data) >= framed);
        }
    }

    #[test]
    fn splits_every_kind_of_line_break() {
        let lines: Vec<_> = split_lines("a\r\nb\nc\rd").collect();
        assert_eq!(lines, ["a", "b", "c", "d"]);
        assert_eq!(split_lines("").collect::<Vec<_>>(), [""]);
        assert_eq!(split_lines("x\n").collect::<Vec<_>>(), ["x", ""]);
        assert_eq!(split_lines("\r\r\n").collect::<Vec<_>>(), ["", "", ""]);
    }

    #[test]
    fn frames_id_type_and_data_lines() {
        let id = EventId { epoch: 1, seq: 7 };
        assert_eq!(
            &event(id, Some("greet"), "hi\nthere")[..],
            b"id: 00000001-7\nevent: greet\ndata: hi\ndata: there\n\n"
        );
        assert_eq!(&event(id, None, "")[..], b"id: 00000001-7\ndata: \n\n");
    }
}
