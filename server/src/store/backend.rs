//! The file under the disk store: redb's file backend with a switch that makes writes fail
//! as a full disk would, so the write-error path can be tested for real. Locking is the
//! store's own (`LOCK` in the data directory), so this backend takes no file locks.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use redb::backends::FileBackend;
use redb::StorageBackend;

/// Write faults to inject into a disk store, and a count of its syncs (tests only; never
/// set in production).
#[derive(Debug, Default)]
pub struct WriteFaults {
    disk_full: AtomicBool,
    syncs: AtomicU64,
}

impl WriteFaults {
    /// A switch, off.
    pub fn new() -> Arc<WriteFaults> {
        Arc::new(WriteFaults::default())
    }

    /// While on, every write, resize and sync fails with `StorageFull`.
    pub fn set_disk_full(&self, on: bool) {
        self.disk_full.store(on, Ordering::SeqCst);
    }

    /// How many times the file was synced to the disk (`fdatasync`) successfully.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::SeqCst)
    }

    fn check(&self) -> io::Result<()> {
        if self.disk_full.load(Ordering::SeqCst) {
            return Err(io::Error::from(io::ErrorKind::StorageFull));
        }
        Ok(())
    }
}

#[derive(Debug)]
pub(super) struct StoreFile {
    inner: FileBackend,
    faults: Arc<WriteFaults>,
}

impl StoreFile {
    pub fn new(file: File, faults: Arc<WriteFaults>) -> Result<StoreFile, redb::DatabaseError> {
        Ok(StoreFile { inner: FileBackend::new(file)?, faults })
    }
}

impl StorageBackend for StoreFile {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.faults.check()?;
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.faults.check()?;
        self.inner.sync_data()?;
        self.faults.syncs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.faults.check()?;
        self.inner.write(offset, data)
    }

    fn close(&self) -> io::Result<()> {
        self.inner.close()
    }
}
