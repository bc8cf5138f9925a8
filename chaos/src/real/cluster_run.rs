//! The real backend for cluster plans (`cluster N`): N `sse-server` nodes in cluster mode
//! (`--store nats`) on a 3-node NATS JetStream cluster ([`super::nats`]), every node
//! reaching every NATS node through a Toxiproxy proxy of its own (`n<I>nats<J>`), every
//! client reaching a node through its own proxy (`c<K>`, client K starts on node K mod N).
//! Publisher P posts to node P mod N, so the stream interleaves every node's publishes.
//! Records and oracle are the plan runner's.
//!
//! Clients follow the service as a load balancer would: when their node is killed or
//! paused, their proxies are repointed (read back) to a live node, where they resume with
//! `Last-Event-ID`; its publishers move too. The mapping:
//!
//! | plan | here |
//! |---|---|
//! | kill_node | SIGKILL the node; its clients' proxies and the publishers move to a live node; started again (same flags) at the heal, in the background (it serves once it reached NATS) |
//! | pause_node | SIGSTOP (read back from `/proc`), clients and publishers move; SIGCONT at the heal |
//! | kill_leader | SIGKILL the NATS node that leads the stream (read from monitoring); started again on its files at the heal |
//! | pause_nats | SIGSTOP one NATS node (read back); SIGCONT at the heal |
//! | isolate | the node's three proxies to NATS disabled (read back; it keeps its clients); enabled at the heal |
//! | restart_nats | SIGKILL every NATS node; started again at the heal (the nodes find them by themselves) |
//! | anything else | skipped and logged: the one-node runner ([`super::plan_run`]) applies it |
//!
//! A fault with nothing to act on (a kill or pause that would leave no node serving, a
//! leader kill while the stream has no live leader, a pause of a NATS node that is down)
//! is skipped and logged as such, and its heal does nothing. Any reset notice a client
//! gets is a failure: nothing ages out in a cluster run. The catch-up
//! bound is the plan timing's plus [`BACKPLANE_SLACK`] for JetStream to elect a leader and
//! a node to notice a stalled consumer.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::Signal;
use sse_plan::record::Acked;
use sse_plan::{Fault, Plan, Timing};
use sse_server::rng::SeededRng;
use tokio::sync::watch;
use tokio::time::Instant;

use super::nats::NatsCluster;
use super::observe::{self, metric_within};
use super::plan_run::{self, judge_seats, publish, verdict, Leftovers, RealOutcome, PUBLISHERS, TOLERANCE};
use super::processes::{free_port, wait_pid_state, ServerProcess, ToxiproxyServer};
use super::roster::{Owned, Seat};
use super::toxiproxy::{Direction, Toxic, Toxiproxy};

/// The stream cluster runs keep their history in.
pub const STREAM: &str = "SSE";
/// Added to the catch-up bound: a JetStream leader election (a few seconds) and a node's
/// check for a stalled consumer (2 s).
pub const BACKPLANE_SLACK: Duration = Duration::from_secs(8);
/// NATS nodes in a cluster run.
pub const NATS_NODES: usize = 3;

/// One `sse-server` node.
struct Node {
    /// Where it listens (the same across restarts).
    addr: SocketAddr,
    /// The process (a killed one stays here until it is started again).
    server: Option<ServerProcess>,
    /// A start in progress: a node needs NATS to become ready, which can take seconds.
    starting: Option<Owned<anyhow::Result<ServerProcess>>>,
    alive: bool,
    paused: bool,
    /// It was killed and started again.
    restarted: bool,
    baseline: Option<Leftovers>,
}

impl Node {
    fn process(&self) -> anyhow::Result<&ServerProcess> {
        self.server.as_ref().context("the node has no process")
    }
}

/// What the timeline needs to reach.
struct Cluster {
    toxiproxy: Toxiproxy,
    nats: NatsCluster,
    nodes: Vec<Node>,
    /// The node each client's proxy points at.
    home: Vec<usize>,
    /// Where each publisher posts (publisher P starts on node P mod N).
    services: Vec<watch::Sender<SocketAddr>>,
    origin: Instant,
    trace: Vec<String>,
    failures: Vec<String>,
    /// The NATS node each kill_leader killed.
    killed_leaders: BTreeMap<usize, usize>,
}

impl Cluster {
    fn log(&mut self, line: impl std::fmt::Display) {
        self.trace.push(format!("{:>8.3}s {line}", self.origin.elapsed().as_secs_f64()));
    }

    fn serving(&self, node: usize) -> bool {
        self.nodes[node].alive && !self.nodes[node].paused
    }

    /// Moves every client on `from` and the publishers (if there) to a serving node.
    async fn leave(&mut self, from: usize) -> anyhow::Result<()> {
        let to = (0..self.nodes.len()).find(|n| *n != from && self.serving(*n)).context("no serving node")?;
        let addr = self.nodes[to].addr;
        for client in 0..self.home.len() {
            if self.home[client] == from {
                self.toxiproxy.set_upstream(&format!("c{client}"), addr).await?;
                self.home[client] = to;
            }
        }
        for service in &self.services {
            if *service.borrow() == self.nodes[from].addr {
                let _ = service.send(addr);
            }
        }
        self.log(format_args!("clients and publishers on node {from} now go to node {to} (read back)"));
        Ok(())
    }

    /// Takes in the nodes whose start finished.
    async fn collect_started(&mut self) {
        for n in 0..self.nodes.len() {
            if !self.nodes[n].starting.as_ref().is_some_and(Owned::is_finished) {
                continue;
            }
            let Some(starting) = self.nodes[n].starting.take() else { continue };
            let started = starting.await;
            match started {
                Ok(Ok(server)) => {
                    self.nodes[n].server = Some(server);
                    self.nodes[n].alive = true;
                    self.nodes[n].restarted = true;
                    self.log(format_args!("node {n} serves again"));
                }
                Ok(Err(error)) => self.failures.push(format!("node {n} did not start again: {error:#}")),
                Err(error) => self.failures.push(format!("node {n}'s start failed: {error}")),
            }
        }
    }

    /// Applies (`heal` false) or heals one cluster fault; `false` when there was nothing
    /// to apply (logged as a skip, and its heal then does nothing).
    async fn step(&mut self, i: usize, fault: &Fault, heal: bool) -> anyhow::Result<bool> {
        let node = |n: &usize| *n % self.nodes.len();
        match (fault, heal) {
            (Fault::KillNode { node: n, .. }, false) => {
                let n = node(n);
                let server = self.nodes[n].server.as_mut().context("the node has no process")?;
                server.signal(Signal::SIGKILL)?;
                server.wait_exit(Duration::from_secs(5)).await?;
                self.nodes[n].alive = false;
                self.log(format_args!("node {n} killed (read back: exited)"));
                self.leave(n).await?;
            }
            (Fault::KillNode { node: n, .. }, true) => {
                let n = node(n);
                let dead = self.nodes[n].server.take().context("the node has no process")?;
                self.nodes[n].starting = Some(Owned::spawn(dead.restart()));
                let addr = self.nodes[n].addr;
                self.log(format_args!("node {n} starting again on {addr} (it serves once it reached NATS)"));
            }
            (Fault::PauseNode { node: n, .. }, false) => {
                let n = node(n);
                let server = self.nodes[n].process()?;
                server.signal(Signal::SIGSTOP)?;
                wait_pid_state(server.pid(), |s| s == 'T').await?;
                self.nodes[n].paused = true;
                self.log(format_args!("node {n} stopped (read back)"));
                self.leave(n).await?;
            }
            (Fault::PauseNode { node: n, .. }, true) => {
                let n = node(n);
                let server = self.nodes[n].process()?;
                server.signal(Signal::SIGCONT)?;
                wait_pid_state(server.pid(), |s| s != 'T').await?;
                self.nodes[n].paused = false;
                self.log(format_args!("node {n} continued (read back)"));
            }
            (Fault::KillLeader { .. }, false) => {
                let Some(leader) = self.nats.stream_leader(STREAM).await else {
                    self.log(format_args!("skip {fault:?}: the stream has no live leader now (NATS down or electing)"));
                    return Ok(false);
                };
                if !self.nats.kill(leader) {
                    self.log(format_args!("skip {fault:?}: NATS node {leader} was not running"));
                    return Ok(false);
                }
                self.log(format_args!("NATS node {leader}, the stream's leader, killed (read back: exited)"));
                self.killed_leaders.insert(i, leader);
            }
            (Fault::KillLeader { .. }, true) => {
                if let Some(leader) = self.killed_leaders.remove(&i) {
                    let started = self.nats.restart(leader)?;
                    let what = if started { "started again" } else { "already runs (another heal started it)" };
                    self.log(format_args!("NATS node {leader} {what}"));
                }
            }
            (Fault::PauseNats { node: j, .. }, false) if !self.nats.is_running(*j % NATS_NODES) => {
                self.log(format_args!("skip {fault:?}: NATS node {} is down", *j % NATS_NODES));
                return Ok(false);
            }
            (Fault::PauseNats { node: j, .. }, _) => {
                let j = *j % NATS_NODES;
                if heal && !self.nats.is_running(j) {
                    self.log(format_args!("NATS node {j} was killed meanwhile: nothing to continue"));
                    return Ok(true);
                }
                self.nats.pause(j, !heal).await?;
                self.log(format_args!("NATS node {j} {} (read back)", if heal { "continued" } else { "stopped" }));
            }
            (Fault::Isolate { node: n, .. }, heal) => {
                let n = node(n);
                for j in 0..NATS_NODES {
                    self.toxiproxy.set_enabled(&format!("n{n}nats{j}"), heal).await?;
                }
                let what = if heal { "reaches NATS again" } else { "cut from every NATS node" };
                self.log(format_args!("node {n} {what} (proxies read back)"));
            }
            (Fault::RestartNats { .. }, false) => {
                let killed: Vec<usize> = (0..NATS_NODES).filter(|j| self.nats.kill(*j)).collect();
                self.log(format_args!("every NATS node down (read back; these were running: {killed:?})"));
            }
            (Fault::RestartNats { .. }, true) => {
                let mut started = Vec::new();
                for j in 0..NATS_NODES {
                    if self.nats.restart(j)? {
                        started.push(j);
                    }
                }
                self.log(format_args!("NATS nodes {started:?} started again (the nodes find them by themselves)"));
            }
            (_, false) => {
                self.log(format_args!("skip {fault:?}: not a cluster fault (the one-node runner applies it)"));
                return Ok(false);
            }
            (_, true) => {}
        }
        Ok(true)
    }
}

/// Runs cluster plan `plan` for real under `seed`.
pub async fn run(seed: u64, plan: &Plan) -> anyhow::Result<RealOutcome> {
    let nodes = plan.cluster.context("a cluster run needs `cluster N`")?.max(2);
    anyhow::ensure!(plan.expects.is_empty(), "cluster runs do not check expect lines yet");
    let timing = Timing::PLANS;
    let toxiproxy_server = ToxiproxyServer::start(seed).await?;
    let toxiproxy = toxiproxy_server.client;
    let nats = NatsCluster::start(NATS_NODES).await?;
    let data = tempfile::tempdir()?;
    let base: Vec<String> = plan_run::flags(plan, seed, &timing)
        .chunks(2)
        .filter(|pair| !matches!(pair[0].as_str(), "--store" | "--fsync"))
        .flatten()
        .cloned()
        .collect();
    let mut servers = Vec::new();
    for n in 0..nodes {
        let mut urls = Vec::new();
        for j in 0..NATS_NODES {
            let listen = SocketAddr::from(([127, 0, 0, 1], free_port()?));
            toxiproxy.create_proxy_at(&format!("n{n}nats{j}"), listen, nats.client_addr(j)).await?;
            urls.push(format!("nats://{listen}"));
        }
        let mut args = base.clone();
        args.extend(["--store", "nats", "--nats-stream", STREAM, "--nats-replicas", "3"].map(str::to_owned));
        args.extend(["--nats-url".to_owned(), urls.join(",")]);
        let server = ServerProcess::start(&data.path().join(format!("node{n}")), &args, plan.nofile).await?;
        let addr = server.addr;
        servers.push(Node {
            addr,
            server: Some(server),
            starting: None,
            alive: true,
            paused: false,
            restarted: false,
            baseline: None,
        });
    }
    for node in &mut servers {
        let server = node.process()?;
        node.baseline = Some(Leftovers::baseline(node.addr, server).await);
    }
    let rng = SeededRng::new(seed);
    let topics = plan.client_topics(&rng);
    let mut seats = Vec::new();
    let mut home = Vec::new();
    let half = (plan.max_latency.as_millis() / 2) as u64;
    for (k, topics) in topics.iter().enumerate() {
        let proxy = format!("c{k}");
        let listen = toxiproxy.create_proxy(&proxy, servers[k % nodes].addr).await?;
        if half > 0 {
            let jitter =
                Toxic::named("jitter".into(), "latency", Direction::Downstream, &[("latency", half), ("jitter", half)]);
            toxiproxy.add_toxic(&proxy, &jitter).await?;
        }
        seats.push(Seat::new(topics.clone(), listen, timing.heartbeat));
        home.push(k % nodes);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut open = 0.0;
        for node in &servers {
            open += metric_within(node.addr, "sse_streams").await.unwrap_or(0.0);
        }
        if open >= plan.clients as f64 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "{open} of {} streams open after 20 s", plan.clients);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let origin = Instant::now();
    let seats = Arc::new(seats);
    let services: Vec<watch::Sender<SocketAddr>> =
        (0..PUBLISHERS).map(|p| watch::channel(servers[p % nodes].addr).0).collect();
    let acked_live: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let publishers: Vec<_> = services
        .iter()
        .enumerate()
        .map(|(tag, service)| {
            let publisher = publish(plan.clone(), rng.next_u64(), tag, origin, service.subscribe(), acked_live.clone());
            Owned::spawn(publisher)
        })
        .collect();
    let service = services[0].subscribe();
    let (stop_tx, stop) = watch::channel(false);
    let observer =
        Owned::spawn(observe::watch(origin, service.clone(), acked_live.clone(), seats.clone(), stop.clone()));
    let mut cluster = Cluster {
        toxiproxy,
        nats,
        nodes: servers,
        home,
        services,
        origin,
        trace: Vec::new(),
        failures: Vec::new(),
        killed_leaders: BTreeMap::new(),
    };
    let logs = cluster.nats.dir().display().to_string();
    cluster.log(format_args!("{nodes} nodes on a {NATS_NODES}-node JetStream cluster (NATS logs in {logs})"));

    let events = plan.timeline();
    let mut skipped = std::collections::BTreeSet::new();
    for (at, heal, i) in events {
        tokio::time::sleep_until(origin + at).await;
        let late = origin.elapsed().saturating_sub(at);
        let fault = &plan.faults[i].fault;
        if late > TOLERANCE {
            cluster
                .failures
                .push(format!("fault {i} ({fault:?}) {} {late:?} late", if heal { "healed" } else { "applied" }));
        }
        cluster.collect_started().await;
        if heal && skipped.contains(&i) {
            continue;
        }
        if !heal {
            // A node fault that would leave no node serving, or hits one already down.
            let target = match fault {
                Fault::KillNode { node, .. } | Fault::PauseNode { node, .. } => Some(*node % nodes),
                _ => None,
            };
            if let Some(n) = target {
                let others = (0..nodes).filter(|m| *m != n && cluster.serving(*m)).count();
                if !cluster.serving(n) || others == 0 {
                    cluster.log(format_args!("skip {fault:?}: node {n} is down or the last one serving"));
                    skipped.insert(i);
                    continue;
                }
            }
            cluster.log(format_args!("apply {fault:?}"));
        } else {
            cluster.log(format_args!("heal {fault:?}"));
        }
        if !cluster.step(i, fault, heal).await.with_context(|| format!("fault {i} ({fault:?})"))? {
            skipped.insert(i);
        }
    }

    for publisher in publishers {
        publisher.await.context("a publisher")?;
    }
    // Nodes still starting: they must come up (each start is bounded by its readiness wait).
    while cluster.nodes.iter().any(|n| n.starting.is_some()) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        cluster.collect_started().await;
    }
    let calm_from = plan.calm_from();
    let check_at = origin + calm_from + timing.catch_up_bound() + BACKPLANE_SLACK;
    let acked = acked_live.lock().unwrap().clone();
    let grace = observe::CAUGHT_UP_WITHIN * 2 + plan.max_latency;
    let forgotten = BTreeMap::new();
    let judge = || {
        let (mut failures, recoveries) = judge_seats(&seats, origin, grace, &acked, &forgotten, calm_from);
        // Nothing ages out in a cluster run (retention is days, the buffer budget the
        // default): a reset would excuse lost events, so any reset is a failure here.
        for (i, seat) in seats.iter().enumerate() {
            for tenant in seat.tenants(origin, grace) {
                for seen in tenant.record.lock().unwrap().seen(origin) {
                    if let sse_plan::record::Seen::Reset { at, reason } = seen {
                        failures.push(format!("client-{i} was told reset: {reason} at {at:?}"));
                    }
                }
            }
        }
        (failures, recoveries)
    };
    let (mut failures, recoveries) = verdict(judge, check_at, &timing).await;

    let _ = stop_tx.send(true);
    seats.iter().for_each(Seat::close);
    let observed = observer.await.unwrap_or_default();
    // Every node that runs must give back what its clients held.
    let bound = timing.write_timeout + timing.heartbeat + Duration::from_secs(1);
    let deadline = Instant::now() + bound;
    for (n, node) in cluster.nodes.iter_mut().enumerate() {
        let (Some(server), true, false) = (&node.server, node.alive, node.paused) else { continue };
        // A node started again has a baseline of its own: there, only streams,
        // registrations and connections are checked.
        let baseline = node.baseline.filter(|_| !node.restarted);
        let settled = |left: &Leftovers| baseline.map_or(left.holds_nothing(), |b| left.settled(&b));
        let mut left = Leftovers::read(node.addr, server).await;
        while !settled(&left) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            left = Leftovers::read(node.addr, server).await;
        }
        if !settled(&left) {
            failures.push(format!("node {n} after clients left (bound {bound:?}): {left}, baseline {baseline:?}"));
        }
    }
    failures.append(&mut cluster.failures);
    drop(toxiproxy_server);
    Ok(RealOutcome {
        seed,
        failures,
        trace: std::mem::take(&mut cluster.trace),
        recoveries,
        acked: acked.len(),
        took: origin.elapsed(),
        observed,
        client_topics: topics,
        connects: seats.iter().map(Seat::connects).collect(),
        deliveries: plan_run::deliveries(&seats, origin, grace, &acked),
        calm_from,
    })
}
