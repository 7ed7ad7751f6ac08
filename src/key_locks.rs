//! Striped per-key locks: they order the writers of one key around backing-store I/O.
//!
//! A write-through insert must reach the store and the cache in the same order as any other
//! writer of the same key, or the two could end up disagreeing. The store call is I/O, so it
//! may not happen under a shard lock (that would stall every reader-free writer of the shard);
//! instead, writers of one key hold that key's stripe lock across "store, then cache". Stripes
//! are many, so unrelated keys rarely share one; readers never touch them.

use crate::sync::{Mutex, MutexGuard, lock};

pub(crate) struct KeyLocks {
    stripes: Box<[Mutex<()>]>,
    mask: usize,
}

impl KeyLocks {
    pub(crate) fn new(stripes: usize) -> Self {
        let n = stripes.max(1).next_power_of_two();
        KeyLocks {
            stripes: (0..n).map(|_| Mutex::new(())).collect(),
            mask: n - 1,
        }
    }

    /// Lock the stripe of the key with this hash. Uses middle hash bits, independent of the
    /// shard (top) and table (bottom) bits.
    pub(crate) fn lock(&self, hash: u64) -> MutexGuard<'_, ()> {
        lock(&self.stripes[(hash >> 20) as usize & self.mask])
    }
}
