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

use crate::sync::thread_local;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64 as IdCounter, Ordering as IdOrdering};
use std::sync::{Arc as StdArc, Weak as StdWeak};

pub(crate) use crossbeam_epoch::{Atomic, Guard, Owned, Shared};

/// Ids only tell collectors apart; they synchronize nothing, so a plain std counter is right
/// even under loom.
static NEXT_ID: IdCounter = IdCounter::new(1);

struct Registered {
    id: u64,
    alive: StdWeak<()>,
    handle: crossbeam_epoch::LocalHandle,
}

thread_local! {
    // loom's `thread_local!` does not accept a `const` initializer.
    #[allow(clippy::missing_const_for_thread_local)]
    static HANDLES: RefCell<Vec<Registered>> = RefCell::new(Vec::new());
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
        let pinned = HANDLES.with(|h| {
            let h = h.borrow();
            h.iter().find(|r| r.id == self.id).map(|r| r.handle.pin())
        });
        match pinned {
            Some(g) => g,
            None => self.register_and_pin(),
        }
    }

    #[cold]
    fn register_and_pin(&self) -> Guard {
        let handle = self.collector.register();
        let guard = handle.pin();
        // Handles of dropped caches are taken out of the list first and dropped after the
        // borrow ends: dropping a handle can run deferred destructors, which may run user
        // `Drop` code that uses another cache on this thread.
        let stale: Vec<Registered> = HANDLES.with(|h| {
            let mut h = h.borrow_mut();
            let (live, stale): (Vec<_>, Vec<_>) =
                h.drain(..).partition(|r| r.alive.strong_count() > 0);
            *h = live;
            h.push(Registered {
                id: self.id,
                alive: StdArc::downgrade(&self.alive),
                handle,
            });
            stale
        });
        drop(stale);
        guard
    }

    /// Release this thread's handle for this collector (used when the cache is dropped).
    fn forget_local_handle(&self) {
        let mine: Vec<Registered> = HANDLES
            .try_with(|h| {
                let mut h = h.borrow_mut();
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
    let all: Vec<Registered> = HANDLES.with(|h| h.borrow_mut().drain(..).collect());
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
