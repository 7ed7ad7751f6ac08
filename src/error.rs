//! Public error types.

use crate::store::StoreError;
use std::fmt;
use std::sync::Arc;

/// A builder setting that cannot work; returned by [`CacheBuilder::build`](crate::CacheBuilder::build).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// Neither `max_capacity` nor `max_weight` was set, or both were.
    Capacity(&'static str),
    /// The shard count is not a power of two, or is zero, or too large.
    Shards(usize),
    /// Another setting is invalid; the message says which and why.
    Invalid(String),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Capacity(m) => write!(f, "capacity: {m}"),
            BuildError::Shards(n) => {
                write!(f, "shards: {n} is not a power of two between 1 and 65536")
            }
            BuildError::Invalid(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for BuildError {}

/// An error from a cache operation. Only operations that involve a backing store (or a limit
/// the caller asked to be told about) can fail.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The backing store failed; see [`StoreError::kind`] for whether it may have applied.
    /// (Shared: a read-through failure reaches every caller waiting on the same load.)
    Store(Arc<StoreError>),
    /// A loader asked for the key it is itself loading (on the same thread).
    Recursive,
    /// The entry is heavier than a shard can ever hold; it was not stored.
    TooHeavy,
    /// Write-behind with [`fail_fast`](crate::WriteBehind::fail_fast): the dirty budget
    /// ([`max_dirty`](crate::WriteBehind::max_dirty)) is used up and this write would dirty
    /// one more key. It was refused before it was recorded: neither the cache nor the store
    /// changed. (Without `fail_fast` such a write waits for the writer thread instead; a write
    /// whose shard is full of dirty entries waits in either mode.)
    Full,
    /// The cache was closed.
    Closed,
    /// A flush (or close) could not write everything: the store failed. `pending` writes are
    /// still waiting (they are retried, not dropped; after `close` they went to the
    /// dead-letter hook), or were given up during the flush as poison (dead-lettered). (In
    /// `manual` write-behind a write waiting for room runs a round itself, and gets this
    /// error when that round fails.)
    Unflushed {
        /// How many writes are not in the store. When writes were given up (handed to the
        /// dead-letter hook) during the flush or close, the number given up; otherwise the
        /// number of keys whose write from before the flush is still not stored (in `manual`
        /// write-behind, where the failed round ran on the calling thread: every key dirty
        /// when it failed).
        pending: usize,
        /// The store's last error.
        cause: Arc<StoreError>,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Store(e) => write!(f, "{e}"),
            Error::TooHeavy => f.write_str("the entry is heavier than a shard can hold"),
            Error::Full => f.write_str("the write-behind dirty budget (max_dirty) is used up"),
            Error::Closed => f.write_str("the cache is closed"),
            Error::Unflushed { pending, cause } => {
                write!(f, "{pending} writes are not in the store yet: {cause}")
            }
            Error::Recursive => f.write_str("a loader asked for the key it is loading"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Store(e) => Some(&**e),
            Error::Unflushed { cause, .. } => Some(&**cause),
            _ => None,
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Error::Store(Arc::new(e))
    }
}
