//! Write-behind: writes are acknowledged once they are in memory and reach the backing store
//! later, in batches, from one writer thread.
//!
//! # Design
//! Each key with a write not yet in the store has a *pending record* (the latest operation,
//! `Put(value)` or `Delete`, and the sequence number of that write) in one of 64 stripes.
//! Writers of one key are ordered by the cache's per-key lock, so the records and the cache
//! always agree on the latest write. A later write of a dirty key replaces its record, so
//! writes coalesce.
//!
//! A stripe keeps its records in two generations: `live`, the only one callers write, and
//! `taken`, the one the writer is storing. The lock-free MPSC queue carries stripes, not
//! keys: a stripe is pushed when its first untaken record appears (its clean→dirty
//! transition), so the queue never holds more than 64 nodes, nor more nodes than there are
//! dirty keys. A round pops queued stripes (until it holds about `max_batch` keys, see
//! *Batches*) and, for each, swaps `live` out as the taken generation in O(1); it writes the
//! generations without any lock (they are immutable once taken) and, once stored, drops each
//! generation in O(1). A key written again while its
//! older write is being stored has a record in both generations and stays dirty; the store
//! sees its writes in order, as its latest state. Removes are ordinary `Delete` records, so
//! put / remove / put of one key reaches the store in order.
//!
//! Neither side walks the other's records key by key: a caller's write is an index lookup
//! (and, on a key's clean→dirty transition, an append to the stripe's list of records) in
//! structures the writer only reads in bulk. (The previous design, a queue node per dirty
//! key and a per-key settle under the stripe lock, made each record's cache line cross
//! between the two cores twice per write; swapping generations, then keeping records in a
//! list, raised the insert rate from 0.41–0.49 to 0.53–0.57 of a cache without a store in
//! alternated runs, see PERFORMANCE.md.)
//!
//! A flush notes each stripe's latest sequence number and waits until every stripe's first
//! pending record (in both generations) is newer: records sit in the order their keys became
//! dirty, so that test is O(1) per stripe, the per-stripe form of a published `flushed_seq`.
//!
//! Dirty keys are pinned: the eviction policy skips them (it asks through
//! [`WriteBehindState::is_dirty`]), so a read after an acknowledged write sees it, also under
//! eviction pressure. Read-through consults the pending records before the store, so a stale
//! stored value never shadows a pending write or delete.
//!
//! # Batches
//! Batches are adaptive. The writer starts a round once 512 keys are dirty (fewer if
//! `max_batch` or half the dirty budget is smaller), or when `max_delay` has passed, or when a
//! flush or a parked writer asks. A round takes queued stripes, each whole, until it holds
//! `max_batch` (default 16 384) keys, so the last stripe taken may carry it past that by its
//! own records; it writes what it took in `write_batch` calls of at most `max_batch`
//! operations. The stripes it did not take stay queued, keep coalescing, and go to the next
//! round, which starts at once while enough keys are dirty. (Taking everything would make a
//! round with a small `max_batch` over a slow store long, and every key written during it a
//! second store write.) Under light load batches stay small and prompt; while the writer is
//! behind, rounds grow to about `max_batch` keys, so a store that costs per batch (a
//! transaction, a pipeline) writes that many keys per round trip. `max_batch` bounds the size
//! of one store request and, but for the last stripe, of one round.
//!
//! # Failures
//! A failed round is retried with capped exponential back-off, never dropping a write: the
//! batches it did store are retired, the rest is kept, and writes that arrive meanwhile join
//! what was kept (a key's newer write replaces its older one). After repeated failures a batch is split into single writes; a key that keeps failing while
//! other writes succeed is a *poison* key and goes to the dead-letter hook after
//! `max_attempts` tries, so it cannot block the queue. When every write fails (the store is
//! down) nothing is dead-lettered: the writer keeps retrying until the store comes back. (One
//! exception: a key already suspected of being poison that is the only pending write keeps
//! counting its failures, since then nothing tells an outage from poison.)
//!
//! A panicking store is a failed write (`Unknown`), and a panicking dead-letter hook is
//! caught. Any other panic on the writer thread (a bug, or a key's or value's `Clone`, `Hash`,
//! `Eq` or `Drop` panicking there) ends the thread: it is caught and recorded, and from then
//! on flushes and parked writers fail with it (`Unflushed`, `Store`) instead of waiting for a
//! writer that is gone, new write-behind writes are refused, and `close` hands what is left
//! to the dead-letter hook.
//!
//! # Back-pressure
//! At most `max_dirty` keys may be dirty (writers of new keys that pass the check together may
//! overshoot it by at most their number minus one, see [`WriteBehind::max_dirty`]). A writer
//! that would dirty one more key waits for the writer thread to make room (or, with
//! `fail_fast`, gets [`Error::Full`](crate::Error::Full)).

pub(crate) mod mpsc;
pub(crate) mod wake;
mod writer;

pub(crate) use writer::{Pending, WriteBehindState};

/// The hook type, for the builder.
pub(crate) mod writer_hook {
    pub(crate) use super::writer::DeadLetterHook;
}

use std::time::Duration;

/// Default cap on the keys one round takes and on the operations of one `write_batch` call.
///
/// Stores that cost per batch (a redb transaction, a Redis pipeline) drain faster with larger
/// batches: at 512 a store that takes 1 ms per batch drains at most ~0.5M ops/s, and a caller
/// that writes faster is parked by the dirty budget. The writer does not wait for a full batch
/// (see [`START_BATCH`]): batches grow to this cap only while the writer is behind, so a
/// light load still gets small, prompt batches. A round takes whole stripes until it holds
/// this many keys (the last stripe may carry it past) and writes them in requests of at most
/// this many operations.
pub(crate) const DEFAULT_MAX_BATCH: usize = 16_384;

/// The writer starts a round once this many keys are dirty (or `max_batch`, or half the dirty
/// budget, if smaller), without waiting for `max_delay`; the round then takes pending keys up
/// to `max_batch` (whole stripes) and writes them in requests of at most `max_batch`.
pub(crate) const START_BATCH: usize = 512;

/// Settings of write-behind mode (see [`WritePolicy::WriteBehind`]).
///
/// ```
/// use cogwheel::WriteBehind;
/// use std::time::Duration;
///
/// let wb = WriteBehind::default().max_batch(256).max_delay(Duration::from_millis(50));
/// # let _ = wb;
/// ```
#[derive(Debug, Clone)]
pub struct WriteBehind {
    pub(crate) max_batch: usize,
    pub(crate) max_delay: Duration,
    /// `None`: half the cache's capacity (set when the cache is built).
    pub(crate) max_dirty: Option<usize>,
    pub(crate) fail_fast: bool,
    pub(crate) retry_base: Duration,
    pub(crate) retry_max: Duration,
    pub(crate) max_attempts: u32,
    pub(crate) manual: bool,
    pub(crate) close_timeout: Duration,
}

impl Default for WriteBehind {
    fn default() -> Self {
        WriteBehind {
            max_batch: DEFAULT_MAX_BATCH,
            max_delay: Duration::from_millis(100),
            max_dirty: None,
            fail_fast: false,
            retry_base: Duration::from_millis(10),
            retry_max: Duration::from_secs(5),
            max_attempts: 8,
            manual: false,
            close_timeout: Duration::from_secs(30),
        }
    }
}

impl WriteBehind {
    /// How many keys one round of the writer takes, and the most operations written in one
    /// `write_batch` call (default 16 384).
    ///
    /// Batches are adaptive: the writer starts a round as soon as 512 keys (or `max_batch`, or
    /// half the dirty budget, if smaller) are dirty, or when `max_delay` has passed. The round
    /// takes pending keys until it holds `max_batch` of them (a stripe of keys at a time, so
    /// the last one may carry it past) and writes them in requests of at most `max_batch`;
    /// the rest waits for the next round, which starts at once while the writer is behind.
    /// Under light load batches stay small and prompt; while the writer is behind, each round
    /// writes about `max_batch` keys, so a store that costs per batch rather than per
    /// operation keeps up better with a larger value. Lower it for stores that limit request
    /// sizes.
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n.max(1);
        self
    }

    /// The longest a write waits for its batch to fill before it is written anyway, when the
    /// store is healthy (default 100 ms).
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.max_delay = d;
        self
    }

    /// The most keys that may be dirty at once (default: half the cache's capacity, so dirty
    /// entries, which are pinned, never fill the cache); beyond it writers wait for the writer
    /// thread (or fail, with [`fail_fast`](Self::fail_fast)). The check and the write are not
    /// one atomic step, so writers of new keys that pass the check together may overshoot it
    /// by at most their number minus one.
    pub fn max_dirty(mut self, n: usize) -> Self {
        self.max_dirty = Some(n.max(1));
        self
    }

    /// Fail with [`Error::Full`](crate::Error::Full) instead of waiting when the dirty budget
    /// is used up. (A write whose shard is full of dirty entries still waits for the writer:
    /// by then it is recorded, and failing it would make an `Err` write reach the store. Keep
    /// `max_dirty` well below the capacity to make that case rare.)
    pub fn fail_fast(mut self, yes: bool) -> Self {
        self.fail_fast = yes;
        self
    }

    /// Back-off after a failed write: starts at `base`, doubles per failure, capped at `max`
    /// (defaults 10 ms and 5 s).
    pub fn retry_backoff(mut self, base: Duration, max: Duration) -> Self {
        self.retry_base = base;
        self.retry_max = max.max(base);
        self
    }

    /// How many times a single key may fail (while other writes succeed) before it is handed
    /// to the dead-letter hook (default 8).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// How long `close` (and dropping the last handle) waits for the store to take what is
    /// still dirty (default 30 s). After that, whatever is not confirmed goes to the dead-letter
    /// hook and the close returns `Error::Unflushed`: a hung store never hangs the closing
    /// thread. (Manual mode writes on the closing thread itself and has no timeout.)
    pub fn close_timeout(mut self, d: Duration) -> Self {
        self.close_timeout = d;
        self
    }

    /// No writer thread: writes reach the store only when the caller calls `flush` (which
    /// then does the writer's work on the calling thread). For deterministic tests and for
    /// callers that want full control of when I/O happens.
    pub fn manual(mut self, yes: bool) -> Self {
        self.manual = yes;
        self
    }
}

/// How the cache keeps its backing store in step.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum WritePolicy {
    /// Store first; the cache changes only if the store said `Ok` (the default).
    #[default]
    WriteThrough,
    /// Acknowledge in memory; write to the store in the background (see [`WriteBehind`]).
    WriteBehind(WriteBehind),
}

/// What a successful [`Cache::flush`](crate::Cache::flush) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct FlushReport {
    /// Keys that were dirty when the flush began and are now in the store.
    pub flushed: usize,
}

/// A write the writer gave up on (see the dead-letter hook).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeadLetter<V> {
    /// A put of this value that could not be written.
    Put(V),
    /// A delete that could not be written.
    Delete,
}
