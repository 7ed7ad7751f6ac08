//! The read ceiling of an inline-entry layout: a measurement for design decisions, not a
//! product path.
//!
//! cogwheel's `get` pays two dependent cache misses per cold key (the table group, then the
//! separately allocated entry; DESIGN §3.1) where an inline table pays one. This bench puts a
//! number on that: a minimal open-addressing table whose 32-byte slots hold the key and the
//! value inline, read with a per-slot sequence lock (no epoch pin, no allocation), against
//! std's `HashMap`, cogwheel and quick_cache, on the read-only workload of the throughput
//! bench (Zipf 1.0 over 1M resident keys), in one process. Two variants of the toy count hits:
//! in one shared atomic, and in per-thread padded stripes (what a cache would do).
//!
//! What the toy leaves out, and why a product cannot simply copy it: values are `u64` and are
//! copied bitwise, which is sound only for `Copy` values (a generic `V` such as `Arc<T>` must
//! be cloned from memory that stays valid meanwhile, which is what the epoch-protected entry
//! gives); there is no eviction, expiry or reference bit.
//!
//! `cargo bench --bench inline_ceiling` (`THREADS=2` for two reader threads).

mod common;

use common::{Rng, Target, Zipf, key_of};
use crossbeam_utils::CachePadded;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering::*, fence};
use std::time::Instant;

/// Key, value and a sequence number (odd while a writer is inside), on half a cache line.
#[repr(align(32))]
struct Slot {
    seq: AtomicU64,
    key: AtomicU64,
    value: AtomicU64,
}

const EMPTY: u64 = u64::MAX;

/// Open addressing with linear probing, load factor ≤ 0.8.
struct Inline {
    slots: Vec<Slot>,
    mask: usize,
    shared_hits: AtomicU64,
    striped_hits: Vec<CachePadded<AtomicU64>>,
}

/// How a lookup counts its hit.
#[derive(Clone, Copy)]
enum Count {
    None,
    Shared,
    Striped(usize),
}

impl Inline {
    fn new(n: usize) -> Self {
        let cap = (n * 5 / 4).next_power_of_two();
        Inline {
            slots: (0..cap)
                .map(|_| Slot {
                    seq: AtomicU64::new(0),
                    key: AtomicU64::new(EMPTY),
                    value: AtomicU64::new(0),
                })
                .collect(),
            mask: cap - 1,
            shared_hits: AtomicU64::new(0),
            striped_hits: (0..64)
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
        }
    }

    fn home(&self, k: u64) -> usize {
        (k.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20) as usize & self.mask
    }

    /// Single writer (setup only).
    fn insert(&self, k: u64, v: u64) {
        let mut i = self.home(k);
        loop {
            let s = &self.slots[i];
            let kk = s.key.load(Relaxed);
            if kk == EMPTY || kk == k {
                s.seq.fetch_add(1, AcqRel);
                s.key.store(k, Relaxed);
                s.value.store(v, Relaxed);
                s.seq.fetch_add(1, Release);
                return;
            }
            i = (i + 1) & self.mask;
        }
    }

    #[inline]
    fn get(&self, k: u64, count: Count) -> Option<u64> {
        let mut i = self.home(k);
        loop {
            let s = &self.slots[i];
            let before = s.seq.load(Acquire);
            let kk = s.key.load(Relaxed);
            let v = s.value.load(Relaxed);
            fence(Acquire);
            if before & 1 == 1 || s.seq.load(Relaxed) != before {
                continue; // a writer was inside: read the slot again
            }
            if kk == k {
                match count {
                    Count::None => {}
                    Count::Shared => {
                        self.shared_hits.fetch_add(1, Relaxed);
                    }
                    Count::Striped(t) => {
                        self.striped_hits[t % 64].fetch_add(1, Relaxed);
                    }
                }
                return Some(v);
            }
            if kk == EMPTY {
                return None;
            }
            i = (i + 1) & self.mask;
        }
    }
}

fn main() {
    let n = if common::quick() { 100_000 } else { 1_000_000 };
    let zipf = Zipf::new(n, 1.0);
    let mut rng = Rng::new(0xa11);
    let stream: Vec<u64> = (0..(1 << 22))
        .map(|_| key_of(zipf.sample(&mut rng)))
        .collect();
    let toy = Inline::new(n);
    let cog = common::cogwheel(n as u64 * 5 / 4);
    let qc = common::quick_cache(n as u64 * 5 / 4);
    let mut map = std::collections::HashMap::with_capacity_and_hasher(n, common::hasher());
    for k in (0..n as u64).map(key_of) {
        toy.insert(k, k);
        Target::insert(&cog, k, k);
        Target::insert(&qc, k, k);
        map.insert(k, k);
    }
    let threads: usize = std::env::var("THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    // Every thread reads the whole stream three times from its own offset; Mops/s in total.
    let run = |f: &(dyn Fn(usize, u64) -> Option<u64> + Sync)| {
        let start = Instant::now();
        std::thread::scope(|s| {
            for t in 0..threads {
                let stream = &stream;
                s.spawn(move || {
                    let mut acc = 0u64;
                    for pass in 0..3 {
                        let off = (t * 7919 + pass * 104_729) % stream.len();
                        for &k in stream[off..].iter().chain(&stream[..off]) {
                            acc = acc.wrapping_add(f(t, k).expect("resident"));
                        }
                    }
                    black_box(acc);
                });
            }
        });
        (3 * stream.len() * threads) as f64 / start.elapsed().as_secs_f64() / 1e6
    };
    println!(
        "inline ceiling, {threads} thread(s), Zipf 1.0 over {n} resident keys: Mops/s, and ÷ HashMap"
    );
    for round in 1..=2 {
        let m = run(&|_, k| map.get(&k).copied());
        let rows = [
            ("inline, no count", run(&|_, k| toy.get(k, Count::None))),
            (
                "inline, shared count",
                run(&|_, k| toy.get(k, Count::Shared)),
            ),
            (
                "inline, striped count",
                run(&|t, k| toy.get(k, Count::Striped(t))),
            ),
            ("cogwheel", run(&|_, k| Target::get(&cog, k))),
            ("quick_cache", run(&|_, k| Target::get(&qc, k))),
        ];
        println!("round {round}: {:<22} {m:7.2}", "HashMap");
        let q = rows[4].1;
        for (name, r) in rows {
            println!(
                "round {round}: {name:<22} {r:7.2}  ÷ HashMap {:.2}  ÷ quick_cache {:.2}",
                r / m,
                r / q
            );
        }
    }
}
