//! The disk store, on redb: one database file in `--data-dir`, guarded by a `LOCK` file.
//!
//! Layout: `events` maps (topic, id) to the checksummed frame (`codec`), `trimmed` maps a
//! topic to the highest id retention removed, `meta` holds the epoch and the id
//! reservation. Appends go to one writer thread (`writer`) that commits them in groups;
//! reads run on the blocking pool, a few at a time, each in its own snapshot.
//!
//! Opening recovers: redb rolls an interrupted commit back to the last durable one, and
//! a scan checks every event's checksum. A damaged event is cut out and its topic marked
//! trimmed past it, so a client resuming across it is told (`reset: evicted`) rather than
//! handed a gap or garbage.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable};
use tokio::sync::{oneshot, Semaphore};
use tracing::{info, warn};

use super::backend::WriteFaults;
use super::tables::{
    guarded, lock, open_database, redb_error, scan, DiskShared, EVENTS, KEYS, META, META_EPOCH, TRIMMED,
};
use super::writer::{self, Command, WriterState};
use super::{
    codec, merge_slices, newest_within, take_slice, FsyncPolicy, ReadOutcome, Record, Recovery, Retention, Store,
    StoreError, StoreFuture, TailLimits,
};

/// Store reads running at once; the rest wait, so a reconnect herd cannot flood the
/// blocking pool or hold many read snapshots.
const CONCURRENT_READS: usize = 8;
/// How to open a disk store.
#[derive(Debug, Clone)]
pub struct DiskOptions {
    /// The data directory (created when missing).
    pub dir: PathBuf,
    /// When a publish is acknowledged.
    pub fsync: FsyncPolicy,
    /// What each topic keeps.
    pub retention: Retention,
    /// The epoch a new store starts with; an existing store keeps its own.
    pub new_epoch: u32,
    /// How long idempotency keys are kept.
    pub dedup_window: Duration,
    /// Injected write faults (tests).
    pub faults: Arc<WriteFaults>,
}

/// The embedded durable store.
#[derive(Debug)]
pub struct DiskStore {
    shared: Arc<DiskShared>,
    commands: Mutex<Option<mpsc::Sender<Command>>>,
    opened: Mutex<Option<Opened>>,
}

/// Facts found at open, handed to [`Store::recover`].
#[derive(Debug)]
struct Opened {
    epoch: u32,
    floor: u64,
    topics: Vec<Arc<str>>,
}

impl DiskStore {
    /// Opens (or creates) the store in `options.dir`, recovering from whatever state the
    /// last process left it in.
    pub fn open(options: DiskOptions) -> Result<DiskStore, StoreError> {
        let dir = &options.dir;
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Io(format!("cannot create the data directory {}: {e}", dir.display())))?;
        let lock_file = take_lock(dir)?;
        let path = dir.join("events.redb");
        let db = open_database(&path, &options.faults)?;
        let (epoch, scan, trimmed) = guarded(|| {
            let epoch = init_meta(&db, options.new_epoch)?;
            let scan = scan(&db)?;
            if !scan.damaged.is_empty() {
                cut_damaged(&db, &scan.damaged)?;
            }
            Ok((epoch, scan, read_trimmed(&db)?))
        })?;
        // Every id a previous process may have acknowledged lies at or below the floor:
        // the durable reservation covers them, and ids retention removed or a damaged cut
        // took out still count as handed out.
        let floor = scan.last_seq.max(scan.reserved).max(trimmed.values().copied().max().unwrap_or(0));
        let mut state =
            WriterState::new(options.fsync, options.retention, scan.stats, scan.last_seq, scan.reserved, floor);
        state.dedup_window = options.dedup_window;
        let topics = state.topics();
        info!(
            path = %path.display(),
            epoch = format_args!("{epoch:08x}"),
            events = state.total_events(),
            topics = topics.len(),
            last_id = scan.last_seq,
            next_id = floor + 1,
            "event store opened"
        );
        let shared = Arc::new(DiskShared {
            db: RwLock::new(Some(db)),
            trimmed: Mutex::new(trimmed),
            healthy: AtomicBool::new(true),
            path,
            faults: options.faults.clone(),
            readers: Semaphore::new(CONCURRENT_READS),
        });
        let commands = writer::spawn(shared.clone(), state, lock_file)?;
        Ok(DiskStore {
            shared,
            commands: Mutex::new(Some(commands)),
            opened: Mutex::new(Some(Opened { epoch, floor, topics })),
        })
    }

    /// What the writer shares with readers (the writer's tests hold its file, read its
    /// trim points).
    #[cfg(test)]
    pub(super) fn shared(&self) -> &DiskShared {
        &self.shared
    }

    /// Stops the store as SIGKILL would stop its process: nothing more is committed and
    /// the file is not shut down cleanly, so the next open recovers it as after a crash
    /// (under `--fsync interval`, unsynced events are gone). For crash tests inside one
    /// process; every later call fails with [`StoreError::Closed`].
    #[doc(hidden)]
    pub fn kill(&self) -> StoreFuture<()> {
        self.last_command(Command::Kill)
    }

    /// Sends the writer its last command (close or kill) and waits for its answer; the
    /// store takes no command after it.
    fn last_command(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<(), StoreError>>) -> Command,
    ) -> StoreFuture<()> {
        let (done, answered) = oneshot::channel();
        let sent = self.send(command(done));
        lock(&self.commands).take();
        Box::pin(async move {
            sent?;
            answered.await.unwrap_or(Err(StoreError::Closed))
        })
    }

    fn send(&self, command: Command) -> Result<(), StoreError> {
        match lock(&self.commands).as_ref() {
            Some(commands) => commands.send(command).map_err(|_| StoreError::Closed),
            None => Err(StoreError::Closed),
        }
    }
}

fn take_lock(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::Io(format!("cannot open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked(dir.display().to_string())),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Io(format!("cannot lock {}: {e}", path.display()))),
    }
}

/// Reads the epoch (writing `new_epoch` into a new store).
fn init_meta(db: &Database, new_epoch: u32) -> Result<u32, StoreError> {
    let txn = db.begin_write().map_err(redb_error)?;
    let epoch = {
        let mut meta = txn.open_table(META).map_err(redb_error)?;
        let existing = meta.get(META_EPOCH).map_err(redb_error)?.map(|v| v.value());
        match existing {
            Some(epoch) => {
                u32::try_from(epoch).map_err(|_| StoreError::Corrupt("the stored epoch is invalid".into()))?
            }
            None => {
                meta.insert(META_EPOCH, u64::from(new_epoch)).map_err(redb_error)?;
                new_epoch
            }
        }
    };
    txn.open_table(EVENTS).map_err(redb_error)?;
    txn.open_table(TRIMMED).map_err(redb_error)?;
    txn.open_table(KEYS).map_err(redb_error)?;
    txn.commit().map_err(redb_error)?;
    Ok(epoch)
}

/// Removes damaged events and marks their topics trimmed past them.
fn cut_damaged(db: &Database, damaged: &[(Arc<str>, u64)]) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(redb_error)?;
    {
        let mut events = txn.open_table(EVENTS).map_err(redb_error)?;
        let mut trimmed = txn.open_table(TRIMMED).map_err(redb_error)?;
        for (topic, seq) in damaged {
            events.remove((&**topic, *seq)).map_err(redb_error)?;
            let before = trimmed.get(&**topic).map_err(redb_error)?.map_or(0, |v| v.value());
            trimmed.insert(&**topic, before.max(*seq)).map_err(redb_error)?;
        }
    }
    txn.commit().map_err(redb_error)?;
    let first = &damaged[0];
    warn!(
        dropped = damaged.len(),
        first_topic = %first.0,
        first_id = first.1,
        "cut damaged events out of the event store; clients resuming across them are sent reset: evicted"
    );
    Ok(())
}

fn read_trimmed(db: &Database) -> Result<BTreeMap<Arc<str>, u64>, StoreError> {
    let txn = db.begin_read().map_err(redb_error)?;
    let table = txn.open_table(TRIMMED).map_err(redb_error)?;
    let mut out = BTreeMap::new();
    for entry in table.iter().map_err(redb_error)? {
        let (topic, upto) = entry.map_err(redb_error)?;
        out.insert(Arc::from(topic.value()), upto.value());
    }
    Ok(out)
}

fn read_blocking(shared: &DiskShared, topics: &[Arc<str>], after: u64, upto: u64) -> Result<ReadOutcome, StoreError> {
    let guard = shared.db.read().unwrap_or_else(|p| p.into_inner());
    let db = guard.as_ref().ok_or(StoreError::Closed)?;
    let txn = db.begin_read().map_err(redb_error)?;
    let trimmed = txn.open_table(TRIMMED).map_err(redb_error)?;
    let events = txn.open_table(EVENTS).map_err(redb_error)?;
    let mut slices = Vec::with_capacity(topics.len());
    for topic in topics {
        if trimmed.get(&**topic).map_err(redb_error)?.is_some_and(|v| v.value() > after) {
            return Ok(ReadOutcome::Evicted);
        }
        // A read error or a damaged event ends the read with an error: never as if the
        // range had ended there.
        let mut failed = None;
        let range = events.range((&**topic, after + 1)..=(&**topic, upto)).map_err(redb_error)?;
        let frames = range.map_while(|entry| {
            let (key, value) = entry.map_err(|e| failed = Some(redb_error(e))).ok()?;
            let seq = key.value().1;
            match codec::decode(topic, seq, value.value()) {
                Some(decoded) => Some((seq, Bytes::copy_from_slice(decoded.frame))),
                None => {
                    failed = Some(StoreError::Corrupt(format!("event {seq} of topic {topic} fails its checksum")));
                    None
                }
            }
        });
        let slice = take_slice(frames);
        if let Some(error) = failed {
            return Err(error);
        }
        slices.push(slice);
    }
    Ok(merge_slices(slices, upto))
}

fn newest_blocking(shared: &DiskShared, topics: &[Arc<str>], limits: TailLimits) -> Result<Vec<Record>, StoreError> {
    let guard = shared.db.read().unwrap_or_else(|p| p.into_inner());
    let db = guard.as_ref().ok_or(StoreError::Closed)?;
    let txn = db.begin_read().map_err(redb_error)?;
    let events = txn.open_table(EVENTS).map_err(redb_error)?;
    let mut per_topic = BTreeMap::new();
    // Reading stops once the total is reached: topics left out are read from the store
    // when a client resumes on them.
    let mut total = 0;
    for topic in topics {
        if total >= limits.total_bytes {
            break;
        }
        let mut newest = Vec::new();
        let mut bytes = 0;
        for entry in events.range((&**topic, 0)..=(&**topic, u64::MAX)).map_err(redb_error)?.rev() {
            let (key, value) = entry.map_err(redb_error)?;
            let seq = key.value().1;
            let Some(decoded) = codec::decode(topic, seq, value.value()) else { break };
            bytes += decoded.frame.len();
            if newest.len() == limits.events || bytes > limits.bytes {
                break;
            }
            newest.push(Record { seq, topic: topic.clone(), frame: Bytes::copy_from_slice(decoded.frame), key: None });
        }
        newest.reverse();
        total += newest.iter().map(|r| r.frame.len()).sum::<usize>();
        per_topic.insert(topic.clone(), newest);
    }
    Ok(newest_within(per_topic, limits))
}

/// Idempotency keys stored less than `within` ago, with their ids.
fn keys_blocking(shared: &DiskShared, within: Duration) -> Result<Vec<(Arc<str>, u64)>, StoreError> {
    let guard = shared.db.read().unwrap_or_else(|p| p.into_inner());
    let db = guard.as_ref().ok_or(StoreError::Closed)?;
    let txn = db.begin_read().map_err(redb_error)?;
    let keys = txn.open_table(KEYS).map_err(redb_error)?;
    let since = writer::now_ms().saturating_sub(u64::try_from(within.as_millis()).unwrap_or(u64::MAX));
    let mut out = Vec::new();
    for entry in keys.iter().map_err(redb_error)? {
        let (seq, value) = entry.map_err(redb_error)?;
        let (stored_ms, key) = value.value();
        if stored_ms >= since {
            out.push((Arc::from(key), seq.value()));
        }
    }
    Ok(out)
}

impl Store for DiskStore {
    fn recover(&self, limits: TailLimits) -> Recovery {
        let Some(opened) = lock(&self.opened).take() else { return Recovery::default() };
        let tail = newest_blocking(&self.shared, &opened.topics, limits).unwrap_or_else(|error| {
            warn!(%error, "cannot read the newest events back; windows start empty and resumes read the store");
            Vec::new()
        });
        let keys = keys_blocking(&self.shared, limits.keys_within).unwrap_or_else(|error| {
            warn!(%error, "cannot read the idempotency keys back; retries of earlier publishes store anew");
            Vec::new()
        });
        Recovery { epoch: opened.epoch, floor: opened.floor, tail, keys }
    }

    fn append(&self, record: Record) -> StoreFuture<()> {
        let (done, acked) = oneshot::channel();
        let sent = self.send(Command::Append(record, done));
        Box::pin(async move {
            sent?;
            acked.await.unwrap_or(Err(StoreError::Closed))
        })
    }

    fn read(&self, topics: Vec<Arc<str>>, after: u64, upto: u64) -> StoreFuture<ReadOutcome> {
        let shared = self.shared.clone();
        Box::pin(async move {
            let _permit = shared.readers.acquire().await.map_err(|_| StoreError::Closed)?;
            let reader = shared.clone();
            // The disk store never runs inside a simulation: its reads may block a pool thread.
            #[allow(clippy::disallowed_methods)]
            let read = tokio::task::spawn_blocking(move || read_blocking(&reader, &topics, after, upto));
            read.await.map_err(|_| StoreError::Io("a store read was cancelled".into()))?
        })
    }

    fn trimmed_upto(&self, topic: &str) -> u64 {
        lock(&self.shared.trimmed).get(topic).copied().unwrap_or(0)
    }

    fn is_healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::SeqCst)
    }

    fn close(&self) -> StoreFuture<()> {
        self.last_command(Command::Close)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{open_in, open_with, runtime, NO_TAIL};

    /// Under `--fsync always` a publish is acknowledged only after the file was synced;
    /// under `interval` appends do not wait for a sync each.
    #[test]
    fn an_append_is_acknowledged_after_a_sync_only_under_fsync_always() {
        for (fsync, synced_each) in
            [(FsyncPolicy::Always, true), (FsyncPolicy::Interval(Duration::from_secs(3600)), false)]
        {
            let dir = tempfile::tempdir().unwrap();
            let faults = WriteFaults::new();
            runtime().block_on(async {
                let store = open_with(dir.path(), fsync, faults.clone());
                store.recover(NO_TAIL);
                let mut synced_appends = 0;
                for seq in 1..=5 {
                    let before = faults.syncs();
                    let frame = Bytes::from(format!("data: {seq}\n\n"));
                    store.append(Record { seq, topic: Arc::from("t"), frame, key: None }).await.unwrap();
                    synced_appends += usize::from(faults.syncs() > before);
                }
                assert_eq!(synced_appends == 5, synced_each, "{fsync:?}: {synced_appends} of 5 appends synced");
                store.close().await.unwrap();
            });
        }
    }

    /// An event whose stored checksum no longer matches (a flipped bit redb's own checks
    /// let through) is cut out at open, and its topic is marked trimmed past it: a cursor
    /// before it is told it was evicted, one after it reads on.
    #[test]
    fn a_damaged_event_is_cut_out_at_open_and_resuming_across_it_is_evicted() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = runtime();
        runtime.block_on(async {
            let store = open_in(dir.path());
            store.recover(NO_TAIL);
            for seq in 1..=3 {
                let frame = Bytes::from(format!("data: {seq}\n\n"));
                store.append(Record { seq, topic: Arc::from("t"), frame, key: None }).await.unwrap();
            }
            store.close().await.unwrap();
        });
        {
            let db = Database::create(dir.path().join("events.redb")).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut events = txn.open_table(EVENTS).unwrap();
                let mut value = events.get(("t", 2)).unwrap().unwrap().value().to_vec();
                *value.last_mut().unwrap() ^= 1;
                events.insert(("t", 2), value.as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        runtime.block_on(async {
            let store = open_in(dir.path());
            assert_eq!(store.trimmed_upto("t"), 2, "the damaged event's topic is trimmed past it");
            let t = || vec![Arc::from("t")];
            assert!(matches!(store.read(t(), 1, 3).await.unwrap(), ReadOutcome::Evicted));
            match store.read(t(), 2, 3).await.unwrap() {
                ReadOutcome::Events { events, .. } => assert_eq!(events, [(3, Bytes::from("data: 3\n\n"))]),
                ReadOutcome::Evicted => panic!("evicted after the cut"),
            }
            store.close().await.unwrap();
        });
    }
}
