//! The stores on their own: property tests over random publish sequences, retention
//! limits and restarts, ids across crashes and clean restarts (memory and disk), and
//! damage to the disk store's file at seeded offsets.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use sse_server::rng::SeededRng;
use sse_server::store::{
    DiskOptions, DiskStore, FsyncPolicy, MemoryStore, ReadOutcome, Record, Retention, Store, StoreError, TailLimits,
    WriteFaults, SEQ_RESERVATION,
};

const EPOCH: u32 = 0x5eed;
const TOPICS: [&str; 3] = ["a", "b", "c"];
const NO_TAIL: TailLimits = TailLimits { events: 0, bytes: 0, total_bytes: 0, keys_within: Duration::ZERO };

fn open(dir: &Path, retention: Retention) -> Result<DiskStore, StoreError> {
    open_with(dir, retention, FsyncPolicy::Interval(Duration::from_millis(2)))
}

fn open_with(dir: &Path, retention: Retention, fsync: FsyncPolicy) -> Result<DiskStore, StoreError> {
    DiskStore::open(DiskOptions {
        dir: dir.to_owned(),
        fsync,
        retention,
        new_epoch: EPOCH,
        dedup_window: Duration::from_secs(60),
        faults: WriteFaults::new(),
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Everything a topic holds, read the way a resuming stream reads it: from the point
/// retention trimmed to, in store-sized steps.
async fn read_all(store: &dyn Store, topic: &str, upto: u64) -> Vec<(u64, Bytes)> {
    let mut after = store.trimmed_upto(topic);
    let mut out = Vec::new();
    while after < upto {
        match store.read(vec![Arc::from(topic)], after, upto).await.expect("a read") {
            ReadOutcome::Events { events, complete_upto } => {
                assert!(complete_upto > after || !events.is_empty(), "reads make progress");
                after = events.last().map_or(complete_upto, |(seq, _)| *seq);
                out.extend(events);
            }
            ReadOutcome::Evicted => panic!("evicted while reading from the trim point"),
        }
    }
    out
}

#[derive(Debug, Clone)]
enum Op {
    Publish { topic: usize, len: usize },
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..TOPICS.len(), 1usize..200).prop_map(|(topic, len)| Op::Publish { topic, len }),
        1 => Just(Op::Restart),
    ]
}

/// What the store must hold: per topic, the longest suffix of what was acknowledged that
/// fits the limits (never less than the newest event), and the last id trimmed.
#[derive(Default)]
struct Model {
    topics: BTreeMap<&'static str, (History, u64)>,
}

/// A topic's events by id.
type History = Vec<(u64, Bytes)>;

impl Model {
    fn acknowledge(&mut self, topic: &'static str, seq: u64, frame: Bytes, retention: &Retention) {
        let (events, trimmed) = self.topics.entry(topic).or_default();
        events.push((seq, frame));
        loop {
            let bytes: u64 = events.iter().map(|(_, f)| f.len() as u64).sum();
            if events.len() <= 1 || (events.len() as u64 <= retention.events && bytes <= retention.bytes) {
                break;
            }
            *trimmed = events.remove(0).0;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// What is read back equals what was acknowledged and retained, in order, across
    /// restarts; ids never go back; the epoch stays.
    #[test]
    fn what_is_read_back_is_what_was_acknowledged_and_retained(
        ops in proptest::collection::vec(op(), 1..80),
        keep_events in 1u64..12,
        keep_bytes in 150u64..1500,
    ) {
        let retention = Retention { events: keep_events, bytes: keep_bytes, age: Duration::from_secs(3600) };
        let dir = tempfile::tempdir().unwrap();
        runtime().block_on(async {
            let mut store = open(dir.path(), retention).unwrap();
            let mut recovered = store.recover(NO_TAIL);
            prop_assert_eq!(recovered.epoch, EPOCH);
            let mut next = recovered.floor + 1;
            let mut model = Model::default();
            let mut last_issued = 0;
            for op in ops.iter().chain([Op::Restart].iter()) {
                match op {
                    Op::Publish { topic, len } => {
                        let topic = TOPICS[*topic];
                        let frame = Bytes::from(format!("id: {next}\ndata: {}\n\n", "x".repeat(*len)));
                        let record = Record { seq: next, topic: Arc::from(topic), frame: frame.clone(), key: None };
                        store.append(record).await.unwrap();
                        model.acknowledge(topic, next, frame, &retention);
                        last_issued = next;
                        next += 1;
                    }
                    Op::Restart => {
                        store.close().await.unwrap();
                        store = open(dir.path(), retention).unwrap();
                        recovered = store.recover(NO_TAIL);
                        prop_assert_eq!(recovered.epoch, EPOCH);
                        prop_assert!(recovered.floor >= last_issued, "ids never go back");
                        next = recovered.floor + 1;
                        for (topic, (events, trimmed)) in &model.topics {
                            prop_assert_eq!(store.trimmed_upto(topic), *trimmed, "trim point of {}", topic);
                            let read = read_all(&store, topic, recovered.floor).await;
                            prop_assert_eq!(&read, events, "history of {}", topic);
                        }
                    }
                }
            }
            store.close().await.unwrap();
            Ok(())
        })?;
    }
}

/// A store's life across boots, as the crash tests drive it.
#[derive(Debug, Clone)]
enum Life {
    /// Acknowledge this many events.
    Publish(usize),
    /// A crash (SIGKILL, or a power cut for the memory store), then a new boot.
    Crash,
    /// A clean close, then a new boot.
    CleanRestart,
}

fn life() -> impl Strategy<Value = Life> {
    prop_oneof![
        3 => (1usize..4).prop_map(Life::Publish),
        1 => Just(Life::Crash),
        1 => Just(Life::CleanRestart),
    ]
}

/// Syncs nothing on its own during a test: only reservation commits are durable.
const NEVER: FsyncPolicy = FsyncPolicy::Interval(Duration::from_secs(3600));

/// One of the two stores, booted and stopped the way a server process would.
enum Booted {
    Memory(MemoryStore),
    Disk(DiskStore, std::path::PathBuf),
}

impl Booted {
    fn store(&self) -> &dyn Store {
        match self {
            Booted::Memory(store) => store,
            Booted::Disk(store, _) => store,
        }
    }

    /// Stops this boot (a crash or a clean close) and starts the next one on what survived.
    async fn reboot(self, crash: bool) -> Booted {
        match self {
            Booted::Memory(store) => {
                if crash {
                    store.crash();
                } else {
                    store.close().await.unwrap();
                }
                Booted::Memory(store)
            }
            Booted::Disk(store, dir) => {
                if crash {
                    store.kill().await.unwrap();
                } else {
                    store.close().await.unwrap();
                }
                drop(store);
                Booted::Disk(open_with(&dir, KEEP_ALL, NEVER).unwrap(), dir)
            }
        }
    }
}

const KEEP_ALL: Retention = Retention { events: 1 << 20, bytes: 1 << 30, age: Duration::from_secs(3600) };

/// Drives `life` on a store the way the hub does (ids from the recovered floor up) and
/// checks the invariant: within an epoch an id is acknowledged for at most one event,
/// ever. Returns how many acknowledged events crashes took back (the interval policy's
/// documented loss), so callers can check that the crashes were real.
async fn live(mut booted: Booted, life: &[Life]) -> Result<usize, TestCaseError> {
    let mut highest_acked = 0u64;
    let mut acked_since_sync: Vec<u64> = Vec::new();
    let mut lost = 0;
    let mut next = booted.store().recover(NO_TAIL).floor + 1;
    for step in life.iter().chain([Life::CleanRestart].iter()) {
        match step {
            Life::Publish(n) => {
                for _ in 0..*n {
                    prop_assert!(
                        next > highest_acked,
                        "id {} handed out again (acknowledged up to {})",
                        next,
                        highest_acked
                    );
                    let frame = Bytes::from(format!("id: {EPOCH:08x}-{next}\ndata: e\n\n"));
                    booted.store().append(Record { seq: next, topic: Arc::from("a"), frame, key: None }).await.unwrap();
                    highest_acked = next;
                    acked_since_sync.push(next);
                    next += 1;
                }
            }
            Life::Crash | Life::CleanRestart => {
                let crash = matches!(step, Life::Crash);
                booted = booted.reboot(crash).await;
                let recovered = booted.store().recover(NO_TAIL);
                prop_assert_eq!(recovered.epoch, EPOCH);
                prop_assert!(
                    recovered.floor >= highest_acked,
                    "after a {}, the floor {} is below the acknowledged id {}",
                    if crash { "crash" } else { "clean restart" },
                    recovered.floor,
                    highest_acked
                );
                if crash {
                    let kept: Vec<u64> =
                        read_all(booted.store(), "a", recovered.floor).await.iter().map(|e| e.0).collect();
                    lost += acked_since_sync.iter().filter(|seq| !kept.contains(seq)).count();
                }
                acked_since_sync.clear();
                next = recovered.floor + 1;
            }
        }
    }
    booted.store().close().await.unwrap();
    Ok(lost)
}

/// The sequence a nightly swarm seed found: a crash takes back unsynced events, a clean
/// restart publishes nothing, and the boot after it must not hand those ids out again
/// (a client that saw them would resume past the new events).
#[test]
fn a_clean_restart_after_a_crash_never_hands_out_the_ids_the_crash_took_back() {
    let steps = [Life::Publish(3), Life::Crash, Life::CleanRestart, Life::Publish(3)];
    runtime().block_on(async {
        let memory = MemoryStore::new(EPOCH, 1 << 20, 1 << 30, NEVER);
        let lost = live(Booted::Memory(memory), &steps).await.unwrap();
        assert_eq!(lost, 3, "memory store: the power cut took back all three (nothing synced)");
        let dir = tempfile::tempdir().unwrap();
        let disk = Booted::Disk(open_with(dir.path(), KEEP_ALL, NEVER).unwrap(), dir.path().to_owned());
        let lost = live(disk, &steps).await.unwrap();
        assert_eq!(lost, 2, "disk store: the kill took back the two events after the reservation commit");
        // The floor stays where the crash left it: the reservation is not narrowed below it.
        let store = open_with(dir.path(), KEEP_ALL, NEVER).unwrap();
        assert!(store.recover(NO_TAIL).floor > SEQ_RESERVATION, "the reservation made before the crash holds");
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Any sequence of publishes, crashes and clean restarts, on either store under the
    /// interval policy: no id is acknowledged for two events, and the floor after every
    /// boot is at or above every id acknowledged before it.
    #[test]
    fn no_id_is_acknowledged_twice_across_crashes_and_clean_restarts(
        steps in proptest::collection::vec(life(), 1..24),
    ) {
        runtime().block_on(async {
            live(Booted::Memory(MemoryStore::new(EPOCH, 1 << 20, 1 << 30, NEVER)), &steps).await?;
            let dir = tempfile::tempdir().unwrap();
            let disk = Booted::Disk(open_with(dir.path(), KEEP_ALL, NEVER).unwrap(), dir.path().to_owned());
            live(disk, &steps).await?;
            Ok::<(), TestCaseError>(())
        })?;
    }
}

/// Writes 4 topics × 50 events, one commit each (so the file's layout is the same every
/// run), and closes the store; returns every frame by id.
fn write_reference(dir: &Path) -> BTreeMap<u64, (String, Bytes)> {
    let retention = Retention { events: 1000, bytes: 1 << 20, age: Duration::from_secs(3600) };
    runtime().block_on(async {
        let store = open_with(dir, retention, FsyncPolicy::Always).unwrap();
        store.recover(NO_TAIL);
        let mut written = BTreeMap::new();
        for seq in 1..=200u64 {
            let topic = format!("t{}", seq % 4);
            let frame = Bytes::from(format!("id: {EPOCH:08x}-{seq}\ndata: event {seq} {}\n\n", "y".repeat(40)));
            store
                .append(Record { seq, topic: Arc::from(topic.as_str()), frame: frame.clone(), key: None })
                .await
                .unwrap();
            written.insert(seq, (topic, frame));
        }
        store.close().await.unwrap();
        written
    })
}

/// Damages a copy of the store's file (flipped bytes or a cut) at seeded offsets; opening
/// it either fails with a store error or succeeds, and then everything served is exactly
/// what was written: damage is cut out, never handed to a client.
#[test]
fn a_damaged_file_fails_to_open_cleanly_or_serves_only_intact_events() {
    let reference = tempfile::tempdir().unwrap();
    let written = write_reference(reference.path());
    let original = std::fs::read(reference.path().join("events.redb")).unwrap();
    let seeds: u64 = std::env::var("SSE_CORRUPTION_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(48);
    let (mut refused, mut opened, mut served_total) = (0, 0, 0);
    for seed in 0..seeds {
        let rng = SeededRng::new(seed);
        let mut damaged = original.clone();
        if seed % 3 == 0 {
            damaged.truncate(rng.up_to(original.len() as u64 - 1) as usize);
        } else {
            for _ in 0..1 + rng.up_to(3) {
                let at = rng.up_to(original.len() as u64 - 1) as usize;
                damaged[at] ^= 1 << rng.up_to(7);
            }
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("events.redb"), &damaged).unwrap();
        let retention = Retention { events: 1000, bytes: 1 << 20, age: Duration::from_secs(3600) };
        let store = match open(dir.path(), retention) {
            Err(error) => {
                assert!(!error.to_string().is_empty());
                refused += 1;
                continue;
            }
            Ok(store) => store,
        };
        opened += 1;
        runtime().block_on(async {
            let recovered = store.recover(TailLimits {
                events: 1000,
                bytes: 1 << 20,
                total_bytes: 1 << 30,
                keys_within: Duration::ZERO,
            });
            for record in &recovered.tail {
                assert_eq!(written.get(&record.seq).map(|w| &w.1), Some(&record.frame), "seed {seed}: tail");
            }
            for topic in ["t0", "t1", "t2", "t3"] {
                let mut after = store.trimmed_upto(topic);
                loop {
                    match store.read(vec![Arc::from(topic)], after, 200).await {
                        Ok(ReadOutcome::Events { events, complete_upto }) => {
                            for (seq, frame) in &events {
                                let (expected_topic, expected) = &written[seq];
                                assert_eq!((expected_topic.as_str(), expected), (topic, frame), "seed {seed}: {seq}");
                                served_total += 1;
                            }
                            let next = events.last().map_or(complete_upto, |(seq, _)| *seq);
                            if next >= 200 || next <= after {
                                break;
                            }
                            after = next;
                        }
                        Ok(ReadOutcome::Evicted) => panic!("seed {seed}: evicted from the trim point"),
                        // A damaged page found while reading is an error, not data.
                        Err(_) => break,
                    }
                }
            }
            let _ = store.close().await;
        });
    }
    eprintln!(
        "{seeds} damaged copies: {refused} refused to open, {opened} opened, {served_total} intact events served"
    );
    assert!(opened > 0 && refused + opened == seeds);
}

/// The windows' refill at start stops exactly at each limit: a topic whose newest events
/// fill the byte limit exactly comes back whole, a byte less drops its oldest; the event
/// and total limits hold the same way.
#[test]
fn the_tail_handed_back_at_start_stops_exactly_at_its_limits() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let store = open_with(dir.path(), KEEP_ALL, FsyncPolicy::Always).unwrap();
        store.recover(NO_TAIL);
        for seq in 1..=8u64 {
            let topic = if seq <= 4 { "a" } else { "b" };
            let frame = Bytes::from(format!("{seq:0>99}\n"));
            assert_eq!(frame.len(), 100);
            store.append(Record { seq, topic: Arc::from(topic), frame, key: None }).await.unwrap();
        }
        store.close().await.unwrap();
    });
    let tail = |events: usize, bytes: usize, total_bytes: usize| -> Vec<u64> {
        let store = open(dir.path(), KEEP_ALL).unwrap();
        let limits = TailLimits { events, bytes, total_bytes, keys_within: Duration::ZERO };
        let seqs = store.recover(limits).tail.iter().map(|r| r.seq).collect();
        runtime().block_on(store.close()).unwrap();
        seqs
    };
    assert_eq!(tail(10, 400, 1 << 20), [1, 2, 3, 4, 5, 6, 7, 8], "400 bytes a topic: each whole");
    assert_eq!(tail(10, 399, 1 << 20), [2, 3, 4, 6, 7, 8], "a byte less: the oldest of each stays out");
    assert_eq!(tail(3, 1 << 20, 1 << 20), [2, 3, 4, 6, 7, 8], "three events a topic");
    assert_eq!(tail(10, 1 << 20, 600), [1, 2, 3, 4, 7, 8], "600 bytes in all: a whole, b's newest two");
}
