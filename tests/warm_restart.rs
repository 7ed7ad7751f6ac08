//! Warm restart from the embedded store: data and TTLs survive a restart.

mod support;

use cogwheel::store::RedbStore;
use cogwheel::{Cache, ManualClock, WriteBehind, WritePolicy};
use std::time::Duration;

const HOUR: Duration = Duration::from_secs(3600);

#[test]
fn data_and_ttls_come_back_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("warm.redb");
    {
        let c: Cache<u64, String> = Cache::builder()
            .max_capacity(1000)
            .store(RedbStore::open(&path).unwrap())
            .write_policy(WritePolicy::WriteBehind(WriteBehind::default()))
            .build()
            .unwrap();
        for i in 0..100 {
            c.insert(i, format!("v{i}")).unwrap();
        }
        c.insert_with_ttl(1000, "short".into(), HOUR).unwrap();
        c.insert_with_ttl(1001, "gone".into(), Duration::from_nanos(1))
            .unwrap();
        c.remove(&5).unwrap();
        c.flush().unwrap();
    } // the cache and its store are closed here

    let clock = ManualClock::new();
    let c: Cache<u64, String> = Cache::builder()
        .max_capacity(1000)
        .clock(clock.clone())
        .store(RedbStore::open(&path).unwrap())
        .preload(true)
        .build()
        .unwrap();
    assert_eq!(
        c.len(),
        100,
        "99 plain entries + the one-hour entry; the expired and removed ones are not loaded"
    );
    assert_eq!(c.get(&7).as_deref(), Some("v7"));
    assert_eq!(c.get(&5), None);
    assert_eq!(c.get(&1001), None);
    assert_eq!(c.get(&1000).as_deref(), Some("short"));
    clock.advance(HOUR);
    assert_eq!(c.get(&1000), None, "the remaining TTL survived the restart");
    assert_eq!(c.get(&7).as_deref(), Some("v7"));
}

#[test]
fn preload_is_bounded_by_capacity_and_reports_progress() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bounded.redb");
    {
        let c: Cache<u64, u64> = Cache::builder()
            .max_capacity(10_000)
            .store(RedbStore::open(&path).unwrap())
            .build()
            .unwrap();
        for i in 0..1000 {
            c.insert(i, i).unwrap();
        }
    }
    let c: Cache<u64, u64> = Cache::builder()
        .max_capacity(100)
        .shards(1)
        .store(RedbStore::open(&path).unwrap())
        .build()
        .unwrap();
    let mut calls = Vec::new();
    let done = c
        .preload(|k, _| k % 2 == 0, |p| calls.push(p.loaded))
        .unwrap();
    assert_eq!(done.loaded, 100);
    assert_eq!(c.len(), 100);
    assert!(
        c.iter().all(|(k, _)| k % 2 == 0),
        "the filter chose what to load"
    );
    assert_eq!(
        calls.len() as u64,
        done.scanned,
        "progress after every entry"
    );
    assert!(calls.windows(2).all(|w| w[0] <= w[1]));
    assert!(done.scanned < 1000, "stopped once full");
}

/// A store of 1000 records, and a preload into `builder`'s cache: (scanned, loaded,
/// evictions the listener saw, entries in the cache).
fn preload_into(
    builder: cogwheel::CacheBuilder<u64, u64, ahash::RandomState>,
) -> (u64, u64, usize, usize) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let store = cogwheel::store::MemoryStore::new();
    for i in 0..1000u64 {
        store.insert(i, i, None);
    }
    let evicted = Arc::new(AtomicUsize::new(0));
    let seen = evicted.clone();
    let c = builder
        .hasher(cogwheel::fixed_hasher(3))
        .store(store)
        .eviction_listener(move |_, _, _| {
            seen.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    let done = c.preload(|_, _| true, |_| {}).unwrap();
    (
        done.scanned,
        done.loaded,
        evicted.load(Ordering::SeqCst),
        c.len(),
    )
}

#[test]
fn preload_never_evicts_what_it_loaded_and_stops_when_every_shard_is_full() {
    // Several shards: one fills before the others; it must turn records away, not evict.
    let (scanned, loaded, evicted, len) = preload_into(Cache::builder().max_capacity(64).shards(4));
    assert_eq!(
        evicted, 0,
        "a warm restart evicted entries it had just loaded"
    );
    assert_eq!(loaded as usize, len);
    assert!(loaded <= 64 && loaded > 48, "{loaded} loaded");
    assert!(scanned < 1000, "stopped once every shard was full");
    // Weights that do not add up to the capacity: the shard is never exactly full.
    let (scanned, loaded, evicted, len) =
        preload_into(Cache::builder().max_weight(25).shards(1).weigher(|_, _| 10));
    assert_eq!((loaded, evicted, len), (2, 0, 2));
    assert_eq!(scanned, 3, "stopped at the first record that did not fit");
    // Records too heavy for any shard (all but ten) do not make their shard count as full:
    // the scan goes on to the light ones, whatever the order.
    let (_, loaded, evicted, _) = preload_into(
        Cache::builder()
            .max_weight(25)
            .shards(1)
            .weigher(|k, _| if *k < 990 { 100 } else { 10 }),
    );
    assert_eq!((loaded, evicted), (2, 0));
}

/// A cache over a `MemoryStore` holding `1 → 10`, and a handle on the store.
fn over_a_store_holding_one(
    policy: WritePolicy,
) -> (Cache<u64, u64>, cogwheel::store::MemoryStore<u64, u64>) {
    let store = cogwheel::store::MemoryStore::new();
    store.insert(1u64, 10u64, None);
    let c = Cache::builder()
        .max_capacity(100)
        .store(store.clone())
        .write_policy(policy)
        .build()
        .unwrap();
    (c, store)
}

// `MemoryStore::scan` copies the store's records first and visits them after, and the filter
// runs at each visit: a write made from the filter lands after the scan read the record, as a
// concurrent write would.

#[test]
fn preload_never_brings_back_a_key_removed_while_it_scanned() {
    let (c, store) = over_a_store_holding_one(WritePolicy::WriteThrough);
    let done = c
        .preload(
            |k, _| {
                c.remove(k).unwrap();
                true
            },
            |_| {},
        )
        .unwrap();
    assert_eq!((done.loaded, done.skipped), (0, 1));
    assert_eq!(store.snapshot().get(&1), None);
    assert_eq!(c.get(&1), None, "the removed value came back from the scan");
}

/// Preload `c`, running `during` when the scan visits key 1 (after it read 1 → 10); `during`
/// must leave 1 → 20 in the store. Key 1 then leaves the cache (evicted, say), so only the
/// scan's older record could bring a value back.
fn preload_with_a_write_during_the_scan(
    c: &Cache<u64, u64>,
    store: &cogwheel::store::MemoryStore<u64, u64>,
    during: impl Fn(),
) {
    c.preload(
        |_, _| {
            during();
            c.invalidate_all();
            true
        },
        |_| {},
    )
    .unwrap();
    assert_eq!(store.snapshot().get(&1).map(|s| s.value), Some(20));
    assert_ne!(c.get(&1), Some(10), "the scan's older value was loaded");
}

#[test]
fn preload_never_loads_a_value_older_than_a_write_made_while_it_scanned() {
    let (c, store) = over_a_store_holding_one(WritePolicy::WriteThrough);
    preload_with_a_write_during_the_scan(&c, &store, || c.insert(1, 20).unwrap());
}

#[test]
fn preload_never_loads_a_value_older_than_a_write_behind_write_stored_while_it_scanned() {
    let (c, store) = over_a_store_holding_one(WritePolicy::WriteBehind(
        WriteBehind::default().manual(true),
    ));
    c.insert(1, 20).unwrap(); // pending
    // Stored, and no longer pending.
    preload_with_a_write_during_the_scan(&c, &store, || {
        c.flush().unwrap();
    });
}

#[test]
fn preload_does_not_wait_for_a_writer_blocked_on_a_store_its_scan_holds() {
    use cogwheel::store::{BackingStore, MemoryStore, ScanItem, StoreError, Stored, WriteOp};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    /// A store whose scan holds the lock its writes take (allowed: nothing in the contract
    /// forbids it), and which counts writers that reached it.
    struct Gated {
        inner: MemoryStore<u64, u64>,
        gate: Mutex<()>,
        writers: Arc<AtomicUsize>,
    }
    impl BackingStore<u64, u64> for Gated {
        fn load(&self, key: &u64) -> Result<Option<Stored<u64>>, StoreError> {
            self.inner.load(key)
        }
        fn write_batch(&self, ops: &[WriteOp<'_, u64, u64>]) -> Result<(), StoreError> {
            self.writers.fetch_add(1, Ordering::SeqCst);
            let _g = self.gate.lock().unwrap();
            self.inner.write_batch(ops)
        }
        fn scan(
            &self,
            visit: &mut dyn FnMut(ScanItem<u64, u64>) -> bool,
        ) -> Result<(), StoreError> {
            let _g = self.gate.lock().unwrap();
            self.inner.scan(visit)
        }
    }
    let inner = MemoryStore::new();
    inner.insert(1u64, 10u64, None);
    let writers = Arc::new(AtomicUsize::new(0));
    let c: Cache<u64, u64> = Cache::builder()
        .max_capacity(100)
        .store(Gated {
            inner: inner.clone(),
            gate: Mutex::new(()),
            writers: writers.clone(),
        })
        .build()
        .unwrap();
    support::within_a_minute(move || {
        let mut writer = None;
        let done = c
            .preload(
                |_, _| {
                    // A write-through insert of the key: it holds the key's lock and waits
                    // for the store, whose scan is running.
                    let c2 = c.clone();
                    writer = Some(std::thread::spawn(move || c2.insert(1, 20)));
                    while writers.load(Ordering::SeqCst) == 0 {
                        std::thread::yield_now();
                    }
                    true
                },
                |_| {},
            )
            .unwrap();
        writer.unwrap().join().unwrap().unwrap();
        assert_eq!((done.loaded, done.skipped), (0, 1));
        assert_eq!(c.get(&1), Some(20));
    });
    assert_eq!(inner.snapshot().get(&1).map(|s| s.value), Some(20));
}
