//! Parsing and validating what clients send: query strings, topic names, event types and
//! resume ids. Shared by the lean stream path and the hyper path so both answer alike.

use crate::access::{AccessPolicy, Credentials};
use crate::error::ApiError;
use crate::stream::names::{validate_event_type, validate_topic};

/// Most topics one stream may follow.
pub const MAX_TOPICS_PER_STREAM: usize = 16;
/// Largest request head read before answering 431.
pub const MAX_HEAD_BYTES: usize = 16 << 10;
/// Most header lines in a request head before answering 431.
pub const MAX_HEADERS: usize = 64;
/// Longest resume id we look at; longer ones are malformed (and get a reset notice).
pub const MAX_LAST_EVENT_ID_LEN: usize = 64;
/// Longest query string read (414 beyond): 16 topics, a resume id and a token fit.
pub const MAX_QUERY_BYTES: usize = 12 << 10;

/// What `GET /events` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeRequest {
    /// Distinct topics, sorted (the order never matters to delivery).
    pub topics: Vec<String>,
    /// The resume point from `Last-Event-ID` (preferred) or `lastEventId`.
    pub last_event_id: Option<String>,
    /// The `access_token` query parameter (for private topics).
    pub access_token: Option<QueryToken>,
}

impl SubscribeRequest {
    /// [`AccessPolicy::authorize_subscribe`] for this request, its `access_token` added to
    /// the header and cookie `credentials`; returns the token's `exp` when it has one.
    pub fn authorize(&self, policy: &AccessPolicy, credentials: Credentials<'_>) -> Result<Option<u64>, ApiError> {
        let query = self.access_token.as_ref().map(|t| t.0.as_bytes());
        policy.authorize_subscribe(&Credentials { query, ..credentials }, &self.topics)
    }
}

/// A token from the query string; its `Debug` form hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct QueryToken(pub String);

impl std::fmt::Debug for QueryToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QueryToken(…)")
    }
}

/// What `POST /events` asks for (the body is the data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishRequest {
    /// The one topic the event goes to.
    pub topic: String,
    /// Optional `event:` type.
    pub event_type: Option<String>,
}

/// Parses the query of `GET /events`; `header_last_event_id` wins over the query's.
pub fn parse_subscribe(query: Option<&str>, header_last_event_id: Option<&[u8]>) -> Result<SubscribeRequest, ApiError> {
    let mut topics = Vec::new();
    let mut query_last_event_id = None;
    let mut access_token = None;
    for (key, value) in query_pairs(query.unwrap_or(""))? {
        match key.as_str() {
            "topic" => {
                validate_topic(&value)?;
                topics.push(value);
            }
            "lastEventId" => query_last_event_id = Some(value),
            "access_token" => access_token = Some(QueryToken(value)),
            _ => {}
        }
    }
    topics.sort();
    topics.dedup();
    if topics.is_empty() {
        return Err(ApiError::BadRequest("missing_topic", "at least one topic= parameter is required"));
    }
    if topics.len() > MAX_TOPICS_PER_STREAM {
        return Err(ApiError::BadRequest("too_many_topics", "a stream follows at most 16 topics"));
    }
    // A resume id is never a reason to refuse the stream: an unreadable one becomes a
    // reset notice in the stream, so it is kept as text here.
    let last_event_id = match header_last_event_id {
        Some(raw) => Some(String::from_utf8_lossy(raw).into_owned()),
        None => query_last_event_id,
    }
    .filter(|id| !id.is_empty());
    Ok(SubscribeRequest { topics, last_event_id, access_token })
}

/// Parses the query of `POST /events`.
pub fn parse_publish(query: Option<&str>) -> Result<PublishRequest, ApiError> {
    let mut topic = None;
    let mut event_type = None;
    for (key, value) in query_pairs(query.unwrap_or(""))? {
        match key.as_str() {
            "topic" if topic.is_some() => {
                return Err(ApiError::BadRequest("too_many_topics", "publish to exactly one topic"));
            }
            "topic" => topic = Some(value),
            "event" => event_type = Some(value),
            _ => {}
        }
    }
    let topic = topic.ok_or(ApiError::BadRequest("missing_topic", "a topic= parameter is required"))?;
    validate_topic(&topic)?;
    if let Some(event_type) = &event_type {
        validate_event_type(event_type)?;
    }
    Ok(PublishRequest { topic, event_type })
}

/// Longest `Idempotency-Key` taken.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 128;

/// Checks a publish's `Idempotency-Key` header: 1 to 128 visible ASCII characters.
pub fn parse_idempotency_key(value: Option<&[u8]>) -> Result<Option<&str>, ApiError> {
    let Some(value) = value else { return Ok(None) };
    if value.is_empty() || value.len() > MAX_IDEMPOTENCY_KEY_BYTES || !value.iter().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::BadRequest(
            "invalid_idempotency_key",
            "an Idempotency-Key is 1 to 128 visible ASCII characters",
        ));
    }
    Ok(std::str::from_utf8(value).ok())
}

/// Splits `a=b&c=d`, percent-decoding keys and values (`+` is a space).
fn query_pairs(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    if query.len() > MAX_QUERY_BYTES {
        return Err(ApiError::UriTooLong);
    }
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((percent_decode(key)?, percent_decode(value)?))
        })
        .collect()
}

fn percent_decode(text: &str) -> Result<String, ApiError> {
    const BAD: ApiError = ApiError::BadRequest("invalid_query", "the query string is not valid percent-encoded UTF-8");
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(BAD)?;
                let hex = std::str::from_utf8(hex).map_err(|_| BAD)?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| BAD)?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| BAD)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_are_short_visible_ascii() {
        assert_eq!(parse_idempotency_key(None).unwrap(), None);
        assert_eq!(parse_idempotency_key(Some(b"order-17:a")).unwrap(), Some("order-17:a"));
        let longest = vec![b'k'; MAX_IDEMPOTENCY_KEY_BYTES];
        assert!(parse_idempotency_key(Some(&longest)).is_ok());
        for bad in [&b""[..], b"a b", b"caf\xc3\xa9", b"tab\t", &[b'k'; MAX_IDEMPOTENCY_KEY_BYTES + 1]] {
            let error = parse_idempotency_key(Some(bad)).unwrap_err();
            assert_eq!((error.status(), error.code()), (400, "invalid_idempotency_key"), "{bad:?}");
        }
    }

    #[test]
    fn subscribe_dedups_sorts_and_prefers_the_header_id() {
        let req = parse_subscribe(Some("topic=b&topic=a&topic=b&lastEventId=q"), Some(b"h")).unwrap();
        assert_eq!(req.topics, ["a", "b"]);
        assert_eq!(req.last_event_id.as_deref(), Some("h"));
        let req = parse_subscribe(Some("topic=news%2Feu&lastEventId=q"), None).unwrap();
        assert_eq!(req.topics, ["news/eu"]);
        assert_eq!(req.last_event_id.as_deref(), Some("q"));
        assert!(parse_subscribe(Some("x=1"), None).is_err());
        let many: Vec<String> = (0..17).map(|i| format!("topic=t{i}")).collect();
        assert!(parse_subscribe(Some(&many.join("&")), None).is_err());
        assert!(parse_subscribe(Some("topic=%ZZ"), None).is_err());
        let token = parse_subscribe(Some("topic=a&access_token=x.y%2Dz"), None).unwrap().access_token.unwrap();
        assert_eq!((token.0.as_str(), format!("{token:?}")), ("x.y-z", "QueryToken(…)".to_owned()));
        // A query of exactly the limit is taken; a byte more is refused.
        let longest = format!("topic=a&pad={}", "x".repeat(MAX_QUERY_BYTES - "topic=a&pad=".len()));
        assert_eq!(parse_subscribe(Some(&longest), None).unwrap().topics, ["a"]);
        let absurd = format!("{longest}x");
        assert_eq!(parse_subscribe(Some(&absurd), None).unwrap_err().status(), 414);
        assert_eq!(parse_publish(Some(&absurd)).unwrap_err().status(), 414);
    }

    #[test]
    fn publish_needs_exactly_one_valid_topic() {
        let req = parse_publish(Some("topic=t&event=e")).unwrap();
        assert_eq!((req.topic.as_str(), req.event_type.as_deref()), ("t", Some("e")));
        assert!(parse_publish(Some("topic=t&topic=u")).is_err());
        assert!(parse_publish(None).is_err());
        assert!(parse_publish(Some("topic=t&event=a%0Ab")).is_err());
    }
}
