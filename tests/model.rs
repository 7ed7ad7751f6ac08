//! Model-based tests: random operation sequences against a `HashMap` reference.

use cogwheel::{Cache, EvictionPolicy, fixed_hasher};
use proptest::prelude::*;
use std::collections::HashMap;

#[derive(Debug, Clone)]
enum Op {
    Insert(u16, u32),
    Get(u16),
    GetMany(Vec<u16>),
    Remove(u16),
    InvalidateIfMod(u16),
    InvalidateAll,
}

fn op(keys: u16) -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..keys, any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
        8 => (0..keys).prop_map(Op::Get),
        2 => prop::collection::vec(0..keys, 0..24).prop_map(Op::GetMany),
        3 => (0..keys).prop_map(Op::Remove),
        1 => (2..5u16).prop_map(Op::InvalidateIfMod),
        1 => Just(Op::InvalidateAll),
    ]
}

fn build(cap: u64, shards: usize, policy: EvictionPolicy) -> Cache<u16, u32, ahash::RandomState> {
    Cache::builder()
        .max_capacity(cap)
        .shards(shards)
        .eviction_policy(policy)
        .hasher(fixed_hasher(9))
        .build()
        .unwrap()
}

fn policies() -> impl Strategy<Value = EvictionPolicy> {
    prop_oneof![Just(EvictionPolicy::default()), Just(EvictionPolicy::Clock)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Capacity covers the key space: the cache must behave exactly like a map.
    #[test]
    fn exact_when_everything_fits(ops in prop::collection::vec(op(64), 1..400), shards in prop::sample::select(vec![1usize, 2, 4]), policy in policies()) {
        let cache = build(64 * 4, shards, policy);
        let mut model: HashMap<u16, u32> = HashMap::new();
        for op in ops {
            match op {
                Op::Insert(k, v) => { cache.insert(k, v).unwrap(); model.insert(k, v); }
                Op::Get(k) => prop_assert_eq!(cache.get(&k), model.get(&k).copied()),
                Op::GetMany(ks) => {
                    let want: Vec<_> = ks.iter().map(|k| model.get(k).copied()).collect();
                    prop_assert_eq!(cache.get_many(&ks), want);
                }
                Op::Remove(k) => prop_assert_eq!(cache.remove(&k).unwrap(), model.remove(&k)),
                Op::InvalidateIfMod(m) => {
                    let n = cache.invalidate_if(|k, _| k % m == 0);
                    let before = model.len();
                    model.retain(|k, _| k % m != 0);
                    prop_assert_eq!(n, before - model.len());
                }
                Op::InvalidateAll => { cache.invalidate_all(); model.clear(); }
            }
            prop_assert_eq!(cache.len(), model.len());
            cache.validate_internals();
        }
        let mut got: Vec<_> = cache.iter().collect();
        got.sort();
        let mut want: Vec<_> = model.into_iter().collect();
        want.sort();
        prop_assert_eq!(got, want);
    }

    /// Capacity smaller than the key space: whatever is returned is the latest value written
    /// for that key (never a stale or removed one), and the bound always holds.
    #[test]
    fn never_stale_when_evicting(ops in prop::collection::vec(op(200), 1..600), cap in 1u64..40, shards in prop::sample::select(vec![1usize, 2, 4]), policy in policies()) {
        let cache = build(cap, shards, policy);
        let mut latest: HashMap<u16, u32> = HashMap::new();
        for op in ops {
            match op {
                Op::Insert(k, v) => { cache.insert(k, v).unwrap(); latest.insert(k, v); }
                Op::Get(k) => {
                    if let Some(v) = cache.get(&k) {
                        prop_assert_eq!(Some(&v), latest.get(&k), "stale or resurrected value");
                    }
                }
                Op::GetMany(ks) => {
                    for (k, v) in ks.iter().zip(cache.get_many(&ks)) {
                        if let Some(v) = v {
                            prop_assert_eq!(Some(&v), latest.get(k), "get_many: stale value");
                        }
                    }
                }
                Op::Remove(k) => {
                    if let Some(v) = cache.remove(&k).unwrap() {
                        prop_assert_eq!(Some(&v), latest.get(&k));
                    }
                    latest.remove(&k);
                }
                Op::InvalidateIfMod(m) => { cache.invalidate_if(|k, _| k % m == 0); latest.retain(|k, _| k % m != 0); }
                Op::InvalidateAll => { cache.invalidate_all(); latest.clear(); }
            }
            prop_assert!(cache.len() as u64 <= cap, "len {} > cap {}", cache.len(), cap);
            cache.validate_internals();
        }
    }
}
