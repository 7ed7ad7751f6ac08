//! Shared pieces of the benches: a seeded RNG, a Zipf sampler, the op encoding and one small
//! adapter trait so cogwheel, moka, quick_cache and the reference map run the exact same loop.

#![allow(dead_code)]

use std::collections::HashMap;

/// The hasher every contestant uses: cogwheel's fixed-seed ahash, so hashing cost and key
/// spread are the same for all of them and not a variable of the comparison.
pub type Hasher = ahash::RandomState;

pub fn hasher() -> Hasher {
    cogwheel::fixed_hasher(0x5eed)
}

/// `COGWHEEL_BENCH_QUICK=1` shrinks key spaces, capacities and measurement times (about 10×)
/// for a smoke run.
pub fn quick() -> bool {
    std::env::var_os("COGWHEEL_BENCH_QUICK").is_some_and(|v| !v.is_empty() && v != "0")
}

/// SplitMix64: tiny, fast, good enough to drive workload generation; seeded for repeatability.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`, 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[0, n)` (multiply-shift; the bias is negligible for n ≪ 2^64).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// Zipf over ranks `0..n` with exponent `s` (rank 0 most popular), by inverse CDF: the
/// normalized cumulative weights are tabulated once and each sample is a binary search.
/// Exact for any `s ≥ 0` (including `s = 1`), and plenty fast for pre-generating streams.
#[derive(Debug)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, s: f64) -> Self {
        assert!(n > 0);
        let mut cdf = Vec::with_capacity(n);
        let mut acc = 0.0;
        for i in 1..=n {
            acc += (i as f64).powf(-s);
            cdf.push(acc);
        }
        for c in &mut cdf {
            *c /= acc;
        }
        Zipf { cdf }
    }

    pub fn sample(&self, rng: &mut Rng) -> u64 {
        let u = rng.next_f64();
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1) as u64
    }
}

/// Ops are `u64`s: the key in the low 63 bits, bit 63 set for an insert. A get that misses is
/// followed by an insert of the same key (cache-aside), and the pair counts as one op.
pub const INSERT: u64 = 1 << 63;
pub const KEY_MASK: u64 = !INSERT;

/// Rank → key: a fixed odd-multiplier permutation, so hot keys are not the small integers.
#[inline]
pub fn key_of(rank: u64) -> u64 {
    rank.wrapping_mul(0x9e37_79b9_7f4a_7c15) & KEY_MASK
}

/// Pre-generate `threads` op streams of `len` ops each (each thread its own seed).
pub fn streams(
    threads: usize,
    len: usize,
    seed: u64,
    mut gen_op: impl FnMut(&mut Rng) -> u64,
) -> Vec<Vec<u64>> {
    (0..threads)
        .map(|t| {
            let mut rng = Rng::new(seed ^ (t as u64).wrapping_mul(0xa076_1d64_78bd_642f));
            (0..len).map(|_| gen_op(&mut rng)).collect()
        })
        .collect()
}

/// What the benches need of a cache.
pub trait Target: Sync {
    fn get(&self, k: u64) -> Option<u64>;
    fn insert(&self, k: u64, v: u64);
    fn len(&self) -> usize;
}

pub type Cogwheel = cogwheel::Cache<u64, u64, Hasher>;
pub type Moka = moka::sync::Cache<u64, u64, Hasher>;
pub type Quick = quick_cache::sync::Cache<
    u64,
    u64,
    quick_cache::UnitWeighter,
    Hasher,
    quick_cache::sync::DefaultLifecycle<u64, u64>,
>;

pub fn cogwheel(capacity: u64) -> Cogwheel {
    cogwheel::Cache::builder()
        .max_capacity(capacity)
        .hasher(hasher())
        .build()
        .expect("valid cogwheel settings")
}

pub fn moka(capacity: u64) -> Moka {
    moka::sync::Cache::builder()
        .max_capacity(capacity)
        .build_with_hasher(hasher())
}

pub fn quick_cache(capacity: u64) -> Quick {
    quick_cache::sync::Cache::with(
        capacity as usize,
        capacity,
        quick_cache::UnitWeighter,
        hasher(),
        quick_cache::sync::DefaultLifecycle::default(),
    )
}

impl Target for Cogwheel {
    #[inline]
    fn get(&self, k: u64) -> Option<u64> {
        cogwheel::Cache::get(self, &k)
    }
    #[inline]
    fn insert(&self, k: u64, v: u64) {
        cogwheel::Cache::insert(self, k, v).expect("no store, unit weights: insert cannot fail");
    }
    fn len(&self) -> usize {
        cogwheel::Cache::len(self)
    }
}

impl Target for Moka {
    #[inline]
    fn get(&self, k: u64) -> Option<u64> {
        moka::sync::Cache::get(self, &k)
    }
    #[inline]
    fn insert(&self, k: u64, v: u64) {
        moka::sync::Cache::insert(self, k, v)
    }
    fn len(&self) -> usize {
        self.run_pending_tasks();
        self.entry_count() as usize
    }
}

impl Target for Quick {
    #[inline]
    fn get(&self, k: u64) -> Option<u64> {
        quick_cache::sync::Cache::get(self, &k)
    }
    #[inline]
    fn insert(&self, k: u64, v: u64) {
        quick_cache::sync::Cache::insert(self, k, v)
    }
    fn len(&self) -> usize {
        quick_cache::sync::Cache::len(self)
    }
}

/// The physical reference for reads: an unsynchronized, read-only map with the same hasher.
/// Shared by `&` across threads (it is never written while timed).
#[derive(Debug)]
pub struct RefMap(pub HashMap<u64, u64, Hasher>);

impl Target for RefMap {
    #[inline]
    fn get(&self, k: u64) -> Option<u64> {
        self.0.get(&k).copied()
    }
    fn insert(&self, _k: u64, _v: u64) {
        unreachable!("the reference map is read-only; its workload has no misses")
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Store puts of `pairs`, without deadlines (for benches that feed a store directly).
pub fn puts<V>(pairs: &[(u64, V)]) -> Vec<cogwheel::store::WriteOp<'_, u64, V>> {
    pairs
        .iter()
        .map(|(k, v)| cogwheel::store::WriteOp::Put {
            key: k,
            value: v,
            expires_at: None,
        })
        .collect()
}

/// One op of a stream: an `INSERT`-flagged op inserts; otherwise a get, and on a miss an
/// insert of the key (cache-aside: the pair is one op). Returns something for `black_box`.
#[inline(always)]
pub fn run_op<C: Target>(c: &C, op: u64) -> u64 {
    let k = op & KEY_MASK;
    if op & INSERT != 0 {
        c.insert(k, k);
        1
    } else {
        c.get(k).unwrap_or_else(|| {
            c.insert(k, k);
            0
        })
    }
}
