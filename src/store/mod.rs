//! The backing-store seam: what the cache asks of a store, and how a store reports failure.
//!
//! A store error says whether the operation certainly did nothing ([`StoreErrorKind::Fail`])
//! or may have been applied ([`StoreErrorKind::Unknown`], e.g. a timeout after the request was
//! sent). The write paths depend on that distinction: write-through leaves the cache unchanged
//! on `Fail` but invalidates the key on `Unknown`, so the cache never serves a value the store
//! may not hold.

pub mod codec;
pub mod memory;
#[cfg(feature = "redb")]
pub mod redb;
#[cfg(feature = "redis")]
pub mod redis;

pub use codec::{Codec, PostcardCodec};
pub use memory::{Applied, AppliedOp, CallCounts, FaultKind, Faults, MemoryStore};
#[cfg(feature = "redb")]
pub use redb::{OpenError, RedbStore};
#[cfg(feature = "redis")]
pub use redis::{RedisConfig, RedisStore};

use std::error::Error as StdError;
use std::fmt;
use std::time::SystemTime;

/// Whether a failed store operation may have been applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// Nothing was applied; the store is as it was before the call.
    Fail,
    /// The outcome is unknown: the operation may or may not have been applied.
    Unknown,
}

/// An error from a backing store.
#[derive(Debug)]
pub struct StoreError {
    kind: StoreErrorKind,
    message: String,
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

impl StoreError {
    /// A failure that applied nothing.
    pub fn fail(message: impl Into<String>) -> Self {
        StoreError {
            kind: StoreErrorKind::Fail,
            message: message.into(),
            source: None,
        }
    }

    /// A failure whose effect is unknown (it may have been applied).
    pub fn unknown(message: impl Into<String>) -> Self {
        StoreError {
            kind: StoreErrorKind::Unknown,
            message: message.into(),
            source: None,
        }
    }

    /// Attach the underlying error.
    pub fn with_source(mut self, source: impl StdError + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// A copy for another caller: same kind and message; the source is rendered into the
    /// message (sources are not `Clone`).
    pub(crate) fn shared(e: &StoreError) -> Self {
        StoreError {
            kind: e.kind,
            message: e.to_string(),
            source: None,
        }
    }

    /// Whether the failed operation may have been applied.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    /// The human-readable description.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            StoreErrorKind::Fail => "store failed",
            StoreErrorKind::Unknown => "store outcome unknown",
        };
        write!(f, "{kind}: {}", self.message)?;
        if let Some(s) = &self.source {
            write!(f, ": {s}")?;
        }
        Ok(())
    }
}

impl StdError for StoreError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// One operation of an ordered batch. Operations on the same key must be applied in order.
#[derive(Debug)]
pub enum WriteOp<'a, K, V> {
    /// Store `value` under `key`; `expires_at` is the wall-clock deadline, if the entry has one.
    Put {
        /// The key.
        key: &'a K,
        /// The value.
        value: &'a V,
        /// When the entry expires (wall clock), so the deadline survives a restart.
        expires_at: Option<SystemTime>,
    },
    /// Delete `key` (deleting an absent key is not an error).
    Delete {
        /// The key.
        key: &'a K,
    },
}

impl<K, V> Clone for WriteOp<'_, K, V> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K, V> Copy for WriteOp<'_, K, V> {}

/// A value read from a store, with its wall-clock deadline if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored<V> {
    /// The value.
    pub value: V,
    /// When it expires (wall clock); `None` for never.
    pub expires_at: Option<SystemTime>,
}

/// One record of a [`BackingStore::scan`]: the entry, or why it could not be decoded.
pub type ScanItem<K, V> = Result<(K, Stored<V>), StoreError>;

/// A durable (or shared) second level behind the cache.
///
/// Implementations must be safe to call from several threads at once. `write_batch` applies
/// the operations in order and either applies all of them (`Ok`), none ([`StoreErrorKind::Fail`])
/// or an unknown subset ([`StoreErrorKind::Unknown`]). Every operation is an idempotent put or
/// delete, so a partial apply followed by a retry converges. A retried batch need not be the
/// same batch: write-behind merges writes made meanwhile into it (each key at most once per
/// batch, always its latest write) and, after repeated failures, retries key by key.
pub trait BackingStore<K, V>: Send + Sync + 'static {
    /// Read `key`; `Ok(None)` when the store does not hold it (a miss, not an error).
    fn load(&self, key: &K) -> Result<Option<Stored<V>>, StoreError>;

    /// Apply `ops` in order.
    fn write_batch(&self, ops: &[WriteOp<'_, K, V>]) -> Result<(), StoreError>;

    /// Visit every entry (for warm restart) until `visit` returns `false`. A record the store
    /// holds but cannot decode is visited as an `Err` (so one bad record does not hide the
    /// rest); an `Err` from `scan` itself means the scan could not go on. Stores that cannot
    /// enumerate their contents keep this default, which reports `Fail`.
    fn scan(&self, visit: &mut dyn FnMut(ScanItem<K, V>) -> bool) -> Result<(), StoreError> {
        let _ = visit;
        Err(StoreError::fail("this store cannot scan its contents"))
    }

    /// Delete every record whose deadline is at or before `now` (wall clock); returns how many
    /// went. Expired records are already misses for `load` and `scan`; this gives their space
    /// back. Stores that expire records themselves (Redis) keep this default, which does
    /// nothing.
    fn purge_expired(&self, now: SystemTime) -> Result<usize, StoreError> {
        let _ = now;
        Ok(0)
    }
}
