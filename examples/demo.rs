//! The cogwheel demo, on the embedded redb store (no server needed):
//!
//! 1. single-flight: 8 threads ask for 3 missing keys at once; each key is computed once;
//! 2. readers and writers on one bounded cache: eviction at work, writes going behind to redb;
//! 3. expiry: short-lived entries reclaimed by the maintenance thread, with no traffic;
//! 4. restart: the cache is closed, a new one is built over the same file, and the data is back.
//!
//! Run with `cargo run --release --example demo [DIR]` (DIR defaults to a temporary directory).

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
    // What the cache holds now is in redb too (the phase ended with a flush).
    let kept: HashMap<u64, Arc<String>> = cache.iter().collect();
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
        .preload(true)
        .build()?;
    // Preloaded entries are in memory; the rest are read through from redb on demand.
    let mut back = 0;
    for (k, v) in &kept {
        back += usize::from(cache.fetch(k)?.as_ref() == Some(v));
    }
    println!(
        "   reopened {} and preloaded {} entries in {:.1?}; {back} of the {} entries cached after phase 2 read back intact",
        path.file_name().unwrap_or_default().to_string_lossy(),
        cache.len(),
        started.elapsed(),
        kept.len()
    );
    assert_eq!(back, kept.len(), "every entry cached at close came back");
    Ok(())
}

/// 8 threads miss the same 3 keys at once; each key's loader runs once.
fn single_flight(cache: &Cache<u64, Arc<String>>) -> Result<(), Err> {
    println!("\n1. single-flight: 8 readers ask for 3 missing keys through get_with");
    let runs: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8u64)
        .map(|t| {
            let (cache, runs, barrier) = (cache.clone(), runs.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                for i in 0..3u64 {
                    let key = 1_000_000 + (i + t) % 3;
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
    for (k, n) in runs {
        println!("   key {k}: computed {n} time(s) for its 8 concurrent requests");
    }
    Ok(())
}

/// Readers and writers on skewed keys; the cache stays bounded; writes go behind to redb.
fn readers_and_writers(cache: &Cache<u64, Arc<String>>, evicted: &AtomicU64) -> Result<(), Err> {
    println!("\n2. readers and writers: 4 readers, 2 writers, {KEYS} keys, capacity {CAPACITY}");
    let start = Instant::now();
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
        let cache = cache.clone();
        handles.push(thread::spawn(move || {
            let mut x = 0x2545_f491_4f6c_dd1du64 ^ (r << 8);
            for _ in 0..500_000 {
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
    let s = cache.stats();
    println!(
        "   done in {:.2?}; flush wrote the last {} dirty keys",
        start.elapsed(),
        flushed.flushed
    );
    println!(
        "   entries {:>8} (capacity {CAPACITY}, never exceeded)",
        cache.len()
    );
    println!(
        "   reads   {:>8}  hit ratio {:.1} %",
        s.requests(),
        100.0 * s.hit_ratio()
    );
    println!(
        "   writes  {:>8}  reached redb as {} store ops (coalesced)",
        s.inserts + s.updates,
        s.store_writes
    );
    println!(
        "   evicted {:>8}  (listener saw {})",
        s.evictions,
        evicted.load(Ordering::Relaxed)
    );
    assert!(cache.len() as u64 <= CAPACITY);
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
