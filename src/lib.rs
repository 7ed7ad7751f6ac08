//! cogwheel: a concurrent, bounded, in-process cache for latency-critical paths, with an
//! optional backing store kept in step by write-through or write-behind.
//!
//! ```
//! use cogwheel::Cache;
//! use std::time::Duration;
//!
//! let cache: Cache<String, u64> = Cache::builder()
//!     .max_capacity(10_000)
//!     .time_to_live(Duration::from_secs(60))
//!     .build()
//!     .unwrap();
//! cache.insert("answer".to_string(), 42).unwrap();
//! assert_eq!(cache.get("answer"), Some(42));
//! let v = cache.get_with("computed".to_string(), || 7).unwrap(); // single-flight on a miss
//! assert_eq!(v, 7);
//! ```
//!
//! # How it works
//!
//! **Reads never wait.** A cache is a power-of-two number of cache-line padded shards. `get`
//! hashes the key once (ahash), picks a shard from the top hash bits, pins the cache's own
//! epoch (crossbeam-epoch), and probes the shard's table: one 64-byte group of seven tag bytes
//! and seven entry pointers at a time, compared with one word operation. A hit sets the
//! entry's CLOCK reference bit only if it is clear, clones the value out and unpins. There is
//! no lock, no read buffer and no shared counter on this path (statistics are striped per
//! thread). The pin is a fenced instruction, and it keeps one lookup's cache misses from
//! overlapping the next one's; `get_many` reads a batch under one pin and prefetches the
//! table lines of keys further on, so their misses overlap.
//!
//! **Writes lock one shard.** Inserting, replacing, evicting and expiring happen under the
//! shard's writer lock. An update publishes a whole new entry and retires the old one through
//! the epoch, so readers always clone a consistent value. Entries never move inside a table;
//! when tombstones pile up the writer builds a new table and retires the old one.
//!
//! **Eviction** is CLOCK-Pro (Jiang, Chen and Zhang, USENIX ATC 2005) with its adaptive cold
//! target, reproducing the authors' simulator exactly on one shard. It runs over `u32` tokens
//! in a per-shard slab, never over pointers. Capacity is split exactly across shards, so
//! `len() <= max_capacity` (or `weighted_size() <= max_weight`) always holds.
//!
//! **Expiry** (time-to-live, per-entry TTL, time-to-idle) is checked on every read, so an
//! expired entry is never returned; a hierarchical timing wheel per shard only reclaims memory
//! and fires the listener, driven by writes, by [`Cache::run_pending_tasks`], or by an
//! optional maintenance thread.
//!
//! **Loading** is single-flight: concurrent misses of one key run one loader and share its
//! value or error; a panicking loader never hangs its waiters.
//!
//! **Backing stores** ([`store`]): write-through (store first, cache on success), write-behind
//! (acknowledged in memory, written in coalesced batches by one writer thread fed by a
//! lock-free MPSC queue; [`Cache::flush`] is a barrier), and read-through ([`Cache::fetch`]).
//! [`store::RedbStore`] is the embedded default; `RedisStore` (feature `redis`) serves many
//! nodes.
//!
//! # What `Ok` means
//!
//! | operation | `Ok` means |
//! |---|---|
//! | `insert`, write-through | the store holds the value; then the cache does |
//! | `insert`, write-behind | every later read in this process sees it; durable after the next successful `flush` |
//! | `flush` | every write that returned before `flush` began is durable, in per-key order |
//! | `remove` | the key is gone from the cache; from the store at once (write-through) or at the next `flush` (write-behind); no read-through resurrects it |
//! | `close` / drop | the queue drained; what could not be written went to the dead-letter hook |
#![deny(missing_docs)]
#![cfg_attr(loom, allow(dead_code, unreachable_pub))]

#[cfg(all(loom, not(crossbeam_loom)))]
compile_error!("loom builds need RUSTFLAGS=\"--cfg loom --cfg crossbeam_loom\"");
#[cfg(all(loom, not(feature = "loom")))]
compile_error!("--cfg loom needs the `loom` feature; run the loom-tests crate (.ci/loom.sh)");

mod builder;
mod cache;
mod entry;
mod error;
#[allow(dead_code)] // the lead wires the wheel into the shard
mod expiry;
mod hash;
mod key_locks;
mod listener;
mod loader;
mod policy;
mod reclaim;
mod shard;
mod stats;
pub mod store;
mod sync;
mod table;
mod time;
mod write_behind;

pub use builder::{CacheBuilder, MAX_SHARDS};
pub use cache::{Cache, Compute, Iter, Preload};
pub use error::{BuildError, Error};

pub use hash::{DefaultHashBuilder, fixed_hasher};
pub use listener::RemovalCause;
pub use loader::LoadError;
pub use policy::EvictionPolicy;
pub use stats::Stats;
pub use time::{Clock, ManualClock};
pub use write_behind::{DeadLetter, FlushReport, WriteBehind, WritePolicy};

/// Internals for the loom models in `loom-tests/` (a `--cfg loom` build only; not API).
#[cfg(loom)]
#[doc(hidden)]
pub mod __loom {
    pub use crate::loader::{LoadError, Loaded, Loader, Origin};
    pub use crate::reclaim::release_thread_handles;
    pub use crate::write_behind::mpsc::{MpscQueue, Node, TryPopError};
    pub use crate::write_behind::wake::{FILLING, IDLE, Wake};
}
