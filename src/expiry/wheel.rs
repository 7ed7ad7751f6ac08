//! A hierarchical timing wheel over `u32` tokens (after Varghese and Lauck, "Hashed and
//! Hierarchical Timing Wheels").
//!
//! One wheel per shard, used only under the shard's writer lock: it is plain single-threaded
//! code with no atomics, no `unsafe` and no pointers. Nodes are the shard's slab tokens; their
//! links live in the wheel's own `Vec`, indexed by token, so a stale token can never dangle.
//!
//! # Layout
//!
//! | level | bucket span      | buckets | level span (= next bucket span) |
//! |-------|------------------|---------|---------------------------------|
//! | 0     | 2^30 ns ≈ 1.07 s | 64      | 2^36 ns ≈ 1.14 min              |
//! | 1     | 2^36 ns ≈ 1.14 min | 64    | 2^42 ns ≈ 1.22 h                |
//! | 2     | 2^42 ns ≈ 1.22 h | 32      | 2^47 ns ≈ 1.63 d                |
//! | 3     | 2^47 ns ≈ 1.63 d | 4       | 2^49 ns ≈ 6.5 d                 |
//! | 4     | overflow         | 1       | everything further out          |
//!
//! A token with deadline `d`, placed when the wheel's time is `t < d`, goes to the lowest level
//! `i` with `d - t < span(i)`, bucket `(d >> shift(i)) mod buckets(i)`. Further out than 6.5 days
//! it goes to the overflow bucket. A deadline `<= t` goes to a "due" list that the next
//! `advance` empties first. `u64::MAX` ([`NEVER`](crate::time::NEVER)) is never scheduled.
//!
//! Every bucket is a circular doubly linked list with a sentinel, so unlinking a node needs
//! only its own links: `schedule`, `reschedule` and `cancel` are O(1). A `u64` occupancy bitmap
//! per level (tokio's trick) makes [`TimerWheel::next_deadline_hint`] a few `trailing_zeros`.
//!
//! # Advancing
//!
//! `advance(now)` sweeps from the wheel's time `T` to `T' = now` level by level, bottom up: at
//! level `i` it visits the buckets of ticks `T >> shift(i) ..= T' >> shift(i)` (all of them if
//! that is more than one rotation), and stops at the first level whose tick did not change
//! (higher ticks cannot have changed either). A visited bucket is first moved whole onto a
//! "pending" list (O(1) splice), then each node is either fired (`d <= T'`) or placed again
//! relative to `T'`, which is how nodes cascade to lower levels. Moving the bucket out first
//! means a node placed back into the same bucket is not seen twice in one sweep.
//!
//! Each node visit costs one unit of `budget`. When the budget runs out, `advance` returns
//! `false` and keeps its cursor and the pending list, so the next call resumes exactly there;
//! schedules and cancels in between are safe (placement is relative to the sweep's target and
//! a pending node is unlinked like any other). A newer `now` is remembered (a watermark: time
//! never goes backwards) and swept to once the current sweep is finished.
//!
//! # The guarantee (checked by the property test)
//!
//! Write `fire_bound(d)` for the start of the level-0 tick after `d`'s, i.e.
//! `((d >> 30) + 1) << 30`, saturating at `u64::MAX`. For every scheduled token with deadline
//! `d` (and not cancelled or rescheduled meanwhile):
//!
//! 1. it is returned exactly once;
//! 2. never early: only by a call whose (clamped) `now` is `>= d`;
//! 3. at the latest by the first call that returns `true` with a (clamped) `now` that is
//!    `>= fire_bound(d)`. Moreover a token scheduled, after a call that returned `true`, with
//!    `d <= now()` (already overdue) is returned by the next call that returns `true`, and a
//!    completed advance to `u64::MAX` returns everything.
//!
//! So the wheel is precise to one level-0 tick (≈ 1.07 s), as Caffeine's is: a token whose
//! deadline falls inside the current tick waits for the tick to end. That is the right trade
//! for a cache: the read path already hides expired entries, and sweeping the current bucket
//! on every advance would cost O(bucket) per write. Why (3) holds, in short: a node at level
//! `i >= 1` always has a tick strictly ahead of the wheel's (it was placed at least one
//! bucket span out), and at level 0 a tick not behind it; consecutive sweeps visit contiguous
//! tick ranges, so the sweep that first reaches the node's tick visits its bucket, and then the
//! node either fires or drops to a lower level relative to the new time. After a completed
//! sweep to `T'`, every remaining level-0 node has `d >> 30 >= T' >> 30`, every higher node
//! `d > T'`; `validate()` checks exactly these invariants.

use crate::time::NEVER;

/// Buckets per level; the last level is the single overflow bucket.
const BUCKETS: [usize; LEVELS] = [64, 64, 32, 4, 1];
/// `log2` of a bucket's span per level: 2^30 ns ≈ 1.07 s, 2^36 ≈ 1.14 min, 2^42 ≈ 1.22 h,
/// 2^47 ≈ 1.63 d; the overflow "bucket" turns over every 2^49 ns ≈ 6.5 d.
const SHIFT: [u32; LEVELS] = [30, 36, 42, 47, 49];
/// Index of each level's first bucket sentinel.
const OFFSET: [usize; LEVELS] = [0, 64, 128, 160, 164];
const LEVELS: usize = 5;
const OVERFLOW: usize = LEVELS - 1;
/// Sentinel of the list of tokens scheduled with a deadline already reached.
const DUE: usize = 165;
/// Sentinel of the list holding the bucket being swept.
const PENDING: usize = 166;
/// Number of sentinels; node `token` lives at index `LISTS + token`.
const LISTS: usize = 167;

/// `Node::level` of a token in the due list.
const LEVEL_DUE: u8 = LEVELS as u8;
/// `Node::level` of a token that is not scheduled (and of sentinels).
const LEVEL_NONE: u8 = u8::MAX;

/// The largest token the wheel accepts (node indices must fit a `u32` link).
pub(crate) const MAX_TOKEN: u32 = u32::MAX - LISTS as u32;

#[derive(Clone, Copy, Debug)]
struct Node {
    deadline: u64,
    prev: u32,
    next: u32,
    /// 0..LEVELS: the bucket level (also while in the pending list: the bucket it was swept
    /// from); `LEVEL_DUE`; or `LEVEL_NONE`.
    level: u8,
    slot: u8,
}

impl Node {
    const fn unlinked(self_index: u32) -> Node {
        Node {
            deadline: 0,
            prev: self_index,
            next: self_index,
            level: LEVEL_NONE,
            slot: 0,
        }
    }
}

/// Where an interrupted (or running) sweep stands.
#[derive(Clone, Copy, Debug)]
struct Sweep {
    /// The wheel time the sweep started from; the target is `TimerWheel::time`.
    from: u64,
    level: usize,
    /// The next bucket of `level` to visit, counted from `from`'s tick.
    step: u64,
}

/// A hierarchical timing wheel of `u32` tokens; see the module docs for the guarantee.
#[derive(Debug)]
pub(crate) struct TimerWheel {
    /// Sentinels (`0..LISTS`), then one node per token ever seen.
    nodes: Vec<Node>,
    /// Bit `s` of `occupied[i]` is set iff bucket `s` of level `i` is non-empty.
    occupied: [u64; LEVELS],
    /// Placement reference: the target of the current sweep, or of the last one.
    time: u64,
    /// The largest `now` ever passed to `advance` (the monotonic watermark).
    latest: u64,
    sweep: Option<Sweep>,
    len: usize,
}

impl Default for TimerWheel {
    fn default() -> Self {
        Self::new()
    }
}

impl TimerWheel {
    /// An empty wheel at time 0.
    pub(crate) fn new() -> Self {
        let nodes = (0..LISTS as u32).map(Node::unlinked).collect();
        TimerWheel {
            nodes,
            occupied: [0; LEVELS],
            time: 0,
            latest: 0,
            sweep: None,
            len: 0,
        }
    }

    /// Number of scheduled tokens.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether no token is scheduled.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `token` is scheduled.
    pub(crate) fn contains(&self, token: u32) -> bool {
        self.nodes
            .get(index(token))
            .is_some_and(|n| n.level != LEVEL_NONE)
    }

    /// The deadline `token` is scheduled for, if it is.
    pub(crate) fn deadline(&self, token: u32) -> Option<u64> {
        self.nodes
            .get(index(token))
            .filter(|n| n.level != LEVEL_NONE)
            .map(|n| n.deadline)
    }

    /// The wheel's clamped notion of now: the largest `now` passed to `advance`.
    pub(crate) fn now(&self) -> u64 {
        self.latest
    }

    /// Schedule `token` to come due at `deadline`, replacing any earlier schedule of it.
    /// `NEVER` (`u64::MAX`) unschedules it: a token that never expires costs the wheel nothing.
    ///
    /// # Panics
    /// If `token > MAX_TOKEN` (a slab never gets near that).
    pub(crate) fn schedule(&mut self, token: u32, deadline: u64) {
        assert!(token <= MAX_TOKEN, "timer wheel token out of range");
        let idx = index(token);
        if idx >= self.nodes.len() {
            // Grow on demand; the new nodes are unscheduled.
            let from = self.nodes.len() as u32;
            self.nodes.extend((from..=idx as u32).map(Node::unlinked));
        }
        self.cancel_index(idx);
        if deadline == NEVER {
            return;
        }
        self.len += 1;
        self.nodes[idx].deadline = deadline;
        self.place(idx, deadline);
    }

    /// Move a scheduled `token` to `deadline`; returns `false` (and does nothing) if `token` was
    /// not scheduled, e.g. because it already expired: a time-to-idle touch must not revive it.
    pub(crate) fn reschedule(&mut self, token: u32, deadline: u64) -> bool {
        if !self.contains(token) {
            return false;
        }
        self.schedule(token, deadline);
        true
    }

    /// Unschedule `token`; returns whether it was scheduled.
    #[inline]
    pub(crate) fn cancel(&mut self, token: u32) -> bool {
        // Caches without expiry never schedule anything: every removal passes through here.
        if self.is_empty() {
            return false;
        }
        let idx = index(token);
        idx < self.nodes.len() && self.cancel_index(idx)
    }

    /// Move time forward to `now` (clamped: never backwards) and append the tokens that came
    /// due to `expired`, visiting at most `budget` nodes. Returns `true` when the wheel has
    /// caught up with `now`; `false` means the budget ran out and a later call (with any `now`)
    /// continues where this one stopped.
    pub(crate) fn advance(&mut self, now: u64, budget: usize, expired: &mut Vec<u32>) -> bool {
        self.latest = self.latest.max(now);
        let mut budget = budget;
        loop {
            // Tokens scheduled with a deadline already reached go first: they are overdue.
            if let Some(idx) = self.first(DUE) {
                if budget == 0 {
                    return false;
                }
                budget -= 1;
                self.unlink(idx);
                self.fire(idx, expired);
                continue;
            }
            // The rest of the bucket being swept.
            if let Some(idx) = self.first(PENDING) {
                if budget == 0 {
                    return false;
                }
                budget -= 1;
                self.unlink(idx);
                let deadline = self.nodes[idx].deadline;
                if deadline <= self.time {
                    self.fire(idx, expired);
                } else {
                    self.place(idx, deadline);
                }
                continue;
            }
            if self.sweep.is_some() {
                match self.next_bucket() {
                    Some(list) => self.splice_to_pending(list),
                    None => self.sweep = None,
                }
                continue;
            }
            if self.time < self.latest {
                self.sweep = Some(Sweep {
                    from: self.time,
                    level: 0,
                    step: 0,
                });
                self.time = self.latest;
                continue;
            }
            return true;
        }
    }

    /// A lower bound on when `advance` can next return a token: advancing to any earlier time
    /// returns nothing (unless tokens are scheduled meanwhile). `None` when the wheel is empty;
    /// the wheel's `now()` when work is already due (an unfinished sweep or overdue tokens). A
    /// maintenance pacer can sleep until then.
    pub(crate) fn next_deadline_hint(&self) -> Option<u64> {
        if self.len == 0 {
            return None;
        }
        if self.sweep.is_some() || self.time < self.latest || self.first(DUE).is_some() {
            return Some(self.latest);
        }
        let mut best = NEVER;
        for level in 0..LEVELS {
            let bits = self.occupied[level];
            if bits == 0 {
                continue;
            }
            let len = BUCKETS[level] as u64;
            let tick = self.time >> SHIFT[level];
            // Distance (in buckets) from the current bucket to the first occupied one.
            let k = u64::from(rotate_right(bits, (tick % len) as u32, len as u32).trailing_zeros());
            let due_tick = if k == 0 {
                // The current bucket is visited at the next tick. Above level 0 it can only
                // hold tokens one full rotation out (they were placed >= one bucket ahead).
                if level == 0 || level == OVERFLOW {
                    tick + 1
                } else {
                    tick + len
                }
            } else {
                tick + k
            };
            best = best.min(tick_start(due_tick, level));
        }
        Some(best)
    }

    // ----- internals -----

    /// Place a linked-out node with `deadline` relative to `self.time`.
    fn place(&mut self, idx: usize, deadline: u64) {
        if deadline <= self.time {
            self.nodes[idx].level = LEVEL_DUE;
            self.push(DUE, idx);
            return;
        }
        let delta = deadline - self.time;
        // The lowest level whose whole span still covers the delay.
        let level = (0..OVERFLOW)
            .find(|&i| delta < 1u64 << SHIFT[i + 1])
            .unwrap_or(OVERFLOW);
        let slot = ((deadline >> SHIFT[level]) as usize) & (BUCKETS[level] - 1);
        self.nodes[idx].level = level as u8;
        self.nodes[idx].slot = slot as u8;
        self.push(OFFSET[level] + slot, idx);
        self.occupied[level] |= 1 << slot;
    }

    fn cancel_index(&mut self, idx: usize) -> bool {
        if self.nodes[idx].level == LEVEL_NONE {
            return false;
        }
        self.unlink(idx);
        self.nodes[idx].level = LEVEL_NONE;
        self.len -= 1;
        true
    }

    fn fire(&mut self, idx: usize, expired: &mut Vec<u32>) {
        self.nodes[idx].level = LEVEL_NONE;
        self.len -= 1;
        expired.push((idx - LISTS) as u32);
    }

    /// The next bucket the current sweep must visit, advancing its cursor.
    fn next_bucket(&mut self) -> Option<usize> {
        let target = self.time;
        let sweep = self.sweep.as_mut()?;
        while sweep.level < LEVELS {
            let level = sweep.level;
            let from_tick = sweep.from >> SHIFT[level];
            let to_tick = target >> SHIFT[level];
            let len = BUCKETS[level] as u64;
            let steps = if target == NEVER {
                // The end of time: every scheduled deadline (< NEVER) is due, including those
                // in the current level-0 tick, which an ordinary sweep would leave for the next
                // tick that never comes. Visit everything once.
                len
            } else if to_tick == from_tick {
                // This tick did not move, so no higher one did.
                return None;
            } else {
                (to_tick - from_tick).saturating_add(1).min(len)
            };
            if sweep.step < steps {
                let slot = ((from_tick + sweep.step) % len) as usize;
                sweep.step += 1;
                return Some(OFFSET[level] + slot);
            }
            sweep.level += 1;
            sweep.step = 0;
        }
        None
    }

    /// Move every node of bucket list `list` onto the (empty) pending list in O(1). The nodes
    /// keep their bucket label; `unlink` recomputes occupancy from the sentinels, so the label
    /// only has to name a bucket, not the list the node is in right now.
    fn splice_to_pending(&mut self, list: usize) {
        debug_assert!(self.first(PENDING).is_none());
        let first = self.nodes[list].next as usize;
        if first == list {
            return;
        }
        let last = self.nodes[list].prev as usize;
        self.nodes[PENDING].next = first as u32;
        self.nodes[PENDING].prev = last as u32;
        self.nodes[first].prev = PENDING as u32;
        self.nodes[last].next = PENDING as u32;
        self.nodes[list].next = list as u32;
        self.nodes[list].prev = list as u32;
        let (level, slot) = bucket_of(list);
        self.occupied[level] &= !(1 << slot);
    }

    fn first(&self, list: usize) -> Option<usize> {
        let next = self.nodes[list].next as usize;
        (next != list).then_some(next)
    }

    fn push(&mut self, list: usize, idx: usize) {
        let next = self.nodes[list].next;
        self.nodes[idx].prev = list as u32;
        self.nodes[idx].next = next;
        self.nodes[next as usize].prev = idx as u32;
        self.nodes[list].next = idx as u32;
    }

    /// Unlink a linked node (its label is left for the caller to set).
    fn unlink(&mut self, idx: usize) {
        let Node {
            prev,
            next,
            level,
            slot,
            ..
        } = self.nodes[idx];
        self.nodes[prev as usize].next = next;
        self.nodes[next as usize].prev = prev;
        self.nodes[idx].prev = idx as u32;
        self.nodes[idx].next = idx as u32;
        let level = usize::from(level);
        if level < LEVELS {
            let list = OFFSET[level] + usize::from(slot);
            if self.nodes[list].next as usize == list {
                self.occupied[level] &= !(1 << slot);
            }
        }
    }

    /// Check every structural invariant, and when no sweep is under way the placement
    /// invariants the firing guarantee rests on (see the module docs). Panics on violation.
    pub(crate) fn validate(&self) {
        assert!(self.time <= self.latest);
        let quiescent = self.sweep.is_none() && self.first(PENDING).is_none();
        let mut seen = 0usize;
        for list in 0..LISTS {
            let mut prev = list;
            let mut cur = self.nodes[list].next as usize;
            let mut count = 0usize;
            while cur != list {
                assert!(cur >= LISTS, "a sentinel inside list {list}");
                let n = self.nodes[cur];
                assert_eq!(n.prev as usize, prev, "broken back link");
                assert_ne!(n.deadline, NEVER);
                match list {
                    DUE => {
                        assert_eq!(n.level, LEVEL_DUE);
                        assert!(n.deadline <= self.time);
                    }
                    PENDING => assert!(usize::from(n.level) < LEVELS),
                    _ => {
                        let (level, slot) = bucket_of(list);
                        assert_eq!((usize::from(n.level), usize::from(n.slot)), (level, slot));
                        if level < OVERFLOW {
                            let want = (n.deadline >> SHIFT[level]) as usize & (BUCKETS[level] - 1);
                            assert_eq!(slot, want, "node in the wrong bucket");
                        }
                        if quiescent {
                            let tick = n.deadline >> SHIFT[level];
                            let now_tick = self.time >> SHIFT[level];
                            if level == 0 {
                                assert!(tick >= now_tick && tick <= now_tick + 64);
                            } else {
                                let len = BUCKETS[level] as u64;
                                assert!(tick > now_tick, "a level-{level} node is overdue");
                                assert!(level == OVERFLOW || tick <= now_tick + len);
                            }
                        }
                    }
                }
                count += 1;
                prev = cur;
                cur = n.next as usize;
            }
            assert_eq!(self.nodes[list].prev as usize, prev, "broken tail link");
            if list < DUE {
                let (level, slot) = bucket_of(list);
                assert_eq!(
                    self.occupied[level] >> slot & 1 == 1,
                    count > 0,
                    "occupancy bit"
                );
            }
            seen += count;
        }
        assert_eq!(seen, self.len);
        let scheduled = self.nodes[LISTS..]
            .iter()
            .filter(|n| n.level != LEVEL_NONE)
            .count();
        assert_eq!(scheduled, self.len);
    }
}

fn index(token: u32) -> usize {
    LISTS + token as usize
}

/// `(level, slot)` of a bucket sentinel.
fn bucket_of(list: usize) -> (usize, usize) {
    let level = OFFSET.iter().rposition(|&o| o <= list).unwrap_or(0);
    (level, list - OFFSET[level])
}

/// Rotate the low `len` bits of `bits` right by `by` (< len), so bit 0 is bucket `by`.
fn rotate_right(bits: u64, by: u32, len: u32) -> u64 {
    if by == 0 {
        return bits;
    }
    let mask = if len == 64 { u64::MAX } else { (1 << len) - 1 };
    ((bits >> by) | (bits << (len - by))) & mask
}

/// The first nanosecond of `tick` at `level`, saturating at `NEVER`.
fn tick_start(tick: u64, level: usize) -> u64 {
    u64::try_from(u128::from(tick) << SHIFT[level]).unwrap_or(NEVER)
}

/// `fire_bound` of the module docs: a token with deadline `d` is returned at the latest by the
/// first completed advance to this time.
#[cfg(test)]
pub(crate) fn fire_bound(deadline: u64) -> u64 {
    (deadline | ((1 << SHIFT[0]) - 1)).saturating_add(1)
}

#[cfg(all(test, not(loom)))]
mod tests;
