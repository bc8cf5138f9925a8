//! The writer thread's behaviour, seen through a disk store: group commits, interval
//! syncs, idle wakes that write nothing, the id reservation across a crash, and
//! retention's budget, its passes over idle topics (by age, in turn) and key pruning.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use redb::{ReadableDatabase, ReadableTableMetadata};

use super::{is_expired, MAX_TRIM_PER_COMMIT, TICK};
use crate::store::backend::WriteFaults;
use crate::store::disk::DiskStore;
use crate::store::tables::{lock, KEYS};
use crate::store::testing::{open_in, open_with, options, record, runtime, NO_TAIL};
use crate::store::{FsyncPolicy, Record, Retention, Store, SEQ_RESERVATION};

/// How long a test waits for the writer to do what it owes.
const PATIENCE: Duration = Duration::from_secs(15);

/// Waits (at most [`PATIENCE`]) until `done` returns something, and returns it.
async fn eventually<T>(what: &str, mut done: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = done() {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Appends that queue while the writer commits share the next commit and its sync
/// (group commit), rather than a commit each.
#[test]
fn queued_appends_share_a_commit() {
    let dir = tempfile::tempdir().unwrap();
    let faults = WriteFaults::new();
    runtime().block_on(async {
        let store = open_with(dir.path(), FsyncPolicy::Always, faults.clone());
        store.recover(NO_TAIL);
        let before = faults.syncs();
        store.append(record(1, "t")).await.unwrap();
        let per_commit = faults.syncs() - before;
        assert!(per_commit > 0, "a commit under `always` syncs");
        // Each append is queued when called. The file is held meanwhile, so the writer
        // waits at its first commit with whatever it took, and the rest are all queued
        // before its next commit: two commits (a sync or two each, as the file grows).
        let before = faults.syncs();
        let held = store.shared().db.write().unwrap();
        let queued: Vec<_> = (2..102).map(|seq| store.append(record(seq, "t"))).collect();
        drop(held);
        for acked in queued {
            acked.await.unwrap();
        }
        let commits = (faults.syncs() - before) / per_commit;
        assert!(commits <= 10, "100 queued appends took {commits} commits");
        store.close().await.unwrap();
    });
}

/// Under `--fsync interval:<d>` an append acknowledged before a sync is synced once `<d>`
/// has passed since the last sync, not at the writer's next idle wake (a second).
#[test]
fn an_interval_policy_syncs_an_acknowledged_append_once_its_interval_is_up() {
    const EVERY: Duration = Duration::from_millis(50);
    /// Ten intervals, half the idle wake.
    const BOUND: Duration = Duration::from_millis(500);
    let dir = tempfile::tempdir().unwrap();
    let faults = WriteFaults::new();
    runtime().block_on(async {
        let store = open_with(dir.path(), FsyncPolicy::Interval(EVERY), faults.clone());
        store.recover(NO_TAIL);
        store.append(record(1, "t")).await.unwrap(); // Synced: it reserves ids.
        let synced = faults.syncs();
        let acked = tokio::time::Instant::now();
        store.append(record(2, "t")).await.unwrap();
        assert_eq!(faults.syncs(), synced, "acknowledged before its sync");
        while faults.syncs() == synced {
            assert!(acked.elapsed() < BOUND, "not synced {BOUND:?} after the append, interval {EVERY:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        store.close().await.unwrap();
    });
}

/// With nothing to write, the writer's idle wakes commit nothing and so never sync the
/// file.
#[test]
fn an_idle_store_does_not_sync() {
    /// Longer than the writer's idle wake: at least one falls inside it.
    const WINDOW: Duration = Duration::from_millis(1500);
    assert!(WINDOW > TICK);
    let dir = tempfile::tempdir().unwrap();
    let faults = WriteFaults::new();
    runtime().block_on(async {
        let store = open_with(dir.path(), FsyncPolicy::Always, faults.clone());
        store.recover(NO_TAIL);
        store.append(record(1, "t")).await.unwrap();
        let synced = faults.syncs();
        tokio::time::sleep(WINDOW).await;
        assert_eq!(faults.syncs(), synced, "syncs in {WINDOW:?} with nothing to write");
        store.close().await.unwrap();
    });
}

/// After a crash new ids start past the durable reservation: the last id inside it does
/// not reserve anew, the first past it does.
#[test]
fn after_a_crash_ids_start_past_the_reservation_which_only_an_id_past_it_renews() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime();
    let floor_after_crash_with = |seqs: &[u64]| {
        runtime.block_on(async {
            let store = open_in(dir.path());
            store.recover(NO_TAIL);
            for &seq in seqs {
                store.append(record(seq, "t")).await.unwrap();
            }
            store.kill().await.unwrap();
        });
        let store = open_in(dir.path());
        let floor = store.recover(NO_TAIL).floor;
        runtime.block_on(store.close()).unwrap();
        floor
    };
    let reserved = 1 + SEQ_RESERVATION;
    assert_eq!(floor_after_crash_with(&[1, reserved]), reserved);
    assert_eq!(floor_after_crash_with(&[reserved + 1]), reserved + 1 + SEQ_RESERVATION);
}

/// A store in `dir` under an interval policy that never syncs by itself, with `retention`.
fn open_retaining(dir: &std::path::Path, retention: Retention) -> DiskStore {
    let never = FsyncPolicy::Interval(Duration::from_secs(3600));
    DiskStore::open(options(dir, never, retention, WriteFaults::new())).unwrap()
}

/// Queues all of `records` at once (a few commits) and waits for every acknowledgement.
async fn append_all(store: &DiskStore, records: impl Iterator<Item = Record>) {
    let queued: Vec<_> = records.map(|record| store.append(record)).collect();
    for acked in queued {
        acked.await.unwrap();
    }
}

/// Retention removes at most `MAX_TRIM_PER_COMMIT` events in one commit, shared by the
/// topics in their order: after a restart with a smaller window, the first idle wake
/// trims the first topic's whole excess and the rest of its budget from the second.
#[test]
fn one_commit_trims_at_most_its_budget_across_topics() {
    const EXCESS: u64 = 3000;
    const KEPT: u64 = 100;
    let dir = tempfile::tempdir().unwrap();
    let keeping = |events| Retention { events, bytes: 1 << 30, age: Duration::from_secs(3600) };
    let runtime = runtime();
    let each = EXCESS + KEPT;
    runtime.block_on(async {
        let store = open_retaining(dir.path(), keeping(u64::MAX));
        store.recover(NO_TAIL);
        // Topic a holds ids 1..=each, b the next `each`.
        append_all(&store, (1..=2 * each).map(|seq| record(seq, if seq <= each { "a" } else { "b" }))).await;
        store.close().await.unwrap();
    });
    let store = open_retaining(dir.path(), keeping(KEPT));
    store.recover(NO_TAIL);
    let first_trims = runtime.block_on(eventually("a trim", || {
        let trimmed = lock(&store.shared().trimmed).clone();
        (!trimmed.is_empty()).then_some(trimmed)
    }));
    let budget = MAX_TRIM_PER_COMMIT as u64;
    let expected = BTreeMap::from([(Arc::from("a"), EXCESS), (Arc::from("b"), each + budget - EXCESS)]);
    assert_eq!(first_trims, expected, "the first commit's trims: up to these ids");
    runtime.block_on(store.close()).unwrap();
}

/// Age retention empties topics nobody writes to any more: the idle wakes check them,
/// each second even while a long `--fsync interval` has writes left to sync.
#[test]
fn age_retention_empties_idle_topics_under_a_long_fsync_interval() {
    const AGE: Duration = Duration::from_millis(300);
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let store = open_retaining(dir.path(), Retention { events: 100, bytes: 1 << 20, age: AGE });
        store.recover(NO_TAIL);
        // The first commit reserves ids and so syncs; the next leaves its writes unsynced.
        store.append(record(1, "a")).await.unwrap();
        append_all(&store, [record(2, "b"), record(3, "a")].into_iter()).await;
        let emptied = || store.trimmed_upto("a") == 3 && store.trimmed_upto("b") == 2;
        eventually("both topics emptied by age", || emptied().then_some(())).await;
        store.close().await.unwrap();
    });
}

#[test]
fn an_event_exactly_as_old_as_the_age_limit_is_kept() {
    assert!(!is_expired(10_000, 9_000, 1_000));
    assert!(is_expired(10_001, 9_000, 1_000));
    assert!(!is_expired(5, 9_000, 1_000), "a stamp from the future (the clock went back) is young");
}

/// Retention's passes over topics nobody writes to check a bounded number each (256),
/// taking turns: after a restart with a smaller window, every topic is trimmed to it,
/// however many there are.
#[test]
fn retention_passes_reach_every_topic_in_turn() {
    /// More topics than one pass checks.
    const TOPICS: u64 = 300;
    let dir = tempfile::tempdir().unwrap();
    let keeping = |events| Retention { events, bytes: 1 << 30, age: Duration::from_secs(3600) };
    let topic = |seq: u64| format!("t{:03}", (seq - 1) % TOPICS);
    let runtime = runtime();
    runtime.block_on(async {
        let store = open_retaining(dir.path(), keeping(2));
        store.recover(NO_TAIL);
        // Two events a topic: ids s and s + TOPICS.
        append_all(&store, (1..=2 * TOPICS).map(|seq| record(seq, &topic(seq)))).await;
        store.close().await.unwrap();
    });
    let store = open_retaining(dir.path(), keeping(1));
    store.recover(NO_TAIL);
    runtime.block_on(eventually("every topic trimmed to one event", || {
        (1..=TOPICS).all(|seq| store.trimmed_upto(&topic(seq)) == seq).then_some(())
    }));
    runtime.block_on(store.close()).unwrap();
}

/// Idempotency keys older than the dedup window are removed from the file, not only left
/// unread: the idle wakes prune them.
#[test]
fn expired_idempotency_keys_are_pruned_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let never = FsyncPolicy::Interval(Duration::from_secs(3600));
    let retention = Retention { events: 100, bytes: 1 << 20, age: Duration::from_secs(3600) };
    let mut options = options(dir.path(), never, retention, WriteFaults::new());
    options.dedup_window = Duration::from_millis(200);
    runtime().block_on(async {
        let store = DiskStore::open(options).unwrap();
        store.recover(NO_TAIL);
        let keyed = |seq| Record { key: Some(Arc::from(format!("k{seq}"))), ..record(seq, "t") };
        append_all(&store, (1..=3).map(keyed)).await;
        let keys_in_file = || {
            let guard = store.shared().db.read().unwrap();
            let txn = guard.as_ref().unwrap().begin_read().unwrap();
            txn.open_table(KEYS).unwrap().len().unwrap()
        };
        assert_eq!(keys_in_file(), 3);
        eventually("the expired keys pruned", || (keys_in_file() == 0).then_some(())).await;
        store.close().await.unwrap();
    });
}
