//! The public cache handle.

use crate::builder::CacheBuilder;
use crate::entry::Entry;
use crate::error::Error;
use crate::hash::{self, DefaultHashBuilder};
use crate::listener::{Listener, RemovalCause, Weigher};
use crate::reclaim::{Guard, Reclaimer};
use crate::shard::{InsertOutcome, Removed, Shard};
use crate::stats::{Counter, Counters, Stats};
use crate::sync::Arc;
use crate::time::{self, Clock};
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
    /// Whether any entry can expire (reads only consult the clock if so).
    expiring: bool,
    time_to_live: Option<Duration>,
    time_to_idle: Option<Duration>,
    capacity: u64,
    weigher: Option<Weigher<K, V>>,
    listener: Option<Listener<K, V>>,
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
    pub(crate) fn from_builder(b: CacheBuilder<K, V, S>, capacity: u64, shards: usize) -> Self {
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
        let inner = Inner {
            shards: shard_list,
            shard_bits: shards.trailing_zeros(),
            hasher: b.hasher,
            reclaim: Reclaimer::new(),
            counters: Counters::new(stripes),
            clock: b.clock,
            expiring: b.time_to_live.is_some() || b.time_to_idle.is_some(),
            time_to_live: b.time_to_live,
            time_to_idle: b.time_to_idle,
            capacity,
            weigher: b.weigher,
            listener: b.listener,
        };
        Cache {
            inner: Arc::new(inner),
        }
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
        let now = if inner.expiring {
            Some(inner.clock.now())
        } else {
            None
        };
        let guard = inner.reclaim.pin();
        let found = self
            .shard(hash)
            .get(hash, |k| k.borrow() == key, now, &guard)
            .map(|e| e.value.clone());
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
            Some(e) => !inner.expiring || !e.is_expired(inner.clock.now()),
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

    fn insert_with(&self, key: K, value: V, ttl: Option<Duration>) -> Result<(), Error> {
        let inner = &*self.inner;
        if inner.capacity == 0 {
            return Ok(());
        }
        let weight = inner.weigher.as_ref().map_or(1, |w| w(&key, &value));
        let now = if inner.expiring { inner.clock.now() } else { 0 };
        let deadline = match (ttl, inner.time_to_idle) {
            (None, None) => time::NEVER,
            (Some(t), None) => time::deadline(now, t),
            (None, Some(i)) => time::deadline(now, i),
            (Some(t), Some(i)) => time::deadline(now, t).min(time::deadline(now, i)),
        };
        let hash = self.hash(&key);
        let guard = inner.reclaim.pin();
        let mut out = Vec::new();
        let outcome = self
            .shard(hash)
            .insert(hash, key, value, weight, deadline, now, &guard, &mut out);
        self.report(&out);
        drop(guard);
        match outcome {
            InsertOutcome::Inserted => {
                inner.counters.incr(Counter::Inserts);
                Ok(())
            }
            InsertOutcome::Replaced => {
                inner.counters.incr(Counter::Updates);
                Ok(())
            }
            InsertOutcome::TooHeavy => {
                inner.counters.incr(Counter::Refused);
                Err(Error::TooHeavy)
            }
            InsertOutcome::Full => Err(Error::Full),
        }
    }

    /// Remove `key`, returning its value if it was present (and not expired).
    ///
    /// Without a backing store this never fails.
    pub fn remove<Q>(&self, key: &Q) -> Result<Option<V>, Error>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let inner = &*self.inner;
        let hash = self.hash(key);
        let guard = inner.reclaim.pin();
        let Some(e) = self.shard(hash).remove(hash, |k| k.borrow() == key, &guard) else {
            return Ok(None);
        };
        let expired = inner.expiring && e.is_expired(inner.clock.now());
        let cause = if expired {
            RemovalCause::Expired
        } else {
            RemovalCause::Removed
        };
        self.report(&[(e, cause)]);
        Ok(if expired { None } else { Some(e.value.clone()) })
    }

    /// Remove `key` without returning its value.
    pub fn invalidate<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let _ = self.remove(key);
    }

    /// Remove every entry.
    pub fn invalidate_all(&self) {
        for shard in self.inner.shards.iter() {
            let guard = self.inner.reclaim.pin();
            let mut out = Vec::new();
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
                    self.report(&[(e, RemovalCause::Removed)]);
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

    /// A snapshot of the statistics.
    pub fn stats(&self) -> Stats {
        Stats::from_counters(&self.inner.counters)
    }

    /// The capacity the cache was built with (entries, or weight).
    pub fn capacity(&self) -> u64 {
        self.inner.capacity
    }

    /// Count removals and call the listener; never called with a shard lock held.
    fn report(&self, removed: &[Removed<'_, K, V>]) {
        let inner = &*self.inner;
        for (e, cause) in removed {
            match cause {
                RemovalCause::Evicted => inner.counters.incr(Counter::EvictedSize),
                RemovalCause::Expired => inner.counters.incr(Counter::EvictedExpired),
                RemovalCause::Removed => inner.counters.incr(Counter::Removals),
                RemovalCause::Replaced => {}
            }
            if let Some(l) = &inner.listener {
                l(&e.key, &e.value, *cause);
            }
        }
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

    /// Pin this cache's epoch (for iteration).
    fn pin(&self) -> Guard {
        self.inner.reclaim.pin()
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
            let now = if inner.expiring {
                Some(inner.clock.now())
            } else {
                None
            };
            let items: Vec<(K, V)> = shard
                .entries(&guard)
                .filter(|e| now.is_none_or(|n| !e.is_expired(n)))
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
