//! Weakly consistent iteration over owned pairs, one shard at a time.

use super::Cache;
use crate::hash::DefaultHashBuilder;
use std::fmt;
use std::hash::{BuildHasher, Hash};

/// Iterator returned by [`Cache::iter`].
pub struct Iter<'a, K, V, S = DefaultHashBuilder> {
    pub(super) cache: &'a Cache<K, V, S>,
    pub(super) shard: usize,
    pub(super) buf: std::vec::IntoIter<(K, V)>,
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
                .filter(|e| !inner.is_expired(*e))
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
