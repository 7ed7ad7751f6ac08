//! Write-behind under panics in user code the writer runs: a panicking store or dead-letter
//! hook, a value whose `Drop` or a key whose `Hash` panics on the writer thread. None of them
//! may hang a flush, a parked writer or `close`, lose a write, or be swallowed silently.

mod support;
use support::within_a_minute;

use cogwheel::store::{BackingStore, MemoryStore, StoreError, Stored, WriteOp};
use cogwheel::{Cache, Error, WriteBehind, WritePolicy};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A memory store that refuses every batch holding `key`.
struct RefusesKey {
    inner: MemoryStore<u64, u64>,
    key: u64,
}

impl BackingStore<u64, u64> for RefusesKey {
    fn load(&self, key: &u64) -> Result<Option<Stored<u64>>, StoreError> {
        self.inner.load(key)
    }
    fn write_batch(&self, ops: &[WriteOp<'_, u64, u64>]) -> Result<(), StoreError> {
        let key_of = |op: &WriteOp<'_, u64, u64>| match op {
            WriteOp::Put { key, .. } | WriteOp::Delete { key } => **key,
        };
        match ops.iter().any(|op| key_of(op) == self.key) {
            true => Err(StoreError::fail("refused")),
            false => self.inner.write_batch(ops),
        }
    }
}

#[test]
fn a_panicking_dead_letter_hook_does_not_stop_the_writer() {
    let store = MemoryStore::new();
    let c: Cache<u64, u64> = Cache::builder()
        .max_capacity(1000)
        .store(RefusesKey {
            inner: store.clone(),
            key: 13,
        })
        .write_policy(WritePolicy::WriteBehind(
            WriteBehind::default()
                .max_attempts(2)
                .retry_backoff(Duration::from_millis(1), Duration::from_millis(2)),
        ))
        .dead_letter(|_, _, _| panic!("the hook exploded"))
        .build()
        .unwrap();
    let c = within_a_minute(move || {
        for i in 0..20 {
            c.insert(i, i).unwrap();
        }
        // Key 13 fails until it is dead-lettered (the hook then panics on the writer thread).
        let mut tries = 0;
        while c.flush().is_err() {
            tries += 1;
            assert!(tries < 1000, "key 13 was never given up");
        }
        // The writer is still alive: a later write reaches the store.
        c.insert(100, 100).unwrap();
        c.flush().unwrap();
        c
    });
    assert_eq!(store.snapshot().get(&100).map(|s| s.value), Some(100));
    assert_eq!(
        c.stats().dead_letters,
        1,
        "the panicking hook's write counts"
    );
    assert!(!store.snapshot().contains_key(&13));
}

#[test]
fn a_panicking_dead_letter_hook_does_not_break_close() {
    let store = MemoryStore::new();
    let c: Cache<u64, u64> = Cache::builder()
        .max_capacity(1000)
        .store(store.clone())
        .write_policy(WritePolicy::WriteBehind(
            WriteBehind::default().close_timeout(Duration::from_millis(50)),
        ))
        .dead_letter(|_, _, _| panic!("the hook exploded"))
        .build()
        .unwrap();
    store.set_down(true);
    c.insert(1, 1).unwrap();
    c.insert(2, 2).unwrap();
    let (r, dead) = within_a_minute(move || {
        let r = c.close();
        (r, c.stats().dead_letters)
    });
    assert!(
        matches!(r, Err(Error::Unflushed { pending: 2, .. })),
        "{r:?}"
    );
    assert_eq!(
        dead, 2,
        "both writes were handed over (to a hook that panicked)"
    );
}

/// A store whose write_batch panics while a flag is set.
struct Panicky {
    inner: MemoryStore<u64, u64>,
    panic: Arc<AtomicBool>,
}

impl BackingStore<u64, u64> for Panicky {
    fn load(&self, key: &u64) -> Result<Option<Stored<u64>>, StoreError> {
        self.inner.load(key)
    }
    fn write_batch(&self, ops: &[WriteOp<'_, u64, u64>]) -> Result<(), StoreError> {
        if self.panic.load(Ordering::SeqCst) {
            panic!("store exploded");
        }
        self.inner.write_batch(ops)
    }
}

#[test]
fn a_writer_panic_is_reported_not_swallowed() {
    let store = MemoryStore::new();
    let flag = Arc::new(AtomicBool::new(true));
    let c: Cache<u64, u64> = Cache::builder()
        .max_capacity(1000)
        .store(Panicky {
            inner: store.clone(),
            panic: flag.clone(),
        })
        .write_policy(WritePolicy::WriteBehind(WriteBehind::default()))
        .build()
        .unwrap();
    c.insert(1, 1).unwrap();
    match c.flush() {
        Err(Error::Unflushed { cause, .. }) => {
            assert!(cause.to_string().contains("store exploded"), "{cause}")
        }
        other => panic!("expected the panic to be reported, got {other:?}"),
    }
    flag.store(false, Ordering::SeqCst);
    c.flush().unwrap();
    assert_eq!(
        store.snapshot().get(&1).map(|s| s.value),
        Some(1),
        "the writer survived and wrote it"
    );
}

/// Set while a test wants the writer thread to die.
static ARMED: AtomicBool = AtomicBool::new(false);

/// A value whose drop panics on the write-behind writer thread while `ARMED` (standing for a
/// bug in user code that thread runs: a `Drop`, `Clone`, `Hash` or `Eq`).
#[derive(Clone, Debug, PartialEq)]
struct Grenade(u64);

impl Drop for Grenade {
    fn drop(&mut self) {
        let writer = std::thread::current().name() == Some("cogwheel-write-behind");
        if writer && ARMED.load(Ordering::SeqCst) && !std::thread::panicking() {
            panic!("a grenade went off on the writer thread");
        }
    }
}

/// A store that accepts every write and keeps nothing (so values are dropped only where the
/// cache drops them).
struct Sink;

impl BackingStore<u64, Grenade> for Sink {
    fn load(&self, _: &u64) -> Result<Option<Stored<Grenade>>, StoreError> {
        Ok(None)
    }
    fn write_batch(&self, _: &[WriteOp<'_, u64, Grenade>]) -> Result<(), StoreError> {
        Ok(())
    }
}

#[test]
fn a_dead_writer_thread_fails_flushes_and_writes_instead_of_hanging_them() {
    let c: Cache<u64, Grenade> = Cache::builder()
        .max_capacity(1000)
        .store(Sink)
        .write_policy(WritePolicy::WriteBehind(WriteBehind::default()))
        .build()
        .unwrap();
    c.insert(0, Grenade(0)).unwrap();
    c.flush().unwrap();
    ARMED.store(true, Ordering::SeqCst);
    let report = within_a_minute(move || {
        // The writer stores key 1, then drops its record's value and dies. The error must
        // surface on a later insert (refused) or flush (failed), never as a wait forever.
        c.insert(1, Grenade(1)).unwrap();
        let mut found = None;
        for k in 2..1000 {
            if let Err(e) = c.flush() {
                found = Some(e);
                break;
            }
            if let Err(e) = c.insert(k, Grenade(k)) {
                found = Some(e);
                break;
            }
        }
        let e = found.expect("the writer's death never surfaced");
        // Later writes are refused with the same cause; close reports and returns.
        let later = c.insert(5000, Grenade(5000)).unwrap_err();
        // Whether close fails depends on whether a write was still pending when the writer
        // died; either way it must return (`within_a_minute`).
        let _ = c.close();
        (e.to_string(), later.to_string())
    });
    ARMED.store(false, Ordering::SeqCst);
    let (first, later) = report;
    assert!(first.contains("writer thread panicked"), "{first}");
    assert!(first.contains("a grenade went off"), "{first}");
    assert!(later.contains("writer thread panicked"), "{later}");
}

#[test]
fn a_dead_letter_hook_that_closes_the_cache_does_not_wait_for_itself() {
    let store = MemoryStore::new();
    let slot: Arc<std::sync::OnceLock<Cache<u64, u64>>> = Arc::default();
    let hook_slot = slot.clone();
    let c: Cache<u64, u64> = Cache::builder()
        .max_capacity(1000)
        .store(store.clone())
        .write_policy(WritePolicy::WriteBehind(
            WriteBehind::default().close_timeout(Duration::from_millis(20)),
        ))
        .dead_letter(move |_, _, _| {
            // Called by the close below, on its own thread: this close must return at once.
            let r = hook_slot.get().expect("set").close();
            assert!(
                r.is_ok() || matches!(r, Err(Error::Unflushed { .. })),
                "{r:?}"
            );
        })
        .build()
        .unwrap();
    let _ = slot.set(c.clone());
    store.set_down(true);
    c.insert(1, 1).unwrap();
    let r = within_a_minute(move || c.close());
    assert!(
        matches!(r, Err(Error::Unflushed { pending: 1, .. })),
        "{r:?}"
    );
    // The hook's clone keeps the cache alive; break the cycle.
    drop(slot);
}

/// Dead letters as `(key, what)`.
type Dead = Arc<std::sync::Mutex<Vec<(u64, cogwheel::DeadLetter<u64>)>>>;

/// Set while a test wants hashing a `FragileKey` on the writer thread to panic.
static KEYS_ARMED: AtomicBool = AtomicBool::new(false);

/// A key whose `Hash` panics on the writer thread while `KEYS_ARMED`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FragileKey(u64);

impl std::hash::Hash for FragileKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        let writer = std::thread::current().name() == Some("cogwheel-write-behind");
        if writer && KEYS_ARMED.load(Ordering::SeqCst) && !std::thread::panicking() {
            panic!("a key's hash failed on the writer thread");
        }
        self.0.hash(h);
    }
}

/// A store that accepts nothing while `down` is set, and keeps nothing.
struct Switch(Arc<AtomicBool>);

impl BackingStore<FragileKey, u64> for Switch {
    fn load(&self, _: &FragileKey) -> Result<Option<Stored<u64>>, StoreError> {
        Ok(None)
    }
    fn write_batch(&self, _: &[WriteOp<'_, FragileKey, u64>]) -> Result<(), StoreError> {
        match self.0.load(Ordering::SeqCst) {
            true => Err(StoreError::fail("down")),
            false => Ok(()),
        }
    }
}

#[test]
fn a_panic_while_merging_a_failed_round_loses_no_write() {
    let down = Arc::new(AtomicBool::new(true));
    let dead: Dead = Arc::default();
    let d2 = dead.clone();
    let c: Cache<FragileKey, u64> = Cache::builder()
        .max_capacity(100)
        .store(Switch(down.clone()))
        .write_policy(WritePolicy::WriteBehind(
            WriteBehind::default()
                .retry_backoff(Duration::from_millis(1), Duration::from_millis(2))
                .close_timeout(Duration::from_millis(200)),
        ))
        .dead_letter(move |k, op, _| d2.lock().unwrap().push((k.0, op)))
        .build()
        .unwrap();
    c.insert(FragileKey(1), 10).unwrap();
    assert!(
        c.flush().is_err(),
        "the store is down: the round's records are kept"
    );
    // The next round merges the kept records with this newer write, hashing keys on the
    // writer thread: the panic ends the thread mid-merge.
    KEYS_ARMED.store(true, Ordering::SeqCst);
    c.insert(FragileKey(1), 11).unwrap();
    let r = within_a_minute(move || {
        let flushed = c.flush();
        KEYS_ARMED.store(false, Ordering::SeqCst);
        (flushed.map(|_| ()), c.close().map(|_| ()))
    });
    assert!(r.0.is_err() && r.1.is_err(), "{r:?}");
    assert_eq!(
        *dead.lock().unwrap(),
        vec![(1, cogwheel::DeadLetter::Put(11))],
        "the latest write was reported, not lost with the merge"
    );
}

#[test]
fn a_key_whose_hash_panics_in_the_pin_check_leaves_the_shard_consistent() {
    use support::PanicKey as K;
    let c: Cache<K, u64> = Cache::builder()
        .max_weight(20)
        .weigher(|_, v: &u64| *v as u32)
        .shards(1)
        .store(cogwheel::store::MemoryStore::new())
        .write_policy(WritePolicy::WriteBehind(
            WriteBehind::default().manual(true),
        ))
        .build()
        .unwrap();
    for i in 0..20 {
        c.insert(K(i), 1).unwrap();
    }
    c.flush().unwrap(); // clean, so evictable
    // Weight 5: the admission evicts five entries, checking each one's pin (its hash); the
    // third check panics.
    let r = K::armed(100, 3, || c.insert(K(100), 5));
    assert!(r.is_err(), "the pin check did not panic");
    c.validate_internals();
    for i in 200..260 {
        c.insert(K(i), 1).unwrap();
        c.flush().unwrap();
    }
    c.validate_internals();
    assert!(c.weighted_size() <= 20);
}

/// A cache of capacity 100 over `store`, in manual write-behind mode.
fn manual_over<K, V>(store: &MemoryStore<K, V>) -> Cache<K, V>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    Cache::builder()
        .max_capacity(100)
        .store(store.clone())
        .write_policy(WritePolicy::WriteBehind(
            WriteBehind::default().manual(true),
        ))
        .build()
        .unwrap()
}

#[test]
fn a_panic_in_a_manual_flush_round_leaves_its_records_queued() {
    use support::PanicKey as K;
    let store = MemoryStore::new();
    let c = manual_over(&store);
    store.set_down(true);
    c.insert(K(1), 10).unwrap();
    assert!(
        c.flush().is_err(),
        "the store is down: the round's records are kept"
    );
    c.insert(K(1), 11).unwrap();
    store.set_down(false);
    // This flush's round merges the kept records with the newer write, hashing key 1 on this
    // thread (manual mode): its second hash of key 1 (the first is the flush counting what is
    // pending) panics, after the round popped the stripe.
    let r = K::armed(999, 2, || c.flush());
    assert!(r.is_err(), "the merge did not panic");
    assert_eq!(c.dirty_count(), 1, "the write is still pending");
    // The stripe is queued again: the next flush stores the latest write instead of waiting
    // forever for a stripe nothing would queue.
    let c = within_a_minute(move || {
        c.flush().unwrap();
        c
    });
    assert_eq!(c.dirty_count(), 0);
    assert_eq!(store.snapshot().get(&K(1)).map(|s| s.value), Some(11));
}

thread_local! {
    /// Clones a `Touchy` may still make on this thread before one panics (`None`: no limit).
    static CLONES_LEFT: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// A value whose `Clone` panics once the thread's allowance runs out.
#[derive(Debug, PartialEq)]
struct Touchy(u64);

impl Clone for Touchy {
    fn clone(&self) -> Self {
        CLONES_LEFT.with(|left| match left.get() {
            Some(0) => {
                left.set(None);
                panic!("clone refused");
            }
            Some(n) => left.set(Some(n - 1)),
            None => {}
        });
        Touchy(self.0)
    }
}

#[test]
fn a_clone_that_panics_mid_write_never_leaves_the_cache_behind_the_store() {
    let store = MemoryStore::new();
    let c = manual_over(&store);
    c.insert(1, Touchy(1)).unwrap();
    c.flush().unwrap();
    // Each of the write's clones in turn refuses: whatever the write got to, the cache must
    // not serve the value it superseded while the store gets the new one.
    for allowance in 0..4 {
        CLONES_LEFT.with(|l| l.set(Some(allowance)));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            c.insert(1, Touchy(10 + allowance as u64))
        }));
        check(&c, &store, allowance, r.is_ok());
        CLONES_LEFT.with(|l| l.set(Some(allowance)));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            c.compute(1, |_| cogwheel::Compute::Put(Touchy(20 + allowance as u64)))
        }));
        check(&c, &store, allowance, r.is_ok());
    }
}

/// After a write that may have panicked: flushed, the cache holds nothing or the store's
/// value; then key 1 is reset to `Touchy(1)`.
fn check(c: &Cache<u64, Touchy>, store: &MemoryStore<u64, Touchy>, allowance: usize, ok: bool) {
    CLONES_LEFT.with(|l| l.set(None));
    c.flush().unwrap();
    let stored = store.snapshot().get(&1).map(|s| s.value.0);
    let cached = c.get(&1).map(|v| v.0);
    assert!(
        cached.is_none() || cached == stored,
        "clone #{allowance} refused ({}): cache {cached:?}, store {stored:?}",
        if ok { "no panic" } else { "panicked" }
    );
    c.insert(1, Touchy(1)).unwrap();
    c.flush().unwrap();
}
