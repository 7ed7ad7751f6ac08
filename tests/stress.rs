//! Multi-threaded stress: 8 threads on disjoint and shared keys.

use cogwheel::Cache;
use std::collections::HashMap;
use std::sync::{Arc, Barrier};
use std::thread;

const THREADS: u64 = 8;
const OPS: u64 = 20_000;

/// Disjoint keys, capacity large enough: every thread reads its own writes, nothing is lost,
/// and the stats add up exactly.
#[test]
fn read_your_own_writes_on_disjoint_keys() {
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(THREADS * 1000 * 2)
        .shards(8)
        .build()
        .unwrap();
    let barrier = Arc::new(Barrier::new(THREADS as usize));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let cache = cache.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                let mut mine = HashMap::new();
                let (mut gets, mut hits, mut inserts, mut updates) = (0u64, 0u64, 0u64, 0u64);
                for i in 0..OPS {
                    let k = t * 1_000_000 + (i * 7919) % 1000;
                    if i % 3 == 0 {
                        gets += 1;
                        let got = cache.get(&k);
                        assert_eq!(
                            got,
                            mine.get(&k).copied(),
                            "thread {t} lost its write to {k}"
                        );
                        hits += u64::from(got.is_some());
                    } else {
                        let v = t << 32 | i;
                        cache.insert(k, v).unwrap();
                        if mine.insert(k, v).is_some() {
                            updates += 1
                        } else {
                            inserts += 1
                        }
                        assert_eq!(cache.get(&k), Some(v));
                        gets += 1;
                        hits += 1;
                    }
                }
                (mine, gets, hits, inserts, updates)
            })
        })
        .collect();
    let mut all = HashMap::new();
    let (mut gets, mut hits, mut inserts, mut updates) = (0, 0, 0, 0);
    for h in handles {
        let (m, g, hi, i, u) = h.join().unwrap();
        all.extend(m);
        gets += g;
        hits += hi;
        inserts += i;
        updates += u;
    }
    assert_eq!(cache.len(), all.len());
    for (k, v) in &all {
        assert_eq!(cache.get(k), Some(*v));
    }
    let s = cache.stats();
    assert_eq!(s.hits, hits + all.len() as u64);
    assert_eq!(s.misses, gets - hits);
    assert_eq!(s.inserts, inserts);
    assert_eq!(s.updates, updates);
    assert_eq!(s.evictions, 0);
    cache.validate_internals();
}

/// Shared keys with eviction: values are never torn (each value encodes its key), the bound
/// holds, the final state is one of the values written, and bookkeeping stays consistent.
#[test]
fn shared_keys_with_eviction() {
    shared_keys(false);
}

/// The same with a third of the keys written with a TTL: entries with and without a deadline
/// have different layouts, and both kinds of memory are reused under churn.
#[test]
fn shared_keys_with_eviction_and_both_entry_layouts() {
    shared_keys(true);
}

fn shared_keys(with_ttl: bool) {
    let cap = 500;
    let cache: Cache<u64, (u64, u64)> = Cache::builder().max_capacity(cap).build().unwrap();
    let barrier = Arc::new(Barrier::new(THREADS as usize));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let cache = cache.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                let mut x = t.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                for i in 0..OPS {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let k = x % 2000;
                    match i % 10 {
                        0..=4 => {
                            if let Some((key, _)) = cache.get(&k) {
                                assert_eq!(key, k, "value belongs to another key");
                            }
                        }
                        5 => {
                            // A batch read races with the same churn.
                            let keys = [k, (k + 1) % 2000, (k * 7) % 2000, k];
                            for (want, got) in keys.iter().zip(cache.get_many(&keys)) {
                                if let Some((key, _)) = got {
                                    assert_eq!(key, *want, "get_many: value of another key");
                                }
                            }
                        }
                        6..=8 if with_ttl && k % 3 == 0 => cache
                            .insert_with_ttl(k, (k, t), std::time::Duration::from_secs(3600))
                            .unwrap(),
                        6..=8 => cache.insert(k, (k, t)).unwrap(),
                        _ => {
                            if let Some((key, _)) = cache.remove(&k).unwrap() {
                                assert_eq!(key, k);
                            }
                        }
                    }
                    assert!(cache.len() as u64 <= cap);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert!(cache.len() as u64 <= cap);
    let s = cache.stats();
    assert_eq!(
        s.inserts - s.evictions - s.removals,
        cache.len() as u64,
        "every insert is accounted for"
    );
    for (k, (key, t)) in cache.iter() {
        assert_eq!(k, key);
        assert!(t < THREADS);
    }
    cache.validate_internals();
}
