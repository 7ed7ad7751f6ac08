//! The cogwheel demo: reader and writer threads on one bounded cache, eviction at work, and
//! the statistics at the end.
//!
//! Run with `cargo run --release --example demo`.

use cogwheel::{Cache, RemovalCause};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Instant;

const KEYS: u64 = 50_000;
const CAPACITY: u64 = 10_000;
const READERS: u64 = 4;
const WRITERS: u64 = 2;
const OPS: u64 = 500_000;

fn main() {
    let evicted = Arc::new(AtomicU64::new(0));
    let ev = evicted.clone();
    let cache: Cache<u64, Arc<String>> = Cache::builder()
        .max_capacity(CAPACITY)
        .eviction_listener(move |_k, _v, cause| {
            if cause == RemovalCause::Evicted {
                ev.fetch_add(1, Ordering::Relaxed);
            }
        })
        .build()
        .expect("valid settings");

    println!(
        "cogwheel demo: {READERS} readers and {WRITERS} writers, {KEYS} keys, capacity {CAPACITY}"
    );
    let start = Instant::now();
    let mut handles = Vec::new();
    for w in 0..WRITERS {
        let cache = cache.clone();
        handles.push(thread::spawn(move || {
            let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ w;
            for _ in 0..OPS / 4 {
                x = xorshift(x);
                let k = skewed(x);
                cache
                    .insert(k, Arc::new(format!("value of {k}")))
                    .expect("no store, no error");
            }
        }));
    }
    for r in 0..READERS {
        let cache = cache.clone();
        handles.push(thread::spawn(move || {
            let mut x = 0x2545_f491_4f6c_dd1du64 ^ (r << 8);
            for _ in 0..OPS {
                x = xorshift(x);
                let k = skewed(x);
                if let Some(v) = cache.get(&k) {
                    assert_eq!(
                        *v,
                        format!("value of {k}"),
                        "a reader saw another key's value"
                    );
                }
            }
        }));
    }
    for h in handles {
        h.join().expect("demo thread panicked");
    }
    let elapsed = start.elapsed();
    let s = cache.stats();
    println!("done in {elapsed:.2?}");
    println!(
        "  entries now     {:>10} (capacity {CAPACITY})",
        cache.len()
    );
    println!(
        "  reads           {:>10}  hit ratio {:.1} %",
        s.requests(),
        100.0 * s.hit_ratio()
    );
    println!("  inserts         {:>10}  updates {}", s.inserts, s.updates);
    println!(
        "  evictions       {:>10}  (listener saw {})",
        s.evictions,
        evicted.load(Ordering::Relaxed)
    );
    assert!(cache.len() as u64 <= CAPACITY);
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// A skewed key: small keys are much more popular (roughly Zipf-like), so a cache a fifth of
/// the key space still hits often.
fn skewed(x: u64) -> u64 {
    let u = (x >> 11) as f64 / (1u64 << 53) as f64;
    ((KEYS as f64).powf(u) as u64).min(KEYS - 1)
}
