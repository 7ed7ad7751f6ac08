//! Striped per-key locks: they order the writers of one key around backing-store I/O.
//!
//! A write-through insert must reach the store and the cache in the same order as any other
//! writer of the same key, or the two could end up disagreeing. The store call is I/O, so it
//! may not happen under a shard lock (that would stall every reader-free writer of the shard);
//! instead, writers of one key hold that key's stripe lock across "store, then cache". Stripes
//! are many, so unrelated keys rarely share one; readers never touch them.
//!
//! A thread may take a stripe it already holds (`compute`'s closure writing another key that
//! shares the stripe, say): the inner writer goes ahead under the outer one's hold instead of
//! waiting for itself. Only this thread could write the stripe's keys meanwhile.
//!
//! Each stripe also counts the writers that released it. A warm restart reads the store
//! without any key lock, so a record it read may be older than a write that finished while
//! it ran; it compares the counts it noted before the scan with the counts at the time it
//! loads a record, and skips records whose stripe saw a writer since. A writer that was
//! still inside when the counts were noted releases (and counts) after that, so it is caught
//! too; one whose release was noted had finished its store call before the scan started.

use crate::sync::{AtomicU64, AtomicUsize, Mutex, MutexGuard, Ordering, lock, try_lock};

// A per-thread byte whose address names the thread while it lives (never 0): what a stripe's
// `owner` holds. Const-initialized and without a destructor, so naming costs one TLS address.
#[cfg(not(loom))]
thread_local! {
    static ME: u8 = const { 0 };
}
#[cfg(loom)]
loom::thread_local! {
    static ME: u8 = 0;
}

fn me() -> usize {
    ME.with(|b| b as *const u8 as usize)
}

struct Stripe {
    lock: Mutex<()>,
    /// The thread holding `lock` (see `me`), or 0. Only the holder writes its own name here
    /// (after locking) and clears it (before unlocking), so a thread that reads its own name
    /// holds the stripe: it reads its own latest write (coherence), and no other thread ever
    /// writes that name.
    owner: AtomicUsize,
    /// Releases by writers. Written only by the lock holder, so a load and a store suffice.
    writes: AtomicU64,
}

pub(crate) struct KeyLocks {
    stripes: Box<[Stripe]>,
    mask: usize,
}

/// A held key stripe.
pub(crate) struct KeyGuard<'a> {
    /// The lock and the owner word to clear; `None` when this thread already held the stripe
    /// (an inner writer).
    lock: Option<(MutexGuard<'a, ()>, &'a AtomicUsize)>,
    /// `Some` for a writer: counted on release.
    writes: Option<&'a AtomicU64>,
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        // Before the lock field is dropped, so while the stripe is still held.
        if let Some(w) = self.writes {
            w.store(w.load(Ordering::Relaxed).wrapping_add(1), Ordering::Release);
        }
        if let Some((_, owner)) = &self.lock {
            owner.store(0, Ordering::Relaxed);
        }
    }
}

/// The stripes' write counts at one moment (see the module docs).
pub(crate) struct WriteCounts(Box<[u64]>);

impl KeyLocks {
    pub(crate) fn new(stripes: usize) -> Self {
        let n = stripes.max(1).next_power_of_two();
        KeyLocks {
            stripes: (0..n)
                .map(|_| Stripe {
                    lock: Mutex::new(()),
                    owner: AtomicUsize::new(0),
                    writes: AtomicU64::new(0),
                })
                .collect(),
            mask: n - 1,
        }
    }

    /// Uses middle hash bits, independent of the shard (top) and table (bottom) bits.
    fn index(&self, hash: u64) -> usize {
        (hash >> 20) as usize & self.mask
    }

    /// Lock the stripe of the key with this hash, as a writer (counted on release); go ahead
    /// if this thread holds it already.
    pub(crate) fn lock(&self, hash: u64) -> KeyGuard<'_> {
        let s = &self.stripes[self.index(hash)];
        let me = me();
        let lock = (s.owner.load(Ordering::Relaxed) != me).then(|| {
            let g = lock(&s.lock);
            s.owner.store(me, Ordering::Relaxed);
            (g, &s.owner)
        });
        KeyGuard {
            lock,
            writes: Some(&s.writes),
        }
    }

    /// Take the stripe if it is free, without counting: for a warm restart's loads, which
    /// write only the cache and must not make each other look stale. They never wait: a
    /// writer inside the stripe may be outdating the record (so it is skipped anyway), and
    /// waiting could deadlock against a store whose scan holds a lock its writes need.
    pub(crate) fn try_lock_uncounted(&self, hash: u64) -> Option<KeyGuard<'_>> {
        let s = &self.stripes[self.index(hash)];
        let me = me();
        if s.owner.load(Ordering::Relaxed) == me {
            return None; // this thread is a writer inside the stripe
        }
        let g = try_lock(&s.lock)?;
        s.owner.store(me, Ordering::Relaxed);
        Some(KeyGuard {
            lock: Some((g, &s.owner)),
            writes: None,
        })
    }

    /// Note every stripe's write count.
    pub(crate) fn write_counts(&self) -> WriteCounts {
        WriteCounts(
            self.stripes
                .iter()
                .map(|s| s.writes.load(Ordering::Acquire))
                .collect(),
        )
    }

    /// Whether no writer of this key's stripe released it since `then` was noted. Call with
    /// the stripe held, so that no writer can release it before the caller is done.
    pub(crate) fn unwritten_since(
        &self,
        then: &WriteCounts,
        hash: u64,
        _held: &KeyGuard<'_>,
    ) -> bool {
        let i = self.index(hash);
        self.stripes[i].writes.load(Ordering::Acquire) == then.0[i]
    }
}
