//! The stored form of an event: `crc32 (4, LE) | unix millis (8, LE) | frame`. The
//! checksum covers the key (topic, id) as well as the value, so an event moved or damaged
//! on disk is never served.

/// Bytes before the frame.
const HEADER: usize = 12;

/// Encodes an event's value.
pub fn encode(topic: &str, seq: u64, time_ms: u64, frame: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(HEADER + frame.len());
    value.extend_from_slice(&checksum(topic, seq, time_ms, frame).to_le_bytes());
    value.extend_from_slice(&time_ms.to_le_bytes());
    value.extend_from_slice(frame);
    value
}

/// A decoded value: when it was stored and its frame.
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded<'a> {
    pub time_ms: u64,
    pub frame: &'a [u8],
}

/// Decodes and verifies a value; `None` when it is damaged.
pub fn decode<'a>(topic: &str, seq: u64, value: &'a [u8]) -> Option<Decoded<'a>> {
    if value.len() < HEADER {
        return None;
    }
    let stored = u32::from_le_bytes(value[..4].try_into().ok()?);
    let time_ms = u64::from_le_bytes(value[4..HEADER].try_into().ok()?);
    let frame = &value[HEADER..];
    (checksum(topic, seq, time_ms, frame) == stored).then_some(Decoded { time_ms, frame })
}

/// When a stored value was written and its frame's length, without verifying it (for
/// retention decisions; anything served is verified by [`decode`]).
pub fn peek(value: &[u8]) -> (u64, usize) {
    let time_ms = value.get(4..HEADER).and_then(|b| b.try_into().ok()).map_or(0, u64::from_le_bytes);
    (time_ms, value.len().saturating_sub(HEADER))
}

fn checksum(topic: &str, seq: u64, time_ms: u64, frame: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&(topic.len() as u64).to_le_bytes());
    hasher.update(topic.as_bytes());
    hasher.update(&seq.to_le_bytes());
    hasher.update(&time_ms.to_le_bytes());
    hasher.update(frame);
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_round_trips_and_any_flipped_bit_is_caught() {
        let value = encode("news", 42, 1_700_000_000_000, b"id: 1-42\ndata: hi\n\n");
        assert_eq!(decode("news", 42, &value).unwrap().frame, b"id: 1-42\ndata: hi\n\n");
        for byte in 0..value.len() {
            let mut damaged = value.clone();
            damaged[byte] ^= 0x10;
            assert_eq!(decode("news", 42, &damaged), None, "flip at {byte}");
        }
        assert_eq!(decode("news", 43, &value), None, "another id");
        assert_eq!(decode("other", 42, &value), None, "another topic");
        assert_eq!(decode("news", 42, &value[..5]), None, "truncated");
    }

    #[test]
    fn a_value_with_an_empty_frame_is_only_its_header_and_still_decodes() {
        let value = encode("news", 7, 5, b"");
        assert_eq!(value.len(), HEADER);
        assert_eq!(decode("news", 7, &value), Some(Decoded { time_ms: 5, frame: b"" }));
        assert_eq!(decode("news", 7, &value[..HEADER - 1]), None, "shorter than a header");
    }
}
