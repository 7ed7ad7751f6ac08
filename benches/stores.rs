//! Persistent stores behind the cache: read-through latency and write-behind drain rate.
//!
//! A plain timing harness (percentiles need every sample, not criterion's means):
//! * redb read-through: `fetch` of keys that are in the store but not in the cache (a small
//!   cache, every key fetched once in a shuffled order, so every fetch misses the cache), with
//!   ~1 KiB text values, without and (feature `compression`) with lz4 compression. Each fetch is
//!   paired with a raw `RedbStore::load` of another key, timed the same way, so the cache's own
//!   share of a read-through is visible. p50 / p90 / p99 / max in µs.
//! * redb write-behind drain: insert N keys into a write-behind cache over redb, `flush()`,
//!   N / elapsed (default batch 512 and batch 4096).
//! * Redis (feature `redis`, only when `COGWHEEL_REDIS_URL` is set): the same drain rate and
//!   read-through latency against that server. `bash .ci/redis.sh cargo bench --features redis
//!   --bench stores` starts a throwaway server.
//!
//! `COGWHEEL_BENCH_QUICK=1` uses smaller sizes; without `--bench` (under `cargo test`) it runs
//! as a smoke test on tiny sizes.

mod common;

use cogwheel::store::{BackingStore, Codec, PostcardCodec, RedbStore, StoreError, Stored, WriteOp};
use cogwheel::{Cache, WriteBehind, WritePolicy};
use common::Rng;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

type V = String;

/// Value size in bytes (approximately: text of whole words).
const VALUE_LEN: usize = 1024;

struct Sizes {
    /// Keys preloaded into the store for the read-through test.
    preload: usize,
    /// Fetches timed (each of a distinct key).
    fetches: usize,
    /// Keys inserted for the drain-rate test.
    drain: usize,
    /// Rounds of the drain test (median reported).
    drain_rounds: usize,
}

fn sizes() -> Sizes {
    let bench = std::env::args().any(|a| a == "--bench");
    let quick = common::quick();
    if !bench {
        Sizes {
            preload: 2_000,
            fetches: 500,
            drain: 1_000,
            drain_rounds: 1,
        }
    } else if quick {
        Sizes {
            preload: 100_000,
            fetches: 20_000,
            drain: 10_000,
            drain_rounds: 3,
        }
    } else {
        Sizes {
            preload: 100_000,
            fetches: 100_000,
            drain: 50_000,
            drain_rounds: 5,
        }
    }
}

const WORDS: [&str; 32] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
    "uniform", "victor", "whiskey", "xray", "yankee", "zulu", "cache", "store", "value", "entry",
    "shard", "clock",
];

/// A ~1 KiB record of text for `key`: a small header and random words (compressible, as
/// typical serialized records are, but not trivially).
fn value_of(key: u64) -> V {
    let mut rng = Rng::new(key ^ 0xA5A5_5A5A);
    let mut s = format!(
        "{{\"id\":{key},\"owner\":\"user-{}\",\"text\":\"",
        rng.next_u64() % 100_000
    );
    while s.len() < VALUE_LEN - 32 {
        s.push_str(WORDS[(rng.next_u64() % WORDS.len() as u64) as usize]);
        s.push(' ');
    }
    s.push_str(&format!("\",\"n\":{}}}", rng.next_u64() % 1_000_000));
    s
}

/// A shuffled copy of 0..n.
fn shuffled(n: usize, seed: u64) -> Vec<u64> {
    let mut v: Vec<u64> = (0..n as u64).collect();
    let mut rng = Rng::new(seed);
    for i in (1..v.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

/// A store handle the bench shares with the cache, counting batches and operations.
struct Counted<S> {
    store: Arc<S>,
    batches: Arc<AtomicU64>,
    ops: Arc<AtomicU64>,
}

impl<S> Counted<S> {
    fn new(store: Arc<S>) -> Self {
        Counted {
            store,
            batches: Arc::new(AtomicU64::new(0)),
            ops: Arc::new(AtomicU64::new(0)),
        }
    }

    fn handle(&self) -> Self {
        Counted {
            store: Arc::clone(&self.store),
            batches: Arc::clone(&self.batches),
            ops: Arc::clone(&self.ops),
        }
    }
}

impl<S: BackingStore<u64, V>> BackingStore<u64, V> for Counted<S> {
    fn load(&self, key: &u64) -> Result<Option<Stored<V>>, StoreError> {
        self.store.load(key)
    }

    fn write_batch(&self, ops: &[WriteOp<'_, u64, V>]) -> Result<(), StoreError> {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.ops.fetch_add(ops.len() as u64, Ordering::Relaxed);
        self.store.write_batch(ops)
    }
}

/// Sorted samples in nanoseconds → (p50, p90, p99, max, mean) in µs.
fn percentiles(mut ns: Vec<u64>) -> [f64; 5] {
    ns.sort_unstable();
    let at = |q: f64| ns[((ns.len() as f64 * q) as usize).min(ns.len() - 1)] as f64 / 1e3;
    let mean = ns.iter().sum::<u64>() as f64 / ns.len() as f64 / 1e3;
    [
        at(0.50),
        at(0.90),
        at(0.99),
        *ns.last().expect("samples") as f64 / 1e3,
        mean,
    ]
}

fn print_header(title: &str) {
    println!();
    println!("== {title} ==");
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "", "p50 µs", "p90 µs", "p99 µs", "max µs", "mean µs"
    );
}

fn print_row(name: &str, p: [f64; 5]) {
    println!(
        "{:<34} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
        name, p[0], p[1], p[2], p[3], p[4]
    );
}

fn preload<S: BackingStore<u64, V>>(store: &S, n: usize) {
    let values: Vec<(u64, V)> = (0..n as u64).map(|k| (k, value_of(k))).collect();
    for chunk in values.chunks(5_000) {
        store.write_batch(&common::puts(chunk)).expect("preload");
    }
}

/// Time `fetches` read-throughs of distinct keys (each paired with a raw `load` of another key).
/// Returns (read-through samples, raw load samples) in ns.
fn read_through<S: BackingStore<u64, V>>(
    store: Arc<S>,
    preloaded: usize,
    fetches: usize,
) -> (Vec<u64>, Vec<u64>) {
    let cache: Cache<u64, V> = Cache::builder()
        .max_capacity(1024)
        .store(Counted::new(Arc::clone(&store)))
        .build()
        .expect("build");
    let fetch_keys = shuffled(preloaded, 1);
    let load_keys = shuffled(preloaded, 2);
    // Warm-up: a few hundred of each, not timed (first-touch costs of the handles).
    for k in load_keys.iter().rev().take(500) {
        black_box(store.load(k).expect("load"));
    }
    let mut rt = Vec::with_capacity(fetches);
    let mut raw = Vec::with_capacity(fetches);
    for i in 0..fetches {
        let k = fetch_keys[i % fetch_keys.len()];
        let t = Instant::now();
        let v = cache.fetch(&k).expect("fetch");
        rt.push(t.elapsed().as_nanos() as u64);
        assert!(v.is_some_and(|v| v.len() >= VALUE_LEN - 32));

        let k = load_keys[i % load_keys.len()];
        let t = Instant::now();
        let v = store.load(&k).expect("load");
        raw.push(t.elapsed().as_nanos() as u64);
        black_box(v);
    }
    let s = cache.stats();
    assert!(
        s.store_hits as usize >= fetches.min(preloaded) * 9 / 10,
        "fetches must read through: {s:?}"
    );
    (rt, raw)
}

/// Insert `n` keys into a write-behind cache over `store`, then flush. Returns (acknowledged
/// ops/s, drained ops/s, batches written).
fn drain<S: BackingStore<u64, V>>(
    store: Arc<S>,
    n: usize,
    max_batch: usize,
    base: u64,
) -> (f64, f64, u64) {
    let counted = Counted::new(store);
    let cache: Cache<u64, V> = Cache::builder()
        .max_capacity(n.max(1024) as u64)
        .store(counted.handle())
        .write_policy(WritePolicy::WriteBehind(
            WriteBehind::default().max_batch(max_batch),
        ))
        .build()
        .expect("build");
    let values: Vec<(u64, V)> = (0..n as u64)
        .map(|i| (base + i, value_of(base + i)))
        .collect();
    let start = Instant::now();
    for (k, v) in values {
        cache.insert(k, v).expect("insert");
    }
    let acked = start.elapsed();
    cache.flush().expect("flush");
    let all = start.elapsed();
    assert_eq!(counted.ops.load(Ordering::Relaxed), n as u64);
    (
        n as f64 / acked.as_secs_f64(),
        n as f64 / all.as_secs_f64(),
        counted.batches.load(Ordering::Relaxed),
    )
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn drain_report<S: BackingStore<u64, V>>(name: &str, store: Arc<S>, sz: &Sizes, base: u64) {
    for max_batch in [512, 4096] {
        let (mut ack, mut all, mut batches) = (Vec::new(), Vec::new(), 0);
        for r in 0..sz.drain_rounds {
            let (a, d, b) = drain(
                Arc::clone(&store),
                sz.drain,
                max_batch,
                base + (r as u64 + 1) * 10_000_000 + max_batch as u64 * 1_000_000_000,
            );
            ack.push(a);
            all.push(d);
            batches = b;
        }
        println!(
            "{:<34} {:>12.0} {:>14.0} {:>9}",
            format!("{name}, max_batch {max_batch}"),
            median(&mut all),
            median(&mut ack),
            batches
        );
    }
}

fn print_drain_header(title: &str) {
    println!();
    println!("== {title} ==");
    println!(
        "{:<34} {:>12} {:>14} {:>9}",
        "", "drain op/s", "ack'd op/s", "batches"
    );
}

fn redb_codec<C: Codec + Clone>(name: &str, codec: C, sz: &Sizes) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("read.redb");
    let store =
        Arc::new(RedbStore::<u64, V, C>::open_with_codec(&path, codec.clone()).expect("open"));
    let t = Instant::now();
    preload(&*store, sz.preload);
    let load_time = t.elapsed();
    let file = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!(
        "[{name}] preloaded {} keys in {:?}; file {:.1} MiB",
        sz.preload,
        load_time,
        file as f64 / (1 << 20) as f64
    );
    let (rt, raw) = read_through(Arc::clone(&store), sz.preload, sz.fetches);
    print_row(&format!("{name}: fetch (read-through)"), percentiles(rt));
    print_row(&format!("{name}: RedbStore::load alone"), percentiles(raw));
}

fn main() {
    let sz = sizes();
    let test_dir = std::env::temp_dir();
    println!(
        "stores bench: values ~{VALUE_LEN} B text, temp dir {}",
        test_dir.display()
    );

    print_header(&format!(
        "redb read-through: {} fetches of distinct keys (cache capacity 1024, {} keys in the store)",
        sz.fetches, sz.preload
    ));
    redb_codec("redb plain", PostcardCodec::new(), &sz);
    #[cfg(feature = "compression")]
    redb_codec("redb lz4", PostcardCodec::compressed(64), &sz);
    #[cfg(not(feature = "compression"))]
    println!("(lz4 rows need --features compression)");

    print_drain_header(&format!(
        "redb write-behind drain: insert {} keys then flush, median of {} rounds",
        sz.drain, sz.drain_rounds
    ));
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            Arc::new(RedbStore::<u64, V>::open(dir.path().join("drain.redb")).expect("open"));
        drain_report("redb plain", store, &sz, 0);
    }

    redis(&sz);
}

#[cfg(feature = "redis")]
fn redis(sz: &Sizes) {
    use cogwheel::store::{RedisConfig, RedisStore};
    let Ok(url) = std::env::var("COGWHEEL_REDIS_URL") else {
        println!("\n(Redis rows skipped: COGWHEEL_REDIS_URL is not set)");
        return;
    };
    let prefix = format!("cwbench:{}:", std::process::id());
    let store = Arc::new(
        RedisStore::<u64, V>::open(RedisConfig::single(url.clone()).prefix(prefix.into_bytes()))
            .expect("redis"),
    );
    print_drain_header(&format!(
        "Redis write-behind drain ({url}): insert {} keys then flush, median of {} rounds",
        sz.drain, sz.drain_rounds
    ));
    drain_report("redis single node", Arc::clone(&store), sz, 0);

    print_header(&format!(
        "Redis read-through: {} fetches of distinct keys (cache capacity 1024, {} keys in the store)",
        sz.fetches, sz.preload
    ));
    preload(&*store, sz.preload);
    let (rt, raw) = read_through(Arc::clone(&store), sz.preload, sz.fetches);
    print_row("redis: fetch (read-through)", percentiles(rt));
    print_row("redis: RedisStore::load alone", percentiles(raw));
}

#[cfg(not(feature = "redis"))]
fn redis(_: &Sizes) {
    println!("\n(Redis rows need --features redis and COGWHEEL_REDIS_URL)");
}
