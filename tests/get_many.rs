//! `get_many`: the same answers as one `get` per key, in order, with the same stats.

use cogwheel::{Cache, ManualClock};
use std::time::Duration;

fn cache(cap: u64) -> Cache<u64, u64, ahash::RandomState> {
    Cache::builder()
        .max_capacity(cap)
        .hasher(cogwheel::fixed_hasher(5))
        .build()
        .unwrap()
}

#[test]
fn answers_like_get_in_order() {
    let c = cache(10_000);
    for k in (0..5_000u64).step_by(2) {
        c.insert(k, k * 10).unwrap();
    }
    // Present and absent keys, repeats, and more keys than one pin covers (4096).
    let keys: Vec<u64> = (0..12_000u64).map(|i| (i * 7919) % 6_000).collect();
    let many = c.get_many(&keys);
    assert_eq!(many.len(), keys.len());
    for (k, v) in keys.iter().zip(&many) {
        assert_eq!(*v, c.get(k), "key {k}");
        assert_eq!(*v, (k % 2 == 0 && *k < 5_000).then_some(k * 10), "key {k}");
    }
}

#[test]
fn counts_a_hit_or_miss_per_key() {
    let c = cache(100);
    c.insert(1, 1).unwrap();
    c.insert(2, 2).unwrap();
    assert_eq!(
        c.get_many(&[1, 2, 3, 1, 4]),
        vec![Some(1), Some(2), None, Some(1), None]
    );
    let s = c.stats();
    assert_eq!((s.hits, s.misses), (3, 2));
    assert!(c.get_many(&[]).is_empty());
    let s = c.stats();
    assert_eq!((s.hits, s.misses), (3, 2), "an empty batch counts nothing");
}

#[test]
fn borrowed_keys() {
    let c: Cache<String, u32> = Cache::builder().max_capacity(10).build().unwrap();
    c.insert("a".to_string(), 1).unwrap();
    c.insert("c".to_string(), 3).unwrap();
    assert_eq!(c.get_many(["a", "b", "c"]), vec![Some(1), None, Some(3)]);
}

#[test]
fn expired_entries_are_misses_and_reads_extend_idle_time() {
    let clock = ManualClock::new();
    let c: Cache<u64, u64> = Cache::builder()
        .max_capacity(100)
        .time_to_idle(Duration::from_secs(10))
        .clock(clock.clone())
        .build()
        .unwrap();
    c.insert(1, 1).unwrap();
    c.insert_with_ttl(2, 2, Duration::from_secs(5)).unwrap();
    clock.advance(Duration::from_secs(6));
    // 2's TTL has passed; reading 1 restarts its idle time.
    assert_eq!(c.get_many(&[1, 2]), vec![Some(1), None]);
    clock.advance(Duration::from_secs(6));
    assert_eq!(
        c.get_many(&[1]),
        vec![Some(1)],
        "read 6 s ago: still idle-alive"
    );
    clock.advance(Duration::from_secs(11));
    assert_eq!(c.get_many(&[1]), vec![None], "idle for 11 s");
}

#[test]
fn capacity_zero_and_empty_caches_answer_none() {
    let zero: Cache<u64, u64> = Cache::builder().max_capacity(0).build().unwrap();
    zero.insert(1, 1).unwrap();
    assert_eq!(zero.get_many(&[1, 2]), vec![None, None]);
    let empty: Cache<u64, u64> = Cache::builder().max_capacity(1000).build().unwrap();
    let keys: Vec<u64> = (0..100).collect();
    assert_eq!(empty.get_many(&keys), vec![None; 100]);
    assert_eq!(empty.stats().misses, 100);
}
