//! Cluster mode (`--store nats`) against one real `nats-server` with JetStream: the stream
//! it makes, one history shared by two nodes, catch-up reads behind the windows,
//! eviction by the per-topic limit, an outage of NATS, and a stream made again. These run
//! in seconds, so they are in the set every mutant of `server/src` runs (cargo-mutants);
//! the three-node cluster and its faults are sse-chaos's `cluster` tests.
//!
//! The binary is `NATS_SERVER_BIN`, else `.tools/bin/nats-server` (`ci/install-nats.sh`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::jetstream::stream::{Config as StreamConfig, DiscardPolicy, RetentionPolicy, StorageType};
use http::StatusCode;
use sse_server::config::StoreKind;
use sse_server::log::nats::stream::Wanted;
use sse_server::log::nats::{subject, NatsLog, NatsOptions};
use sse_server::log::{Follower, Log, NewEvent};
use sse_server::metrics::Metrics;
use sse_server::store::{Record, TailLimits};
use sse_server::{Config, Server};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::support::{config, request, request_with, seq, Proto, StreamClient, TestServer, PATIENCE};

/// One `nats-server` with JetStream on a loopback port, its files in a temporary
/// directory; killed when dropped, and restartable on the same port and files.
struct NatsServer {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl NatsServer {
    async fn start() -> NatsServer {
        let dir = tempfile::Builder::new().prefix("nats-").tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut server = NatsServer { dir, port, child: None };
        server.restart().await;
        server
    }

    fn binary() -> PathBuf {
        if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
            return bin.into();
        }
        let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/bin/nats-server");
        assert!(bin.exists(), "no nats-server at {}: run ci/install-nats.sh or set NATS_SERVER_BIN", bin.display());
        bin
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server on its port and files; returns once it takes connections.
    async fn restart(&mut self) {
        let config = self.dir.path().join("nats.conf");
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{}\njetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n",
                self.port,
                self.dir.path().join("store").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(self.dir.path().join("nats.log")).unwrap();
        let child = Command::new(Self::binary())
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen on {}", self.port);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL; returns once the process is gone.
    fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Sends the process `signal` (`-STOP` freezes it: connections stay open, nothing is
    /// answered; `-CONT` thaws it).
    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// A JetStream client whose requests wait the test's bound, not the client's 5 s.
    async fn jetstream(&self) -> async_nats::jetstream::Context {
        let mut js = async_nats::jetstream::new(async_nats::connect(self.url()).await.unwrap());
        js.set_timeout(PATIENCE * 3);
        js
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn node_config(nats: &NatsServer, stream: &str) -> Config {
    Config {
        store: StoreKind::Nats,
        nats_url: nats.url(),
        nats_stream: stream.to_owned(),
        nats_replicas: 1,
        window: 4,
        retain_events: 8,
        heartbeat: Duration::from_millis(200),
        ..config()
    }
}

/// A node serving once `/readyz` says its stream answers.
async fn node(nats: &NatsServer, stream: &str) -> TestServer {
    let node =
        TestServer::start_server(Server::connect(node_config(nats, stream)).await.expect("cluster mode starts")).await;
    let deadline = Instant::now() + PATIENCE;
    while request(node.addr, "GET", "/readyz", "").await.0 != StatusCode::OK {
        assert!(Instant::now() < deadline, "the node never said it was ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node
}

/// A publish's status and answer body.
async fn try_publish(addr: SocketAddr, path: &str, key: Option<&str>, data: &str) -> (StatusCode, String) {
    let headers: Vec<(&str, &str)> = key.map(|k| ("idempotency-key", k)).into_iter().collect();
    let io = TcpStream::connect(addr).await.unwrap();
    let (status, _, body) = request_with(io, "POST", path, &headers, data.to_owned()).await;
    (status, body)
}

/// Publishes and returns the acknowledged id.
async fn publish(addr: SocketAddr, path: &str, key: Option<&str>, data: &str) -> String {
    let (status, body) = try_publish(addr, path, key, data).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body.split("\"id\":\"").nth(1).and_then(|rest| rest.split('"').next()).expect("an id").to_owned()
}

/// The data lines of an SSE text, in order.
fn data_of(text: &str) -> Vec<&str> {
    text.lines().filter_map(|line| line.strip_prefix("data: ")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_is_made_durable_as_configured_and_a_weaker_one_is_refused() {
    let nats = NatsServer::start().await;
    let config = Config {
        retain_age: Duration::from_secs(600),
        dedup_window: Duration::from_secs(90),
        ..node_config(&nats, "MADE")
    };
    let _node = TestServer::start_server(Server::connect(config.clone()).await.unwrap()).await;
    let mut stream = nats.jetstream().await.get_stream("MADE").await.unwrap();
    let made = stream.info().await.unwrap().config.clone();
    assert_eq!(made.subjects, vec!["MADE.>".to_owned()]);
    assert_eq!(made.storage, StorageType::File);
    assert_eq!(made.num_replicas, 1);
    assert_eq!(made.retention, RetentionPolicy::Limits);
    assert_eq!(made.discard, DiscardPolicy::Old);
    assert_eq!(made.max_messages_per_subject, 8);
    assert_eq!(made.max_age, Duration::from_secs(600));
    assert_eq!(made.duplicate_window, Duration::from_secs(90));
    assert!(made.allow_direct);
    assert!(made.description.is_some_and(|d| d.contains("sse-server")));

    // A stream already in place that keeps its messages in memory is a start-up error.
    let js = nats.jetstream().await;
    js.create_stream(StreamConfig {
        name: "VOLATILE".into(),
        subjects: vec!["VOLATILE.>".into()],
        storage: StorageType::Memory,
        ..Default::default()
    })
    .await
    .unwrap();
    let Err(refused) = Server::connect(node_config(&nats, "VOLATILE")).await else {
        panic!("a memory stream must be refused");
    };
    assert!(refused.to_string().contains("keeps its messages in memory"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_one_history_and_a_retry_on_the_other_node_stores_nothing_new() {
    let nats = NatsServer::start().await;
    let (a, b) = (node(&nats, "SHARED").await, node(&nats, "SHARED").await);
    // A dotted topic is one subject token; a typed, two-line event keeps its type and lines.
    let mut on_b = StreamClient::open(b.addr, "/events?topic=room.1", None, Proto::Http1).await;
    on_b.read_until(PATIENCE, |text| text.contains("retry:")).await;
    let first = publish(a.addr, "/events?topic=room.1&event=note", None, "line 1\nline 2").await;
    let text = on_b.read_until(PATIENCE, |text| text.contains("data: line 2\n")).await;
    assert!(text.contains(&format!("id: {first}\nevent: note\ndata: line 1\ndata: line 2\n")), "{text}");

    let acked = publish(a.addr, "/events?topic=room.1", Some("order-7"), "pay").await;
    let (status, again) = try_publish(b.addr, "/events?topic=room.1", Some("order-7"), "pay").await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(again.contains(&acked), "the retry names the first id: {again}");
    let last = publish(b.addr, "/events?topic=room.1", None, "after").await;
    let text = on_b.read_until(PATIENCE, |text| text.contains("data: after\n")).await;
    assert_eq!(data_of(&text), ["pay", "after"], "the retry is not delivered again: {text}");
    assert_eq!(seq(&last), seq(&acked) + 1);

    // A resume on the other node continues the same history.
    let mut on_a = StreamClient::open(a.addr, "/events?topic=room.1", Some(&first), Proto::Http1).await;
    let text = on_a.read_until(PATIENCE, |text| text.contains("data: after\n")).await;
    assert_eq!(data_of(&text), ["pay", "after"], "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_behind_the_windows_reads_the_stream_and_one_behind_retention_is_told_evicted() {
    let nats = NatsServer::start().await;
    let a = node(&nats, "BEHIND").await;
    // 12 events on each of two topics, interleaved: the stream keeps 8 a topic, the node's
    // windows 4.
    let mut x = Vec::new();
    for i in 0..12 {
        x.push(publish(a.addr, "/events?topic=x", None, &format!("x{i}")).await);
        publish(a.addr, "/events?topic=y", None, &format!("y{i}")).await;
    }
    // A node started now has consumed the stream into its windows.
    let b = node(&nats, "BEHIND").await;
    for node in [&a, &b] {
        // From x5 (id 11): y5, x6, y6 … x11, y11 are retained, and older than the windows.
        let mut both = StreamClient::open(node.addr, "/events?topic=x&topic=y", Some(&x[5]), Proto::Http1).await;
        let text = both.read_until(PATIENCE, |text| text.contains("data: y11\n")).await;
        let want: Vec<String> =
            (5..12).flat_map(|i| [format!("y{i}"), format!("x{}", i + 1)]).filter(|d| d != "x12").collect();
        assert_eq!(data_of(&text), want, "{text}");
        assert!(!text.contains("event: reset"), "{text}");

        // From id 8, right before the oldest x retained (x4, id 9): nothing lost, no reset.
        let edge = format!("{}-{}", x[4].rsplit_once('-').unwrap().0, seq(&x[4]) - 1);
        let mut at_edge = StreamClient::open(node.addr, "/events?topic=x", Some(&edge), Proto::Http1).await;
        let text = at_edge.read_until(PATIENCE, |text| text.contains("data: x11\n")).await;
        assert_eq!(data_of(&text), (4..12).map(|i| format!("x{i}")).collect::<Vec<_>>(), "{text}");

        // From x1 (id 3): x2 and x3 were removed by the per-topic limit. The node learns it
        // from the read, so this connection is told to come back, and the next one is told
        // `reset: evicted` and starts at the oldest event retained.
        let mut old = StreamClient::open(node.addr, "/events?topic=x", Some(&x[1]), Proto::Http1).await;
        let text = old.read_until(PATIENCE, |text| text.contains("slow consumer")).await;
        assert!(text.contains("reconnect with Last-Event-ID"), "{text}");
        let mut again = StreamClient::open(node.addr, "/events?topic=x", Some(&x[1]), Proto::Http1).await;
        let text = again.read_until(PATIENCE, |text| text.contains("data: x11\n")).await;
        assert!(text.contains("event: reset\ndata: {\"reason\":\"evicted\"}"), "{text}");
        let data: Vec<&str> = data_of(&text).into_iter().filter(|d| d.starts_with('x')).collect();
        assert_eq!(data, ["x4", "x5", "x6", "x7", "x8", "x9", "x10", "x11"], "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_nats_publishes_get_503_and_streams_go_on_with_no_gap_after() {
    let mut nats = NatsServer::start().await;
    let a = node(&nats, "OUTAGE").await;
    let mut stream = StreamClient::open(a.addr, "/events?topic=o", None, Proto::Http1).await;
    stream.read_until(PATIENCE, |text| text.contains("retry:")).await;
    let before = publish(a.addr, "/events?topic=o", None, "before").await;
    stream.read_until(PATIENCE, |text| text.contains("data: before\n")).await;

    nats.kill();
    // Once the node says so, a publish is refused before it reaches the NATS client (whose
    // buffer would send it after a reconnect: an unacknowledged event that may appear).
    eventually_readyz(a.addr, StatusCode::SERVICE_UNAVAILABLE).await;
    let (status, body) = try_publish(a.addr, "/events?topic=o", None, "refused").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");

    nats.restart().await;
    // The NATS client's reconnect backoff (up to 4 s), JetStream's recovery and the node's
    // 1 s probe come first.
    eventually_readyz_within(PATIENCE * 3, a.addr, StatusCode::OK).await;
    let after = publish(a.addr, "/events?topic=o", None, "after").await;
    let text = stream.read_until(PATIENCE, |text| text.contains("data: after\n")).await;
    assert_eq!(data_of(&text), ["after"], "nothing refused shows, nothing is lost: {text}");
    assert_eq!(seq(&after), seq(&before) + 1, "a refused publish took no id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_deleted_and_made_again_is_a_history_the_node_refuses_to_continue() {
    let nats = NatsServer::start().await;
    let a = node(&nats, "AGAIN").await;
    publish(a.addr, "/events?topic=g", None, "first history").await;
    let js = nats.jetstream().await;
    js.delete_stream("AGAIN").await.unwrap();
    js.create_stream(StreamConfig { name: "AGAIN".into(), subjects: vec!["AGAIN.>".into()], ..Default::default() })
        .await
        .unwrap();
    eventually_readyz(a.addr, StatusCode::SERVICE_UNAVAILABLE).await;
    let (status, body) = try_publish(a.addr, "/events?topic=g", None, "second history").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
}

/// A publish JetStream does not answer in time may have been stored: the publisher is
/// told `store_timeout` (retry with the same key). One JetStream refuses was not stored:
/// `store_unavailable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_left_unanswered_is_uncertain_and_one_refused_is_not() {
    let nats = NatsServer::start().await;
    let a = node(&nats, "ANSWERS").await;
    nats.signal("-STOP");
    let (status, body) = try_publish(a.addr, "/events?topic=u", None, "unanswered").await;
    nats.signal("-CONT");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("store_timeout"), "a frozen NATS: {body}");

    nats.jetstream().await.delete_stream("ANSWERS").await.unwrap();
    let (status, body) = try_publish(a.addr, "/events?topic=u", None, "refused").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("store_unavailable"), "no stream: {body}");
}

/// A hub whose `apply` waits until the test opens its gate.
struct GatedHub {
    entered: std::sync::mpsc::SyncSender<()>,
    gate: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl Follower for GatedHub {
    fn frame(&self, _seq: u64, _event: &NewEvent) -> bytes::Bytes {
        bytes::Bytes::new()
    }
    fn apply(&self, _records: Vec<Record>) {
        let _ = self.entered.try_send(());
        // The worker's other tasks (the probe) move to another thread meanwhile.
        tokio::task::block_in_place(|| {
            let _ = self.gate.lock().unwrap().recv_timeout(PATIENCE * 3);
        });
    }
    fn skipped(&self, _upto: u64) {}
}

/// A node that starts behind its stream is not healthy until it has applied what the
/// stream held when it started, and its lag is 0 once it has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_its_stream_is_healthy_only_once_it_has_caught_up() {
    let nats = NatsServer::start().await;
    let wanted = Wanted {
        name: "BEHIND".into(),
        replicas: 1,
        events_per_topic: 100,
        max_age: Duration::from_secs(3600),
        dedup_window: Duration::from_secs(60),
    };
    let js = nats.jetstream().await;
    js.create_stream(wanted.config()).await.unwrap();
    for n in 0..5 {
        js.publish(subject::of_topic("BEHIND", "t"), n.to_string().into()).await.unwrap().await.unwrap();
    }
    let options = NatsOptions {
        urls: nats.url(),
        stream: wanted,
        credentials: None,
        token: None,
        tls_ca: None,
        tls_client: None,
    };
    let metrics = Arc::new(Metrics::new());
    let log = NatsLog::connect(options, metrics.clone()).await.unwrap();
    let (entered, applying) = std::sync::mpsc::sync_channel(1);
    let (open, gate) = std::sync::mpsc::channel();
    let tail = TailLimits { events: 1, bytes: 1 << 10, total_bytes: 1 << 20, keys_within: Duration::ZERO };
    let hub = Arc::new_cyclic(|me: &Weak<GatedHub>| {
        log.start(me.clone(), tail);
        GatedHub { entered, gate: std::sync::Mutex::new(gate) }
    });
    applying.recv_timeout(PATIENCE).expect("the log hands its events to the hub");
    // The probe has looked since the hub began applying once it reports the lag.
    let deadline = Instant::now() + PATIENCE;
    while metrics.log_lag() == 0 {
        assert!(Instant::now() < deadline, "the probe never reported the lag");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!log.is_healthy(), "healthy before applying the stream's 5 events");
    assert_eq!(metrics.log_up(), 0);

    open.send(()).unwrap();
    let deadline = Instant::now() + PATIENCE;
    while !log.is_healthy() || metrics.log_lag() != 0 {
        assert!(Instant::now() < deadline, "never caught up: healthy {}, lag {}", log.is_healthy(), metrics.log_lag());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(hub);
}

/// A hub that records nothing and takes 1.5 s to build.
struct SlowHub;

impl Follower for SlowHub {
    fn frame(&self, _seq: u64, _event: &NewEvent) -> bytes::Bytes {
        bytes::Bytes::new()
    }
    fn apply(&self, _records: Vec<Record>) {}
    fn skipped(&self, _upto: u64) {}
}

/// A log starts while its hub is being built (`Arc::new_cyclic`), and its tasks run on
/// other threads at once: a probe that looked for the hub before it was built took it
/// for gone and never called the node healthy (a fresh node never ready, 3 times in 20
/// runs beside a busy core). Here the build takes long enough for the probe to look.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_whose_hub_is_slow_to_build_still_becomes_healthy() {
    let nats = NatsServer::start().await;
    let options = NatsOptions {
        urls: nats.url(),
        stream: Wanted {
            name: "SLOWHUB".into(),
            replicas: 1,
            events_per_topic: 100,
            max_age: Duration::from_secs(3600),
            dedup_window: Duration::from_secs(60),
        },
        credentials: None,
        token: None,
        tls_ca: None,
        tls_client: None,
    };
    let log = NatsLog::connect(options, Arc::new(Metrics::new())).await.unwrap();
    let tail = TailLimits { events: 1, bytes: 1 << 10, total_bytes: 1 << 20, keys_within: Duration::ZERO };
    // Blocks this thread (not the runtime's two workers, where the log's tasks run).
    let hub = Arc::new_cyclic(|me: &Weak<SlowHub>| {
        log.start(me.clone(), tail);
        std::thread::sleep(Duration::from_millis(1500));
        SlowHub
    });
    let deadline = Instant::now() + PATIENCE;
    while !log.is_healthy() {
        assert!(Instant::now() < deadline, "the log never said it was healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(hub);
}

/// Waits until `/readyz` answers `status`.
async fn eventually_readyz(addr: SocketAddr, status: StatusCode) {
    eventually_readyz_within(PATIENCE, addr, status).await
}

async fn eventually_readyz_within(patience: Duration, addr: SocketAddr, status: StatusCode) {
    let deadline = Instant::now() + patience;
    loop {
        let (now, _, body) = request(addr, "GET", "/readyz", "").await;
        if now == status {
            return;
        }
        assert!(Instant::now() < deadline, "/readyz stayed {now} ({body}), not {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
