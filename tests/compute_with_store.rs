//! `compute` over a backing store, write-through and write-behind: a refused value touches
//! neither the store nor the cache, and a `Remove` decided on a key the cache does not hold
//! still deletes it from the store.

use cogwheel::store::MemoryStore;
use cogwheel::{Cache, Compute, Error, WriteBehind, WritePolicy};

fn caches(store: &MemoryStore<u64, Vec<u8>>) -> [(&'static str, Cache<u64, Vec<u8>>); 2] {
    let build = |policy: WritePolicy| {
        Cache::builder()
            .max_weight(100)
            .weigher(|_, v: &Vec<u8>| v.len() as u32)
            .shards(1)
            .store(store.clone())
            .write_policy(policy)
            .build()
            .unwrap()
    };
    [
        ("write-through", build(WritePolicy::WriteThrough)),
        (
            "write-behind",
            build(WritePolicy::WriteBehind(
                WriteBehind::default().manual(true),
            )),
        ),
    ]
}

#[test]
fn a_computed_value_too_heavy_for_its_shard_changes_nothing() {
    for i in 0..2 {
        let store = MemoryStore::new();
        let (mode, c) = caches(&store).into_iter().nth(i).unwrap();
        c.insert(1, vec![1; 10]).unwrap();
        c.flush().unwrap();
        let r = c.compute(1, |_| Compute::Put(vec![2; 101]));
        assert!(matches!(r, Err(Error::TooHeavy)), "{mode}: {r:?}");
        assert_eq!(c.dirty_count(), 0, "{mode}: nothing recorded");
        c.flush().unwrap();
        assert_eq!(
            c.get(&1),
            Some(vec![1; 10]),
            "{mode}: the cache kept its value"
        );
        assert_eq!(
            store.snapshot().get(&1).map(|s| s.value.clone()),
            Some(vec![1; 10]),
            "{mode}: the store kept its value"
        );
    }
}

#[test]
fn a_remove_decided_on_a_key_only_in_the_store_deletes_it_there() {
    for i in 0..2 {
        let store = MemoryStore::new();
        store.insert(1, vec![1], None);
        let (mode, c) = caches(&store).into_iter().nth(i).unwrap();
        let seen = c
            .compute(1, |cur| {
                assert!(cur.is_none(), "compute does not read through");
                Compute::Remove
            })
            .unwrap();
        assert_eq!(seen, None);
        assert_eq!(
            c.fetch(&1).unwrap(),
            None,
            "{mode}: not read back from the store"
        );
        c.flush().unwrap();
        assert!(
            !store.snapshot().contains_key(&1),
            "{mode}: deleted in the store"
        );
    }
}

#[test]
fn a_compute_whose_value_the_cache_cannot_keep_returns() {
    // A zero TTL: nothing is kept, in the cache or in the store; as with `insert`, the put
    // supersedes the old value, so the store gets a delete.
    let store = MemoryStore::new();
    store.insert(1, 1, None);
    let c: Cache<u64, u64> = Cache::builder()
        .max_capacity(10)
        .time_to_live(std::time::Duration::ZERO)
        .store(store.clone())
        .build()
        .unwrap();
    assert_eq!(c.compute(1, |_| Compute::Put(10)).unwrap(), None);
    assert!(
        !store.snapshot().contains_key(&1),
        "the old value was deleted"
    );
    assert_eq!(c.fetch(&1).unwrap(), None);
    // Capacity 0 without a store.
    let plain: Cache<u64, u64> = Cache::builder().max_capacity(0).build().unwrap();
    assert_eq!(plain.compute(1, |_| Compute::Put(10)).unwrap(), None);
    assert_eq!(plain.get(&1), None);
}

#[test]
fn a_cache_of_capacity_zero_still_writes_to_its_store() {
    for behind in [false, true] {
        let store = MemoryStore::new();
        let mut b = Cache::builder().max_capacity(0).store(store.clone());
        if behind {
            b = b.write_policy(WritePolicy::WriteBehind(
                WriteBehind::default().manual(true),
            ));
        }
        let c: Cache<u64, u64> = b.build().unwrap();
        c.insert(1, 10).unwrap();
        c.compute(2, |_| Compute::Put(20)).unwrap();
        c.flush().unwrap();
        let stored = store.snapshot();
        assert_eq!(
            stored.get(&1).map(|s| s.value),
            Some(10),
            "behind: {behind}"
        );
        assert_eq!(
            stored.get(&2).map(|s| s.value),
            Some(20),
            "behind: {behind}"
        );
        assert_eq!(
            (c.get(&1), c.len()),
            (None, 0),
            "the cache itself keeps nothing"
        );
    }
}

mod support;

#[test]
fn compute_may_write_another_key_that_shares_its_key_lock() {
    // Keys whose key-lock stripe is the same (the stripe comes from hash bits 20 and up).
    let h = cogwheel::fixed_hasher(1);
    let stripe = |k: u64| (std::hash::BuildHasher::hash_one(&h, k) >> 20) & 4095;
    let other = (1u64..).find(|&k| stripe(k) == stripe(0)).unwrap();
    let store = MemoryStore::new();
    let c: Cache<u64, u64, _> = Cache::builder()
        .max_capacity(100)
        .hasher(h.clone())
        .store(store.clone())
        .build()
        .unwrap();
    let c2 = c.clone();
    support::within_a_minute(move || {
        c2.compute(0, |_| {
            c2.compute(other, |_| Compute::Put(2)).unwrap();
            c2.insert(other, 3).unwrap(); // a write-through insert, same stripe
            Compute::Put(1)
        })
        .unwrap();
    });
    assert_eq!((c.get(&0), c.get(&other)), (Some(1), Some(3)));
    assert_eq!(store.snapshot().get(&other).map(|s| s.value), Some(3));
}

#[test]
fn a_store_that_panics_after_applying_a_write_leaves_no_stale_value_cached() {
    use cogwheel::store::{BackingStore, StoreError, Stored, WriteOp};
    use std::sync::atomic::{AtomicBool, Ordering};
    struct AppliesThenPanics {
        inner: MemoryStore<u64, u64>,
        panic: std::sync::Arc<AtomicBool>,
    }
    impl BackingStore<u64, u64> for AppliesThenPanics {
        fn load(&self, key: &u64) -> Result<Option<Stored<u64>>, StoreError> {
            self.inner.load(key)
        }
        fn write_batch(&self, ops: &[WriteOp<'_, u64, u64>]) -> Result<(), StoreError> {
            self.inner.write_batch(ops)?;
            assert!(
                !self.panic.load(Ordering::SeqCst),
                "the store fails after applying"
            );
            Ok(())
        }
    }
    let store = MemoryStore::new();
    let panic = std::sync::Arc::new(AtomicBool::new(false));
    let c: Cache<u64, u64> = Cache::builder()
        .max_capacity(100)
        .store(AppliesThenPanics {
            inner: store.clone(),
            panic: panic.clone(),
        })
        .build()
        .unwrap();
    c.insert(1, 1).unwrap();
    panic.store(true, Ordering::SeqCst);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.insert(1, 2)));
    assert!(r.is_err(), "the store's panic reaches the caller");
    assert_eq!(store.snapshot().get(&1).map(|s| s.value), Some(2));
    assert_ne!(
        c.get(&1),
        Some(1),
        "the cache serves a value the store no longer holds"
    );
}
