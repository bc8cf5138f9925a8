//! `Idempotency-Key`: a retried publish within the dedup window gets the first publish's
//! id and stores nothing new, on the memory store and across a disk store's restart.

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use sse_server::config::StoreKind;
use sse_server::{Config, Server};
use tokio::net::TcpStream;

use super::support::*;

/// Publishes `data` under `key`; the status, whether the answer says it was replayed,
/// and the id.
async fn publish_keyed(addr: SocketAddr, topic: &str, key: &str, data: &str) -> (StatusCode, bool, String) {
    let io = TcpStream::connect(addr).await.unwrap();
    let path = format!("/events?topic={topic}");
    let (status, headers, body) = request_with(io, "POST", &path, &[("idempotency-key", key)], data.to_owned()).await;
    let replayed = headers.get("idempotent-replayed").is_some_and(|v| v == "true");
    let id = body.split("\"id\":\"").nth(1).and_then(|rest| rest.split('"').next()).unwrap_or(&body).to_owned();
    (status, replayed, id)
}

#[tokio::test]
async fn a_retry_with_the_same_key_gets_the_same_id_and_stores_nothing_new() {
    let server = TestServer::start(config()).await;
    let mut stream = StreamClient::open(server.addr, "/events?topic=k", None, Proto::Http1).await.events();
    let (status, replayed, first) = publish_keyed(server.addr, "k", "order-1", "a").await;
    assert_eq!((status, replayed), (StatusCode::CREATED, false));
    let (status, replayed, again) = publish_keyed(server.addr, "k", "order-1", "a").await;
    assert_eq!((status, replayed, again.as_str()), (StatusCode::CREATED, true, first.as_str()));
    let (_, replayed, other) = publish_keyed(server.addr, "k", "order-2", "b").await;
    assert!(!replayed && seq(&other) > seq(&first), "another key is another event");
    let got = stream.take(2).await;
    assert_eq!(got.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    assert!(stream.next_within(Duration::from_millis(200)).await.is_none(), "the retry was not delivered");
}

#[tokio::test]
async fn a_bad_key_is_refused_before_anything_is_stored() {
    let server = TestServer::start(config()).await;
    let long = "k".repeat(129);
    for key in ["has space", long.as_str()] {
        let (status, _, body) = publish_keyed(server.addr, "k", key, "x").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("invalid_idempotency_key"), "{body}");
    }
    let id = publish(server.addr, "k", "y").await;
    assert_eq!(seq(&id), 1, "nothing was stored for the refused publishes");
}

#[tokio::test]
async fn keys_outlive_a_restart_of_the_disk_store_within_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let disk = || Config { store: StoreKind::Disk, data_dir: dir.path().to_owned(), ..config() };
    let mut first = TestServer::start_server(Server::open(disk()).unwrap()).await;
    let (_, _, id) = publish_keyed(first.addr, "d", "pay-7", "x").await;
    first.begin_shutdown();
    first.finished().await;

    let mut second = TestServer::start_server(Server::open(disk()).unwrap()).await;
    let (status, replayed, again) = publish_keyed(second.addr, "d", "pay-7", "x").await;
    assert_eq!((status, replayed, again.as_str()), (StatusCode::CREATED, true, id.as_str()));
    second.begin_shutdown();
    second.finished().await;

    // A store opened with a window shorter than the key's age has forgotten it.
    let short = Config { dedup_window: Duration::from_millis(1), ..disk() };
    tokio::time::sleep(Duration::from_millis(5)).await;
    let third = TestServer::start_server(Server::open(short).unwrap()).await;
    let (_, replayed, fresh) = publish_keyed(third.addr, "d", "pay-7", "x").await;
    assert!(!replayed && seq(&fresh) > seq(&id), "{fresh} after the window is a new event");
}
