//! The entry: one key, one value, and the little state readers and the writer share.
//!
//! An entry is immutable once published, except for the fields below marked *shared*:
//!
//! | field        | written by                      | read by                  |
//! |--------------|---------------------------------|--------------------------|
//! | `key`, `value`, `token`, `weight`, `expires_at` | nobody after publication | anyone holding a guard |
//! | `deadline` (*shared*)   | the writer; readers push it forward for time-to-idle | readers (expiry check), the writer |
//!
//! An update never mutates `value` in place: it publishes a new entry (carrying the same
//! policy token) and retires the old one through the epoch, so a reader always clones a
//! whole, consistent value.
//!
//! The key's hash is not stored: lookups filter by the table's tag byte and compare keys, and
//! the rare table rebuild rehashes. That saves 8 bytes per entry: a `u64 → u64` entry is 40
//! bytes, which glibc serves from a 48-byte chunk instead of a 64-byte one.
//!
//! The CLOCK reference bit is not here: it lives in the table group next to the slot's tag
//! (see `table.rs`), so a hand sweep does not load entries.

use crate::policy::Token;
use crate::sync::{AtomicU64, Ordering};

pub(crate) struct Entry<K, V> {
    pub(crate) key: K,
    pub(crate) value: V,
    /// Engine nanoseconds at which the entry expires (the earlier of its time-to-live and
    /// time-to-idle deadlines); `time::NEVER` for never.
    pub(crate) deadline: AtomicU64,
    /// The time-to-live deadline, which reads never extend.
    pub(crate) expires_at: u64,
    /// The eviction policy's handle for this resident.
    pub(crate) token: Token,
    pub(crate) weight: u32,
}

impl<K, V> Entry<K, V> {
    pub(crate) fn new(key: K, value: V, token: Token, weight: u32, exp: Expiry) -> Self {
        Entry {
            key,
            value,
            deadline: AtomicU64::new(exp.deadline),
            expires_at: exp.expires_at,
            token,
            weight,
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
}

/// The two deadlines of a new entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Expiry {
    /// The effective deadline (the earlier of TTL and TTI).
    pub(crate) deadline: u64,
    /// The TTL deadline.
    pub(crate) expires_at: u64,
}

impl Expiry {
    /// An entry that never expires.
    pub(crate) const NEVER: Expiry = Expiry {
        deadline: crate::time::NEVER,
        expires_at: crate::time::NEVER,
    };
}
