//! How a caller knows, without taking a lock, whether the writer thread is waiting for the
//! key it just made dirty.
//!
//! The writer waits on a condition variable under its signal mutex, for one of two things:
//! any dirty key (it is idle), or enough dirty keys for a batch (it is filling one). Taking
//! that mutex on every clean→dirty transition just to look would cost every such write a lock
//! round trip on a line the writer thread also uses. Instead the writer *announces* what it
//! waits for in an atomic, and callers look at the atomic.
//!
//! The hand-shake (a Dekker pattern, with a SeqCst fence on each side):
//! - writer, holding the mutex: store the flag, fence, load the dirty count, then look at what
//!   it waits for (the queue, or the count), and wait only if it is not there;
//! - caller: push its key, increment the dirty count (AcqRel), fence, load the flag; if the
//!   flag asks for this key, lock the mutex and notify.
//!
//! The two fences are ordered one way or the other. If the writer's comes second, its load of
//! the count sees the caller's increment, and acquires the push before it; if the caller's
//! comes second, its load of the flag sees the writer's store, and the caller notifies. Since
//! the writer holds the mutex from its store until the wait releases it, that notify cannot
//! fall before the wait. Either way no wake-up is lost. (Fences rather than SeqCst accesses:
//! the guarantee is the same, and loom models SeqCst fences but not the total order of
//! SeqCst loads and stores; the loom models `wake_*` check the hand-shake.)

use crate::sync::{AtomicU8, AtomicUsize, Ordering, fence};

/// The writer waits for any dirty key.
pub const IDLE: u8 = 1;
/// The writer waits for a batch's worth of dirty keys.
pub const FILLING: u8 = 2;

/// What the writer thread is waiting for (see the module docs).
#[derive(Debug, Default)]
pub struct Wake {
    waiting: AtomicU8,
}

impl Wake {
    /// Nobody waiting.
    pub fn new() -> Self {
        Wake::default()
    }

    /// Writer, holding its mutex, before it checks its condition: announce `what` (`IDLE` or
    /// `FILLING`) and return the dirty count to check it against.
    pub fn announce(&self, what: u8, dirty: &AtomicUsize) -> usize {
        self.waiting.store(what, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        dirty.load(Ordering::Acquire)
    }

    /// Writer: it no longer waits.
    pub fn done(&self) {
        self.waiting.store(0, Ordering::Relaxed);
    }

    /// Caller, after its key is pushed and `dirty.fetch_add(1, AcqRel)` made the count
    /// `dirty_now`: whether the writer waits for it (then lock the mutex and notify).
    pub fn wanted(&self, dirty_now: usize, batch: usize) -> bool {
        fence(Ordering::SeqCst);
        let w = self.waiting.load(Ordering::Relaxed);
        w & IDLE != 0 || (w & FILLING != 0 && dirty_now >= batch)
    }
}
