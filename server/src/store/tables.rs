//! The disk store's file: its redb tables, the state the store and its writer thread
//! share, and the steps both take on the file (open, scan, guard against a panicking
//! reader). Both `disk` and `writer` import this; it imports neither.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::Semaphore;
use tracing::warn;

use super::backend::{StoreFile, WriteFaults};
use super::{codec, StoreError};

pub(super) const EVENTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("events");
pub(super) const TRIMMED: TableDefinition<&str, u64> = TableDefinition::new("trimmed");
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Idempotency keys by id: (when stored, in wall-clock ms; the key). Kept for the dedup
/// window, pruned from the oldest.
pub(super) const KEYS: TableDefinition<u64, (u64, &str)> = TableDefinition::new("keys");
pub(super) const META_EPOCH: &str = "epoch";
pub(super) const META_RESERVED: &str = "reserved";

/// redb's page cache.
const CACHE_BYTES: usize = 64 << 20;

/// What the writer thread and readers share.
#[derive(Debug)]
pub(super) struct DiskShared {
    /// `None` while the writer reopens the file after an I/O error, and once closed.
    pub db: RwLock<Option<Database>>,
    pub trimmed: Mutex<BTreeMap<Arc<str>, u64>>,
    pub healthy: AtomicBool,
    pub path: PathBuf,
    pub faults: Arc<WriteFaults>,
    pub readers: Semaphore,
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Opens the database file; redb repairs an interrupted commit here. A panic inside the
/// database library on a damaged file becomes an error, never a crash loop.
pub(super) fn open_database(path: &Path, faults: &Arc<WriteFaults>) -> Result<Database, StoreError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| StoreError::Io(format!("cannot open {}: {e}", path.display())))?;
    let backend = StoreFile::new(file, faults.clone()).map_err(|e| StoreError::Io(e.to_string()))?;
    let opened = catch_unwind(AssertUnwindSafe(|| {
        let mut builder = Database::builder();
        builder.set_cache_size(CACHE_BYTES).set_repair_callback(|_| {
            warn!("the event store was not closed cleanly; rolling back to its last durable commit")
        });
        builder.create_with_backend(backend)
    }));
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(redb::DatabaseError::Storage(redb::StorageError::Io(e)))) => Err(StoreError::io(&e)),
        Ok(Err(e)) => Err(StoreError::Corrupt(format!("cannot open {}: {e}", path.display()))),
        Err(_) => {
            Err(StoreError::Corrupt(format!("{} is damaged beyond repair (the reader panicked)", path.display())))
        }
    }
}

/// What a topic holds on disk.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct TopicStats {
    pub count: u64,
    pub bytes: u64,
}

pub(super) struct Scan {
    pub stats: BTreeMap<Arc<str>, TopicStats>,
    pub last_seq: u64,
    pub reserved: u64,
    pub damaged: Vec<(Arc<str>, u64)>,
}

/// Runs `work` on the database file, turning a panic inside the database library (a
/// damaged page it did not expect) into an error: a damaged file is never a crash loop.
pub(super) fn guarded<T>(work: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    catch_unwind(AssertUnwindSafe(work))
        .unwrap_or_else(|_| Err(StoreError::Corrupt("the database file is damaged (its reader panicked)".into())))
}

/// Walks every event, verifying checksums and counting what each topic holds.
pub(super) fn scan(db: &Database) -> Result<Scan, StoreError> {
    let txn = db.begin_read().map_err(redb_error)?;
    let events = txn.open_table(EVENTS).map_err(redb_error)?;
    let meta = txn.open_table(META).map_err(redb_error)?;
    let reserved = meta.get(META_RESERVED).map_err(redb_error)?.map_or(0, |v| v.value());
    let mut out = Scan { stats: BTreeMap::new(), last_seq: 0, reserved, damaged: Vec::new() };
    let mut current: Option<Arc<str>> = None;
    for entry in events.iter().map_err(redb_error)? {
        let (key, value) = entry.map_err(redb_error)?;
        let (topic, seq) = key.value();
        if current.as_deref() != Some(topic) {
            current = Some(Arc::from(topic));
        }
        let topic = current.clone().expect("set above");
        match codec::decode(&topic, seq, value.value()) {
            Some(decoded) => {
                let stats = out.stats.entry(topic).or_default();
                stats.count += 1;
                stats.bytes += decoded.frame.len() as u64;
            }
            None => out.damaged.push((topic, seq)),
        }
        // A damaged event's id was handed out all the same.
        out.last_seq = out.last_seq.max(seq);
    }
    Ok(out)
}

/// Maps any redb error to a store error (a full disk keeps its own kind).
pub(super) fn redb_error(error: impl Into<redb::Error>) -> StoreError {
    match error.into() {
        redb::Error::Io(e) => StoreError::io(&e),
        redb::Error::Corrupted(what) => StoreError::Corrupt(what),
        other => StoreError::Io(other.to_string()),
    }
}
