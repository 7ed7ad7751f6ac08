//! Write-behind controls: flush barriers, dirty-key introspection, close.

use super::Cache;
use crate::error::Error;
use crate::write_behind::FlushReport;
use std::hash::{BuildHasher, Hash};
use std::time::Duration;

impl<K, V, S> Cache<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Clone + Send + Sync + 'static,
{
    /// A barrier: when it returns `Ok`, every write that returned before `flush` was called
    /// is in the store, in per-key order. If the store fails meanwhile it returns
    /// [`Error::Unflushed`] with the number of writes still pending (they stay queued and
    /// are retried, never dropped). A flush during which a poison write was given up (handed
    /// to the dead-letter hook) also returns `Unflushed`, counting the writes given up.
    /// Without write-behind there is nothing to wait for.
    pub fn flush(&self) -> Result<FlushReport, Error> {
        match &self.inner.wb {
            Some(wb) => wb.flush(),
            None => Ok(FlushReport::default()),
        }
    }

    /// Flush if at least `threshold` keys are dirty; `Ok(None)` if there were fewer.
    pub fn flush_if_needed(&self, threshold: usize) -> Result<Option<FlushReport>, Error> {
        if self.dirty_count() >= threshold.max(1) {
            self.flush().map(Some)
        } else {
            Ok(None)
        }
    }

    /// Flush if some key has been dirty for at least `age`; `Ok(None)` otherwise.
    pub fn flush_older_than(&self, age: Duration) -> Result<Option<FlushReport>, Error> {
        let oldest = self.inner.wb.as_ref().and_then(|wb| wb.oldest_dirty());
        match oldest {
            Some(a) if a >= age => self.flush().map(Some),
            _ => Ok(None),
        }
    }

    /// How many keys have writes not yet in the store (write-behind).
    pub fn dirty_count(&self) -> usize {
        self.inner.wb.as_ref().map_or(0, |wb| wb.dirty_count())
    }

    /// The keys whose latest write is not yet in the store (write-behind).
    pub fn dirty_keys(&self) -> Vec<K> {
        self.inner
            .wb
            .as_ref()
            .map_or_else(Vec::new, |wb| wb.dirty_keys())
    }

    /// Flush and stop the write-behind writer. What could not be written is handed to the
    /// dead-letter hook and reported in the error. Later writes fail with
    /// [`Error::Closed`]. Dropping the last handle does the same.
    pub fn close(&self) -> Result<FlushReport, Error> {
        match &self.inner.wb {
            Some(wb) => wb.close(),
            None => Ok(FlushReport::default()),
        }
    }
}
