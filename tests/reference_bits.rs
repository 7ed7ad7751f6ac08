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

#[test]
fn readers_racing_writers_only_see_their_own_keys() {
    // Readers set reference bits in the tag words that writers rewrite (publish, clear,
    // rebuild); no lookup may ever return another key's value, and the bookkeeping must
    // hold afterwards.
    let c = Cache::<u64, u64, _>::builder()
        .max_capacity(256)
        .shards(2)
        .hasher(cogwheel::fixed_hasher(9))
        .build()
        .unwrap();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let c = c.clone();
            s.spawn(move || {
                let mut x = t.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                for _ in 0..50_000 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let k = x % 1024;
                    match x >> 60 {
                        0..=9 => {
                            if let Some(v) = c.get(&k) {
                                assert_eq!(v >> 32, k, "a lookup of {k} returned {v:#x}");
                            }
                        }
                        10..=14 => c.insert(k, (k << 32) | (x & 0xffff)).unwrap(),
                        _ => {
                            c.invalidate(&k);
                        }
                    }
                }
            });
        }
    });
    assert!(c.len() <= 256);
    c.validate_internals();
}

#[test]
fn get_many_marks_what_it_reads() {
    for hot in 0..4u64 {
        let c = one_shard(4);
        for k in 0..4 {
            c.insert(k, k).unwrap();
        }
        assert_eq!(c.get_many(&[hot, 50]), vec![Some(hot), None]);
        c.insert(100, 100).unwrap();
        assert_eq!(
            c.get(&hot),
            Some(hot),
            "the entry {hot} read by get_many got a second chance"
        );
    }
}
