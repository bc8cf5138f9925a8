//! Fuzz targets on stable Rust, driven by proptest: inputs are corpus entries from
//! `fixtures/fuzz/` under random mutations (flips, dictionary insertions, deletions,
//! truncations, repeats) or plain random bytes.
//!
//! - request heads, sent through a real server on in-memory sockets: every head gets a
//!   well-formed answer from the documented statuses or a close, nothing panics, no
//!   connection is left open;
//! - query strings (`GET` and `POST /events`) and `Last-Event-ID`: results keep the
//!   documented invariants;
//! - event ids: whatever parses prints back to the same id;
//! - credentials: bearer tokens, cookies, CORS origins and topic patterns;
//! - framing: any data is exactly one event with that data for an independent parser.
//!
//! `SSE_FUZZ_CASES` sets the cases per target (32,768 by default; the nightly run takes many
//! more) and `SSE_FUZZ_SEED` the seed (fixed by default, so CI is repeatable). A failure
//! prints the seed and the smallest failing input.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use sse_server::access::cors::CorsPolicy;
use sse_server::access::jwt::JwtVerifier;
use sse_server::access::pattern::TopicPattern;
use sse_server::access::Credentials;
use sse_server::http::request;
use sse_server::stream::id::EventId;
use sse_server::stream::{frame, names};
use sse_server::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{config, MemServer};

/// Byte strings that matter to the parsers, inserted by mutations.
const DICTIONARY: &[&[u8]] = &[
    b"\r\n",
    b"\r",
    b"\n",
    b"\0",
    b"\r\n\r\n",
    b"%",
    b"%0A",
    b"%0D",
    b"%00",
    b"%ZZ",
    b"&",
    b"=",
    b"?",
    b"*",
    b" ",
    b"topic=",
    b"lastEventId=",
    b"access_token=",
    b"event=",
    b"data: ",
    b"id: ",
    b"event: ",
    b"retry: ",
    b"content-length: 9999\r\n",
    b"transfer-encoding: chunked\r\n",
    b"last-event-id: ",
    b"sse_token=",
    b";",
    b"\xff\xfe",
    b"\xc3\x28",
    "é".as_bytes(),
    b"0000abcd-",
    b"18446744073709551616",
    b"https://",
];

/// The statuses the server documents; anything else (a 500) is a bug.
const DOCUMENTED: &[u16] = &[200, 201, 204, 400, 401, 403, 404, 405, 408, 413, 414, 429, 431, 503];

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, usize),
    Delete(usize, usize),
    Truncate(usize),
    Repeat(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Flip(at, byte)),
        (any::<usize>(), 0..DICTIONARY.len()).prop_map(|(at, word)| Mutation::Insert(at, word)),
        (any::<usize>(), 1usize..16).prop_map(|(at, len)| Mutation::Delete(at, len)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 1usize..64).prop_map(|(at, len)| Mutation::Repeat(at, len)),
    ]
}

fn apply(mut input: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let at = |i: usize, len: usize| i % (len + 1);
        match *m {
            Mutation::Flip(i, byte) if !input.is_empty() => {
                let i = i % input.len();
                input[i] = byte;
            }
            Mutation::Flip(..) => {}
            Mutation::Insert(i, word) => {
                let i = at(i, input.len());
                input.splice(i..i, DICTIONARY[word].iter().copied());
            }
            Mutation::Delete(i, len) => {
                let i = at(i, input.len());
                input.drain(i..(i + len).min(input.len()));
            }
            Mutation::Truncate(i) => input.truncate(at(i, input.len())),
            Mutation::Repeat(i, len) => {
                let i = at(i, input.len());
                let piece: Vec<u8> = input[i..(i + len).min(input.len())].to_vec();
                input.splice(i..i, piece.iter().copied().cycle().take(piece.len() * 8));
            }
        }
    }
    input
}

/// Reads `fixtures/fuzz/<name>.txt`: one input a line, `#` lines skipped, with the escapes
/// `\r \n \t \0 \\ \xHH`.
fn corpus(name: &str) -> Vec<Vec<u8>> {
    let path = format!("{}/../fixtures/fuzz/{name}.txt", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let entries: Vec<Vec<u8>> = text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).map(unescape).collect();
    assert!(!entries.is_empty(), "{path} has entries");
    entries
}

fn unescape(line: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut bytes = line.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'0') => out.push(0),
            Some(b'x') => {
                let hex: Vec<u8> = bytes.by_ref().take(2).collect();
                out.push(u8::from_str_radix(std::str::from_utf8(&hex).unwrap(), 16).expect("\\xHH in the corpus"));
            }
            Some(other) => out.push(other),
            None => out.push(b'\\'),
        }
    }
    out
}

/// Corpus entries under mutation, and random bytes.
fn inputs(name: &str) -> impl Strategy<Value = Vec<u8>> {
    let seeds = corpus(name);
    let mutated = (0..seeds.len(), proptest::collection::vec(mutation(), 0..6))
        .prop_map(move |(i, mutations)| apply(seeds[i].clone(), &mutations));
    prop_oneof![4 => mutated, 1 => proptest::collection::vec(any::<u8>(), 0..512)]
}

fn runner(target: &str) -> TestRunner {
    let cases = std::env::var("SSE_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(32_768);
    let seed: u64 = std::env::var("SSE_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(20261126);
    println!("fuzz {target}: {cases} cases, SSE_FUZZ_SEED={seed}");
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn fuzz_queries_and_resume_ids_keep_the_documented_invariants() {
    runner("queries")
        .run(&(inputs("queries"), proptest::option::of(inputs("ids"))), |(query, resume)| {
            let query = text(&query);
            // Without the header the query's `lastEventId` is used.
            if let Ok(wanted) = request::parse_subscribe(Some(&query), resume.as_deref()) {
                prop_assert!(!wanted.topics.is_empty() && wanted.topics.len() <= request::MAX_TOPICS_PER_STREAM);
                prop_assert!(wanted.topics.windows(2).all(|w| w[0] < w[1]), "sorted, no duplicates");
                prop_assert!(wanted.topics.iter().all(|t| names::validate_topic(t).is_ok()));
                prop_assert!(wanted.last_event_id.as_deref().is_none_or(|id| !id.is_empty()));
            }
            if let Ok(target) = request::parse_publish(Some(&query)) {
                prop_assert!(names::validate_topic(&target.topic).is_ok());
                prop_assert!(target.event_type.as_deref().is_none_or(|t| names::validate_event_type(t).is_ok()));
            }
            // Only the server's own form parses: what parses prints back as it was written.
            if let Some(resume) = resume.map(|r| text(&r)) {
                if let Some(id) = EventId::parse(&resume) {
                    prop_assert_eq!(id.to_string(), resume);
                }
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn fuzz_credentials_origins_and_patterns_never_grant_by_accident() {
    let verifier = JwtVerifier::new(&"a-fuzz-key-of-at-least-32-bytes!".parse().unwrap());
    runner("credentials")
        .run(&(inputs("tokens"), inputs("queries")), |(input, topic)| {
            // No mutated or random token carries a valid signature for this key.
            prop_assert_eq!(verifier.verify(&input).map_err(|e| e.code()), Err("invalid_token"));
            let found = Credentials::from_headers(Some(&input), [&input[..]].into_iter());
            if let Some(bearer) = found.bearer {
                prop_assert!(input.len() > 7 && input[..7].eq_ignore_ascii_case(b"bearer "), "{:?}", input);
                prop_assert_eq!(bearer, &input[7..]);
            }
            if let Some(cookie) = found.cookie {
                // It is the value of a pair named exactly `sse_token`.
                let at = cookie.as_ptr() as usize - input.as_ptr() as usize;
                let name_at = at.checked_sub("sse_token=".len()).expect("a name before the value");
                prop_assert_eq!(&input[name_at..at], b"sse_token=");
                let before = input[..name_at].trim_ascii_end();
                prop_assert!(before.is_empty() || before.ends_with(b";"), "a pair of its own: {:?}", input);
                prop_assert!(!cookie.contains(&b';'));
            }
            // Any Origin value at all: only the listed origin itself is granted.
            // The corpus holds this origin, so mutations try its prefixes, extensions and case.
            let listed = CorsPolicy::new(&["https://app.example.com".parse().unwrap()]);
            let granted = listed.response_headers(Some(&input)).contains("allow-origin");
            prop_assert!(!granted || input.eq_ignore_ascii_case(b"https://app.example.com"), "{:?}", input);
            let candidate = text(&input);
            let topic = text(&topic);
            if let Ok(pattern) = candidate.parse::<TopicPattern>() {
                // A pattern matches its name exactly, or (with `*`) what starts with its prefix.
                let expected = match candidate.strip_suffix('*') {
                    Some(prefix) => topic.starts_with(prefix),
                    None => topic == candidate,
                };
                prop_assert_eq!(pattern.matches(&topic), expected, "{:?} against {:?}", candidate, topic);
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn fuzz_framing_any_data_is_one_event_with_that_data() {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let id = EventId { epoch: 0xabcd, seq: 7 };
    runner("framing")
        .run(&(inputs("heads"), proptest::option::of("[a-z]{1,12}")), |(data, event_type)| {
            let data = text(&data);
            let framed = frame::event(id, event_type.as_deref(), &data);
            let events: Vec<_> = runtime.block_on(
                futures_util::stream::iter([Ok::<_, std::convert::Infallible>(framed)]).eventsource().collect(),
            );
            let expected = data.replace("\r\n", "\n").replace('\r', "\n");
            // Even empty data is one event: its frame has a `data:` line.
            prop_assert_eq!(events.len(), 1, "{:?}", events);
            let Some(Ok(event)) = events.first() else {
                return Err(TestCaseError::fail(format!("not an event: {events:?}")));
            };
            prop_assert_eq!(&event.data, &expected);
            prop_assert_eq!(&event.id, &id.to_string());
            prop_assert_eq!(event.event.as_str(), event_type.as_deref().unwrap_or("message"));
            Ok(())
        })
        .unwrap();
}

/// Panics on threads named like this test (its runtime's tasks run there).
static HEAD_PANICS: AtomicUsize = AtomicUsize::new(0);
/// Heads tried, and heads the server answered (the run must have reached the server).
static HEADS_TRIED: AtomicUsize = AtomicUsize::new(0);
static HEADS_ANSWERED: AtomicUsize = AtomicUsize::new(0);

#[test]
fn fuzz_request_heads_get_a_documented_answer_or_a_close_and_leave_nothing_open() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name().is_some_and(|n| n.contains("fuzz_request_heads")) {
            HEAD_PANICS.fetch_add(1, Ordering::SeqCst);
        }
        previous(info);
    }));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
    let server = runtime.block_on(async {
        MemServer::start(Config {
            header_timeout: Duration::from_secs(1),
            body_timeout: Duration::from_secs(1),
            max_event_bytes: 1024,
            ..config()
        })
    });
    runner("heads")
        .run(&inputs("heads"), |head| {
            // Counted per case, so a failure names the input that made the server panic.
            let panics_before = HEAD_PANICS.load(Ordering::SeqCst);
            let answer = runtime.block_on(async {
                let mut io = server.connect(64 << 10);
                let _ = io.write_all(&head).await;
                let _ = io.shutdown().await;
                let mut answer = Vec::new();
                // A stream that opened stays open: stop reading once time has moved on.
                let _ = tokio::time::timeout(Duration::from_secs(30), io.read_to_end(&mut answer)).await;
                answer
            });
            HEADS_TRIED.fetch_add(1, Ordering::SeqCst);
            HEADS_ANSWERED.fetch_add(usize::from(!answer.is_empty()), Ordering::SeqCst);
            if head.starts_with(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") {
                // HTTP/2: the server's first frame is its SETTINGS (type 4).
                prop_assert!(answer.is_empty() || answer.get(3) == Some(&4), "HTTP/2 SETTINGS first: {:?}", answer);
                prop_assert_eq!(HEAD_PANICS.load(Ordering::SeqCst), panics_before, "nothing panicked");
                return Ok(());
            }
            let answer = text(&answer);
            prop_assert!(
                answer.is_empty() || answer.starts_with("HTTP/1.1 ") || answer.starts_with("HTTP/1.0 "),
                "a well-formed answer: {:?}",
                answer
            );
            let status_lines = answer.match_indices("HTTP/1.1 ").chain(answer.match_indices("HTTP/1.0 "));
            for (at, _) in status_lines {
                // Status lines only: at the start or after a whole message.
                if at == 0 || answer[..at].ends_with("\r\n\r\n") || answer[..at].ends_with('}') {
                    let status: u16 = answer.get(at + 9..at + 12).and_then(|s| s.parse().ok()).unwrap_or(0);
                    prop_assert!(DOCUMENTED.contains(&status), "undocumented status in {:?}", answer);
                }
            }
            prop_assert_eq!(HEAD_PANICS.load(Ordering::SeqCst), panics_before, "nothing panicked");
            Ok(())
        })
        .unwrap();
    let (tried, answered) = (HEADS_TRIED.load(Ordering::SeqCst), HEADS_ANSWERED.load(Ordering::SeqCst));
    println!("fuzz heads: {answered} of {tried} heads answered");
    assert!(answered * 2 > tried, "most fuzzed heads reach the server and get an answer");
    let metrics = server.metrics.clone();
    runtime.block_on(async {
        let gone = async {
            while metrics.connections() > 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(120), gone).await.expect("every fuzzed connection closed");
    });
}
