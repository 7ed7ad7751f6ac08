//! CLOCK-Pro (Jiang, Chen and Zhang, USENIX ATC 2005), faithful to the authors' simulator.
//!
//! # Structure
//!
//! Every tracked page sits on **one ring** of `u32` slab tokens, in the order of its last
//! move to the head: resident hot pages, resident cold pages (in or out of their test period)
//! and non-resident cold pages that are still in their test period ("ghosts", stored as a
//! key hash only). Three hand positions sweep the ring from older to newer pages:
//!
//! - **HAND_cold** rests on a resident cold page and finds victims. An unreferenced page, or a
//!   page outside its test period, is evicted; if it was in its test period it stays on the
//!   ring as a ghost. A referenced page in its test period is promoted to hot, which runs
//!   HAND_hot once to demote a hot page in exchange.
//! - **HAND_hot** demotes the first unreferenced hot page it meets (referenced hot pages get
//!   their bit cleared and move to the head). When it runs past HAND_test it pushes HAND_test
//!   one step.
//! - **HAND_test** ends test periods; a ghost whose test period ends leaves the ring. It also
//!   keeps the number of ghosts within the bound by removing the oldest ghost.
//!
//! The hands form a strict call order (cold → hot → test, cold → test); none calls back into
//! a hand above it, and every loop carries an explicit step budget, so a corrupted or
//! degenerate state (everything pinned, no hot page at all) ends the loop instead of
//! spinning. The slab tokens double as the shard's resident tokens: a ghost keeps its slot
//! (no resident owns it), a page that leaves the ring frees its slot for reuse.
//!
//! # Fidelity to the authors' simulator
//!
//! The order of operations follows Song Jiang's `clock-pro.c` (2005) as shipped with the
//! LIRS/CLOCK-Pro traces, including its details that the paper does not spell out:
//!
//! - warm-up: the first `capacity − min_cold` misses become hot, the next `min_cold` become
//!   resident cold pages in their test period;
//! - the cold target is kept as *credits* relative to the current cold allocation
//!   (`m_c = cold allocation + credits`): +1 when a ghost (a page in its test period) is
//!   re-referenced and promoted, −1 when a ghost's test period ends unused. HAND_cold spends
//!   one credit per referenced test page it meets (promote without demotion when negative,
//!   demote without promotion when positive, both when zero), and credits are dropped when
//!   the cold allocation already sits on its bound (`[1 %, 99 %]` of the capacity, never
//!   below 2; the fixed variant pins both bounds at `percent`);
//! - a ghost re-reference is not promoted when HAND_hot reaches the ghost itself before it
//!   demotes a hot page (the ghost's test period ends on the way); it is promoted when
//!   HAND_hot demoted a page and then reached it;
//! - a resident cold page outside its test period is evicted even if it was referenced;
//! - HAND_test clears the reference bit of the resident cold pages whose test period it ends;
//! - when HAND_cold spends a positive credit by demoting a hot page and keeping the cold page
//!   cold, the simulator sets the reference bit of the page *after* the cold page on the ring
//!   (a slip in the original that changes results; kept here because the reference misses are
//!   produced with it).
//!
//! With entry-count capacities and the "same key as the previous request is a hit" rule,
//! a one-shard replay reproduces the simulator's miss counts exactly (see the tests).
//!
//! # Reference bits
//!
//! Lock-free readers set the bit in the entry; the policy reads it only through
//! [`Residents::take_referenced`]. Because the simulator sometimes sets a bit itself, each
//! node also has a policy-side bit: the effective bit is the policy bit OR the entry's bit,
//! and reading it folds the entry's bit into the policy bit.
//!
//! # Weights
//!
//! Capacity is in weight units. The free space the simulator counts in pages is
//! `capacity − weight of residents`; a miss evicts until the newcomer fits. Warm-up admits as
//! hot while `free ≥ weight + min_cold`. The cold allocation is `capacity − hot weight` and
//! its bounds are weight units. **How `m_c` adapts under weights:** credits still count
//! *events* (one per ghost hit or expiry) and each credit moves one page between hot and cold,
//! so the target moves by the weight of the pages moved; the bounds are checked in weight
//! units. An item heavier than the capacity is refused ([`Admit::TooHeavy`]). Zero-weight
//! items are resident but never on the ring: they are never evicted for size (only
//! [`ClockPro::remove`] forgets them), and they have no reference history.
//!
//! The ghost bound is the largest number of residents the ring has held (for an entry-count
//! cache that is the capacity, which is the simulator's bound), times a multiplier: 1 in the
//! faithful modes, 4 in `EvictionPolicy::ClockProLongHistory`.
//!
//! # Pinned residents
//!
//! HAND_cold skips pinned pages it would evict, moving each to the head of the ring (a new
//! test period), so the cold pages stay ahead of the hand. When every resident cold page is
//! pinned it evicts the oldest unpinned hot page instead, leaving HAND_cold where it is, and
//! remembers it: until HAND_cold next evicts a cold page, admissions look at only
//! `PINNED_LOOKS` cold pages before doing the same. (Write-behind pins every fresh write, so a
//! burst of writes can pin the whole cold run; demoting the hot page under HAND_cold, as
//! before, sent the hand to the far end of the ring and made it walk back across every hot
//! page.) When nothing at all can be evicted the admission returns [`Admit::AllPinned`]
//! (after a bounded sweep).

use super::{Admit, Residents, Reweigh, Token};

mod ghost_index;

use ghost_index::GhostIndex;

/// No node.
const NIL: u32 = u32::MAX;

/// Pinned cold pages HAND_cold looks at before evicting a hot page instead, once an admission
/// found the whole cold run pinned.
const PINNED_LOOKS: usize = 2;

/// How the target share of resident cold pages is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ColdTarget {
    /// Adapts between 1 % and 99 % of the capacity (never below 2), starting at the minimum:
    /// +1 when a page in its test period is re-referenced, −1 when a test period ends unused
    /// (the authors' rule).
    Adaptive,
    /// Adapts within the same bounds, weighing the two regions' hits against each other: +1
    /// when a page in its test period is re-referenced (more cold space would have kept it),
    /// −1 when HAND_hot finds a hot page referenced (the hot space earned its keep). An unused
    /// test period costs nothing. Not the authors' rule (see `EvictionPolicy::ClockProHotHits`).
    HotHits,
    /// A fixed share of the capacity, in percent (never below 2 units).
    Fixed {
        /// The share of the capacity kept for resident cold pages.
        percent: u8,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// On the free list.
    Free = 0,
    /// Resident hot page on the ring.
    Hot = 1,
    /// Resident cold page on the ring.
    Cold = 2,
    /// Non-resident cold page on the ring, in its test period (hash only).
    Ghost = 3,
    /// Resident of weight zero, not on the ring.
    Light = 4,
}

/// The hash bits a node keeps (and the ghost set compares): the low 59. Two keys that agree
/// on the kept bits share one history (as two keys with one full hash always did); among the
/// few thousand to million keys of a shard's history such a collision is a 2^-59-scale
/// event.
const HASH_MASK: u64 = (1 << STATE_SHIFT) - 1;
const STATE_SHIFT: u32 = 59;
const STATE_BITS: u64 = 0b111 << STATE_SHIFT;
/// In its test period.
const IN_TEST: u64 = 1 << 62;
/// Policy-side reference bit (see the module docs).
const REFERENCED: u64 = 1 << 63;

/// One slab node, 16 bytes: the key hash and the flags packed in one word, and the ring
/// links. Weights live apart (see [`ClockPro::weights`]), and so does the table slot (the
/// shard's `slot_of`).
#[derive(Clone, Copy)]
struct Node {
    /// `hash & HASH_MASK`, the state in bits 59..62, `IN_TEST` and `REFERENCED`.
    meta: u64,
    /// The neighbour the hands move to (the simulator's `prev`).
    newer: u32,
    /// The other neighbour (the simulator's `next`).
    older: u32,
}

impl Node {
    const FREE: Node = Node {
        meta: 0,
        newer: NIL,
        older: NIL,
    };

    /// A node off the ring with `hash` (already masked) in `state`.
    fn new(hash: u64, state: State, in_test: bool) -> Node {
        debug_assert_eq!(hash & !HASH_MASK, 0, "hash is masked");
        Node {
            meta: hash | (state as u64) << STATE_SHIFT | if in_test { IN_TEST } else { 0 },
            newer: NIL,
            older: NIL,
        }
    }

    #[inline]
    fn hash(&self) -> u64 {
        self.meta & HASH_MASK
    }

    #[inline]
    fn state(&self) -> State {
        match (self.meta & STATE_BITS) >> STATE_SHIFT {
            0 => State::Free,
            1 => State::Hot,
            2 => State::Cold,
            3 => State::Ghost,
            _ => State::Light,
        }
    }

    #[inline]
    fn set_state(&mut self, state: State) {
        self.meta = (self.meta & !STATE_BITS) | (state as u64) << STATE_SHIFT;
    }

    #[inline]
    fn in_test(&self) -> bool {
        self.meta & IN_TEST != 0
    }

    #[inline]
    fn set_in_test(&mut self, on: bool) {
        self.set_flag(IN_TEST, on);
    }

    #[inline]
    fn referenced(&self) -> bool {
        self.meta & REFERENCED != 0
    }

    #[inline]
    fn set_referenced(&mut self, on: bool) {
        self.set_flag(REFERENCED, on);
    }

    #[inline]
    fn set_flag(&mut self, flag: u64, on: bool) {
        // Branch-free: the hands set and clear these on every step.
        self.meta = (self.meta & !flag) | (flag * u64::from(on));
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("hash", &self.hash())
            .field("state", &self.state())
            .field("in_test", &self.in_test())
            .field("referenced", &self.referenced())
            .field("newer", &self.newer)
            .field("older", &self.older)
            .finish()
    }
}

/// What one run of HAND_hot did (the simulator's return codes 0, 1 and 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HotRun {
    /// Demoted a hot page before reaching the trigger page.
    Demoted,
    /// Reached the trigger page (ending its test period) without demoting.
    Matched,
    /// Demoted a hot page and then reached the trigger page.
    MatchedDemoted,
}

/// CLOCK-Pro over one ring of slab tokens; see the module docs.
#[derive(Debug)]
pub(crate) struct ClockPro {
    nodes: Vec<Node>,
    /// Weight of each token, parallel to `nodes`; empty while every resident so far weighs 1
    /// (an entry-count cache never fills it), so nodes stay at 16 bytes.
    weights: Vec<u32>,
    free_slots: Vec<u32>,
    /// Hash → token of every ghost (see [`GhostIndex`]).
    ghosts: GhostIndex,
    head: u32,
    hand_hot: u32,
    hand_cold: u32,
    hand_test: u32,
    capacity: u64,
    /// Total weight of residents (all on the ring; zero-weight residents add nothing).
    weight: u64,
    hot_weight: u64,
    len: usize,
    ring_len: usize,
    hot_count: usize,
    cold_count: usize,
    ghost_count: usize,
    /// The largest number of residents the ring has held: the ghost bound.
    peak_ring_residents: usize,
    /// Pending change of the cold allocation (`m_c − cold allocation`).
    credits: i64,
    /// The last admission found every cold page it looked at pinned (write-behind dirt), so
    /// the next ones look at only a few before evicting a hot page instead.
    cold_run_pinned: bool,
    min_cold: u64,
    max_cold: u64,
    adaptive: bool,
    target: ColdTarget,
    /// Ghost bound in multiples of the resident count (1 is the authors' bound).
    ghost_mult: usize,
    /// Times HAND_cold skipped a ghost while looking for a resident cold page (the simulator
    /// would have stopped on it); used by the tests to show it never happens on the traces.
    #[cfg(test)]
    ghost_skips: u64,
}

/// The address where a ghost lookup for `hash` starts, in a table [`ClockPro::ghost_table`]
/// reported (possibly since replaced: only for prefetching).
#[inline]
pub(crate) fn ghost_home(table: (usize, usize), hash: u64) -> usize {
    ghost_index::home_addr(table.0, table.1, hash & HASH_MASK)
}

/// `(min_cold, max_cold)` for `capacity`, computed in `f64` exactly as the simulator does.
fn cold_bounds(capacity: u64, target: ColdTarget) -> (u64, u64, bool) {
    let (lo, hi, adaptive) = match target {
        ColdTarget::Adaptive | ColdTarget::HotHits => (1.0f64, 99.0f64, true),
        ColdTarget::Fixed { percent } => (f64::from(percent), f64::from(percent), false),
    };
    let cap = capacity as f64;
    let min = ((lo / 100.0 * cap) as u64).max(2);
    let max = if hi < lo {
        min
    } else {
        ((hi / 100.0 * cap) as u64).max(2)
    };
    (min, max, adaptive)
}

impl ClockPro {
    /// A policy bounding the total weight of residents at `capacity`, faithful to the
    /// authors' simulator (ghosts bounded by the resident count).
    pub(crate) fn new(capacity: u64, target: ColdTarget) -> Self {
        Self::with_ghost_multiplier(capacity, target, 1)
    }

    /// Like [`ClockPro::new`], with ghosts bounded by `ghost_mult` times the largest resident
    /// count (the authors' simulator uses 1; Caffeine's simulator defaults to 2).
    pub(crate) fn with_ghost_multiplier(
        capacity: u64,
        target: ColdTarget,
        ghost_mult: usize,
    ) -> Self {
        let (min_cold, max_cold, adaptive) = cold_bounds(capacity, target);
        ClockPro {
            nodes: Vec::new(),
            weights: Vec::new(),
            free_slots: Vec::new(),
            ghosts: GhostIndex::default(),
            head: NIL,
            hand_hot: NIL,
            hand_cold: NIL,
            hand_test: NIL,
            capacity,
            weight: 0,
            hot_weight: 0,
            len: 0,
            ring_len: 0,
            hot_count: 0,
            cold_count: 0,
            ghost_count: 0,
            peak_ring_residents: 0,
            credits: 0,
            cold_run_pinned: false,
            min_cold,
            max_cold,
            adaptive,
            target,
            ghost_mult,
            #[cfg(test)]
            ghost_skips: 0,
        }
    }

    /// Number of residents.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Total weight of residents.
    pub(crate) fn weight(&self) -> u64 {
        self.weight
    }

    /// The current cold target `m_c` in weight units: the cold allocation plus pending
    /// credits, within `[min_cold, max_cold]`.
    #[allow(dead_code)]
    pub(crate) fn cold_target(&self) -> u64 {
        let alloc = self.cold_alloc() as i128 + i128::from(self.credits);
        alloc.clamp(self.min_cold as i128, self.max_cold as i128) as u64
    }

    /// Start fetching what the next admission will most likely touch first (it cannot be
    /// known for sure until then, so this is a hint): the ghost-index slots of the pages
    /// under HAND_cold (where it goes if it becomes a ghost) and HAND_test (where it is, if
    /// it is a ghost the hand removes), and the ring neighbours of the pages under all three
    /// hands (each move or removal relinks them). Called after an admission, so the fetches
    /// overlap the caller's own work until the shard's next admission.
    pub(crate) fn prefetch_next(&self) {
        use crate::table::prefetch;
        let node_addr = |t: u32| {
            self.nodes
                .get(t as usize)
                .map(|n| n as *const Node as usize)
        };
        let (base, len) = self.ghosts.raw();
        for t in [self.hand_cold, self.hand_test, self.hand_hot] {
            let Some(n) = self.nodes.get(t as usize) else {
                continue;
            };
            if t != self.hand_hot {
                prefetch(ghost_index::home_addr(base, len, n.hash()));
            }
            for addr in [node_addr(n.newer), node_addr(n.older)]
                .into_iter()
                .flatten()
            {
                prefetch(addr);
            }
        }
    }

    /// The ghost index's table (address, slots), for [`ghost_home`].
    pub(crate) fn ghost_table(&self) -> (usize, usize) {
        self.ghosts.raw()
    }

    /// Number of non-resident (ghost) pages.
    #[allow(dead_code)]
    pub(crate) fn ghost_len(&self) -> usize {
        self.ghost_count
    }

    /// Number of resident hot pages.
    #[allow(dead_code)]
    pub(crate) fn hot_len(&self) -> usize {
        self.hot_count
    }

    fn free_space(&self) -> u64 {
        self.capacity.saturating_sub(self.weight)
    }

    /// Weight the simulator counts as cold: everything that is not hot, free space included.
    fn cold_alloc(&self) -> u64 {
        self.capacity.saturating_sub(self.hot_weight)
    }

    fn ghost_limit(&self) -> usize {
        (self.peak_ring_residents * self.ghost_mult).max(1)
    }

    // ----- slab and ring primitives -------------------------------------------------------

    fn alloc(&mut self, node: Node) -> u32 {
        match self.free_slots.pop() {
            Some(t) => {
                self.nodes[t as usize] = node;
                t
            }
            None => {
                assert!(self.nodes.len() < NIL as usize, "token space exhausted");
                self.nodes.push(node);
                if !self.weights.is_empty() {
                    self.weights.push(1);
                }
                (self.nodes.len() - 1) as u32
            }
        }
    }

    /// The weight of resident `t` (meaningless for ghosts and free slots).
    #[inline]
    fn weight_of(&self, t: u32) -> u32 {
        if self.weights.is_empty() {
            1
        } else {
            self.weights[t as usize]
        }
    }

    /// Set the weight of `t`; the first weight other than 1 materializes `weights`.
    #[inline]
    fn set_weight(&mut self, t: u32, w: u32) {
        if self.weights.is_empty() {
            if w == 1 {
                return;
            }
            self.materialize_weights();
        }
        self.weights[t as usize] = w;
    }

    #[cold]
    fn materialize_weights(&mut self) {
        self.weights = vec![1; self.nodes.len()];
    }

    fn release(&mut self, t: u32) {
        self.nodes[t as usize] = Node::FREE;
        self.free_slots.push(t);
    }

    fn newer(&self, t: u32) -> u32 {
        self.nodes[t as usize].newer
    }

    fn older(&self, t: u32) -> u32 {
        self.nodes[t as usize].older
    }

    fn state(&self, t: u32) -> State {
        self.nodes[t as usize].state()
    }

    /// Link `t` at the head (newest position). Sets the hands of an empty ring, and HAND_cold
    /// when `t` is the only resident cold page.
    fn insert_head(&mut self, t: u32) {
        if self.head == NIL {
            let n = &mut self.nodes[t as usize];
            n.newer = t;
            n.older = t;
            self.hand_hot = t;
            self.hand_test = t;
        } else {
            let head = self.head;
            let oldest = self.newer(head);
            let n = &mut self.nodes[t as usize];
            n.older = head;
            n.newer = oldest;
            self.nodes[oldest as usize].older = t;
            self.nodes[head as usize].newer = t;
        }
        self.head = t;
        self.ring_len += 1;
        if self.hand_cold == NIL && self.state(t) == State::Cold {
            self.hand_cold = t;
        }
    }

    /// Unlink `t` from the ring; a hand resting on it moves to the newer neighbour. Clears
    /// the test flag and the policy-side bit (the simulator's `remove_from_clock`).
    fn unlink(&mut self, t: u32) {
        if self.ring_len == 1 {
            self.head = NIL;
            self.hand_hot = NIL;
            self.hand_cold = NIL;
            self.hand_test = NIL;
        } else {
            let (n, o) = (self.newer(t), self.older(t));
            self.nodes[n as usize].older = o;
            self.nodes[o as usize].newer = n;
            if self.head == t {
                self.head = o;
            }
            if self.hand_hot == t {
                self.hand_hot = n;
            }
            if self.hand_cold == t {
                self.hand_cold = n;
            }
            if self.hand_test == t {
                self.hand_test = n;
            }
        }
        self.ring_len -= 1;
        let node = &mut self.nodes[t as usize];
        node.newer = NIL;
        node.older = NIL;
        node.set_in_test(false);
        node.set_referenced(false);
    }

    fn move_to_head(&mut self, t: u32) {
        self.unlink(t);
        self.insert_head(t);
    }

    /// Remove a ghost from the ring and the ghost index, freeing its slot.
    fn drop_ghost(&mut self, t: u32) {
        debug_assert_eq!(self.state(t), State::Ghost, "drop_ghost on a ghost");
        let hash = self.nodes[t as usize].hash();
        // Not indexed in the rare case the hash now names a newer ghost (two keys with one
        // hash keep the newer history only); then this removes nothing.
        self.ghosts.remove(hash, t);
        self.unlink(t);
        self.ghost_count -= 1;
        self.release(t);
    }

    fn set_hot(&mut self, t: u32) {
        let w = u64::from(self.weight_of(t));
        match self.state(t) {
            State::Cold => self.cold_count -= 1,
            State::Hot => return,
            _ => {}
        }
        self.nodes[t as usize].set_state(State::Hot);
        self.hot_count += 1;
        self.hot_weight += w;
    }

    fn set_cold(&mut self, t: u32) {
        debug_assert_eq!(self.state(t), State::Hot, "only hot pages are demoted");
        let w = u64::from(self.weight_of(t));
        self.nodes[t as usize].set_state(State::Cold);
        self.hot_count -= 1;
        self.hot_weight -= w;
        self.cold_count += 1;
    }

    // ----- reference bits -----------------------------------------------------------------

    fn is_resident(&self, t: u32) -> bool {
        matches!(self.state(t), State::Hot | State::Cold)
    }

    /// The effective reference bit, folding the entry's bit into the policy-side bit.
    fn peek_ref<R: Residents>(&mut self, t: u32, res: &mut R) -> bool {
        if self.is_resident(t) && res.take_referenced(t) {
            self.nodes[t as usize].set_referenced(true);
        }
        self.nodes[t as usize].referenced()
    }

    /// Test and clear the effective reference bit.
    fn take_ref<R: Residents>(&mut self, t: u32, res: &mut R) -> bool {
        let r = self.peek_ref(t, res);
        self.nodes[t as usize].set_referenced(false);
        r
    }

    // ----- the hands ----------------------------------------------------------------------

    /// A ghost's test period ended without a re-reference: the authors' rule takes a credit
    /// back (the cold target shrinks); the hot-hits rule does not.
    fn test_period_ended_unused(&mut self) {
        if self.target == ColdTarget::Adaptive {
            self.credits -= 1;
        }
    }

    /// Under the hot-hits rule credits move both ways on every clock pass, so they are capped
    /// (at the ring's size) to keep a long phase from building a backlog the next phase would
    /// have to pay off before the target moves.
    fn credit_limit(&self) -> i64 {
        i64::try_from(self.ring_len).unwrap_or(i64::MAX).max(1)
    }

    /// Move HAND_cold forward (from where it is, inclusive) to a resident cold page, or to
    /// `NIL` when there is none.
    fn settle_cold(&mut self) {
        if self.cold_count == 0 {
            self.hand_cold = NIL;
            return;
        }
        let mut t = self.hand_cold;
        if t == NIL || self.nodes[t as usize].newer == NIL {
            t = self.head;
        }
        for _ in 0..=self.ring_len {
            match self.state(t) {
                State::Cold => {
                    self.hand_cold = t;
                    return;
                }
                #[cfg(test)]
                State::Ghost => self.ghost_skips += 1,
                _ => {}
            }
            t = self.newer(t);
        }
        unreachable!("cold_count > 0 but no resident cold page on the ring");
    }

    /// One step of HAND_test (the simulator's `run_HAND_test(1)`).
    fn test_step<R: Residents>(&mut self, res: &mut R) {
        let t = self.hand_test;
        if t == NIL {
            return;
        }
        match self.state(t) {
            State::Ghost => {
                self.test_period_ended_unused();
                self.hand_test = self.newer(t);
                self.drop_ghost(t);
            }
            State::Cold => {
                self.nodes[t as usize].set_in_test(false);
                self.take_ref(t, res);
                self.hand_test = self.newer(t);
            }
            _ => self.hand_test = self.newer(t),
        }
    }

    /// Keep the ghosts within their bound: HAND_test ends the test periods of the resident
    /// cold pages it passes and removes the first ghost it meets.
    fn enforce_ghost_limit<R: Residents>(&mut self, res: &mut R) {
        while self.ghost_count > self.ghost_limit() {
            let mut t = self.hand_test;
            for _ in 0..=self.ring_len {
                if !self.is_resident(t) {
                    break;
                }
                if self.state(t) == State::Cold {
                    self.nodes[t as usize].set_in_test(false);
                    self.take_ref(t, res);
                }
                t = self.newer(t);
            }
            debug_assert_eq!(self.state(t), State::Ghost, "HAND_test found a ghost");
            self.test_period_ended_unused();
            self.hand_test = self.newer(t);
            self.drop_ghost(t);
        }
    }

    /// Run HAND_hot for the trigger page `c` (a cold page in its test period): demote the
    /// first unreferenced hot page, then stop on the next hot page. Pushes HAND_test whenever
    /// it runs past it.
    fn run_hot<R: Residents>(&mut self, c: u32, res: &mut R) -> HotRun {
        let (mut done, mut matched, mut demoted) = (false, false, false);
        let budget = 3 * self.ring_len + 8;
        for _ in 0..budget {
            let h = self.hand_hot;
            if h == NIL {
                break;
            }
            if done && (self.state(h) == State::Hot || self.hot_count == 0) {
                break;
            }
            if self.state(h) == State::Hot {
                let referenced = self.take_ref(h, res);
                if referenced && self.target == ColdTarget::HotHits {
                    self.credits = (self.credits - 1).max(-self.credit_limit());
                }
                if !referenced {
                    self.set_cold(h);
                    self.nodes[h as usize].set_in_test(false);
                    done = true;
                    demoted = true;
                }
                let n = self.newer(h);
                if self.hand_test == h {
                    self.hand_test = n;
                }
                self.hand_hot = n;
                self.move_to_head(h);
            } else {
                if h == c {
                    done = true;
                    matched = true;
                }
                self.hand_hot = self.newer(h);
            }
            if self.hand_hot != NIL && self.older(self.hand_hot) == self.hand_test {
                self.test_step(res);
            }
        }
        match (matched, demoted) {
            (true, true) => HotRun::MatchedDemoted,
            (true, false) => HotRun::Matched,
            (false, true) => HotRun::Demoted,
            // Budget exhausted without a demotion (degenerate: no hot page): do not promote.
            (false, false) => HotRun::Matched,
        }
    }

    /// The simulator's `check_adaptive_bound`: drop credits the bounds would not allow.
    fn bound_credits(&mut self) {
        let cold = self.cold_alloc();
        if self.credits > 0 && cold >= self.max_cold {
            self.credits = 0;
        }
        if self.credits < 0 && cold <= self.min_cold {
            self.credits = 0;
        }
    }

    /// Demote one unpinned hot page and put HAND_cold on it (used only when there is no
    /// resident cold page). `false` when every hot page is pinned too.
    fn force_demote<R: Residents>(&mut self, res: &mut R, skip: Option<u32>) -> bool {
        let mut t = self.hand_hot;
        if t == NIL {
            return false;
        }
        for _ in 0..=self.ring_len {
            if self.state(t) == State::Hot && Some(t) != skip && !res.is_pinned(t) {
                if self.hand_hot == t {
                    self.hand_hot = self.newer(t);
                }
                self.set_cold(t);
                self.nodes[t as usize].set_in_test(false);
                self.hand_cold = t;
                return true;
            }
            t = self.newer(t);
        }
        false
    }

    /// Evict the first unpinned hot page from HAND_hot on (the oldest end of the ring, as
    /// HAND_hot moves the pages it passes to the head) without moving HAND_cold. `false`
    /// when every hot page is pinned too.
    fn evict_oldest_hot<R: Residents>(
        &mut self,
        res: &mut R,
        skip: Option<u32>,
        evicted: &mut Vec<Token>,
    ) -> bool {
        let mut t = self.hand_hot;
        if t == NIL {
            return false;
        }
        for _ in 0..=self.ring_len {
            if self.state(t) == State::Hot && Some(t) != skip && !res.is_pinned(t) {
                let w = u64::from(self.weight_of(t));
                evicted.push(t);
                self.weight -= w;
                self.len -= 1;
                self.hot_count -= 1;
                self.hot_weight -= w;
                // `unlink` moves a hand resting on `t` (HAND_hot, usually) to the next page.
                self.unlink(t);
                self.release(t);
                return true;
            }
            t = self.newer(t);
        }
        false
    }

    /// A pinned cold page that HAND_cold would evict goes back to the head of the ring as
    /// if newly admitted (its test period restarts). Left where it was, it would stay cold
    /// behind the hand, between hot pages, and the hand would have to walk the hot pages of
    /// the ring to come back to it.
    fn requeue_pinned(&mut self, t: u32) {
        self.move_to_head(t);
        self.nodes[t as usize].set_in_test(true);
    }

    /// Run HAND_cold until one resident is evicted (pushed to `evicted`). `false` when
    /// nothing evictable is left (every resident is pinned or is `skip`).
    fn evict_one<R: Residents>(
        &mut self,
        res: &mut R,
        evicted: &mut Vec<Token>,
        skip: Option<u32>,
    ) -> bool {
        let mut blocked = 0usize;
        let budget = 6 * self.ring_len + 16;
        for _ in 0..budget {
            let hc = self.hand_cold;
            if hc == NIL {
                if !self.force_demote(res, skip) {
                    return false;
                }
                continue;
            }
            let in_test = self.nodes[hc as usize].in_test();
            let referenced = self.peek_ref(hc, res);
            if !referenced || !in_test {
                if Some(hc) == skip || res.is_pinned(hc) {
                    blocked += 1;
                    let limit = if self.cold_run_pinned {
                        PINNED_LOOKS.min(self.cold_count)
                    } else {
                        self.cold_count
                    };
                    if blocked > limit {
                        // Evict a hot page in place and leave HAND_cold on the run of cold
                        // pages: demoting one under the hand instead would send the hand to
                        // HAND_hot's end of the ring, and back across every hot page after.
                        if !self.evict_oldest_hot(res, skip, evicted) {
                            return false;
                        }
                        self.cold_run_pinned = true;
                        return true;
                    } else {
                        self.hand_cold = self.newer(hc);
                        if Some(hc) != skip {
                            self.requeue_pinned(hc);
                        }
                        self.settle_cold();
                    }
                    continue;
                }
                self.cold_run_pinned = false;
                self.evict_at_cold_hand(hc, in_test, evicted);
                self.enforce_ghost_limit(res);
                return true;
            }
            blocked = 0;
            // A referenced cold page in its test period.
            if self.adaptive {
                self.bound_credits();
            }
            if self.credits < 0 {
                // Promote without running HAND_hot.
                self.hand_cold = self.newer(hc);
                self.set_hot(hc);
                self.move_to_head(hc);
                self.credits += 1;
            } else if self.credits > 0 {
                // Demote a hot page without promoting this one.
                match self.run_hot(hc, res) {
                    HotRun::Demoted => {
                        let next = self.newer(hc);
                        self.hand_cold = next;
                        self.unlink(hc);
                        // The simulator's slip: the bit lands on the next page, not on `hc`.
                        if self.hand_cold != NIL {
                            self.nodes[self.hand_cold as usize].set_referenced(true);
                        }
                        self.nodes[hc as usize].set_in_test(true);
                        self.insert_head(hc);
                        self.credits -= 1;
                    }
                    outcome => {
                        // HAND_hot ended this page's test period: it is now evictable.
                        self.nodes[hc as usize].set_referenced(false);
                        if outcome == HotRun::MatchedDemoted {
                            self.credits -= 1;
                        }
                        continue;
                    }
                }
            } else if self.run_hot(hc, res) != HotRun::Matched {
                // One promotion for one demotion.
                self.hand_cold = self.newer(hc);
                self.set_hot(hc);
                self.move_to_head(hc);
            }
            self.settle_cold();
        }
        debug_assert!(false, "HAND_cold exceeded its step budget");
        false
    }

    /// Evict the resident cold page `hc` under HAND_cold: it stays as a ghost if it is in its
    /// test period, otherwise it leaves the ring.
    fn evict_at_cold_hand(&mut self, hc: u32, in_test: bool, evicted: &mut Vec<Token>) {
        let w = u64::from(self.weight_of(hc));
        evicted.push(hc);
        self.weight -= w;
        self.len -= 1;
        self.cold_count -= 1;
        self.hand_cold = self.newer(hc);
        if in_test {
            let hash = self.nodes[hc as usize].hash();
            let node = &mut self.nodes[hc as usize];
            node.set_state(State::Ghost);
            node.set_referenced(false);
            self.ghost_count += 1;
            let bound = self.ghost_limit() + 1;
            let nodes = &self.nodes;
            if let Some(old) = self
                .ghosts
                .insert(hash, hc, |t| nodes[t as usize].hash(), bound)
            {
                // Two keys with one hash: keep the newer history only. The index already
                // names `hc`, so `drop_ghost` leaves it alone.
                self.drop_ghost(old);
            }
        } else {
            self.unlink(hc);
            self.release(hc);
        }
        if self.hand_cold != NIL {
            self.settle_cold();
        }
    }

    /// Evict until `need` more weight fits; `false` if stopped by pinned residents.
    fn make_room<R: Residents>(
        &mut self,
        need: u64,
        res: &mut R,
        evicted: &mut Vec<Token>,
        skip: Option<u32>,
    ) -> bool {
        while self.free_space() < need {
            if !self.evict_one(res, evicted, skip) {
                return false;
            }
        }
        true
    }

    fn note_resident(&mut self, w: u64) {
        self.weight += w;
        self.len += 1;
        let on_ring = self.hot_count + self.cold_count;
        if on_ring > self.peak_ring_residents {
            self.peak_ring_residents = on_ring;
        }
    }

    /// Link a new resident page at the head, hot or cold (in its test period).
    fn link_new(&mut self, slot: Option<u32>, hash: u64, weight: u32, hot: bool) -> u32 {
        let node = Node::new(hash, if hot { State::Hot } else { State::Cold }, !hot);
        let t = match slot {
            Some(t) => {
                self.nodes[t as usize] = node;
                t
            }
            None => self.alloc(node),
        };
        self.set_weight(t, weight);
        if hot {
            self.hot_count += 1;
            self.hot_weight += u64::from(weight);
        } else {
            self.cold_count += 1;
        }
        self.insert_head(t);
        self.note_resident(u64::from(weight));
        t
    }

    // ----- the seam -----------------------------------------------------------------------

    /// Admit a new resident of `weight` whose key hashes to `hash`, evicting as needed.
    pub(crate) fn admit<R: Residents>(
        &mut self,
        hash: u64,
        weight: u32,
        res: &mut R,
        evicted: &mut Vec<Token>,
    ) -> Admit {
        let w = u64::from(weight);
        if w > self.capacity {
            return Admit::TooHeavy;
        }
        let hash = hash & HASH_MASK;
        if weight == 0 {
            let t = self.alloc(Node::new(hash, State::Light, false));
            self.set_weight(t, 0);
            self.len += 1;
            return Admit::Resident(t);
        }
        let nodes = &self.nodes;
        if let Some(g) = self.ghosts.get(hash, |t| nodes[t as usize].hash()) {
            // A re-reference in the test period.
            if !self.make_room(w, res, evicted, None) {
                return Admit::AllPinned;
            }
            if self.state(g) == State::Ghost && self.nodes[g as usize].hash() == hash {
                let outcome = self.run_hot(g, res);
                let still_ghost =
                    self.state(g) == State::Ghost && self.nodes[g as usize].hash() == hash;
                if outcome != HotRun::Matched {
                    if self.adaptive {
                        self.credits += 1;
                        if self.target == ColdTarget::HotHits {
                            self.credits = self.credits.min(self.credit_limit());
                        }
                    }
                    let slot = if still_ghost {
                        self.ghosts.remove(hash, g);
                        self.ghost_count -= 1;
                        self.unlink(g);
                        Some(g)
                    } else {
                        None
                    };
                    return Admit::Resident(self.link_new(slot, hash, weight, true));
                }
                if still_ghost {
                    // Only in degenerate states: end the test period here.
                    self.test_period_ended_unused();
                    self.drop_ghost(g);
                }
            }
        } else if self.free_space() >= w.saturating_add(self.min_cold) {
            // Warm-up: fill the hot share first.
            return Admit::Resident(self.link_new(None, hash, weight, true));
        }
        // A cold page in its test period (warm-up of the cold share, or a page out of the clock).
        if !self.make_room(w, res, evicted, None) {
            return Admit::AllPinned;
        }
        let t = self.link_new(None, hash, weight, false);
        Admit::Resident(t)
    }

    /// A resident's weight changed. Never evicts `token`, and never leaves the weight above
    /// capacity: when only pinned residents could make room, the old weight stays.
    pub(crate) fn reweigh<R: Residents>(
        &mut self,
        token: Token,
        weight: u32,
        res: &mut R,
        evicted: &mut Vec<Token>,
    ) -> Reweigh {
        let w = u64::from(weight);
        if w > self.capacity {
            return Reweigh::TooHeavy;
        }
        let node = self.nodes[token as usize];
        debug_assert!(
            matches!(node.state(), State::Hot | State::Cold | State::Light),
            "reweigh of a token that is not resident"
        );
        match node.state() {
            State::Light if weight == 0 => {}
            State::Light => {
                if !self.make_room(w, res, evicted, Some(token)) {
                    return Reweigh::AllPinned;
                }
                self.len -= 1;
                self.link_new(Some(token), node.hash(), weight, false);
            }
            State::Hot | State::Cold if weight == 0 => {
                self.take_off_ring(token);
                self.nodes[token as usize].set_state(State::Light);
                self.set_weight(token, 0);
                self.len += 1;
            }
            State::Hot | State::Cold => {
                let old = u64::from(self.weight_of(token));
                if w > old && !self.make_room(w - old, res, evicted, Some(token)) {
                    return Reweigh::AllPinned;
                }
                self.weight = self.weight - old + w;
                // Read the state now: making room may have demoted the page.
                if self.state(token) == State::Hot {
                    self.hot_weight = self.hot_weight - old + w;
                }
                self.set_weight(token, weight);
            }
            State::Free | State::Ghost => {}
        }
        Reweigh::Done
    }

    /// Take a resident off the ring (counts, weights and hands), keeping its slot.
    fn take_off_ring(&mut self, t: u32) {
        let w = u64::from(self.weight_of(t));
        match self.state(t) {
            State::Hot => {
                self.hot_count -= 1;
                self.hot_weight -= w;
            }
            State::Cold => self.cold_count -= 1,
            _ => unreachable!("take_off_ring of a page that is not a ring resident"),
        }
        let was_cold_hand = self.hand_cold == t;
        let was_hot_hand = self.hand_hot == t;
        self.unlink(t);
        self.weight -= w;
        self.len -= 1;
        if was_cold_hand || self.hand_cold == t {
            self.settle_cold();
        }
        if was_hot_hand && self.hand_hot != NIL && self.hot_count > 0 {
            // Rest on the next hot page, as the simulator's HAND_hot always does.
            let mut h = self.hand_hot;
            for _ in 0..=self.ring_len {
                if self.state(h) == State::Hot {
                    break;
                }
                h = self.newer(h);
            }
            self.hand_hot = h;
        }
        self.nodes[t as usize].set_state(State::Free);
    }

    /// Forget a resident the shard removed (explicit removal or expiry). It leaves no ghost.
    pub(crate) fn remove(&mut self, token: Token) {
        match self.state(token) {
            State::Light => {
                self.len -= 1;
                self.release(token);
            }
            State::Hot | State::Cold => {
                self.take_off_ring(token);
                self.release(token);
            }
            State::Free | State::Ghost => {
                debug_assert!(false, "remove of a token that is not resident");
            }
        }
    }

    /// Forget everything (residents and history).
    pub(crate) fn clear(&mut self) {
        *self = ClockPro::with_ghost_multiplier(self.capacity, self.target, self.ghost_mult);
    }

    /// Check every internal invariant; panics with the name of the broken one. (Always
    /// compiled, like the seam's `Policy::validate` on main, which the shard calls in checks.)
    pub(crate) fn validate(&self) {
        let (mut hot, mut cold, mut ghost, mut light, mut free) = (0, 0, 0, 0, 0);
        let (mut w, mut hw) = (0u64, 0u64);
        assert!(
            self.weights.is_empty() || self.weights.len() == self.nodes.len(),
            "weights are absent or parallel to the nodes"
        );
        for (i, n) in self.nodes.iter().enumerate() {
            let nw = self.weight_of(i as u32);
            match n.state() {
                State::Hot => {
                    hot += 1;
                    w += u64::from(nw);
                    hw += u64::from(nw);
                    assert!(!n.in_test(), "hot pages are never in a test period");
                }
                State::Cold => {
                    cold += 1;
                    w += u64::from(nw);
                }
                State::Ghost => {
                    ghost += 1;
                    assert_eq!(
                        self.ghosts.get(n.hash(), |t| self.nodes[t as usize].hash()),
                        Some(i as u32),
                        "ghost is findable by its hash in the ghost index"
                    );
                    assert!(n.in_test(), "ghosts are in their test period");
                }
                State::Light => {
                    light += 1;
                    assert_eq!(nw, 0, "off-ring residents weigh zero");
                    assert_eq!(n.newer, NIL, "off-ring residents are not linked");
                }
                State::Free => {
                    free += 1;
                    assert_eq!(n.meta, 0, "free slots are blank");
                }
            }
            if matches!(n.state(), State::Hot | State::Cold | State::Ghost) {
                assert!(
                    nw > 0 || n.state() == State::Ghost,
                    "ring residents weigh > 0"
                );
            }
        }
        assert_eq!(hot, self.hot_count, "hot count");
        assert_eq!(cold, self.cold_count, "resident cold count");
        assert_eq!(ghost, self.ghost_count, "ghost count");
        assert_eq!(
            self.ghosts.len(),
            self.ghost_count,
            "ghost index size = ghost count"
        );
        self.ghosts.validate(|t| self.nodes[t as usize].hash());
        for t in self.ghosts.tokens() {
            assert_eq!(
                self.nodes.get(t as usize).map(Node::state),
                Some(State::Ghost),
                "the ghost index names ghosts only"
            );
        }
        assert_eq!(hot + cold + light, self.len, "len counts residents");
        assert_eq!(w, self.weight, "weight sums the resident weights");
        assert_eq!(hw, self.hot_weight, "hot weight");
        assert_eq!(
            free,
            self.free_slots.len(),
            "free list holds every free slot"
        );
        let mut seen = vec![false; self.nodes.len()];
        for &t in &self.free_slots {
            assert_eq!(
                self.nodes[t as usize].state(),
                State::Free,
                "free list holds free slots"
            );
            assert!(
                !std::mem::replace(&mut seen[t as usize], true),
                "free list has no duplicates"
            );
        }
        assert!(
            self.ghost_count <= self.ghost_limit(),
            "ghosts within their bound"
        );
        assert!(self.min_cold <= self.max_cold, "cold bounds ordered");
        let target = self.cold_target();
        assert!(
            self.min_cold <= target && target <= self.max_cold,
            "m_c within bounds"
        );
        if !self.adaptive {
            assert_eq!(self.credits, 0, "the fixed variant never adapts");
        }
        // Ring: walk from the head along `older`.
        assert_eq!(self.ring_len, hot + cold + ghost, "ring length");
        if self.ring_len == 0 {
            assert_eq!(self.head, NIL, "empty ring has no head");
            assert_eq!(self.hand_hot, NIL, "empty ring has no HAND_hot");
            assert_eq!(self.hand_cold, NIL, "empty ring has no HAND_cold");
            assert_eq!(self.hand_test, NIL, "empty ring has no HAND_test");
            return;
        }
        let mut on_ring = vec![false; self.nodes.len()];
        let mut t = self.head;
        for _ in 0..self.ring_len {
            let n = &self.nodes[t as usize];
            assert!(
                matches!(n.state(), State::Hot | State::Cold | State::Ghost),
                "ring members"
            );
            assert!(
                !std::mem::replace(&mut on_ring[t as usize], true),
                "ring visits once"
            );
            assert_eq!(self.nodes[n.older as usize].newer, t, "ring links agree");
            t = n.older;
        }
        assert_eq!(t, self.head, "ring closes after ring_len steps");
        for hand in [self.hand_hot, self.hand_test] {
            assert!(
                hand != NIL && on_ring[hand as usize],
                "hands rest on the ring"
            );
        }
        if self.cold_count > 0 {
            assert_eq!(
                self.state(self.hand_cold),
                State::Cold,
                "HAND_cold on a resident cold page"
            );
        } else {
            assert_eq!(
                self.hand_cold, NIL,
                "no HAND_cold without resident cold pages"
            );
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
