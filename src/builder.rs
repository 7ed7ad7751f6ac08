//! `CacheBuilder`: settings in, a validated cache out (errors, not panics, for bad settings).

use crate::cache::Cache;
use crate::error::BuildError;
use crate::hash::DefaultHashBuilder;
use crate::listener::{Listener, RemovalCause, Weigher};
use crate::policy::EvictionPolicy;
use crate::store::BackingStore;
use crate::time::Clock;
use crate::write_behind::writer_hook::DeadLetterHook;
use crate::write_behind::{DeadLetter, WritePolicy};
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

/// The default of [`CacheBuilder::purge_store_every`].
const DEFAULT_PURGE_STORE_EVERY: Duration = Duration::from_secs(600);

/// The most shards a cache may have.
pub const MAX_SHARDS: usize = 1 << 16;

/// Fewer entries than this per shard and CLOCK-Pro's hot/cold/test split stops meaning much;
/// the default shard count is halved until each shard holds at least this many.
const MIN_PER_SHARD: u64 = 32;

/// Builds a [`Cache`]. Start from [`Cache::builder`].
///
/// ```
/// use cogwheel::Cache;
///
/// let cache: Cache<String, u64> = Cache::builder().max_capacity(10_000).build().unwrap();
/// cache.insert("a".to_string(), 1).unwrap();
/// assert_eq!(cache.get("a"), Some(1));
/// ```
pub struct CacheBuilder<K, V, S = DefaultHashBuilder> {
    pub(crate) max_capacity: Option<u64>,
    pub(crate) max_weight: Option<u64>,
    pub(crate) weigher: Option<Weigher<K, V>>,
    pub(crate) shards: Option<usize>,
    pub(crate) hasher: S,
    pub(crate) policy: EvictionPolicy,
    pub(crate) clock: Clock,
    pub(crate) time_to_live: Option<Duration>,
    pub(crate) time_to_idle: Option<Duration>,
    pub(crate) listener: Option<Listener<K, V>>,
    pub(crate) maintenance_interval: Option<Duration>,
    pub(crate) purge_store_every: Duration,
    pub(crate) store: Option<Arc<dyn BackingStore<K, V>>>,
    pub(crate) write_policy: WritePolicy,
    pub(crate) dead_letter: Option<DeadLetterHook<K, V>>,
    pub(crate) preload: bool,
    _types: PhantomData<fn(K, V)>,
}

impl<K, V> CacheBuilder<K, V, DefaultHashBuilder> {
    pub(crate) fn new() -> Self {
        CacheBuilder {
            max_capacity: None,
            max_weight: None,
            weigher: None,
            shards: None,
            hasher: DefaultHashBuilder::new(),
            policy: EvictionPolicy::default(),
            clock: Clock::default(),
            time_to_live: None,
            time_to_idle: None,
            listener: None,
            maintenance_interval: None,
            purge_store_every: DEFAULT_PURGE_STORE_EVERY,
            store: None,
            write_policy: WritePolicy::default(),
            dead_letter: None,
            preload: false,
            _types: PhantomData,
        }
    }
}

impl<K, V, S> CacheBuilder<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Clone + Send + Sync + 'static,
{
    /// Bound the cache by number of entries. `len()` never exceeds it. A capacity of 0 makes
    /// a cache that stores nothing (every insert is accepted and immediately forgotten).
    pub fn max_capacity(mut self, entries: u64) -> Self {
        self.max_capacity = Some(entries);
        self
    }

    /// Bound the cache by total weight (see [`weigher`](Self::weigher); without one, every
    /// entry weighs 1). `weighted_size()` never exceeds it.
    pub fn max_weight(mut self, weight: u64) -> Self {
        self.max_weight = Some(weight);
        self
    }

    /// How much an entry weighs, in the unit of [`max_weight`](Self::max_weight). Entries of
    /// weight 0 are allowed and never evicted for size. An entry heavier than one shard's share
    /// of the weight is refused with [`Error::TooHeavy`](crate::Error::TooHeavy).
    pub fn weigher(mut self, f: impl Fn(&K, &V) -> u32 + Send + Sync + 'static) -> Self {
        self.weigher = Some(Arc::new(f));
        self
    }

    /// The number of shards: a power of two from 1 to 65536. By default about four per
    /// available core, fewer for small capacities. A cache uses at most `max_capacity` (or
    /// `max_weight`) shards, rounded down to a power of two, since a shard must have room for
    /// at least one unit. One shard gives the exact sequential
    /// behaviour of the eviction policy (for simulations), at the cost of write concurrency.
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = Some(n);
        self
    }

    /// The eviction policy: adaptive CLOCK-Pro as its authors specified it by default; see
    /// [`EvictionPolicy`] for the variants and when each helps.
    ///
    /// ```
    /// use cogwheel::{Cache, EvictionPolicy};
    ///
    /// // Recency-heavy access (scans that turn back) suits the hot-hits variant.
    /// let cache: Cache<u64, u64> = Cache::builder()
    ///     .max_capacity(1_000)
    ///     .eviction_policy(EvictionPolicy::ClockProHotHits)
    ///     .build()
    ///     .unwrap();
    /// cache.insert(1, 10).unwrap();
    /// assert_eq!(cache.get(&1), Some(10));
    /// ```
    pub fn eviction_policy(mut self, policy: EvictionPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The clock (the system's monotonic clock by default; a [`ManualClock`](crate::ManualClock)
    /// in tests).
    pub fn clock(mut self, clock: impl Into<Clock>) -> Self {
        self.clock = clock.into();
        self
    }

    /// Default time-to-live: an entry expires this long after it was written. A zero TTL
    /// means entries are not stored at all.
    pub fn time_to_live(mut self, ttl: Duration) -> Self {
        self.time_to_live = Some(ttl);
        self
    }

    /// Time-to-idle: an entry expires this long after it was last read or written (and never
    /// after its time-to-live). A read moves the deadline only when that moves it by more than
    /// `min(tti / 1024, 1 ms)`, so concurrent reads of a hot entry do not write its cache line
    /// on every hit; an entry may therefore expire up to that much before `tti` of idleness.
    pub fn time_to_idle(mut self, tti: Duration) -> Self {
        self.time_to_idle = Some(tti);
        self
    }

    /// Called once for every entry that leaves the cache, with the reason, after the shard's
    /// lock is released (so the listener may use the cache). On the thread whose operation
    /// removed the entry; if that operation holds a per-key lock (a write through a store,
    /// `compute`) or is publishing a load, the call waits, with its own copies of key and
    /// value, until the operation has released it, so a listener may write to any key. A
    /// listener that panics does not cost the other waiting calls their turn; its panic
    /// reaches the caller of the operation after they have run.
    pub fn eviction_listener(
        mut self,
        f: impl Fn(&K, &V, RemovalCause) + Send + Sync + 'static,
    ) -> Self {
        self.listener = Some(Arc::new(f));
        self
    }

    /// Start a maintenance thread that reclaims expired entries (and calls the listener for
    /// them) every `every`, so expiry happens even when no one writes. The thread only ever
    /// `try_lock`s a shard (it never makes a caller wait), holds no strong reference to the
    /// cache between runs, and exits when the last handle is dropped. That drop waits for a
    /// run in progress (its listener calls and store purge included), so the cache is fully
    /// closed when it returns; after 10 s it stops waiting (a hung store, or a listener that
    /// waits for a lock the dropping thread holds) and the run finishes on its own thread,
    /// which then closes the cache. Without it, expired
    /// entries are never returned anyway, and are reclaimed by writes and
    /// [`Cache::run_pending_tasks`].
    pub fn maintenance_interval(mut self, every: Duration) -> Self {
        self.maintenance_interval = Some(every);
        self
    }

    /// How often the maintenance thread deletes the backing store's expired records
    /// ([`Cache::purge_expired_records`]), by the cache's clock; default 10 minutes. Expired
    /// records are never served, but a store that does not expire records itself (the redb
    /// store) keeps them on disk until then. Only with a maintenance thread
    /// ([`maintenance_interval`](Self::maintenance_interval)); without one, call
    /// [`Cache::purge_expired_records`] yourself.
    pub fn purge_store_every(mut self, every: Duration) -> Self {
        self.purge_store_every = every;
        self
    }

    /// Put a backing store behind the cache. `insert` and `remove` then write through (store
    /// first; the cache changes only if the store said `Ok`), and [`Cache::fetch`] reads
    /// through on a miss (single-flight).
    pub fn store(mut self, store: impl BackingStore<K, V>) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// How writes reach the store: write-through (the default) or write-behind.
    pub fn write_policy(mut self, policy: WritePolicy) -> Self {
        self.write_policy = policy;
        self
    }

    /// Called for each write-behind write the writer gives up on: a poison key that kept
    /// failing while other writes succeeded, or whatever was still unwritten when the cache
    /// was closed. Nothing is ever dropped without passing through here. A panic in the hook
    /// is caught (the write still counts in `stats().dead_letters`), so it cannot stop the
    /// writer thread. The hook runs on the writer thread (or on the thread that closes the
    /// cache): it must not call `flush` on this cache, which would wait for the writer that
    /// is running the hook, nor write to it while its dirty budget is full.
    pub fn dead_letter(
        mut self,
        f: impl Fn(&K, DeadLetter<V>, &crate::store::StoreError) + Send + Sync + 'static,
    ) -> Self {
        self.dead_letter = Some(Arc::new(f));
        self
    }

    /// Warm restart: when built over a store that already holds data, load it into the
    /// cache (up to the capacity, keeping remaining TTLs) before `build` returns. For a filter
    /// or progress reports, call [`Cache::preload`] instead (it also counts the records that
    /// could not be decoded, which a warm restart skips).
    pub fn preload(mut self, yes: bool) -> Self {
        self.preload = yes;
        self
    }

    /// Use another hasher (for example [`fixed_hasher`](crate::fixed_hasher) for reproducible
    /// layouts).
    pub fn hasher<S2>(self, hasher: S2) -> CacheBuilder<K, V, S2>
    where
        S2: BuildHasher + Clone + Send + Sync + 'static,
    {
        CacheBuilder {
            max_capacity: self.max_capacity,
            max_weight: self.max_weight,
            weigher: self.weigher,
            shards: self.shards,
            hasher,
            policy: self.policy,
            clock: self.clock,
            time_to_live: self.time_to_live,
            time_to_idle: self.time_to_idle,
            listener: self.listener,
            maintenance_interval: self.maintenance_interval,
            purge_store_every: self.purge_store_every,
            store: self.store,
            write_policy: self.write_policy,
            dead_letter: self.dead_letter,
            preload: self.preload,
            _types: PhantomData,
        }
    }

    /// Validate the settings and build the cache.
    pub fn build(self) -> Result<Cache<K, V, S>, BuildError> {
        let capacity = match (self.max_capacity, self.max_weight) {
            (Some(c), None) => {
                if self.weigher.is_some() {
                    return Err(BuildError::Capacity(
                        "a weigher needs max_weight, not max_capacity",
                    ));
                }
                c
            }
            (None, Some(w)) => w,
            (None, None) => return Err(BuildError::Capacity("set max_capacity or max_weight")),
            (Some(_), Some(_)) => {
                return Err(BuildError::Capacity(
                    "set max_capacity or max_weight, not both",
                ));
            }
        };
        let shards = match self.shards {
            Some(n) if n == 0 || !n.is_power_of_two() || n > MAX_SHARDS => {
                return Err(BuildError::Shards(n));
            }
            // A shard with no capacity could hold nothing at all (every entry of weight 1 or
            // more would be refused): a cache never uses more shards than it has units of
            // capacity, entries or weight.
            Some(n) if capacity > 0 => n.min(prev_power_of_two(capacity)),
            Some(n) => n,
            None => default_shards(capacity),
        };
        if matches!(self.write_policy, WritePolicy::WriteBehind(_)) && self.store.is_none() {
            return Err(BuildError::Invalid("write-behind needs a store".into()));
        }
        if self.purge_store_every.is_zero() {
            return Err(BuildError::Invalid(
                "purge_store_every must be longer than zero".into(),
            ));
        }
        if self.maintenance_interval == Some(Duration::ZERO) {
            return Err(BuildError::Invalid(
                "maintenance_interval must be longer than zero".into(),
            ));
        }
        let preload = self.preload;
        let cache = Cache::from_builder(self, capacity, shards)?;
        if preload {
            cache
                .preload(|_, _| true, |_| {})
                .map_err(|e| BuildError::Invalid(format!("warm restart failed: {e}")))?;
        }
        Ok(cache)
    }
}

fn prev_power_of_two(n: u64) -> usize {
    let p = 1u64 << (63 - n.leading_zeros());
    usize::try_from(p).unwrap_or(MAX_SHARDS).min(MAX_SHARDS)
}

/// About four shards per core, halved while a shard would hold fewer than `MIN_PER_SHARD`.
fn default_shards(capacity: u64) -> usize {
    #[cfg(loom)]
    let cores: usize = 1;
    #[cfg(not(loom))]
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut n = (cores * 4).next_power_of_two().min(MAX_SHARDS);
    while n > 1 && capacity / (n as u64) < MIN_PER_SHARD {
        n /= 2;
    }
    n
}

impl<K, V, S> fmt::Debug for CacheBuilder<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheBuilder")
            .field("max_capacity", &self.max_capacity)
            .field("max_weight", &self.max_weight)
            .field("shards", &self.shards)
            .field("policy", &self.policy)
            .field("time_to_live", &self.time_to_live)
            .field("time_to_idle", &self.time_to_idle)
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::Cache;

    #[test]
    fn bad_settings_are_errors() {
        let e = Cache::<u32, u32>::builder().build().unwrap_err();
        assert!(matches!(e, BuildError::Capacity(_)));
        let e = Cache::<u32, u32>::builder()
            .max_capacity(1)
            .max_weight(1)
            .build()
            .unwrap_err();
        assert!(matches!(e, BuildError::Capacity(_)));
        let e = Cache::<u32, u32>::builder()
            .max_capacity(10)
            .shards(3)
            .build()
            .unwrap_err();
        assert_eq!(e, BuildError::Shards(3));
        let e = Cache::<u32, u32>::builder()
            .max_capacity(10)
            .shards(0)
            .build()
            .unwrap_err();
        assert_eq!(e, BuildError::Shards(0));
        let e = Cache::<u32, u32>::builder()
            .max_capacity(10)
            .weigher(|_, _| 1)
            .build()
            .unwrap_err();
        assert!(matches!(e, BuildError::Capacity(_)));
        assert!(!e.to_string().is_empty());
    }

    #[test]
    fn default_shards_shrink_for_small_caches() {
        assert_eq!(default_shards(0), 1);
        assert_eq!(default_shards(31), 1);
        assert!(default_shards(1_000_000) >= 4);
        assert!(default_shards(64) <= 2);
    }
}
