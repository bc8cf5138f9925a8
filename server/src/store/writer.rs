//! The disk store's writer thread: group commit and retention.
//!
//! Appends queue on a channel; the thread takes everything queued (up to a bound) into one
//! redb transaction, commits it once, then acknowledges every append in it, so concurrent
//! publishers share one sync. Retention rides on the same commits, a bounded number of
//! removals at a time, so it never stalls a publish. After an I/O error (a full disk) the
//! batch is refused, the file is reopened and rescanned, and writing resumes when it can.

use std::collections::BTreeMap;
use std::fs::File;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use redb::{Durability, ReadableTable};
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::tables::{
    guarded, lock, open_database, redb_error, scan, DiskShared, TopicStats, EVENTS, KEYS, META, META_RESERVED, TRIMMED,
};
use super::{codec, FsyncPolicy, Record, Retention, StoreError, SEQ_RESERVATION};

/// Most appends in one commit.
const MAX_GROUP: usize = 4096;
/// Most events retention removes in one commit.
const MAX_TRIM_PER_COMMIT: usize = 4096;
/// Topics whose oldest event's age is checked per pass.
const AGE_CHECKS_PER_PASS: usize = 256;
/// How often the thread wakes with nothing to do (age retention, interval syncs).
const TICK: Duration = Duration::from_secs(1);
/// Pause between attempts to reopen the file after an error.
const REOPEN_BACKOFF: Duration = Duration::from_millis(200);

type Ack = oneshot::Sender<Result<(), StoreError>>;

/// What the writer thread is asked to do.
pub(super) enum Command {
    /// Store an event; answer once it is durable under the policy.
    Append(Record, Ack),
    /// Sync, narrow the id reservation to the highest id handed out, close the file, answer.
    Close(Ack),
    /// Stop as SIGKILL stops the process: no commit, no clean shutdown of the file (the
    /// next open repairs it), the lock released. Tests of crash recovery use it.
    Kill(Ack),
}

/// The writer's view of the store, changed only after a successful commit.
#[derive(Debug)]
pub(super) struct WriterState {
    policy: FsyncPolicy,
    retention: Retention,
    stats: BTreeMap<std::sync::Arc<str>, TopicStats>,
    last_seq: u64,
    reserved: u64,
    /// The highest id this process started above or was asked to store: every id it may
    /// have acknowledged lies at or below it. A clean close narrows the reservation down
    /// to it and no further, so ids a crash took back before this process started, or a
    /// reopen rolled back, are never handed out again.
    handed_out: u64,
    /// Non-durable commits since the last durable one (interval policy).
    unsynced: bool,
    #[allow(clippy::disallowed_types)] // a real-time thread outside simulations
    last_sync: std::time::Instant,
    /// Where the next age-retention pass starts.
    age_cursor: Option<Arc<str>>,
    /// How long idempotency keys are kept.
    pub dedup_window: Duration,
}

impl WriterState {
    pub fn new(
        policy: FsyncPolicy,
        retention: Retention,
        stats: BTreeMap<Arc<str>, TopicStats>,
        last_seq: u64,
        reserved: u64,
        floor: u64,
    ) -> WriterState {
        #[allow(clippy::disallowed_types)]
        let last_sync = std::time::Instant::now();
        let handed_out = floor.max(last_seq).max(reserved);
        WriterState {
            policy,
            retention,
            stats,
            last_seq,
            reserved,
            handed_out,
            unsynced: false,
            last_sync,
            age_cursor: None,
            dedup_window: Duration::ZERO,
        }
    }

    pub fn topics(&self) -> Vec<Arc<str>> {
        self.stats.keys().cloned().collect()
    }

    pub fn total_events(&self) -> u64 {
        self.stats.values().map(|s| s.count).sum()
    }

    fn sync_due(&self) -> bool {
        match self.policy {
            FsyncPolicy::Always => true,
            FsyncPolicy::Interval(every) => self.unsynced && self.last_sync.elapsed() >= every,
        }
    }

    /// Until the next idle wake: a sync that falls due sooner brings it forward.
    fn wait(&self) -> Duration {
        match self.policy {
            FsyncPolicy::Interval(every) if self.unsynced => every.saturating_sub(self.last_sync.elapsed()).min(TICK),
            _ => TICK,
        }
    }
}

/// Starts the writer thread; it holds the data directory's lock until it ends.
pub(super) fn spawn(
    shared: Arc<DiskShared>,
    state: WriterState,
    lock_file: File,
) -> Result<mpsc::Sender<Command>, StoreError> {
    let (commands, inbox) = mpsc::channel();
    // A thread of its own keeps blocking syncs off the runtime; the disk store never runs
    // inside a simulation.
    std::thread::Builder::new()
        .name("sse-store-writer".into())
        .spawn(move || run(&shared, state, &inbox, lock_file))
        .map_err(|e| StoreError::Io(format!("cannot start the store writer: {e}")))?;
    Ok(commands)
}

fn run(shared: &DiskShared, mut state: WriterState, inbox: &mpsc::Receiver<Command>, lock_file: File) {
    let mut closing: Option<Option<Ack>> = None;
    let mut killed: Option<Ack> = None;
    loop {
        let mut appends: Vec<(Record, Ack)> = Vec::new();
        let mut take =
            |command: Command, appends: &mut Vec<(Record, Ack)>, closing: &mut Option<Option<Ack>>| match command {
                Command::Append(record, ack) => appends.push((record, ack)),
                Command::Close(ack) => *closing = Some(Some(ack)),
                Command::Kill(ack) => killed = Some(ack),
            };
        match inbox.recv_timeout(state.wait()) {
            Ok(command) => take(command, &mut appends, &mut closing),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => closing = Some(None),
        }
        while closing.is_none() && appends.len() < MAX_GROUP {
            match inbox.try_recv() {
                Ok(command @ Command::Kill(_)) => {
                    take(command, &mut appends, &mut closing);
                    break;
                }
                Ok(command) => take(command, &mut appends, &mut closing),
                Err(_) => break,
            }
        }
        if let Some(ack) = killed {
            // The file is left as a killed process leaves it: never shut down cleanly.
            std::mem::forget(shared.db.write().unwrap_or_else(|p| p.into_inner()).take());
            drop(lock_file);
            warn!(refused = appends.len(), "event store killed (a simulated crash)");
            let _ = ack.send(Ok(()));
            return;
        }
        let records: Vec<&Record> = appends.iter().map(|(record, _)| record).collect();
        let result = guarded(|| commit(shared, &mut state, &records, closing.is_some()));
        match &result {
            Ok(()) => shared.healthy.store(true, Ordering::SeqCst),
            Err(error) => {
                shared.healthy.store(false, Ordering::SeqCst);
                warn!(%error, refused = appends.len(), "the event store could not commit; publishes get 503");
                reopen(shared, &mut state);
            }
        }
        for (_, ack) in appends {
            let _ = ack.send(result.clone());
        }
        if let Some(ack) = closing {
            *shared.db.write().unwrap_or_else(|p| p.into_inner()) = None;
            drop(lock_file);
            info!("event store closed");
            if let Some(ack) = ack {
                let _ = ack.send(result);
            }
            return;
        }
    }
}

/// Wall-clock milliseconds, stamped on each stored event for age retention.
pub(super) fn now_ms() -> u64 {
    #[allow(clippy::disallowed_types)] // ages must survive restarts: wall clock, outside simulations
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |d| d.as_millis() as u64)
}

/// Removals one commit makes in a topic.
struct Trim {
    topic: Arc<str>,
    seqs: Vec<u64>,
    bytes: u64,
}

fn commit(shared: &DiskShared, state: &mut WriterState, records: &[&Record], closing: bool) -> Result<(), StoreError> {
    let guard = shared.db.read().unwrap_or_else(|p| p.into_inner());
    let Some(db) = guard.as_ref() else {
        return Err(StoreError::Io("the event store is reopening after a write error".into()));
    };
    let now = now_ms();
    let max_seq = records.last().map_or(state.last_seq, |r| r.seq);
    // Counted before the commit: an id is handed out once a publish asked for it, whether
    // or not this commit succeeds.
    state.handed_out = state.handed_out.max(max_seq);
    let reserved = if closing {
        state.handed_out
    } else if max_seq > state.reserved {
        max_seq + SEQ_RESERVATION
    } else {
        state.reserved
    };
    let mut added: BTreeMap<Arc<str>, TopicStats> = BTreeMap::new();
    for record in records {
        let entry = added.entry(record.topic.clone()).or_default();
        entry.count += 1;
        entry.bytes += record.frame.len() as u64;
    }
    let age_candidates = age_candidates(state, &added);
    let mut txn = db.begin_write().map_err(redb_error)?;
    let mut trims = Vec::new();
    let pruned_keys;
    {
        let mut events = txn.open_table(EVENTS).map_err(redb_error)?;
        for record in records {
            let value = codec::encode(&record.topic, record.seq, now, &record.frame);
            events.insert((&*record.topic, record.seq), value.as_slice()).map_err(redb_error)?;
        }
        let mut budget = MAX_TRIM_PER_COMMIT;
        for topic in added.keys().chain(age_candidates.iter()) {
            if budget == 0 {
                break;
            }
            let held = state.stats.get(topic).copied().unwrap_or_default();
            let new = added.get(topic).copied().unwrap_or_default();
            let (count, bytes) = (held.count + new.count, held.bytes + new.bytes);
            let trim = plan_trim(&events, topic, count, bytes, &state.retention, now, budget)?;
            if let Some(trim) = trim {
                for seq in &trim.seqs {
                    events.remove((&**topic, *seq)).map_err(redb_error)?;
                }
                budget -= trim.seqs.len();
                trims.push(trim);
            }
        }
        let mut trimmed = txn.open_table(TRIMMED).map_err(redb_error)?;
        for trim in &trims {
            let upto = *trim.seqs.last().expect("a trim removes something");
            let before = trimmed.get(&*trim.topic).map_err(redb_error)?.map_or(0, |v| v.value());
            trimmed.insert(&*trim.topic, before.max(upto)).map_err(redb_error)?;
        }
        let mut keys = txn.open_table(KEYS).map_err(redb_error)?;
        for record in records {
            if let Some(key) = &record.key {
                keys.insert(record.seq, (now, &**key)).map_err(redb_error)?;
            }
        }
        pruned_keys = prune_keys(&mut keys, now, state.dedup_window)?;
        if reserved != state.reserved {
            txn.open_table(META).map_err(redb_error)?.insert(META_RESERVED, reserved).map_err(redb_error)?;
        }
    }
    let nothing_to_write = records.is_empty() && trims.is_empty() && pruned_keys == 0 && reserved == state.reserved;
    // An id past the durable reservation must not be acknowledged before the reservation
    // is on disk, whatever the policy.
    let durable = closing || state.sync_due() || reserved > state.reserved;
    if nothing_to_write && !(durable && state.unsynced) {
        txn.abort().map_err(redb_error)?;
        return Ok(());
    }
    txn.set_durability(if durable { Durability::Immediate } else { Durability::None })
        .map_err(|e| StoreError::Io(e.to_string()))?;
    txn.commit().map_err(redb_error)?;

    for (topic, new) in added {
        let stats = state.stats.entry(topic).or_default();
        stats.count += new.count;
        stats.bytes += new.bytes;
    }
    let mut trimmed_mirror = lock(&shared.trimmed);
    for trim in trims {
        let upto = *trim.seqs.last().expect("a trim removes something");
        let stats = state.stats.entry(trim.topic.clone()).or_default();
        stats.count -= trim.seqs.len() as u64;
        stats.bytes -= trim.bytes;
        if stats.count == 0 {
            state.stats.remove(&trim.topic);
        }
        let entry = trimmed_mirror.entry(trim.topic).or_default();
        *entry = (*entry).max(upto);
    }
    state.last_seq = max_seq;
    state.reserved = reserved;
    if durable {
        state.unsynced = false;
        #[allow(clippy::disallowed_types)]
        let now = std::time::Instant::now();
        state.last_sync = now;
    } else {
        state.unsynced = true;
    }
    Ok(())
}

/// Removes keys stored longer ago than `window`, oldest first, a bounded number per
/// commit; returns how many.
fn prune_keys(keys: &mut redb::Table<u64, (u64, &str)>, now_ms: u64, window: Duration) -> Result<usize, StoreError> {
    let since = now_ms.saturating_sub(u64::try_from(window.as_millis()).unwrap_or(u64::MAX));
    let mut old = Vec::new();
    for entry in keys.iter().map_err(redb_error)? {
        let (seq, value) = entry.map_err(redb_error)?;
        if value.value().0 >= since || old.len() == MAX_TRIM_PER_COMMIT {
            break;
        }
        old.push(seq.value());
    }
    for seq in &old {
        keys.remove(*seq).map_err(redb_error)?;
    }
    Ok(old.len())
}

/// Topics (besides those just written) retention checks this pass, taken round-robin so
/// every topic is visited: for their oldest events' age, and for limits lowered since
/// they were written.
fn age_candidates(state: &mut WriterState, added: &BTreeMap<Arc<str>, TopicStats>) -> Vec<Arc<str>> {
    let start = state.age_cursor.clone();
    let after = state.stats.keys().filter(|t| start.as_ref().is_none_or(|s| *t > s));
    let mut picked: Vec<Arc<str>> = after.chain(state.stats.keys()).take(AGE_CHECKS_PER_PASS).cloned().collect();
    picked.sort();
    picked.dedup();
    state.age_cursor = picked.last().cloned();
    picked.retain(|t| !added.contains_key(t));
    picked
}

/// Which of `topic`'s oldest events retention removes now (the newest always stays for
/// the count and byte limits; age can empty a topic).
fn plan_trim(
    events: &redb::Table<(&str, u64), &[u8]>,
    topic: &Arc<str>,
    mut count: u64,
    mut bytes: u64,
    retention: &Retention,
    now_ms: u64,
    budget: usize,
) -> Result<Option<Trim>, StoreError> {
    let max_age_ms = u64::try_from(retention.age.as_millis()).unwrap_or(u64::MAX);
    let expired = |time: u64| is_expired(now_ms, time, max_age_ms);
    let over = |count: u64, bytes: u64| count > 1 && (count > retention.events || bytes > retention.bytes);
    let mut trim = Trim { topic: topic.clone(), seqs: Vec::new(), bytes: 0 };
    for entry in events.range((&**topic, 0)..=(&**topic, u64::MAX)).map_err(redb_error)? {
        if trim.seqs.len() == budget {
            break;
        }
        let (key, value) = entry.map_err(redb_error)?;
        let (time, len) = codec::peek(value.value());
        if !over(count, bytes) && !expired(time) {
            break;
        }
        trim.seqs.push(key.value().1);
        trim.bytes += len as u64;
        count -= 1;
        bytes -= len as u64;
    }
    Ok((!trim.seqs.is_empty()).then_some(trim))
}

/// Whether an event stamped at `stamp_ms` is past `max_age_ms` at `now_ms`: one exactly
/// that old is kept.
fn is_expired(now_ms: u64, stamp_ms: u64, max_age_ms: u64) -> bool {
    now_ms.saturating_sub(stamp_ms) > max_age_ms
}

/// After an I/O error redb refuses further work until reopened: reopen (rolling back to the
/// last durable commit) and rescan so the counts match the file again.
fn reopen(shared: &DiskShared, state: &mut WriterState) {
    let mut guard = shared.db.write().unwrap_or_else(|p| p.into_inner());
    *guard = None;
    std::thread::sleep(REOPEN_BACKOFF);
    let reopened =
        open_database(&shared.path, &shared.faults).and_then(|db| guarded(|| scan(&db)).map(|scan| (db, scan)));
    match reopened {
        Ok((db, scan)) => {
            state.stats = scan.stats;
            state.last_seq = scan.last_seq;
            state.reserved = scan.reserved;
            state.unsynced = false;
            *guard = Some(db);
        }
        Err(error) => warn!(%error, "cannot reopen the event store yet; will retry"),
    }
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
