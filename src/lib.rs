//! cogwheel: a concurrent cache for latency-critical paths.
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
pub use cache::{Cache, Compute, Iter};
pub use error::{BuildError, Error};

pub use hash::{DefaultHashBuilder, fixed_hasher};
pub use listener::RemovalCause;
pub use loader::LoadError;
pub use policy::EvictionPolicy;
pub use stats::Stats;
pub use time::{Clock, ManualClock};

/// Internals for the loom models in `loom-tests/` (a `--cfg loom` build only; not API).
#[cfg(loom)]
#[doc(hidden)]
pub mod __loom {
    pub use crate::loader::{LoadError, Loaded, Loader, Origin};
    pub use crate::reclaim::release_thread_handles;
    pub use crate::write_behind::mpsc::{MpscQueue, Node, TryPopError};
}
