//! The write-through and read-through contracts against an in-memory store with faults.

use cogwheel::store::{Applied, FaultKind, Faults, MemoryStore, StoreErrorKind};
use cogwheel::{Cache, Error};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

fn cache(store: &MemoryStore<u64, u64>) -> Cache<u64, u64> {
    Cache::builder()
        .max_capacity(10_000)
        .store(store.clone())
        .build()
        .unwrap()
}

#[test]
fn ok_means_the_store_holds_it_then_the_cache() {
    let store = MemoryStore::new();
    let c = cache(&store);
    c.insert(1, 10).unwrap();
    assert_eq!(store.snapshot().get(&1).map(|s| s.value), Some(10));
    assert_eq!(c.get(&1), Some(10));
    assert_eq!(c.remove(&1).unwrap(), Some(10));
    assert!(
        !store.snapshot().contains_key(&1),
        "remove deletes from the store"
    );
    assert_eq!(c.get(&1), None);
    assert_eq!(c.fetch(&1).unwrap(), None, "no read-through resurrection");
    assert_eq!(c.stats().store_writes, 2);
}

#[test]
fn fail_leaves_both_unchanged() {
    let store = MemoryStore::new();
    let c = cache(&store);
    c.insert(1, 10).unwrap();
    store.set_faults(Faults::failing(100, FaultKind::Fail, 1));
    let e = c.insert(1, 11).unwrap_err();
    assert!(matches!(&e, Error::Store(s) if s.kind() == StoreErrorKind::Fail));
    assert_eq!(c.get(&1), Some(10), "the cache kept the old value");
    assert!(c.remove(&1).is_err());
    assert_eq!(c.get(&1), Some(10), "a failed remove changes nothing");
    store.clear_faults();
    assert_eq!(store.snapshot().get(&1).map(|s| s.value), Some(10));
    assert_eq!(c.stats().store_write_errors, 2);
}

#[test]
fn unknown_invalidates_the_cache_entry() {
    for applied in [Applied::Nothing, Applied::All] {
        let store = MemoryStore::new();
        let c = cache(&store);
        c.insert(1, 10).unwrap();
        store.set_faults(Faults::failing(100, FaultKind::Unknown { applied }, 1).writes_only());
        let e = c.insert(1, 11).unwrap_err();
        assert!(matches!(&e, Error::Store(s) if s.kind() == StoreErrorKind::Unknown));
        assert_eq!(
            c.get(&1),
            None,
            "the cache serves neither the old nor the new value"
        );
        store.clear_faults();
        let expect = if applied == Applied::All { 11 } else { 10 };
        assert_eq!(
            c.fetch(&1).unwrap(),
            Some(expect),
            "read-through finds what the store really holds"
        );
    }
}

/// Under 1–50 % injected failures of both kinds, from several threads: after every
/// operation, every value the cache serves is exactly what the store holds.
#[test]
fn never_serves_a_value_the_store_lacks() {
    for (pct, kind) in [
        (1, FaultKind::Fail),
        (
            10,
            FaultKind::Unknown {
                applied: Applied::All,
            },
        ),
        (
            25,
            FaultKind::Unknown {
                applied: Applied::Nothing,
            },
        ),
        (50, FaultKind::Fail),
        (
            50,
            FaultKind::Unknown {
                applied: Applied::Prefix(0),
            },
        ),
    ] {
        let store = MemoryStore::new();
        store.set_faults(Faults::failing(pct, kind, pct as u64).writes_only());
        let c = cache(&store);
        let barrier = Arc::new(Barrier::new(4));
        let handles: Vec<_> = (0..4u64)
            .map(|t| {
                let (c, barrier) = (c.clone(), barrier.clone());
                thread::spawn(move || {
                    barrier.wait();
                    let mut errors = 0;
                    for i in 0..2000u64 {
                        // Disjoint keys per thread: the store's value for the key is exactly
                        // this thread's last successful write, so the check is exact.
                        let k = t * 1000 + i % 50;
                        let r = if i % 5 == 4 {
                            c.remove(&k).map(|_| ())
                        } else {
                            c.insert(k, i)
                        };
                        errors += usize::from(r.is_err());
                    }
                    errors
                })
            })
            .collect();
        let errors: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert!(errors > 0, "faults were injected ({pct} %)");
        let snap = store.snapshot();
        for (k, v) in c.iter() {
            assert_eq!(
                snap.get(&k).map(|s| s.value),
                Some(v),
                "cache serves {k}={v} the store lacks ({pct} % {kind:?})"
            );
        }
    }
}

/// Two writers of one key against a slow store: the cache ends equal to the store.
#[test]
fn racing_writers_of_one_key_agree_with_the_store() {
    let store = MemoryStore::new();
    store.set_latency(Some(Duration::from_micros(200)));
    let c = cache(&store);
    let barrier = Arc::new(Barrier::new(2));
    let hs: Vec<_> = (0..2u64)
        .map(|t| {
            let (c, barrier) = (c.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                for i in 0..200u64 {
                    c.insert(7, t * 1_000_000 + i).unwrap();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    assert_eq!(c.get(&7), store.snapshot().get(&7).map(|s| s.value));
}

#[test]
fn read_through_with_a_slow_store_loads_once() {
    let store = MemoryStore::new();
    store.insert(3, 30, None);
    store.set_latency(Some(Duration::from_millis(20)));
    let c = cache(&store);
    let barrier = Arc::new(Barrier::new(8));
    let hs: Vec<_> = (0..8)
        .map(|_| {
            let (c, barrier) = (c.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                c.fetch(&3).unwrap()
            })
        })
        .collect();
    for h in hs {
        assert_eq!(h.join().unwrap(), Some(30));
    }
    assert_eq!(
        store.calls().loads,
        1,
        "one store load for eight concurrent misses"
    );
    assert_eq!(c.get(&3), Some(30), "read-through populated the cache");
    assert_eq!(
        c.fetch(&4).unwrap(),
        None,
        "a missing key is a miss, not an error"
    );
    assert!(c.stats().store_hits >= 1);
}

#[test]
fn read_through_errors_are_returned_not_cached() {
    let store = MemoryStore::new();
    store.insert(3, 30, None);
    let c = cache(&store);
    store.set_down(true);
    assert!(matches!(c.fetch(&3), Err(Error::Store(_))));
    store.set_down(false);
    assert_eq!(c.fetch(&3).unwrap(), Some(30));
    // Only the store error was a failed load; an absent record is an answer.
    assert_eq!(c.fetch(&4).unwrap(), None);
    let s = c.stats();
    assert_eq!((s.loads, s.load_failures), (3, 1));
}

#[test]
fn a_manual_clock_moves_stored_deadlines_too() {
    // Store deadlines are wall-clock times; with a manual clock the cache judges them by that
    // clock, so a read-through does not bring back what the cache has just expired.
    let store = MemoryStore::new();
    let clock = cogwheel::ManualClock::new();
    let c: Cache<u64, u64> = Cache::builder()
        .max_capacity(100)
        .clock(clock.clone())
        .store(store.clone())
        .build()
        .unwrap();
    c.insert_with_ttl(1, 1, Duration::from_secs(10)).unwrap();
    clock.advance(Duration::from_secs(4));
    c.invalidate_all();
    // Read through with 6 s left: cached with the stored deadline, not a fresh TTL.
    assert_eq!(c.fetch(&1).unwrap(), Some(1));
    clock.advance(Duration::from_secs(6));
    assert_eq!(c.get(&1), None, "expired in the cache");
    assert_eq!(
        c.fetch(&1).unwrap(),
        None,
        "and not resurrected from the store"
    );
    assert_eq!(c.get(&1), None);
}

#[test]
fn stored_deadlines_carry_over_on_read_through() {
    let store = MemoryStore::new();
    let c: Cache<u64, u64> = Cache::builder()
        .max_capacity(100)
        .time_to_live(Duration::from_secs(3600))
        .store(store.clone())
        .build()
        .unwrap();
    c.insert(1, 1).unwrap();
    let at = store.snapshot()[&1]
        .expires_at
        .expect("the TTL reached the store");
    let left = at.duration_since(std::time::SystemTime::now()).unwrap();
    assert!(left > Duration::from_secs(3500) && left <= Duration::from_secs(3600));
    store.insert(
        2,
        2,
        Some(std::time::SystemTime::now() - Duration::from_secs(1)),
    );
    assert_eq!(
        c.fetch(&2).unwrap(),
        None,
        "an expired stored value is a miss"
    );
}

#[test]
fn the_weigher_runs_once_per_write() {
    // A weigher that answers differently each time (here: light, then heavy) must not make
    // the store and the caller disagree: the write is weighed once, and that weight decides.
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let c2 = calls.clone();
    let store = MemoryStore::new();
    let c: Cache<u64, u64> = Cache::builder()
        .max_weight(100)
        .weigher(move |_, _| {
            if c2
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                .is_multiple_of(2)
            {
                1
            } else {
                1000
            }
        })
        .store(store.clone())
        .build()
        .unwrap();
    c.insert(1, 10).unwrap();
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(store.snapshot().get(&1).map(|s| s.value), Some(10));
    assert_eq!(c.get(&1), Some(10));
}
