//! A NATS JetStream cluster of real `nats-server` processes on loopback, for cluster
//! mode's tests: 3 nodes with file storage and `sync_interval: always`, on free ports, in
//! a temporary directory; nodes can be killed, stopped and restarted. The binary is
//! `NATS_SERVER_BIN`, else `.tools/bin/nats-server` (`ci/install-nats.sh`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::support::PATIENCE;

/// One node's ports.
#[derive(Debug, Clone, Copy)]
struct Ports {
    client: u16,
    route: u16,
    monitor: u16,
}

/// A running cluster; every node is killed when it is dropped.
pub struct NatsCluster {
    dir: tempfile::TempDir,
    ports: Vec<Ports>,
    nodes: Vec<Option<Child>>,
}

fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
        return bin.into();
    }
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/bin/nats-server");
    assert!(bin.exists(), "no nats-server at {}: run ci/install-nats.sh or set NATS_SERVER_BIN", bin.display());
    bin
}

/// Free loopback ports, all held until every one is picked.
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> =
        (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    held.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

impl NatsCluster {
    /// Starts `n` nodes and waits until JetStream has a meta leader.
    pub async fn start(n: usize) -> NatsCluster {
        let dir = tempfile::tempdir().unwrap();
        let free = free_ports(3 * n);
        let ports: Vec<Ports> = free.chunks(3).map(|p| Ports { client: p[0], route: p[1], monitor: p[2] }).collect();
        let mut cluster = NatsCluster { dir, ports, nodes: (0..n).map(|_| None).collect() };
        for node in 0..n {
            cluster.write_config(node);
            cluster.restart(node);
        }
        cluster.wait_for_leader().await;
        cluster
    }

    /// The client URLs, comma-separated, as `--nats-url` takes them.
    pub fn urls(&self) -> String {
        self.ports.iter().map(|p| format!("nats://127.0.0.1:{}", p.client)).collect::<Vec<_>>().join(",")
    }

    fn write_config(&self, node: usize) {
        let p = self.ports[node];
        let routes: Vec<String> = self.ports.iter().map(|p| format!("nats-route://127.0.0.1:{}", p.route)).collect();
        let store = self.dir.path().join(format!("node-{node}"));
        let config = format!(
            "server_name: n{node}\nlisten: 127.0.0.1:{}\nhttp: 127.0.0.1:{}\n\
             jetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n\
             cluster {{\n  name: test\n  listen: 127.0.0.1:{}\n  routes: [{}]\n}}\n",
            p.client,
            p.monitor,
            store.display(),
            p.route,
            routes.join(", ")
        );
        std::fs::write(self.dir.path().join(format!("node-{node}.conf")), config).unwrap();
    }

    /// (Re)starts `node` on its own files and ports.
    pub fn restart(&mut self, node: usize) {
        let log = std::fs::File::create(self.dir.path().join(format!("node-{node}.log"))).unwrap();
        let child = Command::new(binary())
            .arg("-c")
            .arg(self.dir.path().join(format!("node-{node}.conf")))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("nats-server starts");
        self.nodes[node] = Some(child);
    }

    /// SIGKILL to `node`; returns once it is gone.
    pub fn kill(&mut self, node: usize) {
        if let Some(mut child) = self.nodes[node].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until node 0..n's monitoring says JetStream's meta group has a leader.
    pub async fn wait_for_leader(&self) {
        let deadline = Instant::now() + PATIENCE * 3;
        loop {
            for p in &self.ports {
                if let Some(body) = get(p.monitor, "/jsz").await {
                    if body.contains("\"leader\"") {
                        return;
                    }
                }
            }
            assert!(Instant::now() < deadline, "no JetStream meta leader; logs in {}", self.dir.path().display());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The node (0..n) that leads stream `stream`'s Raft group, as its monitoring says.
    pub async fn stream_leader(&self, stream: &str) -> Option<usize> {
        for p in &self.ports {
            let Some(body) = get(p.monitor, "/jsz?streams=true").await else { continue };
            let Some(at) = body.find(&format!("\"name\": \"{stream}\"")) else { continue };
            let after = &body[at..];
            let leader = after.split("\"leader\": \"").nth(1)?.split('"').next()?;
            return leader.strip_prefix('n')?.parse().ok();
        }
        None
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in 0..self.nodes.len() {
            self.kill(node);
        }
    }
}

/// A GET on a monitoring port; the body, or `None` when it does not answer.
async fn get(port: u16, path: &str) -> Option<String> {
    let fetch = async {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nhost: 127.0.0.1\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).await.ok()?;
        Some(String::from_utf8_lossy(&answer).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(2), fetch).await.ok().flatten()
}
