//! The entry: one key, one value, and the little state readers and the writer share.
//!
//! An entry is immutable once published, except for the fields below marked *shared*:
//!
//! | field        | written by                      | read by                  |
//! |--------------|---------------------------------|--------------------------|
//! | `key`, `value`, `hash`, `token`, `weight`, `expires_at` | nobody after publication | anyone holding a guard |
//! | `referenced` (*shared*) | readers set it (only when clear), the writer clears it under the shard lock | the writer (CLOCK hands) |
//! | `deadline` (*shared*)   | the writer; readers push it forward for time-to-idle | readers (expiry check), the writer |
//!
//! An update never mutates `value` in place: it publishes a new entry (carrying the same
//! policy token) and retires the old one through the epoch, so a reader always clones a
//! whole, consistent value.

use crate::policy::Token;
use crate::sync::{AtomicBool, AtomicU64, Ordering};

pub(crate) struct Entry<K, V> {
    pub(crate) key: K,
    pub(crate) value: V,
    pub(crate) hash: u64,
    /// Engine nanoseconds at which the entry expires (the earlier of its time-to-live and
    /// time-to-idle deadlines); `time::NEVER` for never.
    pub(crate) deadline: AtomicU64,
    /// The time-to-live deadline, which reads never extend.
    pub(crate) expires_at: u64,
    /// The eviction policy's handle for this resident.
    pub(crate) token: Token,
    pub(crate) weight: u32,
    referenced: AtomicBool,
}

impl<K, V> Entry<K, V> {
    pub(crate) fn new(key: K, value: V, hash: u64, token: Token, weight: u32, exp: Expiry) -> Self {
        Entry {
            key,
            value,
            hash,
            deadline: AtomicU64::new(exp.deadline),
            expires_at: exp.expires_at,
            token,
            weight,
            referenced: AtomicBool::new(false),
        }
    }

    /// Set the CLOCK reference bit. Test before set: a hot entry read by every core would
    /// otherwise have its cache line written on every hit. Relaxed is enough: the bit is a hint
    /// the writer reads under its lock; a late-visible bit only delays a second chance.
    #[inline]
    pub(crate) fn touch(&self) {
        if !self.referenced.load(Ordering::Relaxed) {
            self.referenced.store(true, Ordering::Relaxed);
        }
    }

    /// Test and clear the reference bit (writer only).
    #[inline]
    pub(crate) fn take_referenced(&self) -> bool {
        // A load first: most victims' bits are already clear, and a plain load avoids a write.
        self.referenced.load(Ordering::Relaxed) && self.referenced.swap(false, Ordering::Relaxed)
    }

    /// Carry the reference bit over to the entry that replaces this one.
    pub(crate) fn inherit_referenced(&self, old: &Entry<K, V>) {
        if old.referenced.load(Ordering::Relaxed) {
            self.referenced.store(true, Ordering::Relaxed);
        }
    }

    /// Push the deadline forward after a read (time-to-idle), never past the time-to-live
    /// deadline. The store is skipped unless it moves the deadline by more than `slack`, so
    /// concurrent reads of a hot entry do not write its cache line on every hit.
    #[inline]
    pub(crate) fn extend_idle(&self, now: u64, tti: u64, slack: u64) {
        let want = now.saturating_add(tti).min(self.expires_at);
        let cur = self.deadline();
        if want > cur.saturating_add(slack) {
            self.deadline.store(want, Ordering::Relaxed);
        }
    }

    #[inline]
    pub(crate) fn deadline(&self) -> u64 {
        self.deadline.load(Ordering::Relaxed)
    }

    /// Whether the entry is expired at engine time `now` (a deadline is exclusive: at
    /// `now == deadline` the entry is already gone).
    #[inline]
    pub(crate) fn is_expired(&self, now: u64) -> bool {
        self.deadline() <= now
    }
}

/// The two deadlines of a new entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Expiry {
    /// The effective deadline (the earlier of TTL and TTI).
    pub(crate) deadline: u64,
    /// The TTL deadline.
    pub(crate) expires_at: u64,
}
