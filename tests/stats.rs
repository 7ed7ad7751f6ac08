//! Stats (and the cache under them) from threads at their edges: many at once, short-lived,
//! and in thread-local destructors.

use cogwheel::Cache;
use std::sync::{Arc, Barrier};

/// `n` keys, all resident (room for twice as many, so no shard evicts).
fn filled(n: u64) -> Arc<Cache<u64, u64>> {
    let c = Cache::builder().max_capacity(2 * n).build().unwrap();
    for k in 0..n {
        c.insert(k, k).unwrap();
    }
    Arc::new(c)
}

#[test]
fn counts_are_exact_with_more_threads_than_stripes_and_threads_that_come_and_go() {
    const KEYS: u64 = 1_000;
    const HITS: u64 = 3_000;
    const MISSES: u64 = 1_000;
    let cache = filled(KEYS);
    // More threads at once than the stripes the cache picks (4 per core), in rounds.
    let threads = 4 * std::thread::available_parallelism().map_or(1, |p| p.get()) + 8;
    let rounds = 4;
    for _ in 0..rounds {
        let start = Arc::new(Barrier::new(threads));
        let hs: Vec<_> = (0..threads as u64)
            .map(|t| {
                let (c, start) = (Arc::clone(&cache), Arc::clone(&start));
                std::thread::spawn(move || {
                    start.wait();
                    for i in 0..HITS {
                        assert!(c.get(&((t * 31 + i) % KEYS)).is_some());
                    }
                    for i in 0..MISSES {
                        assert!(c.get(&(KEYS + i)).is_none());
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    }
    let s = cache.stats();
    let n = (threads * rounds) as u64;
    assert_eq!(s.hits, n * HITS);
    assert_eq!(s.misses, n * MISSES);
}

struct UsesCacheOnDrop(Arc<Cache<u64, u64>>);

impl Drop for UsesCacheOnDrop {
    fn drop(&mut self) {
        assert_eq!(self.0.get(&1), Some(1));
    }
}

thread_local! {
    static LATE: std::cell::RefCell<Option<UsesCacheOnDrop>> = const { std::cell::RefCell::new(None) };
}

#[test]
fn a_thread_local_destructor_may_use_the_cache() {
    let cache = filled(10);
    let c = Arc::clone(&cache);
    std::thread::spawn(move || {
        // Registered before the cache's own thread-locals, so (destructors run in reverse
        // order of registration) it is dropped after them: its `get` must still count.
        LATE.with(|l| *l.borrow_mut() = Some(UsesCacheOnDrop(Arc::clone(&c))));
        assert_eq!(c.get(&2), Some(2));
    })
    .join()
    .unwrap();
    assert_eq!(cache.stats().hits, 2);
}
