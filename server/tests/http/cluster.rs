//! Cluster mode (`--store nats`) against a real 3-node NATS JetStream cluster: nodes
//! share one history with ids from the stream, a client resumes on any node, a retried
//! publish is deduplicated across nodes, a weaker stream is refused at start, and the
//! backplane going away and coming back loses nothing acknowledged.

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use sse_server::config::StoreKind;
use sse_server::{Config, Server};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::nats_cluster::NatsCluster;
use super::support::*;

fn node_config(cluster: &NatsCluster, stream: &str) -> Config {
    Config {
        store: StoreKind::Nats,
        nats_url: cluster.urls(),
        nats_stream: stream.to_owned(),
        nats_replicas: 3,
        window: 4,
        heartbeat: Duration::from_millis(300),
        ..config()
    }
}

async fn node(cluster: &NatsCluster, stream: &str) -> TestServer {
    let server = Server::connect(node_config(cluster, stream)).await.expect("cluster mode starts");
    TestServer::start_server(server).await
}

/// One publish; the status and the answer's id (or body).
async fn try_publish(addr: SocketAddr, topic: &str, key: Option<&str>, data: &str) -> (StatusCode, String) {
    let Ok(io) = TcpStream::connect(addr).await else { return (StatusCode::SERVICE_UNAVAILABLE, String::new()) };
    let headers: Vec<(&str, &str)> = key.map(|k| ("idempotency-key", k)).into_iter().collect();
    let (status, _, body) =
        request_with(io, "POST", &format!("/events?topic={topic}"), &headers, data.to_owned()).await;
    let id = body.split("\"id\":\"").nth(1).and_then(|rest| rest.split('"').next()).unwrap_or(&body).to_owned();
    (status, id)
}

async fn readyz(addr: SocketAddr) -> StatusCode {
    request(addr, "GET", "/readyz", "").await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_share_one_history_and_a_client_resumes_on_either_with_no_gap() {
    let cluster = NatsCluster::start(3).await;
    let a = node(&cluster, "SHARED").await;
    let b = node(&cluster, "SHARED").await;
    let mut on_b = StreamClient::open(b.addr, "/events?topic=t", None, Proto::Http1).await.events();
    let mut ids = Vec::new();
    for i in 0..12 {
        let to = if i % 2 == 0 { a.addr } else { b.addr };
        let (status, id) = try_publish(to, "t", None, &format!("e{i}")).await;
        assert_eq!(status, StatusCode::CREATED, "{id}");
        ids.push(id);
    }
    let epoch = ids[0].split('-').next().unwrap().to_owned();
    assert!(ids.iter().all(|id| id.starts_with(&epoch)), "one epoch for both nodes: {ids:?}");
    assert!(ids.windows(2).all(|w| seq(&w[0]) < seq(&w[1])), "the stream orders them: {ids:?}");
    let got = on_b.take(12).await;
    assert_eq!(got.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), ids, "node b shows a's events, in order");

    // A client that read up to e4 on b resumes on a, past a's 4-event window.
    let mut on_a = StreamClient::open(a.addr, "/events?topic=t", Some(&ids[4]), Proto::Http1).await.events();
    let resumed = on_a.take(7).await;
    assert_eq!(
        resumed.iter().map(|e| e.data.clone()).collect::<Vec<_>>(),
        (5..12).map(|i| format!("e{i}")).collect::<Vec<_>>()
    );
    assert!(on_a.next_within(Duration::from_millis(300)).await.is_none(), "no duplicate after the seam");

    // A retry that lost its answer, sent to the other node, stores nothing new.
    let (_, first) = try_publish(a.addr, "t", Some("order-9"), "pay").await;
    let (status, again) = try_publish(b.addr, "t", Some("order-9"), "pay").await;
    assert_eq!((status, again.as_str()), (StatusCode::CREATED, first.as_str()));
    assert_eq!(on_b.take(1).await[0].id, first);
    assert!(on_b.next_within(Duration::from_millis(300)).await.is_none(), "the retry was not delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_less_durable_than_asked_for_is_refused_at_start() {
    let cluster = NatsCluster::start(3).await;
    let client = async_nats::connect(cluster.urls().split(',').next().unwrap()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "WEAK".into(),
        subjects: vec!["WEAK.>".into()],
        num_replicas: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    let Err(refused) = Server::connect(node_config(&cluster, "WEAK")).await else {
        panic!("an R1 stream must be refused");
    };
    assert!(refused.to_string().contains("1 replica(s), fewer than --nats-replicas 3"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_nats_publishes_get_503_streams_heartbeat_and_continue_with_no_gap_after() {
    let mut cluster = NatsCluster::start(3).await;
    let a = node(&cluster, "OUTAGE").await;
    let mut stream = StreamClient::open(a.addr, "/events?topic=o", None, Proto::Http1).await;
    let mut before = Vec::new();
    for i in 0..3 {
        before.push(try_publish(a.addr, "o", None, &format!("b{i}")).await.1);
    }
    eventually_ready(a.addr).await;
    for node in 0..3 {
        cluster.kill(node);
    }
    // The fault is real: publishes are refused and the node says it is not ready.
    let began = Instant::now();
    let (status, body) = try_publish(a.addr, "o", None, "while-down").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(began.elapsed() < Duration::from_secs(6), "refused in {:?}", began.elapsed());
    let deadline = Instant::now() + PATIENCE;
    while readyz(a.addr).await != StatusCode::SERVICE_UNAVAILABLE {
        assert!(Instant::now() < deadline, "/readyz never said 503 without NATS");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = stream.read_until(Duration::from_secs(2), |t| t.matches(":\n\n").count() >= 2).await;
    assert!(text.contains("data: b2"), "the events before the outage arrived: {text}");
    assert!(text.matches(":\n\n").count() >= 2, "heartbeats while NATS is gone: {text:?}");

    for node in 0..3 {
        cluster.restart(node);
    }
    cluster.wait_for_leader().await;
    let deadline = Instant::now() + PATIENCE * 3;
    let after = loop {
        let (status, id) = try_publish(a.addr, "o", Some("after-1"), "after").await;
        if status == StatusCode::CREATED {
            break id;
        }
        assert!(Instant::now() < deadline, "publishes never came back: {status} {id}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(seq(&after), seq(&before[2]) + 1, "the stream kept its history and its sequence");
    let text = stream.read_until(PATIENCE, |t| t.contains("data: after\n")).await;
    assert!(text.contains(&format!("id: {after}\ndata: after\n")), "the stream continued: {text:?}");
    assert!(!text.contains("while-down"), "a refused publish never shows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_stream_leader_loses_nothing_acknowledged() {
    let mut cluster = NatsCluster::start(3).await;
    let a = node(&cluster, "FAILOVER").await;
    let mut stream = StreamClient::open(a.addr, "/events?topic=f", None, Proto::Http1).await.events();
    let mut acked = Vec::new();
    for i in 0..5 {
        acked.push(try_publish(a.addr, "f", None, &format!("f{i}")).await.1);
    }
    let leader = cluster.stream_leader("FAILOVER").await.expect("the stream has a leader");
    cluster.kill(leader);
    let began = Instant::now();
    let mut i = 5;
    while acked.len() < 10 {
        let (status, id) = try_publish(a.addr, "f", Some(&format!("k{i}")), &format!("f{i}")).await;
        if status == StatusCode::CREATED {
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
    let got = stream.take(10).await;
    assert_eq!(got.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), acked, "every acknowledged event, once, in order");
    cluster.restart(leader);
}

async fn eventually_ready(addr: SocketAddr) {
    let deadline = Instant::now() + PATIENCE;
    while readyz(addr).await != StatusCode::OK {
        assert!(Instant::now() < deadline, "the node never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_into_events_the_stream_aged_out_is_told_evicted_never_skipped() {
    let cluster = NatsCluster::start(3).await;
    let config = Config { retain_age: Duration::from_secs(1), window: 2, ..node_config(&cluster, "AGED") };
    let a = TestServer::start_server(Server::connect(config).await.unwrap()).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(try_publish(a.addr, "q", None, &format!("q{i}")).await.1);
    }
    // Every event of q ages out of the stream; another topic moves the stream on.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    try_publish(a.addr, "r", None, "r0").await;
    let mut client = StreamClient::open(a.addr, "/events?topic=q", Some(&ids[0]), Proto::Http1).await;
    let first = client.read_until(PATIENCE, |t| t.contains("data:") || t.contains("reset")).await;
    assert!(!first.contains("data: q2"), "q1 and q2 are gone from the stream: {first:?}");
    // However the first connection ends, the resume must be told it lost events.
    let mut again = StreamClient::open(a.addr, "/events?topic=q", Some(&ids[0]), Proto::Http1).await;
    let opening = again.read_until(PATIENCE, |t| t.contains("reset")).await;
    assert!(opening.contains("event: reset\ndata: {\"reason\":\"evicted\"}"), "{opening:?}");
}
