//! Resume with `Last-Event-ID` at every boundary of the window, and id order on
//! multi-topic streams.

use std::collections::BTreeSet;

use http::StatusCode;
use sse_server::Config;

use crate::support::{config, publish, seq, Proto, StreamClient, TestServer, ALL_PROTOS};

async fn publish_n(server: &TestServer, topic: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(publish(server.addr, topic, &format!("{topic}-{i}")).await);
    }
    ids
}

#[tokio::test]
async fn resume_inside_the_window_replays_exactly_the_later_events_then_goes_live() {
    let server = TestServer::start(Config { window: 64, ..config() }).await;
    let mut ids = publish_n(&server, "t", 6).await;
    for proto in ALL_PROTOS {
        for (from, via_query) in [(0, false), (2, true), (4, false)] {
            let path =
                if via_query { format!("/events?topic=t&lastEventId={}", ids[from]) } else { "/events?topic=t".into() };
            let header = (!via_query).then(|| ids[from].as_str());
            let mut events = StreamClient::open(server.addr, &path, header, proto).await.events();
            let replayed: Vec<String> = events.take(ids.len() - from - 1).await.into_iter().map(|e| e.id).collect();
            assert_eq!(replayed, ids[from + 1..], "{proto:?} resume after #{from}");
            publish(server.addr, "other", "unrelated").await;
            let next = publish(server.addr, "t", "live").await;
            let event = events.next().await.unwrap();
            assert_eq!(
                (event.id.as_str(), event.data.as_str()),
                (next.as_str(), "live"),
                "no gap or duplicate at the seam"
            );
            ids.push(next);
        }
    }
}

#[tokio::test]
async fn resume_at_the_newest_id_replays_nothing_and_continues_live() {
    let server = TestServer::start(Config { window: 4, ..config() }).await;
    let ids = publish_n(&server, "t", 4).await;
    let mut events = StreamClient::open(server.addr, "/events?topic=t", Some(&ids[3]), Proto::Http1).await.events();
    let next = publish(server.addr, "t", "after").await;
    assert_eq!(events.next().await.unwrap().id, next);
}

#[tokio::test]
async fn resume_at_the_window_edge_replays_everything_retained() {
    let server = TestServer::start(Config { window: 4, ..config() }).await;
    let ids = publish_n(&server, "t", 6).await; // ids[0..2] evicted, ids[2..6] retained
    let mut events = StreamClient::open(server.addr, "/events?topic=t", Some(&ids[1]), Proto::Http1).await.events();
    let got: Vec<String> = events.take(4).await.into_iter().map(|e| e.id).collect();
    assert_eq!(got, ids[2..], "the oldest evicted id is still a valid resume point");
}

#[tokio::test]
async fn resume_beyond_the_window_gets_a_reset_notice_then_the_retained_events() {
    let server = TestServer::start(Config { window: 4, ..config() }).await;
    let ids = publish_n(&server, "t", 8).await;
    let stream = StreamClient::open(server.addr, "/events?topic=t", Some(&ids[0]), Proto::Http1).await;
    assert_eq!(stream.status, StatusCode::OK, "a resume id is never answered with 4xx");
    let mut events = stream.events();
    let reset = events.next().await.unwrap();
    assert_eq!(reset.event, "reset");
    assert_eq!(reset.data, r#"{"reason":"evicted"}"#);
    let got: Vec<String> = events.take(4).await.into_iter().map(|e| e.id).collect();
    assert_eq!(got, ids[4..]);
}

#[tokio::test]
async fn malformed_foreign_and_future_ids_get_a_reset_notice_not_an_error() {
    let server = TestServer::start(config()).await;
    let ids = publish_n(&server, "t", 2).await;
    let epoch = ids[0].split('-').next().unwrap().to_owned();
    let other_epoch = if epoch == "00000000" { "00000001" } else { "00000000" };
    let cases = [
        ("garbage".to_owned(), "malformed"),
        (format!("{other_epoch}-1"), "other_epoch"),
        (format!("{epoch}-999"), "unknown"),
    ];
    for (id, reason) in cases {
        for proto in ALL_PROTOS {
            let stream = StreamClient::open(server.addr, "/events?topic=t", Some(&id), proto).await;
            assert_eq!(stream.status, StatusCode::OK);
            let mut events = stream.events();
            let reset = events.next().await.unwrap();
            assert_eq!(
                (reset.event.as_str(), reset.data.as_str()),
                ("reset", format!("{{\"reason\":\"{reason}\"}}").as_str())
            );
            let replayed: Vec<String> = events.take(2).await.into_iter().map(|e| e.id).collect();
            assert_eq!(replayed, ids, "after a reset the retained history follows");
        }
    }
}

#[tokio::test]
async fn multi_topic_streams_get_every_event_in_increasing_id_order() {
    let server = TestServer::start(Config { window: 4096, ..config() }).await;
    let topics = ["a", "b", "c"];
    let mut events =
        StreamClient::open(server.addr, "/events?topic=a&topic=b&topic=c", None, Proto::Http1).await.events();
    let per_publisher = 60;
    let mut publishers = Vec::new();
    for topic in topics.into_iter().chain(["noise"]) {
        let addr = server.addr;
        publishers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..per_publisher {
                ids.push(publish(addr, topic, &format!("{topic}{i}")).await);
            }
            (topic, ids)
        }));
    }
    let mut acknowledged = BTreeSet::new();
    for publisher in publishers {
        let (topic, ids) = publisher.await.unwrap();
        if topic != "noise" {
            acknowledged.extend(ids.iter().map(|id| seq(id)));
        }
    }
    let received: Vec<u64> = events.take(acknowledged.len()).await.iter().map(|e| seq(&e.id)).collect();
    assert!(received.windows(2).all(|w| w[0] < w[1]), "ids must strictly increase: {received:?}");
    assert_eq!(received.into_iter().collect::<BTreeSet<_>>(), acknowledged);

    // Resuming a multi-topic stream from its middle gives exactly the rest, in order.
    let middle = acknowledged.iter().nth(acknowledged.len() / 2).unwrap();
    let resume_id = format!("{}-{middle}", server_epoch(&server).await);
    let mut resumed =
        StreamClient::open(server.addr, "/events?topic=c&topic=a&topic=b", Some(&resume_id), Proto::Http2)
            .await
            .events();
    let rest: Vec<u64> = acknowledged.iter().copied().filter(|s| s > middle).collect();
    let got: Vec<u64> = resumed.take(rest.len()).await.iter().map(|e| seq(&e.id)).collect();
    assert_eq!(got, rest);
}

async fn server_epoch(server: &TestServer) -> String {
    let id = publish(server.addr, "epoch-probe", "x").await;
    id.split('-').next().unwrap().to_owned()
}
