//! Loading: single-flight `get_with` / `try_get_with`, read-through `fetch`, and `compute`.

use super::{Cache, Inner};
use crate::entry::EntryRef;
use crate::error::Error;
use crate::hash;
use crate::listener::RemovalCause;
use crate::loader::LoadError;
use crate::reclaim::Guard;
use crate::shard::{Cond, InsertOutcome, entry_id};
use crate::stats::Counter;
use crate::store::{StoreError, WriteOp};
use crate::write_behind::Pending;
use std::borrow::Borrow;
use std::cell::Cell;
use std::convert::Infallible;
use std::hash::{BuildHasher, Hash};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc as StdArc;
use std::time::{Duration, Instant, SystemTime};

/// What a [`Cache::compute`] function decides for the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compute<V> {
    /// Leave the entry as it is (present or absent).
    Keep,
    /// Store this value.
    Put(V),
    /// Remove the entry.
    Remove,
}

/// Why a read-through missed: the store does not hold the key, or failed.
enum FetchMiss {
    Absent,
    Store(StoreError),
}

impl<K, V, S> Cache<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Clone + Send + Sync + 'static,
{
    /// The value for `key`, computing it with `init` on a miss. Concurrent callers that miss
    /// the same key wait for one `init` and share its value; `init` runs with no lock held.
    ///
    /// If `init` panics, the panic reaches this caller and the waiters retry (one of them
    /// runs its own `init`). Calling `get_with` for the same key from inside `init` returns
    /// [`Error::Recursive`] instead of deadlocking. The computed value goes to the cache only
    /// (not to a backing store); a concurrent `insert` or `remove` of the key wins over it.
    ///
    /// ```
    /// use cogwheel::Cache;
    ///
    /// let cache: Cache<u32, String> = Cache::builder().max_capacity(100).build().unwrap();
    /// let v = cache.get_with(7, || "seven".to_string()).unwrap();
    /// assert_eq!(v, "seven");
    /// assert_eq!(cache.get(&7).as_deref(), Some("seven"));
    /// ```
    pub fn get_with(&self, key: K, init: impl FnOnce() -> V) -> Result<V, Error> {
        match self.try_get_with(key, || Ok::<V, Infallible>(init())) {
            Ok(v) => Ok(v),
            Err(LoadError::Recursive) => Err(Error::Recursive),
            Err(LoadError::Failed(e)) => match *e {},
        }
    }

    /// Like [`get_with`](Self::get_with) for a fallible `init`. An error is shared (as
    /// `Arc<E>`) with every caller waiting on the same load, and is never cached: the next
    /// call tries again.
    ///
    /// ```
    /// use cogwheel::{Cache, LoadError};
    ///
    /// let cache: Cache<u32, u32> = Cache::builder().max_capacity(100).build().unwrap();
    /// let r = cache.try_get_with(1, || Err::<u32, _>("backend down"));
    /// assert!(matches!(r, Err(LoadError::Failed(e)) if *e == "backend down"));
    /// assert_eq!(cache.try_get_with(1, || Ok::<_, &str>(10)).unwrap(), 10);
    /// ```
    pub fn try_get_with<E>(
        &self,
        key: K,
        init: impl FnOnce() -> Result<V, E>,
    ) -> Result<V, LoadError<E>>
    where
        E: Send + Sync + 'static,
    {
        if let Some(v) = self.get(&key) {
            return Ok(v);
        }
        let inner = &*self.inner;
        let hash = self.hash(&key);
        let ttl = Cell::new(inner.time_to_live);
        // Listener calls of the publish (which runs under the flight's lock) wait until the
        // load is over: a listener writing this key would invalidate this very flight.
        let _hold = inner.hold_listeners();
        inner
            .loader
            .run(
                hash,
                &key,
                || self.peek_live(hash, &key),
                || {
                    // Write-behind: a pending write is the key's value even out of the cache
                    // (after `invalidate_all`), so `init` does not replace it (read-your-writes).
                    if let Some(wb) = &inner.wb
                        && let Some(Some((v, at))) = wb.pending(hash, &key)
                    {
                        match time_left(at, inner.clock.wall()) {
                            Some(None) => return Ok(v),
                            Some(left) => {
                                ttl.set(left);
                                return Ok(v);
                            }
                            None => {} // expired: as absent
                        }
                    }
                    inner.timed_load(init)
                },
                |v| {
                    let ttl = ttl.get();
                    let _ = self.write_local(hash, key.clone(), v.clone(), ttl, Cond::IfAbsent);
                },
            )
            .map(|l| l.value)
    }

    /// Read-through: the value for `key` from the cache, or else from the backing store
    /// (one load per key at a time, shared by concurrent callers), which then populates the
    /// cache. `Ok(None)` when neither holds it. A store error is returned, never cached.
    /// Without a store this is [`get`](Self::get).
    pub fn fetch<Q>(&self, key: &Q) -> Result<Option<V>, Error>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if let Some(v) = self.get(key) {
            return Ok(Some(v));
        }
        let inner = &*self.inner;
        let Some(store) = &inner.store else {
            return Ok(None);
        };
        let hash = self.hash(key);
        let owned = key.to_owned();
        // The stored deadline, handed from `init` to `publish` (both run on this thread).
        let remaining: Cell<Option<Duration>> = Cell::new(None);
        // Whether the value came from the store (and not from a pending write).
        let from_store = Cell::new(false);
        // Listener calls of the publish wait until the load is over (see `try_get_with`).
        let _hold = inner.hold_listeners();
        let r = inner.loader.run(
            hash,
            &owned,
            || self.peek_live(hash, key),
            || {
                // A pending write-behind write or delete is the truth; the store may be
                // stale. Looked up only now that this load is registered: a write or remove
                // that records after this look invalidates the load (its value is then not
                // published), and one that recorded before it is seen here.
                if let Some(wb) = &inner.wb
                    && let Some(pending) = wb.pending(hash, key)
                {
                    let (v, at) = pending.ok_or(FetchMiss::Absent)?;
                    remaining.set(time_left(at, inner.clock.wall()).ok_or(FetchMiss::Absent)?);
                    return Ok(v);
                }
                from_store.set(true);
                // Only a store error is a failed load: an absent (or expired) record is an
                // answer, and `fetch` returns it as `None`.
                let stored = inner
                    .timed_load(|| store.load(&owned))
                    .map_err(FetchMiss::Store)?
                    .ok_or(FetchMiss::Absent)?;
                remaining.set(
                    time_left(stored.expires_at, inner.clock.wall()).ok_or(FetchMiss::Absent)?,
                );
                Ok(stored.value)
            },
            |v| {
                if from_store.get() {
                    inner.counters.incr(Counter::StoreHits);
                }
                let ttl = match (remaining.get(), inner.time_to_live) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                let _ = self.write_local(hash, owned.clone(), v.clone(), ttl, Cond::IfAbsent);
            },
        );
        match r {
            Ok(l) => Ok(Some(l.value)),
            Err(LoadError::Recursive) => Err(Error::Recursive),
            Err(LoadError::Failed(miss)) => match &*miss {
                FetchMiss::Absent => Ok(None),
                FetchMiss::Store(e) => Err(Error::Store(StdArc::new(StoreError::shared(e)))),
            },
        }
    }

    /// Atomically read-modify-write one key: `f` sees the current value (or `None`) and
    /// decides what happens. Returns the value the key holds afterwards.
    ///
    /// Calls for the same key are serialized. `f` runs with no shard lock held; if a plain
    /// `insert` or `remove` of the key lands while `f` runs, `f` is called again with the new
    /// value, so its decision is always applied to the value it saw. `f` may read other keys,
    /// but must not write this key itself (its own write would change the value `f` saw, so
    /// `f` would be called again, and again). Writing other keys from `f` can deadlock: the
    /// call holds a lock for its key's stripe, and a write-through write or `compute` of
    /// another key takes that key's, so two threads doing this in opposite order wait for each
    /// other (as with `ConcurrentHashMap::compute` in Java). With a backing store, a `Put`
    /// or `Remove` goes to the store first (written through, or recorded for write-behind);
    /// from then on it is decided and lands in the cache even if a read-through load filled
    /// the key meanwhile. A `Remove` also deletes a key the cache does not hold (`f` saw
    /// `None`, but the store may have it); a value heavier than its shard can hold is refused
    /// before any store I/O, as by `insert`.
    ///
    /// ```
    /// use cogwheel::{Cache, Compute};
    ///
    /// let hits: Cache<&str, u64> = Cache::builder().max_capacity(100).build().unwrap();
    /// for _ in 0..3 {
    ///     hits.compute("page", |n| Compute::Put(n.copied().unwrap_or(0) + 1)).unwrap();
    /// }
    /// assert_eq!(hits.get("page"), Some(3));
    /// ```
    pub fn compute(
        &self,
        key: K,
        mut f: impl FnMut(Option<&V>) -> Compute<V>,
    ) -> Result<Option<V>, Error> {
        let inner = &*self.inner;
        let hash = self.hash(&key);
        let _key_lock = inner.lock_key(hash);
        loop {
            let guard = inner.reclaim.pin();
            let cur = self
                .shard(hash)
                .peek(hash, |k| *k == key, &guard)
                .filter(|e| !inner.is_expired(*e));
            let id = entry_id(cur);
            match f(cur.map(|e| &e.head().value)) {
                Compute::Keep => return Ok(cur.map(|e| e.value.clone())),
                Compute::Put(v) => {
                    // A zero time-to-live keeps nothing: as with `insert`, the put supersedes
                    // the old value, and the store gets a delete.
                    let dead = inner.time_to_live == Some(Duration::ZERO);
                    if dead && inner.store.is_none() {
                        if self.take_current(hash, &key, cur, &guard, RemovalCause::Replaced) {
                            return Ok(None);
                        }
                        continue;
                    }
                    let expires_at = inner
                        .time_to_live
                        .and_then(|t| inner.clock.wall().checked_add(t));
                    // With a store the write is decided once the store has it (or, behind, once
                    // it is recorded for it): it then lands in the cache whatever a load
                    // published meanwhile (loads are not writes; plain writers of the key wait
                    // on the key lock this call holds). Without a store a changed key is
                    // decided again on its new value.
                    let decided = inner.store.is_some();
                    let weight = if decided {
                        // Refused before any store I/O, as `insert` does.
                        self.refuse_too_heavy(hash, &key, &v)?
                    } else {
                        inner.weigh(&key, &v)
                    };
                    // The cache's copies, made before the store or the record gets the write
                    // (see `insert_behind`).
                    let mut copies = Some((key.clone(), v.clone()));
                    if let Some(wb) = &inner.wb {
                        // Write-behind: record it (pinning the key), so the record and the
                        // cache agree on the latest write.
                        wb.reserve(hash, &key)?;
                        let op = if dead {
                            Pending::Delete
                        } else {
                            Pending::Put(v.clone(), expires_at)
                        };
                        wb.record(hash, &key, op)?;
                    } else if let Some(store) = &inner.store {
                        let op = if dead {
                            WriteOp::Delete { key: &key }
                        } else {
                            WriteOp::Put {
                                key: &key,
                                value: &v,
                                expires_at,
                            }
                        };
                        self.write_through(store.as_ref(), hash, &key, op)?;
                    }
                    inner.loader.invalidate(hash, &key);
                    let cond = if decided {
                        Cond::Always
                    } else {
                        Cond::IfCurrent(id)
                    };
                    let out = loop {
                        let (k, val) = copies.take().unwrap_or_else(|| (key.clone(), v.clone()));
                        match self.write_local_weighed(
                            hash,
                            k,
                            val,
                            weight,
                            inner.time_to_live,
                            cond,
                        ) {
                            // Every evictable entry of the shard is dirty: wait for the writer.
                            Err(Error::Full) => match &inner.wb {
                                Some(wb) => self.wait_after_record(wb, hash, &key)?,
                                None => return Err(Error::Full),
                            },
                            r => break r?,
                        }
                    };
                    if out != InsertOutcome::Unchanged {
                        return Ok(Some(v));
                    }
                    // Unchanged: either the cache does not keep the value at all (capacity 0,
                    // a zero TTL), or (without a store) a load filled the key meanwhile. Only
                    // the second is decided again; the first would loop forever.
                    let now_id = entry_id(
                        self.shard(hash)
                            .peek(hash, |k| *k == key, &guard)
                            .filter(|e| !inner.is_expired(*e)),
                    );
                    if decided || now_id == id {
                        return Ok(None);
                    }
                }
                Compute::Remove => {
                    if inner.store.is_none() {
                        if self.take_current(hash, &key, cur, &guard, RemovalCause::Removed) {
                            return Ok(None);
                        }
                        continue;
                    }
                    // With a store the delete goes there whether or not the cache held the
                    // key (it may be in the store only), and once there it is decided.
                    if let Some(wb) = &inner.wb {
                        wb.reserve(hash, &key)?;
                        wb.record(hash, &key, Pending::Delete)?;
                    } else if let Some(store) = &inner.store {
                        self.write_through(
                            store.as_ref(),
                            hash,
                            &key,
                            WriteOp::Delete { key: &key },
                        )?;
                    }
                    inner.loader.invalidate(hash, &key);
                    drop(guard);
                    self.remove_local(hash, &key);
                    return Ok(None);
                }
            }
            // A plain write changed the key while `f` ran: decide again on the new value.
        }
    }

    /// `compute` without a store, taking the key out of the cache: `cur`, the live entry its
    /// closure saw, leaves as `cause` (or as `Expired`, if it expired while the closure ran).
    /// `false` if the key changed meanwhile (the closure must decide again). Loads in flight
    /// are marked stale even when `cur` is `None`: they must not publish over the decision.
    fn take_current(
        &self,
        hash: u64,
        key: &K,
        cur: Option<EntryRef<'_, K, V>>,
        guard: &Guard,
        cause: RemovalCause,
    ) -> bool {
        let inner = &*self.inner;
        inner.loader.invalidate(hash, key);
        let Some(e) = cur else { return true };
        if !self.shard(hash).remove_exact(hash, e, guard) {
            return false;
        }
        let cause = match inner.removal_cause(e) {
            RemovalCause::Removed => cause,
            expired => expired,
        };
        inner.report_one(e, cause);
        true
    }

    /// The live value of a key, without counting a hit or touching the entry.
    pub(super) fn peek_live<Q>(&self, hash: u64, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let inner = &*self.inner;
        let guard = inner.reclaim.pin();
        let e = self.shard(hash).peek(hash, |k| k.borrow() == key, &guard)?;
        if inner.is_expired(e) {
            None
        } else {
            Some(e.value.clone())
        }
    }
}

impl<K: Eq, V, S> Inner<K, V, S> {
    /// Run a loader, counting it, its failures (errors and panics) and its time.
    fn timed_load<T, E>(&self, init: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        self.counters.incr(Counter::Loads);
        let start = Instant::now();
        let r = panic::catch_unwind(AssertUnwindSafe(init));
        self.counters.add(
            Counter::LoadNanos,
            u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX),
        );
        match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.counters.incr(Counter::LoadFailures);
                Err(e)
            }
            Err(p) => {
                self.counters.incr(Counter::LoadFailures);
                panic::resume_unwind(p)
            }
        }
    }
}

/// Progress of a warm restart (see [`Cache::preload`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Preload {
    /// Entries read from the store so far.
    pub scanned: u64,
    /// Entries put into the cache so far.
    pub loaded: u64,
    /// Entries skipped: expired, refused by the filter, already in the cache, or possibly
    /// older than a write made while the scan ran.
    pub skipped: u64,
    /// Records the store holds but could not decode: not loaded, and counted here rather than
    /// in `skipped`, because they point at a damaged store or a changed codec.
    pub corrupt: u64,
}

impl<K, V, S> Cache<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Clone + Send + Sync + 'static,
{
    /// Warm restart: fill the cache from the backing store's contents (its `scan`), up to the
    /// cache's capacity, keeping each entry's remaining time-to-live. `filter` chooses which
    /// entries to load; `progress` is called after every entry. Entries already in the cache
    /// are kept (the cache is newer than the store), and loading never evicts: a record whose
    /// shard has no room left is skipped, and the scan stops once every shard has turned one
    /// away. Without a store, nothing happens.
    ///
    /// Safe to run while the cache is in use: a record that a write made during the scan may
    /// have outdated is skipped, never loaded over the write (the check is per stripe of keys,
    /// so heavy write traffic during the scan makes it skip more).
    ///
    /// ```
    /// use cogwheel::Cache;
    /// use cogwheel::store::MemoryStore;
    ///
    /// let store = MemoryStore::new();
    /// store.insert(1u64, 10u64, None);
    /// let cache: Cache<u64, u64> = Cache::builder().max_capacity(100).store(store).build().unwrap();
    /// let done = cache.preload(|_, _| true, |_| {}).unwrap();
    /// assert_eq!(done.loaded, 1);
    /// assert_eq!(cache.get(&1), Some(10));
    /// ```
    pub fn preload(
        &self,
        mut filter: impl FnMut(&K, &V) -> bool,
        mut progress: impl FnMut(Preload),
    ) -> Result<Preload, Error> {
        let inner = &*self.inner;
        let Some(store) = &inner.store else {
            return Ok(Preload::default());
        };
        let mut p = Preload::default();
        // The scan reads the store without key locks, so a record may be older than a write
        // that lands while it runs (a write-through insert or remove, or a pending
        // write-behind write reaching the store). Such records are skipped: their key's stripe
        // saw a writer since this point, or a writer holds it now, or the key was pending here
        // (in this order: a write recorded after the counts were noted is counted itself).
        let counts = inner.key_locks.write_counts();
        let pending = inner.wb.as_ref().map(|wb| wb.pending_keys());
        // Shards that turned a record away for lack of room; once all have, the scan stops.
        // (Loads never evict, so a shard whose weights do not add up to its capacity exactly
        // still counts as full.)
        let mut full = vec![false; inner.shards.len()];
        let mut full_count = 0;
        store.scan(&mut |item| {
            p.scanned += 1;
            let (key, stored) = match item {
                Ok(record) => record,
                // Counted and passed over: one bad record must not keep the rest out (a
                // `load` of its key still reports the error).
                Err(_) => {
                    p.corrupt += 1;
                    progress(p);
                    return true;
                }
            };
            // Judged per record, at its turn: a long scan must not lend records time.
            let ttl = match time_left(stored.expires_at, inner.clock.wall()) {
                Some(None) => inner.time_to_live,
                Some(Some(left)) => Some(inner.time_to_live.map_or(left, |t| t.min(left))),
                // Expired while the cache was down.
                None => Some(Duration::ZERO),
            };
            let hash = self.hash(&key);
            let loaded = ttl != Some(Duration::ZERO)
                && filter(&key, &stored.value)
                && !pending.as_ref().is_some_and(|keys| keys.contains(&key))
                // A stripe held by a writer right now: the record may be outdated by it.
                && inner.try_lock_key_uncounted(hash).is_some_and(|held| {
                    inner.key_locks.unwritten_since(&counts, hash, &held.lock)
                        && match self.write_local(hash, key, stored.value, ttl, Cond::IfRoom) {
                            Ok(InsertOutcome::Inserted) => true,
                            Ok(InsertOutcome::NoRoom) => {
                                let index = hash::shard_index(hash, inner.shard_bits);
                                if !std::mem::replace(&mut full[index], true) {
                                    full_count += 1;
                                }
                                false
                            }
                            _ => false,
                        }
                });
            if loaded {
                p.loaded += 1;
            } else {
                p.skipped += 1;
            }
            progress(p);
            // Bounded by capacity: stop once every shard is full.
            full_count < full.len() && self.weighted_size() < inner.capacity
        })?;
        Ok(p)
    }
}

/// Time left at `now` (the cache clock's wall time) until a wall-clock deadline: `Some(None)`
/// for none (never expires), `Some(Some(left))`, or `None` once it has passed.
fn time_left(at: Option<SystemTime>, now: SystemTime) -> Option<Option<Duration>> {
    match at {
        None => Some(None),
        Some(at) => match at.duration_since(now) {
            Ok(left) if !left.is_zero() => Some(Some(left)),
            _ => None,
        },
    }
}
