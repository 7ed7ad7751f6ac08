//! The cost of expiry on the read path: `get` hits on a resident key set, on a cache without
//! expiry, with `time_to_live(1h)` and with `time_to_idle(1h)`, side by side.
//!
//! Two parts:
//! * criterion groups (`expiry_cost/<dist>_<threads>t`), one function per variant;
//! * an interleaved A/B/C report: rounds of the three variants in rotating order on the same
//!   pre-generated keys, printing the median ns/get per variant and the median of the per-round
//!   ratios (TTL / none, TTI / none). The per-round ratios are the claim: the machine drifts
//!   between rounds, far less within one.
//!
//! `COGWHEEL_BENCH_QUICK=1` shortens everything. Under `cargo test --benches` (no `--bench`
//! argument) it runs as a smoke test on tiny sizes.

mod common;

use cogwheel::Cache;
use common::{Rng, key_of};
use criterion::{BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// Resident keys.
const KEYS: usize = 100_000;
/// Keys looked up per criterion iteration.
const BATCH: usize = 1024;
/// Hour-long expiry: nothing expires during the run.
const HOUR: Duration = Duration::from_secs(3600);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    NoExpiry,
    Ttl,
    Tti,
}

impl Variant {
    const ALL: [Variant; 3] = [Variant::NoExpiry, Variant::Ttl, Variant::Tti];

    fn name(self) -> &'static str {
        match self {
            Variant::NoExpiry => "no_expiry",
            Variant::Ttl => "ttl_1h",
            Variant::Tti => "tti_1h",
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Dist {
    Zipf,
    Uniform,
}

impl Dist {
    fn name(self) -> &'static str {
        match self {
            Dist::Zipf => "zipf0.99",
            Dist::Uniform => "uniform",
        }
    }
}

struct Sizes {
    /// Lookups in one pass of the interleaved report (per thread).
    pass: usize,
    rounds: usize,
    warm_up: Duration,
    measure: Duration,
    criterion: bool,
}

fn sizes() -> Sizes {
    let bench = std::env::args().any(|a| a == "--bench");
    let quick = common::quick();
    if !bench {
        Sizes {
            pass: 4096,
            rounds: 1,
            warm_up: Duration::from_millis(10),
            measure: Duration::from_millis(10),
            criterion: false,
        }
    } else if quick {
        Sizes {
            pass: 1 << 18,
            rounds: 15,
            warm_up: Duration::from_millis(300),
            measure: Duration::from_secs(1),
            criterion: true,
        }
    } else {
        Sizes {
            pass: 1 << 18,
            rounds: 41,
            warm_up: Duration::from_secs(1),
            measure: Duration::from_secs(3),
            criterion: true,
        }
    }
}

/// `len` ranks in [0, n): Zipf(0.99) by inverse CDF, or uniform.
fn ranks(dist: Dist, n: usize, len: usize, seed: u64) -> Vec<usize> {
    let mut rng = Rng::new(seed);
    match dist {
        Dist::Uniform => (0..len)
            .map(|_| (rng.next_u64() % n as u64) as usize)
            .collect(),
        Dist::Zipf => {
            let mut cdf = Vec::with_capacity(n);
            let mut sum = 0.0;
            for i in 1..=n {
                sum += 1.0 / (i as f64).powf(0.99);
                cdf.push(sum);
            }
            (0..len)
                .map(|_| {
                    let u = rng.next_f64() * sum;
                    cdf.partition_point(|&c| c < u).min(n - 1)
                })
                .collect()
        }
    }
}

fn build(variant: Variant) -> Cache<u64, u64> {
    let b = Cache::<u64, u64>::builder().max_capacity(2 * KEYS as u64);
    let b = match variant {
        Variant::NoExpiry => b,
        Variant::Ttl => b.time_to_live(HOUR),
        Variant::Tti => b.time_to_idle(HOUR),
    };
    b.build().expect("build")
}

/// The three caches, filled together: key by key into each in turn, so their entries are
/// laid out alike in memory. (Filling one cache after the other gave the first-filled cache a
/// denser, warmer heap: with uniform keys that alone moved TTL/none from ~1.1 to ~1.5.)
fn build_all() -> Vec<(Variant, Cache<u64, u64>)> {
    let caches: Vec<(Variant, Cache<u64, u64>)> =
        Variant::ALL.iter().map(|&v| (v, build(v))).collect();
    for i in 0..KEYS {
        for (_, c) in &caches {
            c.insert(key_of(i as u64), i as u64).expect("insert");
        }
    }
    for (v, c) in &caches {
        assert_eq!(c.len(), KEYS, "{}: every key must be resident", v.name());
    }
    caches
}

/// Look up every key of `keys`; returns a checksum so nothing is optimized away.
#[inline(never)]
fn pass(cache: &Cache<u64, u64>, keys: &[u64]) -> u64 {
    let mut sum = 0u64;
    for k in keys {
        sum = sum.wrapping_add(cache.get(k).unwrap_or(u64::MAX));
    }
    sum
}

/// `threads` threads each run `pass` over their own key slice `iters` times; wall time.
fn timed(cache: &Cache<u64, u64>, keys: &[Vec<u64>], iters: u64) -> Duration {
    if keys.len() == 1 {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(pass(cache, &keys[0]));
        }
        return start.elapsed();
    }
    let barrier = Barrier::new(keys.len() + 1);
    std::thread::scope(|s| {
        for ks in keys {
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                for _ in 0..iters {
                    black_box(pass(cache, ks));
                }
                barrier.wait();
            });
        }
        barrier.wait();
        let start = Instant::now();
        barrier.wait();
        start.elapsed()
    })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let sz = sizes();
    let caches = build_all();
    let configs: [(Dist, usize); 3] = [(Dist::Zipf, 1), (Dist::Uniform, 1), (Dist::Zipf, 2)];

    if sz.criterion {
        let mut c = Criterion::default()
            .sample_size(10)
            .warm_up_time(sz.warm_up)
            .measurement_time(sz.measure)
            .without_plots()
            .configure_from_args();
        for (dist, threads) in configs {
            let keys: Vec<Vec<u64>> = (0..threads)
                .map(|t| {
                    ranks(dist, KEYS, BATCH * 64, 7 + t as u64)
                        .into_iter()
                        .map(|r| key_of(r as u64))
                        .collect()
                })
                .collect();
            let mut g = c.benchmark_group(format!("expiry_cost/{}_{}t", dist.name(), threads));
            g.throughput(Throughput::Elements((BATCH * 64 * threads) as u64));
            for (v, cache) in &caches {
                g.bench_function(BenchmarkId::from_parameter(v.name()), |b| {
                    b.iter_custom(|iters| timed(cache, &keys, iters))
                });
            }
            g.finish();
        }
        c.final_summary();
    }

    println!();
    println!(
        "== expiry_cost interleaved report: {} resident u64 keys, {} gets per pass per thread, {} rounds ==",
        KEYS, sz.pass, sz.rounds
    );
    println!(
        "{:<16} {:>7} {:>12} {:>12} {:>12} {:>10} {:>10} {:>10} {:>10}",
        "keys",
        "threads",
        "none ns/get",
        "ttl ns/get",
        "tti ns/get",
        "ttl/none",
        "tti/none",
        "ttl/n min",
        "tti/n min"
    );
    for (dist, threads) in configs {
        let keys: Vec<Vec<u64>> = (0..threads)
            .map(|t| {
                ranks(dist, KEYS, sz.pass, 1000 + t as u64)
                    .into_iter()
                    .map(|r| key_of(r as u64))
                    .collect()
            })
            .collect();
        let mut per: [Vec<f64>; 3] = Default::default();
        let mut ttl_ratio = Vec::new();
        let mut tti_ratio = Vec::new();
        for round in 0..sz.rounds {
            let mut ns = [0.0f64; 3];
            // Rotate the order so no variant always runs first (or right after another).
            for j in 0..3 {
                let i = (round + j) % 3;
                let d = timed(&caches[i].1, &keys, 1);
                ns[i] = d.as_nanos() as f64 / sz.pass as f64;
            }
            for i in 0..3 {
                per[i].push(ns[i]);
            }
            ttl_ratio.push(ns[1] / ns[0]);
            tti_ratio.push(ns[2] / ns[0]);
        }
        let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        let mins = [min(&per[0]), min(&per[1]), min(&per[2])];
        println!(
            "{:<16} {:>7} {:>12.2} {:>12.2} {:>12.2} {:>10.3} {:>10.3} {:>10.3} {:>10.3}",
            dist.name(),
            threads,
            median(&mut per[0]),
            median(&mut per[1]),
            median(&mut per[2]),
            median(&mut ttl_ratio),
            median(&mut tti_ratio),
            mins[1] / mins[0],
            mins[2] / mins[0],
        );
    }
    println!(
        "(ns/get is wall time per get on one thread: with 2 threads, each does a pass of its own; \
         ratios are medians of per-round ratios, \"min\" columns the ratio of each variant's fastest round; \
         target: ttl/none <= 1.10)"
    );
    for (v, cache) in &caches {
        let s = cache.stats();
        assert_eq!(s.misses, 0, "{}: every get must hit", v.name());
    }
    drop(caches);
    same_cache_report(&sz);
}

/// TTL cost with the memory layout held equal: one cache with a 1 h default TTL, holding the
/// even ranks without a deadline (`insert_with_ttl(Duration::MAX)`: `get` then skips the
/// clock, the no-expiry path) and the odd ranks with the default TTL. Both key sets were
/// allocated interleaved in the same heap and live in the same tables; passes over the two
/// halves alternate.
fn same_cache_report(sz: &Sizes) {
    let cache = Cache::<u64, u64>::builder()
        .max_capacity(2 * KEYS as u64)
        .time_to_live(HOUR)
        .build()
        .expect("build");
    for i in 0..KEYS {
        if i % 2 == 0 {
            cache
                .insert_with_ttl(key_of(i as u64), i as u64, Duration::MAX)
                .expect("insert");
        } else {
            cache.insert(key_of(i as u64), i as u64).expect("insert");
        }
    }
    assert_eq!(cache.len(), KEYS);
    println!();
    println!(
        "== same-cache A/B: one TTL(1h) cache, {} keys without a deadline vs {} with; {} gets \
         per pass, {} rounds ==",
        KEYS / 2,
        KEYS / 2,
        sz.pass,
        sz.rounds
    );
    println!(
        "{:<16} {:>7} {:>14} {:>14} {:>10} {:>10}",
        "keys", "threads", "never ns/get", "ttl ns/get", "ttl/never", "ttl/n min"
    );
    for (dist, threads) in [(Dist::Zipf, 1), (Dist::Uniform, 1), (Dist::Zipf, 2)] {
        let sets: [Vec<Vec<u64>>; 2] = [0, 1].map(|parity| {
            (0..threads)
                .map(|t| {
                    ranks(dist, KEYS / 2, sz.pass, 2000 + t as u64)
                        .into_iter()
                        .map(|r| key_of((2 * r + parity) as u64))
                        .collect()
                })
                .collect()
        });
        let mut per: [Vec<f64>; 2] = Default::default();
        let mut ratio = Vec::new();
        for round in 0..sz.rounds {
            let mut ns = [0.0f64; 2];
            for j in 0..2 {
                let i = (round + j) % 2;
                ns[i] = timed(&cache, &sets[i], 1).as_nanos() as f64 / sz.pass as f64;
            }
            per[0].push(ns[0]);
            per[1].push(ns[1]);
            ratio.push(ns[1] / ns[0]);
        }
        let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        let r_min = min(&per[1]) / min(&per[0]);
        println!(
            "{:<16} {:>7} {:>14.2} {:>14.2} {:>10.3} {:>10.3}",
            dist.name(),
            threads,
            median(&mut per[0]),
            median(&mut per[1]),
            median(&mut ratio),
            r_min
        );
    }
    assert_eq!(cache.stats().misses, 0, "every get must hit");
}
