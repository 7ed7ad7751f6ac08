//! The entry: one key, one value, and the little state readers and the writer share; and
//! the shard's entry memory (allocation, retirement, reuse).
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
//! per entry). Which layout an entry has travels with every pointer to it ([`EntryPtr`]; in
//! the table, as the pointer's tag bit), so neither a reader nor a free loads the entry to
//! find out. Code that may read the deadlines holds an [`EntryRef`], the pointer the entry was
//! allocated as: a `&Entry` covers only the header's bytes.
//!
//! # Memory reuse
//! A shard's [`Pool`] hands unlinked entries to the epoch in batches, and when a batch's
//! readers are gone its entries are dropped in place and their memory goes back to the shard
//! ([`Shelf`]) for the next insert, instead of to the allocator. An evicting insert then
//! neither frees (which writes the victim's cold chunk) nor mallocs (which walks the
//! allocator's free lists through cold chunks): profiled, those were ~20 % of an insert that
//! evicts. What the shelf keeps is bounded; the rest is freed.
//!
//! The key's hash is not stored: lookups filter by the table's tag byte and compare keys, and
//! the rare table rebuild rehashes. The CLOCK reference bit is not here either: it lives in
//! the table group next to the slot's tag (see `table.rs`), so a hand sweep does not load
//! entries.

use crate::policy::Token;
use crate::sync::{AtomicU64, Ordering};
use std::alloc::Layout;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::Arc as StdArc;
use std::sync::atomic::{AtomicUsize as StdAtomicUsize, Ordering as StdOrdering};

/// The header every entry has. `repr(C)`: it is the first field of a [`Timed`], at offset 0,
/// so a pointer to a `Timed` is a pointer to its header.
#[repr(C)]
pub(crate) struct Entry<K, V> {
    pub(crate) key: K,
    pub(crate) value: V,
    /// The eviction policy's handle for this resident.
    pub(crate) token: Token,
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

/// A pointer to an entry, with its layout. It owns nothing by itself: who may use or free
/// the entry is up to the code that holds it (a table slot, a retired batch).
pub(crate) struct EntryPtr<K, V> {
    ptr: NonNull<Entry<K, V>>,
    timed: bool,
}

impl<K, V> Clone for EntryPtr<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K, V> Copy for EntryPtr<K, V> {}

impl<K, V> EntryPtr<K, V> {
    /// The raw pointer and the layout bit, for a table slot (the bit becomes its tag).
    #[inline]
    pub(crate) fn into_raw(self) -> (*const Entry<K, V>, bool) {
        (self.ptr.as_ptr().cast_const(), self.timed)
    }

    /// Back from [`into_raw`](Self::into_raw); `None` for null.
    ///
    /// # Safety
    /// A non-null `raw` came from `into_raw` of a pointer with layout bit `timed`.
    #[inline]
    pub(crate) unsafe fn from_raw(raw: *const Entry<K, V>, timed: bool) -> Option<Self> {
        NonNull::new(raw.cast_mut()).map(|ptr| EntryPtr { ptr, timed })
    }

    /// Drop a live entry in place, by its layout; the memory stays allocated (vacant).
    ///
    /// # Safety
    /// The entry is live, nobody else can reach it, and it is dropped only once.
    unsafe fn drop_in_place(self) {
        if self.timed {
            // SAFETY: the layout bit is true only for memory `Pool::alloc` filled with a whole
            // `Timed`; the caller gives the entry up.
            unsafe { std::ptr::drop_in_place(self.ptr.cast::<Timed<K, V>>().as_ptr()) };
        } else {
            // SAFETY: without the bit, the memory holds a plain `Entry`; as above.
            unsafe { std::ptr::drop_in_place(self.ptr.as_ptr()) };
        }
    }

    /// Drop and deallocate a live entry.
    ///
    /// # Safety
    /// The entry is live, nobody else can reach it, and it is freed only once.
    pub(crate) unsafe fn free(self) {
        // SAFETY: the caller's contract; after the drop the memory is vacant, of this layout.
        unsafe {
            self.drop_in_place();
            dealloc(self.ptr, self.timed);
        }
    }
}

/// A published entry, readable for `'g` (the epoch guard's lifetime). It keeps the pointer
/// the entry was allocated as, so it may read a [`Timed`] entry's deadlines, which lie past
/// the header that a `&Entry` covers.
pub(crate) struct EntryRef<'g, K, V> {
    ptr: EntryPtr<K, V>,
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
    /// The entry is live and is not freed while `'g` lasts (the caller holds an epoch guard
    /// for `'g` and loaded the pointer from a table reachable through it).
    #[inline]
    pub(crate) unsafe fn new(ptr: EntryPtr<K, V>) -> Self {
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
        unsafe { self.ptr.ptr.as_ref() }
    }

    /// The entry's address: identifies it (`Cond::IfCurrent`) while it is alive.
    #[inline]
    pub(crate) fn addr(self) -> usize {
        self.ptr.ptr.as_ptr() as usize
    }

    /// Whether both refer to the same entry.
    #[inline]
    pub(crate) fn same(self, other: Self) -> bool {
        self.ptr.ptr == other.ptr.ptr
    }

    #[inline]
    fn timed(self) -> Option<&'g Timed<K, V>> {
        if !self.ptr.timed {
            return None;
        }
        // SAFETY: the layout bit marks memory that holds a whole `Timed` (see `EntryPtr::free`),
        // and the pointer is the one its allocation made, so it covers all of it; the entry
        // stays allocated for `'g` (see `new`).
        Some(unsafe { self.ptr.ptr.cast::<Timed<K, V>>().as_ref() })
    }

    /// Engine nanoseconds at which the entry expires; `time::NEVER` for never.
    #[inline]
    pub(crate) fn deadline(self) -> u64 {
        self.timed()
            .map_or(crate::time::NEVER, |t| t.deadline.load(Ordering::Relaxed))
    }

    /// Push the deadline forward after a read (time-to-idle), never past the time-to-live
    /// deadline. The write is skipped unless it moves the deadline by more than `slack`, so
    /// concurrent reads of a hot entry do not write its cache line on every hit; it is a
    /// `fetch_max`, so a reader that read the clock earlier never moves it back.
    #[inline]
    pub(crate) fn extend_idle(self, now: u64, tti: u64, slack: u64) {
        let Some(t) = self.timed() else { return };
        let want = now.saturating_add(tti).min(t.expires_at);
        let cur = t.deadline.load(Ordering::Relaxed);
        if want > cur.saturating_add(slack) {
            t.deadline.fetch_max(want, Ordering::Relaxed);
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

/// Batches of one entry under loom: every retirement goes through the epoch at once, as the
/// models' premature-free checks expect.
#[cfg(loom)]
const MAX_RETIRE_BATCH: usize = 1;
#[cfg(not(loom))]
const MAX_RETIRE_BATCH: usize = 64;

/// A shard's entry memory, owned by its writer half (used under the shard lock).
///
/// Unlinked entries are handed to the epoch a batch at a time. Deferring each entry on its own
/// fills crossbeam's thread-local bag every 64 retirements, and each full bag is copied into a
/// fresh heap node and queued globally; with one entry retired per evicting insert, that bag
/// traffic cost more data-cache misses than the frees themselves. A batch is one deferred
/// call. It holds at most `limit` entries (a shard's capacity / 16, at most 64, so a small
/// cache keeps little garbage back). New entries reuse the memory of collected batches (see
/// the module docs).
pub(crate) struct Pool<K, V> {
    retired: Vec<EntryPtr<K, V>>,
    limit: usize,
    /// Vacant memory taken from the shelf: no lock per insert.
    vacant: Vacant<K, V>,
    shelf: StdArc<Shelf<K, V>>,
}

/// Vacant memory (its entry dropped), by layout: `[plain, timed]`.
type Vacant<K, V> = [Vec<NonNull<Entry<K, V>>>; 2];

/// Vacant entry memory that collected batches gave back, shared by a shard's pool and the
/// threads that run the epoch's deferred drops; and the batches handed to the epoch and not
/// yet collected. Std mutexes, each locked once per batch (and `vacant` once per refill);
/// they guard plain vectors (no lock-free structure here).
struct Shelf<K, V> {
    vacant: std::sync::Mutex<Vacant<K, V>>,
    /// The entries of every batch handed to the epoch and not yet collected. The epoch holds
    /// only a [`Retired`] ticket: a deferred drop can wait in the bag of any thread that
    /// pinned the cache until that thread exits, and the cache's drop must not wait for it
    /// (DESIGN §3.1: dropping the cache runs every deferred drop). `Pool::drop` drops what
    /// is still parked; a ticket collected later finds its slot empty.
    parked: std::sync::Mutex<Parked<K, V>>,
    /// How many pointers `vacant` holds, per layout (a refill skips the lock while its
    /// layout has none).
    len: [StdAtomicUsize; 2],
    /// The most pointers it keeps per layout; more are deallocated.
    cap: usize,
}

/// Parked batches: a slab of entry lists (an empty list is a free slot).
struct Parked<K, V> {
    slots: Vec<Vec<EntryPtr<K, V>>>,
    free: Vec<usize>,
}

impl<K, V> Parked<K, V> {
    fn park(&mut self, entries: Vec<EntryPtr<K, V>>) -> usize {
        match self.free.pop() {
            Some(id) => {
                self.slots[id] = entries;
                id
            }
            None => {
                self.slots.push(entries);
                self.slots.len() - 1
            }
        }
    }

    /// The entries parked at `id`; empty if they were taken already (the pool drained them).
    fn take(&mut self, id: usize) -> Vec<EntryPtr<K, V>> {
        let entries = self
            .slots
            .get_mut(id)
            .map(std::mem::take)
            .unwrap_or_default();
        if !entries.is_empty() {
            self.free.push(id);
        }
        entries
    }
}

// SAFETY: a pool owns the retired entries it points to (unlinked, reachable by no table) and
// vacant memory that holds no value; sending it sends owned `K`s and `V`s.
unsafe impl<K: Send, V: Send> Send for Pool<K, V> {}
// SAFETY: the shelf owns the parked entries (unlinked, reachable by no table; sending or
// sharing the shelf moves owned `K`s and `V`s between threads, which `Send` allows) and vacant
// memory that holds no value, each behind a mutex.
unsafe impl<K: Send, V: Send> Send for Shelf<K, V> {}
// SAFETY: as above: every access to the shelf's contents goes through its mutexes.
unsafe impl<K: Send, V: Send> Sync for Shelf<K, V> {}

/// Entries a pool has unlinked, dropped together: dropping the batch drops them and gives
/// their memory to the shelf.
struct Batch<K, V> {
    entries: Vec<EntryPtr<K, V>>,
    shelf: StdArc<Shelf<K, V>>,
}

/// A batch handed to the epoch: its entries are parked in the shelf, and dropping the ticket
/// (the epoch's deferred drop, once the batch's readers are gone) drops them.
pub(crate) struct Retired<K, V> {
    id: usize,
    shelf: StdArc<Shelf<K, V>>,
}

impl<K, V> Drop for Retired<K, V> {
    fn drop(&mut self) {
        let entries = self
            .shelf
            .parked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(self.id);
        drop(Batch {
            entries,
            shelf: StdArc::clone(&self.shelf),
        });
    }
}

impl<K, V> Pool<K, V> {
    /// A pool sized for a shard expected to hold `entries` entries.
    pub(crate) fn for_entries(entries: usize) -> Self {
        let limit = (entries / 16).clamp(1, MAX_RETIRE_BATCH);
        Pool {
            retired: Vec::with_capacity(limit),
            limit,
            vacant: [Vec::new(), Vec::new()],
            shelf: StdArc::new(Shelf {
                vacant: std::sync::Mutex::new([Vec::new(), Vec::new()]),
                parked: std::sync::Mutex::new(Parked {
                    slots: Vec::new(),
                    free: Vec::new(),
                }),
                len: [StdAtomicUsize::new(0), StdAtomicUsize::new(0)],
                // Batches come back in bursts: crossbeam defers them through a thread-local
                // bag of 64 calls, so up to 64 batches are collected at once. A shelf that
                // holds that much lets steady churn run without the allocator.
                cap: 64 * limit,
            }),
        }
    }

    /// A new entry; the layout follows `exp` (see the module docs). Reuses vacant memory of
    /// that layout when there is some.
    pub(crate) fn alloc(
        &mut self,
        key: K,
        value: V,
        token: Token,
        weight: u32,
        exp: Expiry,
    ) -> EntryPtr<K, V> {
        let head = Entry {
            key,
            value,
            token,
            weight,
        };
        let timed = exp != Expiry::NEVER;
        let spare = &mut self.vacant[usize::from(timed)];
        if spare.is_empty() && self.shelf.len[usize::from(timed)].load(StdOrdering::Relaxed) != 0 {
            self.shelf.refill(timed, spare);
        }
        let ptr = match (spare.pop(), timed) {
            (Some(p), false) => {
                // SAFETY: vacant memory of the plain layout (sorted by `Batch::drop`), owned
                // by this pool and holding no value: writing a whole `Entry` initializes it.
                unsafe { p.as_ptr().write(head) };
                p
            }
            (Some(p), true) => {
                let t = p.cast::<Timed<K, V>>();
                // SAFETY: vacant memory of the timed layout, as above.
                unsafe { t.as_ptr().write(timed_entry(head, exp)) };
                p
            }
            (None, false) => NonNull::from(Box::leak(Box::new(head))),
            // The header is the first field of a `repr(C)` struct, so the cast keeps the
            // pointer (and its provenance over the whole `Timed`).
            (None, true) => NonNull::from(Box::leak(Box::new(timed_entry(head, exp)))).cast(),
        };
        EntryPtr { ptr, timed }
    }

    /// Start fetching the memory the next [`alloc`](Self::alloc) of this layout will write,
    /// for ownership. Reused memory is cold, and the insert publishes the entry with a locked
    /// instruction, which waits for every earlier store to complete: without this, that
    /// instruction waited out the miss on the new entry's line (profiled: 7 % of a 95/5 mix).
    /// Called before the insert's own probes, so the fetch overlaps them.
    #[inline]
    pub(crate) fn prepare(&self, exp: Expiry) {
        #[cfg(target_arch = "x86_64")]
        if let Some(p) = self.vacant[usize::from(exp != Expiry::NEVER)].last() {
            use std::arch::x86_64::{_MM_HINT_ET0, _mm_prefetch};
            // SAFETY: a prefetch is only a hint: it reads nothing and cannot fault. SSE, the
            // feature it needs, is part of the x86_64 baseline.
            unsafe { _mm_prefetch::<_MM_HINT_ET0>(p.as_ptr().cast::<i8>()) };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = exp;
    }

    /// Take an entry the caller unlinked (readers may still hold it). Returns the ticket of
    /// a full batch, which the caller must hand to the epoch (see `TablePtr::retire`).
    #[inline]
    pub(crate) fn retire(&mut self, e: EntryPtr<K, V>) -> Option<Retired<K, V>> {
        self.retired.push(e);
        if self.retired.len() < self.limit {
            return None;
        }
        Some(self.park_batch())
    }

    /// Park the full batch of retired entries on the shelf; its ticket goes to the epoch.
    #[inline(never)]
    fn park_batch(&mut self) -> Retired<K, V> {
        let entries = std::mem::replace(&mut self.retired, Vec::with_capacity(self.limit));
        let id = self
            .shelf
            .parked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .park(entries);
        Retired {
            id,
            shelf: StdArc::clone(&self.shelf),
        }
    }
}

fn timed_entry<K, V>(head: Entry<K, V>, exp: Expiry) -> Timed<K, V> {
    Timed {
        head,
        deadline: AtomicU64::new(exp.deadline),
        expires_at: exp.expires_at,
    }
}

/// The memory layout of vacant memory of either kind.
fn layout<K, V>(timed: bool) -> Layout {
    if timed {
        Layout::new::<Timed<K, V>>()
    } else {
        Layout::new::<Entry<K, V>>()
    }
}

/// Deallocate vacant memory.
///
/// # Safety
/// `p` is vacant memory (its entry dropped) of layout `timed`, allocated by a `Box`, and
/// owned by the caller.
unsafe fn dealloc<K, V>(p: NonNull<Entry<K, V>>, timed: bool) {
    // SAFETY: `Box::new` allocated it with the global allocator and this very layout.
    unsafe { std::alloc::dealloc(p.as_ptr().cast(), layout::<K, V>(timed)) };
}

impl<K, V> Shelf<K, V> {
    /// Move every vacant pointer of one layout into `into`.
    fn refill(&self, timed: bool, into: &mut Vec<NonNull<Entry<K, V>>>) {
        let mut v = self.vacant.lock().unwrap_or_else(|e| e.into_inner());
        let mine = &mut v[usize::from(timed)];
        self.len[usize::from(timed)].fetch_sub(mine.len(), StdOrdering::Relaxed);
        std::mem::swap(mine, into);
    }
}

impl<K, V> Drop for Batch<K, V> {
    fn drop(&mut self) {
        // A batch is dropped either by the epoch, after every reader pinned at the unlinks
        // has unpinned, or with its shard's pool, when no reader exists. Drop the entries
        // outside the lock (a value's destructor is user code), then shelve their memory. A
        // destructor that panics does not stop the others (as for a `Vec`'s elements): the
        // first panic goes on once every entry is dropped and its memory shelved.
        let mut first_panic = None;
        for e in &self.entries {
            let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                // SAFETY: unlinked, owned by this batch, and no reader can still hold it
                // (above). Dropped once: a panicking field drop still drops the other fields,
                // so the memory holds no value afterwards either way.
                unsafe { e.drop_in_place() }
            }));
            if let Err(p) = dropped {
                first_panic.get_or_insert(p);
            }
        }
        let mut v = self.shelf.vacant.lock().unwrap_or_else(|e| e.into_inner());
        let mut shelved = [0; 2];
        for e in self.entries.drain(..) {
            let list = &mut v[usize::from(e.timed)];
            if list.len() < self.shelf.cap {
                list.push(e.ptr);
                shelved[usize::from(e.timed)] += 1;
            } else {
                // SAFETY: dropped above; owned by this batch; its layout is `e.timed`.
                unsafe { dealloc(e.ptr, e.timed) };
            }
        }
        for (len, n) in self.shelf.len.iter().zip(shelved) {
            len.fetch_add(n, StdOrdering::Relaxed);
        }
        drop(v);
        if let Some(p) = first_panic {
            std::panic::resume_unwind(p);
        }
    }
}

impl<K, V> Drop for Pool<K, V> {
    fn drop(&mut self) {
        // The shard is being dropped with its cache: no reader exists, so retired entries go
        // at once, and so do the parked batches whose deferred drops have not run yet (their
        // tickets may sit in other threads' epoch bags for as long as those threads live).
        let parked = {
            let mut p = self.shelf.parked.lock().unwrap_or_else(|e| e.into_inner());
            p.free.clear();
            std::mem::take(&mut p.slots)
        };
        let batches = std::iter::once(std::mem::take(&mut self.retired)).chain(parked);
        // Each batch is dropped even if an earlier one's values panicked; the first panic
        // goes on afterwards.
        let mut first_panic = None;
        for entries in batches.filter(|b| !b.is_empty()) {
            let shelf = StdArc::clone(&self.shelf);
            let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                drop(Batch { entries, shelf })
            }));
            if let Err(p) = dropped {
                first_panic.get_or_insert(p);
            }
        }
        dealloc_all(&mut self.vacant);
        if let Some(p) = first_panic {
            std::panic::resume_unwind(p);
        }
    }
}

impl<K, V> Drop for Shelf<K, V> {
    fn drop(&mut self) {
        // The last batch and pool that could reach the shelf are gone.
        dealloc_all(self.vacant.get_mut().unwrap_or_else(|e| e.into_inner()));
    }
}

/// Deallocate every vacant chunk of `v` (owned by the caller, holding no value).
fn dealloc_all<K, V>(v: &mut Vacant<K, V>) {
    for (timed, list) in [false, true].into_iter().zip(v.iter_mut()) {
        for p in list.drain(..) {
            // SAFETY: vacant memory of this list's layout (`Vacant` is `[plain, timed]`),
            // owned by the caller.
            unsafe { dealloc(p, timed) };
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn entries_without_a_deadline_pay_nothing_for_it() {
        assert_eq!(std::mem::size_of::<Entry<u64, u64>>(), 24);
        assert_eq!(std::mem::size_of::<Timed<u64, u64>>(), 40);
    }

    const SOON: Expiry = Expiry {
        deadline: 5,
        expires_at: 9,
    };

    #[test]
    fn both_layouts_keep_their_fields_and_free_cleanly() {
        let mut pool = Pool::for_entries(1 << 10);
        for (e, timed) in [(Expiry::NEVER, false), (SOON, true)] {
            // A value with a destructor: `free` must drop it exactly once, from either layout.
            let value = Arc::new(7u32);
            let p = pool.alloc(3u64, value.clone(), 42, 2, e);
            // SAFETY: just allocated, freed below after the last use.
            let r = unsafe { EntryRef::new(p) };
            assert_eq!((r.key, *r.value, r.token, r.weight), (3, 7, 42, 2));
            assert_eq!(r.timed().is_some(), timed);
            assert_eq!(r.deadline(), if timed { 5 } else { crate::time::NEVER });
            r.extend_idle(0, 100, 0);
            // Extended up to the TTL deadline, never past it.
            assert_eq!(r.deadline(), if timed { 9 } else { crate::time::NEVER });
            assert_eq!(Arc::strong_count(&value), 2);
            // SAFETY: allocated above, freed once, `r` is not used afterwards.
            unsafe { p.free() };
            assert_eq!(Arc::strong_count(&value), 1);
        }
    }

    #[test]
    fn collected_batches_drop_their_values_and_their_memory_is_reused() {
        let mut pool = Pool::for_entries(16 * 4);
        assert_eq!(pool.limit, 4);
        let value = Arc::new(0u32);
        let mut batches = Vec::new();
        let mut addrs = Vec::new();
        for i in 0..8u64 {
            let exp = if i % 2 == 0 { Expiry::NEVER } else { SOON };
            let p = pool.alloc(i, value.clone(), i as u32, 1, exp);
            addrs.push(p.ptr);
            batches.extend(pool.retire(p));
        }
        assert_eq!(batches.len(), 2, "a batch per `limit` retirements");
        assert_eq!(Arc::strong_count(&value), 9);
        drop(batches);
        assert_eq!(Arc::strong_count(&value), 1, "collecting drops the values");
        assert_eq!(pool.shelf.len[0].load(StdOrdering::Relaxed), 4);
        assert_eq!(pool.shelf.len[1].load(StdOrdering::Relaxed), 4);
        // The next entries reuse that memory, each in its own layout.
        for i in 0..8u64 {
            let exp = if i % 2 == 0 { Expiry::NEVER } else { SOON };
            let p = pool.alloc(i, value.clone(), 0, 1, exp);
            assert!(addrs.contains(&p.ptr), "reused memory");
            // SAFETY: as `EntryRef::new` asks: live until freed below.
            let r = unsafe { EntryRef::new(p) };
            assert_eq!((r.key, r.deadline()), (i, exp.deadline));
            assert!(pool.retire(p).is_none() || i % 4 == 3);
        }
        // Dropping the pool frees the retired entries not yet batched, and all vacant memory.
        drop(pool);
        assert_eq!(Arc::strong_count(&value), 1);
    }

    #[test]
    fn the_shelf_keeps_a_bounded_amount() {
        let mut pool = Pool::<u64, u64>::for_entries(16);
        assert_eq!(pool.limit, 1);
        let batches: Vec<_> = (0..100)
            .filter_map(|i| {
                let p = pool.alloc(i, i, 0, 1, Expiry::NEVER);
                pool.retire(p)
            })
            .collect();
        assert_eq!(batches.len(), 100);
        drop(batches);
        assert_eq!(pool.shelf.cap, 64);
        assert_eq!(pool.shelf.len[0].load(StdOrdering::Relaxed), pool.shelf.cap);
    }
}
