//! Removal causes and the eviction listener.

use std::sync::Arc;

/// Why an entry left the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RemovalCause {
    /// Its time-to-live or time-to-idle ran out.
    Expired,
    /// It was evicted to keep the cache within its capacity.
    Evicted,
    /// It was removed explicitly (`remove`, `invalidate`, `invalidate_if`, `invalidate_all`).
    Removed,
    /// Its value was replaced by an insert of the same key.
    Replaced,
}

impl RemovalCause {
    /// Whether the cache removed the entry on its own (expiry or size), not at a caller's
    /// request.
    pub fn was_evicted(self) -> bool {
        matches!(self, RemovalCause::Expired | RemovalCause::Evicted)
    }
}

/// The eviction listener: called once per entry that leaves the cache, after the shard's lock
/// is released, on the thread whose operation removed it.
pub(crate) type Listener<K, V> = Arc<dyn Fn(&K, &V, RemovalCause) + Send + Sync + 'static>;

/// The weigher: the weight of an entry, in the unit of `max_weight`.
pub(crate) type Weigher<K, V> = Arc<dyn Fn(&K, &V) -> u32 + Send + Sync + 'static>;
