//! Write-behind contracts: ordering, coalescing, flush as a barrier, failures, back-pressure.

use cogwheel::store::{
    AppliedOp, BackingStore, FaultKind, Faults, MemoryStore, StoreError, Stored, WriteOp,
};
use cogwheel::{Cache, DeadLetter, Error, WriteBehind, WritePolicy};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

fn manual(store: &MemoryStore<u64, u64>, cap: u64) -> Cache<u64, u64> {
    Cache::builder()
        .max_capacity(cap)
        .store(store.clone())
        .write_policy(WritePolicy::WriteBehind(
            WriteBehind::default().manual(true),
        ))
        .build()
        .unwrap()
}

fn threaded(store: &MemoryStore<u64, u64>, wb: WriteBehind) -> Cache<u64, u64> {
    Cache::builder()
        .max_capacity(100_000)
        .store(store.clone())
        .write_policy(WritePolicy::WriteBehind(
            wb.retry_backoff(Duration::from_millis(1), Duration::from_millis(5)),
        ))
        .build()
        .unwrap()
}

/// Dead letters as `(key, what)`, sorted by key.
type Dead = Arc<Mutex<Vec<(u64, DeadLetter<u64>)>>>;

/// A write-behind cache over `store` whose dead letters are recorded.
fn with_dead_letters(
    store: impl BackingStore<u64, u64>,
    wb: WriteBehind,
) -> (Cache<u64, u64>, Dead) {
    let dead: Dead = Arc::default();
    let d2 = dead.clone();
    let c = Cache::builder()
        .max_capacity(1000)
        .store(store)
        .write_policy(WritePolicy::WriteBehind(wb))
        .dead_letter(move |k, op, _| d2.lock().unwrap().push((*k, op)))
        .build()
        .unwrap();
    (c, dead)
}

fn store_value(store: &MemoryStore<u64, u64>, k: u64) -> Option<u64> {
    store.snapshot().get(&k).map(|s| s.value)
}

#[test]
fn ok_is_in_memory_then_durable_after_flush() {
    let store = MemoryStore::new();
    let c = manual(&store, 100);
    c.insert(1, 10).unwrap();
    assert_eq!(c.get(&1), Some(10), "visible at once");
    assert_eq!(store_value(&store, 1), None, "not yet in the store");
    assert_eq!(c.dirty_keys(), vec![1]);
    assert_eq!(c.flush().unwrap().flushed, 1);
    assert_eq!(store_value(&store, 1), Some(10));
    assert_eq!(c.dirty_count(), 0);
    assert_eq!(
        c.stats().write_retries,
        0,
        "nothing failed, nothing retried"
    );
}

#[test]
fn put_remove_put_reaches_the_store_in_order() {
    let store = MemoryStore::new();
    let c = manual(&store, 100);
    c.insert(1, 1).unwrap();
    c.flush().unwrap();
    c.remove(&1).unwrap();
    c.flush().unwrap();
    c.insert(1, 3).unwrap();
    c.flush().unwrap();
    let ops = store.applied_ops();
    assert!(
        matches!(
            ops.as_slice(),
            [
                AppliedOp::Put { value: 1, .. },
                AppliedOp::Delete { .. },
                AppliedOp::Put { value: 3, .. }
            ]
        ),
        "{ops:?}"
    );
    // Without flushes in between, the store ends at the latest state.
    c.remove(&1).unwrap();
    c.insert(1, 5).unwrap();
    c.remove(&1).unwrap();
    c.flush().unwrap();
    assert_eq!(store_value(&store, 1), None);
    assert_eq!(c.fetch(&1).unwrap(), None, "no resurrection from the store");
}

#[test]
fn repeated_writes_coalesce() {
    let store = MemoryStore::new();
    let c = manual(&store, 100);
    for i in 0..1000u64 {
        c.insert(i % 10, i).unwrap();
    }
    assert_eq!(c.dirty_count(), 10, "the queue holds each dirty key once");
    c.flush().unwrap();
    assert_eq!(
        store.applied_ops().len(),
        10,
        "1000 writes became 10 store writes"
    );
    for k in 0..10 {
        assert_eq!(store_value(&store, k), Some(990 + k));
    }
}

#[test]
fn the_writer_thread_never_stores_a_write_twice() {
    // Writes racing the writer's rounds (small batches, so rounds are many and short): with
    // a healthy store every store operation is a distinct acknowledged write. Every insert
    // writes a distinct value, so a write stored twice shows up as a repeated (key, value)
    // pair. (A round that took a stripe a second time once wrote the keys of its generation
    // twice.)
    let store = MemoryStore::new();
    let c = threaded(
        &store,
        WriteBehind::default()
            .max_batch(32)
            .max_delay(Duration::ZERO),
    );
    let inserts = 200_000u64;
    for i in 0..inserts {
        c.insert(i % 3_000, i).unwrap();
    }
    c.flush().unwrap();
    let applied = store.applied_ops();
    let mut seen = std::collections::HashSet::new();
    for op in &applied {
        match op {
            AppliedOp::Put { key, value, .. } => {
                assert!(
                    seen.insert((*key, *value)),
                    "write {key} = {value} stored twice"
                );
            }
            AppliedOp::Delete { key } => panic!("a delete of {key} was never asked for"),
        }
    }
    for k in 0..3_000 {
        let last = (inserts - 1 - k) / 3_000 * 3_000 + k;
        assert_eq!(store_value(&store, k), Some(last));
    }
}

#[test]
fn flush_is_a_barrier_under_concurrent_writers() {
    let store = MemoryStore::new();
    let c = threaded(&store, WriteBehind::default().max_batch(64));
    let before = Arc::new(Barrier::new(5));
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let (c, before) = (c.clone(), before.clone());
            thread::spawn(move || {
                for i in 0..500u64 {
                    c.insert(t * 1000 + i % 50, i).unwrap();
                }
                before.wait(); // phase 1 acknowledged
                for i in 500..1000u64 {
                    c.insert(t * 1000 + i % 50, i).unwrap(); // phase 2 races the flush
                }
            })
        })
        .collect();
    before.wait();
    c.flush().unwrap();
    let snap = store.snapshot();
    for t in 0..4u64 {
        for k in 0..50u64 {
            let v = snap.get(&(t * 1000 + k)).map(|s| s.value).expect("flushed");
            assert!(
                v >= 450 + k,
                "a write acknowledged before flush began is durable"
            );
        }
    }
    for h in handles {
        h.join().unwrap();
    }
    c.flush().unwrap();
    for (k, v) in c.iter() {
        assert_eq!(store_value(&store, k), Some(v));
    }
}

/// A store that reports each applied batch on a channel.
struct Notifying {
    inner: MemoryStore<u64, u64>,
    tx: Mutex<std::sync::mpsc::Sender<usize>>,
}

impl BackingStore<u64, u64> for Notifying {
    fn load(&self, key: &u64) -> Result<Option<Stored<u64>>, StoreError> {
        self.inner.load(key)
    }
    fn write_batch(&self, ops: &[WriteOp<'_, u64, u64>]) -> Result<(), StoreError> {
        self.inner.write_batch(ops)?;
        let _ = self.tx.lock().unwrap().send(ops.len());
        Ok(())
    }
}

#[test]
fn the_writer_thread_stores_writes_on_its_own() {
    let store = MemoryStore::new();
    let (tx, rx) = std::sync::mpsc::channel();
    let c: Cache<u64, u64> = Cache::builder()
        .max_capacity(100)
        .store(Notifying {
            inner: store.clone(),
            tx: Mutex::new(tx),
        })
        .write_policy(WritePolicy::WriteBehind(
            WriteBehind::default().max_delay(Duration::from_millis(1)),
        ))
        .build()
        .unwrap();
    c.insert(1, 1).unwrap();
    // No flush: the writer thread writes the batch by itself (after at most max_delay when
    // the store is healthy); wait for that event, generously bounded.
    assert_eq!(rx.recv_timeout(Duration::from_secs(60)), Ok(1));
    assert_eq!(store_value(&store, 1), Some(1));
}

#[test]
fn store_down_then_up_loses_nothing() {
    let store = MemoryStore::new();
    let c = threaded(&store, WriteBehind::default());
    store.set_down(true);
    for i in 0..100 {
        c.insert(i, i).unwrap();
    }
    match c.flush() {
        Err(Error::Unflushed { pending, .. }) => assert!(pending > 0),
        other => panic!("expected Unflushed, got {other:?}"),
    }
    assert_eq!(c.stats().dead_letters, 0, "a down store is not poison");
    store.set_down(false);
    c.flush().unwrap();
    for i in 0..100 {
        assert_eq!(store_value(&store, i), Some(i));
    }
    // Every failed round was followed by one retry round (the last of which succeeded).
    let s = c.stats();
    assert!(s.store_write_errors > 0);
    assert!(
        (1..=s.store_write_errors).contains(&s.write_retries),
        "{} retries, {} errors",
        s.write_retries,
        s.store_write_errors
    );
}

#[test]
fn injected_failures_converge_after_a_final_flush() {
    for pct in [1u8, 10, 25, 50] {
        for kind in [
            FaultKind::Fail,
            FaultKind::Unknown {
                applied: cogwheel::store::Applied::Prefix(1),
            },
        ] {
            let store = MemoryStore::new();
            store.set_faults(Faults::failing(pct, kind, u64::from(pct)).writes_only());
            // Convergence, not poison handling: at 50 % a key could otherwise reach the
            // default `max_attempts` and be dead-lettered, and the store would (rightly) no
            // longer match the model.
            let c = threaded(
                &store,
                WriteBehind::default().max_batch(16).max_attempts(u32::MAX),
            );
            let mut model = HashMap::new();
            for i in 0..600u64 {
                let k = i % 40;
                if i % 7 == 0 {
                    c.remove(&k).unwrap();
                    model.remove(&k);
                } else {
                    c.insert(k, i).unwrap();
                    model.insert(k, i);
                }
            }
            let mut tries = 0;
            while c.flush().is_err() {
                tries += 1;
                assert!(tries < 10_000, "never converged at {pct} %");
            }
            for k in 0..40 {
                assert_eq!(
                    store_value(&store, k),
                    model.get(&k).copied(),
                    "key {k} at {pct} % {kind:?}"
                );
            }
        }
    }
}

#[test]
fn a_hung_store_keeps_memory_bounded() {
    let store = MemoryStore::new();
    store.hang();
    let c = threaded(
        &store,
        WriteBehind::default().max_dirty(100).fail_fast(true),
    );
    let mut full = 0;
    for i in 0..1000 {
        match c.insert(i, i) {
            Ok(()) => {}
            Err(Error::Full) => full += 1,
            Err(e) => panic!("{e}"),
        }
        assert!(c.dirty_count() <= 100);
    }
    assert_eq!(
        full, 900,
        "beyond the dirty budget, fail-fast writers are refused"
    );
    store.release();
    c.flush().unwrap();
    assert_eq!(store.len(), 100);
}

#[test]
fn close_reports_what_could_not_be_written() {
    let store = MemoryStore::new();
    let (c, dead) = with_dead_letters(
        store.clone(),
        WriteBehind::default().close_timeout(Duration::from_millis(100)),
    );
    store.set_down(true);
    c.insert(1, 1).unwrap();
    c.remove(&2).unwrap();
    assert!(matches!(
        c.close(),
        Err(Error::Unflushed { pending: 2, .. })
    ));
    let mut dead = dead.lock().unwrap().clone();
    dead.sort_by_key(|(k, _)| *k);
    assert_eq!(dead, vec![(1, DeadLetter::Put(1)), (2, DeadLetter::Delete)]);
    assert!(matches!(c.insert(3, 3), Err(Error::Closed)));
}

#[test]
fn close_retries_a_failing_store_until_its_timeout() {
    let store = MemoryStore::new();
    let (c, dead) = with_dead_letters(
        store.clone(),
        WriteBehind::default()
            .retry_backoff(Duration::from_millis(1), Duration::from_millis(5))
            .close_timeout(Duration::from_secs(60)),
    );
    store.set_down(true);
    c.insert(1, 1).unwrap();
    let c2 = c.clone();
    // The store comes back once close has seen it fail (a transient outage).
    let healer = thread::spawn({
        let store = store.clone();
        move || {
            while c2.stats().store_write_errors == 0 {
                thread::yield_now();
            }
            store.set_down(false);
        }
    });
    assert_eq!(c.close().unwrap().flushed, 1);
    healer.join().unwrap();
    assert_eq!(store_value(&store, 1), Some(1));
    assert!(dead.lock().unwrap().is_empty(), "nothing given up");
}

#[test]
fn a_close_racing_writes_loses_none_of_those_that_returned_ok() {
    for _ in 0..20 {
        let store = MemoryStore::new();
        let c = threaded(&store, WriteBehind::default());
        let writer = {
            let c = c.clone();
            thread::spawn(move || {
                let mut acked = Vec::new();
                for i in 0..10_000u64 {
                    match c.insert(i, i) {
                        Ok(()) => acked.push(i),
                        Err(Error::Closed) => break,
                        Err(e) => panic!("{e}"),
                    }
                }
                acked
            })
        };
        // Until the writer got going (or ended early: then `join` below reports why).
        while c.dirty_count() == 0 && store.is_empty() && !writer.is_finished() {
            thread::yield_now();
        }
        c.close().unwrap();
        let acked = writer.join().unwrap();
        for i in acked {
            assert_eq!(
                store_value(&store, i),
                Some(i),
                "acknowledged write {i} lost"
            );
        }
    }
}

#[test]
fn dropping_the_last_handle_drains_the_queue() {
    let store = MemoryStore::new();
    let c = threaded(
        &store,
        WriteBehind::default().max_delay(Duration::from_secs(3600)),
    );
    for i in 0..50 {
        c.insert(i, i).unwrap();
    }
    drop(c);
    assert_eq!(store.len(), 50, "drop flushed everything");
}

#[test]
fn flush_if_needed_and_older_than() {
    let store = MemoryStore::new();
    let c = manual(&store, 100);
    c.insert(1, 1).unwrap();
    assert_eq!(c.flush_if_needed(2).unwrap(), None);
    c.insert(2, 2).unwrap();
    assert_eq!(c.flush_if_needed(2).unwrap().map(|r| r.flushed), Some(2));
    c.insert(3, 3).unwrap();
    assert_eq!(c.flush_older_than(Duration::from_secs(3600)).unwrap(), None);
    assert!(c.flush_older_than(Duration::ZERO).unwrap().is_some());
    assert_eq!(store.len(), 3);
}

#[test]
fn compute_goes_behind_too() {
    let store = MemoryStore::new();
    let c = manual(&store, 100);
    for _ in 0..5 {
        c.compute(1, |v| cogwheel::Compute::Put(v.copied().unwrap_or(0) + 1))
            .unwrap();
    }
    assert_eq!(
        store_value(&store, 1),
        None,
        "acknowledged in memory, not yet stored"
    );
    assert_eq!(c.dirty_keys(), vec![1]);
    c.flush().unwrap();
    assert_eq!(store_value(&store, 1), Some(5));
    c.compute(1, |_| cogwheel::Compute::Remove).unwrap();
    c.flush().unwrap();
    assert_eq!(store_value(&store, 1), None);
    assert_eq!(
        store.applied_ops().len(),
        2,
        "five computes coalesced into one put, then one delete"
    );
}

#[test]
fn the_default_dirty_budget_is_half_the_capacity() {
    let store = MemoryStore::new();
    let c = manual(&store, 10);
    for i in 0..50 {
        c.insert(i, i).unwrap();
        assert!(c.dirty_count() <= 5, "{} dirty keys", c.dirty_count());
    }
    c.flush().unwrap();
    assert_eq!(store.len(), 50, "every write reached the store");
}

#[test]
fn a_hung_store_cannot_hang_close() {
    let store = MemoryStore::new();
    let (c, dead) = with_dead_letters(
        store.clone(),
        WriteBehind::default()
            .max_delay(Duration::ZERO)
            .close_timeout(Duration::from_millis(50)),
    );
    store.hang();
    c.insert(1, 1).unwrap();
    store.wait_for_hung_calls(1); // the writer is now stuck inside write_batch
    c.insert(2, 2).unwrap();
    match c.close() {
        Err(Error::Unflushed { pending, cause }) => {
            assert_eq!(pending, 2);
            assert!(cause.to_string().contains("close timeout"), "{cause}");
        }
        other => panic!("expected a bounded close, got {other:?}"),
    }
    let mut dead = dead.lock().unwrap().clone();
    dead.sort_by_key(|(k, _)| *k);
    assert_eq!(
        dead,
        vec![(1, DeadLetter::Put(1)), (2, DeadLetter::Put(2))],
        "reported, not dropped"
    );
    store.release(); // let the detached writer finish and exit
}

/// A store that records the size of every batch, and signals each one on a channel.
struct BatchSizes {
    inner: MemoryStore<u64, u64>,
    sizes: Arc<Mutex<Vec<usize>>>,
    tx: Mutex<std::sync::mpsc::Sender<usize>>,
}

impl BatchSizes {
    fn new() -> (
        Self,
        Arc<Mutex<Vec<usize>>>,
        std::sync::mpsc::Receiver<usize>,
    ) {
        let (tx, rx) = std::sync::mpsc::channel();
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let s = BatchSizes {
            inner: MemoryStore::new(),
            sizes: sizes.clone(),
            tx: Mutex::new(tx),
        };
        (s, sizes, rx)
    }
}

impl BackingStore<u64, u64> for BatchSizes {
    fn load(&self, key: &u64) -> Result<Option<Stored<u64>>, StoreError> {
        self.inner.load(key)
    }

    fn write_batch(&self, ops: &[WriteOp<'_, u64, u64>]) -> Result<(), StoreError> {
        self.sizes.lock().unwrap().push(ops.len());
        let _ = self.tx.lock().unwrap().send(ops.len());
        self.inner.write_batch(ops)
    }
}

/// A store whose `write_batch` call number `fail_at` (from 1) fails; the others apply.
struct FailsOnce {
    inner: MemoryStore<u64, u64>,
    calls: std::sync::atomic::AtomicUsize,
    fail_at: usize,
}

impl BackingStore<u64, u64> for FailsOnce {
    fn load(&self, key: &u64) -> Result<Option<Stored<u64>>, StoreError> {
        self.inner.load(key)
    }

    fn write_batch(&self, ops: &[WriteOp<'_, u64, u64>]) -> Result<(), StoreError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) + 1 == self.fail_at {
            return Err(StoreError::fail("injected"));
        }
        self.inner.write_batch(ops)
    }
}

#[test]
fn a_failed_batch_keeps_only_what_was_not_stored() {
    // A thousand keys, about 16 per record stripe, go out in batches of four: the first round
    // takes one stripe and writes it in several batches, and the second batch fails. The
    // first batch is stored and its keys are clean; the rest stay dirty and are stored by the
    // next flush, without writing the first four again. (Fixed hash seed: the same stripes.)
    let inner = MemoryStore::new();
    let store = FailsOnce {
        inner: inner.clone(),
        calls: Default::default(),
        fail_at: 2,
    };
    let c: Cache<u64, u64, _> = Cache::builder()
        .max_capacity(10_000)
        .hasher(cogwheel::fixed_hasher(7))
        .store(store)
        .write_policy(WritePolicy::WriteBehind(
            WriteBehind::default().manual(true).max_batch(4),
        ))
        .build()
        .unwrap();
    for k in 0..1_000u64 {
        c.insert(k, k).unwrap();
    }
    assert!(c.flush().is_err(), "the second batch failed");
    assert_eq!(inner.applied_ops().len(), 4, "the first batch was stored");
    assert_eq!(c.dirty_count(), 996, "its keys are clean");
    c.flush().unwrap();
    assert_eq!(c.dirty_count(), 0);
    assert_eq!(
        inner.applied_ops().len(),
        1_000,
        "nothing was written twice"
    );
    for k in 0..1_000 {
        assert_eq!(store_value(&inner, k), Some(k));
    }
}

fn over(store: BatchSizes, wb: WriteBehind) -> Cache<u64, u64> {
    Cache::builder()
        .max_capacity(100_000)
        .store(store)
        .write_policy(WritePolicy::WriteBehind(wb))
        .build()
        .unwrap()
}

#[test]
fn a_flush_writes_everything_in_batches_of_at_most_max_batch() {
    // Manual mode: each round the flush runs takes whole stripes until it holds `max_batch`
    // keys, and writes them in batches of at most `max_batch`.
    let (store, sizes, _rx) = BatchSizes::new();
    let c = over(store, WriteBehind::default().manual(true).max_batch(16));
    for i in 0..40u64 {
        c.insert(i, i).unwrap();
    }
    assert_eq!(c.flush().unwrap().flushed, 40);
    let sizes = sizes.lock().unwrap().clone();
    assert!(sizes.iter().all(|&n| (1..=16).contains(&n)), "{sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 40, "{sizes:?}");
    // Full batches except where a round ends: at most one short batch per round, and a
    // round takes at least 16 keys while they last.
    assert!(sizes.len() <= 6, "{sizes:?}");

    // The default cap is large: a backlog goes out as one batch.
    let (store, sizes, _rx) = BatchSizes::new();
    let c = over(store, WriteBehind::default().manual(true));
    for i in 0..5000u64 {
        c.insert(i, i).unwrap();
    }
    assert_eq!(c.flush().unwrap().flushed, 5000);
    assert_eq!(*sizes.lock().unwrap(), vec![5000]);
}

#[test]
fn the_writer_starts_before_a_full_batch_and_caps_each_batch() {
    // `max_delay` is an hour: only the start threshold (512 dirty keys) can start the writer,
    // long before 4096 (a full batch) are dirty. Every batch respects `max_batch`, and a
    // flush is still a barrier.
    let (store, sizes, rx) = BatchSizes::new();
    let c = over(
        store,
        WriteBehind::default()
            .max_batch(4096)
            .max_delay(Duration::from_secs(3600)),
    );
    for i in 0..512u64 {
        c.insert(i, i).unwrap();
    }
    // Blocks until the writer writes on its own (a generous guard, not a timing threshold:
    // without the start threshold it would not write for an hour).
    let first = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the writer started at 512 dirty keys");
    assert!((1..=512).contains(&first), "{first}");
    for i in 0..20_000u64 {
        c.insert(i % 10_000, i).unwrap();
    }
    c.flush().unwrap();
    assert_eq!(c.dirty_count(), 0);
    let sizes = sizes.lock().unwrap().clone();
    assert!(sizes.iter().all(|&n| (1..=4096).contains(&n)), "{sizes:?}");
    drop(c);
}

#[test]
fn a_small_budget_starts_the_writer_early() {
    // A dirty budget below the start threshold: the writer starts at half the budget, so
    // writers are not parked at the budget while the writer still waits for `max_delay`.
    let (store, _sizes, rx) = BatchSizes::new();
    let c = over(
        store,
        WriteBehind::default()
            .max_dirty(100)
            .max_delay(Duration::from_secs(3600)),
    );
    for i in 0..50u64 {
        c.insert(i, i).unwrap();
    }
    let first = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the writer started at half the budget");
    assert!((1..=50).contains(&first), "{first}");
    c.flush().unwrap();
}

#[test]
fn the_age_of_dirty_keys_follows_the_cache_clock() {
    let clock = cogwheel::ManualClock::new();
    let store = MemoryStore::new();
    let c: Cache<u64, u64> = Cache::builder()
        .max_capacity(100)
        .clock(clock.clone())
        .store(store.clone())
        .write_policy(WritePolicy::WriteBehind(
            WriteBehind::default().manual(true),
        ))
        .build()
        .unwrap();
    c.insert(1, 1).unwrap();
    clock.advance(Duration::from_secs(5));
    c.insert(2, 2).unwrap();
    assert_eq!(c.stats().oldest_dirty_nanos, 5_000_000_000);
    assert_eq!(c.flush_older_than(Duration::from_secs(6)).unwrap(), None);
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        c.flush_older_than(Duration::from_secs(6))
            .unwrap()
            .map(|r| r.flushed),
        Some(2)
    );
    assert_eq!(store.len(), 2);
}
