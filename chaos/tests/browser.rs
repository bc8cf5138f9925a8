//! The browser tier: the browsers' own `EventSource` (headless Chromium and Firefox ESR
//! over WebDriver, [`sse_chaos::browser`]) against the real `sse-server` binary, under the
//! faults a browser meets: framing, a crash and restart, resets and a black hole between
//! them, a graceful drain, reset notices, private topics, cross-origin reads and the
//! per-origin connection limit. What each page saw goes to the same oracle as the other
//! tiers; every fault is read back before the result counts.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use fantoccini::Locator;
use nix::sys::signal::Signal;
use sse_chaos::browser::driver::{Browser, Engine, SessionOptions};
use sse_chaos::browser::pages;
use sse_chaos::browser::recorder::{to_seen, Kind, PageRecord, Recorder};
use sse_chaos::load::publisher::{metric, metric_over, Publisher};
use sse_chaos::load::tls_client::TlsConnect;
use sse_chaos::real::processes::{workspace_root, ServerProcess, ToxiproxyServer};
use sse_chaos::real::toxiproxy::{Direction, Toxic};
use sse_plan::oracle;
use sse_plan::record::Acked;
use tokio::sync::Semaphore;

/// How long any wait may take before it counts as a failure.
const PATIENCE: Duration = Duration::from_secs(15);

/// Browsers running at once: each is a few processes and a few hundred MB.
static BROWSERS: Semaphore = Semaphore::const_new(2);

/// One browser test's world: a server, a browser on one of its pages, the publisher's
/// acknowledgements and the run's start.
struct World {
    server: ServerProcess,
    args: Vec<String>,
    /// Toxiproxy and the proxy's name, when the browser reaches the server through it.
    proxy: Option<(ToxiproxyServer, &'static str)>,
    /// Where the browser's page (and so its streams) comes from: the server or the proxy.
    page_addr: SocketAddr,
    browser: Browser,
    page: Recorder,
    acked: Vec<Acked>,
    /// A token publishes need (`--jwt-secret` servers).
    publish_token: Option<String>,
    _dir: tempfile::TempDir,
}

impl World {
    /// Starts the server with `args` and a browser on its `/healthz` page (same origin as
    /// the streams), the recorder put in.
    async fn start(engine: Engine, args: &[&str]) -> World {
        Self::start_with(engine, args, &SessionOptions::default(), "http", false).await
    }

    /// The same, the browser's page and streams going through a Toxiproxy proxy.
    async fn start_proxied(engine: Engine, args: &[&str]) -> World {
        Self::start_with(engine, args, &SessionOptions::default(), "http", true).await
    }

    async fn start_with(engine: Engine, args: &[&str], options: &SessionOptions, scheme: &str, proxied: bool) -> World {
        let dir = tempfile::tempdir().unwrap();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let server = ServerProcess::start(&dir.path().join("data"), &args, None).await.expect("the server starts");
        let (proxy, page_addr) = if proxied {
            let toxiproxy = ToxiproxyServer::start(1).await.expect("Toxiproxy starts (ci/install-toxiproxy.sh)");
            let listen = toxiproxy.client.create_proxy("browser", server.addr).await.unwrap();
            (Some((toxiproxy, "browser")), listen)
        } else {
            (None, server.addr)
        };
        let browser = Browser::start(engine, options).await.expect("the browser starts");
        browser.client.goto(&format!("{scheme}://{page_addr}/healthz")).await.expect("the page loads");
        let page = Recorder::install(&browser.client).await.unwrap();
        World { server, args, proxy, page_addr, browser, page, acked: Vec::new(), publish_token: None, _dir: dir }
    }

    fn engine(&self) -> &'static str {
        self.browser.engine.name()
    }

    fn toxiproxy(&self) -> (&sse_chaos::real::toxiproxy::Toxiproxy, &'static str) {
        let (server, name) = self.proxy.as_ref().expect("a proxied world");
        (&server.client, name)
    }

    fn now(&self) -> Duration {
        self.page.origin.elapsed()
    }

    /// Publishes `data` on `topic` (with `event` as its type) and records the
    /// acknowledgement, data as a spec-compliant client reads it back.
    async fn publish(&mut self, topic: &str, event: Option<&str>, data: &str) -> String {
        self.publish_to(self.server.addr, topic, event, data).await
    }

    async fn publish_to(&mut self, addr: SocketAddr, topic: &str, event: Option<&str>, data: &str) -> String {
        let sent = self.now();
        let path = match event {
            Some(event) => format!("{topic}&event={event}"),
            None => topic.to_owned(),
        };
        let mut publisher = Publisher::connect(addr, &path).await.expect("connect to publish");
        if let Some(token) = &self.publish_token {
            publisher = publisher.with_bearer(token);
        }
        let id = publisher.publish_for_id(Bytes::copy_from_slice(data.as_bytes())).await.expect("published");
        let read_back = data.replace("\r\n", "\n").replace('\r', "\n");
        self.acked.push(Acked { at: self.now(), sent, id: id.clone(), topic: topic.to_owned(), data: read_back });
        id
    }

    /// The oracle's verdict on source `name`, a client of `topics` for the whole run.
    fn judge(&self, name: &str, topics: &[&str]) {
        let topics: BTreeSet<String> = topics.iter().map(|t| t.to_string()).collect();
        let seen = to_seen(&self.page.records, name);
        let report = oracle::judge(name, &topics, &seen, &self.acked, &BTreeMap::new(), Duration::ZERO);
        assert!(
            report.failures.is_empty(),
            "{}: {:#?}\npage saw {:#?}",
            self.browser.engine.name(),
            report.failures,
            self.page.records
        );
    }

    async fn wait_events(&mut self, name: &str, n: usize) {
        self.wait_kind(name, Kind::Event, n).await;
    }

    async fn wait_kind(&mut self, name: &str, kind: Kind, n: usize) {
        let name = name.to_owned();
        self.page
            .wait_for(PATIENCE, &format!("{n} {kind:?} on {name}"), |records| {
                records.iter().filter(|r| r.source == name && r.kind == kind).count() >= n
            })
            .await
            .unwrap();
    }

    async fn end(self) {
        self.browser.quit().await.expect("the browser quits");
    }
}

/// For each `error` of source `name`, how long until its next `open` or `error`: how long
/// the browser waited before trying again.
fn retry_gaps(records: &[PageRecord], name: &str) -> Vec<Duration> {
    let mine: Vec<&PageRecord> = records.iter().filter(|r| r.source == name && r.kind != Kind::Event).collect();
    mine.windows(2).filter(|w| w[0].kind == Kind::Error).map(|w| w[1].at - w[0].at).collect()
}

/// Whether a bounded wait ended because its time ran out (not on another error).
fn timed_out(result: anyhow::Result<()>) -> bool {
    result.is_err_and(|e| e.to_string().contains("did not see"))
}

// ---- framing ----

/// Bodies whose framing a browser must undo exactly: Unicode, each kind of line break,
/// lines that look like fields or comments, a trailing line break.
const BODIES: &[&str] = &[
    "héllo wörld ✓ 日本語 🎉",
    "line one\nline two\nline three",
    "crlf one\r\ncrlf two",
    "cr one\rcr two",
    "id: 999\nevent: fake\nretry: 1\n: not a comment\ndata: nested",
    "trailing break\n",
    "  leading spaces and a colon: here",
];

async fn framing(engine: Engine) {
    let _slot = BROWSERS.acquire().await.unwrap();
    let mut world = World::start(engine, &[]).await;
    world.page.open("s", "/events?topic=framing", false, &["greeting"]).await.unwrap();
    world.wait_kind("s", Kind::Open, 1).await;
    for body in BODIES {
        world.publish("framing", None, body).await;
    }
    world.publish("framing", Some("greeting"), "typed\nevent").await;
    world.wait_events("s", BODIES.len() + 1).await;
    let events = world.page.of("s", Kind::Event).collect::<Vec<_>>();
    for (event, acked) in events.iter().zip(&world.acked) {
        assert_eq!(event.data.as_deref(), Some(acked.data.as_str()), "{}", engine.name());
        assert_eq!(event.id, acked.id);
    }
    let typed = events.last().unwrap();
    assert_eq!(typed.event_type, "greeting", "a typed event reaches its listener, not onmessage");
    assert!(events[..BODIES.len()].iter().all(|e| e.event_type == "message"));
    world.judge("s", &["framing"]);
    world.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_reads_every_framing_back() {
    framing(Engine::Chromium).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firefox_reads_every_framing_back() {
    framing(Engine::Firefox).await;
}

// ---- a crash and a restart ----

/// The server killed with SIGKILL and started again on its data dir: the browser comes
/// back by itself, each attempt after the stream's `retry:`, and its `Last-Event-ID` gets
/// it what was published while it was away, none twice. Its way in (a proxy) stays closed
/// from the crash until those publishes are acknowledged, so they can only reach it by
/// the resume.
async fn crash_and_restart(engine: Engine) {
    let _slot = BROWSERS.acquire().await.unwrap();
    let mut world = World::start_proxied(engine, &["--retry", "2s"]).await;
    world.page.open("s", "/events?topic=crash", false, &[]).await.unwrap();
    world.wait_kind("s", Kind::Open, 1).await;
    for i in 0..5 {
        world.publish("crash", None, &format!("before-{i}")).await;
    }
    world.wait_events("s", 5).await;
    world.server.signal(Signal::SIGKILL).unwrap();
    let status = world.server.wait_exit(PATIENCE).await.unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9), "the server died of SIGKILL");
    let (toxiproxy, proxy) = world.toxiproxy();
    toxiproxy.set_enabled(proxy, false).await.unwrap();
    world.wait_kind("s", Kind::Error, 1).await;
    let args = world.args.clone();
    world.server.start_again(&args).await.expect("the server restarts on its data dir");
    for i in 0..5 {
        world.publish("crash", None, &format!("after-{i}")).await;
    }
    let reopened = world.now();
    let (toxiproxy, proxy) = world.toxiproxy();
    toxiproxy.set_enabled(proxy, true).await.unwrap();
    world.wait_events("s", 10).await;
    let error = world.page.of("s", Kind::Error).next().unwrap().clone();
    assert_eq!(error.ready_state, 0, "{}: after a dropped stream the browser reconnects by itself", world.engine());
    let back = world.page.of("s", Kind::Open).nth(1).unwrap().clone();
    assert!(back.at > reopened, "{}: back at {:?}, before its way in opened", world.engine(), back.at);
    let gaps = retry_gaps(&world.page.records, "s");
    for gap in &gaps {
        assert!(
            // The retry, plus up to 2 s for a loaded machine to run the attempt.
            (Duration::from_millis(1900)..Duration::from_millis(4000)).contains(gap),
            "{}: an attempt {gap:?} after the last failure (retry: 2s): {gaps:?}",
            world.engine()
        );
    }
    eprintln!("{}: each attempt after {gaps:?} (retry: 2s)", world.engine());
    world.judge("s", &["crash"]);
    world.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_resumes_after_a_crash_and_restart() {
    crash_and_restart(Engine::Chromium).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firefox_resumes_after_a_crash_and_restart() {
    crash_and_restart(Engine::Firefox).await;
}

// ---- resets and a black hole between browser and server ----

/// `reset_peer` on the proxy: the browser's stream is reset, every attempt while the
/// toxic stays is reset too, and once it goes the browser resumes with nothing lost.
async fn reset_peer(engine: Engine) {
    let _slot = BROWSERS.acquire().await.unwrap();
    let mut world = World::start_proxied(engine, &["--retry", "500ms"]).await;
    world.page.open("s", "/events?topic=reset", false, &[]).await.unwrap();
    world.wait_kind("s", Kind::Open, 1).await;
    world.publish("reset", None, "before").await;
    world.wait_events("s", 1).await;
    let toxic = Toxic::named("reset".into(), "reset_peer", Direction::Downstream, &[("timeout", 0)]);
    let (toxiproxy, proxy) = world.toxiproxy();
    toxiproxy.add_toxic(proxy, &toxic).await.expect("the toxic is applied and read back");
    // The toxic resets a connection once data flows down it: the next event does it.
    for i in 0..3 {
        world.publish("reset", None, &format!("during-{i}")).await;
    }
    // The stream was reset, and so was at least one attempt to come back.
    world.wait_kind("s", Kind::Error, 2).await;
    let (toxiproxy, proxy) = world.toxiproxy();
    toxiproxy.remove_toxic(proxy, "reset").await.unwrap();
    world.wait_events("s", 4).await;
    world.judge("s", &["reset"]);
    world.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_resumes_after_resets() {
    reset_peer(Engine::Chromium).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firefox_resumes_after_resets() {
    reset_peer(Engine::Firefox).await;
}

/// How long the black hole test watches for the browser to notice by itself.
const BLACK_HOLE_WATCH: Duration = Duration::from_secs(5);

/// A black hole (`timeout` 0 both ways: the proxy keeps the connections and drops every
/// byte) for ten heartbeats: the browser does not notice by itself (an `EventSource` has
/// no read timeout, and a heartbeat comment reaches no script). Healed by closing the
/// connections (bytes were lost, which TCP never does), the browser resumes, nothing lost.
async fn black_hole(engine: Engine) {
    let _slot = BROWSERS.acquire().await.unwrap();
    let mut world = World::start_proxied(engine, &["--retry", "500ms", "--heartbeat", "500ms"]).await;
    world.page.open("s", "/events?topic=hole", false, &[]).await.unwrap();
    world.wait_kind("s", Kind::Open, 1).await;
    world.publish("hole", None, "before").await;
    world.wait_events("s", 1).await;
    let (toxiproxy, proxy) = world.toxiproxy();
    for (name, way) in [("hole_up", Direction::Upstream), ("hole_down", Direction::Downstream)] {
        let toxic = Toxic::named(name.into(), "timeout", way, &[("timeout", 0)]);
        toxiproxy.add_toxic(proxy, &toxic).await.expect("the toxic is applied and read back");
    }
    world.publish("hole", None, "into the hole").await;
    let noticed = world.page.wait_for(BLACK_HOLE_WATCH, "an error", |r| r.iter().any(|r| r.kind == Kind::Error)).await;
    assert!(
        noticed.is_err(),
        "{}: the browser noticed a black hole by itself; the README says it does not",
        world.engine()
    );
    assert_eq!(world.page.events("s").count(), 1, "the event sent into the hole did not arrive");
    let (toxiproxy, proxy) = world.toxiproxy();
    toxiproxy.set_enabled(proxy, false).await.unwrap();
    for name in ["hole_up", "hole_down"] {
        toxiproxy.remove_toxic(proxy, name).await.unwrap();
    }
    toxiproxy.set_enabled(proxy, true).await.unwrap();
    world.publish("hole", None, "after").await;
    world.wait_events("s", 3).await;
    world.judge("s", &["hole"]);
    world.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_does_not_notice_a_black_hole_and_resumes_after_it() {
    black_hole(Engine::Chromium).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firefox_does_not_notice_a_black_hole_and_resumes_after_it() {
    black_hole(Engine::Firefox).await;
}

// ---- a graceful drain ----

/// SIGTERM: every stream is told a `retry:` drawn from [retry, retry + jitter] and closed;
/// the browser honours it, comes back to the restarted server and misses nothing.
async fn drain(engine: Engine) {
    let _slot = BROWSERS.acquire().await.unwrap();
    let mut world = World::start(engine, &["--retry", "1s", "--retry-jitter", "2s"]).await;
    world.page.open("s", "/events?topic=drain", false, &[]).await.unwrap();
    world.wait_kind("s", Kind::Open, 1).await;
    world.publish("drain", None, "before").await;
    world.wait_events("s", 1).await;
    world.server.signal(Signal::SIGTERM).unwrap();
    let status = world.server.wait_exit(PATIENCE).await.unwrap();
    assert!(status.success(), "{}: the drain ended with {status}", world.engine());
    world.wait_kind("s", Kind::Error, 1).await;
    let args = world.args.clone();
    world.server.start_again(&args).await.unwrap();
    world.publish("drain", None, "after").await;
    world.wait_events("s", 2).await;
    // The first gap is the drawn retry; a later one (the server was not back yet) repeats it.
    let gaps = retry_gaps(&world.page.records, "s");
    // The retry's range, plus up to 2 s for a loaded machine to run the attempt.
    let drawn = Duration::from_millis(900)..Duration::from_millis(5000);
    assert!(
        gaps.iter().all(|gap| drawn.contains(gap)),
        "{}: attempts after {gaps:?} (retry: in [1s, 3s])",
        world.engine()
    );
    eprintln!("{}: back after {gaps:?} (retry: drawn from [1s, 3s])", world.engine());
    world.judge("s", &["drain"]);
    world.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_comes_back_after_a_drain() {
    drain(Engine::Chromium).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firefox_comes_back_after_a_drain() {
    drain(Engine::Firefox).await;
}

// ---- reset notices ----

/// A resume id the server cannot honour: the page's `reset` listener gets the notice,
/// then the retained events arrive.
async fn reset_notice(engine: Engine) {
    let _slot = BROWSERS.acquire().await.unwrap();
    let mut world = World::start(engine, &[]).await;
    world.publish("notice", None, "retained-1").await;
    world.publish("notice", None, "retained-2").await;
    world.page.open("s", "/events?topic=notice&lastEventId=not-an-id", false, &["reset"]).await.unwrap();
    world.wait_events("s", 3).await;
    let events: Vec<_> = world.page.events("s").cloned().collect();
    assert_eq!(events[0].event_type, "reset", "{}: {events:#?}", world.engine());
    assert_eq!(events[0].data.as_deref(), Some(r#"{"reason":"malformed"}"#));
    assert_eq!(events[1].data.as_deref(), Some("retained-1"));
    world.judge("s", &["notice"]);
    world.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_hears_a_reset_notice() {
    reset_notice(Engine::Chromium).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firefox_hears_a_reset_notice() {
    reset_notice(Engine::Firefox).await;
}

// ---- private topics and other origins ----

const JWT_KEY: &str = "a-browser-test-key-of-32-bytes!!";

fn jwt(claims: serde_json::Value) -> String {
    use jsonwebtoken::{encode, EncodingKey, Header};
    encode(&Header::default(), &claims, &EncodingKey::from_secret(JWT_KEY.as_bytes())).unwrap()
}

fn reader_token() -> String {
    jwt(serde_json::json!({"sub": "reader", "exp": 4_000_000_000u64, "sse": {"subscribe": ["private/*"]}}))
}

/// The head of a public stream's answer to a request from `origin` (lowercase).
async fn cors_answer(addr: SocketAddr, origin: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET /events?topic=public HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(PATIENCE, tcp.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "the server closed before its head");
        head.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&head).to_ascii_lowercase().replace("http/1.1", "HTTP/1.1")
}

/// A token that may publish on every topic.
fn writer_token() -> String {
    jwt(serde_json::json!({"sub": "writer", "exp": 4_000_000_000u64, "sse": {"publish": ["*"]}}))
}

/// The page sets the `sse_token` cookie for its host (every port of it).
async fn set_token_cookie(world: &World, token: &str) {
    let script = "document.cookie = 'sse_token=' + arguments[0] + '; path=/; SameSite=Lax';";
    world.browser.client.execute(script, vec![serde_json::json!(token)]).await.unwrap();
}

const PRIVATE: &[&str] = &["--jwt-secret", JWT_KEY, "--private-topic", "private/*"];

/// A private topic read with the `sse_token` cookie and with `access_token`; without
/// either the browser is refused for good.
async fn private_topic(engine: Engine) {
    let _slot = BROWSERS.acquire().await.unwrap();
    let mut world = World::start(engine, PRIVATE).await;
    world.publish_token =
        Some(jwt(serde_json::json!({"sub": "writer", "exp": 4_000_000_000u64, "sse": {"publish": ["*"]}})));
    let token = reader_token();
    world.page.open("none", "/events?topic=private/a", false, &[]).await.unwrap();
    world.wait_kind("none", Kind::Error, 1).await;
    let refused = world.page.of("none", Kind::Error).next().unwrap().ready_state;
    assert_eq!(refused, 2, "{}: a 401 closes the EventSource for good", world.engine());
    world.page.open("query", &format!("/events?topic=private/a&access_token={token}"), false, &[]).await.unwrap();
    world.wait_kind("query", Kind::Open, 1).await;
    set_token_cookie(&world, &token).await;
    world.page.open("cookie", "/events?topic=private/a", false, &[]).await.unwrap();
    world.wait_kind("cookie", Kind::Open, 1).await;
    world.publish("private/a", None, "secret").await;
    world.wait_events("query", 1).await;
    world.wait_events("cookie", 1).await;
    world.judge("query", &["private/a"]);
    world.judge("cookie", &["private/a"]);
    assert_eq!(world.page.events("none").count(), 0);
    world.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_reads_a_private_topic_with_a_cookie_or_a_query_token() {
    private_topic(Engine::Chromium).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firefox_reads_a_private_topic_with_a_cookie_or_a_query_token() {
    private_topic(Engine::Firefox).await;
}

/// A page on one origin reads, `withCredentials`, a private topic on another: allowed
/// by a server whose `--cors-origin` names the page's origin (the cookie goes along:
/// same site, other port), refused for good by one that does not.
async fn cross_origin(engine: Engine) {
    let _slot = BROWSERS.acquire().await.unwrap();
    let mut world = World::start(engine, &[]).await;
    let page_origin = format!("http://{}", world.server.addr);
    world.publish_token = Some(writer_token());
    let dir = tempfile::tempdir().unwrap();
    let start = |cors: String, data: &'static str| {
        let mut args: Vec<String> = PRIVATE.iter().map(|a| a.to_string()).collect();
        args.extend(["--cors-origin".to_owned(), cors]);
        let data_dir = dir.path().join(data);
        async move { ServerProcess::start(&data_dir, &args, None).await.unwrap() }
    };
    let allowing = start(page_origin.clone(), "allowing").await;
    let refusing = start("http://127.0.0.1:9".to_owned(), "refusing").await;
    set_token_cookie(&world, &reader_token()).await;
    let url = |addr: SocketAddr| format!("http://{addr}/events?topic=private/x");
    world.page.open("allowed", &url(allowing.addr), true, &[]).await.unwrap();
    world.page.open("refused", &url(refusing.addr), true, &[]).await.unwrap();
    // The servers' own answers to this origin, read back: allowed with credentials by one,
    // no CORS header from the other.
    let allow = cors_answer(allowing.addr, &page_origin).await;
    assert!(allow.contains(&format!("access-control-allow-origin: {page_origin}")), "{allow}");
    assert!(allow.contains("access-control-allow-credentials: true"), "{allow}");
    let refuse = cors_answer(refusing.addr, &page_origin).await;
    assert!(refuse.starts_with("HTTP/1.1 200") && !refuse.contains("access-control-allow-origin"), "{refuse}");
    world.wait_kind("allowed", Kind::Open, 1).await;
    world.wait_kind("refused", Kind::Error, 1).await;
    assert_eq!(world.page.of("refused", Kind::Error).next().unwrap().ready_state, 2, "{}", world.engine());
    world.publish_to(refusing.addr, "private/x", None, "not for this page").await;
    world.publish_to(allowing.addr, "private/x", None, "across origins").await;
    world.wait_events("allowed", 1).await;
    world.acked.retain(|a| a.data != "not for this page");
    world.judge("allowed", &["private/x"]);
    assert_eq!(world.page.events("refused").count(), 0, "{}: the refused stream dispatched an event", world.engine());
    world.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_reads_across_origins_only_where_allowed() {
    cross_origin(Engine::Chromium).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firefox_reads_across_origins_only_where_allowed() {
    cross_origin(Engine::Firefox).await;
}

// ---- ten streams on one page ----

/// How long the seventh stream is watched to stay waiting over HTTP/1.1.
const LIMIT_WATCH: Duration = Duration::from_secs(2);

/// Ten `EventSource`s on one page over HTTP/1.1: six connect (the per-origin limit), the
/// seventh waits until one closes.
async fn ten_over_http1(engine: Engine) {
    let _slot = BROWSERS.acquire().await.unwrap();
    let mut world = World::start(engine, &[]).await;
    for i in 0..10 {
        world.page.open(&format!("s{i}"), "/events?topic=many", false, &[]).await.unwrap();
    }
    let opened = |r: &[PageRecord]| r.iter().filter(|r| r.kind == Kind::Open).count();
    world.page.wait_for(PATIENCE, "six streams open", |r| opened(r) >= 6).await.unwrap();
    let more = world.page.wait_for(LIMIT_WATCH, "a seventh stream", |r| opened(r) > 6).await;
    assert!(timed_out(more), "{}: a seventh HTTP/1.1 stream opened", world.engine());
    assert_eq!(metric(world.server.addr, "sse_streams").await.unwrap(), 6.0, "the server holds six streams");
    let first = world.page.records.iter().find(|r| r.kind == Kind::Open).unwrap().source.clone();
    world.page.close(&first).await.unwrap();
    world.page.wait_for(PATIENCE, "a seventh stream", |r| opened(r) == 7).await.unwrap();
    world.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_waits_past_six_streams_over_http1() {
    ten_over_http1(Engine::Chromium).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firefox_waits_past_six_streams_over_http1() {
    ten_over_http1(Engine::Firefox).await;
}

/// The same ten over TLS (the test CA in the browser's certificate store), where the
/// browser speaks HTTP/2: all ten are streams of one connection.
async fn ten_over_http2(engine: Engine) {
    let _slot = BROWSERS.acquire().await.unwrap();
    let tls = workspace_root().join("fixtures/tls");
    let (cert, key) = (tls.join("server.pem"), tls.join("server.key"));
    let args = ["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()];
    let options = SessionOptions { trust_ca: Some(tls.join("ca.pem")), ..SessionOptions::default() };
    let mut world = World::start_with(engine, &args, &options, "https", false).await;
    for i in 0..10 {
        world.page.open(&format!("s{i}"), "/events?topic=many", false, &[]).await.unwrap();
    }
    let opened = |r: &[PageRecord]| r.iter().filter(|r| r.kind == Kind::Open).count();
    world.page.wait_for(PATIENCE, "ten streams open", |r| opened(r) == 10).await.unwrap();
    let connect = TlsConnect::trusting(&tls.join("ca.pem")).unwrap();
    let read = |name: &'static str| {
        let connect = &connect;
        let addr = world.server.addr;
        async move { metric_over(connect.connect(addr).await.unwrap(), name).await.unwrap() }
    };
    let protocol = world
        .browser
        .client
        .execute("return performance.getEntriesByType('navigation')[0].nextHopProtocol;", vec![])
        .await
        .unwrap();
    assert_eq!(protocol, "h2", "{}: the page came over HTTP/2", world.engine());
    assert_eq!(read("sse_streams").await, 10.0);
    // Less the one reading the metrics. Usually one; Chromium sometimes opens a few more
    // while it learns the origin speaks HTTP/2, and leaves them idle. Over HTTP/1.1 ten
    // streams would need ten.
    let connections = read("sse_connections").await - 1.0;
    assert!(connections < 10.0, "{}: ten streams over {connections} connections", world.engine());
    eprintln!("{}: ten HTTP/2 streams over {connections} connection(s)", world.engine());
    world.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_multiplexes_ten_streams_over_http2() {
    ten_over_http2(Engine::Chromium).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firefox_multiplexes_ten_streams_over_http2() {
    ten_over_http2(Engine::Firefox).await;
}

// ---- the console page at `/` ----

/// Waits until the console's element `id` reads `want`.
async fn wait_text(world: &World, id: &str, want: &str) {
    pages::wait_for_text(&world.browser.client, id, want).await.unwrap_or_else(|e| panic!("{}: {e}", world.engine()));
}

/// The text of the console's element `id`.
async fn text_of(world: &World, id: &str) -> String {
    world.browser.client.find(Locator::Id(id)).await.unwrap().text().await.unwrap()
}

/// The console's event table, oldest first, as the oracle reads a client.
async fn console_rows(world: &World) -> Vec<(String, String, String, String)> {
    let script = "return [...document.querySelectorAll('#events tr')].reverse().map((row) => \
                  [row.className, ...[...row.children].slice(1).map((cell) => cell.textContent)]);";
    let rows = world.browser.client.execute(script, vec![]).await.unwrap();
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    rows.as_array().unwrap().iter().map(|r| (text(&r[0]), text(&r[1]), text(&r[2]), text(&r[3]))).collect()
}

/// The console: publish from its form and see the event arrive with its id and type;
/// kill the server and see the state change, then the resume after the restart (its way
/// in, a proxy, closed until the event published meanwhile is acknowledged).
async fn console(engine: Engine) {
    let _slot = BROWSERS.acquire().await.unwrap();
    let mut world = World::start_proxied(engine, &["--retry", "1s"]).await;
    let url = format!("http://{}/?topic=console&types=greeting", world.page_addr);
    world.browser.client.goto(&url).await.unwrap();
    wait_text(&world, "state", "open").await;
    let client = world.browser.client.clone();
    client.find(Locator::Id("pub-type")).await.unwrap().send_keys("greeting").await.unwrap();
    client.find(Locator::Id("pub-data")).await.unwrap().send_keys("hello from the form").await.unwrap();
    client.find(Locator::Id("publish")).await.unwrap().click().await.unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let answer = loop {
        let answer = text_of(&world, "pub-result").await;
        if !answer.is_empty() || tokio::time::Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(answer.starts_with("201 "), "{}: the form's publish answered {answer:?}", world.engine());
    let id = answer.split("\"id\":\"").nth(1).and_then(|rest| rest.split('"').next()).unwrap().to_owned();
    wait_text(&world, "last-id", &id).await;
    let rows = console_rows(&world).await;
    assert_eq!(rows.last().unwrap(), &("event".into(), id.clone(), "greeting".into(), "hello from the form".into()));

    world.server.signal(Signal::SIGKILL).unwrap();
    world.server.wait_exit(PATIENCE).await.unwrap();
    let (toxiproxy, proxy) = world.toxiproxy();
    toxiproxy.set_enabled(proxy, false).await.unwrap();
    wait_text(&world, "state", "connecting").await;
    let args = world.args.clone();
    world.server.start_again(&args).await.unwrap();
    let away = world.publish("console", None, "published while the page was away").await;
    let (toxiproxy, proxy) = world.toxiproxy();
    toxiproxy.set_enabled(proxy, true).await.unwrap();
    wait_text(&world, "last-id", &away).await;
    assert_eq!(text_of(&world, "state").await, "open");
    assert_eq!(text_of(&world, "reconnects").await, "1", "{}: one reconnect", world.engine());
    let rows = console_rows(&world).await;
    let events: Vec<_> = rows.iter().filter(|r| r.0 == "event").collect();
    assert_eq!(events.len(), 2, "{}: {rows:#?}", world.engine());
    assert_eq!(events[1].1, away);
    assert!(rows.iter().any(|r| r.0 == "note" && r.3.contains(&id)), "the resume is shown: {rows:#?}");
    world.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_console_publishes_shows_and_resumes() {
    console(Engine::Chromium).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firefox_console_publishes_shows_and_resumes() {
    console(Engine::Firefox).await;
}

/// A resume id the console cannot honour shows as a reset row, then the retained events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_console_shows_a_reset() {
    let _slot = BROWSERS.acquire().await.unwrap();
    let mut world = World::start(Engine::Chromium, &[]).await;
    world.publish("console", None, "retained").await;
    let url = format!("http://{}/?topic=console&lastEventId=not-an-id", world.server.addr);
    world.browser.client.goto(&url).await.unwrap();
    wait_text(&world, "resets", "1").await;
    wait_text(&world, "count", "1").await;
    let rows = console_rows(&world).await;
    assert_eq!(rows[0].0, "reset", "{rows:#?}");
    assert!(rows[0].3.contains("malformed"));
    assert_eq!(rows[1].3, "retained");
    world.end().await;
}

// ---- an HTML run report ----

/// A real run's HTML report renders in Chromium: the verdict, every chart drawn, no
/// script and nothing loaded from elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_renders_a_run_report() {
    let text = std::fs::read_to_string(workspace_root().join("fixtures/plans/process-faults.plan")).unwrap();
    let plan: sse_plan::Plan = text.parse().unwrap();
    let outcome = sse_chaos::real::plan_run::run(3, &plan).await.expect("the plan runs");
    let report = sse_chaos::real::run_report::run_report("process faults", &plan, &outcome, "replay");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.html");
    std::fs::write(&file, report.to_html()).unwrap();
    let _slot = BROWSERS.acquire().await.unwrap();
    let browser = Browser::start(Engine::Chromium, &SessionOptions::default()).await.unwrap();
    let charts = report.sections.iter().filter(|s| matches!(s, sse_report::Section::Chart(_))).count();
    assert_eq!(charts, 6);
    pages::check_report(&browser.client, &format!("file://{}", file.display()), charts).await.unwrap();
    browser.quit().await.unwrap();
}

// ---- no browser outlives its test ----

/// The processes (pids) in process group `group`, read from `/proc`.
fn group_members(group: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // After the command's closing parenthesis: state, ppid, pgrp.
        let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
        if fields.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(group) {
            pids.push(pid);
        }
    }
    pids
}

/// A browser dropped without quitting (a failed test) takes every process of its own
/// with it: an orphan's `EventSource` would keep reconnecting to a port that a later
/// test's server may be given.
async fn dropped_browser_leaves_nothing(engine: Engine) {
    let _slot = BROWSERS.acquire().await.unwrap();
    let browser = Browser::start(engine, &SessionOptions::default()).await.unwrap();
    let group = browser.process_group().unwrap();
    let members = group_members(group);
    assert!(members.len() > 2, "{}: the browser's processes run in the driver's group: {members:?}", engine.name());
    drop(browser);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !group_members(group).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}: {:?} outlived the browser",
            engine.name(),
            group_members(group)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_chromium_leaves_no_process() {
    dropped_browser_leaves_nothing(Engine::Chromium).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_firefox_leaves_no_process() {
    dropped_browser_leaves_nothing(Engine::Firefox).await;
}
