//! What the disk store's tests share: a store opened in a directory under a policy, a
//! runtime to drive it, and an event to append.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::backend::WriteFaults;
use super::disk::{DiskOptions, DiskStore};
use super::{FsyncPolicy, Record, Retention, TailLimits};

/// Recovery that reads nothing back (the tests read what they need).
pub(super) const NO_TAIL: TailLimits = TailLimits { events: 0, bytes: 0, total_bytes: 0, keys_within: Duration::ZERO };

/// A store in `dir` under `--fsync always`.
pub(super) fn open_in(dir: &Path) -> DiskStore {
    open_with(dir, FsyncPolicy::Always, WriteFaults::new())
}

/// A store in `dir` keeping 100 events a topic for an hour, keys for a minute.
pub(super) fn open_with(dir: &Path, fsync: FsyncPolicy, faults: Arc<WriteFaults>) -> DiskStore {
    let retention = Retention { events: 100, bytes: 1 << 20, age: Duration::from_secs(3600) };
    DiskStore::open(options(dir, fsync, retention, faults)).unwrap()
}

/// The options [`open_with`] uses, with `retention`.
pub(super) fn options(dir: &Path, fsync: FsyncPolicy, retention: Retention, faults: Arc<WriteFaults>) -> DiskOptions {
    DiskOptions { dir: dir.to_owned(), fsync, retention, new_epoch: 7, dedup_window: Duration::from_secs(60), faults }
}

pub(super) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Event `seq` in `topic`, with a short frame and no idempotency key.
pub(super) fn record(seq: u64, topic: &str) -> Record {
    Record { seq, topic: Arc::from(topic), frame: Bytes::from("data: x\n\n"), key: None }
}
