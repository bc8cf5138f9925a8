//! Cluster mode (`--store nats`) against a real 3-node NATS JetStream cluster
//! ([`sse_chaos::real::nats`], installed by `ci/install-nats.sh`): nodes share one history
//! with ids from the stream, a client resumes on any node, a retried publish is
//! deduplicated across nodes, a weaker stream is refused at start, the backplane going
//! away and coming back loses nothing acknowledged, and a resume into events the stream
//! aged out is told so. The servers run in this process; the clients are raw sockets.

use std::net::SocketAddr;
use std::time::Duration;

use sse_chaos::real::nats::NatsCluster;
use sse_server::config::StoreKind;
use sse_server::stream::wire::{find, Item, StreamDecoder};
use sse_server::{Config, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// How long any wait may take before it counts as a failure.
const PATIENCE: Duration = Duration::from_secs(10);

/// Tests running at once: each starts a 3-node NATS cluster, and six of them side by side
/// on two cores made JetStream requests time out.
static CLUSTERS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

fn node_config(cluster: &NatsCluster, stream: &str) -> Config {
    Config {
        store: StoreKind::Nats,
        nats_url: cluster.urls(),
        nats_stream: stream.to_owned(),
        nats_replicas: 3,
        window: 4,
        heartbeat: Duration::from_millis(300),
        seed: Some(1),
        ..Config::default()
    }
}

/// A node serving on an ephemeral loopback port until dropped.
struct Node {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

/// A node, once `/readyz` says its stream answers (a stream just made elects its leader
/// first) and it has taken a publish.
async fn node_with(config: Config) -> Node {
    capture_logs();
    let server = Server::connect(config).await.expect("cluster mode starts");
    let listener = sse_server::listener::bind("127.0.0.1:0".parse().unwrap(), 128, false).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.run(listener, async move {
        let _ = stopped.await;
    }));
    eventually_ready(addr).await;
    // A stream just made can still refuse publishes for a moment (503, Retry-After)
    // while its subjects reach every NATS node: the test starts once one is taken.
    let deadline = Instant::now() + PATIENCE * 3;
    while publish(addr, "warmup", Some(&format!("warmup-{addr}")), "w").await.0 != 201 {
        assert!(Instant::now() < deadline, "the node never took a publish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Node { addr, _stop: stop }
}

/// The nodes' log lines join the test's captured output, so a failing test shows what
/// its nodes said (why one was not ready, say).
fn capture_logs() {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("sse_server=info").try_init();
}

async fn node(cluster: &NatsCluster, stream: &str) -> Node {
    node_with(node_config(cluster, stream)).await
}

/// One HTTP/1.1 request on a fresh connection; the status and the body.
async fn request(addr: SocketAddr, head: &str, body: &str) -> (u16, String) {
    let Ok(mut tcp) = TcpStream::connect(addr).await else { return (0, String::new()) };
    let request = format!("{head}\r\nhost: test\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
    if tcp.write_all(request.as_bytes()).await.is_err() {
        return (0, String::new());
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or(String::new(), |(_, b)| b.to_owned());
    (status, body)
}

/// A publish; the status and the answer's id (or its body when there is none).
async fn publish(addr: SocketAddr, topic: &str, key: Option<&str>, data: &str) -> (u16, String) {
    let key = key.map_or(String::new(), |k| format!("\r\nidempotency-key: {k}"));
    let (status, body) = request(addr, &format!("POST /events?topic={topic} HTTP/1.1{key}"), data).await;
    let id = body.split("\"id\":\"").nth(1).and_then(|rest| rest.split('"').next()).unwrap_or(&body).to_owned();
    (status, id)
}

async fn readyz(addr: SocketAddr) -> u16 {
    request(addr, "GET /readyz HTTP/1.1", "").await.0
}

fn seq(id: &str) -> u64 {
    id.rsplit('-').next().and_then(|s| s.parse().ok()).expect("an id")
}

/// A raw event stream: its decoded items and its text (heartbeats are comments, which
/// the decoder drops).
struct Stream {
    tcp: TcpStream,
    decoder: StreamDecoder,
    head_done: bool,
    pending: Vec<u8>,
    items: Vec<Item>,
    text: String,
}

impl Stream {
    async fn open(addr: SocketAddr, topics: &str, last_event_id: Option<&str>) -> Stream {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let resume = last_event_id.map_or(String::new(), |id| format!("last-event-id: {id}\r\n"));
        let request = format!("GET /events?{topics} HTTP/1.1\r\nhost: test\r\n{resume}\r\n");
        tcp.write_all(request.as_bytes()).await.unwrap();
        Stream {
            tcp,
            decoder: StreamDecoder::default(),
            head_done: false,
            pending: Vec::new(),
            items: Vec::new(),
            text: String::new(),
        }
    }

    /// Reads until `until` holds of the stream so far, or `within` passes.
    async fn read_until(&mut self, within: Duration, until: impl Fn(&Stream) -> bool) {
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 4096];
        while !until(self) {
            let Ok(Ok(n)) = tokio::time::timeout_at(deadline, self.tcp.read(&mut buf)).await else { return };
            if n == 0 {
                return;
            }
            self.text.push_str(&String::from_utf8_lossy(&buf[..n]));
            if self.head_done {
                self.items.extend(self.decoder.feed(&buf[..n]).unwrap());
                continue;
            }
            self.pending.extend_from_slice(&buf[..n]);
            if let Some(end) = find(&self.pending, b"\r\n\r\n") {
                self.head_done = true;
                let body = self.pending.split_off(end + 4);
                self.items.extend(self.decoder.feed(&body).unwrap());
            }
        }
    }

    /// The events so far: (id, data).
    fn events(&self) -> Vec<(String, String)> {
        self.items
            .iter()
            .filter_map(|item| match item {
                Item::Event { id, data, .. } => Some((id.clone(), data.clone())),
                _ => None,
            })
            .collect()
    }

    /// Reads until `n` events arrived (failing after `PATIENCE`); all events so far.
    async fn take(&mut self, n: usize) -> Vec<(String, String)> {
        self.read_until(PATIENCE, |s| s.events().len() >= n).await;
        let events = self.events();
        assert!(events.len() >= n, "{} of {n} events arrived: {:?}", events.len(), self.text);
        events
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_share_one_history_and_a_client_resumes_on_either_with_no_gap() {
    let _slot = CLUSTERS.acquire().await.unwrap();
    let cluster = NatsCluster::start(3).await.unwrap();
    let a = node(&cluster, "SHARED").await;
    let b = node(&cluster, "SHARED").await;
    let mut on_b = Stream::open(b.addr, "topic=t", None).await;
    on_b.read_until(PATIENCE, |s| s.text.contains("retry:")).await;
    let mut ids = Vec::new();
    for i in 0..12 {
        let to = if i % 2 == 0 { a.addr } else { b.addr };
        let (status, id) = publish(to, "t", None, &format!("e{i}")).await;
        assert_eq!(status, 201, "{id}");
        ids.push(id);
    }
    let epoch = ids[0].split('-').next().unwrap().to_owned();
    assert!(ids.iter().all(|id| id.starts_with(&epoch)), "one epoch for both nodes: {ids:?}");
    assert!(ids.windows(2).all(|w| seq(&w[0]) < seq(&w[1])), "the stream orders them: {ids:?}");
    let got: Vec<String> = on_b.take(12).await.into_iter().map(|(id, _)| id).collect();
    assert_eq!(got, ids, "node b shows a's events, in order");

    // A client that read up to e4 on b resumes on a, past a's 4-event window.
    let mut on_a = Stream::open(a.addr, "topic=t", Some(&ids[4])).await;
    let resumed: Vec<String> = on_a.take(7).await.into_iter().map(|(_, data)| data).collect();
    assert_eq!(resumed, (5..12).map(|i| format!("e{i}")).collect::<Vec<_>>());
    on_a.read_until(Duration::from_millis(300), |_| false).await;
    assert_eq!(on_a.events().len(), 7, "no duplicate after the seam");

    // A retry that lost its answer, sent to the other node, stores nothing new.
    let (_, first) = publish(a.addr, "t", Some("order-9"), "pay").await;
    let (status, again) = publish(b.addr, "t", Some("order-9"), "pay").await;
    assert_eq!((status, again.as_str()), (201, first.as_str()));
    assert_eq!(on_b.take(13).await[12].0, first);
    on_b.read_until(Duration::from_millis(300), |_| false).await;
    assert_eq!(on_b.events().len(), 13, "the retry was not delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_less_durable_than_asked_for_is_refused_at_start() {
    let _slot = CLUSTERS.acquire().await.unwrap();
    let cluster = NatsCluster::start(3).await.unwrap();
    let client = async_nats::connect(cluster.urls().split(',').next().unwrap()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let weak = async_nats::jetstream::stream::Config {
        name: "WEAK".into(),
        subjects: vec!["WEAK.>".into()],
        num_replicas: 1,
        ..Default::default()
    };
    // A JetStream API request is delivered at most once: one that reaches the meta group
    // while it settles after its election gets no answer (the client's 5 s timeout), and
    // is sent again, as the server does with its own stream. Creating the same stream
    // twice is no error.
    let deadline = Instant::now() + PATIENCE * 3;
    while let Err(error) = js.create_stream(weak.clone()).await {
        assert!(Instant::now() < deadline, "the R1 stream was never created: {error}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Err(refused) = Server::connect(node_config(&cluster, "WEAK")).await else {
        panic!("an R1 stream must be refused");
    };
    assert!(refused.to_string().contains("1 replica(s), fewer than --nats-replicas 3"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_nats_publishes_get_503_streams_heartbeat_and_continue_with_no_gap_after() {
    let _slot = CLUSTERS.acquire().await.unwrap();
    let mut cluster = NatsCluster::start(3).await.unwrap();
    let a = node(&cluster, "OUTAGE").await;
    let mut stream = Stream::open(a.addr, "topic=o", None).await;
    stream.read_until(PATIENCE, |s| s.text.contains("retry:")).await;
    let mut before = Vec::new();
    for i in 0..3 {
        before.push(publish(a.addr, "o", None, &format!("b{i}")).await.1);
    }
    // Acknowledged and delivered before the outage.
    assert!(before.iter().all(|id| id.contains('-')), "published before the outage: {before:?}");
    stream.take(3).await;
    for node in 0..3 {
        cluster.kill(node);
    }
    // The fault is real: the node says it is not ready, and then refuses publishes at
    // once (its NATS client knows it is disconnected, so nothing is buffered to be sent
    // after a reconnect: a publish sent before that could be answered "may be stored").
    let deadline = Instant::now() + PATIENCE;
    while readyz(a.addr).await != 503 {
        assert!(Instant::now() < deadline, "/readyz never said 503 without NATS");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let began = Instant::now();
    let (status, body) = publish(a.addr, "o", None, "while-down").await;
    assert_eq!(status, 503, "{body}");
    assert!(began.elapsed() < Duration::from_secs(6), "refused in {:?}", began.elapsed());
    let beats = |s: &Stream| s.text.matches(":\n\n").count();
    let before_beats = beats(&stream);
    stream.read_until(PATIENCE, |s| beats(s) >= before_beats + 2).await;
    assert_eq!(stream.events().len(), 3, "the events before the outage arrived: {:?}", stream.text);
    assert!(beats(&stream) >= before_beats + 2, "heartbeats while NATS is gone: {:?}", stream.text);

    for node in 0..3 {
        cluster.restart(node).unwrap();
    }
    cluster.wait_for_leader(PATIENCE * 3).await.unwrap();
    let deadline = Instant::now() + PATIENCE * 3;
    let after = loop {
        let (status, id) = publish(a.addr, "o", Some("after-1"), "after").await;
        if status == 201 {
            break id;
        }
        assert!(Instant::now() < deadline, "publishes never came back: {status} {id}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(seq(&after), seq(&before[2]) + 1, "the stream kept its history and its sequence");
    let events = stream.take(4).await;
    assert_eq!(events[3], (after, "after".to_owned()), "the stream continued with no gap");
    assert!(events.iter().all(|(_, data)| data != "while-down"), "a refused publish never shows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_stream_leader_loses_nothing_acknowledged() {
    let _slot = CLUSTERS.acquire().await.unwrap();
    let mut cluster = NatsCluster::start(3).await.unwrap();
    // A window that holds every event: with a small one, a burst can push events out
    // before the stream writes them, and the catch-up read lands in the election (the
    // stream then ends with a store error and a real client resumes; this one does not).
    let a = node_with(Config { window: 64, ..node_config(&cluster, "FAILOVER") }).await;
    let mut stream = Stream::open(a.addr, "topic=f", None).await;
    stream.read_until(PATIENCE, |s| s.text.contains("retry:")).await;
    let mut acked = Vec::new();
    for i in 0..5 {
        let (status, id) = publish(a.addr, "f", None, &format!("f{i}")).await;
        assert_eq!(status, 201, "{id}");
        acked.push(id);
    }
    // The nodes' monitoring may not answer at once on a loaded machine: asked until it does.
    let deadline = Instant::now() + PATIENCE;
    let leader = loop {
        if let Some(leader) = cluster.stream_leader("FAILOVER").await {
            break leader;
        }
        assert!(Instant::now() < deadline, "no node says which one leads the stream");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    cluster.kill(leader);
    let began = Instant::now();
    let mut i = 5;
    while acked.len() < 10 {
        let (status, id) = publish(a.addr, "f", Some(&format!("k{i}")), &format!("f{i}")).await;
        if status == 201 {
            acked.push(id);
            i += 1;
        } else {
            assert!(began.elapsed() < PATIENCE * 3, "no publish acknowledged {:?} after the kill", began.elapsed());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // The fault was real: another node leads the stream now.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let now = cluster.stream_leader("FAILOVER").await;
        if now.is_some_and(|n| n != leader) {
            break;
        }
        assert!(Instant::now() < deadline, "no other node took the lead: {now:?} (was {leader})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got: Vec<String> = stream.take(10).await.into_iter().map(|(id, _)| id).collect();
    assert_eq!(got, acked, "every acknowledged event, once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_into_events_the_stream_aged_out_is_told_evicted_never_skipped() {
    let _slot = CLUSTERS.acquire().await.unwrap();
    let cluster = NatsCluster::start(3).await.unwrap();
    let config = Config { retain_age: Duration::from_secs(1), window: 2, ..node_config(&cluster, "AGED") };
    let a = node_with(config).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(publish(a.addr, "q", None, &format!("q{i}")).await.1);
    }
    // Every event of q ages out of the stream (read back from the stream itself); another
    // topic moves the stream on.
    // (A request that gets no answer is asked again: see the R1 stream's test.)
    let client = async_nats::connect(cluster.urls().split(',').next().unwrap()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let deadline = Instant::now() + PATIENCE * 3;
    loop {
        let held = match js.get_stream("AGED").await {
            Ok(mut stream) => stream.info().await.ok().map(|info| info.state.messages),
            Err(_) => None,
        };
        if held == Some(0) {
            break;
        }
        assert!(Instant::now() < deadline, "the stream still holds {held:?} events after their age");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    publish(a.addr, "r", None, "r0").await;
    let mut first = Stream::open(a.addr, "topic=q", Some(&ids[0])).await;
    first.read_until(PATIENCE, |s| !s.events().is_empty() || s.text.contains("reset")).await;
    assert!(first.events().iter().all(|(_, data)| data != "q2"), "q1 and q2 are gone: {:?}", first.text);
    // However the first connection ends, the resume must be told it lost events.
    let mut again = Stream::open(a.addr, "topic=q", Some(&ids[0])).await;
    again.read_until(PATIENCE, |s| s.text.contains("reset")).await;
    assert!(again.text.contains("event: reset\ndata: {\"reason\":\"evicted\"}"), "{:?}", again.text);
}

/// Ready once the stream answers with a leader: a stream just made elects one first, and
/// JetStream's Raft elections take 4–9 s (longer on a loaded machine).
async fn eventually_ready(addr: SocketAddr) {
    let deadline = Instant::now() + PATIENCE * 3;
    while readyz(addr).await != 200 {
        assert!(Instant::now() < deadline, "the node never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reaches_nats_over_tls_with_a_token_and_is_refused_without_them() {
    let _slot = CLUSTERS.acquire().await.unwrap();
    let tls = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tls");
    let settings = format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n}}\nauthorization {{\n  token: \"nats-test-token\"\n}}",
        tls.join("server.pem").display(),
        tls.join("server.key").display()
    );
    let cluster = NatsCluster::start_with(3, &settings).await.unwrap();
    let secure = Config {
        nats_token: Some("nats-test-token".parse().unwrap()),
        nats_tls_ca: Some(tls.join("ca.pem")),
        ..node_config(&cluster, "SECURE")
    };
    let a = node_with(secure.clone()).await;
    let mut stream = Stream::open(a.addr, "topic=s", None).await;
    stream.read_until(PATIENCE, |s| s.text.contains("retry:")).await;
    let (status, id) = publish(a.addr, "s", None, "over tls").await;
    assert_eq!(status, 201, "{id}");
    assert_eq!(stream.take(1).await[0], (id, "over tls".to_owned()));

    // The fault is real: without the token, or without trusting the CA, no start.
    let wrong_token = Config { nats_token: Some("another-token".parse().unwrap()), ..secure.clone() };
    let untrusted = Config { nats_tls_ca: None, ..secure };
    for (what, config) in [("a wrong token", wrong_token), ("no CA to trust", untrusted)] {
        let Err(refused) = Server::connect(config).await else { panic!("{what}: the node started") };
        assert!(refused.to_string().contains("cannot connect to NATS"), "{what}: {refused}");
    }
}
