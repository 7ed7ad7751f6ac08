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
//! # Two layouts
//! An entry that can never expire is just [`Entry`]: key, value, token, weight (24 bytes for a
//! `u64 → u64` cache, served from a 32-byte malloc chunk). An entry with a deadline is a
//! [`Timed`]: the same header followed by its two deadlines (40 bytes, a 48-byte chunk). A
//! cache without expiry thus pays nothing for it, and one with expiry pays only for the
//! entries that have a deadline (`insert_with_ttl` works on any cache, so the layout is chosen
//! per entry, not per cache). The token word's top bit says which layout an entry has.
//!
//! Because a `&Entry` only grants access to the header's bytes, code that may need the
//! deadlines holds an [`EntryRef`]: the pointer the entry was allocated as, which covers the
//! whole allocation.
//!
//! The key's hash is not stored: lookups filter by the table's tag byte and compare keys, and
//! the rare table rebuild rehashes. The CLOCK reference bit is not here either: it lives in
//! the table group next to the slot's tag (see `table.rs`), so a hand sweep does not load
//! entries.

use crate::policy::Token;
use crate::sync::{AtomicU64, Ordering};
use std::marker::PhantomData;
use std::ptr::NonNull;

/// The token word's top bit: the entry is the header of a [`Timed`]. Policies hand out tokens
/// below it.
const TIMED: u32 = 1 << 31;

/// The most tokens a policy may hand out (the token word's top bit is [`TIMED`]).
pub(crate) const MAX_TOKENS: usize = TIMED as usize;

/// The header every entry has. `repr(C)`: it is the first field of a [`Timed`], at offset 0,
/// so a pointer to a `Timed` is a pointer to its header.
#[repr(C)]
pub(crate) struct Entry<K, V> {
    pub(crate) key: K,
    pub(crate) value: V,
    /// The eviction policy's handle for this resident, and the [`TIMED`] bit.
    token: u32,
    pub(crate) weight: u32,
}

/// An entry with a deadline.
#[repr(C)]
struct Timed<K, V> {
    head: Entry<K, V>,
    /// Engine nanoseconds at which the entry expires (the earlier of its time-to-live and
    /// time-to-idle deadlines).
    deadline: AtomicU64,
    /// The time-to-live deadline, which reads never extend.
    expires_at: u64,
}

impl<K, V> Entry<K, V> {
    /// Allocate an entry; the layout follows `exp` (see the module docs). The pointer owns
    /// the entry: it is freed by [`Entry::free`], exactly once.
    pub(crate) fn alloc(key: K, value: V, token: Token, weight: u32, exp: Expiry) -> NonNull<Self> {
        debug_assert!(
            token & TIMED == 0,
            "policies hand out tokens below MAX_TOKENS"
        );
        let head = |bits| Entry {
            key,
            value,
            token: token | bits,
            weight,
        };
        if exp == Expiry::NEVER {
            NonNull::from(Box::leak(Box::new(head(0))))
        } else {
            let timed = Box::new(Timed {
                head: head(TIMED),
                deadline: AtomicU64::new(exp.deadline),
                expires_at: exp.expires_at,
            });
            // The header is the first field of a `repr(C)` struct, so the cast keeps the
            // pointer (and its provenance over the whole `Timed`).
            NonNull::from(Box::leak(timed)).cast()
        }
    }

    /// Free an entry made by [`Entry::alloc`] with the layout it was allocated with.
    ///
    /// # Safety
    /// `ptr` came from [`Entry::alloc`], is freed only once, and no reference to the entry is
    /// used after this call.
    pub(crate) unsafe fn free(ptr: NonNull<Self>) {
        // SAFETY: the caller guarantees the entry is live; reading its header is in bounds for
        // both layouts.
        let timed = unsafe { ptr.as_ref() }.token & TIMED != 0;
        if timed {
            // SAFETY: the `TIMED` bit is set only by `alloc`, on the header of a boxed `Timed`,
            // and the token word never changes after that; the caller gives up the entry.
            drop(unsafe { Box::from_raw(ptr.cast::<Timed<K, V>>().as_ptr()) });
        } else {
            // SAFETY: without the bit, `alloc` boxed a plain `Entry`; the caller gives it up.
            drop(unsafe { Box::from_raw(ptr.as_ptr()) });
        }
    }

    /// The eviction policy's handle for this resident.
    #[inline]
    pub(crate) fn token(&self) -> Token {
        self.token & !TIMED
    }
}

/// A published entry, readable for `'g` (the epoch guard's lifetime). It keeps the pointer
/// the entry was allocated as, so it may read a [`Timed`] entry's deadlines, which lie past
/// the header that a `&Entry` covers.
pub(crate) struct EntryRef<'g, K, V> {
    ptr: NonNull<Entry<K, V>>,
    _guard: PhantomData<&'g Entry<K, V>>,
}

impl<K, V> Clone for EntryRef<'_, K, V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K, V> Copy for EntryRef<'_, K, V> {}

impl<K, V> std::ops::Deref for EntryRef<'_, K, V> {
    type Target = Entry<K, V>;
    #[inline]
    fn deref(&self) -> &Entry<K, V> {
        self.head()
    }
}

impl<'g, K, V> EntryRef<'g, K, V> {
    /// # Safety
    /// `ptr` came from [`Entry::alloc`] and is not freed while `'g` lasts (the caller holds
    /// an epoch guard for `'g` and loaded `ptr` from a table reachable through it).
    #[inline]
    pub(crate) unsafe fn new(ptr: NonNull<Entry<K, V>>) -> Self {
        EntryRef {
            ptr,
            _guard: PhantomData,
        }
    }

    /// The header, for as long as the guard lives (`Deref` only lends it for the borrow).
    #[inline]
    pub(crate) fn head(self) -> &'g Entry<K, V> {
        // SAFETY: by `EntryRef::new`'s contract the entry stays allocated, and is not mutated
        // except through atomics, for `'g`.
        unsafe { self.ptr.as_ref() }
    }

    /// The entry's address: identifies it (`Cond::IfCurrent`) while it is alive.
    #[inline]
    pub(crate) fn addr(self) -> usize {
        self.ptr.as_ptr() as usize
    }

    /// Whether both refer to the same entry.
    #[inline]
    pub(crate) fn same(self, other: Self) -> bool {
        self.ptr == other.ptr
    }

    #[inline]
    fn timed(self) -> Option<&'g Timed<K, V>> {
        if self.token & TIMED == 0 {
            return None;
        }
        // SAFETY: the bit marks the header of a `Timed` (see `Entry::free`), and `ptr` is the
        // pointer `alloc` made from the `Timed`'s box, so it covers the whole `Timed`, which
        // stays allocated for `'g` (see `new`).
        Some(unsafe { self.ptr.cast::<Timed<K, V>>().as_ref() })
    }

    /// Engine nanoseconds at which the entry expires; `time::NEVER` for never.
    #[inline]
    pub(crate) fn deadline(self) -> u64 {
        self.timed()
            .map_or(crate::time::NEVER, |t| t.deadline.load(Ordering::Relaxed))
    }

    /// Push the deadline forward after a read (time-to-idle), never past the time-to-live
    /// deadline. The store is skipped unless it moves the deadline by more than `slack`, so
    /// concurrent reads of a hot entry do not write its cache line on every hit.
    #[inline]
    pub(crate) fn extend_idle(self, now: u64, tti: u64, slack: u64) {
        let Some(t) = self.timed() else { return };
        let want = now.saturating_add(tti).min(t.expires_at);
        let cur = t.deadline.load(Ordering::Relaxed);
        if want > cur.saturating_add(slack) {
            t.deadline.store(want, Ordering::Relaxed);
        }
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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn entries_without_a_deadline_pay_nothing_for_it() {
        assert_eq!(std::mem::size_of::<Entry<u64, u64>>(), 24);
        assert_eq!(std::mem::size_of::<Timed<u64, u64>>(), 40);
    }

    #[test]
    fn both_layouts_keep_their_fields_and_free_cleanly() {
        let exp = Expiry {
            deadline: 5,
            expires_at: 9,
        };
        for (e, timed) in [(Expiry::NEVER, false), (exp, true)] {
            // A value with a destructor: `free` must drop it exactly once, from either layout.
            let value = std::sync::Arc::new(7u32);
            let p = Entry::alloc(3u64, value.clone(), 42, 2, e);
            // SAFETY: just allocated, freed below after the last use.
            let r = unsafe { EntryRef::new(p) };
            assert_eq!((r.key, *r.value, r.token(), r.weight), (3, 7, 42, 2));
            assert_eq!(r.timed().is_some(), timed);
            assert_eq!(r.deadline(), if timed { 5 } else { crate::time::NEVER });
            r.extend_idle(0, 100, 0);
            // Extended up to the TTL deadline, never past it.
            assert_eq!(r.deadline(), if timed { 9 } else { crate::time::NEVER });
            assert_eq!(std::sync::Arc::strong_count(&value), 2);
            // SAFETY: allocated above, freed once, `r` is not used afterwards.
            unsafe { Entry::free(p) };
            assert_eq!(std::sync::Arc::strong_count(&value), 1);
        }
    }
}
