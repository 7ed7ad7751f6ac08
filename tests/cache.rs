//! Behaviour of the public API on a single thread.

mod support;

use cogwheel::{BuildError, Cache, Error, EvictionPolicy, RemovalCause, fixed_hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

fn small(cap: u64, shards: usize) -> Cache<u64, u64, ahash::RandomState> {
    Cache::builder()
        .max_capacity(cap)
        .shards(shards)
        .hasher(fixed_hasher(1))
        .build()
        .unwrap()
}

#[test]
fn insert_get_update_remove() {
    let c = small(100, 2);
    assert_eq!(c.get(&1), None);
    c.insert(1, 10).unwrap();
    assert_eq!(c.get(&1), Some(10));
    assert!(c.contains_key(&1));
    c.insert(1, 11).unwrap();
    assert_eq!(c.get(&1), Some(11));
    assert_eq!(c.len(), 1);
    assert_eq!(c.remove(&1).unwrap(), Some(11));
    assert_eq!(c.remove(&1).unwrap(), None);
    assert!(!c.contains_key(&1));
    assert!(c.is_empty());
    let s = c.stats();
    assert_eq!(
        (s.hits, s.misses, s.inserts, s.updates, s.removals),
        (2, 1, 1, 1, 1)
    );
    assert!((s.hit_ratio() - 2.0 / 3.0).abs() < 1e-9);
}

#[test]
fn borrowed_lookups() {
    let c: Cache<String, u32> = Cache::builder().max_capacity(10).build().unwrap();
    c.insert("k".to_string(), 1).unwrap();
    assert_eq!(c.get("k"), Some(1));
    assert!(c.contains_key("k"));
    assert_eq!(c.remove("k").unwrap(), Some(1));
}

#[test]
fn len_never_exceeds_capacity() {
    for shards in [1, 2, 8] {
        for policy in [EvictionPolicy::default(), EvictionPolicy::Clock] {
            let c: Cache<u64, u64, _> = Cache::builder()
                .max_capacity(50)
                .shards(shards)
                .eviction_policy(policy)
                .hasher(fixed_hasher(3))
                .build()
                .unwrap();
            for i in 0..10_000u64 {
                c.insert(i % 997, i).unwrap();
                let _ = c.get(&(i % 13));
                assert!(c.len() <= 50, "len {} > 50 with {shards} shards", c.len());
            }
            let s = c.stats();
            assert_eq!(
                s.inserts - s.evictions,
                c.len() as u64,
                "inserts - evictions = len"
            );
        }
    }
}

#[test]
fn capacity_zero_stores_nothing() {
    let c = small(0, 1);
    c.insert(1, 1).unwrap();
    assert_eq!(c.get(&1), None);
    assert_eq!(c.len(), 0);
}

#[test]
fn invalidate_all_and_if() {
    let c = small(1000, 4);
    for i in 0..100 {
        c.insert(i, i * 2).unwrap();
    }
    assert_eq!(c.invalidate_if(|k, _| k % 2 == 0), 50);
    assert_eq!(c.len(), 50);
    assert!(c.get(&2).is_none());
    assert_eq!(c.get(&3), Some(6));
    c.invalidate_all();
    assert_eq!(c.len(), 0);
    assert!(c.get(&3).is_none());
    c.insert(3, 3).unwrap();
    assert_eq!(c.get(&3), Some(3), "usable after invalidate_all");
}

#[test]
fn iter_sees_every_entry_once() {
    let c = small(1000, 4);
    for i in 0..300 {
        c.insert(i, i + 1).unwrap();
    }
    let mut got: Vec<_> = c.iter().collect();
    got.sort();
    let want: Vec<_> = (0..300).map(|i| (i, i + 1)).collect();
    assert_eq!(got, want);
}

#[test]
fn listener_sees_every_cause() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let c: Cache<u64, u64, _> = Cache::builder()
        .max_capacity(2)
        .shards(1)
        .hasher(fixed_hasher(0))
        .eviction_listener(move |k, v, cause| s2.lock().unwrap().push((*k, *v, cause)))
        .build()
        .unwrap();
    c.insert(1, 1).unwrap();
    c.insert(1, 2).unwrap();
    c.remove(&1).unwrap();
    c.insert(2, 2).unwrap();
    c.insert(3, 3).unwrap();
    c.insert(4, 4).unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0], (1, 1, RemovalCause::Replaced));
    assert_eq!(seen[1], (1, 2, RemovalCause::Removed));
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[2].2, RemovalCause::Evicted);
    assert_eq!(c.stats().evictions, 1);
}

#[test]
fn listener_may_call_back_into_the_cache() {
    let slot: Arc<Mutex<Option<Cache<u64, u64>>>> = Arc::new(Mutex::new(None));
    let s2 = slot.clone();
    let c: Cache<u64, u64> = Cache::builder()
        .max_capacity(1)
        .shards(1)
        .eviction_listener(move |k, _, _| {
            if let Some(c) = s2.lock().unwrap().as_ref() {
                // Same shard, same thread: would deadlock if the lock were held.
                let _ = c.get(k);
                let _ = c.contains_key(&(k + 100));
            }
        })
        .build()
        .unwrap();
    *slot.lock().unwrap() = Some(c.clone());
    for i in 0..10 {
        c.insert(i, i).unwrap();
    }
    assert_eq!(c.len(), 1);
    slot.lock().unwrap().take();
}

#[test]
fn a_refused_replacement_reports_the_old_value_as_replaced_or_expired() {
    let clock = cogwheel::ManualClock::new();
    let heard = Arc::new(Mutex::new(Vec::new()));
    let h2 = heard.clone();
    let c: Cache<u64, Vec<u8>> = Cache::builder()
        .max_weight(100)
        .weigher(|_, v: &Vec<u8>| v.len() as u32)
        .shards(1)
        .clock(clock.clone())
        .eviction_listener(move |k, v: &Vec<u8>, cause| {
            h2.lock().unwrap().push((*k, v.len(), cause))
        })
        .build()
        .unwrap();
    c.insert(1, vec![0; 10]).unwrap();
    c.insert_with_ttl(2, vec![0; 20], std::time::Duration::from_secs(1))
        .unwrap();
    clock.advance(std::time::Duration::from_secs(2));
    assert!(matches!(c.insert(1, vec![0; 101]), Err(Error::TooHeavy)));
    assert!(matches!(c.insert(2, vec![0; 101]), Err(Error::TooHeavy)));
    assert_eq!(
        *heard.lock().unwrap(),
        vec![
            (1, 10, RemovalCause::Replaced),
            (2, 20, RemovalCause::Expired)
        ],
        "a value past its deadline had expired before the refused write"
    );
    assert_eq!((c.get(&1), c.get(&2)), (None, None));
}

#[test]
fn a_weight_bound_smaller_than_the_shard_count_leaves_no_empty_shard() {
    // Four shards over a weight of 2 would leave two shards with no room at all, refusing
    // every entry that hashes there; the cache uses two shards instead.
    let c: Cache<u64, u64> = Cache::builder()
        .max_weight(2)
        .shards(4)
        .hasher(fixed_hasher(0))
        .build()
        .unwrap();
    for k in 0..64 {
        c.insert(k, k).unwrap();
    }
    assert_eq!(c.stats().refused, 0);
    assert!(c.weighted_size() <= 2);
}

#[test]
fn an_identity_hasher_still_uses_every_shard() {
    // The identity on small integers (as nohash-hasher gives) leaves a hash's top bits zero;
    // the cache must still spread keys over its shards, not keep them all in one.
    #[derive(Default)]
    struct Identity(u64);
    impl std::hash::Hasher for Identity {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, bytes: &[u8]) {
            for b in bytes {
                self.0 = self.0 << 8 | u64::from(*b);
            }
        }
        fn write_u64(&mut self, n: u64) {
            self.0 = n;
        }
    }
    let c: Cache<u64, u64, std::hash::BuildHasherDefault<Identity>> = Cache::builder()
        .max_capacity(1024)
        .shards(16)
        .hasher(std::hash::BuildHasherDefault::<Identity>::default())
        .build()
        .unwrap();
    for k in 0..1000 {
        c.insert(k, k).unwrap();
    }
    assert!(c.len() > 900, "only {} of 1000 kept", c.len());
}

#[test]
fn weights_and_too_heavy() {
    let c: Cache<u64, Vec<u8>> = Cache::builder()
        .max_weight(100)
        .weigher(|_, v: &Vec<u8>| v.len() as u32)
        .shards(2)
        .build()
        .unwrap();
    assert!(
        matches!(c.insert(1, vec![0; 51]), Err(Error::TooHeavy)),
        "over a shard's share (50)"
    );
    assert_eq!(c.stats().refused, 1);
    c.insert(1, vec![0; 10]).unwrap();
    assert!(matches!(c.insert(1, vec![0; 60]), Err(Error::TooHeavy)));
    assert_eq!(
        c.get(&1),
        None,
        "a refused replacement removes the superseded value"
    );
    for i in 0..1000 {
        c.insert(i, vec![0; (i % 20) as usize]).unwrap();
        assert!(c.weighted_size() <= 100);
    }
    c.insert(5000, vec![]).unwrap();
    assert_eq!(c.get(&5000), Some(vec![]), "zero weight is allowed");
}

#[test]
fn the_weight_bound_holds_under_concurrent_inserts_and_reweighs() {
    let c: Cache<u64, u32> = Cache::builder()
        .max_weight(1000)
        .weigher(|_, v: &u32| *v)
        .build()
        .unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let writers: Vec<_> = (0..3u64)
            .map(|t| {
                let c = &c;
                s.spawn(move || {
                    // A small key space: most inserts replace a value with another weight.
                    let mut x = t + 1;
                    for _ in 0..20_000 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let r = c.insert(x % 500, (x >> 32) as u32 % 21);
                        assert!(r.is_ok() || matches!(r, Err(Error::TooHeavy)), "{r:?}");
                    }
                })
            })
            .collect();
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                assert!(c.weighted_size() <= 1000, "{}", c.weighted_size());
                std::thread::yield_now();
            }
        });
        for w in writers {
            w.join().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    assert!(c.weighted_size() <= 1000);
    let held: u64 = c.iter().map(|(_, v)| u64::from(v)).sum();
    assert_eq!(
        held,
        c.weighted_size(),
        "the reported weight is what is held"
    );
}

#[test]
fn builder_errors_are_values() {
    let e = Cache::<u8, u8>::builder()
        .shards(6)
        .max_capacity(1)
        .build()
        .unwrap_err();
    assert_eq!(e, BuildError::Shards(6));
    // "Unbounded" by entry count is refused with a clear error, not an allocation abort.
    let e = Cache::<u8, u8>::builder()
        .max_capacity(u64::MAX)
        .build()
        .unwrap_err();
    assert!(
        matches!(&e, BuildError::Invalid(m) if m.contains("max_weight")),
        "{e:?}"
    );
}

#[test]
fn values_are_dropped_exactly_once() {
    #[derive(Default)]
    struct Tally {
        made: AtomicUsize,
        dropped: AtomicUsize,
    }
    struct Counted(Arc<Tally>);
    impl Counted {
        fn new(t: &Arc<Tally>) -> Self {
            t.made.fetch_add(1, Ordering::Relaxed);
            Counted(t.clone())
        }
    }
    impl Clone for Counted {
        fn clone(&self) -> Self {
            Counted::new(&self.0)
        }
    }
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
    let tally = Arc::new(Tally::default());
    {
        let c: Cache<u64, Counted> = Cache::builder().max_capacity(16).shards(1).build().unwrap();
        for i in 0..2000u64 {
            c.insert(i % 40, Counted::new(&tally)).unwrap();
            if i % 7 == 0 {
                let _ = c.remove(&(i % 40)).unwrap();
            }
            let _ = c.get(&(i % 11));
            if i % 500 == 0 {
                c.invalidate_all();
            }
        }
        let _: Vec<_> = c.iter().collect();
        assert!(tally.dropped.load(Ordering::Relaxed) < tally.made.load(Ordering::Relaxed));
    }
    // The cache is gone: every value it owned, retired or handed out was dropped exactly once.
    assert_eq!(
        tally.dropped.load(Ordering::Relaxed),
        tally.made.load(Ordering::Relaxed)
    );
}

#[test]
fn values_retired_on_other_threads_are_dropped_with_the_cache() {
    let made = Arc::new(AtomicUsize::new(0));
    let freed = Arc::new(AtomicUsize::new(0));
    struct V(Arc<AtomicUsize>, Arc<AtomicUsize>);
    impl Clone for V {
        fn clone(&self) -> Self {
            self.0.fetch_add(1, Ordering::SeqCst);
            V(self.0.clone(), self.1.clone())
        }
    }
    impl Drop for V {
        fn drop(&mut self) {
            self.1.fetch_add(1, Ordering::SeqCst);
        }
    }
    let new = || {
        made.fetch_add(1, Ordering::SeqCst);
        V(made.clone(), freed.clone())
    };
    let c: Cache<u64, V> = Cache::builder().max_capacity(4).shards(1).build().unwrap();
    c.insert(1, new()).unwrap();
    let v2 = new();
    let c2 = c.clone();
    std::thread::spawn(move || c2.insert(1, v2).unwrap())
        .join()
        .unwrap();
    let _ = c.remove(&1).unwrap();
    drop(c);
    assert_eq!(made.load(Ordering::SeqCst), freed.load(Ordering::SeqCst));
}

#[test]
fn values_retired_on_a_thread_that_is_still_alive_are_dropped_with_the_cache() {
    // A pool thread that used the cache and lives on (it never uses another cache) holds the
    // deferred drops of what it retired in its epoch bag; dropping the cache must not wait
    // for that thread to exit.
    let made = Arc::new(AtomicUsize::new(0));
    let freed = Arc::new(AtomicUsize::new(0));
    struct V(Arc<AtomicUsize>);
    impl Clone for V {
        fn clone(&self) -> Self {
            unreachable!("not read in this test")
        }
    }
    impl Drop for V {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let new = || {
        made.fetch_add(1, Ordering::SeqCst);
        V(freed.clone())
    };
    // Capacity 4: every retired entry is a batch of its own, deferred at once.
    let c: Cache<u64, V> = Cache::builder().max_capacity(4).shards(1).build().unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let (exit_tx, exit_rx) = std::sync::mpsc::channel::<()>();
    let (c2, values) = (c.clone(), [new(), new(), new()]);
    let worker = std::thread::spawn(move || {
        for v in values {
            c2.insert(1, v).unwrap();
        }
        drop(c2);
        done_tx.send(()).unwrap();
        let _ = exit_rx.recv();
    });
    done_rx.recv().unwrap();
    drop(c);
    assert_eq!(
        made.load(Ordering::SeqCst),
        freed.load(Ordering::SeqCst),
        "every value dropped while the worker is still alive"
    );
    exit_tx.send(()).unwrap();
    worker.join().unwrap();
}

#[test]
fn a_key_whose_hash_panics_during_a_table_rebuild_leaves_the_shard_consistent() {
    use support::PanicKey as K;
    // Zero-weight entries do not count against the capacity, so the table has to grow.
    let c: Cache<K, u64> = Cache::builder()
        .max_weight(64)
        .weigher(|_, _| 0)
        .shards(1)
        .build()
        .unwrap();
    let mut rebuilt = false;
    for i in 0..100_000u64 {
        // Only a rebuild hashes keys other than the inserted one: the tenth panics midway.
        if K::armed(i, 10, || c.insert(K(i), i)).is_err() {
            rebuilt = true;
            break;
        }
    }
    assert!(rebuilt, "no rebuild happened");
    c.validate_internals();
    for i in 200_000..200_500u64 {
        c.insert(K(i), i).unwrap();
    }
    c.validate_internals();
    assert_eq!(c.get(&K(200_499)), Some(200_499));
}

#[test]
fn a_value_whose_drop_panics_does_not_leak_the_others() {
    #[derive(Clone)]
    struct Loud {
        bomb: bool,
        drops: Arc<AtomicUsize>,
    }
    impl Drop for Loud {
        fn drop(&mut self) {
            self.drops.fetch_add(1, Ordering::SeqCst);
            assert!(!self.bomb, "planned: a value's destructor panics");
        }
    }
    let drops = Arc::new(AtomicUsize::new(0));
    let loud = |bomb| Loud {
        bomb,
        drops: drops.clone(),
    };
    // One shard of 64: replaced values wait in batches of 4 for the epoch, so the two
    // replaced here are still together when the cache is dropped.
    let c: Cache<u64, Loud> = Cache::builder().max_capacity(64).shards(1).build().unwrap();
    c.insert(1, loud(true)).unwrap();
    c.insert(1, loud(false)).unwrap();
    c.insert(1, loud(false)).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(c)));
    assert!(
        r.is_err(),
        "the destructor's panic reaches the dropping caller"
    );
    assert_eq!(drops.load(Ordering::SeqCst), 3, "every value was dropped");
}
