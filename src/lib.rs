//! cogwheel: a concurrent cache for latency-critical paths.
#![deny(missing_docs)]
#![cfg_attr(loom, allow(dead_code, unreachable_pub))]

#[cfg(all(loom, not(crossbeam_loom)))]
compile_error!("loom builds need RUSTFLAGS=\"--cfg loom --cfg crossbeam_loom\"");
#[cfg(all(loom, not(feature = "loom")))]
compile_error!("--cfg loom needs the `loom` feature; run the loom-tests crate (.ci/loom.sh)");

mod error;
mod hash;
mod policy;
pub mod store;
mod sync;
mod time;
mod write_behind;

pub use error::{BuildError, Error};
pub use hash::{DefaultHashBuilder, fixed_hasher};
pub use policy::EvictionPolicy;
pub use time::{Clock, ManualClock};

/// Internals for the loom models in `loom-tests/` (a `--cfg loom` build only; not API).
#[cfg(loom)]
#[doc(hidden)]
pub mod __loom {
    pub use crate::write_behind::mpsc::{MpscQueue, Node, TryPopError};
}
