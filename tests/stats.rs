//! Stats (and the cache under them) from threads at their edges.

use cogwheel::Cache;
use std::sync::Arc;

/// `n` keys, all resident (room for twice as many, so no shard evicts).
fn filled(n: u64) -> Arc<Cache<u64, u64>> {
    let c = Cache::builder().max_capacity(2 * n).build().unwrap();
    for k in 0..n {
        c.insert(k, k).unwrap();
    }
    Arc::new(c)
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
