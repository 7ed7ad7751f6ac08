//! Memory reclamation: the only file that names crossbeam-epoch.
//!
//! Each cache owns its own epoch [`Collector`](crossbeam_epoch::Collector), so dropping the
//! cache runs every destructor it deferred (with the process-wide collector they might never
//! run). Pinning needs a per-thread handle registered with that collector; registering
//! allocates, so each thread keeps its handles in a small thread-local list keyed by the
//! collector's id, and reuses them.
//!
//! A handle keeps its collector's garbage alive until the handle is dropped. When a cache is
//! dropped, the dropping thread's handle goes with it; other threads' stale handles are pruned
//! the next time those threads register a handle for any cache, and at thread exit. So a cache
//! whose worker threads have exited (the usual shutdown order) frees everything on drop.
//!
//! `pin` is on every read, so the lookup has a fast path: a one-entry cache (`LAST`) of the
//! handle this thread pinned last, which skips the list, its `RefCell` and the lazy-destructor
//! check of the list's thread-local. The epoch fence inside crossbeam's `pin` stays; it is
//! what makes the guard sound.

use crate::sync::thread_local;
use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU64 as IdCounter, Ordering as IdOrdering};
use std::sync::{Arc as StdArc, Weak as StdWeak};

pub(crate) use crossbeam_epoch::{Atomic, Guard, Owned, Shared};

/// Ids only tell collectors apart; they synchronize nothing, so a plain std counter is right
/// even under loom.
static NEXT_ID: IdCounter = IdCounter::new(1);

struct Registered {
    id: u64,
    alive: StdWeak<()>,
    /// Boxed so its address is stable while the list grows: `LAST` points into it.
    handle: Box<crossbeam_epoch::LocalHandle>,
}

/// This thread's handles. Dropping it (thread exit) first clears `LAST`, so no pointer to a
/// dropped handle is ever left behind.
struct Handles(RefCell<Vec<Registered>>);

impl Drop for Handles {
    fn drop(&mut self) {
        // At thread exit `LAST` may already be gone (destruction order of thread-locals is
        // unspecified); then there is nothing left to reset.
        let _ = LAST.try_with(|l| l.set(NO_LAST));
    }
}

/// `LAST`'s empty value: collector ids start at 1, so id 0 never matches.
const NO_LAST: (u64, *const crossbeam_epoch::LocalHandle) = (0, std::ptr::null());

// `LAST`: the handle this thread pinned last, with its collector's id. Invariant: when the id
// is not 0, the pointer is the boxed handle of a `Registered` that is still in `HANDLES`;
// every path that takes a `Registered` out of `HANDLES` resets `LAST` first.
// (loom's `thread_local!` takes no `const` initializers.)
#[cfg(not(loom))]
thread_local! {
    static HANDLES: Handles = const { Handles(RefCell::new(Vec::new())) };
    static LAST: Cell<(u64, *const crossbeam_epoch::LocalHandle)> = const { Cell::new(NO_LAST) };
}
#[cfg(loom)]
thread_local! {
    static HANDLES: Handles = Handles(RefCell::new(Vec::new()));
    static LAST: Cell<(u64, *const crossbeam_epoch::LocalHandle)> = Cell::new(NO_LAST);
}

/// A cache's own epoch collector.
pub(crate) struct Reclaimer {
    collector: crossbeam_epoch::Collector,
    id: u64,
    alive: StdArc<()>,
}

impl Reclaimer {
    pub(crate) fn new() -> Self {
        Reclaimer {
            collector: crossbeam_epoch::Collector::new(),
            id: NEXT_ID.fetch_add(1, IdOrdering::Relaxed),
            alive: StdArc::new(()),
        }
    }

    /// Pin the current thread in this cache's epoch. Everything loaded through the returned
    /// guard stays allocated until the guard is dropped.
    #[inline]
    pub(crate) fn pin(&self) -> Guard {
        let (id, handle) = LAST.with(Cell::get);
        if id == self.id {
            // `LocalHandle::pin` borrows the box only for the call (the guard points to the
            // collector's `Local`, not to the box).
            // SAFETY: by `LAST`'s invariant this is the boxed handle of an entry still in this
            // thread's `HANDLES`, which entries leave only on this thread after `LAST` is reset.
            return unsafe { &*handle }.pin();
        }
        self.pin_slow()
    }

    /// Find this collector's handle in the list (registering one if needed) and remember it
    /// in `LAST`. The list is not borrowed while pinning: pinning may run deferred destructors,
    /// whose user code may use another cache on this thread.
    #[cold]
    fn pin_slow(&self) -> Guard {
        let Ok(found) = HANDLES.try_with(|h| {
            h.0.borrow()
                .iter()
                .find(|r| r.id == self.id)
                .map(|r| &*r.handle as *const crossbeam_epoch::LocalHandle)
        }) else {
            // This thread's thread-locals are being destroyed (a destructor uses the cache):
            // pin through a handle of its own. The guard keeps the collector's record of
            // the thread alive after the handle is dropped, as crossbeam's own fallback does.
            return self.collector.register().pin();
        };
        match found {
            Some(handle) => {
                LAST.with(|l| l.set((self.id, handle)));
                // SAFETY: just found in `HANDLES` and recorded in `LAST`, whose invariant
                // keeps the box alive for this call (see `pin`).
                unsafe { &*handle }.pin()
            }
            None => self.register_and_pin(),
        }
    }

    #[cold]
    fn register_and_pin(&self) -> Guard {
        let handle = Box::new(self.collector.register());
        let guard = handle.pin();
        // Handles of dropped caches are taken out of the list first and dropped after the
        // borrow ends: dropping a handle can run deferred destructors, which may run user
        // `Drop` code that uses another cache on this thread.
        let mut handle = Some(handle);
        let stale: Vec<Registered> = HANDLES
            .try_with(|h| {
                // Entries are about to leave the list: keep `LAST`'s invariant.
                LAST.with(|l| l.set(NO_LAST));
                let mut h = h.0.borrow_mut();
                let (live, stale): (Vec<_>, Vec<_>) =
                    h.drain(..).partition(|r| r.alive.strong_count() > 0);
                *h = live;
                h.extend(handle.take().map(|handle| Registered {
                    id: self.id,
                    alive: StdArc::downgrade(&self.alive),
                    handle,
                }));
                stale
            })
            .unwrap_or_default();
        drop(stale);
        // Not kept if the list is gone (thread-locals being destroyed): the guard outlives it.
        drop(handle);
        guard
    }

    /// Release this thread's handle for this collector (used when the cache is dropped).
    fn forget_local_handle(&self) {
        let mine: Vec<Registered> = HANDLES
            .try_with(|h| {
                // Entries are about to leave the list: keep `LAST`'s invariant.
                LAST.with(|l| l.set(NO_LAST));
                let mut h = h.0.borrow_mut();
                let (mine, rest): (Vec<_>, Vec<_>) = h.drain(..).partition(|r| r.id == self.id);
                *h = rest;
                mine
            })
            .unwrap_or_default();
        drop(mine);
    }
}

/// Drop every epoch handle this thread holds (loom models call it at the end of each model
/// thread, so that the handle's garbage is handed over inside the model's execution).
#[cfg(loom)]
pub fn release_thread_handles() {
    let all: Vec<Registered> = HANDLES.with(|h| {
        // Entries are about to leave the list: keep `LAST`'s invariant.
        LAST.with(|l| l.set(NO_LAST));
        h.0.borrow_mut().drain(..).collect()
    });
    drop(all);
}

impl Drop for Reclaimer {
    fn drop(&mut self) {
        // Run whatever garbage is already collectable: each flush moves this thread's bag to
        // the collector's queue and lets the epoch advance (no one else can be pinned in a
        // dropped cache), so retired entries are freed now even if another thread's handle
        // still keeps the collector itself alive.
        for _ in 0..3 {
            self.pin().flush();
        }
        self.forget_local_handle();
    }
}

impl std::fmt::Debug for Reclaimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Reclaimer({})", self.id)
    }
}

/// Schedule `ptr`'s destruction once no thread pinned now can still read it.
///
/// # Safety
/// `ptr` must have been unlinked from every shared location (no new reader can load it), must
/// come from an `Owned` allocation, and must not be deferred twice.
pub(crate) unsafe fn defer_destroy<T>(guard: &Guard, ptr: Shared<'_, T>) {
    // SAFETY: the caller guarantees the pointer is unlinked and deferred once; readers that
    // loaded it are pinned, and the epoch delays the drop until they have all unpinned.
    unsafe { guard.defer_destroy(ptr) }
}

/// A guard for single-threaded teardown, when the caller owns the structure exclusively.
///
/// # Safety
/// No other thread may access the data read through this guard (e.g. during `Drop` of the
/// last owner).
pub(crate) unsafe fn unprotected() -> &'static Guard {
    // SAFETY: forwarded to the caller's contract (exclusive access).
    unsafe { crossbeam_epoch::unprotected() }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn last_handle_cache_follows_registration_and_drops() {
        let a = Reclaimer::new();
        let b = Reclaimer::new();
        // Alternate: each switch goes through the slow path and re-points `LAST`.
        for _ in 0..3 {
            drop(a.pin());
            drop(b.pin());
        }
        // Nested pins of the same collector take the fast path.
        let g1 = a.pin();
        let g2 = a.pin();
        drop((g1, g2));
        assert_eq!(LAST.with(Cell::get).0, a.id);
        // Dropping the cached collector's reclaimer resets `LAST`.
        drop(a);
        assert_eq!(LAST.with(Cell::get), NO_LAST);
        // Registering another one prunes stale entries; `b` still pins.
        let c = Reclaimer::new();
        drop(c.pin());
        drop(b.pin());
        assert_eq!(LAST.with(Cell::get).0, b.id);
        // Another thread's list and cache are its own, and are cleared at its exit.
        std::thread::scope(|s| {
            s.spawn(|| {
                drop(b.pin());
                // The first pin registers; the second finds the handle and caches it.
                drop(c.pin());
                drop(c.pin());
                assert_eq!(LAST.with(Cell::get).0, c.id);
            });
        });
        assert_eq!(LAST.with(Cell::get).0, b.id);
    }
}
