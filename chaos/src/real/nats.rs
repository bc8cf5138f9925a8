//! A NATS JetStream cluster of real `nats-server` processes on loopback: 3 nodes with
//! file storage and `sync_interval: always` (every message synced before it is
//! acknowledged), on free ports, in a temporary directory, for cluster mode's tests and
//! chaos runs. Nodes can be killed (SIGKILL), paused (SIGSTOP/SIGCONT, read back from
//! `/proc`) and restarted on their own files; the stream's Raft leader is read from the
//! nodes' monitoring. Clients are not told of other nodes (`no_advertise`), so a client
//! reaches NATS only through the addresses it was given (a run's proxies).
//! The binary is `NATS_SERVER_BIN`, else `.tools/bin/nats-server` (`ci/install-nats.sh`).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::processes::free_port;

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
    /// Settings for the client port every node gets (TLS, authorization).
    client_settings: String,
    nodes: Vec<Option<Child>>,
    /// Nodes stopped with SIGSTOP (their monitoring does not answer).
    paused: Vec<bool>,
}

/// The `nats-server` binary.
pub fn binary() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
        return Ok(bin.into());
    }
    let bin = super::processes::workspace_root().join(".tools/bin/nats-server");
    if !bin.exists() {
        bail!("no nats-server at {}: run ci/install-nats.sh or set NATS_SERVER_BIN", bin.display());
    }
    Ok(bin)
}

impl NatsCluster {
    /// Starts `n` nodes and waits until JetStream's meta group has a leader. The ports
    /// are free when picked, but another process may take one before a node binds it
    /// (tests start clusters side by side): a cluster that elects no leader within 15 s
    /// is started again on other ports, three times at most.
    pub async fn start(n: usize) -> anyhow::Result<NatsCluster> {
        Self::start_with(n, "").await
    }

    /// The same, every node's configuration carrying `client_settings` too (a `tls { … }`
    /// or `authorization { … }` block for its client port).
    pub async fn start_with(n: usize, client_settings: &str) -> anyhow::Result<NatsCluster> {
        let mut last = None;
        for _ in 0..3 {
            let dir = tempfile::Builder::new().prefix("nats-").tempdir()?;
            let mut ports = Vec::new();
            for _ in 0..n {
                ports.push(Ports { client: free_port()?, route: free_port()?, monitor: free_port()? });
            }
            let mut cluster = NatsCluster {
                dir,
                ports,
                client_settings: client_settings.to_owned(),
                nodes: (0..n).map(|_| None).collect(),
                paused: vec![false; n],
            };
            for node in 0..n {
                cluster.write_config(node)?;
                cluster.restart(node)?;
            }
            match cluster.wait_for_leader(Duration::from_secs(15)).await {
                Ok(()) => return Ok(cluster),
                Err(error) => last = Some(error),
            }
        }
        Err(last.expect("three attempts"))
    }

    /// Nodes in the cluster.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Where node `node` takes clients.
    pub fn client_addr(&self, node: usize) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.ports[node].client).into()
    }

    /// The client URLs, comma-separated, as `--nats-url` takes them.
    pub fn urls(&self) -> String {
        (0..self.len()).map(|n| format!("nats://{}", self.client_addr(n))).collect::<Vec<_>>().join(",")
    }

    /// Where the nodes' files and logs are.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    fn write_config(&self, node: usize) -> anyhow::Result<()> {
        let p = self.ports[node];
        let routes: Vec<String> = self.ports.iter().map(|p| format!("nats-route://127.0.0.1:{}", p.route)).collect();
        let store = self.dir.path().join(format!("node-{node}"));
        let config = format!(
            "server_name: n{node}\nlisten: 127.0.0.1:{}\nhttp: 127.0.0.1:{}\n{}\n\
             jetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n\
             cluster {{\n  name: sse\n  listen: 127.0.0.1:{}\n  no_advertise: true\n  routes: [{}]\n}}\n",
            p.client,
            p.monitor,
            self.client_settings,
            store.display(),
            p.route,
            routes.join(", ")
        );
        std::fs::write(self.dir.path().join(format!("node-{node}.conf")), config)?;
        Ok(())
    }

    /// (Re)starts `node` on its own files and ports; a node that runs is left alone
    /// (returns `false`).
    pub fn restart(&mut self, node: usize) -> anyhow::Result<bool> {
        if self.is_running(node) {
            return Ok(false);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("node-{node}.log")))?;
        let child = Command::new(binary()?)
            .arg("-c")
            .arg(self.dir.path().join(format!("node-{node}.conf")))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start nats-server")?;
        self.nodes[node] = Some(child);
        self.paused[node] = false;
        Ok(true)
    }

    /// Whether `node` runs (it may be paused).
    pub fn is_running(&mut self, node: usize) -> bool {
        self.nodes[node].as_mut().is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// SIGKILL to `node`; returns once it is gone, and whether it was running.
    pub fn kill(&mut self, node: usize) -> bool {
        let running = self.is_running(node);
        if let Some(mut child) = self.nodes[node].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused[node] = false;
        running
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`) to `node`, read back from `/proc/PID/stat`.
    pub async fn pause(&mut self, node: usize, stop: bool) -> anyhow::Result<()> {
        let pid = self.nodes[node].as_ref().context("the node is not running")?.id();
        kill(Pid::from_raw(pid as i32), if stop { Signal::SIGSTOP } else { Signal::SIGCONT })?;
        super::processes::wait_pid_state(pid, |state| (state == 'T') == stop).await?;
        self.paused[node] = stop;
        Ok(())
    }

    /// Waits until every running, unpaused node's monitoring names the same leader of
    /// JetStream's meta group (one node naming one while another still elects is a group
    /// that may drop API requests for a moment), and that leader counts every other such
    /// node as a current, online peer (until it does, it refuses to place a replicated
    /// stream: "no suitable peers for placement, peer offline").
    pub async fn wait_for_leader(&mut self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            // Each running, unpaused node and its `/jsz`.
            let mut pages = Vec::new();
            for node in 0..self.len() {
                if self.is_running(node) && !self.paused[node] {
                    pages.push((node, get(self.ports[node].monitor, "/jsz").await.as_deref().and_then(json_of)));
                }
            }
            let named: BTreeSet<_> = pages.iter().map(|(_, page)| page.as_ref().and_then(meta_leader_of)).collect();
            if let (1, Some(&Some(leader))) = (named.len(), named.first()) {
                let others: Vec<usize> = pages.iter().map(|(node, _)| *node).filter(|&node| node != leader).collect();
                let leaders = pages.iter().find(|(node, _)| *node == leader).and_then(|(_, page)| page.as_ref());
                if leaders.is_some_and(|page| peers_online(page, &others)) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("no JetStream meta leader within {within:?}; logs in {}", self.dir.path().display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The node that leads JetStream's meta group (which creates streams and consumers),
    /// as a running, unpaused node's monitoring says.
    pub async fn meta_leader(&mut self) -> Option<usize> {
        for node in 0..self.len() {
            if !self.is_running(node) || self.paused[node] {
                continue;
            }
            let Some(page) = get(self.ports[node].monitor, "/jsz").await.as_deref().and_then(json_of) else { continue };
            return meta_leader_of(&page);
        }
        None
    }

    /// The node that leads stream `stream`'s Raft group, as a running node's monitoring
    /// says; `None` when none says, or the one named is down or paused (a stale answer).
    pub async fn stream_leader(&mut self, stream: &str) -> Option<usize> {
        for node in 0..self.len() {
            if !self.is_running(node) || self.paused[node] {
                continue;
            }
            let Some(body) = get(self.ports[node].monitor, "/jsz?streams=true").await else { continue };
            let Some(at) = body.find(&format!("\"name\": \"{stream}\"")) else { continue };
            let leader: usize =
                body[at..].split("\"leader\": \"").nth(1)?.split('"').next()?.strip_prefix('n')?.parse().ok()?;
            return (self.is_running(leader) && !self.paused[leader]).then_some(leader);
        }
        None
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in 0..self.nodes.len() {
            if let Some(child) = &self.nodes[node] {
                // A paused node must be woken to die cleanly of SIGKILL too.
                let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGCONT);
            }
            self.kill(node);
        }
    }
}

/// The JSON body of a monitoring answer (after its HTTP head).
fn json_of(answer: &str) -> Option<serde_json::Value> {
    serde_json::from_str(&answer[answer.find('{')?..]).ok()
}

/// The meta group's leader a node's `/jsz` names.
fn meta_leader_of(jsz: &serde_json::Value) -> Option<usize> {
    jsz["meta_cluster"]["leader"].as_str()?.strip_prefix('n')?.parse().ok()
}

/// Whether the meta leader's `/jsz` lists each of `nodes` among its replicas as current
/// and not offline.
fn peers_online(jsz: &serde_json::Value, nodes: &[usize]) -> bool {
    let replicas = jsz["meta_cluster"]["replicas"].as_array().map(Vec::as_slice).unwrap_or_default();
    nodes.iter().all(|node| {
        let name = format!("n{node}");
        replicas.iter().any(|replica| {
            replica["name"] == name.as_str()
                && replica["current"] == true
                && !replica["offline"].as_bool().unwrap_or(false)
        })
    })
}

/// A GET on a monitoring port; the body, or `None` when it does not answer in 2 s.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A leader's page as nats-server 2.14 serves it, one peer not yet caught up.
    const PAGE: &str = "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"meta_cluster\": {\
        \"name\": \"c\", \"leader\": \"n2\", \"replicas\": [\
        {\"name\": \"n0\", \"current\": true, \"active\": 969356274, \"peer\": \"6DVFpukC\"},\
        {\"name\": \"n1\", \"current\": false, \"active\": 0, \"peer\": \"fjFyEjc1\"}],\
        \"cluster_size\": 3}}";

    #[test]
    fn the_leader_and_its_online_peers_are_read_from_jsz() {
        let page = json_of(PAGE).unwrap();
        assert_eq!(meta_leader_of(&page), Some(2));
        assert!(peers_online(&page, &[0]));
        assert!(!peers_online(&page, &[0, 1]), "n1 is not current");
        assert!(!peers_online(&page, &[3]), "n3 is not listed");
        let offline = json_of(&PAGE.replace("\"current\": true,", "\"current\": true, \"offline\": true,")).unwrap();
        assert!(!peers_online(&offline, &[0]), "n0 is offline");
        assert!(json_of("HTTP/1.0 503\r\n\r\nnot json").is_none());
    }
}
