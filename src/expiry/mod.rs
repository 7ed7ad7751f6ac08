//! Expiry bookkeeping of a shard: which tokens come due when.
//!
//! The wheel never decides whether an entry is expired for a reader: the read path compares the
//! entry's own deadline with the clock. The wheel only tells the shard's writer which tokens to
//! reclaim (and whose listeners to fire), in amortized O(1) per token.

pub(crate) mod wheel;

#[allow(unused_imports)] // the lead wires the wheel into the shard
pub(crate) use wheel::TimerWheel;
