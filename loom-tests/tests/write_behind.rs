//! loom models of the write-behind hand-off: an inserter dirtying a key (record, the stripe's
//! enqueue, coalescing) racing a flusher that drains the queue, takes the stripe's records as
//! a generation, writes the store and retires the generation (or keeps it after a failure).
//! Manual mode: the writer's work runs on the flushing model thread, so loom explores every
//! interleaving of the two.
#![cfg(loom)]

use cogwheel::store::MemoryStore;
use cogwheel::{Cache, WriteBehind, WritePolicy, fixed_hasher};
use loom::thread;

fn spawn<T: 'static>(f: impl FnOnce() -> T + 'static) -> thread::JoinHandle<T> {
    thread::spawn(move || {
        let r = f();
        cogwheel::__loom::release_thread_handles();
        r
    })
}

fn cache(store: &MemoryStore<u64, u64>) -> Cache<u64, u64, ahash::RandomState> {
    Cache::builder()
        .max_capacity(4)
        .shards(1)
        .hasher(fixed_hasher(0))
        .store(store.clone())
        .write_policy(WritePolicy::WriteBehind(
            WriteBehind::default().manual(true),
        ))
        .build()
        .unwrap()
}

/// `writes` on one model thread racing a `flush` on another; returns once both are done
/// (the flush must succeed).
fn writes_vs_flush(c: &Cache<u64, u64, ahash::RandomState>, writes: Vec<(u64, u64)>) {
    let w = {
        let c = c.clone();
        spawn(move || {
            for (k, v) in writes {
                c.insert(k, v).unwrap();
            }
        })
    };
    let f = {
        let c = c.clone();
        spawn(move || c.flush().map(|_| ()))
    };
    w.join().unwrap();
    f.join().unwrap().unwrap();
}

/// The store holds exactly these values for these keys.
fn assert_stored(store: &MemoryStore<u64, u64>, expected: &[(u64, u64)]) {
    let snap = store.snapshot();
    for &(k, v) in expected {
        assert_eq!(snap.get(&k).map(|s| s.value), Some(v), "key {k}");
    }
}

/// Two writes of one key coalesce or not, depending on where the flush lands; either way the
/// latest write reaches the store and the key ends clean.
#[test]
fn coalescing_insert_vs_flush() {
    loom::model(|| {
        let store = MemoryStore::new();
        let c = cache(&store);
        writes_vs_flush(&c, vec![(1, 10), (1, 11)]);
        c.flush().unwrap();
        assert_stored(&store, &[(1, 11)]);
        assert_eq!(c.dirty_count(), 0, "settled by sequence number: clean");
        assert_eq!(c.get(&1), Some(11));
    });
}

/// A remove racing a flush of the same key's put: the remove is ordered after the put in the
/// store. (After the racing flush the store may hold 20 or nothing, so this model cannot
/// check the barrier itself: `flush_barrier_vs_other_key_write` does.)
#[test]
fn flush_barrier_vs_remove() {
    loom::model(|| {
        let store = MemoryStore::new();
        let c = cache(&store);
        c.insert(2, 20).unwrap();
        let r = {
            let c = c.clone();
            spawn(move || c.remove(&2).map(|_| ()))
        };
        c.flush().unwrap();
        r.join().unwrap().unwrap();
        c.flush().unwrap();
        assert_eq!(
            store.snapshot().get(&2),
            None,
            "the delete reached the store last"
        );
        assert_eq!(c.dirty_count(), 0);
    });
}

/// The flush barrier, with a write of another key racing it: a flush that begins after
/// `insert(2, 20)` returned has stored it when it returns `Ok`, whatever the racing write
/// does to the queue and the stripes meanwhile (enqueues its stripe, or joins key 2's).
#[test]
fn flush_barrier_vs_other_key_write() {
    loom::model(|| {
        let store = MemoryStore::new();
        let c = cache(&store);
        c.insert(2, 20).unwrap();
        let w = {
            let c = c.clone();
            spawn(move || c.insert(3, 30).unwrap())
        };
        c.flush().unwrap();
        assert_eq!(
            store.snapshot().get(&2).map(|s| s.value),
            Some(20),
            "flush returned Ok before a write acknowledged earlier was stored"
        );
        w.join().unwrap();
        c.flush().unwrap();
        assert_stored(&store, &[(2, 20), (3, 30)]);
        assert_eq!(c.dirty_count(), 0);
    });
}

/// A key written again while the flusher stores its taken generation: the older write is
/// retired, the newer one stays dirty (counted once throughout) and is stored by the next
/// flush. Every key ends clean with its latest value in the store.
#[test]
fn rewrite_during_a_round_vs_flush() {
    loom::model(|| {
        let store = MemoryStore::new();
        let c = cache(&store);
        c.insert(1, 10).unwrap();
        // 1 → 11 may land while 1 → 10 is being stored.
        writes_vs_flush(&c, vec![(1, 11), (2, 20)]);
        assert!(c.dirty_count() <= 2, "each dirty key counted once");
        c.flush().unwrap();
        assert_stored(&store, &[(1, 11), (2, 20)]);
        assert_eq!(c.dirty_count(), 0);
    });
}

/// A round that failed keeps its generation; newer writes racing the retry are merged into
/// it (the newer value of a key replaces the older), and nothing is lost or counted twice.
#[test]
fn failed_round_merges_with_newer_writes() {
    loom::model(|| {
        let store = MemoryStore::new();
        let c = cache(&store);
        c.insert(1, 10).unwrap();
        store.set_down(true);
        assert!(c.flush().is_err(), "the store is down");
        assert_eq!(c.dirty_count(), 1);
        store.set_down(false);
        writes_vs_flush(&c, vec![(1, 11), (2, 20)]);
        c.flush().unwrap();
        assert_stored(&store, &[(1, 11), (2, 20)]);
        assert_eq!(c.dirty_count(), 0);
        assert_eq!(c.get(&1), Some(11));
    });
}

/// A read-through racing a remove of the same key: once the remove has returned, no read
/// may see the key's stored value again (the pending delete is the truth, and the load must
/// not publish the store's stale value over it).
#[test]
fn fetch_vs_remove_never_resurrects() {
    loom::model(|| {
        let store = MemoryStore::new();
        store.insert(1, 10, None);
        let c = cache(&store);
        let f = {
            let c = c.clone();
            spawn(move || c.fetch(&1).unwrap())
        };
        c.remove(&1).unwrap();
        let fetched = f.join().unwrap();
        assert!(fetched == Some(10) || fetched.is_none());
        assert_eq!(c.get(&1), None, "the removed key came back");
        assert_eq!(c.fetch(&1).unwrap(), None);
    });
}

/// An insert racing `close`: either it is refused (`Closed`), or it returned `Ok` and the
/// close's final flush stored it. Never `Ok` and then neither stored nor reported.
#[test]
fn insert_vs_close_loses_no_acknowledged_write() {
    loom::model(|| {
        let store = MemoryStore::new();
        let c = cache(&store);
        let w = {
            let c = c.clone();
            spawn(move || c.insert(1, 10))
        };
        c.close().unwrap();
        match w.join().unwrap() {
            Ok(()) => assert_eq!(
                store.snapshot().get(&1).map(|s| s.value),
                Some(10),
                "acknowledged before close returned, yet not stored"
            ),
            Err(e) => assert!(matches!(e, cogwheel::Error::Closed), "{e}"),
        }
    });
}

/// `compute` deciding on an absent key (put-if-absent) racing a read-through that loads the
/// key's stored value: whichever wins in the cache, the store ends at the same value (a
/// recorded write is never left behind for a decision the cache did not apply).
#[test]
fn compute_vs_fetch_agree_with_the_store() {
    loom::model(|| {
        let store = MemoryStore::new();
        store.insert(1, 5, None);
        let c = cache(&store);
        let f = {
            let c = c.clone();
            spawn(move || c.fetch(&1).unwrap())
        };
        c.compute(1, |cur| match cur {
            None => cogwheel::Compute::Put(7),
            Some(_) => cogwheel::Compute::Keep,
        })
        .unwrap();
        f.join().unwrap();
        c.flush().unwrap();
        let stored = store.snapshot().get(&1).map(|s| s.value);
        assert_eq!(c.fetch(&1).unwrap(), stored, "cache and store disagree");
    });
}
