//! The CLOCK reference bit, which lives in the table group next to the slot's tag: a read
//! gives its entry a second chance, an update keeps it, a rebuild carries it over.

use cogwheel::Cache;

fn one_shard(cap: u64) -> Cache<u64, u64, ahash::RandomState> {
    Cache::builder()
        .max_capacity(cap)
        .shards(1)
        .hasher(cogwheel::fixed_hasher(3))
        .build()
        .unwrap()
}

#[test]
fn a_read_entry_survives_the_next_eviction() {
    for hot in 0..4u64 {
        let c = one_shard(4);
        for k in 0..4 {
            c.insert(k, k).unwrap();
        }
        assert_eq!(c.get(&hot), Some(hot));
        c.insert(100, 100).unwrap();
        assert_eq!(c.len(), 4);
        assert_eq!(
            c.get(&hot),
            Some(hot),
            "the read entry {hot} got a second chance"
        );
        c.validate_internals();
    }
}

#[test]
fn an_update_keeps_the_bit() {
    let c = one_shard(4);
    for k in 0..4 {
        c.insert(k, k).unwrap();
    }
    assert_eq!(c.get(&0), Some(0));
    c.insert(0, 10).unwrap();
    c.insert(100, 100).unwrap();
    assert_eq!(c.get(&0), Some(10), "the updated entry kept its reference");
}

#[test]
fn bits_survive_rebuilds_and_churn() {
    // Churn enough to leave tombstones and force table rebuilds; a key read before every
    // insert must never be the victim while unreferenced ones are around.
    let c = one_shard(64);
    c.insert(u64::MAX, 0).unwrap();
    for k in 0..20_000u64 {
        assert_eq!(c.get(&u64::MAX), Some(0), "hot key lost at step {k}");
        c.insert(k, k).unwrap();
    }
    assert!(c.len() <= 64);
    c.validate_internals();
}
