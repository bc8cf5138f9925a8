//! What a topic name and an event type may be: the streams' vocabulary, checked at the
//! front door (requests), in access patterns and nowhere else.

use crate::error::ApiError;

/// Longest topic name, in bytes.
pub const MAX_TOPIC_LEN: usize = 128;
/// Longest event type, in bytes.
pub const MAX_EVENT_TYPE_LEN: usize = 64;
/// `[A-Za-z0-9._~:/-]{1,128}`.
pub fn validate_topic(topic: &str) -> Result<(), ApiError> {
    let ok_byte = |b: u8| b.is_ascii_alphanumeric() || b"._~:/-".contains(&b);
    if topic.is_empty() || topic.len() > MAX_TOPIC_LEN || !topic.bytes().all(ok_byte) {
        return Err(ApiError::BadRequest("invalid_topic", "topic names are 1-128 bytes of A-Z a-z 0-9 . _ ~ : / -"));
    }
    Ok(())
}

/// Non-empty, at most 64 bytes, no control characters (so no line breaks).
pub fn validate_event_type(event_type: &str) -> Result<(), ApiError> {
    if event_type.is_empty() || event_type.len() > MAX_EVENT_TYPE_LEN || event_type.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "invalid_event_type",
            "event types are 1-64 bytes without control characters or line breaks",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_follow_the_documented_alphabet() {
        for good in ["a", "news/eu:1", "A.b_c~d-e", &"x".repeat(128)] {
            assert!(validate_topic(good).is_ok(), "{good:?}");
        }
        for bad in ["", "a b", "a\nb", "é", &"x".repeat(129), "a?b"] {
            assert!(validate_topic(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn event_types_reject_breaks_controls_and_length() {
        assert!(validate_event_type("update").is_ok());
        for bad in ["", "a\nb", "a\rb", "a\u{0}b", &"t".repeat(65)] {
            assert!(validate_event_type(bad).is_err(), "{bad:?}");
        }
    }
}
