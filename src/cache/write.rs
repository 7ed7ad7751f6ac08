//! The write paths: memory only, write-through (store first), write-behind (record, then
//! memory), and removal.

use super::{Cache, Removals};
use crate::entry::Expiry;
use crate::error::Error;
use crate::listener::RemovalCause;
use crate::shard::{Cond, InsertOutcome, Pin};
use crate::stats::Counter;
use crate::store::{BackingStore, StoreErrorKind, WriteOp};
use crate::time::LazyNow;
use crate::write_behind::{Pending, WriteBehindState};
use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};
use std::time::Duration;

impl<K, V, S> Cache<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Clone + Send + Sync + 'static,
{
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

    pub(super) fn insert_with(&self, key: K, value: V, ttl: Option<Duration>) -> Result<(), Error> {
        let hash = self.hash(&key);
        // The shard's probe reads this line first. Whatever comes before it (the pin and the
        // lock; in write-behind also the pending record) then hides part of the miss.
        self.shard(hash).prefetch_home_hint(hash);
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
        let weight = self.refuse_too_heavy(hash, &key, &value)?;
        let _key_lock = self.inner.lock_key(hash);
        let op = if ttl == Some(Duration::ZERO) {
            WriteOp::Delete { key: &key }
        } else {
            let expires_at = ttl.and_then(|t| self.inner.clock.wall().checked_add(t));
            WriteOp::Put {
                key: &key,
                value: &value,
                expires_at,
            }
        };
        self.write_through(store.as_ref(), hash, &key, op)?;
        self.inner.loader.invalidate(hash, &key);
        self.write_local_weighed(hash, key, value, weight, ttl, Cond::Always)
            .map(|_| ())
    }

    /// An entry heavier than its shard can ever hold is refused before any store I/O.
    /// Returns the entry's weight, which the write then uses: the weigher runs once per write,
    /// so the check and the cache cannot disagree about it.
    pub(super) fn refuse_too_heavy(&self, hash: u64, key: &K, value: &V) -> Result<u32, Error> {
        let inner = &*self.inner;
        let weight = inner.weigh(key, value);
        // A cache of capacity 0 keeps nothing, so nothing is too heavy for it; the store still
        // gets the write.
        if inner.capacity != 0 && self.shard(hash).capacity() < u64::from(weight) {
            inner.counters.incr(Counter::Refused);
            return Err(Error::TooHeavy);
        }
        Ok(weight)
    }

    /// One write-through store call (the caller holds the key's lock). On `Unknown` (or a
    /// panic in the store) the cache forgets the key: the store may hold the new state or the
    /// old one, and serving either from the cache could be wrong.
    pub(super) fn write_through(
        &self,
        store: &dyn BackingStore<K, V>,
        hash: u64,
        key: &K,
        op: WriteOp<'_, K, V>,
    ) -> Result<(), Error> {
        let inner = &*self.inner;
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| store.write_batch(&[op])));
        let result = match result {
            Ok(r) => r,
            // A panicking store may have applied the write: as for `Unknown`, the cache
            // forgets the key before the panic goes on to the caller.
            Err(panic) => {
                inner.counters.incr(Counter::StoreWriteErrors);
                inner.loader.invalidate(hash, key);
                self.remove_local(hash, key);
                std::panic::resume_unwind(panic);
            }
        };
        match result {
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
    pub(super) fn insert_behind(
        &self,
        wb: &WriteBehindState<K, V>,
        hash: u64,
        key: K,
        value: V,
        ttl: Option<Duration>,
    ) -> Result<(), Error> {
        let inner = &*self.inner;
        let weight = self.refuse_too_heavy(hash, &key, &value)?;
        wb.reserve(hash, &key)?;
        let _key_lock = inner.lock_key(hash);
        let op = if ttl == Some(Duration::ZERO) {
            Pending::Delete
        } else {
            Pending::Put(
                value.clone(),
                ttl.and_then(|t| self.inner.clock.wall().checked_add(t)),
            )
        };
        // The copies the cache keeps are made before the record: a `Clone` that panics then
        // leaves neither the store nor the cache changed, where after the record the cache
        // would go on serving the value the recorded write superseded.
        let mut copies = Some((key.clone(), value.clone()));
        // Record first: from here on the key is pinned, so the entry published next cannot be
        // evicted before the writer has stored it.
        wb.record(hash, &key, op)?;
        inner.loader.invalidate(hash, &key);
        loop {
            let (k, v) = copies
                .take()
                .unwrap_or_else(|| (key.clone(), value.clone()));
            match self.write_local_weighed(hash, k, v, weight, ttl, Cond::Always) {
                // Every evictable entry of the shard is dirty: wait for the writer (never spin).
                Err(Error::Full) => self.wait_after_record(wb, hash, &key)?,
                r => return r.map(|_| ()),
            }
        }
    }

    /// A recorded write-behind write found its shard full of dirty entries: wait for the
    /// writer. If that fails (manual mode: the round this thread ran failed), the write stays
    /// recorded and reaches the store with a later flush; the cache forgets the key's older
    /// value, which it must no longer serve, and the caller gets the error.
    pub(super) fn wait_after_record(
        &self,
        wb: &WriteBehindState<K, V>,
        hash: u64,
        key: &K,
    ) -> Result<(), Error> {
        wb.wait_for_progress().inspect_err(|_| {
            self.remove_local(hash, key);
        })
    }

    /// Write into the cache only (no store, no loader invalidation).
    pub(super) fn write_local(
        &self,
        hash: u64,
        key: K,
        value: V,
        ttl: Option<Duration>,
        cond: Cond,
    ) -> Result<InsertOutcome, Error> {
        let weight = self.inner.weigh(&key, &value);
        self.write_local_weighed(hash, key, value, weight, ttl, cond)
    }

    /// [`write_local`](Self::write_local) of an entry already weighed.
    pub(super) fn write_local_weighed(
        &self,
        hash: u64,
        key: K,
        value: V,
        weight: u32,
        ttl: Option<Duration>,
        cond: Cond,
    ) -> Result<InsertOutcome, Error> {
        let inner = &*self.inner;
        if inner.capacity == 0 {
            return Ok(InsertOutcome::Unchanged);
        }
        let now = LazyNow::new(&inner.clock);
        let exp = if ttl.is_none() && inner.tti_nanos.is_none() {
            Expiry::NEVER
        } else {
            inner.expiry_for(now.get(), ttl)
        };
        if now.passed(exp.deadline) {
            // Expired on arrival (a zero TTL): not stored, and the superseded value goes.
            if cond == Cond::Always {
                let guard = inner.reclaim.pin();
                if let Some(e) = self.shard(hash).remove(hash, |k| *k == key, &guard) {
                    // An old value already past its deadline expired; a live one is replaced.
                    let cause = if now.passed(e.deadline()) {
                        RemovalCause::Expired
                    } else {
                        RemovalCause::Replaced
                    };
                    self.inner.report_one(e, cause);
                }
            }
            return Ok(InsertOutcome::Unchanged);
        }
        let guard = inner.reclaim.pin();
        let mut out = Removals::new();
        // Entries do not store their hash: a victim's key is rehashed, only in write-behind.
        let pin_fn = |k: &K| {
            inner
                .wb
                .as_ref()
                .is_some_and(|wb| wb.is_dirty(self.hash(k), k))
        };
        let pin: Pin<'_, K> = if inner.wb.is_some() {
            Some(&pin_fn)
        } else {
            None
        };
        let outcome = self.shard(hash).insert(
            hash, key, value, weight, exp, &now, cond, pin, &guard, &mut out,
        );
        // Counted before the listener runs: a panicking listener does not undo the write.
        match outcome {
            InsertOutcome::Inserted => inner.counters.incr(Counter::Inserts),
            InsertOutcome::Replaced => inner.counters.incr(Counter::Updates),
            InsertOutcome::TooHeavy => inner.counters.incr(Counter::Refused),
            InsertOutcome::Full | InsertOutcome::Unchanged | InsertOutcome::NoRoom => {}
        }
        self.inner.report(&out, &now);
        drop(guard);
        match outcome {
            InsertOutcome::TooHeavy => Err(Error::TooHeavy),
            InsertOutcome::Full => Err(Error::Full),
            _ => Ok(outcome),
        }
    }

    /// Remove from the cache only; the live value, if there was one.
    pub(super) fn remove_local<Q>(&self, hash: u64, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let inner = &*self.inner;
        let guard = inner.reclaim.pin();
        let e = self
            .shard(hash)
            .remove(hash, |k| k.borrow() == key, &guard)?;
        let cause = inner.removal_cause(e);
        self.inner.report_one(e, cause);
        (cause == RemovalCause::Removed).then(|| e.value.clone())
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
            let _key_lock = inner.lock_key(hash);
            wb.record(hash, &owned, Pending::Delete)?;
            inner.loader.invalidate(hash, key);
            return Ok(self.remove_local(hash, key));
        }
        let _key_lock = inner.lock_key(hash);
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
}
