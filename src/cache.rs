//! The public cache handle.

mod flush;
mod iter;
mod load;
mod write;

pub use iter::Iter;

pub use load::{Compute, Preload};

use crate::builder::CacheBuilder;
use crate::entry::{EntryRef, Expiry};
use crate::error::{BuildError, Error};
use crate::hash::{self, DefaultHashBuilder};
use crate::key_locks::KeyLocks;
use crate::listener::{Listener, RemovalCause, Weigher};
use crate::loader::Loader;
use crate::reclaim::{Guard, Reclaimer};
use crate::shard::{Removals, Shard};
use crate::stats::{Counter, Counters, Stats};
use crate::store::BackingStore;
use crate::sync::Arc;
use crate::time::{self, Clock};
use crate::write_behind::{WriteBehindState, WritePolicy};
use std::borrow::Borrow;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::time::Duration;

/// A concurrent, bounded cache. Cheap to clone: clones share the same cache.
///
/// Reads (`get`, `contains_key`) take no lock: they probe a shard's table under an epoch
/// guard and clone the value out. Writes lock one shard. Values are returned by clone, so
/// large values are best stored as `Arc<T>`.
///
/// ```
/// use cogwheel::Cache;
///
/// let cache: Cache<u64, String> = Cache::builder().max_capacity(1_000).build().unwrap();
/// cache.insert(1, "one".to_string()).unwrap();
/// assert_eq!(cache.get(&1).as_deref(), Some("one"));
/// assert_eq!(cache.remove(&1).unwrap().as_deref(), Some("one"));
/// assert!(cache.get(&1).is_none());
/// ```
pub struct Cache<K, V, S = DefaultHashBuilder> {
    inner: Arc<Inner<K, V, S>>,
}

struct Inner<K, V, S> {
    /// Dropped before `reclaim`: live entries are freed directly, then the collector runs
    /// every destructor deferred through it.
    shards: Box<[Shard<K, V>]>,
    shard_bits: u32,
    hasher: S,
    reclaim: Reclaimer,
    counters: Counters,
    clock: Clock,
    tti_nanos: Option<u64>,
    /// How far a read must move a time-to-idle deadline before it is stored.
    tti_slack: u64,
    time_to_live: Option<Duration>,
    capacity: u64,
    weigher: Option<Weigher<K, V>>,
    listener: Option<Listener<K, V>>,
    /// The backing store, if any (write-through for `insert`/`remove`, read-through for
    /// `fetch`).
    store: Option<std::sync::Arc<dyn BackingStore<K, V>>>,
    /// Orders writers of one key around store I/O (write-through) and `compute`.
    key_locks: KeyLocks,
    /// Single-flight registry for `get_with`, `try_get_with` and read-through.
    loader: Loader<K, V>,
    /// Write-behind state (queue, pending records, writer thread), in write-behind mode.
    wb: Option<WriteBehindState<K, V>>,
    /// The maintenance thread, stopped and joined when the last handle goes.
    #[cfg(not(loom))]
    maintenance: std::sync::Mutex<Option<Maintenance>>,
    /// Live `Cache` handles (the maintenance thread's temporary references not counted).
    #[cfg(not(loom))]
    handles: std::sync::atomic::AtomicUsize,
}

/// The maintenance thread and its stop flag (read without upgrading its weak reference: while
/// the last handle is being dropped, the upgrade would still succeed).
#[cfg(not(loom))]
struct Maintenance {
    thread: std::thread::JoinHandle<()>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Disconnected when the thread ends (its sender drops): a wait for it with a limit.
    ended: std::sync::mpsc::Receiver<()>,
}

/// How long dropping the last handle waits for a maintenance run in progress (a listener
/// call or a store purge of it) before leaving the run to finish on its own thread.
#[cfg(not(loom))]
const MAINTENANCE_STOP_WAIT: Duration = Duration::from_secs(10);

/// A key stripe's lock, with this thread's listener calls held until it is released (fields
/// drop in order: the lock, then the hold, which runs the held calls).
pub(crate) struct KeyLock<'a> {
    pub(crate) lock: crate::key_locks::KeyGuard<'a>,
    _hold: crate::listener::Hold,
}

/// The most entries one shard of an entry-bounded cache may hold (2^30): its table is
/// allocated up front, and the policy's tokens (residents and as many ghosts) are `u32`.
const MAX_ENTRIES_PER_SHARD: u64 = 1 << 30;

impl<K, V, S> Inner<K, V, S> {
    /// Stop the maintenance thread and, unless this is that thread, wait for it to let go of
    /// the cache: a run in progress holds a strong reference, and if it outlived the last
    /// handle, the cache's final drop (draining write-behind, closing the store and releasing
    /// its file) would happen later, on that thread, after the user's `drop` returned. The
    /// wait is bounded ([`MAINTENANCE_STOP_WAIT`]): a run stuck in a hung store, or in a
    /// listener waiting for a lock the dropping thread holds, must not hang the drop.
    #[cfg(not(loom))]
    fn stop_maintenance(&self) {
        let m = self
            .maintenance
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(m) = m {
            m.stop.store(true, std::sync::atomic::Ordering::Release);
            m.thread.thread().unpark();
            if m.thread.thread().id() != std::thread::current().id()
                && m.ended.recv_timeout(MAINTENANCE_STOP_WAIT)
                    != Err(std::sync::mpsc::RecvTimeoutError::Timeout)
            {
                let _ = m.thread.join();
            }
        }
    }
}

impl<K, V, S> Drop for Cache<K, V, S> {
    fn drop(&mut self) {
        #[cfg(not(loom))]
        if self
            .inner
            .handles
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel)
            == 1
        {
            self.inner.stop_maintenance();
        }
    }
}

impl<K, V> Cache<K, V, DefaultHashBuilder>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Start building a cache.
    pub fn builder() -> CacheBuilder<K, V, DefaultHashBuilder> {
        CacheBuilder::new()
    }
}

impl<K, V, S> Cache<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Clone + Send + Sync + 'static,
{
    pub(crate) fn from_builder(
        b: CacheBuilder<K, V, S>,
        capacity: u64,
        shards: usize,
    ) -> Result<Self, BuildError> {
        let n = shards as u64;
        // Tables are allocated up front for their shard's capacity, and tokens are `u32`: a
        // capacity beyond what that can hold is a setting error, not an allocation abort.
        if b.weigher.is_none() && capacity.div_ceil(n.max(1)) > MAX_ENTRIES_PER_SHARD {
            return Err(BuildError::Invalid(format!(
                "max_capacity {capacity} is more than {MAX_ENTRIES_PER_SHARD} entries per shard \
                 ({shards} shards; tables are allocated up front): use more shards, or \
                 max_weight with a weigher"
            )));
        }
        let shard_list: Box<[Shard<K, V>]> = (0..n)
            .map(|i| {
                // An exact split: the shards' capacities add up to the cache's, so the sum of
                // the shards' bounds is the cache's bound, with no rounding overshoot.
                let cap = capacity / n + u64::from(i < capacity % n);
                let expected = if b.weigher.is_some() {
                    cap.min(1024)
                } else {
                    cap
                };
                let hasher = b.hasher.clone();
                Shard::new(
                    b.policy,
                    cap,
                    usize::try_from(expected).unwrap_or(usize::MAX / 2),
                    Box::new(move |k: &K| hash::hash_one(&hasher, k)),
                )
                .map_err(|e| {
                    BuildError::Invalid(format!(
                        "max_capacity {capacity}: cannot allocate the tables, which are sized \
                         for it up front ({e}): use a smaller capacity, or max_weight with a \
                         weigher"
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        #[cfg(loom)]
        let stripes = 1;
        #[cfg(not(loom))]
        let stripes = 4 * std::thread::available_parallelism().map_or(1, |p| p.get());
        #[cfg_attr(loom, allow(unused_variables))] // no maintenance thread under loom
        let b_maintenance = b
            .maintenance_interval
            .map(|every| (every, b.purge_store_every));
        let wb = match (&b.write_policy, &b.store) {
            (WritePolicy::WriteBehind(cfg), Some(store)) => Some(
                WriteBehindState::new(
                    cfg.clone(),
                    capacity,
                    std::sync::Arc::clone(store),
                    b.dead_letter.clone(),
                    b.clock.clone(),
                )
                .map_err(|e| {
                    BuildError::Invalid(format!("cannot start the write-behind writer: {e}"))
                })?,
            ),
            _ => None,
        };
        let inner = Inner {
            shards: shard_list,
            shard_bits: shards.trailing_zeros(),
            hasher: b.hasher,
            reclaim: Reclaimer::new(),
            counters: Counters::new(stripes),
            clock: b.clock,
            tti_nanos: b.time_to_idle.map(time::duration_nanos),
            tti_slack: b
                .time_to_idle
                .map_or(0, |d| (time::duration_nanos(d) / 1024).min(1_000_000)),
            time_to_live: b.time_to_live,
            capacity,
            weigher: b.weigher,
            listener: b.listener,
            store: b.store,
            key_locks: KeyLocks::new(4096),
            loader: Loader::new(),
            wb,
            #[cfg(not(loom))]
            maintenance: std::sync::Mutex::new(None),
            #[cfg(not(loom))]
            handles: std::sync::atomic::AtomicUsize::new(1),
        };
        let cache = Cache {
            inner: Arc::new(inner),
        };
        #[cfg(not(loom))]
        if let Some((every, purge_every)) = b_maintenance {
            cache.spawn_maintenance(every, purge_every)?;
        }
        Ok(cache)
    }

    /// Start the maintenance thread. It holds only a weak reference between runs, so it never
    /// keeps the cache alive; dropping the last handle stops it and waits for a run in
    /// progress to end.
    #[cfg(not(loom))]
    fn spawn_maintenance(&self, every: Duration, purge_every: Duration) -> Result<(), BuildError> {
        let weak = Arc::downgrade(&self.inner);
        let purge_nanos = u64::try_from(purge_every.as_nanos()).unwrap_or(u64::MAX);
        let mut last_purge = self.inner.clock.now();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let (end_tx, ended) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("cogwheel-maintenance".into())
            .spawn(move || {
                let _ending = end_tx; // dropped when the thread ends, whatever the way
                loop {
                    std::thread::park_timeout(every);
                    if stopped.load(std::sync::atomic::Ordering::Acquire) {
                        return;
                    }
                    let Some(inner) = weak.upgrade() else { return };
                    // A panicking listener must not end the thread (expiry would then stop
                    // firing without traffic); its panic has nowhere else to go.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        inner.maintain(true)
                    }));
                    // Apart from the expiry run, so a panicking listener does not put it off.
                    if let Some(store) = &inner.store {
                        let now = inner.clock.now();
                        if now.saturating_sub(last_purge) >= purge_nanos {
                            last_purge = now;
                            // A failure (or a panicking store) is tried again next period.
                            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                store.purge_expired(inner.clock.wall())
                            }));
                        }
                    }
                }
            })
            .map_err(|e| {
                BuildError::Invalid(format!("cannot start the maintenance thread: {e}"))
            })?;
        *self
            .inner
            .maintenance
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Maintenance {
            thread,
            stop,
            ended,
        });
        Ok(())
    }

    #[inline]
    fn shard(&self, hash: u64) -> &Shard<K, V> {
        &self.inner.shards[hash::shard_index(hash, self.inner.shard_bits)]
    }

    #[inline]
    fn hash<Q: Hash + ?Sized>(&self, key: &Q) -> u64 {
        hash::hash_one(&self.inner.hasher, key)
    }

    /// The value for `key`, if present and not expired. Never takes a lock.
    #[inline]
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let inner = &*self.inner;
        let hash = self.hash(key);
        let guard = inner.reclaim.pin();
        let found = self.read(hash, key, &guard);
        drop(guard);
        if found.is_some() {
            inner.counters.incr(Counter::Hits);
        } else {
            // A miss is often followed by an insert of the key: start the fetch of the ghost
            // slot its admission reads.
            self.shard(hash).prefetch_ghost(hash);
            inner.counters.incr(Counter::Misses);
        }
        found
    }

    /// The values for many keys, in order; like calling [`get`](Self::get) for each, only
    /// faster for batches: the whole call pins the epoch once (a `get` pays a fenced
    /// instruction each time), and the table lines of keys a few places ahead are fetched
    /// while earlier keys are looked up, so their cache misses overlap instead of queueing.
    ///
    /// Reads are lock-free as in `get`; each key is read at some moment during the call (a
    /// write that races with the call may or may not be seen, key by key). Stats count a hit
    /// or a miss per key. Long batches re-pin every few thousand keys, so a huge call does not
    /// hold back memory reclamation.
    ///
    /// ```
    /// use cogwheel::Cache;
    ///
    /// let cache: Cache<u32, &str> = Cache::builder().max_capacity(100).build().unwrap();
    /// cache.insert(1, "one").unwrap();
    /// cache.insert(3, "three").unwrap();
    /// assert_eq!(cache.get_many(&[1, 2, 3]), vec![Some("one"), None, Some("three")]);
    /// ```
    pub fn get_many<'k, Q, I>(&self, keys: I) -> Vec<Option<V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized + 'k,
        I: IntoIterator<Item = &'k Q>,
    {
        /// How far ahead a key's home group is fetched, and (half as far) its entries.
        const AHEAD: usize = 16;
        /// Keys read under one pin before it is renewed.
        const REPIN: usize = 4096;
        let inner = &*self.inner;
        let keys: Vec<(u64, &Q)> = keys.into_iter().map(|k| (self.hash(k), k)).collect();
        let mut out = Vec::with_capacity(keys.len());
        let mut guard = inner.reclaim.pin();
        for &(h, _) in keys.iter().take(AHEAD) {
            self.shard(h).prefetch_home_hint(h);
        }
        let mut hits = 0;
        for (i, &(hash, key)) in keys.iter().enumerate() {
            if i % REPIN == REPIN - 1 {
                guard.repin();
            }
            if let Some(&(h, _)) = keys.get(i + AHEAD) {
                self.shard(h).prefetch_home_hint(h);
            }
            if let Some(&(h, _)) = keys.get(i + AHEAD / 2) {
                self.shard(h).prefetch_candidates(h, &guard);
            }
            let v = self.read(hash, key, &guard);
            hits += u64::from(v.is_some());
            out.push(v);
        }
        drop(guard);
        inner.counters.add(Counter::Hits, hits);
        inner
            .counters
            .add(Counter::Misses, keys.len() as u64 - hits);
        out
    }

    /// The read of `get`: the live value of `key`, marking it referenced (and extending its
    /// idle deadline). No stats.
    #[inline(always)]
    fn read<Q>(&self, hash: u64, key: &Q, guard: &Guard) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let inner = &*self.inner;
        self.shard(hash)
            .lookup(hash, |k| k.borrow() == key, guard)
            .and_then(|hit| {
                let e = hit.entry;
                let d = e.deadline();
                // Entries that cannot expire skip the clock entirely.
                if d != time::NEVER {
                    let now = inner.clock.now();
                    if d <= now {
                        return None;
                    }
                    if let Some(tti) = inner.tti_nanos {
                        e.extend_idle(now, tti, inner.tti_slack);
                    }
                }
                hit.touch();
                Some(e.value.clone())
            })
    }

    /// Whether `key` is present and not expired. Does not count as a use of the entry.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let inner = &*self.inner;
        let hash = self.hash(key);
        let guard = inner.reclaim.pin();
        match self.shard(hash).peek(hash, |k| k.borrow() == key, &guard) {
            Some(e) => !inner.is_expired(e),
            None => false,
        }
    }

    /// Remove every entry from the cache; a backing store keeps its records (a `fetch` reads
    /// them back; use [`remove`](Self::remove) to delete from the store too). Loads in flight
    /// (`get_with` and friends) still answer their callers, but their values are not cached.
    ///
    /// A listener that panics does not stop the sweep: every entry is removed and reported,
    /// and the first panic reaches the caller at the end (so for `invalidate_if` and
    /// `run_pending_tasks`).
    pub fn invalidate_all(&self) {
        // A load in flight may have read its source before the change this sweep stands
        // for: its value goes to its waiters, not into the cache.
        self.inner.loader.invalidate_all();
        let mut first_panic = None;
        for shard in self.inner.shards.iter() {
            let guard = self.inner.reclaim.pin();
            let mut out = Removals::new();
            shard.clear(&guard, &mut out);
            for (e, _) in out.iter() {
                // An entry past its deadline had already expired; it was not removed.
                let cause = self.inner.removal_cause(e);
                self.inner.report_caught(e, cause, &mut first_panic);
            }
        }
        resume(first_panic);
    }

    /// Remove every entry for which `predicate` returns true; returns how many were removed.
    /// Only the cache is swept: a backing store keeps its records.
    ///
    /// The predicate runs without any lock held (it may use the cache). An entry replaced
    /// between the predicate's verdict and the removal is kept: the verdict was about the old
    /// value. Loads in flight are not cached, as with
    /// [`invalidate_all`](Self::invalidate_all). A panicking listener does not stop it.
    pub fn invalidate_if(&self, mut predicate: impl FnMut(&K, &V) -> bool) -> usize {
        // As in `invalidate_all`; a load's value is not known yet, so every load in flight
        // is kept out of the cache, whether or not the predicate would have chosen it.
        self.inner.loader.invalidate_all();
        let (mut removed, mut first_panic) = (0, None);
        for shard in self.inner.shards.iter() {
            let guard = self.inner.reclaim.pin();
            let doomed: Vec<EntryRef<'_, K, V>> = shard
                .entries(&guard)
                // Expired entries are no longer in the cache: not offered (maintenance
                // reclaims them, as `Expired`).
                .filter(|e| !self.inner.is_expired(*e) && predicate(&e.key, &e.value))
                .collect();
            for e in doomed {
                if shard.remove_exact(self.hash(&e.key), e, &guard) {
                    // An entry that expired while the predicate ran was no longer in the
                    // cache: it expired, it was not removed (nor counted here).
                    let cause = self.inner.removal_cause(e);
                    removed += usize::from(cause == RemovalCause::Removed);
                    self.inner.report_caught(e, cause, &mut first_panic);
                }
            }
        }
        resume(first_panic);
        removed
    }

    /// A weakly consistent iterator over owned `(key, value)` pairs: it sees every entry
    /// present for its whole run, and may or may not see entries inserted or removed while it
    /// runs. It never returns an expired entry.
    pub fn iter(&self) -> Iter<'_, K, V, S> {
        Iter {
            cache: self,
            shard: 0,
            buf: Vec::new().into_iter(),
        }
    }

    /// The number of entries (expired entries not yet reclaimed included). Never more than
    /// `max_capacity` (entry-bounded caches).
    pub fn len(&self) -> usize {
        self.inner.shards.iter().map(|s| s.len()).sum()
    }

    /// Whether the cache holds no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The total weight of the entries (their count, without a weigher). Never more than
    /// `max_weight`.
    pub fn weighted_size(&self) -> u64 {
        self.inner.shards.iter().map(|s| s.weight()).sum()
    }

    /// Do pending maintenance now: reclaim every expired entry (calling the listener for
    /// each). Waits for each shard's lock in turn. Writes do a little of this work each, and
    /// a maintenance thread (see [`CacheBuilder::maintenance_interval`]) does it without
    /// traffic; call this when you want it done at a precise moment (for example in tests).
    /// A panicking listener does not stop it (see [`invalidate_all`](Self::invalidate_all)).
    pub fn run_pending_tasks(&self) {
        self.inner.maintain(false);
    }

    /// Delete the backing store's expired records, judged by the cache's clock; returns how
    /// many went (0 without a store, or for a store that expires records itself). Expired
    /// records are never served; this gives their space back. A maintenance thread does it
    /// every [`purge_store_every`](CacheBuilder::purge_store_every).
    pub fn purge_expired_records(&self) -> Result<usize, Error> {
        let Some(store) = &self.inner.store else {
            return Ok(0);
        };
        store
            .purge_expired(self.inner.clock.wall())
            .map_err(Error::from)
    }

    /// A snapshot of the statistics.
    pub fn stats(&self) -> Stats {
        let mut s = Stats::from_counters(&self.inner.counters);
        if let Some(wb) = &self.inner.wb {
            let (writes, errors, dead, retries) = wb.counts();
            s.store_writes += writes;
            s.store_write_errors += errors;
            s.dead_letters = dead;
            s.write_retries = retries;
            s.dirty = wb.dirty_count() as u64;
            s.oldest_dirty_nanos = wb
                .oldest_dirty()
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        }
        s
    }

    /// The capacity the cache was built with (entries, or weight).
    pub fn capacity(&self) -> u64 {
        self.inner.capacity
    }

    /// Testing aid: check every internal invariant (table ↔ policy bookkeeping, policy
    /// rings and weights) and panic naming the first one broken. Takes each shard's lock in
    /// turn; not for production paths.
    #[doc(hidden)]
    pub fn validate_internals(&self) {
        let guard = self.inner.reclaim.pin();
        for s in self.inner.shards.iter() {
            s.validate(&guard);
        }
    }

    /// Rebuild every shard's table now (loom models of a rebuild racing readers).
    #[cfg(loom)]
    #[doc(hidden)]
    pub fn __force_rebuild(&self) {
        let guard = self.pin();
        for s in self.inner.shards.iter() {
            s.force_rebuild(&guard);
        }
    }

    /// Hand this thread's deferred drops to the epoch and run a collection (advance the
    /// epoch if every pinned thread allows it, run what has expired): loom models use it to
    /// make reclamation happen inside the model instead of at the cache's drop.
    #[cfg(loom)]
    #[doc(hidden)]
    pub fn __collect(&self) {
        self.pin().flush();
    }

    /// Pin this cache's epoch (for iteration).
    fn pin(&self) -> Guard {
        self.inner.reclaim.pin()
    }
}

impl<K: Eq + Clone + 'static, V: Clone + 'static, S> Inner<K, V, S> {
    #[inline]
    fn weigh(&self, key: &K, value: &V) -> u32 {
        self.weigher.as_ref().map_or(1, |w| w(key, value))
    }

    /// Reclaim expired entries in every shard. With `try_only`, shards whose lock is taken are
    /// skipped (the maintenance thread never waits for a writer).
    fn maintain(&self, try_only: bool) {
        const BUDGET: usize = 1024;
        let now = self.clock.now();
        let mut first_panic = None;
        for shard in self.shards.iter() {
            loop {
                let guard = self.reclaim.pin();
                let mut out = Removals::new();
                let done = if try_only {
                    shard.try_run_expiry(now, BUDGET, &guard, &mut out)
                } else {
                    shard.run_expiry(now, BUDGET, &guard, &mut out)
                };
                for (e, cause) in out.iter() {
                    self.report_caught(e, cause, &mut first_panic);
                }
                if done {
                    break;
                }
            }
        }
        resume(first_panic);
    }

    /// [`report_one`](Self::report_one) for sweeps, which must finish even when a listener
    /// panics: the first panic is kept for the caller to resume once the sweep is done.
    #[inline]
    fn report_caught(
        &self,
        e: EntryRef<'_, K, V>,
        cause: RemovalCause,
        first_panic: &mut Option<Box<dyn std::any::Any + Send>>,
    ) {
        // Counting cannot panic; only the listener call is caught (and only paid for when
        // there is a listener: most writes replace a value in a cache without one).
        self.count_removal(cause);
        if let Some(l) = &self.listener {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.call_listener(l, e, cause)
            }));
            if let Err(p) = r {
                first_panic.get_or_insert(p);
            }
        }
    }

    /// Count a write's removals and call the listener; never called with a shard lock held.
    /// `now` is the write's own reading of the clock.
    /// A panicking listener (or key or value `Clone`, for a held-back call) does not cost the
    /// other removals their calls and counts: the first panic goes on after all of them.
    fn report(&self, removed: &Removals<'_, K, V>, now: &time::LazyNow<'_>) {
        let mut first_panic = None;
        for (e, cause) in removed.iter() {
            // A victim already past its deadline had expired: the policy chose it before the
            // write's expiry step reached it. (Entries without a deadline skip the clock.)
            let cause = if cause == RemovalCause::Evicted && now.passed(e.deadline()) {
                RemovalCause::Expired
            } else {
                cause
            };
            self.report_caught(e, cause, &mut first_panic);
        }
        if let Some(p) = first_panic {
            std::panic::resume_unwind(p);
        }
    }

    /// The cause of an explicit removal of `e`: `Expired` if it was already past its deadline.
    pub(crate) fn removal_cause(&self, e: EntryRef<'_, K, V>) -> RemovalCause {
        if self.is_expired(e) {
            RemovalCause::Expired
        } else {
            RemovalCause::Removed
        }
    }

    /// Count one removal and call the listener for it.
    fn report_one(&self, e: EntryRef<'_, K, V>, cause: RemovalCause) {
        self.count_removal(cause);
        if let Some(l) = &self.listener {
            self.call_listener(l, e, cause);
        }
    }

    #[inline]
    fn count_removal(&self, cause: RemovalCause) {
        match cause {
            RemovalCause::Evicted => self.counters.incr(Counter::EvictedSize),
            RemovalCause::Expired => self.counters.incr(Counter::EvictedExpired),
            RemovalCause::Removed => self.counters.incr(Counter::Removals),
            RemovalCause::Replaced => {}
        }
    }

    /// Call the listener now, or hold the call back while this thread holds a lock.
    fn call_listener(&self, l: &Listener<K, V>, e: EntryRef<'_, K, V>, cause: RemovalCause) {
        if crate::listener::held() {
            let (l, k, v) = (std::sync::Arc::clone(l), e.key.clone(), e.value.clone());
            crate::listener::defer(Box::new(move || l(&k, &v, cause)));
        } else {
            l(&e.key, &e.value, cause);
        }
    }

    /// Hold this thread's listener calls while it holds a lock a listener could need. Also
    /// without a listener of its own: another cache's listener, called while this lock is
    /// held (from `compute`'s closure, say), may write to this cache.
    pub(crate) fn hold_listeners(&self) -> crate::listener::Hold {
        crate::listener::hold()
    }

    /// Lock `hash`'s key stripe, holding listener calls until it is released (a listener
    /// may write to a key of the same stripe).
    pub(crate) fn lock_key(&self, hash: u64) -> KeyLock<'_> {
        KeyLock {
            lock: self.key_locks.lock(hash),
            _hold: self.hold_listeners(),
        }
    }

    /// [`lock_key`](Self::lock_key) for a warm restart's load, which writes only the cache:
    /// not counted as a write, and `None` instead of waiting (see [`KeyLocks`]).
    pub(crate) fn try_lock_key_uncounted(&self, hash: u64) -> Option<KeyLock<'_>> {
        Some(KeyLock {
            lock: self.key_locks.try_lock_uncounted(hash)?,
            _hold: self.hold_listeners(),
        })
    }
}

impl<K, V, S> Inner<K, V, S> {
    /// Whether `e` is past its deadline (entries that never expire skip the clock).
    #[inline]
    fn is_expired(&self, e: EntryRef<'_, K, V>) -> bool {
        time::LazyNow::new(&self.clock).passed(e.deadline())
    }

    /// The deadlines of an entry written at `now` with `ttl` (or the default).
    fn expiry_for(&self, now: u64, ttl: Option<Duration>) -> Expiry {
        let expires_at = ttl.map_or(time::NEVER, |t| time::deadline(now, t));
        let idle = self
            .tti_nanos
            .map_or(time::NEVER, |i| now.saturating_add(i));
        Expiry {
            deadline: expires_at.min(idle),
            expires_at,
        }
    }
}

impl<K, V, S> Clone for Cache<K, V, S> {
    fn clone(&self) -> Self {
        #[cfg(not(loom))]
        self.inner
            .handles
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Cache {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K, V, S> fmt::Debug for Cache<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let len: usize = self.inner.shards.iter().map(|s| s.len()).sum();
        f.debug_struct("Cache")
            .field("len", &len)
            .field("capacity", &self.inner.capacity)
            .field("shards", &self.inner.shards.len())
            .finish_non_exhaustive()
    }
}

/// Go on with a panic a sweep kept until it was done.
fn resume(first_panic: Option<Box<dyn std::any::Any + Send>>) {
    if let Some(p) = first_panic {
        std::panic::resume_unwind(p);
    }
}
