//! The ghost index: key hash → slab token of the ghost (non-resident page in its test period)
//! with that hash.
//!
//! An open-addressed table of `u64` slots with linear probing, owned by one shard's
//! [`ClockPro`](super::ClockPro) and used only under the shard's writer lock (no concurrent
//! readers, so deletion can move slots: backward-shift deletion, no tombstones).
//!
//! A slot packs the token (low 32 bits; [`EMPTY`] has the token `u32::MAX`, which the slab
//! never hands out) and a 32-bit *fragment* of the mixed hash (high 32 bits). The fragment
//! also picks the slot (`fragment × len / 2³²`), so moving or rehashing a slot never reads a
//! node; a lookup reads the node (to compare the full stored hash) only when the fragment
//! matches, so a probe for a hash that is not there touches nothing but the table.
//!
//! The table grows by rebuilding (never shrinks): by doubling while the ghosts are few, and to
//! the size the caller's bound asks for at most, so an index whose ghosts never reach their
//! bound stays small, and one at its bound has a load of at most [`MAX_LOAD_NUM`] /
//! [`MAX_LOAD_DEN`]. The bound only grows with the largest resident count, so rebuilds are
//! rare (a handful while a shard fills).
//!
//! Two ghosts never share a hash here: [`GhostIndex::insert`] replaces the older one (the
//! caller drops it), as CLOCK-Pro keeps only the newer history of two keys with one hash.

/// An empty slot: token `u32::MAX` (never a slab token).
const EMPTY: u64 = u64::MAX;
/// The load a rebuild aims to stay under: at most half of the slots are used.
const MAX_LOAD_NUM: usize = 1;
const MAX_LOAD_DEN: usize = 2;
/// Slots of the first table.
const MIN_SLOTS: usize = 16;

/// Hash → ghost token, see the module docs.
#[derive(Debug, Default)]
pub(super) struct GhostIndex {
    slots: Vec<u64>,
    len: usize,
    /// The table is full (at its maximum load) at this many entries: one more rebuilds it.
    full_at: usize,
}

/// The fragment of `hash` (the high half of a multiplicative mix: dense test keys spread too).
#[inline]
fn fragment(hash: u64) -> u32 {
    (hash.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as u32
}

#[inline]
fn token_of(slot: u64) -> u32 {
    slot as u32
}

#[inline]
fn fragment_of(slot: u64) -> u32 {
    (slot >> 32) as u32
}

#[inline]
fn pack(frag: u32, token: u32) -> u64 {
    u64::from(frag) << 32 | u64::from(token)
}

/// Slots needed for `n` entries at the maximum load (at least one empty slot).
fn slots_for(n: usize) -> usize {
    (n * MAX_LOAD_DEN).div_ceil(MAX_LOAD_NUM).max(n + 1)
}

/// Where a lookup of `hash` (already masked) starts, in a table at `base` of `len` slots: for
/// prefetching from outside the writer lock (the pair may be stale; a prefetch of a stale
/// address is harmless).
#[inline]
pub(crate) fn home_addr(base: usize, len: usize, hash: u64) -> usize {
    base.wrapping_add(GhostIndex::home(fragment(hash), len) * std::mem::size_of::<u64>())
}

impl GhostIndex {
    /// The table's address and slot count, for [`home_addr`].
    pub(super) fn raw(&self) -> (usize, usize) {
        (self.slots.as_ptr() as usize, self.slots.len())
    }

    /// Number of ghosts indexed.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Number of slots (the tests check the sizing).
    #[cfg(test)]
    pub(super) fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// The home slot of fragment `frag` in a table of `n` slots.
    #[inline]
    fn home(frag: u32, n: usize) -> usize {
        ((u64::from(frag) * n as u64) >> 32) as usize
    }

    #[inline]
    fn next(&self, i: usize) -> usize {
        let i = i + 1;
        if i == self.slots.len() { 0 } else { i }
    }

    /// The ghost whose full (masked) hash is `hash`; `hash_of` gives a token's stored hash.
    #[inline]
    pub(super) fn get(&self, hash: u64, hash_of: impl Fn(u32) -> u64) -> Option<u32> {
        if self.len == 0 {
            return None;
        }
        let frag = fragment(hash);
        let mut i = Self::home(frag, self.slots.len());
        loop {
            let s = self.slots[i];
            if s == EMPTY {
                return None;
            }
            if fragment_of(s) == frag && hash_of(token_of(s)) == hash {
                return Some(token_of(s));
            }
            i = self.next(i);
        }
    }

    /// Index `token` under `hash`. If another ghost already has this hash, `token` takes its
    /// slot and the other token is returned (it is no longer indexed). `bound` is the most
    /// entries the caller will hold; it caps how far a growth rebuild goes.
    #[inline]
    pub(super) fn insert(
        &mut self,
        hash: u64,
        token: u32,
        hash_of: impl Fn(u32) -> u64,
        bound: usize,
    ) -> Option<u32> {
        debug_assert_ne!(token, token_of(EMPTY), "not a slab token");
        if self.len >= self.full_at {
            self.grow(bound);
        }
        let frag = fragment(hash);
        let mut i = Self::home(frag, self.slots.len());
        loop {
            let s = self.slots[i];
            if s == EMPTY {
                self.slots[i] = pack(frag, token);
                self.len += 1;
                return None;
            }
            if fragment_of(s) == frag && hash_of(token_of(s)) == hash {
                self.slots[i] = pack(frag, token);
                return Some(token_of(s));
            }
            i = self.next(i);
        }
    }

    /// Remove `token`, indexed under `hash`, if it is indexed (it is not when a newer ghost
    /// with the same hash replaced it). Never reads a node.
    #[inline]
    pub(super) fn remove(&mut self, hash: u64, token: u32) -> bool {
        if self.len == 0 {
            return false;
        }
        let want = pack(fragment(hash), token);
        let mut i = Self::home(fragment(hash), self.slots.len());
        loop {
            let s = self.slots[i];
            if s == EMPTY {
                return false;
            }
            if s == want {
                break;
            }
            i = self.next(i);
        }
        self.len -= 1;
        // Backward shift: pull each later slot of the cluster that may live at `i` (its home is
        // not cyclically within `(i, j]`) back into the hole, until an empty slot.
        let n = self.slots.len();
        let mut j = i;
        loop {
            j = self.next(j);
            let s = self.slots[j];
            if s == EMPTY {
                break;
            }
            let k = Self::home(fragment_of(s), n);
            let stays = if i <= j {
                i < k && k <= j
            } else {
                i < k || k <= j
            };
            if !stays {
                self.slots[i] = s;
                i = j;
            }
        }
        self.slots[i] = EMPTY;
        true
    }

    /// Rebuild into a larger table: twice the slots, at least enough for one more entry, at
    /// most what `bound` entries need (unless more are already needed).
    #[cold]
    fn grow(&mut self, bound: usize) {
        let need = slots_for(self.len + 1);
        let cap = slots_for(bound).max(need);
        let n = (2 * self.slots.len()).max(MIN_SLOTS).clamp(need, cap);
        let old = std::mem::replace(&mut self.slots, vec![EMPTY; n]);
        // The largest count whose `slots_for` still fits `n`.
        self.full_at = n * MAX_LOAD_NUM / MAX_LOAD_DEN;
        while slots_for(self.full_at) > n {
            self.full_at -= 1;
        }
        for s in old {
            if s == EMPTY {
                continue;
            }
            let mut i = Self::home(fragment_of(s), n);
            while self.slots[i] != EMPTY {
                i = self.next(i);
            }
            self.slots[i] = s;
        }
    }

    /// The indexed tokens, in table order.
    pub(super) fn tokens(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots
            .iter()
            .copied()
            .filter(|&s| s != EMPTY)
            .map(token_of)
    }

    /// Check the table's own invariants: the count, the load, each entry's fragment against
    /// `hash_of`, no duplicate token, and every entry reachable from its home slot (no empty
    /// slot between them). Panics with the name of the broken one.
    pub(super) fn validate(&self, hash_of: impl Fn(u32) -> u64) {
        let n = self.slots.len();
        let used = self.slots.iter().filter(|&&s| s != EMPTY).count();
        assert_eq!(used, self.len, "ghost index count");
        assert!(
            self.len <= self.full_at,
            "ghost index within its maximum load"
        );
        assert!(
            self.full_at < n || n == 0,
            "ghost index keeps an empty slot at its maximum load"
        );
        if n == 0 {
            return;
        }
        assert!(used < n, "ghost index keeps an empty slot");
        let mut tokens: Vec<u32> = self.tokens().collect();
        tokens.sort_unstable();
        assert!(
            tokens.windows(2).all(|w| w[0] != w[1]),
            "ghost index names each token once"
        );
        for (j, &s) in self.slots.iter().enumerate() {
            if s == EMPTY {
                continue;
            }
            assert_eq!(
                fragment_of(s),
                fragment(hash_of(token_of(s))),
                "ghost index fragment matches the node's hash"
            );
            let mut i = Self::home(fragment_of(s), n);
            while i != j {
                assert_ne!(
                    self.slots[i], EMPTY,
                    "ghost index entry reachable from its home slot"
                );
                i = self.next(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first `count` hashes (counting up from 0) whose home is `home` in `n` slots.
    fn hashes_with_home(home: usize, n: usize, count: usize) -> Vec<u64> {
        let mut out = Vec::new();
        let mut h = 0u64;
        while out.len() < count {
            if GhostIndex::home(fragment(h), n) == home {
                out.push(h);
            }
            h += 1;
        }
        out
    }

    /// `home_addr` names the slot a lookup reads first: a lone ghost sits exactly there.
    #[test]
    fn home_addr_is_where_a_lookup_starts() {
        for h in [1u64, 7, 0x1234_5678_9abc, u64::MAX >> 5] {
            let mut idx = GhostIndex::default();
            idx.insert(h, 3, |_| h, 100);
            let (base, len) = idx.raw();
            let at = idx
                .slots
                .iter()
                .position(|&s| token_of(s) == 3)
                .expect("indexed");
            assert_eq!(home_addr(base, len, h), base + at * 8, "hash {h:#x}");
        }
    }

    /// A model check: the index against a plain map, through inserts, replacements and
    /// removals, validating after every step.
    struct Check {
        idx: GhostIndex,
        /// Token → hash (the "nodes").
        hash: Vec<u64>,
        model: std::collections::HashMap<u64, u32>,
        bound: usize,
    }

    impl Check {
        fn new(bound: usize) -> Self {
            Check {
                idx: GhostIndex::default(),
                hash: Vec::new(),
                model: Default::default(),
                bound,
            }
        }

        fn insert(&mut self, h: u64) -> u32 {
            let t = self.hash.len() as u32;
            self.hash.push(h);
            let hs = &self.hash;
            let old = self.idx.insert(h, t, |t| hs[t as usize], self.bound);
            assert_eq!(
                old,
                self.model.insert(h, t),
                "insert replaces the same-hash token"
            );
            self.check();
            t
        }

        fn remove(&mut self, t: u32) {
            let h = self.hash[t as usize];
            let indexed = self.model.get(&h) == Some(&t);
            assert_eq!(
                self.idx.remove(h, t),
                indexed,
                "remove finds indexed tokens"
            );
            if indexed {
                self.model.remove(&h);
            }
            self.check();
        }

        fn check(&self) {
            let hs = &self.hash;
            self.idx.validate(|t| hs[t as usize]);
            assert_eq!(self.idx.len(), self.model.len());
            for (&h, &t) in &self.model {
                assert_eq!(self.idx.get(h, |t| hs[t as usize]), Some(t));
            }
        }
    }

    /// A hash whose fragment is `frag`, distinct for each `low` (the mix is a bijection:
    /// multiply by the inverse of the odd constant).
    fn hash_with_fragment(frag: u32, low: u32) -> u64 {
        const K: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut inv = K;
        for _ in 0..6 {
            inv = inv.wrapping_mul(2u64.wrapping_sub(K.wrapping_mul(inv)));
        }
        let h = (u64::from(frag) << 32 | u64::from(low)).wrapping_mul(inv);
        assert_eq!(fragment(h), frag);
        h
    }

    #[test]
    fn colliding_fragments_are_told_apart_by_the_full_hash() {
        let mut c = Check::new(64);
        // Six hashes with one fragment, then two with a neighbouring home.
        let same: Vec<u64> = (0..6).map(|l| hash_with_fragment(0xdead_beef, l)).collect();
        let near: Vec<u64> = (0..2).map(|l| hash_with_fragment(0xdead_bef0, l)).collect();
        let mut tokens = Vec::new();
        for &h in same.iter().chain(&near) {
            tokens.push(c.insert(h));
        }
        assert_eq!(
            c.idx.len(),
            8,
            "one fragment, distinct hashes: distinct ghosts"
        );
        // Not indexed: same fragment, another hash.
        let hs = &c.hash;
        assert_eq!(
            c.idx
                .get(hash_with_fragment(0xdead_beef, 99), |t| hs[t as usize]),
            None
        );
        // Replace one in the middle of the run, remove others around it.
        let newer = c.insert(same[3]);
        assert_eq!(c.idx.len(), 8);
        c.remove(tokens[3]); // stale: a no-op
        c.remove(tokens[0]);
        c.remove(tokens[4]);
        let hs = &c.hash;
        assert_eq!(c.idx.get(same[3], |t| hs[t as usize]), Some(newer));
        c.remove(newer);
        for &t in &[tokens[1], tokens[2], tokens[5], tokens[6], tokens[7]] {
            c.remove(t);
        }
        assert_eq!(c.idx.len(), 0);
    }

    #[test]
    fn same_home_wrap_around_and_backward_shift() {
        // Fill a fixed-size table (bound = its size) with clusters at the last slot, so they
        // wrap to the front, then remove from the middle of the cluster.
        let bound = 10;
        let n = slots_for(bound);
        let mut c = Check::new(bound);
        let last = hashes_with_home(n - 1, n, 5);
        let first = hashes_with_home(0, n, 2);
        let mid = hashes_with_home(n / 2, n, 2);
        let mut tokens = Vec::new();
        for &h in last.iter().chain(&first).chain(&mid) {
            tokens.push(c.insert(h));
        }
        assert_eq!(c.idx.slot_count(), n, "one table, sized for the bound");
        // The cluster at the end wraps: slot 0 is taken by a `last` entry, not by `first`.
        let slot0 = c.idx.slots[0];
        assert!(last.contains(&c.hash[token_of(slot0) as usize]), "wrapped");
        // Remove in an order that exercises shifting across the wrap.
        for &i in &[1usize, 5, 0, 6, 3, 7, 2, 8, 4] {
            c.remove(tokens[i]);
        }
        assert_eq!(c.idx.len(), 0);
        assert!(
            c.idx.slots.iter().all(|&s| s == EMPTY),
            "all slots empty again"
        );
    }

    #[test]
    fn same_hash_keeps_the_newer_token_and_removing_the_older_is_a_no_op() {
        let mut c = Check::new(8);
        let a = c.insert(77);
        let b = c.insert(77);
        assert_eq!(c.idx.len(), 1);
        c.remove(a); // replaced: not indexed, nothing removed
        assert_eq!(c.idx.len(), 1);
        let hs = &c.hash;
        assert_eq!(c.idx.get(77, |t| hs[t as usize]), Some(b));
        c.remove(b);
        assert_eq!(c.idx.len(), 0);
    }

    #[test]
    fn grows_by_doubling_up_to_the_bound_and_beyond_when_needed() {
        let mut c = Check::new(100);
        let mut sizes = vec![];
        for h in 0..100u64 {
            c.insert(h * 0x1_0000_0001);
            if sizes.last() != Some(&c.idx.slot_count()) {
                sizes.push(c.idx.slot_count());
            }
        }
        assert_eq!(sizes, vec![16, 32, 64, 128, slots_for(100)]);
        // The bound grew (more residents): the table follows.
        c.bound = 1000;
        for h in 100..1000u64 {
            c.insert(h * 0x1_0000_0001);
        }
        assert_eq!(c.idx.slot_count(), slots_for(1000));
        // A bound that is too small never overfills the table.
        c.bound = 1;
        for h in 1000..1100u64 {
            c.insert(h * 0x1_0000_0001);
        }
        assert!(c.idx.len() * MAX_LOAD_DEN <= c.idx.slot_count() * MAX_LOAD_NUM);
    }

    #[test]
    fn random_operations_match_a_map() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for bound in [1usize, 3, 20, 200] {
            let mut c = Check::new(bound);
            let mut live: Vec<u32> = Vec::new();
            for _ in 0..3000 {
                if live.len() < bound + 1 && rnd() % 3 != 0 {
                    // Small hash space: frequent same-hash replacements; dense values: home
                    // clusters.
                    let h = rnd() % (4 * bound as u64 + 4);
                    let t = c.insert(h);
                    live.retain(|&u| c.hash[u as usize] != h);
                    live.push(t);
                } else if !live.is_empty() {
                    let t = live.swap_remove((rnd() % live.len() as u64) as usize);
                    c.remove(t);
                    // And a stale token (replaced earlier) now and then.
                    if rnd() % 4 == 0 && !c.hash.is_empty() {
                        let s = (rnd() % c.hash.len() as u64) as u32;
                        if !live.contains(&s) {
                            c.remove(s);
                        }
                    }
                }
            }
        }
    }
}
