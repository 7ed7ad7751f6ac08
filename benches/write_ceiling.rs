//! The write ceiling of cogwheel's entry layout: a measurement for design decisions, not a
//! product path.
//!
//! DESIGN §3.1 fixes the layout: per shard, tag bytes + `Atomic<Entry>` pointers; an insert
//! allocates a whole new entry and swaps its pointer in under the shard's writer lock, the old
//! one freed through the epoch; `get` pins, probes, loads the entry and copies the value out,
//! lock-free. This bench measures the cheapest cache keeping that contract, side by side with
//! quick_cache and cogwheel, on the throughput bench's write workloads (95/5 and 50/50 over
//! Zipf 0.99, uniform churn; a get that misses is followed by an insert).
//!
//! `Toy` keeps the contract and is otherwise as cheap as we could make it: 4 × cores padded
//! shards; a set-associative table instead of open addressing (a set is one 64-byte line: a
//! tag word of 7 tag bytes and 7 reference bits, and 7 entry pointers; no tombstones, no
//! probe chains); an entry of just key and value; CLOCK within the set, the sweep starting at
//! a per-shard rotating way (a full shard whose target set is empty takes the entry from the
//! nearest non-empty set, so `capacity` is exact); the process-wide epoch collector. Left
//! out: ghosts and CLOCK-Pro (one shard-wide hand), stats counters, expiry, the listener,
//! weights, write-behind, single-flight, a per-cache collector, generic keys. Per-set
//! eviction is another policy with another hit ratio: the miss ratio column shows it.
//!
//! Sizing: a shard of capacity `c` has `ceil(c / 6)` sets (not a power of two), so at capacity
//! about 6 of a set's 7 ways are used; the set is picked by multiply-shift on hash bits 0..32
//! (the shard takes bits 32.., the tag bits 56..64). The header of each table prints the
//! sizing and the fraction of ways that capacity fills. `Toy (CLOCK-Pro)` is sized apart
//! (below).
//!
//! The Toy comes twice, differing only in entry memory:
//! - `Toy (Box)`: each insert `Box`es its entry (malloc); each unlinked entry is one deferred
//!   free on the epoch (a free on a cold chunk).
//! - `Toy (recycled)`, like the engine: a shard's writer collects the entries it unlinks and
//!   hands them to the epoch as one deferred call per batch of 64; when the epoch runs it (no
//!   reader can reach them any more), the batch's memory goes onto that shard's shelf (its own
//!   small mutex, never the writer's: the call may run on any thread, also on a writer that
//!   holds its writer lock while it pins), bounded at 64 batches (the excess is freed). Inserts
//!   write new entries into a writer-local stash of that memory (refilled by taking the whole
//!   shelf when empty; `Box::new` only when there is none), and an insert starts by
//!   prefetching the stash memory it will write, so that cold line's fetch overlaps the probe.
//!   Below its table the bench prints how many of the timed inserts still allocated.
//!
//! `Toy (CLOCK-Pro)`: `Toy (recycled)`'s sets, entries and entry recycling, with the eviction
//! DESIGN §3.2 asks for instead of CLOCK within the set: one CLOCK-Pro per shard (Jiang, Chen
//! and Zhang, 2005), written lean for this bench after `src/policy/clock_pro.rs`, run by the
//! shard's writer under its lock. Per shard: an array of 16-byte nodes (two `u32` ring links,
//! the key hash's low 32 bits, and a word holding hot / cold / ghost, the test-period flag and
//! a resident's set and way) with a free chain; one circular ring with HAND_hot, HAND_cold and
//! HAND_test; a ghost index (hash → node, linear probing at most half full, removal by
//! backward shift); and the node of each way (`u32` per way), read only when a set is full.
//! The reference bits stay in the table: readers set them in the tag word as in the other
//! toys, and the hands read and clear them through the node's set and way. A key that is not
//! resident is admitted as follows. HAND_cold evicts until the shard is below capacity: an
//! unreferenced cold page, or one outside its test period, leaves the table (staying on the
//! ring as a ghost, hash only, if it was in its test period); a referenced cold page in its
//! test period turns hot instead (cold target `m_c` + 1). The key is then linked at the head:
//! hot if it is a ghost (`m_c` + 1) or while the hot share first fills, otherwise cold in its
//! test period. Whenever hot pages exceed `capacity − m_c`, HAND_hot demotes: a referenced hot
//! page loses its bit and moves to the head, the first unreferenced one turns cold (outside
//! any test period) and moves to the head; HAND_hot pushes HAND_test along when it reaches it.
//! HAND_test ends the test periods of the cold pages it passes and drops the ghosts it meets
//! (`m_c` − 1); it also runs whenever the ghosts outnumber the shard's capacity. `m_c` starts
//! at and stays within 1 % .. 99 % of the shard's capacity (at least 2). The writer prefetches
//! the new key's ghost-index slot when it takes the lock, and after an admission what the
//! next one touches first (under HAND_cold: the page's set line, its ghost-index slot and its
//! newer neighbour; the page under HAND_test).
//! Left out, against the engine's policy: the reference simulator's credit scheme and its
//! quirks (here `m_c` simply moves by one and HAND_hot runs while hot pages exceed
//! `capacity − m_c`; only a ghost's test period ending unused lowers `m_c`, as in the
//! simulator; a cold page outside its test period is evicted even if referenced, as in the
//! simulator), the policy-side reference bit, weights, pinned (dirty) pages, zero-weight
//! pages, the ghost multiplier, a sequential mode. Its misses are near cogwheel's, not equal.
//! The table no longer evicts by itself, and a shard-wide policy empties ways in random sets,
//! so a set's occupancy is about Poisson: when the new key's set is still full after the
//! policy made room, the way is taken whose page is cold and unreferenced, else cold, else
//! hot and unreferenced, else any, and that page leaves the policy (as a ghost if cold in its
//! test period); the shard then holds one fewer than its capacity until its next admission.
//! At the other toys' sizing (one set per 6 entries) that happened on about 30 % of
//! admissions, a hybrid with per-set eviction; so this toy has one set per 3 entries
//! (`PRO_FILL`; capacity fills about 43 % of the ways, twice the sets), where it happens on
//! about 1 %, and the header prints how often it happened in the timed runs (in `read` the
//! shards stay below capacity, so the only admissions are of keys whose full set dropped them
//! during the fill, and each finds its set full again). Before timing, a sanity check checks
//! the ring, the counts, the ghost index and the table against each other, and that hot keys
//! outlive a scan of fresh keys where per-set CLOCK loses them.
//!
//! `InlineToy`: the same sets and CLOCK, key and value inline in the ways (a set is two lines:
//! a sequence word, odd while the writer is inside, the tag word, 7 × 16-byte ways), read
//! under that sequence lock: no epoch, no allocation. Copying values bitwise is sound only for
//! `Copy` values, which the design cannot assume; it shows how much of the gap is the
//! per-entry allocation and the epoch.
//!
//! Method: op streams are generated before timing, one per thread; each contestant is warmed
//! by one pass, then one untimed pass counts misses and checks every hit's value; each round
//! times every contestant for the same passes (at least ~0.3 s for the fastest; threads meet
//! at a barrier, the clock stops when all joined), in an order rotated per round. Printed:
//! median Mops/s, the median per-round ratio to quick_cache, miss ratio, resident entries,
//! and ns per op (what an op costs its thread: 1000 × threads ÷ Mops/s), which shows the
//! per-op cost where miss ratios differ (a miss is a get plus an insert).
//!
//! A read-only workload (`read`: the throughput bench's read group, every key inserted before
//! timing) shows whether the layout also allows the read targets.
//!
//! `cargo bench --bench write_ceiling` (one workload: `-- read`, `-- 95`, `-- 50` or `-- churn`);
//! `THREADS=2 cargo bench --bench write_ceiling`; `ROUNDS=n` (default 5);
//! `COGWHEEL_BENCH_QUICK=1` for a smoke run about 10× smaller.

mod common;

use common::{INSERT, KEY_MASK, Target, Zipf, key_of, run_op, streams};
use crossbeam_epoch::{self as epoch, Atomic, Guard, Shared};
use crossbeam_utils::CachePadded;
use std::hint::black_box;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::*, fence};
use std::sync::{Arc, Barrier, Mutex, PoisonError};
use std::time::Instant;

const WAYS: usize = 7;
/// Sets per shard: one per this many entries of the shard's capacity.
const FILL: usize = 6;
/// The high bit of each of the 7 tag bytes of a tag word; byte 7 holds the reference bits.
const TAG_BYTES: u64 = 0x0080_8080_8080_8080;
const LOW7: u64 = 0x007F_7F7F_7F7F_7F7F;
/// Way `i`'s reference bit is `REF0 << i`.
const REF0: u64 = 1 << 56;
/// Unlinked entries per deferred call.
const BATCH: usize = 64;
/// The most entries a shelf keeps (64 batches); more are freed.
const SHELF_CAP: usize = 64 * BATCH;

/// The high bit of each tag byte that is zero (exact: no borrow crosses bytes).
#[inline(always)]
fn zero_bytes(x: u64) -> u64 {
    !(((x & LOW7) + LOW7) | x) & TAG_BYTES
}

#[inline(always)]
fn way(bits: u64) -> usize {
    (bits.trailing_zeros() / 8) as usize
}

/// The first way whose tag is `tag` and for which `hit` holds.
#[inline(always)]
fn find_in(word: u64, tag: u8, mut hit: impl FnMut(usize) -> bool) -> Option<usize> {
    let mut m = zero_bytes(word ^ (u64::from(tag) * 0x0001_0101_0101_0101));
    while m != 0 {
        if hit(way(m)) {
            return Some(way(m));
        }
        m &= m - 1;
    }
    None
}

/// A read sets the reference bit only when it is clear, so hot sets are not written per hit.
#[inline(always)]
fn touch(tags: &AtomicU64, word: u64, i: usize) {
    if word & (REF0 << i) == 0 {
        tags.fetch_or(REF0 << i, Relaxed);
    }
}

/// `word` with way `i` holding `tag` (0: empty) and its reference bit clear.
fn with_tag(word: u64, i: usize, tag: u8) -> u64 {
    (word & !(0xFF << (8 * i)) & !(REF0 << i)) | (u64::from(tag) << (8 * i))
}

/// CLOCK within a set from way `start`: referenced ways lose their bit, the first unreferenced
/// occupied way is the victim (within two sweeps, as the set is not empty). Returns it and
/// the word with the bits cleared on the way.
#[inline]
fn clock(mut word: u64, start: usize) -> (usize, u64) {
    let occupied = TAG_BYTES & !zero_bytes(word);
    let mut i = start;
    loop {
        if occupied & (0x80 << (8 * i)) != 0 {
            if word & (REF0 << i) == 0 {
                return (i, word);
            }
            word &= !(REF0 << i);
        }
        i = if i + 1 == WAYS { 0 } else { i + 1 };
    }
}

/// One set of either toy. Only the holder of the shard's writer lock calls `find` and `put`,
/// and only it writes tag bytes; readers only set reference bits.
trait Set: Default + Sync {
    /// What a writer holds while it touches the set.
    type Pin;
    /// The shard's entry memory on the writer's side (kept in its writer state).
    type Mem: Default + Send;
    fn pin() -> Self::Pin;
    /// Called first thing in an insert, under the writer lock.
    fn prepare(_: &Self::Mem) {}
    /// Entries allocated fresh so far (not written into reused memory).
    fn fresh(_: &Self::Mem) -> u64 {
        0
    }
    fn tags(&self) -> &AtomicU64;
    fn get(&self, tag: u8, k: u64) -> Option<u64>;
    fn find(&self, word: u64, tag: u8, k: u64, pin: &Self::Pin) -> Option<usize>;
    /// Way `i` holds `kv` from now on (`None`: nothing), and the set's tag word is `word` if
    /// given.
    fn put(
        &self,
        i: usize,
        kv: Option<(u64, u64)>,
        word: Option<u64>,
        pin: &Self::Pin,
        mem: &mut Self::Mem,
    );
}

/// Immutable while reachable from a way; `Box`-allocated (recycled memory too).
struct Entry {
    key: u64,
    value: u64,
}

/// Start fetching `p`'s line (only a hint).
#[inline(always)]
fn prefetch<T>(p: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: a prefetch is a hint: it reads nothing and cannot fault. SSE, the feature
        // it needs, is part of the x86_64 baseline.
        unsafe { _mm_prefetch::<_MM_HINT_T0>((p as *const T).cast::<i8>()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// A table's sizing, and the fraction of all its ways that `capacity` entries fill.
fn sizing(shards: usize, nsets: usize, capacity: u64) -> String {
    let ways = shards * nsets * WAYS;
    format!(
        "{shards} shards × {nsets} sets × {WAYS} ways; capacity fills {:.1} % of the ways",
        100.0 * capacity as f64 / ways as f64
    )
}

/// Where a shard's writer gets entry memory, and where the entries it unlinks go.
trait Recycler: Default + Send {
    /// Start fetching the memory the next `alloc` writes (only a hint).
    fn prepare(&self) {}
    /// A new entry, owned by the caller until it publishes it.
    fn alloc(&mut self, e: Entry) -> *mut Entry;
    /// Retire an entry the writer just unpublished.
    ///
    /// # Safety
    /// `p` came from `alloc` of this recycler, was published in a way, and the caller (the
    /// shard's writer, pinned by `guard`) has just replaced it there: no way holds it any
    /// more, and it is retired once.
    unsafe fn retire(&mut self, p: *mut Entry, guard: &Guard);
    fn fresh(&self) -> u64;
}

/// A malloc per insert and an epoch-deferred free per unlinked entry.
#[derive(Default)]
struct Boxed {
    fresh: u64,
}

impl Recycler for Boxed {
    fn alloc(&mut self, e: Entry) -> *mut Entry {
        self.fresh += 1;
        Box::into_raw(Box::new(e))
    }

    unsafe fn retire(&mut self, p: *mut Entry, guard: &Guard) {
        // SAFETY: `p` is a `Box` (from `alloc`) that no way holds any more and that is
        // retired once (the caller's contract); readers that may still hold it are pinned,
        // which delays the free.
        unsafe { guard.defer_destroy(Shared::from(p.cast_const())) };
    }

    fn fresh(&self) -> u64 {
        self.fresh
    }
}

/// Owned entry pointers: either unlinked but possibly still read (a writer's `retired`), or
/// memory that no reader can reach any more (a shelf, a stash). Every pointer is in exactly
/// one place (published in a way, retired, in flight in the epoch, on a shelf, in a stash),
/// and it is a `Box<Entry>` allocation.
#[derive(Default)]
struct Batch(Vec<*mut Entry>);

// SAFETY: a batch owns the `Box<Entry>` allocations it points to (no way or other batch
// points to them), and an `Entry` is two integers: sending the batch sends plain owned memory.
unsafe impl Send for Batch {}

impl Batch {
    /// Free everything in it.
    ///
    /// # Safety
    /// No reader can still hold any of its pointers.
    unsafe fn free(&mut self) {
        for p in self.0.drain(..) {
            // SAFETY: a `Box` owned by this batch alone (see `Batch`), unreachable by readers
            // (the caller's contract).
            drop(unsafe { Box::from_raw(p) });
        }
    }
}

/// A shard's reusable entry memory. Only `put` adds to it, and only the epoch calls `put`
/// (a deferred call from `Recycled::retire`), after every thread that was pinned when the
/// batch was handed over has unpinned: so nothing here is reachable by a reader.
/// Its own mutex, held for a push or a swap only: no one pins while holding it, so a deferred
/// call running inside someone's `pin` never waits on its own thread.
#[derive(Default)]
struct Shelf {
    free: Mutex<Batch>,
    /// How many pointers `free` holds, written under the lock: lets a writer skip the lock
    /// while the shelf is empty.
    len: AtomicUsize,
}

impl Shelf {
    /// Shelve `batch` (the excess is freed).
    ///
    /// # Safety
    /// No reader can reach any entry of `batch` any more.
    unsafe fn put(&self, mut batch: Batch) {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        let keep = batch.0.len().min(SHELF_CAP.saturating_sub(free.0.len()));
        free.0.extend(batch.0.drain(..keep));
        self.len.store(free.0.len(), Relaxed);
        drop(free);
        // SAFETY: the caller's contract.
        unsafe { batch.free() };
    }

    /// Swap the whole shelf into `into` (empty).
    fn take_all(&self, into: &mut Batch) {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::swap(&mut *free, into);
        self.len.store(0, Relaxed);
    }
}

impl Drop for Shelf {
    fn drop(&mut self) {
        let free = self.free.get_mut().unwrap_or_else(PoisonError::into_inner);
        // SAFETY: shelved memory is unreachable by readers (see `Shelf`).
        unsafe { free.free() };
    }
}

/// Entry memory recycled per shard, as the engine does (see the module docs).
struct Recycled {
    /// Unlinked by this writer, not handed to the epoch yet (fewer than `BATCH`).
    retired: Batch,
    /// Taken from the shelf: the next inserts write into these, last first.
    stash: Batch,
    shelf: Arc<Shelf>,
    fresh: u64,
}

impl Default for Recycled {
    fn default() -> Self {
        Recycled {
            retired: Batch(Vec::with_capacity(BATCH)),
            stash: Batch::default(),
            shelf: Arc::default(),
            fresh: 0,
        }
    }
}

impl Recycler for Recycled {
    #[inline(always)]
    fn prepare(&self) {
        #[cfg(target_arch = "x86_64")]
        if let Some(&p) = self.stash.0.last() {
            use std::arch::x86_64::{_MM_HINT_ET0, _mm_prefetch};
            // SAFETY: a prefetch is a hint: it reads nothing and cannot fault. SSE, the
            // feature it needs, is part of the x86_64 baseline.
            unsafe { _mm_prefetch::<_MM_HINT_ET0>(p.cast_const().cast::<i8>()) };
        }
    }

    #[inline]
    fn alloc(&mut self, e: Entry) -> *mut Entry {
        if self.stash.0.is_empty() && self.shelf.len.load(Relaxed) != 0 {
            self.shelf.take_all(&mut self.stash);
        }
        if let Some(p) = self.stash.0.pop() {
            // Stash memory came off the shelf, past its grace period (see `Shelf`): no reader
            // sees it until the Release store that publishes it again; popped, it is this
            // writer's alone. SAFETY: a valid `Box<Entry>` allocation; `Entry` has no drop.
            unsafe { p.write(e) };
            p
        } else {
            self.fresh += 1;
            Box::into_raw(Box::new(e))
        }
    }

    unsafe fn retire(&mut self, p: *mut Entry, guard: &Guard) {
        self.retired.0.push(p);
        if self.retired.0.len() == BATCH {
            let batch = std::mem::replace(&mut self.retired, Batch(Vec::with_capacity(BATCH)));
            let shelf = Arc::clone(&self.shelf);
            guard.defer(move || {
                // The epoch runs this once every thread pinned now has unpinned, and the
                // batch's entries were unpublished before now (the caller's contract). SAFETY:
                // readers reach entries only through ways, under a guard: none holds these.
                unsafe { shelf.put(batch) }
            });
        }
    }

    fn fresh(&self) -> u64 {
        self.fresh
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        // The shard is being dropped, so the toy is: no reader is left. Batches still in the
        // epoch hold the shelf (an `Arc`) and land there, or are freed with it.
        // SAFETY: no reader is left; the stash was unreachable anyway.
        unsafe {
            self.retired.free();
            self.stash.free();
        }
    }
}

/// The layout contract: tags + entry pointers, one 64-byte line per set; entry memory from `R`.
#[derive(Default)]
#[repr(C, align(64))]
struct EpochSet<R> {
    tags: AtomicU64,
    ways: [Atomic<Entry>; WAYS],
    recycler: PhantomData<fn() -> R>,
}

impl<R: Recycler> Set for EpochSet<R> {
    type Pin = Guard;
    type Mem = R;
    fn pin() -> Guard {
        epoch::pin()
    }
    #[inline(always)]
    fn prepare(mem: &R) {
        mem.prepare();
    }
    fn fresh(mem: &R) -> u64 {
        mem.fresh()
    }
    fn tags(&self) -> &AtomicU64 {
        &self.tags
    }

    #[inline(always)]
    fn get(&self, tag: u8, k: u64) -> Option<u64> {
        let guard = epoch::pin();
        let word = self.tags.load(Acquire);
        let mut value = 0;
        let hit = find_in(word, tag, |i| {
            // Entries are retired after they are unpublished, and reused or freed only once
            // every thread pinned then has unpinned. SAFETY: loaded under `guard`, so intact
            // while it lives; the Acquire load pairs with the publishing Release store.
            let e = unsafe { self.ways[i].load(Acquire, &guard).as_ref() };
            e.is_some_and(|e| {
                value = e.value;
                e.key == k
            })
        })?;
        touch(&self.tags, word, hit);
        Some(value)
    }

    fn find(&self, word: u64, tag: u8, k: u64, guard: &Guard) -> Option<usize> {
        find_in(word, tag, |i| {
            // SAFETY: as in `get`; besides, only this lock holder could unpublish it.
            unsafe { self.ways[i].load(Relaxed, guard).as_ref() }.is_some_and(|e| e.key == k)
        })
    }

    fn put(&self, i: usize, kv: Option<(u64, u64)>, word: Option<u64>, guard: &Guard, mem: &mut R) {
        let old = self.ways[i].load(Relaxed, guard);
        let new = kv.map_or(Shared::null(), |(key, value)| {
            Shared::from(mem.alloc(Entry { key, value }).cast_const())
        });
        // Pointer first, then tag: a reader that sees the new tag sees the new entry; one that
        // pairs a stale tag with either pointer compares the key (or finds null) and misses.
        // Release: a reader that loads the pointer sees the entry's fields written.
        self.ways[i].store(new, Release);
        if let Some(w) = word {
            self.tags.store(w, Release);
        }
        if !old.is_null() {
            // SAFETY: `old` came from `mem.alloc` (this shard's only allocator), was
            // published, and was unpublished just above by the only writer, pinned by
            // `guard`; so it is retired once.
            unsafe { mem.retire(old.as_raw().cast_mut(), guard) };
        }
    }
}

impl<R> Drop for EpochSet<R> {
    fn drop(&mut self) {
        for w in &mut self.ways {
            // SAFETY: `&mut self`: no reader is left, and a published entry is owned by its
            // way alone (replaced ones were retired when unpublished); it is a `Box`.
            drop(unsafe { std::mem::take(w).try_into_owned() });
        }
    }
}

/// The same set with key and value inline: a sequence word (odd while the writer is
/// inside), the tag word and 7 ways of key + value, on two lines.
#[derive(Default)]
#[repr(C, align(128))]
struct InlineSet {
    seq: AtomicU64,
    tags: AtomicU64,
    ways: [[AtomicU64; 2]; WAYS],
}

const _: () = assert!(size_of::<EpochSet<Recycled>>() == 64 && size_of::<InlineSet>() == 128);

impl InlineSet {
    fn write(&self, f: impl FnOnce()) {
        let s = self.seq.load(Relaxed);
        self.seq.store(s + 1, Relaxed);
        fence(Release); // a reader that sees any write below then sees the odd sequence
        f();
        self.seq.store(s + 2, Release);
    }
}

impl Set for InlineSet {
    type Pin = ();
    type Mem = ();
    fn pin() {}
    fn tags(&self) -> &AtomicU64 {
        &self.tags
    }

    #[inline(always)]
    fn get(&self, tag: u8, k: u64) -> Option<u64> {
        loop {
            let seq = self.seq.load(Acquire);
            let word = self.tags.load(Relaxed);
            let hit = find_in(word, tag, |i| self.ways[i][0].load(Relaxed) == k);
            let value = hit.map(|i| self.ways[i][1].load(Relaxed));
            fence(Acquire);
            if seq & 1 == 0 && self.seq.load(Relaxed) == seq {
                if let Some(i) = hit {
                    touch(&self.tags, word, i);
                }
                return value;
            }
            std::hint::spin_loop();
        }
    }

    fn find(&self, word: u64, tag: u8, k: u64, _: &()) -> Option<usize> {
        find_in(word, tag, |i| self.ways[i][0].load(Relaxed) == k)
    }

    fn put(&self, i: usize, kv: Option<(u64, u64)>, word: Option<u64>, _: &(), _: &mut ()) {
        self.write(|| {
            if let Some((k, v)) = kv {
                self.ways[i][0].store(k, Relaxed);
                self.ways[i][1].store(v, Relaxed);
            }
            if let Some(w) = word {
                self.tags.store(w, Relaxed);
            }
        });
    }
}

/// Writer-only state of a shard.
struct Writer<M> {
    len: usize,
    cap: usize,
    /// Where the next CLOCK sweep starts within a set (a per-set hand would not fit the line).
    hand: usize,
    /// Inserts so far (each writes one new entry).
    inserts: u64,
    mem: M,
}

struct Shard<S: Set> {
    sets: Box<[S]>,
    writer: Mutex<Writer<S::Mem>>,
}

struct Sharded<S: Set> {
    shards: Box<[CachePadded<Shard<S>>]>,
    hasher: common::Hasher,
    shard_mask: usize,
    /// Sets per shard.
    nsets: usize,
}

type ToyBox = Sharded<EpochSet<Boxed>>;
type Toy = Sharded<EpochSet<Recycled>>;
type InlineToy = Sharded<InlineSet>;

impl<S: Set> Sharded<S> {
    fn new(capacity: u64) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let shards = (4 * cores).next_power_of_two();
        let capacity = capacity as usize;
        let most = capacity.div_ceil(shards).max(1);
        // About `FILL` of a set's 7 ways used at capacity; the set picked by multiply-shift.
        let nsets = most.div_ceil(FILL);
        // Set: bits 0..32; shard: bits 32..56; tag: bits 56..64.
        assert!(shards <= 1 << 24 && nsets <= 1 << 32);
        Sharded {
            shards: (0..shards)
                .map(|s| {
                    // Spread the remainder, so `capacity` is the exact bound.
                    let cap = capacity / shards + usize::from(s < capacity % shards);
                    CachePadded::new(Shard {
                        sets: (0..nsets).map(|_| S::default()).collect(),
                        writer: Mutex::new(Writer {
                            len: 0,
                            cap,
                            hand: 0,
                            inserts: 0,
                            mem: S::Mem::default(),
                        }),
                    })
                })
                .collect(),
            hasher: common::hasher(),
            shard_mask: shards - 1,
            nsets,
        }
    }

    #[inline(always)]
    fn locate(&self, k: u64) -> (&Shard<S>, usize, u8) {
        let h = self.hasher.hash_one(k);
        let shard = &self.shards[(h >> 32) as usize & self.shard_mask];
        let set = ((u128::from(h << 32) * self.nsets as u128) >> 64) as usize;
        (shard, set, ((h >> 56) as u8).max(1))
    }

    /// The sizing, and the fraction of all ways that `capacity` entries fill.
    fn sizing(&self, capacity: u64) -> String {
        sizing(self.shards.len(), self.nsets, capacity)
    }

    /// Entries allocated fresh, and inserts, so far.
    fn allocs(&self) -> (u64, u64) {
        self.shards.iter().fold((0, 0), |(f, n), s| {
            let w = s.writer.lock().expect("no writer panics");
            (f + S::fresh(&w.mem), n + w.inserts)
        })
    }
}

impl<S: Set> Target for Sharded<S> {
    #[inline]
    fn get(&self, k: u64) -> Option<u64> {
        let (shard, set, tag) = self.locate(k);
        shard.sets[set].get(tag, k)
    }

    #[inline]
    fn insert(&self, k: u64, v: u64) {
        let (shard, idx, tag) = self.locate(k);
        let set = &shard.sets[idx];
        let mut guard = shard.writer.lock().expect("no writer panics");
        let w = &mut *guard;
        S::prepare(&w.mem);
        w.inserts += 1;
        let pin = S::pin();
        // A reference bit set by a reader between this load and the store below is lost;
        // tag bytes are not, as only the lock holder writes them.
        let word = set.tags().load(Relaxed);
        if let Some(i) = set.find(word, tag, k, &pin) {
            set.put(i, Some((k, v)), None, &pin, &mut w.mem);
            return;
        }
        let free = zero_bytes(word);
        let (i, word) = if free != 0 && w.len < w.cap {
            w.len += 1;
            (way(free), word)
        } else if free != TAG_BYTES {
            w.hand = (w.hand + 1) % WAYS;
            clock(word, w.hand)
        } else {
            // Full shard, empty set (rare at this occupancy): the next non-empty set pays.
            let mut j = idx;
            loop {
                j = if j + 1 == self.nsets { 0 } else { j + 1 };
                let other = &shard.sets[j];
                let wj = other.tags().load(Relaxed);
                if zero_bytes(wj) != TAG_BYTES {
                    w.hand = (w.hand + 1) % WAYS;
                    let (vi, wj) = clock(wj, w.hand);
                    other.put(vi, None, Some(with_tag(wj, vi, 0)), &pin, &mut w.mem);
                    break (way(free), word);
                }
            }
        };
        set.put(
            i,
            Some((k, v)),
            Some(with_tag(word, i, tag)),
            &pin,
            &mut w.mem,
        );
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.writer.lock().expect("no writer panics").len)
            .sum()
    }
}

/// A broken toy must not report a fast number.
fn sanity<S: Set>() {
    let cap = 1000;
    let t = Sharded::<S>::new(cap);
    for k in 0..10 * cap {
        t.insert(k, k + 1);
        assert_eq!(t.get(k), Some(k + 1), "a fresh insert is readable");
        assert!(t.len() as u64 <= cap, "capacity is a bound");
    }
    assert!(t.len() as u64 == cap, "a full toy holds its capacity");
    assert!((0..10 * cap).all(|k| t.get(k).is_none_or(|v| v == k + 1)));
    let k = 10 * cap - 1;
    t.insert(k, 7);
    assert_eq!(t.get(k), Some(7), "a replaced key reads the new value");
    race(&t, cap);
    assert!(t.len() as u64 == cap);
}

/// Two threads get and insert over the same 4 × `cap` keys: a reader never sees another key's
/// value (with reused memory too: each inserts ~100 000 entries into a toy of 1000).
fn race<C: Target>(t: &C, cap: u64) {
    std::thread::scope(|s| {
        for seed in 1..=2 {
            s.spawn(move || {
                let mut rng = common::Rng::new(seed);
                for _ in 0..200_000 {
                    let k = rng.below(4 * cap);
                    match t.get(k) {
                        Some(v) => assert_eq!(v, k + 1),
                        None => t.insert(k, k + 1),
                    }
                }
            });
        }
    });
}

/// The recycling toy reuses memory (else it would measure the `Box` path again).
fn sanity_recycles() {
    let t = Toy::new(1000);
    for k in 0..1_000_000 {
        t.insert(k, k);
    }
    let (fresh, inserts) = t.allocs();
    assert!(
        fresh * 10 < inserts,
        "{fresh} of {inserts} inserts allocated"
    );
}

// ----- Toy (CLOCK-Pro) -----------------------------------------------------------------------

/// Sets per shard for `Toy (CLOCK-Pro)`: one per this many entries of the shard's capacity
/// (see the module docs: at `FILL` a full set is too common for a shard-wide policy).
const PRO_FILL: usize = 3;

/// No node.
const NIL: u32 = u32::MAX;
/// A node's state, bits 0..2 of its `meta`.
const FREE: u32 = 0;
const HOT: u32 = 1;
const COLD: u32 = 2;
/// Non-resident cold page in its test period: only its hash is kept.
const GHOST: u32 = 3;
const STATE: u32 = 3;
/// A resident cold page in its test period (ghosts are, by definition).
const IN_TEST: u32 = 4;

/// One page of a shard's CLOCK-Pro ring, 16 bytes; free nodes chain through `newer`.
#[derive(Clone, Copy)]
struct Node {
    /// The neighbour the hands move to (towards the head, then round to the oldest).
    newer: u32,
    older: u32,
    /// The key hash's low 32 bits: what the ghost index compares.
    hash: u32,
    /// State and `IN_TEST` in bits 0..3; for a resident, its way in bits 4..7 and its set
    /// in bits 8..32.
    meta: u32,
}

impl Node {
    #[inline(always)]
    fn state(self) -> u32 {
        self.meta & STATE
    }
    #[inline(always)]
    fn set(self) -> usize {
        (self.meta >> 8) as usize
    }
    #[inline(always)]
    fn way(self) -> usize {
        (self.meta >> 4 & 7) as usize
    }
}

/// A shard's ghosts, hash → node: linear probing in a power-of-two table at most half full,
/// one `u64` per slot (`hash << 32 | node`, `EMPTY` when free). Writer-only, so a removal
/// shifts the rest of its run back instead of leaving a tombstone.
struct GhostIndex {
    slots: Box<[u64]>,
    shift: u32,
}

/// An empty slot (its node part is `NIL`).
const EMPTY: u64 = u64::MAX;

impl GhostIndex {
    fn new(most: usize) -> Self {
        let n = (2 * most).next_power_of_two().max(2);
        assert!(n <= 1 << 32);
        GhostIndex {
            slots: vec![EMPTY; n].into(),
            shift: 32 - n.trailing_zeros(),
        }
    }

    #[inline(always)]
    fn home(&self, hash: u32) -> usize {
        (hash.wrapping_mul(0x9E37_79B1) >> self.shift) as usize
    }

    #[inline]
    fn get(&self, hash: u32) -> Option<u32> {
        let mask = self.slots.len() - 1;
        let mut i = self.home(hash);
        loop {
            let s = self.slots[i];
            if s as u32 == NIL {
                return None;
            }
            if (s >> 32) as u32 == hash {
                return Some(s as u32);
            }
            i = (i + 1) & mask;
        }
    }

    /// Index `node` under `hash`; returns the node the hash named before, if any (two keys
    /// with one hash: the newer history replaces the older).
    fn insert(&mut self, hash: u32, node: u32) -> Option<u32> {
        let mask = self.slots.len() - 1;
        let mut i = self.home(hash);
        let new = u64::from(hash) << 32 | u64::from(node);
        loop {
            let s = self.slots[i];
            if s as u32 == NIL || (s >> 32) as u32 == hash {
                self.slots[i] = new;
                return (s as u32 != NIL).then_some(s as u32);
            }
            i = (i + 1) & mask;
        }
    }

    /// Forget `node` under `hash` (nothing if the hash names another node now).
    fn remove(&mut self, hash: u32, node: u32) {
        let mask = self.slots.len() - 1;
        let key = u64::from(hash) << 32 | u64::from(node);
        let mut i = self.home(hash);
        loop {
            let s = self.slots[i];
            if s == key {
                break;
            }
            if s as u32 == NIL {
                return;
            }
            i = (i + 1) & mask;
        }
        // Move back every later entry of the run whose probe path passes the hole.
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let s = self.slots[j];
            if s as u32 == NIL {
                break;
            }
            let home = self.home((s >> 32) as u32);
            if j.wrapping_sub(home) & mask >= j.wrapping_sub(i) & mask {
                self.slots[i] = s;
                i = j;
            }
        }
        self.slots[i] = EMPTY;
    }
}

/// What the policy reaches of the shard's table while its writer holds the lock.
struct Table<'a> {
    sets: &'a [EpochSet<Recycled>],
    guard: &'a Guard,
    mem: &'a mut Recycled,
}

impl Table<'_> {
    /// Read and clear resident `n`'s reference bit in its set's tag word (an atomic AND, as
    /// readers set other bits of the word concurrently; no write when it is clear).
    #[inline(always)]
    fn take_ref(&self, n: Node) -> bool {
        let tags = &self.sets[n.set()].tags;
        let bit = REF0 << n.way();
        if tags.load(Relaxed) & bit == 0 {
            return false;
        }
        tags.fetch_and(!bit, Relaxed);
        true
    }

    /// Empty resident `n`'s way: its entry unpublished and retired.
    #[inline]
    fn clear(&mut self, n: Node) {
        let (set, i) = (&self.sets[n.set()], n.way());
        let word = set.tags.load(Relaxed);
        set.put(i, None, Some(with_tag(word, i, 0)), self.guard, self.mem);
    }
}

/// A shard's CLOCK-Pro (see the module docs); only the shard's writer touches it.
struct Pro {
    nodes: Box<[Node]>,
    /// Head of the free-node chain.
    free: u32,
    /// The node of each occupied way, at `set * 8 + way` (read only to evict from a full set).
    node_of: Box<[u32]>,
    ghosts: GhostIndex,
    /// The newest page; the oldest is its `newer`.
    head: u32,
    hand_hot: u32,
    /// On a resident cold page, or `NIL` when there is none.
    hand_cold: u32,
    hand_test: u32,
    /// Pages on the ring: residents and ghosts.
    ring: usize,
    len: usize,
    hot: usize,
    cold: usize,
    ghost_count: usize,
    cap: usize,
    ghost_cap: usize,
    /// The adaptive target of resident cold pages, `m_c`: hot pages are demoted while
    /// `hot > cap − cold_target`.
    cold_target: usize,
    min_cold: usize,
    max_cold: usize,
    /// Admissions (keys that were not resident), and those that found their set full after
    /// the policy made room.
    admits: u64,
    forced: u64,
}

impl Pro {
    fn new(cap: usize, nsets: usize) -> Self {
        let cap = cap.max(1);
        let ghost_cap = cap;
        // Residents ≤ cap, ghosts ≤ ghost_cap + 1 for a moment.
        let n = cap + ghost_cap + 2;
        assert!(n < NIL as usize && nsets < 1 << 24);
        let min_cold = (cap / 100).max(2);
        Pro {
            nodes: (0..n)
                .map(|i| Node {
                    newer: if i + 1 < n { i as u32 + 1 } else { NIL },
                    older: NIL,
                    hash: 0,
                    meta: FREE,
                })
                .collect(),
            free: 0,
            node_of: vec![NIL; nsets * 8].into(),
            ghosts: GhostIndex::new(ghost_cap + 1),
            head: NIL,
            hand_hot: NIL,
            hand_cold: NIL,
            hand_test: NIL,
            ring: 0,
            len: 0,
            hot: 0,
            cold: 0,
            ghost_count: 0,
            cap,
            ghost_cap,
            cold_target: min_cold,
            min_cold,
            max_cold: (cap * 99 / 100).max(2),
            admits: 0,
            forced: 0,
        }
    }

    #[inline(always)]
    fn node(&self, t: u32) -> Node {
        self.nodes[t as usize]
    }

    #[inline]
    fn alloc(&mut self) -> u32 {
        let t = self.free;
        self.free = self.node(t).newer;
        t
    }

    #[inline]
    fn release(&mut self, t: u32) {
        self.nodes[t as usize] = Node {
            newer: self.free,
            older: NIL,
            hash: 0,
            meta: FREE,
        };
        self.free = t;
    }

    /// Link `t` as the newest page. Puts HAND_cold on it if it is the only cold page.
    #[inline]
    fn link_head(&mut self, t: u32) {
        if self.head == NIL {
            let n = &mut self.nodes[t as usize];
            n.newer = t;
            n.older = t;
            self.hand_hot = t;
            self.hand_test = t;
        } else {
            let head = self.head;
            let oldest = self.node(head).newer;
            let n = &mut self.nodes[t as usize];
            n.older = head;
            n.newer = oldest;
            self.nodes[oldest as usize].older = t;
            self.nodes[head as usize].newer = t;
        }
        self.head = t;
        self.ring += 1;
        if self.hand_cold == NIL && self.node(t).state() == COLD {
            self.hand_cold = t;
        }
    }

    /// Unlink `t`; a hand resting on it moves to its newer neighbour (HAND_cold then needs
    /// `settle_cold`).
    #[inline]
    fn unlink(&mut self, t: u32) {
        let Node { newer, older, .. } = self.node(t);
        if self.ring == 1 {
            self.head = NIL;
            self.hand_hot = NIL;
            self.hand_cold = NIL;
            self.hand_test = NIL;
        } else {
            self.nodes[newer as usize].older = older;
            self.nodes[older as usize].newer = newer;
            if self.head == t {
                self.head = older;
            }
            if self.hand_hot == t {
                self.hand_hot = newer;
            }
            if self.hand_cold == t {
                self.hand_cold = newer;
            }
            if self.hand_test == t {
                self.hand_test = newer;
            }
        }
        self.ring -= 1;
    }

    #[inline]
    fn move_to_head(&mut self, t: u32) {
        self.unlink(t);
        self.link_head(t);
    }

    /// Move HAND_cold forward (from where it is, inclusive) to a resident cold page.
    #[inline]
    fn settle_cold(&mut self) {
        if self.cold == 0 {
            self.hand_cold = NIL;
            return;
        }
        let mut t = if self.hand_cold == NIL {
            self.head
        } else {
            self.hand_cold
        };
        for _ in 0..=self.ring {
            let n = self.node(t);
            if n.state() == COLD {
                self.hand_cold = t;
                return;
            }
            t = n.newer;
        }
        unreachable!("cold > 0, yet no cold page on the ring");
    }

    fn drop_ghost(&mut self, t: u32) {
        self.ghosts.remove(self.node(t).hash, t);
        self.unlink(t);
        self.ghost_count -= 1;
        self.release(t);
    }

    /// One step of HAND_test: a cold page under it ends its test period; a ghost leaves the
    /// ring, its test period over unused (`m_c` − 1).
    #[inline]
    fn test_step(&mut self) {
        let t = self.hand_test;
        let n = self.node(t);
        self.hand_test = n.newer;
        match n.state() {
            GHOST => {
                self.cold_target = self.cold_target.saturating_sub(1).max(self.min_cold);
                self.drop_ghost(t);
            }
            COLD => self.nodes[t as usize].meta &= !IN_TEST,
            _ => {}
        }
    }

    /// Keep the ghosts within their bound: HAND_test walks to the next ghost and drops it.
    #[inline]
    fn enforce_ghosts(&mut self) {
        while self.ghost_count > self.ghost_cap {
            self.test_step();
        }
    }

    /// HAND_hot: demote the first unreferenced hot page (a referenced one loses its bit and
    /// moves to the head, as does the demoted one); HAND_test is pushed along when met.
    fn run_hot(&mut self, tab: &Table) {
        for _ in 0..3 * self.ring + 8 {
            let h = self.hand_hot;
            if h == self.hand_test && self.ring > 1 {
                self.test_step();
                continue;
            }
            let n = self.node(h);
            self.hand_hot = n.newer;
            if n.state() == HOT {
                let referenced = tab.take_ref(n);
                if !referenced {
                    self.nodes[h as usize].meta = n.meta & !(STATE | IN_TEST) | COLD;
                    self.hot -= 1;
                    self.cold += 1;
                }
                self.move_to_head(h);
                if !referenced {
                    return;
                }
            }
        }
        debug_assert!(false, "HAND_hot found nothing to demote");
    }

    /// Demote hot pages until the hot share is within `cap − m_c`.
    #[inline]
    fn balance_hot(&mut self, tab: &Table) {
        while self.hot > self.cap.saturating_sub(self.cold_target) {
            self.run_hot(tab);
        }
    }

    /// Resident cold page `t` (was `n`) just left the table: a ghost if in its test period,
    /// off the ring otherwise. HAND_cold must not rest on it.
    #[inline]
    fn leave_cold(&mut self, t: u32, n: Node) {
        if n.meta & IN_TEST == 0 {
            self.unlink(t);
            self.release(t);
            return;
        }
        self.nodes[t as usize].meta = GHOST | IN_TEST;
        self.ghost_count += 1;
        if let Some(old) = self.ghosts.insert(n.hash, t) {
            // Two keys with one hash: the index names `t` now; the older ghost just goes.
            self.unlink(old);
            self.ghost_count -= 1;
            self.release(old);
        }
    }

    /// HAND_cold: evict one resident cold page. A referenced one in its test period is
    /// promoted instead (`m_c` + 1); a cold page out of its test period goes even if
    /// referenced (the reference simulator's rule).
    fn evict_one(&mut self, tab: &mut Table) {
        loop {
            let hc = self.hand_cold;
            if hc == NIL {
                // No resident cold page: demote one (it lands at the head, under HAND_cold).
                self.run_hot(tab);
                continue;
            }
            let n = self.node(hc);
            if n.meta & IN_TEST != 0 && tab.take_ref(n) {
                self.nodes[hc as usize].meta = n.meta & !(STATE | IN_TEST) | HOT;
                self.cold -= 1;
                self.hot += 1;
                self.hand_cold = n.newer;
                self.move_to_head(hc);
                self.cold_target = (self.cold_target + 1).min(self.max_cold);
                self.balance_hot(tab);
                self.settle_cold();
                continue;
            }
            tab.clear(n);
            self.len -= 1;
            self.cold -= 1;
            self.hand_cold = n.newer;
            self.leave_cold(hc, n);
            self.settle_cold();
            self.enforce_ghosts();
            return;
        }
    }

    /// The policy made room but the new key's set is full: evict from it the way whose page
    /// is cold and unreferenced, else cold, else hot and unreferenced, else any. Returns it.
    #[cold]
    fn evict_in_set(&mut self, tab: &mut Table, set: usize, word: u64) -> usize {
        self.forced += 1;
        let base = set * 8;
        let (mut best, mut rank) = (0, u32::MAX);
        for i in 0..WAYS {
            let n = self.node(self.node_of[base + i]);
            let r = 2 * u32::from(n.state() == HOT) + u32::from(word & (REF0 << i) != 0);
            if r < rank {
                (best, rank) = (i, r);
            }
        }
        let t = self.node_of[base + best];
        let n = self.node(t);
        tab.clear(n);
        self.len -= 1;
        if self.hand_cold == t {
            self.hand_cold = n.newer;
        }
        if n.state() == HOT {
            self.hot -= 1;
            self.unlink(t);
            self.release(t);
        } else {
            self.cold -= 1;
            self.leave_cold(t, n);
        }
        self.settle_cold();
        self.enforce_ghosts();
        best
    }

    /// Admit a key that is not resident, whose hash is `hash`, into set `set`: make room,
    /// pick its way (returned) and link its page: hot if it is a ghost (`m_c` + 1) or the hot
    /// share is still filling, else cold in its test period.
    #[inline]
    fn admit(&mut self, tab: &mut Table, set: usize, hash: u32) -> usize {
        self.admits += 1;
        while self.len >= self.cap {
            self.evict_one(tab);
        }
        let word = tab.sets[set].tags.load(Relaxed);
        let free = zero_bytes(word);
        let way = if free != 0 {
            way(free)
        } else {
            self.evict_in_set(tab, set, word)
        };
        let loc = (set as u32) << 8 | (way as u32) << 4;
        let t = if let Some(g) = self.ghosts.get(hash) {
            self.ghosts.remove(hash, g);
            self.ghost_count -= 1;
            self.unlink(g);
            self.nodes[g as usize].meta = loc | HOT;
            self.hot += 1;
            self.cold_target = (self.cold_target + 1).min(self.max_cold);
            g
        } else {
            let t = self.alloc();
            let state = if self.len + 1 + self.min_cold <= self.cap {
                self.hot += 1;
                HOT
            } else {
                self.cold += 1;
                COLD | IN_TEST
            };
            self.nodes[t as usize].hash = hash;
            self.nodes[t as usize].meta = loc | state;
            t
        };
        self.link_head(t);
        self.len += 1;
        self.node_of[set * 8 + way] = t;
        if self.node(t).state() == HOT {
            self.balance_hot(tab);
        }
        way
    }

    /// Start fetching what the next admission most likely touches first, so the fetches
    /// overlap the caller's work until then (the engine does the same): under HAND_cold, the
    /// page's set line (its reference bit, and the way it empties), its ghost-index home (if
    /// it becomes a ghost) and its newer neighbour (where HAND_cold goes on); the page under
    /// HAND_test (the walk to the next ghost starts there).
    #[inline]
    fn prefetch_next(&self, sets: &[EpochSet<Recycled>]) {
        if self.hand_cold != NIL {
            let n = self.node(self.hand_cold);
            prefetch(&sets[n.set()]);
            prefetch(&self.ghosts.slots[self.ghosts.home(n.hash)]);
            prefetch(&self.nodes[n.newer as usize]);
        }
        if self.hand_test != NIL {
            prefetch(&self.nodes[self.hand_test as usize]);
        }
    }

    /// Every invariant, against the table too (sanity checks only).
    fn check(&self, sets: &[EpochSet<Recycled>]) {
        let (mut hot, mut cold, mut ghost) = (0, 0, 0);
        let mut t = self.head;
        for _ in 0..self.ring {
            let n = self.node(t);
            assert_eq!(self.node(n.newer).older, t, "ring links");
            match n.state() {
                HOT | COLD => {
                    if n.state() == HOT {
                        hot += 1;
                    } else {
                        cold += 1;
                    }
                    assert_eq!(self.node_of[n.set() * 8 + n.way()], t, "node_of");
                    let word = sets[n.set()].tags.load(Relaxed);
                    assert!(
                        word >> (8 * n.way()) & 0xFF != 0,
                        "a resident's way is used"
                    );
                }
                GHOST => {
                    ghost += 1;
                    assert_eq!(self.ghosts.get(n.hash), Some(t), "ghost indexed");
                }
                _ => panic!("a free node on the ring"),
            }
            t = n.newer;
        }
        assert_eq!(t, self.head, "the ring closes");
        assert_eq!((hot, cold, ghost), (self.hot, self.cold, self.ghost_count));
        assert_eq!(hot + cold, self.len);
        assert!(self.len <= self.cap && ghost <= self.ghost_cap);
        assert!(self.hand_cold == NIL || self.node(self.hand_cold).state() == COLD);
        assert!((self.min_cold..=self.max_cold).contains(&self.cold_target));
        let used: usize = sets
            .iter()
            .map(|s| (TAG_BYTES & !zero_bytes(s.tags.load(Relaxed))).count_ones() as usize)
            .sum();
        assert_eq!(used, self.len, "the table holds the residents");
        let indexed = self
            .ghosts
            .slots
            .iter()
            .filter(|&&s| s as u32 != NIL)
            .count();
        assert_eq!(indexed, ghost, "the ghost index holds the ghosts");
    }
}

struct ProWriter {
    mem: Recycled,
    pro: Pro,
}

struct ProShard {
    sets: Box<[EpochSet<Recycled>]>,
    writer: Mutex<ProWriter>,
}

/// `Toy (recycled)`'s table and entry memory, evicted by a per-shard CLOCK-Pro.
struct ProToy {
    shards: Box<[CachePadded<ProShard>]>,
    hasher: common::Hasher,
    shard_mask: usize,
    nsets: usize,
}

impl ProToy {
    fn new(capacity: u64) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let shards = (4 * cores).next_power_of_two();
        let capacity = capacity as usize;
        let most = capacity.div_ceil(shards).max(1);
        let nsets = most.div_ceil(PRO_FILL);
        assert!(shards <= 1 << 24 && nsets < 1 << 24);
        ProToy {
            shards: (0..shards)
                .map(|s| {
                    let cap = capacity / shards + usize::from(s < capacity % shards);
                    CachePadded::new(ProShard {
                        sets: (0..nsets).map(|_| EpochSet::default()).collect(),
                        writer: Mutex::new(ProWriter {
                            mem: Recycled::default(),
                            pro: Pro::new(cap, nsets),
                        }),
                    })
                })
                .collect(),
            hasher: common::hasher(),
            shard_mask: shards - 1,
            nsets,
        }
    }

    /// As `Sharded::locate`, plus the hash bits the policy keeps.
    #[inline(always)]
    fn locate(&self, k: u64) -> (&ProShard, usize, u8, u32) {
        let h = self.hasher.hash_one(k);
        let shard = &self.shards[(h >> 32) as usize & self.shard_mask];
        let set = ((u128::from(h << 32) * self.nsets as u128) >> 64) as usize;
        (shard, set, ((h >> 56) as u8).max(1), h as u32)
    }

    fn sizing(&self, capacity: u64) -> String {
        sizing(self.shards.len(), self.nsets, capacity)
    }

    /// Admissions, and those that had to evict from their full set, so far.
    fn admits(&self) -> (u64, u64) {
        self.shards.iter().fold((0, 0), |(a, f), s| {
            let w = s.writer.lock().expect("no writer panics");
            (a + w.pro.admits, f + w.pro.forced)
        })
    }

    fn check(&self) {
        for s in &self.shards {
            s.writer
                .lock()
                .expect("no writer panics")
                .pro
                .check(&s.sets);
        }
    }
}

impl Target for ProToy {
    #[inline]
    fn get(&self, k: u64) -> Option<u64> {
        let (shard, set, tag, _) = self.locate(k);
        shard.sets[set].get(tag, k)
    }

    #[inline]
    fn insert(&self, k: u64, v: u64) {
        let (shard, idx, tag, hash) = self.locate(k);
        let set = &shard.sets[idx];
        let mut guard = shard.writer.lock().expect("no writer panics");
        let ProWriter { mem, pro } = &mut *guard;
        mem.prepare();
        // Where the key would be if it is a ghost: fetched while the set is probed and the
        // policy makes room.
        prefetch(&pro.ghosts.slots[pro.ghosts.home(hash)]);
        let pin = epoch::pin();
        let word = set.tags.load(Relaxed);
        if let Some(i) = set.find(word, tag, k, &pin) {
            set.put(i, Some((k, v)), None, &pin, mem);
            return;
        }
        let mut tab = Table {
            sets: &shard.sets,
            guard: &pin,
            mem,
        };
        let i = pro.admit(&mut tab, idx, hash);
        // Reloaded: making room may have emptied ways of this set.
        let word = set.tags.load(Relaxed);
        set.put(i, Some((k, v)), Some(with_tag(word, i, tag)), &pin, tab.mem);
        pro.prefetch_next(&shard.sets);
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.writer.lock().expect("no writer panics").pro.len)
            .sum()
    }
}

/// Hot keys read between stretches of a scan of fresh keys: how many of the reads in the
/// last phase (a read every `2 × cap` scan keys) missed, out of how many.
fn scan_misses<T: Target>(t: &T, cap: u64) -> (u64, u64) {
    let hot: Vec<u64> = (0..4).map(|i| (1 << 40) + i).collect();
    let mut next = 0;
    let mut scan = |n: u64| {
        for _ in 0..n {
            t.insert(next, next);
            next += 1;
        }
    };
    let read = |misses: &mut u64| {
        for &k in &hot {
            if t.get(k).is_none() {
                *misses += 1;
                t.insert(k, k);
            }
        }
    };
    // Full of scan keys, then the hot keys read every 50 scan keys, then rarely.
    scan(2 * cap);
    let mut learn = 0;
    for _ in 0..4 * cap / 50 {
        read(&mut learn);
        scan(50);
    }
    let mut misses = 0;
    for _ in 0..10 {
        scan(2 * cap);
        read(&mut misses);
    }
    (misses, 10 * hot.len() as u64)
}

/// `Toy (CLOCK-Pro)` is a working cache, its policy state is consistent, and it resists
/// scans where per-set CLOCK does not.
fn sanity_pro() {
    let cap = 1000;
    let t = ProToy::new(cap);
    let shards = t.shards.len() as u64;
    for k in 0..10 * cap {
        t.insert(k, k + 1);
        assert_eq!(t.get(k), Some(k + 1), "a fresh insert is readable");
        assert!(t.len() as u64 <= cap, "capacity is a bound");
    }
    // An eviction from a full set leaves its shard one short until the shard's next insert.
    assert!(
        t.len() as u64 + shards >= cap,
        "a full toy holds about its capacity"
    );
    t.check();
    assert!((0..10 * cap).all(|k| t.get(k).is_none_or(|v| v == k + 1)));
    let k = 10 * cap - 1;
    t.insert(k, 7);
    assert_eq!(t.get(k), Some(7), "a replaced key reads the new value");
    // Reuse: ghost hits, promotions and demotions, over a key space four times the capacity.
    let mut rng = common::Rng::new(3);
    for _ in 0..200_000 {
        let k = rng.below(4 * cap);
        match t.get(k) {
            Some(v) => assert_eq!(v, k + 1),
            None => t.insert(k, k + 1),
        }
    }
    t.check();
    race(&t, cap);
    t.check();
    assert!(t.len() as u64 <= cap && t.len() as u64 + shards >= cap);
    // Scan resistance: hot keys, once hot, stay while HAND_hot has no promotion to pay for;
    // per-set CLOCK clears their bits and evicts them in between.
    let pro = ProToy::new(cap);
    let (misses, reads) = scan_misses(&pro, cap);
    pro.check();
    assert_eq!(misses, 0, "CLOCK-Pro keeps hot keys through a scan");
    let (clock_misses, _) = scan_misses(&Toy::new(cap), cap);
    assert!(
        clock_misses * 2 > reads,
        "per-set CLOCK loses them ({clock_misses} of {reads}): the check has teeth"
    );
}

#[inline(never)]
fn run_ops<C: Target>(c: &C, ops: &[u64], passes: usize) -> u64 {
    (0..passes).fold(0, |acc, _| {
        ops.iter()
            .fold(acc, |acc, &op| acc.wrapping_add(run_op(c, op)))
    })
}

/// What a round needs of a contestant; each call runs a whole pass monomorphized.
trait Contestant {
    /// Seconds for every thread to run `passes` passes over its own stream.
    fn timed(&self, streams: &[Vec<u64>], passes: usize) -> f64;
    /// One untimed pass (cache-aside, as timed) that checks every hit's value: the ratio of
    /// gets that missed, and the entries resident after it.
    fn misses(&self, streams: &[Vec<u64>]) -> (f64, usize);
    /// Insert keys `0..n` (as `key_of` spreads them), in order.
    fn fill(&self, n: u64);
}

impl<C: Target> Contestant for C {
    fn fill(&self, n: u64) {
        for r in 0..n {
            self.insert(key_of(r), key_of(r));
        }
    }

    fn timed(&self, streams: &[Vec<u64>], passes: usize) -> f64 {
        let barrier = Barrier::new(streams.len() + 1);
        let start = std::thread::scope(|s| {
            for ops in streams {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    black_box(run_ops(self, ops, passes))
                });
            }
            barrier.wait();
            Instant::now()
        }); // the scope has joined every thread
        start.elapsed().as_secs_f64()
    }

    fn misses(&self, streams: &[Vec<u64>]) -> (f64, usize) {
        let (mut gets, mut misses) = (0, 0);
        for &op in streams.iter().flatten() {
            let k = op & KEY_MASK;
            let get = op & INSERT == 0;
            gets += usize::from(get);
            let hit = get
                && self
                    .get(k)
                    .inspect(|&v| assert_eq!(v, k, "wrong value"))
                    .is_some();
            if !hit {
                misses += usize::from(get);
                self.insert(k, k);
            }
        }
        (misses as f64 / gets as f64, self.len())
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn workload(title: &str, cap: u64, fill: u64, streams: &[Vec<u64>], rounds: usize) {
    let qc = common::quick_cache(cap);
    let cog = common::cogwheel(cap);
    // The engine with plain CLOCK (one shard-wide hand, no ghosts): what CLOCK-Pro costs.
    let cog_clock: common::Cogwheel = cogwheel::Cache::builder()
        .max_capacity(cap)
        .hasher(common::hasher())
        .eviction_policy(cogwheel::EvictionPolicy::Clock)
        .build()
        .expect("valid cogwheel settings");
    let toy_box = ToyBox::new(cap);
    let toy = Toy::new(cap);
    let toy_pro = ProToy::new(cap);
    let inline = InlineToy::new(cap);
    let all: [(&str, &dyn Contestant); 7] = [
        ("quick_cache", &qc),
        ("cogwheel", &cog),
        ("cogwheel CLOCK", &cog_clock),
        ("Toy (Box)", &toy_box),
        ("Toy (recycled)", &toy),
        ("Toy (CLOCK-Pro)", &toy_pro),
        ("InlineToy", &inline),
    ];
    let n = all.len();
    // One contestant at a time, so no one's allocations interleave with another's.
    for (_, c) in &all {
        c.fill(fill);
        c.timed(streams, 1);
    }
    let miss: Vec<(f64, usize)> = all.iter().map(|(_, c)| c.misses(streams)).collect();
    assert!(
        [toy_box.len(), toy.len(), toy_pro.len(), inline.len()]
            .iter()
            .all(|&l| l as u64 <= cap),
        "a toy overshot"
    );
    // The same passes for everyone, so that even the fastest runs about 0.3 s or more.
    let fastest = all
        .iter()
        .map(|(_, c)| c.timed(streams, 1))
        .fold(f64::MAX, f64::min);
    let target = if common::quick() { 0.03 } else { 0.3 };
    let passes = ((target / fastest).ceil() as usize).clamp(1, 64);
    let ops = (passes * streams.len() * streams[0].len()) as f64;
    let before = toy.allocs();
    let pro_before = toy_pro.admits();
    let rates: Vec<Vec<f64>> = (0..rounds)
        .map(|r| {
            let mut row = vec![0.0; n];
            for j in 0..n {
                let i = (r + j) % n; // each round starts one contestant later
                row[i] = ops / all[i].1.timed(streams, passes) / 1e6;
            }
            row
        })
        .collect();
    let after = toy.allocs();
    let pro_after = toy_pro.admits();
    println!(
        "\n{title}; {} thread(s), {} ops/thread/pass, {passes} pass(es) per run, {rounds} rounds",
        streams.len(),
        streams[0].len()
    );
    println!("toys: {}", toy.sizing(cap));
    let (admits, forced) = (pro_after.0 - pro_before.0, pro_after.1 - pro_before.1);
    println!(
        "Toy (CLOCK-Pro): {}; timed runs: {admits} admissions, {forced} found their set full \
         ({:.2} %)",
        toy_pro.sizing(cap),
        100.0 * forced as f64 / admits.max(1) as f64
    );
    println!(
        "{:<15} {:>8} {:>14} {:>10} {:>9} {:>10}",
        "contestant", "Mops/s", "÷ quick_cache", "miss ratio", "resident", "ns per op"
    );
    for (i, ((name, _), (miss, len))) in all.iter().zip(miss).enumerate() {
        let mops = median(rates.iter().map(|r| r[i]).collect());
        let ratio = median(rates.iter().map(|r| r[i] / r[0]).collect());
        let ns = 1e3 * streams.len() as f64 / mops;
        println!("{name:<15} {mops:>8.2} {ratio:>14.2} {miss:>10.4} {len:>9} {ns:>10.1}");
    }
    let (fresh, inserts) = (after.0 - before.0, after.1 - before.1);
    println!(
        "Toy (recycled), timed runs: {inserts} inserts, {fresh} of them into fresh Box memory \
         ({:.3} %), the rest into shelved memory",
        100.0 * fresh as f64 / inserts.max(1) as f64
    );
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // Harness-less benches get `--bench`; the first other argument picks one workload.
    let only = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    assert!(
        only.as_deref()
            .is_none_or(|o| ["read", "95", "50", "churn"].contains(&o)),
        "usage: write_ceiling [read|95|50|churn]"
    );
    let wanted = |w: &str| only.as_deref().is_none_or(|o| o == w);
    let threads = env_usize("THREADS", 1).max(1);
    let rounds = env_usize("ROUNDS", 5).max(1);
    // The throughput bench's sizes (÷ 10 for a smoke run).
    let div = if common::quick() { 10 } else { 1 };
    let len = (1 << 21) / div;
    let (mixed_keys, mixed_cap) = (1_000_000 / div, 100_000 / div as u64);
    let (churn_keys, churn_cap) = (10_000_000 / div as u64, 1_000_000 / div as u64);
    sanity::<EpochSet<Boxed>>();
    sanity::<EpochSet<Recycled>>();
    sanity_recycles();
    sanity_pro();
    sanity::<InlineSet>();
    if wanted("read") {
        // The throughput bench's read-only group: every key resident before timing (the
        // toys' per-set eviction may still drop a few: see their miss ratio).
        let keys = 1_000_000 / div;
        let zipf = Zipf::new(keys, 1.0);
        let s = streams(threads, len, 0xa11, |r| key_of(zipf.sample(r)));
        let cap = keys as u64 * 5 / 4;
        let title = format!("read: Zipf 1.0 over {keys} resident keys, capacity {cap}");
        workload(&title, cap, keys as u64, &s, rounds);
    }
    for pct in [5u64, 50] {
        if !wanted(if pct == 5 { "95" } else { "50" }) {
            continue;
        }
        let zipf = Zipf::new(mixed_keys, 0.99);
        // The throughput bench's seeds, so its streams and these agree.
        let s = streams(threads, len, 0xb0b ^ pct, |r| {
            let k = key_of(zipf.sample(r));
            if r.below(100) < pct { k | INSERT } else { k }
        });
        let title = format!(
            "{}/{pct}: Zipf 0.99 over {mixed_keys} keys, capacity {mixed_cap}, {pct} % inserts",
            100 - pct
        );
        workload(&title, mixed_cap, 0, &s, rounds);
    }
    if wanted("churn") {
        let s = streams(threads, len, 0xc4, |r| key_of(r.below(churn_keys)));
        let title = format!("churn: uniform over {churn_keys} keys, capacity {churn_cap}");
        workload(&title, churn_cap, 0, &s, rounds);
    }
}
