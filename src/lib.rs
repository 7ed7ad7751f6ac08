//! cogwheel: a concurrent cache for latency-critical paths.
#![deny(missing_docs)]
#![cfg_attr(loom, allow(dead_code, unreachable_pub))]

#[cfg(all(loom, not(crossbeam_loom)))]
compile_error!("loom builds need RUSTFLAGS=\"--cfg loom --cfg crossbeam_loom\"");
#[cfg(all(loom, not(feature = "loom")))]
compile_error!("--cfg loom needs the `loom` feature; run the loom-tests crate (.ci/loom.sh)");

mod error;
#[allow(dead_code)] // the lead wires the wheel into the shard
mod expiry;
mod hash;
#[allow(dead_code)] // the lead wires the loader into the cache
mod loader;
mod policy;
pub mod store;
mod sync;
mod time;

pub use error::{BuildError, Error};

/// Internals the loom models in `loom-tests/` drive directly; not API. Other branches add their
/// own items here.
#[cfg(loom)]
#[doc(hidden)]
pub mod __loom {
    pub use crate::loader::{LoadError, Loaded, Loader, Origin};
}
pub use hash::{DefaultHashBuilder, fixed_hasher};
pub use policy::EvictionPolicy;
pub use time::{Clock, ManualClock};
