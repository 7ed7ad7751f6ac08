//! Write-behind and eviction: dirty entries are pinned, a shard full of them makes the writer
//! store before anything is evicted, capacity stays a true bound, and read-through never
//! serves a stale store value over a pending write.

use cogwheel::store::MemoryStore;
use cogwheel::{Cache, WriteBehind, WritePolicy};

fn store_value(store: &MemoryStore<u64, u64>, k: u64) -> Option<u64> {
    store.snapshot().get(&k).map(|s| s.value)
}

/// One shard, manual write-behind (no writer thread: rounds run when asked or when a caller
/// must wait for one), and a dirty budget above the capacity, so every entry can be dirty.
fn all_dirty_able(store: &MemoryStore<u64, u64>) -> cogwheel::CacheBuilder<u64, u64> {
    Cache::builder()
        .shards(1)
        .store(store.clone())
        .write_policy(WritePolicy::WriteBehind(
            WriteBehind::default().manual(true).max_dirty(1000),
        ))
}

/// A store holding 5 → 500 and 6 → 600; a cache with a pending write 5 → 5 and a pending
/// delete of 6, both out of the cache (`invalidate_all`).
fn pending_over_stale_values() -> (MemoryStore<u64, u64>, Cache<u64, u64>) {
    let store = MemoryStore::new();
    store.insert(5, 500, None);
    store.insert(6, 600, None);
    let c = all_dirty_able(&store).max_capacity(100).build().unwrap();
    c.insert(5, 5).unwrap();
    c.remove(&6).unwrap();
    c.invalidate_all();
    (store, c)
}

#[test]
fn a_shard_full_of_dirty_entries_has_them_stored_before_it_evicts() {
    let store = MemoryStore::new();
    let c = all_dirty_able(&store).max_capacity(8).build().unwrap();
    for i in 0..8 {
        c.insert(i, i).unwrap();
    }
    assert_eq!(c.dirty_count(), 8);
    assert_eq!(store.len(), 0, "nothing written yet");
    // Every entry is pinned: this insert cannot evict, so it waits for a writer round (here:
    // runs one) instead of spinning or evicting a dirty value.
    c.insert(100, 100).unwrap();
    for i in 0..8 {
        assert_eq!(
            store_value(&store, i),
            Some(i),
            "stored before any eviction"
        );
    }
    assert!(c.len() <= 8);
    assert_eq!(c.get(&100), Some(100));
    for i in 0..8 {
        assert_eq!(c.fetch(&i).unwrap(), Some(i), "no acknowledged write lost");
    }
}

#[test]
fn reads_prefer_a_pending_put_or_delete_to_a_stale_store_value_or_a_loader() {
    let (store, c) = pending_over_stale_values();
    // Out of the cache, still pending: read-through must not load 500 or resurrect 600.
    assert_eq!(c.dirty_count(), 2);
    assert_eq!(c.get_with(5, || 999).unwrap(), 5, "nor a loader's value");
    c.invalidate_all();
    assert_eq!(c.fetch(&5).unwrap(), Some(5), "not the stale 500");
    assert_eq!(c.fetch(&6).unwrap(), None, "the pending delete wins");
    c.flush().unwrap();
    assert_eq!(store_value(&store, 5), Some(5));
    assert_eq!(store_value(&store, 6), None);
}

/// A one-shard cache of weight 10 (the weight is the value) holding ten dirty entries of
/// weight 1: full, and every entry pinned.
fn ten_dirty_units() -> (MemoryStore<u64, u64>, Cache<u64, u64>) {
    let store = MemoryStore::new();
    let c = all_dirty_able(&store)
        .max_weight(10)
        .weigher(|_, v: &u64| *v as u32)
        .build()
        .unwrap();
    for i in 0..10 {
        c.insert(i, 1).unwrap();
    }
    (store, c)
}

#[test]
fn a_weight_update_over_dirty_entries_never_exceeds_max_weight() {
    let (store, c) = ten_dirty_units();
    assert_eq!((c.weighted_size(), c.dirty_count()), (10, 10));
    // Key 3 grows by 4: the room is held by dirty entries only. The update waits for them
    // to be stored, then evicts; the bound holds throughout.
    c.insert(3, 5).unwrap();
    assert!(c.weighted_size() <= 10, "{} > 10", c.weighted_size());
    assert_eq!(c.get(&3), Some(5));
    for i in (0..10).filter(|&i| i != 3) {
        assert_eq!(c.fetch(&i).unwrap(), Some(1), "no acknowledged write lost");
    }
    c.flush().unwrap();
    assert_eq!(store_value(&store, 3), Some(5));
}

#[test]
fn a_preload_never_undoes_a_pending_write_or_delete() {
    let (_store, c) = pending_over_stale_values();
    let p = c.preload(|_, _| true, |_| {}).unwrap();
    assert_eq!(
        (p.loaded, p.skipped),
        (0, 2),
        "both keys have newer pending writes"
    );
    assert_eq!(c.get(&6), None, "the removed key did not come back");
    assert_eq!(c.fetch(&5).unwrap(), Some(5));
}

#[test]
fn a_recorded_write_refused_for_room_never_leaves_the_older_value_served() {
    let (store, c) = ten_dirty_units();
    // Key 3 grows by 4, the room is held by dirty entries, and the round this thread runs
    // to make room fails: the write is recorded (it stays pending) but the call fails.
    store.set_down(true);
    assert!(matches!(
        c.insert(3, 5),
        Err(cogwheel::Error::Unflushed { .. })
    ));
    assert_ne!(c.get(&3), Some(1), "the superseded value is not served");
    assert_eq!(c.fetch(&3).unwrap(), Some(5), "the pending write is");
    store.set_down(false);
    c.flush().unwrap();
    assert_eq!(store_value(&store, 3), Some(5));
}
