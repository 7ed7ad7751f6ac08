//! Write-behind: dirty entries travel from the writers that dirtied them to the one writer
//! thread that flushes them to the backing store.
//!
//! The hand-off is [`mpsc::MpscQueue`], an intrusive lock-free queue whose nodes are the
//! entries themselves; an entry is enqueued only on its clean→dirty transition, so the queue
//! never holds more nodes than the cache holds entries (DESIGN §3.5).

// Consumed by the write-behind writer, which lands separately; until then only the unit tests
// and the loom models use the queue.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) mod mpsc;
