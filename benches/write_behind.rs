//! Write-behind: insert throughput over a slow store, and how much the writer coalesces.
//!
//! The store is [`SlowStore`]: every `write_batch` sleeps 1 ms, then applies the batch to a
//! `MemoryStore`. Parts:
//! * criterion group `write_behind/insert_zipf`: `insert` of keys drawn Zipf(0.99) over 1M
//!   keys into a 100k cache, with no store vs write-behind over the 1 ms store (the cache and
//!   its dirty set persist across samples: this is the steady acknowledged rate), plus
//!   write-behind with `max_batch(512)` (the default before adaptive batching) for comparison;
//! * an interleaved report of the same variants (median of per-round ratios), also with
//!   the time to `flush()` included (end to end: every write in the store);
//! * the coalescing ratio on a 95/5 workload (95 % get / 5 % insert, Zipf 0.99 over 1M keys,
//!   capacity 100k, write-behind over the 1 ms store): acknowledged inserts / store operations
//!   the writer applied, after a final flush; with the workload's rate next to the same
//!   workload on a cache without a store.
//!
//! `COGWHEEL_BENCH_QUICK=1` shortens everything; without `--bench` (under `cargo test`) it
//! runs as a smoke test on tiny sizes. `write_behind-* profile (wb|none) SECS [MAX_BATCH]`
//! runs one variant's insert loop alone, for `perf record` or callgrind (`PASSES=n` for an
//! exact number of passes; `LAT=1` times every insert and prints a latency histogram;
//! `SINK=1` makes the store only sleep, without applying the batch to its `MemoryStore`,
//! which separates the cache's own cost from the store's).

mod common;
mod wb_ceiling;

use cogwheel::store::{BackingStore, MemoryStore, StoreError, Stored, WriteOp};
use cogwheel::{Cache, WriteBehind, WritePolicy};
use common::{Rng, Zipf, key_of};
use criterion::{BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Key space of the workloads.
const KEYS: usize = 1_000_000;
/// Cache capacity.
const CAPACITY: u64 = 100_000;
/// Inserts per criterion iteration.
const BATCH: usize = 1024;
/// What one `write_batch` costs.
const STORE_LATENCY: Duration = Duration::from_millis(1);

/// A store that takes 1 ms per batch: sleeps, then delegates to a `MemoryStore`.
#[derive(Clone)]
struct SlowStore {
    inner: MemoryStore<u64, u64>,
    delay: Duration,
    /// Only sleep: do not apply batches (`SINK=1` in `profile`).
    sink: bool,
    batches: Arc<AtomicU64>,
    ops: Arc<AtomicU64>,
}

impl SlowStore {
    fn new(delay: Duration) -> Self {
        SlowStore {
            inner: MemoryStore::new(),
            delay,
            sink: false,
            batches: Arc::new(AtomicU64::new(0)),
            ops: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl BackingStore<u64, u64> for SlowStore {
    fn load(&self, key: &u64) -> Result<Option<Stored<u64>>, StoreError> {
        self.inner.load(key)
    }

    fn write_batch(&self, ops: &[WriteOp<'_, u64, u64>]) -> Result<(), StoreError> {
        std::thread::sleep(self.delay);
        let r = if self.sink {
            Ok(())
        } else {
            let r = self.inner.write_batch(ops);
            // The memory store logs every applied op; the bench does not need the log.
            self.inner.clear_applied_ops();
            r
        };
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.ops.fetch_add(ops.len() as u64, Ordering::Relaxed);
        r
    }
}

/// The 1 ms store; with `SINK` set, one that only sleeps (for `profile` and `ceiling`).
fn store_from_env() -> SlowStore {
    SlowStore {
        sink: std::env::var_os("SINK").is_some(),
        ..SlowStore::new(STORE_LATENCY)
    }
}

struct Sizes {
    /// Inserts per pass of the interleaved report.
    pass: usize,
    rounds: usize,
    /// Operations of the 95/5 workload.
    mixed_ops: usize,
    warm_up: Duration,
    measure: Duration,
    criterion: bool,
}

fn sizes() -> Sizes {
    let bench = std::env::args().any(|a| a == "--bench");
    let quick = common::quick();
    if !bench {
        Sizes {
            pass: 2048,
            rounds: 1,
            mixed_ops: 20_000,
            warm_up: Duration::from_millis(10),
            measure: Duration::from_millis(10),
            criterion: false,
        }
    } else if quick {
        Sizes {
            pass: 1 << 19,
            rounds: 5,
            mixed_ops: 4_000_000,
            warm_up: Duration::from_millis(500),
            measure: Duration::from_secs(1),
            criterion: true,
        }
    } else {
        Sizes {
            pass: 1 << 20,
            rounds: 11,
            mixed_ops: 20_000_000,
            warm_up: Duration::from_secs(1),
            measure: Duration::from_secs(3),
            criterion: true,
        }
    }
}

/// `len` keys drawn from `zipf` with a fixed seed.
fn zipf_keys(zipf: &Zipf, len: usize, seed: u64) -> Vec<u64> {
    let mut rng = Rng::new(seed);
    (0..len).map(|_| key_of(zipf.sample(&mut rng))).collect()
}

type C = Cache<u64, u64>;

fn plain() -> C {
    Cache::builder()
        .max_capacity(CAPACITY)
        .build()
        .expect("build")
}

/// Write-behind with the default settings.
fn behind(store: SlowStore) -> C {
    behind_with(store, WriteBehind::default())
}

/// Write-behind with `max_batch` 512 (the default until adaptive batching: one 1 ms batch
/// then drains at most ~0.5M ops/s), for comparison.
fn behind_batch(store: SlowStore, max_batch: usize) -> C {
    behind_with(store, WriteBehind::default().max_batch(max_batch))
}

fn behind_with(store: SlowStore, wb: WriteBehind) -> C {
    Cache::builder()
        .max_capacity(CAPACITY)
        .store(store)
        .write_policy(WritePolicy::WriteBehind(wb))
        .build()
        .expect("build")
}

#[inline(never)]
fn insert_pass(cache: &C, keys: &[u64], salt: u64) {
    for (i, &k) in keys.iter().enumerate() {
        cache.insert(k, salt ^ i as u64).expect("insert");
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `write_behind profile (wb|none) SECS [MAX_BATCH]`: a plain insert loop over one variant, for `perf
/// record` / callgrind (no criterion, no report). `PASSES=n` runs exactly n passes instead.
fn profile(args: &[String]) {
    let what = args.first().map_or("wb", String::as_str);
    let secs: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let zipf = Zipf::new(KEYS, 0.99);
    let keys = zipf_keys(&zipf, 1 << 20, 23);
    let store = store_from_env();
    let cache = match what {
        "none" => plain(),
        "wb" => match args.get(2).and_then(|s| s.parse().ok()) {
            Some(b) => behind_batch(store.clone(), b),
            None => behind(store.clone()),
        },
        other => panic!("unknown variant {other:?}: use wb or none"),
    };
    let passes: Option<u64> = std::env::var("PASSES").ok().and_then(|p| p.parse().ok());
    let until = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let cpu0 = thread_cpu_ticks();
    let mut n = 0u64;
    let mut pass = 0u64;
    let mut lat = std::env::var_os("LAT").map(|_| Latency::default());
    while passes.map_or(Instant::now() < until, |p| pass < p) {
        pass += 1;
        match &mut lat {
            Some(l) => l.insert_pass(&cache, &keys, pass),
            None => insert_pass(&cache, &keys, pass),
        }
        n += keys.len() as u64;
    }
    let dt = start.elapsed().as_secs_f64();
    if let Some(l) = lat {
        l.print();
    }
    // Clock ticks are 1/100 s on Linux.
    let cpu = thread_cpu_ticks()
        .zip(cpu0)
        .map(|(b, a)| (b - a) as f64 / 100.0);
    let (batches, ops) = (
        store.batches.load(Ordering::Relaxed),
        store.ops.load(Ordering::Relaxed),
    );
    println!(
        "{what}: {:.3} Mops/s, caller on CPU {:.0}% of the time ({batches} batches, {:.0} \
         ops/batch, {} dirty at the end)",
        n as f64 / dt / 1e6,
        cpu.map_or(f64::NAN, |c| c / dt * 100.0),
        ops as f64 / batches.max(1) as f64,
        cache.dirty_count()
    );
    cache.flush().expect("flush");
}

/// A histogram of single-insert latencies (the timer adds ~40 ns to each insert).
#[derive(Default)]
struct Latency {
    /// Counts below each bound of `LATENCY_BOUNDS_US`, then at or above the last.
    counts: [u64; LATENCY_BOUNDS_US.len() + 1],
    worst_us: f64,
}

const LATENCY_BOUNDS_US: [f64; 7] = [1.0, 5.0, 20.0, 50.0, 100.0, 500.0, 1000.0];

impl Latency {
    fn insert_pass(&mut self, cache: &C, keys: &[u64], salt: u64) {
        for (i, &k) in keys.iter().enumerate() {
            let t = Instant::now();
            cache.insert(k, salt ^ i as u64).expect("insert");
            let us = t.elapsed().as_secs_f64() * 1e6;
            self.worst_us = self.worst_us.max(us);
            self.counts[LATENCY_BOUNDS_US.iter().take_while(|&&b| us >= b).count()] += 1;
        }
    }

    fn print(&self) {
        let mut lo = 0.0;
        for (i, c) in self.counts.iter().enumerate() {
            match LATENCY_BOUNDS_US.get(i) {
                Some(hi) => println!("  {lo:>6} .. {hi:>6} us: {c}"),
                None => println!("  {lo:>6} us and more: {c}"),
            }
            lo = LATENCY_BOUNDS_US.get(i).copied().unwrap_or(lo);
        }
        println!("  worst: {:.0} us", self.worst_us);
    }
}

/// User + system clock ticks of the calling thread (Linux `/proc`), if readable.
fn thread_cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the parenthesized command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.first().map(String::as_str) == Some("profile") {
        profile(&args[1..]);
        return;
    }
    if args.first().map(String::as_str) == Some("ceiling") {
        let rounds = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(9);
        let keys = zipf_keys(&Zipf::new(KEYS, 0.99), 1 << 20, 23);
        wb_ceiling::run(&keys, rounds, behind(store_from_env()));
        return;
    }
    let sz = sizes();
    let zipf = Zipf::new(KEYS, 0.99);

    if sz.criterion {
        let mut c = Criterion::default()
            .sample_size(10)
            .warm_up_time(sz.warm_up)
            .measurement_time(sz.measure)
            .without_plots()
            .configure_from_args();
        let keys = zipf_keys(&zipf, BATCH * 256, 11);
        let mut g = c.benchmark_group("write_behind/insert_zipf");
        g.throughput(Throughput::Elements(keys.len() as u64));
        let store = SlowStore::new(STORE_LATENCY);
        let variants: [(&str, C); 3] = [
            ("no_store", plain()),
            ("wb_1ms_store", behind(store.clone())),
            ("wb_1ms_store_batch512", behind_batch(store, 512)),
        ];
        for (name, cache) in &variants {
            let mut salt = 0;
            g.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter(|| {
                    salt += 1;
                    insert_pass(cache, black_box(&keys), salt)
                })
            });
        }
        g.finish();
        for (_, cache) in &variants {
            cache.flush().expect("flush");
        }
        c.final_summary();
    }

    // Interleaved report: fresh caches, rounds alternate the order of the two variants.
    println!();
    println!(
        "== write_behind insert report: Zipf 0.99 over {KEYS} keys, capacity {CAPACITY}, \
         {} inserts per pass, {} rounds, store {:?}/batch ==",
        sz.pass, sz.rounds, STORE_LATENCY
    );
    let keys = zipf_keys(&zipf, sz.pass, 23);
    let store = SlowStore::new(STORE_LATENCY);
    let store_small = SlowStore::new(STORE_LATENCY);
    let caches: [C; 3] = [
        plain(),
        behind(store.clone()),
        behind_batch(store_small.clone(), 512),
    ];
    // Warm the caches (and the write-behind dirty sets) first.
    for c in &caches {
        insert_pass(c, &keys, 0);
        c.flush().expect("flush");
    }
    let mut ack: [Vec<f64>; 3] = Default::default();
    let mut e2e: [Vec<f64>; 3] = Default::default();
    let mut ack_ratio: [Vec<f64>; 3] = Default::default();
    let mut e2e_ratio: [Vec<f64>; 3] = Default::default();
    for round in 0..sz.rounds {
        let mut a = [0.0f64; 3];
        let mut e = [0.0f64; 3];
        for j in 0..3 {
            let i = (round + j) % 3;
            let start = Instant::now();
            insert_pass(&caches[i], &keys, round as u64 + 1);
            let acked = start.elapsed();
            caches[i].flush().expect("flush");
            let all = start.elapsed();
            a[i] = sz.pass as f64 / acked.as_secs_f64();
            e[i] = sz.pass as f64 / all.as_secs_f64();
        }
        for i in 0..3 {
            ack[i].push(a[i]);
            e2e[i].push(e[i]);
            ack_ratio[i].push(a[i] / a[0]);
            e2e_ratio[i].push(e[i] / e[0]);
        }
    }
    println!(
        "{:<24} {:>14} {:>14} {:>10} {:>14} {:>10}",
        "measure", "no store op/s", "wb 1ms op/s", "wb/none", "wb b512 op/s", "b512/none"
    );
    for (name, v, r) in [
        ("acknowledged (no flush)", &mut ack, &mut ack_ratio),
        ("end to end (with flush)", &mut e2e, &mut e2e_ratio),
    ] {
        println!(
            "{:<24} {:>14.0} {:>14.0} {:>10.3} {:>14.0} {:>10.3}",
            name,
            median(&mut v[0]),
            median(&mut v[1]),
            median(&mut r[1]),
            median(&mut v[2]),
            median(&mut r[2]),
        );
    }
    let inserted = (sz.pass * (sz.rounds + 1)) as f64;
    for (name, st) in [("wb default", &store), ("wb max_batch 512", &store_small)] {
        let batches = st.batches.load(Ordering::Relaxed);
        let ops = st.ops.load(Ordering::Relaxed);
        println!(
            "{name}: {inserted} inserts -> {ops} store ops in {batches} batches \
             (coalescing {:.2}x, {:.0} ops/batch)",
            inserted / ops.max(1) as f64,
            ops as f64 / batches.max(1) as f64
        );
    }
    println!("(target: acknowledged wb/none >= 0.90)");
    drop(caches);

    mixed_report(&zipf, sz.mixed_ops);
}

/// The 95/5 workload on one thread; returns (ops/s, inserts acknowledged, hit ratio).
fn run_mixed(cache: &C, keys: &[u64], coin: &[bool]) -> (f64, u64, f64) {
    let mut inserts = 0u64;
    let mut sum = 0u64;
    let start = Instant::now();
    for (i, (&k, &w)) in keys.iter().zip(coin).enumerate() {
        if w {
            cache.insert(k, i as u64).expect("insert");
            inserts += 1;
        } else {
            sum = sum.wrapping_add(cache.get(&k).unwrap_or(0));
        }
    }
    let el = start.elapsed();
    black_box(sum);
    (
        keys.len() as f64 / el.as_secs_f64(),
        inserts,
        cache.stats().hit_ratio(),
    )
}

fn mixed_report(zipf: &Zipf, n: usize) {
    let keys = zipf_keys(zipf, n, 31);
    let mut rng = Rng::new(99);
    let coin: Vec<bool> = (0..n).map(|_| rng.next_u64() % 100 < 5).collect();
    let store = SlowStore::new(STORE_LATENCY);
    let wb = behind(store.clone());
    let none = plain();
    // Same order each time: no store first, then write-behind, then no store again (drift check).
    let (r0, _, h0) = run_mixed(&none, &keys, &coin);
    let (r1, acked, h1) = run_mixed(&wb, &keys, &coin);
    let flush_start = Instant::now();
    wb.flush().expect("flush");
    let flush_time = flush_start.elapsed();
    let none2 = plain();
    let (r2, _, _) = run_mixed(&none2, &keys, &coin);
    let s = wb.stats();
    let applied = s.store_writes;
    assert_eq!(applied, store.ops.load(Ordering::Relaxed));
    println!();
    println!(
        "== write_behind 95/5 workload: {n} ops (95% get / 5% insert), Zipf 0.99 over {KEYS} keys, \
         capacity {CAPACITY}, store {STORE_LATENCY:?}/batch, 1 thread =="
    );
    println!("{:<22} {:>12} {:>10}", "cache", "ops/s", "hit ratio");
    println!("{:<22} {:>12.0} {:>10.3}", "no store", r0, h0);
    println!("{:<22} {:>12.0} {:>10.3}", "write-behind 1ms", r1, h1);
    println!("{:<22} {:>12.0} {:>10}", "no store (again)", r2, "");
    println!(
        "wb/none ops/s ratio: {:.3} (vs the mean of the two no-store runs)",
        r1 / ((r0 + r2) / 2.0)
    );
    println!(
        "coalescing: {acked} acknowledged inserts / {applied} store ops applied = {:.2}x \
         ({} batches, {:.0} ops/batch; final flush took {:?}; dead letters {})",
        acked as f64 / applied.max(1) as f64,
        store.batches.load(Ordering::Relaxed),
        applied as f64 / store.batches.load(Ordering::Relaxed).max(1) as f64,
        flush_time,
        s.dead_letters,
    );
}
