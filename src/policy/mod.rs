//! The seam between a shard and its eviction policy.
//!
//! A policy knows residents only as `u32` tokens and weights; it never sees keys, values or
//! pointers. The shard owns the table and answers the policy's two questions about a resident
//! through [`Residents`]: "was it referenced since you last asked?" (the CLOCK bit readers set)
//! and "is it pinned?" (dirty write-behind entries may not be evicted). Every call happens under
//! the shard's writer lock; readers only ever set the reference bit in the entry.
//!
//! Protocol for the shard:
//! 1. `admit` returns the victims in `evicted` and the new token. The shard removes each victim
//!    from its table *before* storing the new token, because a victim's token may be reused for
//!    the newcomer in the same call.
//! 2. `reweigh` (an update changed an entry's weight) never evicts the token it reweighs.
//! 3. `remove` forgets a resident the shard removed itself (explicit removal, expiry).

pub(crate) mod clock;

/// Index of a policy node; stable while the node lives.
pub(crate) type Token = u32;

/// What a policy may ask the shard about a resident.
pub(crate) trait Residents {
    /// Whether the resident was referenced since the last call; clears the bit.
    fn take_referenced(&mut self, token: Token) -> bool;
    /// Whether the resident must not be evicted now (a dirty write-behind entry).
    fn is_pinned(&self, token: Token) -> bool;
}

/// The outcome of admitting a new resident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Admitted under this token; the victims (if any) are in `evicted`.
    Resident(Token),
    /// Heavier than the shard can ever hold; nothing changed.
    TooHeavy,
    /// Room is needed but every evictable resident is pinned; nothing changed except that
    /// victims already chosen (in `evicted`) must still be removed by the shard.
    AllPinned,
}

/// Which eviction policy a cache uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum EvictionPolicy {
    /// Plain CLOCK (second chance): one reference bit, one hand.
    #[default]
    Clock,
}

/// A shard's policy: a closed set, dispatched by `match` (no virtual calls on the write path).
#[derive(Debug)]
pub(crate) enum Policy {
    Clock(clock::Clock),
}

impl Policy {
    /// A policy bounding the total weight of residents at `capacity`.
    pub(crate) fn new(kind: EvictionPolicy, capacity: u64) -> Self {
        match kind {
            EvictionPolicy::Clock => Policy::Clock(clock::Clock::new(capacity)),
        }
    }

    /// Admit a new resident of `weight` whose key hashes to `hash`, evicting as needed.
    pub(crate) fn admit<R: Residents>(
        &mut self,
        hash: u64,
        weight: u32,
        res: &mut R,
        evicted: &mut Vec<Token>,
    ) -> Admit {
        match self {
            Policy::Clock(p) => p.admit(hash, weight, res, evicted),
        }
    }

    /// A resident's weight changed (its value was replaced). Never evicts `token` itself.
    /// Returns `false` (and changes nothing) when the new weight can never fit.
    pub(crate) fn reweigh<R: Residents>(
        &mut self,
        token: Token,
        weight: u32,
        res: &mut R,
        evicted: &mut Vec<Token>,
    ) -> bool {
        match self {
            Policy::Clock(p) => p.reweigh(token, weight, res, evicted),
        }
    }

    /// Forget a resident the shard removed (explicit removal or expiry).
    pub(crate) fn remove(&mut self, token: Token) {
        match self {
            Policy::Clock(p) => p.remove(token),
        }
    }

    /// Forget everything (residents and history).
    pub(crate) fn clear(&mut self) {
        match self {
            Policy::Clock(p) => p.clear(),
        }
    }

    /// Number of residents.
    pub(crate) fn len(&self) -> usize {
        match self {
            Policy::Clock(p) => p.len(),
        }
    }

    /// Total weight of residents.
    pub(crate) fn weight(&self) -> u64 {
        match self {
            Policy::Clock(p) => p.weight(),
        }
    }

    /// Check every internal invariant; panics with the name of the broken one.
    pub(crate) fn validate(&self) {
        match self {
            Policy::Clock(p) => p.validate(),
        }
    }
}
