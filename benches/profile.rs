//! A plain loop over one cogwheel path, for `perf record` / `valgrind --tool=callgrind`
//! (criterion's setup of every group would otherwise swamp the profile).
//!
//! ```text
//! cargo bench --bench profile --no-run
//! perf record -g target/release/deps/profile-* get 5      # read path, 5 s
//! perf record -g target/release/deps/profile-* insert 5   # insert path with eviction
//! THREADS=2 target/release/deps/profile-* map-get 2       # the read-only std map, for ratios
//! target/release/deps/profile-* get-many 2                # get_many in batches of 64
//! THREADS=2 target/release/deps/profile-* mixed50 2       # 50 % get / 50 % insert
//! ```
//!
//! `get`: Zipf 1.0 hits over 1M resident keys. `insert`: uniform inserts of fresh keys over
//! a 10M key space into a 1M cache (every op admits one entry and evicts one).

mod common;

use common::{Rng, Target, Zipf, key_of};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Total ops run by every loop (warm-ups included), for per-op costs under callgrind.
static TOTAL: AtomicU64 = AtomicU64::new(0);

/// Whether to run another pass: until the deadline, or exactly `PASSES` passes if that
/// variable is set (for callgrind, where wall time means nothing).
fn more(pass: &mut u64, until: Instant) -> bool {
    *pass += 1;
    match std::env::var("PASSES")
        .ok()
        .and_then(|p| p.parse::<u64>().ok())
    {
        Some(n) => *pass <= n,
        None => Instant::now() < until,
    }
}

#[inline(never)]
fn get_loop<C: Target>(c: &C, keys: &[u64], until: Instant) -> (u64, u64) {
    let (mut n, mut acc) = (0u64, 0u64);
    let mut pass = 0;
    while more(&mut pass, until) {
        for &k in keys {
            acc = acc.wrapping_add(c.get(k).unwrap_or(0));
        }
        n += keys.len() as u64;
        TOTAL.fetch_add(keys.len() as u64, Ordering::Relaxed);
    }
    (n, acc)
}

/// `get_many` over batches of `BATCH` keys.
#[inline(never)]
fn get_many_loop(c: &common::Cogwheel, keys: &[u64], until: Instant) -> (u64, u64) {
    const BATCH: usize = 64;
    let (mut n, mut acc) = (0u64, 0u64);
    let mut pass = 0;
    while more(&mut pass, until) {
        for batch in keys.chunks(BATCH) {
            for v in c.get_many(batch) {
                acc = acc.wrapping_add(v.unwrap_or(0));
            }
        }
        n += keys.len() as u64;
        TOTAL.fetch_add(keys.len() as u64, Ordering::Relaxed);
    }
    (n, acc)
}

/// Cache-aside: get, insert on a miss; `INSERT`-flagged ops insert.
#[inline(never)]
fn mixed_loop<C: Target>(c: &C, ops: &[u64], until: Instant) -> u64 {
    let mut n = 0u64;
    let mut pass = 0;
    while more(&mut pass, until) {
        for &op in ops {
            let k = op & common::KEY_MASK;
            if op & common::INSERT != 0 || c.get(k).is_none() {
                c.insert(k, k);
            }
        }
        n += ops.len() as u64;
        TOTAL.fetch_add(ops.len() as u64, Ordering::Relaxed);
    }
    n
}

#[inline(never)]
fn insert_loop<C: Target>(c: &C, keys: &[u64], until: Instant) -> u64 {
    let mut n = 0u64;
    let mut pass = 0;
    while more(&mut pass, until) {
        for &k in keys {
            c.insert(k, k);
        }
        n += keys.len() as u64;
        TOTAL.fetch_add(keys.len() as u64, Ordering::Relaxed);
    }
    n
}

/// A timed get loop over some keys until a deadline: (ops, checksum).
type GetRun<'a> = dyn Fn(&[u64], Instant) -> (u64, u64) + 'a;

/// Run `f` on `threads` threads at once; sum the op counts.
fn par(threads: usize, f: impl Fn() -> (u64, u64) + Sync) -> (u64, u64) {
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads).map(|_| s.spawn(&f)).collect();
        hs.into_iter()
            .map(|h| h.join().expect("worker"))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 ^ b.1))
    })
}

fn fill<C: Target>(c: &C, n: usize) {
    for r in 0..n as u64 {
        c.insert(key_of(r), key_of(r));
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let what = args.first().map_or("get", String::as_str);
    let secs: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let threads: usize = std::env::var("THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    let until = || Instant::now() + Duration::from_secs(secs);
    let mut rng = Rng::new(42);
    match what {
        "get" | "qc-get" | "map-get" | "get-many" => {
            let n: usize = args
                .get(2)
                .and_then(|s| s.parse().ok())
                .unwrap_or(1_000_000);
            let zipf = Zipf::new(n, 1.0);
            let keys: Vec<u64> = (0..1 << 20)
                .map(|_| key_of(zipf.sample(&mut rng)))
                .collect();
            let run = |c: &GetRun<'_>| {
                let t = Instant::now();
                let (ops, acc) = c(&keys, until());
                black_box(acc);
                let dt = t.elapsed().as_secs_f64();
                println!("{what}: {:.1} Mops/s", ops as f64 / dt / 1e6);
            };
            if what == "get" {
                let c = common::cogwheel(n as u64 * 5 / 4);
                fill(&c, n);
                if threads > 1 {
                    run(&|k, u| par(threads, || get_loop(&c, k, u)));
                } else {
                    run(&|k, u| get_loop(&c, k, u));
                }
            } else if what == "get-many" {
                let c = common::cogwheel(n as u64 * 5 / 4);
                fill(&c, n);
                run(&|k, u| par(threads, || get_many_loop(&c, k, u)));
            } else if what == "map-get" {
                // The physical reference of the throughput bench: a read-only std map.
                let mut map =
                    std::collections::HashMap::with_capacity_and_hasher(n, common::hasher());
                map.extend((0..n as u64).map(|r| (key_of(r), key_of(r))));
                let c = common::RefMap(map);
                run(&|k, u| par(threads, || get_loop(&c, k, u)));
            } else if threads > 1 {
                let c = common::quick_cache(n as u64 * 5 / 4);
                fill(&c, n);
                run(&|k, u| par(threads, || get_loop(&c, k, u)));
            } else {
                let c = common::quick_cache(n as u64 * 5 / 4);
                fill(&c, n);
                run(&|k, u| get_loop(&c, k, u));
            }
        }
        "insert" | "qc-insert" => {
            let keys: Vec<u64> = (0..1 << 22)
                .map(|_| key_of(rng.below(10_000_000)))
                .collect();
            let run = |c: &dyn Fn(&[u64], Instant) -> u64| {
                let t = Instant::now();
                let ops = c(&keys, until());
                let dt = t.elapsed().as_secs_f64();
                println!("{what}: {:.2} Mops/s", ops as f64 / dt / 1e6);
            };
            if what == "insert" {
                let c = common::cogwheel(1_000_000);
                fill(&c, 1_000_000);
                run(&|k, u| insert_loop(&c, k, u));
            } else {
                let c = common::quick_cache(1_000_000);
                fill(&c, 1_000_000);
                run(&|k, u| insert_loop(&c, k, u));
            }
        }
        "mixed95" | "qc-mixed95" | "mixed50" | "qc-mixed50" => {
            let insert_pct = if what.ends_with("95") { 5 } else { 50 };
            let zipf = Zipf::new(1_000_000, 0.99);
            let ops: Vec<u64> = (0..1 << 21)
                .map(|_| {
                    let k = key_of(zipf.sample(&mut rng));
                    if rng.below(100) < insert_pct {
                        k | common::INSERT
                    } else {
                        k
                    }
                })
                .collect();
            // With THREADS > 1 each thread walks the stream from its own offset.
            let run = |c: &(dyn Fn(&[u64], Instant) -> u64 + Sync)| {
                c(&ops, Instant::now() + Duration::from_millis(300));
                let t = Instant::now();
                let n = if threads > 1 {
                    let next = AtomicU64::new(0);
                    par(threads, || {
                        let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                        let mut mine = ops.clone();
                        mine.rotate_left(i * ops.len() / threads);
                        (c(&mine, until()), 0)
                    })
                    .0
                } else {
                    c(&ops, until())
                };
                let dt = t.elapsed().as_secs_f64();
                println!("{what}: {:.2} Mops/s", n as f64 / dt / 1e6);
            };
            if what.starts_with("mixed") {
                let c = common::cogwheel(100_000);
                run(&|k, u| mixed_loop(&c, k, u));
            } else {
                let c = common::quick_cache(100_000);
                run(&|k, u| mixed_loop(&c, k, u));
            }
        }
        other => {
            panic!(
                "unknown path {other:?}: use get, get-many, insert, mixed95, mixed50, map-get \
                 or their qc- forms"
            )
        }
    }
    eprintln!("total ops in loops: {}", TOTAL.load(Ordering::Relaxed));
}
