//! loom models of the table through the public cache: publication, removal, replacement,
//! eviction and rebuild racing lock-free readers.
//!
//! Values are instrumented: each carries a loom `UnsafeCell` written when the value is created
//! and read when it is cloned, so loom reports a causality violation if a reader can see an
//! entry whose construction does not happen-before the read (a broken publication order);
//! and each original value records its drop, so a clone taken after the drop (a premature
//! free) fails an assertion. After the cache is dropped every value must have been dropped
//! exactly once.
#![cfg(loom)]

use cogwheel::{Cache, fixed_hasher};
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use loom::thread;

struct Log {
    dropped: [AtomicBool; 8],
    made: AtomicUsize,
    freed: AtomicUsize,
}

impl Log {
    fn new() -> Arc<Log> {
        Arc::new(Log {
            dropped: std::array::from_fn(|_| AtomicBool::new(false)),
            made: AtomicUsize::new(0),
            freed: AtomicUsize::new(0),
        })
    }

    fn check_all_freed(&self) {
        assert_eq!(
            self.made.load(SeqCst),
            self.freed.load(SeqCst),
            "every value dropped exactly once"
        );
    }
}

struct Val {
    id: usize,
    original: bool,
    payload: UnsafeCell<usize>,
    log: Arc<Log>,
}

// SAFETY: `payload` is never dereferenced: it is written once at construction and only
// "read" through loom's `with`, whose closure ignores the pointer. The cell exists so that
// loom checks the causality of those accesses across threads; sharing it is the point.
unsafe impl Sync for Val {}

impl Val {
    fn new(id: usize, log: &Arc<Log>) -> Val {
        log.made.fetch_add(1, SeqCst);
        Val {
            id,
            original: true,
            payload: UnsafeCell::new(id),
            log: log.clone(),
        }
    }
}

impl Clone for Val {
    fn clone(&self) -> Self {
        // Read the payload: a causality violation here means the entry was published before
        // its contents were visible.
        self.payload.with(|_| ());
        assert!(
            !self.log.dropped[self.id].load(SeqCst),
            "value {} cloned after it was dropped",
            self.id
        );
        self.log.made.fetch_add(1, SeqCst);
        Val {
            id: self.id,
            original: false,
            payload: UnsafeCell::new(self.id),
            log: self.log.clone(),
        }
    }
}

impl Drop for Val {
    fn drop(&mut self) {
        if self.original {
            assert!(
                !self.log.dropped[self.id].swap(true, SeqCst),
                "value {} dropped twice",
                self.id
            );
        }
        self.log.freed.fetch_add(1, SeqCst);
    }
}

/// Spawn a model thread that hands its epoch handles back before it ends. (loom drops
/// thread-locals outside the model's execution context, where the handle's hand-over of its
/// garbage is not modelled; real threads do it in their TLS destructor, which
/// `tests/cache.rs::values_retired_on_other_threads_are_dropped_with_the_cache` checks.)
fn spawn<T: 'static>(f: impl FnOnce() -> T + 'static) -> thread::JoinHandle<T> {
    thread::spawn(move || {
        let r = f();
        cogwheel::__loom::release_thread_handles();
        r
    })
}

fn cache(cap: u64) -> Cache<u64, Val, ahash::RandomState> {
    Cache::builder()
        .max_capacity(cap)
        .shards(1)
        .hasher(fixed_hasher(0))
        .build()
        .unwrap()
}

/// A reader racing the first insert of a key sees nothing or the whole value.
#[test]
fn insert_vs_get() {
    loom::model(|| {
        let log = Log::new();
        let c = cache(2);
        let w = {
            let (c, log) = (c.clone(), log.clone());
            spawn(move || c.insert(1, Val::new(0, &log)).unwrap())
        };
        if let Some(v) = c.get(&1) {
            assert_eq!(v.id, 0);
        }
        w.join().unwrap();
        assert_eq!(c.get(&1).map(|v| v.id), Some(0));
        drop(c);
        log.check_all_freed();
    });
}

/// Insert and remove of one key race; the final state is consistent with some order.
#[test]
fn insert_vs_remove() {
    loom::model(|| {
        let log = Log::new();
        let c = cache(2);
        c.insert(1, Val::new(0, &log)).unwrap();
        let w = {
            let (c, log) = (c.clone(), log.clone());
            spawn(move || c.insert(1, Val::new(1, &log)).unwrap())
        };
        let removed = c.remove(&1).unwrap().map(|v| v.id);
        w.join().unwrap();
        let now = c.get(&1).map(|v| v.id);
        match removed {
            // Remove ran first (took the original) or last (took the replacement).
            Some(0) => assert_eq!(now, Some(1)),
            Some(1) => assert_eq!(now, None),
            other => panic!("remove returned {other:?}"),
        }
        assert_eq!(c.len(), usize::from(now.is_some()));
        c.validate_internals();
        drop(c);
        log.check_all_freed();
    });
}

/// Readers holding the old value while it is replaced: they clone a whole value, and the
/// old value is dropped exactly once, never while a reader can still reach it.
#[test]
fn update_vs_readers() {
    loom::model(|| {
        let log = Log::new();
        let c = cache(2);
        c.insert(1, Val::new(0, &log)).unwrap();
        let w = {
            let (c, log) = (c.clone(), log.clone());
            spawn(move || c.insert(1, Val::new(1, &log)).unwrap())
        };
        let r = {
            let c = c.clone();
            spawn(move || c.get(&1).map(|v| v.id))
        };
        let a = c.get(&1).map(|v| v.id);
        let b = r.join().unwrap();
        w.join().unwrap();
        assert!(matches!(a, Some(0 | 1)) && matches!(b, Some(0 | 1)));
        assert_eq!(c.get(&1).map(|v| v.id), Some(1));
        drop(c);
        log.check_all_freed();
    });
}

/// An insert that evicts the only other entry races a reader of that entry.
#[test]
fn eviction_vs_reader() {
    loom::model(|| {
        let log = Log::new();
        let c = cache(1);
        c.insert(1, Val::new(0, &log)).unwrap();
        let w = {
            let (c, log) = (c.clone(), log.clone());
            spawn(move || c.insert(2, Val::new(1, &log)).unwrap())
        };
        if let Some(v) = c.get(&1) {
            assert_eq!(v.id, 0);
        }
        w.join().unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c.get(&2).map(|v| v.id), Some(1));
        drop(c);
        log.check_all_freed();
    });
}

/// A table rebuild (new table published, old one retired) races a reader.
#[test]
fn rebuild_vs_reader() {
    loom::model(|| {
        let log = Log::new();
        let c = cache(2);
        c.insert(1, Val::new(0, &log)).unwrap();
        let w = {
            let c = c.clone();
            spawn(move || c.__force_rebuild())
        };
        assert_eq!(
            c.get(&1).map(|v| v.id),
            Some(0),
            "a rebuild never hides a live entry"
        );
        w.join().unwrap();
        assert_eq!(c.get(&1).map(|v| v.id), Some(0));
        c.validate_internals();
        drop(c);
        log.check_all_freed();
    });
}

/// `get_many` (one pin for the batch, prefetches that load slot pointers without using
/// them) races an insert that evicts one of its keys and a replacement of the other: each
/// answer is a whole value of its own key, and every value is dropped exactly once.
#[test]
fn get_many_vs_eviction_and_update() {
    loom::model(|| {
        let log = Log::new();
        let c = cache(2);
        c.insert(1, Val::new(0, &log)).unwrap();
        c.insert(2, Val::new(1, &log)).unwrap();
        let w = {
            let (c, log) = (c.clone(), log.clone());
            spawn(move || {
                c.insert(2, Val::new(2, &log)).unwrap();
                c.insert(3, Val::new(3, &log)).unwrap();
            })
        };
        let got: Vec<Option<usize>> = c
            .get_many(&[1, 2, 1])
            .into_iter()
            .map(|v| v.map(|v| v.id))
            .collect();
        assert!(matches!(got[0], None | Some(0)), "key 1: {got:?}");
        assert!(matches!(got[1], None | Some(1 | 2)), "key 2: {got:?}");
        assert!(matches!(got[2], None | Some(0)), "key 1 again: {got:?}");
        w.join().unwrap();
        assert_eq!(c.len(), 2);
        drop(c);
        log.check_all_freed();
    });
}

/// `invalidate_all` (a fresh table installed, every entry retired) races a reader of the old
/// table, and the epoch is driven inside the model: the reader's first pin collects (one
/// advance while the clear holds its pin), and the clearing thread collects once more after
/// it. No entry is freed while a reader that found it in the old table can still reach it.
/// The replacements before the clear put three deferred drops in this thread's epoch bag
/// (one batch per retired entry at this capacity), so the clear overflows the bag and part of
/// its hand-over is sealed while the clear runs: an entry handed over before the table that
/// holds it is replaced would be freed under the reader.
#[test]
fn clear_vs_reader() {
    loom::model(|| {
        let log = Log::new();
        let c = cache(2);
        c.insert(1, Val::new(0, &log)).unwrap();
        c.insert(2, Val::new(1, &log)).unwrap();
        for id in 2..5 {
            c.insert(1, Val::new(id, &log)).unwrap();
        }
        let r = {
            let c = c.clone();
            spawn(move || {
                assert!(c.get(&0).is_none());
                c.get_many(&[1, 2])
                    .into_iter()
                    .map(|v| v.map(|v| v.id))
                    .collect::<Vec<_>>()
            })
        };
        c.invalidate_all();
        c.__collect();
        let got = r.join().unwrap();
        assert!(matches!(got[0], None | Some(4)), "key 1: {got:?}");
        assert!(matches!(got[1], None | Some(1)), "key 2: {got:?}");
        assert_eq!(c.len(), 0);
        c.validate_internals();
        drop(c);
        log.check_all_freed();
    });
}

/// What the writer does to key 1 (value 0) while a reader looks it up, in
/// [`change_vs_reader_with_collection`].
#[derive(Clone, Copy, Debug)]
enum Change {
    /// `insert(1, v1)`: the old entry is replaced in its slot.
    Replace,
    /// `remove(&1)`: the entry is unlinked.
    Remove,
    /// `insert(2, v1)` at capacity 1: key 1 is evicted (unlinked) to make room.
    Evict,
}

/// The writer changes key 1 and then collects twice, while a reader (whose first pin
/// collects too) looks key 1 up. Two collections are what the retired entry needs: the first
/// seals the writer's bag at the current epoch `e` and advances to `e + 1`, the second
/// advances to `e + 2`, where the bag is freed, unless the reader is still pinned in an older
/// epoch. So the old value is dropped during the race: a reader that can still reach it then
/// (an entry handed to the epoch before it was unlinked, and sealed meanwhile) clones it
/// after the drop. Kept to two threads and a handful of operations: the epoch's
/// participant list and bag queue are instrumented too, and each collection multiplies the
/// interleavings.
fn change_vs_reader_with_collection(change: Change) {
    loom::model(move || {
        let log = Log::new();
        let c = cache(if matches!(change, Change::Evict) {
            1
        } else {
            2
        });
        c.insert(1, Val::new(0, &log)).unwrap();
        let r = {
            let c = c.clone();
            spawn(move || {
                // This thread's first pin: it collects (and may advance the epoch) before
                // the read of key 1 pins again.
                assert!(c.get(&0).is_none());
                c.get(&1).map(|v| v.id)
            })
        };
        match change {
            Change::Replace => c.insert(1, Val::new(1, &log)).unwrap(),
            Change::Remove => assert_eq!(c.remove(&1).unwrap().map(|v| v.id), Some(0)),
            Change::Evict => c.insert(2, Val::new(1, &log)).unwrap(),
        }
        c.__collect();
        c.__collect();
        let got = r.join().unwrap();
        match change {
            Change::Replace => {
                assert!(matches!(got, Some(0 | 1)), "key 1: {got:?}");
                assert_eq!(c.get(&1).map(|v| v.id), Some(1));
            }
            Change::Remove | Change::Evict => {
                assert!(matches!(got, None | Some(0)), "key 1: {got:?}");
                assert!(c.get(&1).is_none());
            }
        }
        if matches!(change, Change::Evict) {
            assert_eq!(c.get(&2).map(|v| v.id), Some(1));
        }
        c.validate_internals();
        drop(c);
        log.check_all_freed();
    });
}

#[test]
fn replace_vs_reader_with_collection() {
    change_vs_reader_with_collection(Change::Replace);
}

#[test]
fn remove_vs_reader_with_collection() {
    change_vs_reader_with_collection(Change::Remove);
}

#[test]
fn eviction_vs_reader_with_collection() {
    change_vs_reader_with_collection(Change::Evict);
}

/// A reader racing expiry: the clock passes key 1's deadline while the reader looks it up,
/// then maintenance reclaims it and the epoch is collected twice (as in
/// [`change_vs_reader_with_collection`]), so the value is freed during the race. The reader
/// gets the value (read before the deadline) or nothing, never a freed one; the entry is
/// reported once, as expired.
#[test]
fn expiry_vs_reader_with_collection() {
    use cogwheel::{ManualClock, RemovalCause};
    use std::time::Duration;
    loom::model(|| {
        let log = Log::new();
        let clock = ManualClock::new();
        let expired = Arc::new(AtomicUsize::new(0));
        let seen = expired.clone();
        let c: Cache<u64, Val, _> = Cache::builder()
            .max_capacity(2)
            .shards(1)
            .hasher(fixed_hasher(0))
            .time_to_live(Duration::from_secs(1))
            .clock(clock.clone())
            .eviction_listener(move |_, _, cause| {
                assert_eq!(cause, RemovalCause::Expired);
                seen.fetch_add(1, SeqCst);
            })
            .build()
            .unwrap();
        c.insert(1, Val::new(0, &log)).unwrap();
        let r = {
            let c = c.clone();
            spawn(move || {
                assert!(c.get(&0).is_none()); // this thread's first pin collects
                c.get(&1).map(|v| v.id)
            })
        };
        // Past the deadline and the wheel's first tick.
        clock.advance(Duration::from_secs(3));
        c.run_pending_tasks();
        c.__collect();
        c.__collect();
        let got = r.join().unwrap();
        assert!(matches!(got, None | Some(0)), "key 1: {got:?}");
        assert!(c.get(&1).is_none(), "an expired entry is never returned");
        assert_eq!(expired.load(SeqCst), 1, "reported once, as expired");
        c.validate_internals();
        drop(c);
        log.check_all_freed();
    });
}
