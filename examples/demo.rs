//! The cogwheel demo, on the embedded redb store (no server needed):
//!
//! 1. single-flight: 8 threads ask for the same missing key at once (3 keys in turn); each
//!    key is computed once;
//! 2. readers and writers on one bounded cache: eviction at work, writes going behind to redb;
//! 3. expiry: short-lived entries reclaimed by the maintenance thread, with no traffic;
//! 4. restart: the cache is closed, a new one is built over the same file, and the data is back.
//!
//! Run with `cargo run --release --example demo [-- DIR]` (DIR defaults to a temporary
//! directory). It checks what it prints: a phase that goes wrong stops it with a panic.

use cogwheel::store::RedbStore;
use cogwheel::{Cache, RemovalCause, WriteBehind, WritePolicy};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

type Err = Box<dyn std::error::Error>;

const KEYS: u64 = 50_000;
const CAPACITY: u64 = 10_000;

fn main() -> Result<(), Err> {
    let tmp = tempfile::tempdir()?;
    let dir = std::env::args()
        .nth(1)
        .map_or_else(|| tmp.path().to_path_buf(), Into::into);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("demo.redb");
    let _ = std::fs::remove_file(&path);
    println!("cogwheel demo: store {}", path.display());

    let expired = Arc::new(AtomicU64::new(0));
    let evicted = Arc::new(AtomicU64::new(0));
    let cache = {
        let (ex, ev) = (expired.clone(), evicted.clone());
        Cache::<u64, Arc<String>>::builder()
            .max_capacity(CAPACITY)
            .store(RedbStore::open(&path)?)
            .write_policy(WritePolicy::WriteBehind(
                WriteBehind::default().max_batch(1024),
            ))
            .maintenance_interval(Duration::from_millis(100))
            .eviction_listener(move |_k, _v, cause| match cause {
                RemovalCause::Expired => drop(ex.fetch_add(1, Ordering::Relaxed)),
                RemovalCause::Evicted => drop(ev.fetch_add(1, Ordering::Relaxed)),
                _ => {}
            })
            .build()?
    };

    single_flight(&cache)?;
    readers_and_writers(&cache, &evicted)?;
    // What the cache holds now of phase 2's keys is in redb too (the phase ended with a
    // flush; phase 1's keys were computed into the cache only).
    let kept: HashMap<u64, Arc<String>> = cache.iter().filter(|(k, _)| *k < KEYS).collect();
    expiry(&cache, &expired)?;

    let report = cache.close()?;
    let stats = cache.stats();
    println!("\n4. restart");
    println!(
        "   closed: final flush wrote {} keys; {} store ops in all",
        report.flushed, stats.store_writes
    );
    drop(cache);

    let started = Instant::now();
    let cache: Cache<u64, Arc<String>> = Cache::builder()
        .max_capacity(CAPACITY)
        .store(RedbStore::open(&path)?)
        .build()?;
    let warm = cache.preload(|_, _| true, |_| {})?;
    let took = started.elapsed();
    // Preloaded entries are in memory; the rest are read through from redb on demand.
    let mut back = 0;
    for (k, v) in &kept {
        back += usize::from(cache.fetch(k)?.as_ref() == Some(v));
    }
    let s = cache.stats();
    println!(
        "   reopened {} and preloaded {} entries in {took:.1?} (scanned {}, skipped {} expired or over capacity)",
        path.file_name().unwrap_or_default().to_string_lossy(),
        warm.loaded,
        warm.scanned,
        warm.skipped,
    );
    println!(
        "   {back} of the {} entries cached after phase 2 read back intact: {} from memory, {} read through from redb",
        kept.len(),
        s.hits,
        s.store_hits
    );
    assert!(
        warm.loaded > 0 && warm.corrupt == 0,
        "the warm restart loaded the store"
    );
    assert_eq!(back, kept.len(), "every entry cached at close came back");
    Ok(())
}

/// 8 threads miss the same key at once, for 3 keys in turn; each key's loader runs once.
fn single_flight(cache: &Cache<u64, Arc<String>>) -> Result<(), Err> {
    println!("\n1. single-flight: 8 readers ask for the same missing key at once, 3 keys in turn");
    let runs: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8u64)
        .map(|_| {
            let (cache, runs, barrier) = (cache.clone(), runs.clone(), barrier.clone());
            thread::spawn(move || {
                for i in 0..3u64 {
                    // All 8 miss key i together: one computes it, the other 7 wait for it.
                    barrier.wait();
                    let key = 1_000_000 + i;
                    let v = cache.get_with(key, || {
                        *runs.lock().unwrap().entry(key).or_default() += 1;
                        thread::sleep(Duration::from_millis(50)); // an expensive computation
                        Arc::new(format!("computed {key}"))
                    });
                    assert_eq!(*v.expect("no recursion here"), format!("computed {key}"));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| "reader panicked")?;
    }
    let mut runs: Vec<_> = runs.lock().unwrap().clone().into_iter().collect();
    runs.sort();
    for &(k, n) in &runs {
        println!("   key {k}: computed {n} time(s) for its 8 concurrent requests");
    }
    assert_eq!(runs.len(), 3, "every key was computed");
    assert!(
        runs.iter().all(|&(_, n)| n == 1),
        "a key was computed twice"
    );
    Ok(())
}

/// Readers and writers on skewed keys; the cache stays bounded; writes go behind to redb.
fn readers_and_writers(cache: &Cache<u64, Arc<String>>, evicted: &AtomicU64) -> Result<(), Err> {
    println!("\n2. readers and writers: 4 readers, 2 writers, {KEYS} keys, capacity {CAPACITY}");
    let before = cache.stats();
    let len_before = cache.len() as u64;
    let start = Instant::now();
    let max_len = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for w in 0..2u64 {
        let cache = cache.clone();
        handles.push(thread::spawn(move || {
            let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ w;
            for _ in 0..50_000 {
                x = xorshift(x);
                let k = skewed(x);
                cache
                    .insert(k, Arc::new(format!("value of {k}")))
                    .expect("write-behind accepts it");
            }
        }));
    }
    for r in 0..4u64 {
        let (cache, max_len) = (cache.clone(), max_len.clone());
        handles.push(thread::spawn(move || {
            let mut x = 0x2545_f491_4f6c_dd1du64 ^ (r << 8);
            for i in 0..500_000 {
                if r == 0 && i % 1024 == 0 {
                    max_len.fetch_max(cache.len() as u64, Ordering::Relaxed);
                }
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
        h.join().map_err(|_| "demo thread panicked")?;
    }
    let flushed = cache.flush()?;
    let now = cache.stats();
    // This phase's share of the counters.
    let d = |f: fn(&cogwheel::Stats) -> u64| f(&now) - f(&before);
    let (hits, misses) = (d(|s| s.hits), d(|s| s.misses));
    let (inserts, writes) = (d(|s| s.inserts), d(|s| s.inserts + s.updates));
    let (evictions, store_ops) = (d(|s| s.evictions), d(|s| s.store_writes));
    let len = cache.len() as u64;
    println!(
        "   done in {:.2?}; flush wrote the last {} dirty keys",
        start.elapsed(),
        flushed.flushed
    );
    println!(
        "   entries {len:>8} (capacity {CAPACITY}; at most {} seen while it ran)",
        max_len.load(Ordering::Relaxed)
    );
    println!(
        "   reads   {:>8}  hit ratio {:.1} %",
        hits + misses,
        100.0 * hits as f64 / (hits + misses) as f64
    );
    println!("   writes  {writes:>8}  reached redb as {store_ops} store ops (coalesced)");
    println!(
        "   evicted {evictions:>8}  (listener saw {})",
        evicted.load(Ordering::Relaxed)
    );
    assert_eq!(hits + misses, 4 * 500_000, "every read counted once");
    assert_eq!(writes, 2 * 50_000, "every write counted once");
    assert!(len <= CAPACITY && max_len.load(Ordering::Relaxed) <= CAPACITY);
    // Entries in = entries out + entries left (nothing expires or is removed here).
    assert_eq!(
        len_before + inserts,
        len + evictions,
        "entries are conserved"
    );
    assert!(
        store_ops <= writes,
        "write-behind never writes more than it was given"
    );
    assert_eq!(now.dirty, 0, "the flush left nothing dirty");
    Ok(())
}

/// Short-lived entries expire and the maintenance thread reclaims them without any traffic.
fn expiry(cache: &Cache<u64, Arc<String>>, expired: &AtomicU64) -> Result<(), Err> {
    println!("\n3. expiry: 500 sessions with a 1 s TTL; the maintenance thread reclaims them");
    cache.invalidate_all(); // make room: these are cache-only removals, the store keeps its data
    for i in 0..500u64 {
        cache.insert_with_ttl(
            2_000_000 + i,
            Arc::new(format!("session {i}")),
            Duration::from_secs(1),
        )?;
    }
    let before = cache.len();
    let start = Instant::now();
    // No reads or writes from here: only the maintenance thread can reclaim them.
    while expired.load(Ordering::Relaxed) < 500 && start.elapsed() < Duration::from_secs(30) {
        thread::sleep(Duration::from_millis(50));
    }
    println!(
        "   {before} entries; after {:.1?} without traffic the maintenance thread had expired {} of them; {} remain",
        start.elapsed(),
        expired.load(Ordering::Relaxed),
        cache.len()
    );
    assert_eq!(before, 500);
    assert_eq!(
        expired.load(Ordering::Relaxed),
        500,
        "the maintenance thread expired every session"
    );
    assert_eq!(cache.len(), 0);
    Ok(())
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// A skewed key: small keys are much more popular (roughly Zipf-like).
fn skewed(x: u64) -> u64 {
    let u = (x >> 11) as f64 / (1u64 << 53) as f64;
    ((KEYS as f64).powf(u) as u64).min(KEYS - 1)
}
