//! The public cache handle.

mod flush;
mod load;

pub use load::{Compute, Preload};

use crate::builder::CacheBuilder;
use crate::entry::{Entry, Expiry};
use crate::error::{BuildError, Error};
use crate::hash::{self, DefaultHashBuilder};
use crate::key_locks::KeyLocks;
use crate::listener::{Listener, RemovalCause, Weigher};
use crate::loader::Loader;
use crate::reclaim::{Guard, Reclaimer};
use crate::shard::{Cond, InsertOutcome, Pin, Removals, Shard};
use crate::stats::{Counter, Counters, Stats};
use crate::store::{BackingStore, StoreErrorKind, WriteOp};
use crate::sync::Arc;
use crate::time::{self, Clock};
use crate::write_behind::{Pending, WriteBehindState, WritePolicy};
use std::borrow::Borrow;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::time::{Duration, SystemTime};

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
    /// The maintenance thread, unparked on drop so it notices and exits.
    #[cfg(not(loom))]
    maintenance: std::sync::OnceLock<std::thread::Thread>,
}

impl<K, V, S> Drop for Inner<K, V, S> {
    fn drop(&mut self) {
        #[cfg(not(loom))]
        if let Some(t) = self.maintenance.get() {
            t.unpark();
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
                Shard::new(
                    b.policy,
                    cap,
                    usize::try_from(expected).unwrap_or(usize::MAX / 2),
                )
            })
            .collect();
        #[cfg(loom)]
        let stripes = 1;
        #[cfg(not(loom))]
        let stripes = 4 * std::thread::available_parallelism().map_or(1, |p| p.get());
        let b_maintenance = b.maintenance_interval;
        let wb = match (&b.write_policy, &b.store) {
            (WritePolicy::WriteBehind(cfg), Some(store)) => Some(
                WriteBehindState::new(
                    cfg.clone(),
                    std::sync::Arc::clone(store),
                    b.dead_letter.clone(),
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
            maintenance: std::sync::OnceLock::new(),
        };
        let cache = Cache {
            inner: Arc::new(inner),
        };
        #[cfg(not(loom))]
        if let Some(every) = b_maintenance {
            cache.spawn_maintenance(every)?;
        }
        Ok(cache)
    }

    /// Start the maintenance thread. It holds only a weak reference between runs, so it never
    /// keeps the cache alive, and it is unparked by the cache's drop so it exits promptly.
    #[cfg(not(loom))]
    fn spawn_maintenance(&self, every: Duration) -> Result<(), BuildError> {
        let weak = Arc::downgrade(&self.inner);
        let thread = std::thread::Builder::new()
            .name("cogwheel-maintenance".into())
            .spawn(move || {
                loop {
                    std::thread::park_timeout(every);
                    let Some(inner) = weak.upgrade() else { return };
                    inner.maintain(true);
                }
            })
            .map_err(|e| {
                BuildError::Invalid(format!("cannot start the maintenance thread: {e}"))
            })?;
        let _ = self.inner.maintenance.set(thread.thread().clone());
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
        let found = match self.shard(hash).lookup(hash, |k| k.borrow() == key, &guard) {
            Some(hit) => {
                let e = hit.entry;
                let d = e.deadline();
                // Entries that cannot expire skip the clock entirely.
                if d == time::NEVER {
                    hit.touch();
                    Some(e.value.clone())
                } else {
                    let now = inner.clock.now();
                    if d <= now {
                        None
                    } else {
                        if let Some(tti) = inner.tti_nanos {
                            e.extend_idle(now, tti, inner.tti_slack);
                        }
                        hit.touch();
                        Some(e.value.clone())
                    }
                }
            }
            None => None,
        };
        drop(guard);
        inner.counters.incr(if found.is_some() {
            Counter::Hits
        } else {
            Counter::Misses
        });
        found
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

    /// Insert or replace `key`'s value, with the default time-to-live.
    ///
    /// Without a backing store this fails only for an entry heavier than a shard can hold
    /// ([`Error::TooHeavy`]; a previous value of the key is then removed, since the caller
    /// meant to replace it). With capacity 0 it succeeds and stores nothing.
    pub fn insert(&self, key: K, value: V) -> Result<(), Error> {
        self.insert_with(key, value, self.inner.time_to_live)
    }

    /// Insert or replace `key`'s value with its own time-to-live (instead of the builder's
    /// default). A zero TTL means the value is not stored: any previous value of the key is
    /// removed (reported as `Replaced`).
    ///
    /// ```
    /// use cogwheel::{Cache, ManualClock};
    /// use std::time::{Duration, SystemTime};
    ///
    /// let clock = ManualClock::new();
    /// let cache: Cache<&str, u32> = Cache::builder().max_capacity(10).clock(clock.clone()).build().unwrap();
    /// cache.insert_with_ttl("session", 7, Duration::from_secs(30)).unwrap();
    /// clock.advance(Duration::from_secs(29));
    /// assert_eq!(cache.get("session"), Some(7));
    /// clock.advance(Duration::from_secs(1));
    /// assert_eq!(cache.get("session"), None);
    /// ```
    pub fn insert_with_ttl(&self, key: K, value: V, ttl: Duration) -> Result<(), Error> {
        self.insert_with(key, value, Some(ttl))
    }

    fn insert_with(&self, key: K, value: V, ttl: Option<Duration>) -> Result<(), Error> {
        let hash = self.hash(&key);
        let Some(store) = &self.inner.store else {
            self.inner.loader.invalidate(hash, &key);
            return self
                .write_local(hash, key, value, ttl, Cond::Always)
                .map(|_| ());
        };
        if let Some(wb) = &self.inner.wb {
            return self.insert_behind(wb, hash, key, value, ttl);
        }
        // Write-through: store first, cache only on success. The key's lock orders writers of
        // one key, so the store and the cache see their writes in the same order.
        self.refuse_too_heavy(hash, &key, &value)?;
        let _key_lock = self.inner.key_locks.lock(hash);
        let op = if ttl == Some(Duration::ZERO) {
            WriteOp::Delete { key: &key }
        } else {
            let expires_at = ttl.and_then(|t| SystemTime::now().checked_add(t));
            WriteOp::Put {
                key: &key,
                value: &value,
                expires_at,
            }
        };
        self.write_through(store.as_ref(), hash, &key, op)?;
        self.inner.loader.invalidate(hash, &key);
        self.write_local(hash, key, value, ttl, Cond::Always)
            .map(|_| ())
    }

    /// An entry heavier than its shard can ever hold is refused before any store I/O.
    fn refuse_too_heavy(&self, hash: u64, key: &K, value: &V) -> Result<(), Error> {
        let inner = &*self.inner;
        if self.shard(hash).capacity() < u64::from(inner.weigh(key, value)) {
            inner.counters.incr(Counter::Refused);
            return Err(Error::TooHeavy);
        }
        Ok(())
    }

    /// One write-through store call (the caller holds the key's lock). On `Unknown` the cache
    /// forgets the key: the store may hold the new state or the old one, and serving either
    /// from the cache could be wrong.
    fn write_through(
        &self,
        store: &dyn BackingStore<K, V>,
        hash: u64,
        key: &K,
        op: WriteOp<'_, K, V>,
    ) -> Result<(), Error> {
        let inner = &*self.inner;
        match store.write_batch(&[op]) {
            Ok(()) => {
                inner.counters.incr(Counter::StoreWrites);
                Ok(())
            }
            Err(e) => {
                inner.counters.incr(Counter::StoreWriteErrors);
                if e.kind() == StoreErrorKind::Unknown {
                    inner.loader.invalidate(hash, key);
                    self.remove_local(hash, key);
                }
                Err(Error::from(e))
            }
        }
    }

    /// Write-behind insert: record the write (pinning the key), then publish it in memory.
    fn insert_behind(
        &self,
        wb: &WriteBehindState<K, V>,
        hash: u64,
        key: K,
        value: V,
        ttl: Option<Duration>,
    ) -> Result<(), Error> {
        let inner = &*self.inner;
        self.refuse_too_heavy(hash, &key, &value)?;
        wb.reserve(hash, &key)?;
        let _key_lock = inner.key_locks.lock(hash);
        let op = if ttl == Some(Duration::ZERO) {
            Pending::Delete
        } else {
            Pending::Put(
                value.clone(),
                ttl.and_then(|t| SystemTime::now().checked_add(t)),
            )
        };
        // Record first: from here on the key is pinned, so the entry published next cannot be
        // evicted before the writer has stored it.
        wb.record(hash, &key, op);
        inner.loader.invalidate(hash, &key);
        loop {
            match self.write_local(hash, key.clone(), value.clone(), ttl, Cond::Always) {
                // Every evictable entry of the shard is dirty: wait for the writer (never spin).
                Err(Error::Full) => wb.wait_for_progress()?,
                r => return r.map(|_| ()),
            }
        }
    }

    /// Write into the cache only (no store, no loader invalidation).
    fn write_local(
        &self,
        hash: u64,
        key: K,
        value: V,
        ttl: Option<Duration>,
        cond: Cond,
    ) -> Result<InsertOutcome, Error> {
        let inner = &*self.inner;
        if inner.capacity == 0 {
            return Ok(InsertOutcome::Unchanged);
        }
        let weight = inner.weigh(&key, &value);
        let now = inner.clock.now();
        let exp = inner.expiry_for(now, ttl);
        if exp.deadline <= now {
            // Expired on arrival (a zero TTL): not stored, and the superseded value goes.
            if cond == Cond::Always {
                let guard = inner.reclaim.pin();
                if let Some(e) = self.shard(hash).remove(hash, |k| *k == key, &guard) {
                    self.report_one(e, RemovalCause::Replaced);
                }
            }
            return Ok(InsertOutcome::Unchanged);
        }
        let guard = inner.reclaim.pin();
        let mut out = Removals::new();
        let pin_fn = |k: &K, h: u64| inner.wb.as_ref().is_some_and(|wb| wb.is_dirty(h, k));
        let pin: Pin<'_, K> = if inner.wb.is_some() {
            Some(&pin_fn)
        } else {
            None
        };
        let outcome = self.shard(hash).insert(
            hash, key, value, weight, exp, now, cond, pin, &guard, &mut out,
        );
        self.report(&out);
        drop(guard);
        match outcome {
            InsertOutcome::Inserted => inner.counters.incr(Counter::Inserts),
            InsertOutcome::Replaced => inner.counters.incr(Counter::Updates),
            InsertOutcome::TooHeavy => {
                inner.counters.incr(Counter::Refused);
                return Err(Error::TooHeavy);
            }
            InsertOutcome::Full => return Err(Error::Full),
            InsertOutcome::Unchanged => {}
        }
        Ok(outcome)
    }

    /// Remove from the cache only; the live value, if there was one.
    fn remove_local<Q>(&self, hash: u64, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let inner = &*self.inner;
        let guard = inner.reclaim.pin();
        let e = self
            .shard(hash)
            .remove(hash, |k| k.borrow() == key, &guard)?;
        let expired = inner.is_expired(e);
        let cause = if expired {
            RemovalCause::Expired
        } else {
            RemovalCause::Removed
        };
        self.report_one(e, cause);
        if expired { None } else { Some(e.value.clone()) }
    }

    /// Remove `key`, returning its value if it was present (and not expired).
    ///
    /// With a backing store the key is deleted from the store first (write-through); the
    /// cache forgets it only if the store said `Ok`, or if the outcome is unknown. Without a
    /// store this never fails.
    pub fn remove<Q>(&self, key: &Q) -> Result<Option<V>, Error>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let inner = &*self.inner;
        let hash = self.hash(key);
        let Some(store) = &inner.store else {
            inner.loader.invalidate(hash, key);
            return Ok(self.remove_local(hash, key));
        };
        let owned = key.to_owned();
        if let Some(wb) = &inner.wb {
            // An ordered delete record: the store sees put / remove / put of one key in order.
            wb.reserve(hash, key)?;
            let _key_lock = inner.key_locks.lock(hash);
            wb.record(hash, &owned, Pending::Delete);
            inner.loader.invalidate(hash, key);
            return Ok(self.remove_local(hash, key));
        }
        let _key_lock = inner.key_locks.lock(hash);
        self.write_through(
            store.as_ref(),
            hash,
            &owned,
            WriteOp::Delete { key: &owned },
        )?;
        inner.loader.invalidate(hash, key);
        Ok(self.remove_local(hash, key))
    }

    /// Remove `key` without returning its value (from the store too, if there is one; a store
    /// error is ignored here, use [`remove`](Self::remove) to see it).
    pub fn invalidate<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let _ = self.remove(key);
    }

    /// Remove every entry.
    pub fn invalidate_all(&self) {
        for shard in self.inner.shards.iter() {
            let guard = self.inner.reclaim.pin();
            let mut out = Removals::new();
            shard.clear(&guard, &mut out);
            self.report(&out);
        }
    }

    /// Remove every entry for which `predicate` returns true; returns how many were removed.
    ///
    /// The predicate runs without any lock held (it may use the cache). An entry replaced
    /// between the predicate's verdict and the removal is kept: the verdict was about the old
    /// value.
    pub fn invalidate_if(&self, mut predicate: impl FnMut(&K, &V) -> bool) -> usize {
        let mut removed = 0;
        for shard in self.inner.shards.iter() {
            let guard = self.inner.reclaim.pin();
            let doomed: Vec<&Entry<K, V>> = shard
                .entries(&guard)
                .filter(|e| predicate(&e.key, &e.value))
                .collect();
            for e in doomed {
                if shard.remove_exact(e, &guard) {
                    removed += 1;
                    self.report_one(e, RemovalCause::Removed);
                }
            }
        }
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
    pub fn run_pending_tasks(&self) {
        self.inner.maintain(false);
    }

    /// A snapshot of the statistics.
    pub fn stats(&self) -> Stats {
        let mut s = Stats::from_counters(&self.inner.counters);
        if let Some(wb) = &self.inner.wb {
            let (writes, errors, dead) = wb.counts();
            s.store_writes += writes;
            s.store_write_errors += errors;
            s.dead_letters = dead;
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

    fn report(&self, removed: &Removals<'_, K, V>) {
        self.inner.report(removed);
    }

    fn report_one(&self, e: &Entry<K, V>, cause: RemovalCause) {
        self.inner.report_one(e, cause);
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

    /// Pin this cache's epoch (for iteration).
    fn pin(&self) -> Guard {
        self.inner.reclaim.pin()
    }
}

impl<K: Eq, V, S> Inner<K, V, S> {
    #[inline]
    fn weigh(&self, key: &K, value: &V) -> u32 {
        self.weigher.as_ref().map_or(1, |w| w(key, value))
    }

    /// Reclaim expired entries in every shard. With `try_only`, shards whose lock is taken are
    /// skipped (the maintenance thread never waits for a writer).
    fn maintain(&self, try_only: bool) {
        const BUDGET: usize = 1024;
        let now = self.clock.now();
        for shard in self.shards.iter() {
            loop {
                let guard = self.reclaim.pin();
                let mut out = Removals::new();
                let done = if try_only {
                    shard.try_run_expiry(now, BUDGET, &guard, &mut out)
                } else {
                    shard.run_expiry(now, BUDGET, &guard, &mut out)
                };
                self.report(&out);
                if done {
                    break;
                }
            }
        }
    }

    /// Count removals and call the listener; never called with a shard lock held.
    fn report(&self, removed: &Removals<'_, K, V>) {
        for (e, cause) in removed.iter() {
            self.report_one(e, cause);
        }
    }

    /// Count one removal and call the listener for it.
    fn report_one(&self, e: &Entry<K, V>, cause: RemovalCause) {
        match cause {
            RemovalCause::Evicted => self.counters.incr(Counter::EvictedSize),
            RemovalCause::Expired => self.counters.incr(Counter::EvictedExpired),
            RemovalCause::Removed => self.counters.incr(Counter::Removals),
            RemovalCause::Replaced => {}
        }
        if let Some(l) = &self.listener {
            l(&e.key, &e.value, cause);
        }
    }
}

impl<K, V, S> Inner<K, V, S> {
    /// Whether `e` is past its deadline (entries that never expire skip the clock).
    #[inline]
    fn is_expired(&self, e: &Entry<K, V>) -> bool {
        let d = e.deadline();
        d != time::NEVER && d <= self.clock.now()
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

/// Iterator returned by [`Cache::iter`].
pub struct Iter<'a, K, V, S = DefaultHashBuilder> {
    cache: &'a Cache<K, V, S>,
    shard: usize,
    buf: std::vec::IntoIter<(K, V)>,
}

impl<K, V, S> Iterator for Iter<'_, K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Clone + Send + Sync + 'static,
{
    type Item = (K, V);

    fn next(&mut self) -> Option<(K, V)> {
        loop {
            if let Some(kv) = self.buf.next() {
                return Some(kv);
            }
            let inner = &*self.cache.inner;
            let shard = inner.shards.get(self.shard)?;
            self.shard += 1;
            // One shard at a time: the guard is held only while copying one shard out, so a
            // slow consumer of the iterator does not hold back reclamation.
            let guard = self.cache.pin();
            let items: Vec<(K, V)> = shard
                .entries(&guard)
                .filter(|e| !inner.is_expired(e))
                .map(|e| (e.key.clone(), e.value.clone()))
                .collect();
            self.buf = items.into_iter();
        }
    }
}

impl<K, V, S> fmt::Debug for Iter<'_, K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iter")
            .field("shard", &self.shard)
            .finish_non_exhaustive()
    }
}
