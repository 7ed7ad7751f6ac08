//! Weakly consistent iteration over owned pairs, one shard at a time.

use super::Cache;
use crate::hash::DefaultHashBuilder;
use crate::time::LazyNow;
use std::fmt;
use std::hash::{BuildHasher, Hash};

/// Iterator returned by [`Cache::iter`].
pub struct Iter<'a, K, V, S = DefaultHashBuilder> {
    pub(super) cache: &'a Cache<K, V, S>,
    pub(super) shard: usize,
    /// The current shard's pairs, each with the deadline it had when copied out.
    pub(super) buf: std::vec::IntoIter<(K, V, u64)>,
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
            let inner = &*self.cache.inner;
            if let Some((k, v, deadline)) = self.buf.next() {
                if !LazyNow::new(&inner.clock).passed(deadline) {
                    return Some((k, v));
                }
                // Past the deadline it had when copied out: a read may have extended it
                // (time-to-idle) or a write replaced the entry since, so ask the cache.
                match self.cache.peek_live(self.cache.hash(&k), &k) {
                    Some(v) => return Some((k, v)),
                    None => continue,
                }
            }
            let shard = inner.shards.get(self.shard)?;
            self.shard += 1;
            // One shard at a time: the guard is held only while copying one shard out, so a
            // slow consumer of the iterator does not hold back reclamation.
            let guard = self.cache.pin();
            let items: Vec<(K, V, u64)> = shard
                .entries(&guard)
                .filter(|e| !inner.is_expired(*e))
                .map(|e| (e.key.clone(), e.value.clone(), e.deadline()))
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
