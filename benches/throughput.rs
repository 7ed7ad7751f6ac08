//! Throughput side by side: cogwheel, moka and quick_cache on the same pre-generated op
//! streams, at 1 and 2 threads, one criterion group per workload.
//!
//! Method (the same for every contestant):
//! * op streams are generated before any timing, one stream per thread, and shared by all
//!   contestants; each thread walks its own stream cyclically, continuing where the previous
//!   sample stopped;
//! * an iteration is `BATCH` ops in total (split evenly over the threads), so criterion's
//!   `Throughput::Elements(BATCH)` reads as total ops per second across threads;
//! * at 2 threads, scoped threads are spawned inside the timed closure, meet the timer at a
//!   barrier, and the clock stops when both have joined (spawn cost is outside the timing,
//!   join cost inside, negligible against a sample of ~0.3 s);
//! * a get that misses is followed by an insert of the same key; the pair is one op.
//!
//! `COGWHEEL_BENCH_QUICK=1` shrinks everything for a smoke run.

mod common;

use common::{INSERT, KEY_MASK, RefMap, Rng, Target, Zipf, key_of, quick, run_op, streams};
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput, measurement::WallTime};
use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// Ops per criterion iteration, all threads together.
const BATCH: usize = 1 << 14;
const THREADS: [usize; 2] = [1, 2];

struct Sizes {
    /// Ops per thread stream.
    stream: usize,
    read_keys: usize,
    mixed_keys: usize,
    mixed_capacity: u64,
    churn_keys: u64,
    churn_capacity: u64,
}

fn sizes() -> Sizes {
    if quick() {
        Sizes {
            stream: 200_000,
            read_keys: 100_000,
            mixed_keys: 100_000,
            mixed_capacity: 10_000,
            churn_keys: 1_000_000,
            churn_capacity: 100_000,
        }
    } else {
        Sizes {
            stream: 2_000_000,
            read_keys: 1_000_000,
            mixed_keys: 1_000_000,
            mixed_capacity: 100_000,
            churn_keys: 10_000_000,
            churn_capacity: 1_000_000,
        }
    }
}

/// Walk `n` ops of `stream` from `*cursor` on, cyclically, in slices of at most `max`;
/// advance the cursor. Sums what `f` returns per slice (a checksum for `black_box`).
#[inline(always)]
fn walk(
    stream: &[u64],
    cursor: &mut usize,
    mut n: usize,
    max: usize,
    mut f: impl FnMut(&[u64]) -> u64,
) -> u64 {
    let mut acc = 0u64;
    while n > 0 {
        let take = n.min(stream.len() - *cursor).min(max);
        acc = acc.wrapping_add(f(&stream[*cursor..*cursor + take]));
        *cursor = (*cursor + take) % stream.len();
        n -= take;
    }
    acc
}

/// Run `n` ops of `stream` from `*cursor` on, cyclically; advance the cursor.
#[inline(never)]
fn run_ops<C: Target>(c: &C, stream: &[u64], cursor: &mut usize, n: usize) -> u64 {
    walk(stream, cursor, n, usize::MAX, |ops| {
        ops.iter()
            .fold(0u64, |acc, &op| acc.wrapping_add(run_op(c, op)))
    })
}

/// Read `n` keys of a read-only `stream` from `*cursor` on with `get_many`, `MANY` keys
/// per call (cyclically); advance the cursor.
#[inline(never)]
fn run_many(c: &common::Cogwheel, stream: &[u64], cursor: &mut usize, n: usize) -> u64 {
    walk(stream, cursor, n, MANY, |keys| {
        c.get_many(keys)
            .into_iter()
            .fold(0u64, |acc, v| acc.wrapping_add(v.unwrap_or(0)))
    })
}

/// Keys per `get_many` call in the read-only group.
const MANY: usize = 64;

/// A way to run `n` ops of a stream from a cursor (see `run_ops`).
type Runner<'a> = dyn Fn(&[u64], &mut usize, usize) -> u64 + Sync + 'a;

/// Time `iters` iterations of `BATCH` ops over `streams.len()` threads.
fn timed(run: &Runner<'_>, streams: &[Vec<u64>], cursors: &mut [usize], iters: u64) -> Duration {
    let threads = streams.len();
    let per_thread = (BATCH / threads) * iters as usize;
    if threads == 1 {
        let start = Instant::now();
        black_box(run(&streams[0], &mut cursors[0], per_thread));
        return start.elapsed();
    }
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = streams
            .iter()
            .zip(cursors.iter_mut())
            .map(|(stream, cursor)| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    black_box(run(stream, cursor, per_thread))
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        for h in handles {
            h.join().expect("bench thread panicked");
        }
        start.elapsed()
    })
}

/// Warm a cache by running ops from the start of each stream once, untimed.
fn warm<C: Target>(c: &C, streams: &[Vec<u64>], ops: usize) {
    for s in streams {
        let mut cursor = 0;
        black_box(run_ops(c, s, &mut cursor, ops.min(s.len())));
    }
}

fn bench_one<C: Target>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    c: &C,
    streams: &[Vec<u64>],
) {
    bench_with(g, name, &|s, cur, n| run_ops(c, s, cur, n), streams);
}

fn bench_with(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    run: &Runner<'_>,
    streams: &[Vec<u64>],
) {
    let threads = streams.len();
    let mut cursors = vec![0usize; threads];
    g.bench_function(BenchmarkId::new(name, format!("{threads}t")), |b| {
        b.iter_custom(|iters| timed(run, streams, &mut cursors, iters))
    });
}

fn configure(g: &mut BenchmarkGroup<'_, WallTime>) {
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(10);
    if quick() {
        g.warm_up_time(Duration::from_millis(300));
        g.measurement_time(Duration::from_secs(1));
    } else {
        g.warm_up_time(Duration::from_secs(1));
        g.measurement_time(Duration::from_secs(3));
    }
}

/// Count misses over one pass of every stream (read-only workloads must have none).
fn misses<C: Target>(c: &C, streams: &[Vec<u64>]) -> usize {
    streams
        .iter()
        .flatten()
        .filter(|&&op| c.get(op & KEY_MASK).is_none())
        .count()
}

/// (a) Read-only hits: Zipf 1.0 over all keys, every key resident.
fn read_hits(cr: &mut Criterion) {
    let sz = sizes();
    let zipf = Zipf::new(sz.read_keys, 1.0);
    let all = streams(2, sz.stream, 0xa11, |r| key_of(zipf.sample(r)));
    // Capacity with headroom so per-shard imbalance evicts nothing in any of the caches.
    let cap = sz.read_keys as u64 * 5 / 4;
    let cog = common::cogwheel(cap);
    let moka = common::moka(cap);
    let qc = common::quick_cache(cap);
    let mut map =
        std::collections::HashMap::with_capacity_and_hasher(sz.read_keys, common::hasher());
    // One cache at a time, so no contestant's allocations are interleaved with another's.
    let keys = || (0..sz.read_keys as u64).map(key_of);
    keys().for_each(|k| Target::insert(&cog, k, k));
    keys().for_each(|k| moka.insert(k, k));
    keys().for_each(|k| qc.insert(k, k));
    keys().for_each(|k| {
        map.insert(k, k);
    });
    let map = RefMap(map);
    for (name, n, miss) in [
        ("cogwheel", cog.len(), misses(&cog, &all)),
        ("moka", Target::len(&moka), misses(&moka, &all)),
        ("quick_cache", Target::len(&qc), misses(&qc, &all)),
        ("hashmap", map.len(), misses(&map, &all)),
    ] {
        eprintln!("read_hits: {name}: {n} resident, {miss} misses over the streams");
        assert_eq!(miss, 0, "{name}: read-only workload must be all hits");
    }
    let mut g = cr.benchmark_group("read_hits");
    configure(&mut g);
    for t in THREADS {
        let s = &all[..t];
        bench_one(&mut g, "cogwheel", &cog, s);
        // The batch API: the same reads, `MANY` keys per call.
        bench_with(
            &mut g,
            "cogwheel_get_many",
            &|s, cur, n| run_many(&cog, s, cur, n),
            s,
        );
        bench_one(&mut g, "moka", &moka, s);
        bench_one(&mut g, "quick_cache", &qc, s);
        bench_one(&mut g, "hashmap", &map, s);
    }
    g.finish();
}

/// (b)/(c) Zipf 0.99 over the mixed key space with eviction; `insert_pct` of ops are inserts.
fn mixed(cr: &mut Criterion, group: &str, insert_pct: u64) {
    let sz = sizes();
    let zipf = Zipf::new(sz.mixed_keys, 0.99);
    let all = streams(2, sz.stream, 0xb0b ^ insert_pct, |r| {
        let k = key_of(zipf.sample(r));
        if r.below(100) < insert_pct {
            k | INSERT
        } else {
            k
        }
    });
    eviction_group(cr, group, sz.mixed_capacity, &all);
}

/// (d) Uniform churn: cache-aside gets over a key space ten times the capacity.
fn churn(cr: &mut Criterion) {
    let sz = sizes();
    let all = streams(2, sz.stream, 0xc4u64, |r: &mut Rng| {
        key_of(r.below(sz.churn_keys))
    });
    eviction_group(cr, "churn_uniform", sz.churn_capacity, &all);
}

fn eviction_group(cr: &mut Criterion, group: &str, cap: u64, all: &[Vec<u64>]) {
    let cog = common::cogwheel(cap);
    let moka = common::moka(cap);
    let qc = common::quick_cache(cap);
    let prefill = (2 * cap as usize).max(BATCH);
    warm(&cog, all, prefill);
    warm(&moka, all, prefill);
    warm(&qc, all, prefill);
    let mut g = cr.benchmark_group(group);
    configure(&mut g);
    for t in THREADS {
        let s = &all[..t];
        bench_one(&mut g, "cogwheel", &cog, s);
        bench_one(&mut g, "moka", &moka, s);
        bench_one(&mut g, "quick_cache", &qc, s);
    }
    g.finish();
    let st = cog.stats();
    eprintln!(
        "{group}: cogwheel hit ratio {:.3}, len {}; moka len {}; quick_cache len {}",
        st.hit_ratio(),
        cog.len(),
        Target::len(&moka),
        Target::len(&qc),
    );
}

fn mixed_95_5(cr: &mut Criterion) {
    mixed(cr, "mixed_95get_5insert", 5);
}

fn mixed_50_50(cr: &mut Criterion) {
    mixed(cr, "mixed_50get_50insert", 50);
}

criterion::criterion_group!(benches, read_hits, mixed_95_5, mixed_50_50, churn);
criterion::criterion_main!(benches);
