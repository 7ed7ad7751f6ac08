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
mod hash;
mod listener;
mod policy;
mod reclaim;
mod shard;
mod stats;
pub mod store;
mod sync;
mod table;
mod time;

pub use builder::{CacheBuilder, MAX_SHARDS};
pub use cache::{Cache, Iter};
pub use error::{BuildError, Error};
pub use hash::{DefaultHashBuilder, fixed_hasher};
pub use listener::RemovalCause;
pub use policy::EvictionPolicy;
pub use stats::Stats;
pub use time::{Clock, ManualClock};
