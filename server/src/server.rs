//! The accept loop, admission control and graceful drain: [`Server::run`].

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::access::cors::CorsPolicy;
use crate::access::AccessPolicy;
use crate::config::{Config, StoreKind};
use crate::error::ApiError;
use crate::http::conn;
use crate::http::shared::Shared;
use crate::http::tls::{self, Tls};
use crate::limits::{ConnectionsPerIp, RateLimit};
use crate::listener::Listener;
use crate::log::nats::stream::Wanted;
use crate::log::nats::{NatsLog, NatsOptions, NatsStartError};
use crate::log::{LocalLog, Log};
use crate::metrics::Metrics;
use crate::rng::SeededRng;
use crate::store::{DiskOptions, DiskStore, FsyncPolicy, MemoryStore, Retention, Store, StoreError, WriteFaults};
use crate::stream::hub::{Hub, HubLimits};

/// Connections being refused at once; past it, over-limit connections wait in the
/// kernel's backlog instead of costing more descriptors.
const REJECT_SLOTS: usize = 64;
/// Longest pause after an accept error (EMFILE and the like).
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);
/// How often the drain checks whether every stream has ended.
const DRAIN_POLL: Duration = Duration::from_millis(10);

/// A configured server, ready to run on a listener.
#[derive(Debug)]
pub struct Server {
    shared: Arc<Shared>,
}

impl Server {
    /// A server on the in-memory store (whatever `config.store` says): for tests,
    /// simulations and embedding. The epoch is `config.epoch`, or drawn from the seed.
    ///
    /// # Panics
    /// When `--tls-cert`/`--tls-key` are given and cannot be loaded ([`Server::open`]
    /// returns that as an error instead).
    pub fn new(config: Config) -> Server {
        let store = memory_store(&config);
        Server::with_store(config, store)
    }

    /// A server on the log `config.store` names: what [`Server::open`] opens, or in
    /// cluster mode (`--store nats`) the JetStream stream, connected to and checked.
    pub async fn connect(config: Config) -> Result<Server, StartError> {
        if config.store != StoreKind::Nats {
            return Server::open(config);
        }
        let tls = load_tls(&config).map_err(StartError::Tls)?;
        let options = NatsOptions {
            urls: config.nats_url.clone(),
            stream: Wanted {
                name: config.nats_stream.clone(),
                replicas: config.nats_replicas.max(1),
                events_per_topic: config.retain_events.max(1),
                max_age: config.retain_age,
                dedup_window: config.dedup_window,
            },
            credentials: config.nats_creds.clone(),
            token: config.nats_token.as_ref().map(|t| String::from_utf8_lossy(t.as_bytes()).into_owned()),
            tls_ca: config.nats_tls_ca.clone(),
            tls_client: config.nats_tls_cert.clone().zip(config.nats_tls_key.clone()),
        };
        let metrics = Arc::new(Metrics::new());
        let log = NatsLog::connect(options, metrics.clone()).await.map_err(StartError::Nats)?;
        Ok(Server::build(config, Arc::new(log), metrics, tls))
    }

    /// A server on the store `config.store` names; opening a disk store recovers it and
    /// takes its lock. Cluster mode needs [`Server::connect`].
    pub fn open(config: Config) -> Result<Server, StartError> {
        let tls = load_tls(&config).map_err(StartError::Tls)?;
        let store: Arc<dyn Store> = match config.store {
            StoreKind::Nats => {
                return Err(StartError::Nats(NatsStartError::Connect {
                    urls: config.nats_url.clone(),
                    reason: "cluster mode connects asynchronously: use Server::connect".into(),
                }))
            }
            StoreKind::Memory => memory_store(&config),
            StoreKind::Disk => Arc::new(
                DiskStore::open(DiskOptions {
                    dir: config.data_dir.clone(),
                    fsync: config.fsync,
                    retention: Retention {
                        events: config.retain_events.max(1),
                        bytes: config.retain_bytes,
                        age: config.retain_age,
                    },
                    new_epoch: new_epoch(&config),
                    dedup_window: config.dedup_window,
                    faults: WriteFaults::new(),
                })
                .map_err(StartError::Store)?,
            ),
        };
        Ok(Server::on_store(config, store, tls))
    }

    /// A server on `store`, whose recovered history it continues.
    ///
    /// # Panics
    /// As [`Server::new`].
    pub fn with_store(config: Config, store: Arc<dyn Store>) -> Server {
        let tls = load_tls(&config).unwrap_or_else(|e| panic!("{e}"));
        Server::on_store(config, store, tls)
    }

    fn on_store(config: Config, store: Arc<dyn Store>, tls: Option<Tls>) -> Server {
        let log = Arc::new(LocalLog::new(store, config.dedup_window));
        Server::build(config, log, Arc::new(Metrics::new()), tls)
    }

    fn build(config: Config, log: Arc<dyn Log>, metrics: Arc<Metrics>, tls: Option<Tls>) -> Server {
        let rng = SeededRng::new(config.seed.unwrap_or(0));
        let limits = HubLimits {
            window: config.window.max(1),
            window_bytes: config.window_bytes,
            max_topics: config.max_topics,
            coalesce: config.pacing(),
            max_buffered_bytes: config.max_buffered_bytes,
        };
        let hub = Hub::new(log, limits, metrics.clone());
        let shared = Shared {
            access: AccessPolicy::new(
                config.publish_tokens.clone(),
                config.jwt_secret.as_ref(),
                config.private_topics.clone(),
            ),
            cors: CorsPolicy::new(&config.cors_origins),
            per_ip: ConnectionsPerIp::new(config.max_connections_per_ip),
            publish_rate: RateLimit::new(config.publish_rate),
            tls,
            config,
            hub,
            metrics,
            rng,
            closing: CancellationToken::new(),
            tasks: TaskTracker::new(),
            draining: AtomicBool::new(false),
        };
        Server { shared: Arc::new(shared) }
    }

    /// The server's metrics, for tests and embedding.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }

    /// The hub, for embedding (publish without HTTP).
    pub fn hub(&self) -> Arc<Hub> {
        self.shared.hub.clone()
    }

    /// Serves `listener` until `shutdown` completes, then drains: stops accepting, tells
    /// every stream to come back later, and returns once all connections have ended or
    /// `--drain-timeout` has passed.
    pub async fn run<L: Listener>(self, mut listener: L, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let shared = self.shared;
        let config = &shared.config;
        let max_connections = config.effective_max_connections();
        if shared.access.publishing_is_open() {
            warn!("no --publish-token or --jwt-secret: anyone who can reach this server may publish to every topic");
        }
        // The readiness line: logged last, once everything above is settled.
        info!(
            listen = %listener.local_addr()?,
            tls = shared.tls.is_some(),
            max_connections,
            seed = config.seed.unwrap_or(0),
            epoch = format_args!("{:08x}", shared.hub.epoch()),
            "serving"
        );
        let limit = Arc::new(Semaphore::new(max_connections));
        let reject_slots = Arc::new(Semaphore::new(REJECT_SLOTS));
        let mut backoff = Duration::from_millis(5);
        tokio::pin!(shutdown);
        loop {
            // The permit is taken before accept: a connection is never accepted and then
            // left waiting. Past the limit a few are accepted to be told 503; past that
            // they wait in the backlog for a permit.
            let admission = match limit.clone().try_acquire_owned() {
                Ok(permit) => Admission::Serve(permit),
                Err(_) => match reject_slots.clone().try_acquire_owned() {
                    Ok(slot) => Admission::Refuse(slot),
                    Err(_) => tokio::select! {
                        biased;
                        _ = &mut shutdown => break,
                        permit = limit.clone().acquire_owned() => Admission::Serve(permit.expect("never closed")),
                    },
                },
            };
            let accepted = tokio::select! {
                biased;
                _ = &mut shutdown => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((io, peer)) => {
                    backoff = Duration::from_millis(5);
                    // A slot may have freed while this accept was waiting.
                    let admission = match admission {
                        Admission::Refuse(slot) => match limit.clone().try_acquire_owned() {
                            Ok(permit) => Admission::Serve(permit),
                            Err(_) => Admission::Refuse(slot),
                        },
                        serve => serve,
                    };
                    match admission {
                        Admission::Serve(permit) => match shared.per_ip.enter(peer.ip()) {
                            Some(ip_place) => {
                                shared.tasks.spawn(conn::serve(shared.clone(), io, permit, ip_place, peer));
                            }
                            None => {
                                shared.metrics.rejected("max_connections_per_ip");
                                // The general permit goes back at once: refusals share the
                                // few reject slots, so one address cannot hold permits by
                                // being refused. With none free the socket just closes.
                                drop(permit);
                                if let Ok(slot) = reject_slots.clone().try_acquire_owned() {
                                    let error = ApiError::TooManyRequests(
                                        "too_many_connections_from_address",
                                        "this address has too many connections open",
                                        config.retry,
                                    );
                                    shared.tasks.spawn(refuse(io, slot, config.header_timeout, error));
                                }
                            }
                        },
                        Admission::Refuse(slot) => {
                            shared.metrics.rejected("max_connections");
                            let error = ApiError::Unavailable(
                                "too_many_connections",
                                "the server is at its connection limit",
                                config.retry,
                            );
                            shared.tasks.spawn(refuse(io, slot, config.header_timeout, error));
                        }
                    }
                }
                Err(error) => {
                    shared.metrics.accept_error();
                    warn!(%error, backoff_ms = backoff.as_millis() as u64, "accept failed; backing off");
                    tokio::select! {
                        biased;
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                }
            }
        }
        drop(listener);
        drain(&shared).await;
        Ok(())
    }
}

/// The epoch of a store created now: `config.epoch`, or the seed's first draw.
fn new_epoch(config: &Config) -> u32 {
    config.epoch.unwrap_or_else(|| SeededRng::new(config.seed.unwrap_or(0)).next_u64() as u32)
}

/// The in-memory store `Server::new` runs on.
fn memory_store(config: &Config) -> Arc<dyn Store> {
    Arc::new(MemoryStore::new(new_epoch(config), config.window.max(1), config.window_bytes, FsyncPolicy::Always))
}

/// The TLS identity `--tls-cert`/`--tls-key` name, loaded once; `None` for cleartext.
fn load_tls(config: &Config) -> Result<Option<Tls>, String> {
    match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => tls::load(cert, key).map(Some),
        _ => Ok(None),
    }
}

/// Stops streams first, then connections, all within `--drain-timeout`.
async fn drain(shared: &Shared) {
    let tracker = &shared.tasks;
    let deadline = tokio::time::Instant::now() + shared.config.drain_timeout;
    shared.draining.store(true, Ordering::SeqCst);
    info!(connections = shared.metrics.connections(), streams = shared.metrics.streams(), "draining");
    shared.hub.close_streams();
    while shared.metrics.streams() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(DRAIN_POLL).await;
    }
    shared.closing.cancel();
    tracker.close();
    if tokio::time::timeout_at(deadline, tracker.wait()).await.is_err() {
        warn!(left = tracker.len(), "drain timeout reached; closing the remaining connections");
    } else {
        info!("drained");
    }
    if let Err(error) = shared.hub.log().close().await {
        warn!(%error, "the event store did not close cleanly");
    }
}

enum Admission {
    Serve(OwnedSemaphorePermit),
    Refuse(OwnedSemaphorePermit),
}

/// Answers an over-limit connection with `error` (503 or 429, with Retry-After). The
/// request head is read first (bounded), so the client sees the answer instead of a
/// reset. Over TLS the client sees a failed handshake instead.
async fn refuse<S>(mut io: S, _slot: OwnedSemaphorePermit, header_timeout: Duration, error: ApiError)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut head = [0u8; 2048];
    let _ = tokio::time::timeout(header_timeout.min(Duration::from_secs(1)), io.read(&mut head)).await;
    let answer = error.raw_http1();
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        io.write_all(&answer).await?;
        io.shutdown().await
    })
    .await;
}

/// Why [`Server::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The event store could not be opened.
    #[error("cannot open the event store: {0}")]
    Store(StoreError),
    /// The TLS certificate or key could not be loaded.
    #[error("{0}")]
    Tls(String),
    /// Cluster mode could not reach or accept its JetStream stream.
    #[error("cluster mode: {0}")]
    Nats(NatsStartError),
}
