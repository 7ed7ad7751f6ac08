//! A shard's open-addressed table: tag bytes plus entry pointers, probed without locks.
//!
//! # Layout
//! One allocation of 64-byte groups. A group is one cache line: an `AtomicU64` holding seven
//! tag bytes plus an eighth byte of CLOCK reference bits (bit `i` for slot `i`), and seven
//! `Atomic<Entry>` pointers. A probe loads a group's tag word once and compares all seven tags
//! at a time (SWAR, with the eighth byte masked out), so most misses touch one cache line and
//! no entry at all. A hit sets its slot's reference bit in the word it already loaded, and a
//! CLOCK hand reads the bit from the group, not from the entry: one cache line per resident
//! the hand passes instead of two. The table has exactly as many groups as its slot count needs
//! (no rounding up to a power of two, which cost up to twice the memory): a key's home group is
//! its hash's low 32 bits, mixed by a multiplication, scaled onto the group count
//! (multiply-shift, no division), and groups are probed linearly from there (`g, g+1, g+2, ...`,
//! wrapping), which visits every group.
//!
//! Tag bytes: `EMPTY` (never used since the last rebuild), `DELETED` (a tombstone), or
//! `0x80 | 7 hash bits` (full). A lookup stops at the first group that contains an `EMPTY`
//! byte: an insert always takes the first free slot on its probe path, so no key lives past a
//! group that still has an empty slot.
//!
//! # Concurrency
//! Readers hold an epoch guard and take no lock. All structural writes to a table happen under
//! its shard's writer lock, so there is one writer of the tag bytes at a time. Readers do write
//! the tag word, but only to set reference bits (`fetch_or`, and only when the bit is clear), so
//! every writer change to the word is a single atomic RMW (`fetch_xor` of a tag byte and
//! maybe its slot's reference bit, `fetch_and` of one reference bit), never a load-then-store
//! that could drop a reader's bit. Slot pointers have one writer, the lock holder, so it
//! changes them with plain stores: a swap's lock prefix would make it wait for all its
//! earlier stores (the new entry, the policy's nodes) to reach the cache.
//! RMWs also keep the word's release sequence intact, so a reader's Acquire load of a word last
//! changed by any RMW still synchronizes with the publishing Release. Publication order:
//!
//! * insert: store the entry pointer (Release), then the tag word (Release). A reader that sees
//!   the new tag (Acquire) therefore sees the pointer and the entry's contents;
//! * remove: null the pointer, then mark the tag `DELETED` (or `EMPTY`, see below); the old
//!   entry is retired through the epoch, so a reader that loaded it before may still read it;
//! * replace: store the new pointer (Release); the tag is unchanged.
//!
//! Readers re-check the key after matching a tag (the tag is only a filter) and skip null
//! pointers. Entries never move within a table (no Robin Hood, no backward shift), because a
//! lock-free reader could then miss an entry that moved behind it. When tombstones pile up, or
//! the table gets too full, the writer builds a new table, copies the entry pointers into it,
//! publishes it, and retires the old table (not the entries) through the epoch.
//!
//! A tombstone is turned back into `EMPTY` when its group still has an `EMPTY` byte: groups
//! only go from empty to full to deleted, so such a group was never full, no probe ever
//! passed it, and no key depends on it being non-empty.

use crate::entry::{Entry, EntryPtr, EntryRef, Pool};
use crate::reclaim::{self, Atomic, Guard, Owned, Shared};
use crate::sync::{AtomicU64, Ordering};

pub(crate) const GROUP_WIDTH: usize = 7;
const EMPTY: u8 = 0x00;
const DELETED: u8 = 0x01;
const LO: u64 = 0x0101_0101_0101_0101;
/// The high bit of the seven tag bytes; the eighth byte (reference bits) never matches.
const HI: u64 = 0x0080_8080_8080_8080;
#[cfg(any(loom, test))]
const EMPTY_WORD: u64 = 0;
/// Where the reference bits start: the eighth byte.
const REF_SHIFT: usize = 8 * GROUP_WIDTH;

/// Slot `i`'s reference bit in the tag word.
#[inline]
fn ref_bit(i: usize) -> u64 {
    1 << (REF_SHIFT + i)
}

/// The ordering that publishes a new entry. `--cfg cogwheel_planted_bug` weakens it on
/// purpose, to check that the loom models catch a broken publication order.
#[cfg(not(cogwheel_planted_bug))]
const PUBLISH: Ordering = Ordering::Release;
#[cfg(cogwheel_planted_bug)]
const PUBLISH: Ordering = Ordering::Relaxed;

#[repr(C, align(64))]
struct Group<K, V> {
    tags: AtomicU64,
    slots: [Atomic<Entry<K, V>>; GROUP_WIDTH],
}

/// The home group of `hash` among `groups` groups (see [`Table::home`]).
#[inline]
fn home_of(groups: usize, hash: u64) -> usize {
    let mixed = (hash as u32).wrapping_mul(0x9e37_79b1);
    ((u64::from(mixed) * groups as u64) >> 32) as usize
}

/// The allocator refused a table's memory.
#[derive(Debug)]
pub(crate) struct TableAllocError {
    pub(crate) bytes: usize,
}

impl std::fmt::Display for TableAllocError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the allocator refused {} bytes", self.bytes)
    }
}

/// `n ≥ 1` empty groups, from zeroed memory: all-zero bytes are an empty group (tag word
/// `EMPTY_WORD`, null slots; a unit test checks the bytes of `Group::new`). A table sized up
/// front for a large capacity then costs address space, and memory only as its groups are
/// written; a size the allocator refuses is an error, not an abort.
#[cfg(not(loom))]
fn empty_groups<K, V>(n: usize) -> Option<Box<[Group<K, V>]>> {
    let layout = std::alloc::Layout::array::<Group<K, V>>(n.max(1)).ok()?;
    // SAFETY: the layout's size is not zero (at least one 64-byte group).
    let p = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<Group<K, V>>();
    if p.is_null() {
        return None;
    }
    // SAFETY: `p` is a fresh allocation with the layout of `[Group<K, V>; n]` (the one a
    // `Box<[Group<K, V>]>` of length `n` frees with), owned by nothing else, and every
    // group in it is initialized: zeroed bytes are a valid empty group (see above).
    Some(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(p, n.max(1))) })
}

/// Under loom the atomics are loom's, which zeroed memory is not: build each group.
#[cfg(loom)]
fn empty_groups<K, V>(n: usize) -> Option<Box<[Group<K, V>]>> {
    Some((0..n.max(1)).map(|_| Group::new()).collect())
}

impl<K, V> Group<K, V> {
    #[cfg(any(loom, test))]
    fn new() -> Self {
        Group {
            tags: AtomicU64::new(EMPTY_WORD),
            slots: std::array::from_fn(|_| Atomic::null()),
        }
    }
}

/// Tag bytes of `word` equal to `byte` (bit 7 of each matching byte set). May report a false
/// match in a byte just above a true match (borrow propagation); callers verify matches.
/// Borrows only run upward, so the reference byte on top cannot disturb the tag bytes.
#[inline]
fn match_byte(word: u64, byte: u8) -> u64 {
    let x = word ^ (LO * u64::from(byte));
    x.wrapping_sub(LO) & !x & HI
}

/// The slots of `word` whose tag byte may equal `byte` (see [`match_byte`]: a false match is
/// possible, callers verify).
#[inline]
fn matching_slots(word: u64, byte: u8) -> impl Iterator<Item = usize> {
    let mut m = match_byte(word, byte);
    std::iter::from_fn(move || {
        if m == 0 {
            return None;
        }
        let i = (m.trailing_zeros() / 8) as usize;
        m &= m - 1;
        Some(i)
    })
}

/// Whether any of the seven slots is `EMPTY`. Exact: the zero-byte test can only err in bytes
/// above a true zero byte, and then a true zero byte exists anyway.
#[inline]
fn has_empty(word: u64) -> bool {
    match_byte(word, EMPTY) != 0
}

#[cfg(all(test, not(loom)))]
fn set_byte(word: u64, i: usize, byte: u8) -> u64 {
    let shift = i * 8;
    (word & !(0xffu64 << shift)) | (u64::from(byte) << shift)
}

#[inline]
fn get_byte(word: u64, i: usize) -> u8 {
    (word >> (i * 8)) as u8
}

/// Where a key is, or where it would go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    /// The key is at this slot.
    Found(u32),
    /// The key is absent; this is the first free slot on its probe path.
    Vacant(u32),
}

pub(crate) struct Table<K, V> {
    groups: Box<[Group<K, V>]>,
}

impl<K, V> Table<K, V> {
    /// A table with at least `slots` slots (rounded up to whole groups).
    pub(crate) fn with_slots(slots: usize) -> Self {
        match Self::try_with_slots(slots) {
            Ok(t) => t,
            // A rebuild's growth (zero-weight entries past the build's estimate), which has no
            // error to return: as any failed allocation.
            Err(e) => std::alloc::handle_alloc_error(
                std::alloc::Layout::from_size_align(e.bytes, std::mem::align_of::<Group<K, V>>())
                    .unwrap_or(std::alloc::Layout::new::<Group<K, V>>()),
            ),
        }
    }

    /// [`with_slots`](Self::with_slots), or an error if the memory cannot be had: a table is
    /// allocated whole, up front, so a huge capacity must fail the build, not abort it.
    pub(crate) fn try_with_slots(slots: usize) -> Result<Self, TableAllocError> {
        // Slot numbers are `u32` (see `slot_index`); `u32::MAX` is no slot's.
        let groups = slots
            .div_ceil(GROUP_WIDTH)
            .clamp(1, u32::MAX as usize >> SLOT_SHIFT);
        Ok(Table {
            groups: empty_groups(groups).ok_or(TableAllocError {
                bytes: groups.saturating_mul(std::mem::size_of::<Group<K, V>>()),
            })?,
        })
    }

    /// The group a probe for `hash` starts at. The low 32 bits (the shard index and the tag
    /// come from the high bits of a 64-bit product, see `hash.rs`) are mixed by a Fibonacci
    /// multiplication, so even a weak user hasher (consecutive integers) spreads, then scaled
    /// onto `0..groups`.
    #[inline]
    fn home(&self, hash: u64) -> usize {
        home_of(self.groups.len(), hash)
    }

    /// Where the groups are: `(address, count)`, for [`Table::home_addr`].
    pub(crate) fn groups_hint(&self) -> (usize, usize) {
        (self.groups.as_ptr() as usize, self.groups.len())
    }

    /// The address of `hash`'s home group in a table that [`groups_hint`](Self::groups_hint)
    /// described (and that may since have been replaced: only for prefetching).
    #[inline]
    pub(crate) fn home_addr((base, groups): (usize, usize), hash: u64) -> usize {
        base.wrapping_add(home_of(groups, hash).wrapping_mul(std::mem::size_of::<Group<K, V>>()))
    }

    /// The group after `g`, wrapping.
    #[inline]
    fn next(&self, g: usize) -> usize {
        if g + 1 == self.groups.len() { 0 } else { g + 1 }
    }

    pub(crate) fn slots(&self) -> usize {
        self.groups.len() * GROUP_WIDTH
    }

    /// Lock-free lookup: the entry for `hash` whose key satisfies `eq`, if any, with what it
    /// takes to mark it referenced.
    #[inline]
    pub(crate) fn find<'g>(
        &'g self,
        hash: u64,
        tag: u8,
        mut eq: impl FnMut(&K) -> bool,
        guard: &'g Guard,
    ) -> Option<Hit<'g, K, V>> {
        let mut g = self.home(hash);
        let mut left = self.groups.len();
        loop {
            let group = &self.groups[g];
            let tags = group.tags.load(Ordering::Acquire);
            for i in matching_slots(tags, tag) {
                let p = group.slots[i].load(Ordering::Acquire, guard);
                // Entries are retired only after being unlinked, through `defer_destroy`; null
                // (a concurrent removal) is handled by `as_ref`.
                // SAFETY: loaded under `guard` from a table reachable through it: valid while
                // `guard` lives.
                if let Some(e) = unsafe { entry_ref(p) }
                    && eq(&e.key)
                {
                    return Some(Hit {
                        entry: e,
                        tags: &group.tags,
                        seen: tags,
                        bit: ref_bit(i),
                    });
                }
            }
            if has_empty(tags) {
                return None;
            }
            left -= 1;
            if left == 0 {
                return None;
            }
            g = self.next(g);
        }
    }

    /// Start fetching the entries a lookup of `hash` will compare keys with (those of its
    /// home group whose tag matches). Call once the group had time to arrive (a prefetch of
    /// [`home_addr`](Self::home_addr)). A hint only: the pointers may be stale by the time of the
    /// lookup, and a prefetch of freed memory is harmless.
    #[inline]
    pub(crate) fn prefetch_candidates(&self, hash: u64, tag: u8, guard: &Guard) {
        let group = &self.groups[self.home(hash)];
        for i in matching_slots(group.tags.load(Ordering::Relaxed), tag) {
            let p = group.slots[i].load(Ordering::Relaxed, guard);
            prefetch(p.as_raw() as usize);
        }
    }

    /// Writer only: where the key is, or the first free slot on its path. `None` when the
    /// path has no free slot at all (the caller must rebuild first; load limits prevent it).
    pub(crate) fn probe(
        &self,
        hash: u64,
        tag: u8,
        mut eq: impl FnMut(&K) -> bool,
        guard: &Guard,
    ) -> Option<Probe> {
        let mut g = self.home(hash);
        let mut left = self.groups.len();
        let mut vacant = None;
        loop {
            let group = &self.groups[g];
            // Relaxed: the caller holds the shard lock, so it is the only writer and sees its
            // own stores.
            let tags = group.tags.load(Ordering::Relaxed);
            for i in matching_slots(tags, tag) {
                if get_byte(tags, i) != tag {
                    continue;
                }
                let p = group.slots[i].load(Ordering::Relaxed, guard);
                // SAFETY: as in `find`; besides, only the lock holder retires entries.
                if let Some(e) = unsafe { p.as_ref() }
                    && eq(&e.key)
                {
                    return Some(Probe::Found(slot_index(g, i)));
                }
            }
            if vacant.is_none() {
                // Free (`EMPTY` or `DELETED`) is exactly a clear high bit: tags have it set.
                let free = !tags & HI;
                if free != 0 {
                    vacant = Some(slot_index(g, (free.trailing_zeros() / 8) as usize));
                }
            }
            if has_empty(tags) {
                return vacant.map(Probe::Vacant);
            }
            left -= 1;
            if left == 0 {
                return vacant.map(Probe::Vacant);
            }
            g = self.next(g);
        }
    }

    /// Writer only: the entry at `slot`, if any.
    pub(crate) fn entry_at<'g>(&self, slot: u32, guard: &'g Guard) -> Option<EntryRef<'g, K, V>> {
        let (g, i) = split(slot);
        let p = self.groups[g].slots[i].load(Ordering::Relaxed, guard);
        // SAFETY: only the lock holder retires entries, and it does so through the epoch, so
        // a pointer loaded from the table under `guard` is valid for the guard's lifetime.
        unsafe { entry_ref(p) }
    }

    /// Writer only: the pointer at `slot` (for retiring it).
    pub(crate) fn ptr_at<'g>(&self, slot: u32, guard: &'g Guard) -> Shared<'g, Entry<K, V>> {
        let (g, i) = split(slot);
        self.groups[g].slots[i].load(Ordering::Relaxed, guard)
    }

    /// Writer only: publish a new entry at a vacant slot. Returns whether the slot was a
    /// tombstone (so the caller can keep its tombstone count).
    pub(crate) fn publish(&self, slot: u32, tag: u8, entry: Shared<'_, Entry<K, V>>) -> bool {
        let (g, i) = split(slot);
        let group = &self.groups[g];
        let tags = group.tags.load(Ordering::Relaxed);
        let was = get_byte(tags, i);
        debug_assert!(
            was == EMPTY || was == DELETED,
            "publish into an occupied slot"
        );
        // Pointer first, then tag, both Release: a reader that matches the tag sees the entry.
        group.slots[i].store(entry, PUBLISH);
        // One RMW sets the tag and clears the slot's reference bit if it was set: a newcomer
        // starts unreferenced. Readers only ever set bits, so a bit seen set is still set; one
        // set after the load survives (a spurious second chance, harmless for a hint). One
        // locked instruction, not two: each waits for all earlier stores to complete.
        group.tags.fetch_xor(
            (u64::from(was ^ tag) << (i * 8)) | (tags & ref_bit(i)),
            PUBLISH,
        );
        was == DELETED
    }

    /// Writer only: replace the entry at an occupied slot; returns the old pointer, which the
    /// caller must retire.
    pub(crate) fn replace<'g>(
        &self,
        slot: u32,
        entry: Shared<'g, Entry<K, V>>,
        guard: &'g Guard,
    ) -> Shared<'g, Entry<K, V>> {
        let (g, i) = split(slot);
        let s = &self.groups[g].slots[i];
        // A load and a store, not a swap: the lock holder is the only writer of slot pointers,
        // and a swap's lock prefix would wait for every earlier store to complete. Release
        // publishes the new entry (see `PUBLISH`).
        let old = s.load(Ordering::Relaxed, guard);
        s.store(entry, PUBLISH);
        old
    }

    /// Writer only, on a table not yet published: mark `slot` referenced (a rebuild carrying
    /// bits over). Readers mark through [`Hit::touch`].
    pub(crate) fn touch(&self, slot: u32) {
        let (g, i) = split(slot);
        let tags = &self.groups[g].tags;
        if tags.load(Ordering::Relaxed) & ref_bit(i) == 0 {
            tags.fetch_or(ref_bit(i), Ordering::Relaxed);
        }
    }

    /// Whether `slot` is marked referenced (writer: carrying bits over in a rebuild).
    pub(crate) fn is_referenced(&self, slot: u32) -> bool {
        let (g, i) = split(slot);
        self.groups[g].tags.load(Ordering::Relaxed) & ref_bit(i) != 0
    }

    /// Writer only: test and clear `slot`'s reference bit (the CLOCK hand).
    #[inline]
    pub(crate) fn take_referenced(&self, slot: u32) -> bool {
        let (g, i) = split(slot);
        let tags = &self.groups[g].tags;
        // A load first: most bits the hand meets are clear, and a load writes nothing.
        tags.load(Ordering::Relaxed) & ref_bit(i) != 0
            && tags.fetch_and(!ref_bit(i), Ordering::Relaxed) & ref_bit(i) != 0
    }

    /// Writer only: remove the entry at `slot`; returns the old pointer (to retire) and whether
    /// a tombstone was left (`false`: the slot went back to `EMPTY`).
    pub(crate) fn clear<'g>(&self, slot: u32, guard: &'g Guard) -> (Shared<'g, Entry<K, V>>, bool) {
        let (g, i) = split(slot);
        let group = &self.groups[g];
        // A load and a store, not a swap (see `replace`).
        let old = group.slots[i].load(Ordering::Relaxed, guard);
        group.slots[i].store(Shared::null(), Ordering::Release);
        // Relaxed: the lock holder is the only writer of tag bytes.
        let tags = group.tags.load(Ordering::Relaxed);
        let mark = if has_empty(tags) { EMPTY } else { DELETED };
        group.tags.fetch_xor(
            u64::from(get_byte(tags, i) ^ mark) << (i * 8),
            Ordering::Release,
        );
        (old, mark == DELETED)
    }

    /// Every entry with its slot (writer: rebuild and clear; readers: weakly consistent
    /// iteration).
    pub(crate) fn entries<'g>(
        &'g self,
        guard: &'g Guard,
    ) -> impl Iterator<Item = (u32, EntryRef<'g, K, V>)> + 'g {
        self.groups.iter().enumerate().flat_map(move |(g, group)| {
            group.slots.iter().enumerate().filter_map(move |(i, s)| {
                let p = s.load(Ordering::Acquire, guard);
                // SAFETY: as in `find`: loaded under `guard`, retired only through the epoch.
                unsafe { entry_ref(p) }.map(|e| (slot_index(g, i), e))
            })
        })
    }

    /// Writer only, on a table not yet published: place an existing entry pointer (rebuild).
    pub(crate) fn place(
        &self,
        hash: u64,
        tag: u8,
        entry: Shared<'_, Entry<K, V>>,
        guard: &Guard,
    ) -> u32 {
        match self.probe(hash, tag, |_| false, guard) {
            Some(Probe::Vacant(slot)) => {
                self.publish(slot, tag, entry);
                slot
            }
            _ => unreachable!("a rebuilt table is sized to hold every live entry"),
        }
    }
}

/// A successful lookup: the entry, and its slot's reference bit in the group's tag word.
pub(crate) struct Hit<'g, K, V> {
    pub(crate) entry: EntryRef<'g, K, V>,
    tags: &'g AtomicU64,
    /// The tag word as the lookup loaded it.
    seen: u64,
    bit: u64,
}

impl<K, V> Hit<'_, K, V> {
    /// Mark the slot referenced. Test before set (on the word the lookup already loaded): a
    /// hot group's line is not written on every hit. A reader racing with the slot's reuse
    /// may mark the next occupant: a spurious second chance, harmless for a hint. A stale
    /// `seen` only skips a set the hand has just cleared, which costs one second chance.
    #[inline]
    pub(crate) fn touch(&self) {
        if self.seen & self.bit == 0 {
            self.tags.fetch_or(self.bit, Ordering::Relaxed);
        }
    }
}

/// A slot's number: its group times 8 plus its place in the group (one way of each 8 unused).
/// Not `g * GROUP_WIDTH + i`: the policy's hands split a slot number for every page they
/// pass, and a division by 7 cost more than the rest of the split.
#[inline]
fn slot_index(g: usize, i: usize) -> u32 {
    ((g << SLOT_SHIFT) | i) as u32
}

#[inline]
fn split(slot: u32) -> (usize, usize) {
    let s = slot as usize;
    (s >> SLOT_SHIFT, s & ((1 << SLOT_SHIFT) - 1))
}

/// Bits of a slot number that say where in its group the slot is.
const SLOT_SHIFT: u32 = 3;
const _: () = assert!(GROUP_WIDTH < 1 << SLOT_SHIFT);
// `probe` finds free slots by a clear high bit.
const _: () = assert!(EMPTY & 0x80 == 0 && DELETED & 0x80 == 0);

/// The table a shard publishes, and the operations on the pointer to it.
pub(crate) struct TablePtr<K, V> {
    ptr: Atomic<Table<K, V>>,
}

impl<K, V> TablePtr<K, V> {
    pub(crate) fn new(table: Table<K, V>) -> Self {
        TablePtr {
            ptr: Atomic::new(table),
        }
    }

    /// The current table. Acquire pairs with the Release in `swap_in`, so a reader sees every
    /// slot the rebuild wrote before publishing.
    #[inline]
    pub(crate) fn load<'g>(&self, guard: &'g Guard) -> &'g Table<K, V> {
        let p = self.ptr.load(Ordering::Acquire, guard);
        // SAFETY: the pointer is never null (set at construction, only ever swapped for
        // another table) and old tables are retired through the epoch, so it is valid while
        // `guard` lives.
        unsafe { p.deref() }
    }

    /// Writer only: publish `table` and retire the previous one (not its entries, which the
    /// new table now holds).
    pub(crate) fn swap_in(&self, table: Table<K, V>, guard: &Guard) {
        let old = self.ptr.swap(Owned::new(table), Ordering::AcqRel, guard);
        // SAFETY: `old` is now unreachable from the shard (new readers load the new table),
        // came from an `Owned`, and is retired exactly once, here. `Table` has no destructor
        // for entries, so retiring it frees only the groups.
        unsafe { reclaim::defer_destroy(guard, old) };
    }

    /// Writer only: retire an entry that was unlinked from the current table, through the
    /// shard's pool, which hands the epoch a batch at a time (see [`Pool`]).
    ///
    /// Kept here so every `unsafe` about entry lifetimes lives in this file.
    pub(crate) fn retire(
        &self,
        entry: Shared<'_, Entry<K, V>>,
        pool: &mut Pool<K, V>,
        guard: &Guard,
    ) {
        // SAFETY: a table's pointers come from `new_entry`, which tags the layout.
        let Some(e) = (unsafe { entry_ptr(entry) }) else {
            return;
        };
        if let Some(batch) = pool.retire(e) {
            // Deferring later than the unlink is as safe as deferring at it: the readers that
            // could have loaded an entry were pinned then, and are still pinned now (so the
            // epoch waits for them) or gone.
            // SAFETY: each entry was unlinked by the lock holder before it was retired, and is
            // retired once; readers that saw it are pinned (above). Dropping the batch drops
            // the entries.
            unsafe { guard.defer_unchecked(move || drop(batch)) };
        }
    }
}

impl<K, V> Drop for TablePtr<K, V> {
    fn drop(&mut self) {
        // SAFETY: `drop` has exclusive access: the shard is being dropped with its cache, so
        // no reader or writer can reach this table anymore.
        let guard = unsafe { reclaim::unprotected() };
        let p = self.ptr.swap(Shared::null(), Ordering::Relaxed, guard);
        if p.is_null() {
            return;
        }
        // SAFETY: exclusive access (above); the pointer came from an `Owned`.
        let table = unsafe { p.into_owned() };
        for group in table.groups.iter() {
            for s in group.slots.iter() {
                // A load, not a swap: a group never written stays uncommitted memory.
                let e = s.load(Ordering::Relaxed, guard);
                if !e.is_null() {
                    // SAFETY: each live entry is referenced by exactly one slot of the current
                    // table (old tables were retired without their entries), so it is freed
                    // exactly once; no one else can reach it.
                    unsafe { free_shared(e) };
                }
            }
        }
    }
}

/// The tag bit of a slot's pointer: the entry has the timed layout (see `entry.rs`).
const TIMED_TAG: usize = 1;

/// A table pointer as an [`EntryPtr`] (`None` for null).
///
/// # Safety
/// `p` is null or came from [`new_entry`] (possibly moved between tables, tag and all).
#[inline]
unsafe fn entry_ptr<K, V>(p: Shared<'_, Entry<K, V>>) -> Option<EntryPtr<K, V>> {
    // SAFETY: `new_entry` stored the layout bit as the tag (the caller's contract).
    unsafe { EntryPtr::from_raw(p.as_raw(), p.tag() & TIMED_TAG != 0) }
}

/// An entry pointer loaded from a table, as an [`EntryRef`] (`None` for null).
///
/// # Safety
/// `p` was loaded under an epoch guard living for `'g` from a table reachable through it;
/// entries leave tables only through the epoch (`TablePtr::retire`), so it stays allocated
/// for `'g`.
#[inline]
unsafe fn entry_ref<K, V>(p: Shared<'_, Entry<K, V>>) -> Option<EntryRef<'_, K, V>> {
    // SAFETY: every pointer a table holds came from `new_entry`, and stays allocated for
    // `'g` (the caller's contract).
    unsafe { entry_ptr(p).map(|e| EntryRef::new(e)) }
}

/// Free an entry a table held.
///
/// # Safety
/// `e` is unreachable by anyone else, and came from [`new_entry`].
unsafe fn free_shared<K, V>(e: Shared<'_, Entry<K, V>>) {
    // SAFETY: the caller's contract.
    if let Some(p) = unsafe { entry_ptr(e) } {
        // SAFETY: the caller's contract: live, unreachable, freed once.
        unsafe { p.free() };
    }
}

/// Hint the CPU to bring the line at `addr` into the cache. `addr` need not be valid.
#[inline]
pub(crate) fn prefetch(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: a prefetch is only a hint: it reads nothing and cannot fault, whatever the
        // address. SSE, the feature it needs, is part of the x86_64 baseline.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(addr as *const i8) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

/// A new entry, as a pointer a table can hold, its layout in the tag. The table becomes its
/// owner (it leaves through `TablePtr::retire`).
pub(crate) fn new_entry<K, V>(e: EntryPtr<K, V>, _guard: &Guard) -> Shared<'_, Entry<K, V>> {
    let (raw, timed) = e.into_raw();
    // Entries are at least 4-aligned (the token is a `u32`), so bit 0 is free for the tag.
    Shared::from(raw).with_tag(if timed { TIMED_TAG } else { 0 })
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// `empty_groups` hands out zeroed memory as empty groups: that is sound only while an
    /// empty group's bytes are all zero (crossbeam's null `Atomic` included).
    #[test]
    fn an_empty_group_is_all_zero_bytes() {
        let g = Group::<u64, String>::new();
        // SAFETY: reading the bytes of a live value as plain bytes (no padding in a group:
        // a u64 and seven pointer-sized atomics).
        let bytes: [u8; std::mem::size_of::<Group<u64, String>>()] =
            unsafe { std::mem::transmute_copy(&g) };
        assert!(bytes.iter().all(|b| *b == 0));
        let t = Table::<u64, String>::try_with_slots(100).unwrap();
        assert_eq!(t.slots(), 105);
    }

    #[test]
    fn home_addr_names_the_home_group() {
        for slots in [1, 8, 100, 4096] {
            let t: Table<u64, u64> = Table::with_slots(slots);
            for k in 0..1_000u64 {
                let hash = k.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                let want = &t.groups[t.home(hash)] as *const Group<u64, u64> as usize;
                assert_eq!(Table::<u64, u64>::home_addr(t.groups_hint(), hash), want);
            }
        }
    }

    #[test]
    fn swar_matches() {
        let w = set_byte(set_byte(EMPTY_WORD, 0, 0x85), 3, 0x85);
        let m = match_byte(w, 0x85);
        assert_ne!(m & 0x80, 0);
        assert_ne!(m & (0x80 << 24), 0);
        assert!(has_empty(w));
        let mut full = EMPTY_WORD;
        for i in 0..GROUP_WIDTH {
            full = set_byte(full, i, if i % 2 == 0 { DELETED } else { 0x90 });
        }
        assert!(!has_empty(full), "tombstones and tags are not empty");
        // Reference bits never look like a tag or an empty slot.
        let all_refs = full | (0xffu64 << REF_SHIFT);
        assert!(!has_empty(all_refs));
        assert_eq!(match_byte(all_refs, 0xff) & (0xffu64 << REF_SHIFT), 0);
        assert_eq!(match_byte(EMPTY_WORD, EMPTY) & (0xffu64 << REF_SHIFT), 0);
    }

    #[test]
    fn home_groups_cover_any_count_and_spread_weak_hashes() {
        for groups in [1usize, 3, 5, 15, 1000] {
            let t: Table<u64, u64> = Table::with_slots(groups * GROUP_WIDTH);
            assert_eq!(t.groups.len(), groups);
            let mut hit = vec![0usize; groups];
            // Consecutive integers, as an identity hasher would give them.
            for h in 0..(64 * groups) as u64 {
                hit[t.home(h)] += 1;
            }
            assert!(hit.iter().all(|&c| c > 0), "every group is someone's home");
            assert!(
                hit.iter().all(|&c| c <= 2 * 64),
                "consecutive hashes spread: {hit:?}"
            );
        }
    }

    #[test]
    fn probes_visit_every_group() {
        let reclaimer = crate::reclaim::Reclaimer::new();
        let guard = reclaimer.pin();
        let t: Table<u64, u64> = Table::with_slots(3 * GROUP_WIDTH);
        let mut pool = Pool::for_entries(3 * GROUP_WIDTH);
        let mut owned = Vec::new();
        // One hash for every key: each insert lands further along the same probe path.
        for k in 0..(3 * GROUP_WIDTH - 1) as u64 {
            let e = new_entry(pool.alloc(k, k, 0, 1, crate::entry::Expiry::NEVER), &guard);
            t.place(7, hash_tag(7), e, &guard);
            owned.push(e);
        }
        assert!(matches!(
            t.probe(7, hash_tag(7), |_| false, &guard),
            Some(Probe::Vacant(_))
        ));
        for k in 0..(3 * GROUP_WIDTH - 1) as u64 {
            assert!(t.find(7, hash_tag(7), |x| *x == k, &guard).is_some());
        }
        for e in owned {
            // SAFETY: test-only: the entries were never shared beyond this thread, and the
            // table (which does not free entries) is not used after this loop.
            unsafe { free_shared(e) };
        }
    }

    fn hash_tag(h: u64) -> u8 {
        crate::hash::tag(h)
    }

    #[test]
    fn sizes() {
        let t: Table<u64, u64> = Table::with_slots(100);
        assert_eq!(
            t.slots(),
            15 * GROUP_WIDTH,
            "whole groups, not a power of two"
        );
        assert_eq!(std::mem::size_of::<Group<u64, u64>>(), 64);
    }
}
