//! `failover`: kill -9 of the JetStream stream's leader under load, in cluster mode. A
//! 3-node NATS cluster and two `sse-server` nodes on loopback; subscribers on both nodes
//! (one topic), one publisher posting to the first node at a fixed rate. Each round kills
//! the stream's leader and measures how long until a publish sent after the kill is
//! acknowledged (another node must lead by then), and until every subscriber has as many
//! events as were acknowledged by then (a count: a publish whose answer the kill lost may
//! be stored too, so it can run one event early); the killed node is started again and
//! the cluster settles before the next round. `SSE_KEEP_LOGS=1` keeps the servers' logs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use crate::load::publisher::Publisher;
use crate::load::stream_client::{self, DataLines};
use crate::real::nats::NatsCluster;
use crate::real::processes::ServerProcess;

/// What to run.
#[derive(Debug)]
pub struct Plan {
    pub rounds: usize,
    pub subscribers: usize,
    /// Publishes per second.
    pub rate: u64,
}

const STREAM: &str = "FAILOVER";
/// Most a round may take before it counts as a failure.
const ROUND_LIMIT: Duration = Duration::from_secs(60);

pub async fn run(plan: Plan) -> anyhow::Result<()> {
    let mut nats = NatsCluster::start(3).await?;
    let data = tempfile::tempdir()?;
    let mut nodes = Vec::new();
    for n in 0..2 {
        let args: Vec<String> =
            ["--store", "nats", "--nats-stream", STREAM, "--nats-url", &nats.urls()].map(str::to_owned).to_vec();
        nodes.push(ServerProcess::start(&data.path().join(format!("node{n}")), &args, None).await?);
    }
    let received: Vec<Arc<AtomicU64>> = (0..plan.subscribers).map(|_| Arc::default()).collect();
    for (s, count) in received.iter().enumerate() {
        let mut tcp = stream_client::open(nodes[s % 2].addr, "failover").await?;
        let count = count.clone();
        tokio::spawn(async move {
            let mut lines = DataLines::default();
            let mut buf = vec![0u8; 16 << 10];
            while let Ok(n) = tcp.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                lines.feed(&buf[..n], |_| {
                    count.fetch_add(1, Ordering::Relaxed);
                });
            }
        });
    }
    let acked = Arc::new(AtomicU64::new(0));
    // The last acknowledged publish: when it was sent, and when its 201 came.
    let last_ack = Arc::new(std::sync::Mutex::new((Instant::now(), Instant::now())));
    let publisher = {
        let (addr, acked, last_ack, every) =
            (nodes[0].addr, acked.clone(), last_ack.clone(), Duration::from_secs(1) / plan.rate as u32);
        tokio::spawn(async move {
            let body = Bytes::from_static(b"failover");
            let mut publisher = None;
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if publisher.is_none() {
                    publisher = Publisher::connect(addr, "failover").await.ok();
                }
                let Some(p) = publisher.as_mut() else { continue };
                let sent = Instant::now();
                match tokio::time::timeout(Duration::from_secs(2), p.publish(body.clone())).await {
                    Ok(Ok(())) => {
                        acked.fetch_add(1, Ordering::Relaxed);
                        *last_ack.lock().unwrap() = (sent, Instant::now());
                    }
                    _ => publisher = None,
                }
            }
        })
    };
    let mut to_ack = Vec::new();
    let mut to_caught_up = Vec::new();
    for round in 0..plan.rounds {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let leader = nats.stream_leader(STREAM).await.context("the stream has no leader")?;
        let meta_too = nats.meta_leader().await == Some(leader);
        let killed = Instant::now();
        nats.kill(leader);
        // Acknowledged again: an acknowledgement of a publish sent after the kill.
        let deadline = killed + ROUND_LIMIT;
        let (acked_again, target) = loop {
            anyhow::ensure!(Instant::now() < deadline, "round {round}: no publish acknowledged within {ROUND_LIMIT:?}");
            tokio::time::sleep(Duration::from_millis(2)).await;
            let (sent, at) = *last_ack.lock().unwrap();
            if sent >= killed {
                break (at - killed, acked.load(Ordering::Relaxed));
            }
        };
        // The fault was real: another node leads the stream.
        loop {
            anyhow::ensure!(Instant::now() < deadline, "round {round}: no other node took the lead");
            if nats.stream_leader(STREAM).await.is_some_and(|now| now != leader) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Caught up: every subscriber has at least as many events as were acknowledged then.
        loop {
            anyhow::ensure!(
                Instant::now() < deadline,
                "round {round}: subscribers not caught up within {ROUND_LIMIT:?}"
            );
            if received.iter().all(|r| r.load(Ordering::Relaxed) >= target) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let caught_up = killed.elapsed();
        println!(
            "round {round}: NATS node {leader} (leader{}) killed; acknowledged again after {:.0} ms, every subscriber caught up after {:.0} ms",
            if meta_too { ", and JetStream's meta leader" } else { "" },
            acked_again.as_secs_f64() * 1e3,
            caught_up.as_secs_f64() * 1e3
        );
        to_ack.push(acked_again);
        to_caught_up.push(caught_up);
        nats.restart(leader)?;
    }
    publisher.abort();
    drop(nodes);
    if std::env::var_os("SSE_KEEP_LOGS").is_some() {
        println!("the servers' logs are kept in {}", data.keep().display());
    }
    to_ack.sort();
    to_caught_up.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "RESULT rounds={} acked_again_p50_ms={:.0} acked_again_max_ms={:.0} caught_up_p50_ms={:.0} caught_up_max_ms={:.0}",
        plan.rounds,
        ms(to_ack[to_ack.len() / 2]),
        ms(*to_ack.last().unwrap()),
        ms(to_caught_up[to_caught_up.len() / 2]),
        ms(*to_caught_up.last().unwrap())
    );
    Ok(())
}
