//! Removal causes and the eviction listener.

use std::sync::Arc;

/// Why an entry left the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RemovalCause {
    /// Its time-to-live or time-to-idle ran out.
    Expired,
    /// It was evicted to keep the cache within its capacity.
    Evicted,
    /// It was removed explicitly (`remove`, `invalidate`, `invalidate_if`, `invalidate_all`).
    Removed,
    /// Its value was replaced by an insert of the same key.
    Replaced,
}

impl RemovalCause {
    /// Whether the cache removed the entry on its own (expiry or size), not at a caller's
    /// request.
    pub fn was_evicted(self) -> bool {
        matches!(self, RemovalCause::Expired | RemovalCause::Evicted)
    }
}

/// The eviction listener: called once per entry that leaves the cache, after the shard's lock
/// is released, on the thread whose operation removed it.
pub(crate) type Listener<K, V> = Arc<dyn Fn(&K, &V, RemovalCause) + Send + Sync + 'static>;

/// The weigher: the weight of an entry, in the unit of `max_weight`.
pub(crate) type Weigher<K, V> = Arc<dyn Fn(&K, &V) -> u32 + Send + Sync + 'static>;

// Listener calls are held back while this thread holds a lock a listener could need: a
// per-key write lock, or a loader flight's lock while it publishes. A listener that writes
// to the cache (a documented use) would otherwise wait for a lock its own thread holds. They
// run, in order, when the outermost hold ends. Every cache takes holds, also one without a
// listener: a listener of another cache may write to it.
#[cfg(not(loom))]
thread_local! {
    static HELD: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    static QUEUE: std::cell::RefCell<Vec<Deferred>> = const { std::cell::RefCell::new(Vec::new()) };
}
#[cfg(loom)]
loom::thread_local! {
    static HELD: std::cell::Cell<u32> = std::cell::Cell::new(0);
    static QUEUE: std::cell::RefCell<Vec<Deferred>> = std::cell::RefCell::new(Vec::new());
}

/// A listener call, with its own copies of the key and value.
type Deferred = Box<dyn FnOnce()>;

/// While alive, this thread's listener calls wait (see `defer`).
pub(crate) struct Hold(());

/// `HELD`'s top bit: calls are queued. The rest counts the holds. One word, so a hold that
/// ends with nothing queued (the common case) touches no other thread-local.
const QUEUED: u32 = 1 << 31;

/// Hold this thread's listener calls until the returned guard (and any outer one) drops.
pub(crate) fn hold() -> Hold {
    HELD.with(|h| h.set(h.get() + 1));
    Hold(())
}

impl Drop for Hold {
    fn drop(&mut self) {
        let queued = HELD.with(|h| {
            let n = h.get() - 1;
            if n == QUEUED {
                h.set(0); // the outermost hold, and calls to run: taken below
                true
            } else {
                h.set(n);
                false
            }
        });
        if !queued {
            return;
        }
        // The outermost hold: run what waited (listeners may hold and defer again). Each call
        // is caught, so a panicking listener costs no other call its turn (and, on a thread
        // already unwinding out of the locked region, does not abort the process); the first
        // panic goes on to the caller once all have run, unless the thread is unwinding anyway.
        let mut first_panic = None;
        loop {
            let batch = QUEUE.with(|q| std::mem::take(&mut *q.borrow_mut()));
            if batch.is_empty() {
                break;
            }
            for call in batch {
                if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)) {
                    first_panic.get_or_insert(p);
                }
            }
        }
        if let Some(p) = first_panic
            && !std::thread::panicking()
        {
            std::panic::resume_unwind(p);
        }
    }
}

/// Whether listener calls must wait on this thread.
pub(crate) fn held() -> bool {
    HELD.with(|h| (h.get() & !QUEUED) > 0)
}

/// Run `call` when this thread's outermost hold ends.
pub(crate) fn defer(call: Deferred) {
    QUEUE.with(|q| q.borrow_mut().push(call));
    HELD.with(|h| h.set(h.get() | QUEUED));
}
