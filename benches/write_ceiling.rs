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
//! sizing and the fraction of ways that capacity fills.
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
        let ways = self.shards.len() * self.nsets * WAYS;
        format!(
            "{} shards × {} sets × {WAYS} ways; capacity fills {:.1} % of the ways",
            self.shards.len(),
            self.nsets,
            100.0 * capacity as f64 / ways as f64
        )
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
    // Two threads over the same keys: a reader never sees another key's value (with reused
    // memory too: each inserts ~100 000 entries into a toy of 1000).
    std::thread::scope(|s| {
        for seed in 1..=2 {
            let t = &t;
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
    assert!(t.len() as u64 == cap);
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
    let inline = InlineToy::new(cap);
    let all: [(&str, &dyn Contestant); 6] = [
        ("quick_cache", &qc),
        ("cogwheel", &cog),
        ("cogwheel CLOCK", &cog_clock),
        ("Toy (Box)", &toy_box),
        ("Toy (recycled)", &toy),
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
        [toy_box.len(), toy.len(), inline.len()]
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
    println!(
        "\n{title}; {} thread(s), {} ops/thread/pass, {passes} pass(es) per run, {rounds} rounds",
        streams.len(),
        streams[0].len()
    );
    println!("toys: {}", toy.sizing(cap));
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
