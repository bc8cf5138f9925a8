//! Cluster mode's log: a NATS JetStream stream that many server processes share.
//!
//! The stream assigns ids: a publish is a JetStream publish (`Nats-Msg-Id` = the
//! `Idempotency-Key`) answered with the stream sequence once the stream's Raft group has
//! it (quorum, synced by the servers' `sync_interval: always`). Every node follows the
//! whole stream with an ordered consumer from its position (`follow`) and applies what
//! it consumes in sequence order, so a node shows only what the log holds, never id 11
//! before id 10, and an id means the same event on every node.
//!
//! - [`stream`]: the stream's settings and the check of a stream found in place.
//! - [`subject`]: topics as subjects, the event type header, the epoch.
//! - `follow`: the node's consumer, and the backplane's health.
//! - `read`: catch-up reads for cursors behind the windows, and eviction.
//!
//! Real network I/O and tasks of its own: cluster mode never runs inside a simulation.

mod follow;
mod read;
pub mod stream;
pub mod subject;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind};
use bytes::Bytes;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::{AppendError, Appended, Follower, Log, LogFuture, NewEvent};
use crate::metrics::Metrics;
use crate::store::{ReadOutcome, Recovery, StoreError, StoreFuture, TailLimits};

/// Events before the end of the stream a starting node consumes to fill its windows.
pub const PRELOAD_EVENTS: u64 = 10_000;
/// How long a JetStream request (a publish's acknowledgement, a stream lookup) may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long closing waits for the client's buffered protocol messages to go out.
pub const CLOSE_FLUSH: Duration = Duration::from_secs(1);
/// Catch-up reads at once: a reconnect herd cannot flood JetStream's API.
pub const CONCURRENT_READS: usize = 8;
/// How long a starting node waits for the stream to become available.
pub const START_PATIENCE: Duration = Duration::from_secs(15);

/// How to reach the stream.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// NATS servers, comma-separated (`nats://127.0.0.1:4222,…`).
    pub urls: String,
    /// The stream and what it must be.
    pub stream: stream::Wanted,
    /// A `.creds` file (JWT and NKey seed).
    pub credentials: Option<PathBuf>,
    /// A token.
    pub token: Option<String>,
    /// CA certificates to trust (PEM); implies TLS.
    pub tls_ca: Option<PathBuf>,
    /// A client certificate and key (PEM) for mutual TLS.
    pub tls_client: Option<(PathBuf, PathBuf)>,
}

/// The stream and this node's place in it.
#[derive(Debug, Clone)]
pub struct NatsLog {
    inner: Arc<Inner>,
}

struct Inner {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: jetstream::stream::Stream,
    name: String,
    epoch: u32,
    /// Where this node starts following: every event above it is applied in order.
    start_after: u64,
    /// The stream's last sequence when the node started: caught up once applied.
    end_at_start: u64,
    /// The highest sequence applied.
    applied: AtomicU64,
    /// The highest sequence the node knows the stream holds.
    known_end: AtomicU64,
    /// The backplane answered its last probe and the node is caught up.
    healthy: AtomicBool,
    /// Per topic, the highest id a read found retention removed.
    trimmed: Mutex<BTreeMap<Arc<str>, u64>>,
    /// Catch-up reads running at once (each makes a consumer on the stream).
    readers: tokio::sync::Semaphore,
    /// The stream was deleted and made again since this node started.
    replaced: AtomicBool,
    follower: OnceLock<Weak<dyn Follower>>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsLog").field("stream", &self.name).field("epoch", &self.epoch).finish_non_exhaustive()
    }
}

/// Tries `attempt` every 250 ms until it succeeds or `patience` has passed since the
/// first try; then its last error.
async fn patiently<T, F, Fut>(patience: Duration, mut attempt: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + patience;
    loop {
        match attempt().await {
            Ok(found) => return Ok(found),
            Err(reason) if Instant::now() >= deadline => return Err(reason),
            Err(reason) => {
                tracing::warn!(%reason, "the JetStream stream is not available yet; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

/// Why cluster mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum NatsStartError {
    /// NATS could not be reached or refused the connection.
    #[error("cannot connect to NATS at {urls}: {reason}")]
    Connect { urls: String, reason: String },
    /// The stream could not be looked up or created.
    #[error("JetStream stream {name}: {reason}")]
    Stream { name: String, reason: String },
    /// The stream in place is less durable than cluster mode promises.
    #[error("{0}")]
    Weaker(String),
}

impl NatsLog {
    /// Connects, creates the stream if it is missing, and checks it if it is present.
    pub async fn connect(options: NatsOptions, metrics: Arc<Metrics>) -> Result<NatsLog, NatsStartError> {
        let connect_error = |reason: String| NatsStartError::Connect { urls: options.urls.clone(), reason };
        let mut connect = async_nats::ConnectOptions::new()
            .name("sse-server")
            .connection_timeout(REQUEST_TIMEOUT)
            .max_reconnects(None::<usize>);
        if let Some(path) = &options.credentials {
            connect =
                connect.credentials_file(path).await.map_err(|e| connect_error(format!("{}: {e}", path.display())))?;
        }
        if let Some(token) = &options.token {
            connect = connect.token(token.clone());
        }
        if let Some(ca) = &options.tls_ca {
            connect = connect.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let Some((cert, key)) = &options.tls_client {
            connect = connect.add_client_certificate(cert.clone(), key.clone()).require_tls(true);
        }
        let urls: Vec<&str> = options.urls.split(',').map(str::trim).filter(|u| !u.is_empty()).collect();
        let client = connect.connect(urls).await.map_err(|e| connect_error(e.to_string()))?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(REQUEST_TIMEOUT);
        let wanted = &options.stream;
        let stream_error = |reason: String| NatsStartError::Stream { name: wanted.name.clone(), reason };
        // A cluster that is still electing its leaders answers with errors for a moment.
        let (stream, info) = patiently(START_PATIENCE, || find_or_create(&js, wanted)).await.map_err(stream_error)?;
        if let Some(why) = wanted.refuse(&info.config) {
            return Err(NatsStartError::Weaker(why));
        }
        let epoch = subject::epoch(info.created.unix_timestamp_nanos());
        let (first, last) = (info.state.first_sequence, info.state.last_sequence);
        let start_after = last.saturating_sub(PRELOAD_EVENTS).max(first.saturating_sub(1));
        info!(
            stream = %wanted.name,
            epoch = format_args!("{epoch:08x}"),
            first_id = first,
            last_id = last,
            replicas = info.config.num_replicas,
            "following the JetStream stream"
        );
        let inner = Inner {
            client,
            js,
            stream,
            name: wanted.name.clone(),
            epoch,
            start_after,
            end_at_start: last,
            applied: AtomicU64::new(start_after),
            known_end: AtomicU64::new(last),
            healthy: AtomicBool::new(false),
            trimmed: Mutex::new(BTreeMap::new()),
            readers: tokio::sync::Semaphore::new(CONCURRENT_READS),
            replaced: AtomicBool::new(false),
            follower: OnceLock::new(),
            metrics,
            stop: CancellationToken::new(),
        };
        Ok(NatsLog { inner: Arc::new(inner) })
    }
}

/// The stream, created if it is missing, and its state.
async fn find_or_create(
    js: &jetstream::Context,
    wanted: &stream::Wanted,
) -> Result<(jetstream::stream::Stream, jetstream::stream::Info), String> {
    let mut stream = match js.get_stream(&wanted.name).await {
        Ok(stream) => stream,
        Err(error)
            if matches!(error.kind(), jetstream::context::GetStreamErrorKind::JetStream(e)
                if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
        {
            info!(stream = %wanted.name, replicas = wanted.replicas, "creating the JetStream stream");
            js.create_stream(wanted.config()).await.map_err(|e| e.to_string())?
        }
        Err(error) => return Err(error.to_string()),
    };
    let info = stream.info().await.map_err(|e| e.to_string())?.clone();
    Ok((stream, info))
}

impl Inner {
    fn follower(&self) -> Option<Arc<dyn Follower>> {
        self.follower.get().and_then(Weak::upgrade)
    }

    fn note_end(&self, seq: u64) {
        self.known_end.fetch_max(seq, Ordering::AcqRel);
    }

    fn caught_up(&self) -> bool {
        self.applied.load(Ordering::Acquire) >= self.end_at_start
    }

    fn lag(&self) -> u64 {
        self.known_end.load(Ordering::Acquire).saturating_sub(self.applied.load(Ordering::Acquire))
    }
}

impl Log for NatsLog {
    fn start(&self, follower: Weak<dyn Follower>, _tail: TailLimits) -> Recovery {
        let _ = self.inner.follower.set(follower);
        tokio::spawn(follow::run(self.inner.clone()));
        tokio::spawn(follow::probe(self.inner.clone()));
        // The windows fill as the node consumes from `start_after`; anything older is read
        // from the stream.
        Recovery { epoch: self.inner.epoch, floor: self.inner.start_after, tail: Vec::new(), keys: Vec::new() }
    }

    fn append(&self, event: NewEvent) -> LogFuture<Appended> {
        let inner = self.inner.clone();
        Box::pin(async move {
            if inner.client.connection_state() != async_nats::connection::State::Connected {
                return Err(AppendError::Store(StoreError::Io("NATS is not connected".into())));
            }
            if inner.replaced.load(Ordering::Acquire) {
                return Err(AppendError::Store(StoreError::Io("the stream was made again: restart this node".into())));
            }
            let subject = subject::of_topic(&inner.name, &event.topic);
            let mut message =
                jetstream::message::PublishMessage::build().payload(Bytes::from(String::from(event.data)));
            if let Some(event_type) = &event.event_type {
                message = message.header(subject::EVENT_TYPE_HEADER, event_type.as_ref());
            }
            if let Some(key) = &event.key {
                message = message.message_id(key.as_ref());
            }
            let began = Instant::now();
            let acked = async { inner.js.send_publish(subject, message).await?.await }.await;
            drop(event.hold);
            match acked {
                Ok(ack) => {
                    inner.metrics.log_appended(began.elapsed());
                    inner.note_end(ack.sequence);
                    Ok(Appended { seq: ack.sequence, duplicate: ack.duplicate })
                }
                // No answer in time: JetStream may still have stored it (the client
                // resends across reconnects), so the publisher is told so.
                Err(error) if error.kind() == PublishErrorKind::TimedOut => {
                    tracing::warn!(%error, "JetStream did not acknowledge in time; the publish is answered 503");
                    Err(AppendError::Store(StoreError::Uncertain(error.to_string())))
                }
                Err(error) => {
                    // Every publish during an election gets here: the probe logs the outage once.
                    tracing::debug!(%error, "JetStream refused; the publish is answered 503");
                    Err(AppendError::Store(StoreError::Io(format!("JetStream refused: {error}"))))
                }
            }
        })
    }

    fn read(&self, topics: Vec<Arc<str>>, after: u64, upto: u64) -> StoreFuture<ReadOutcome> {
        Box::pin(read::range(self.inner.clone(), topics, after, upto))
    }

    fn trimmed_upto(&self, topic: &str) -> u64 {
        self.inner.trimmed.lock().unwrap_or_else(|p| p.into_inner()).get(topic).copied().unwrap_or(0)
    }

    fn assigned_upto(&self) -> Option<u64> {
        // Other nodes append too: an id of this epoch is taken at its word.
        None
    }

    fn is_healthy(&self) -> bool {
        self.inner.healthy.load(Ordering::Acquire)
    }

    fn close(&self) -> StoreFuture<()> {
        let inner = self.inner.clone();
        Box::pin(async move {
            inner.stop.cancel();
            // Nothing to make durable here (JetStream acknowledged every append); a flush
            // to a NATS that is gone would wait for it for ever.
            let _ = tokio::time::timeout(CLOSE_FLUSH, inner.client.flush()).await;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn start_up_retries_for_its_patience_and_no_longer() {
        let tries = Cell::new(0);
        let third_time_lucky = patiently(Duration::from_secs(15), || {
            tries.set(tries.get() + 1);
            std::future::ready(if tries.get() < 3 { Err(format!("no leader {}", tries.get())) } else { Ok(7) })
        });
        assert_eq!(third_time_lucky.await, Ok(7));
        assert_eq!(tries.get(), 3);

        tries.set(0);
        let started = Instant::now();
        let never = patiently(Duration::from_secs(15), || {
            tries.set(tries.get() + 1);
            std::future::ready(Err::<(), _>(format!("no leader {}", tries.get())))
        });
        assert_eq!(never.await, Err("no leader 61".to_owned()), "tries every 250 ms for 15 s, then its last error");
        assert_eq!(started.elapsed(), Duration::from_secs(15));
    }
}
