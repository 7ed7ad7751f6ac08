//! Plain CLOCK (second chance): one hand sweeping the residents in slot order.
//!
//! A resident whose reference bit is set gets a second chance (the bit is cleared); the first
//! unreferenced, unpinned resident the hand meets is the victim. Kept as the baseline the
//! CLOCK-Pro policy is measured against, and as the simplest correct policy behind the seam.

use super::{Admit, Residents, Reweigh, Token};

#[derive(Debug, Clone, Copy)]
struct Slot {
    weight: u32,
    resident: bool,
}

/// Plain CLOCK over a vector of slots; the token is the slot index.
#[derive(Debug)]
pub(crate) struct Clock {
    slots: Vec<Slot>,
    free: Vec<Token>,
    hand: usize,
    len: usize,
    weight: u64,
    capacity: u64,
}

impl Clock {
    pub(crate) fn new(capacity: u64) -> Self {
        Clock {
            slots: Vec::new(),
            free: Vec::new(),
            hand: 0,
            len: 0,
            weight: 0,
            capacity,
        }
    }

    pub(crate) fn admit<R: Residents>(
        &mut self,
        _hash: u64,
        weight: u32,
        res: &mut R,
        evicted: &mut Vec<Token>,
    ) -> Admit {
        if u64::from(weight) > self.capacity {
            return Admit::TooHeavy;
        }
        while self.weight + u64::from(weight) > self.capacity {
            if !self.evict_one(res, evicted, None) {
                return Admit::AllPinned;
            }
        }
        let token = match self.free.pop() {
            Some(t) => t,
            None => {
                self.slots.push(Slot {
                    weight: 0,
                    resident: false,
                });
                (self.slots.len() - 1) as Token
            }
        };
        self.slots[token as usize] = Slot {
            weight,
            resident: true,
        };
        self.len += 1;
        self.weight += u64::from(weight);
        Admit::Resident(token)
    }

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
        debug_assert!(
            self.slots[token as usize].resident,
            "reweigh of a token that is not resident"
        );
        let old = u64::from(self.slots[token as usize].weight);
        // Room first: if only pinned residents could make it, the old weight stays.
        while self.weight - old + w > self.capacity {
            if !self.evict_one(res, evicted, Some(token)) {
                return Reweigh::AllPinned;
            }
        }
        self.weight = self.weight - old + w;
        self.slots[token as usize].weight = weight;
        Reweigh::Done
    }

    pub(crate) fn remove(&mut self, token: Token) {
        let slot = &mut self.slots[token as usize];
        debug_assert!(slot.resident, "remove of a token that is not resident");
        if slot.resident {
            slot.resident = false;
            self.weight -= u64::from(slot.weight);
            self.len -= 1;
            self.free.push(token);
        }
    }

    pub(crate) fn clear(&mut self) {
        *self = Clock::new(self.capacity);
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn weight(&self) -> u64 {
        self.weight
    }

    /// Move the hand until one victim is evicted; `false` when a bounded sweep (two full turns:
    /// one to clear reference bits, one to find them clear) found none, i.e. every resident
    /// that would free weight is pinned. Readers set bits without the lock, so they can set
    /// every bit again before the hand comes back: then the last unpinned resident the hand
    /// passed goes anyway (a busy shard is not a full one).
    fn evict_one<R: Residents>(
        &mut self,
        res: &mut R,
        evicted: &mut Vec<Token>,
        skip: Option<Token>,
    ) -> bool {
        let n = self.slots.len();
        let mut passed = None;
        for _ in 0..2 * n + 1 {
            if n == 0 {
                return false;
            }
            let i = self.hand % n;
            self.hand = (i + 1) % n;
            let slot = self.slots[i];
            let token = i as Token;
            if !slot.resident || slot.weight == 0 || Some(token) == skip || res.is_pinned(token) {
                continue;
            }
            if res.take_referenced(token) {
                passed = Some(token);
                continue;
            }
            self.remove(token);
            evicted.push(token);
            return true;
        }
        match passed {
            Some(token) => {
                self.remove(token);
                evicted.push(token);
                true
            }
            None => false,
        }
    }

    pub(crate) fn validate(&self) {
        let residents: Vec<_> = self.slots.iter().filter(|s| s.resident).collect();
        assert_eq!(residents.len(), self.len, "len counts the resident slots");
        let w: u64 = residents.iter().map(|s| u64::from(s.weight)).sum();
        assert_eq!(w, self.weight, "weight sums the resident weights");
        assert_eq!(
            self.free.len() + self.len,
            self.slots.len(),
            "every slot is free or resident"
        );
        assert!(
            self.weight <= self.capacity || self.slots.is_empty(),
            "weight within capacity"
        );
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[derive(Default)]
    struct Bits {
        referenced: HashSet<Token>,
        pinned: HashSet<Token>,
    }
    impl Residents for Bits {
        fn take_referenced(&mut self, t: Token) -> bool {
            self.referenced.remove(&t)
        }
        fn is_pinned(&self, t: Token) -> bool {
            self.pinned.contains(&t)
        }
    }

    #[test]
    fn second_chance() {
        let mut c = Clock::new(2);
        let mut bits = Bits::default();
        let mut ev = Vec::new();
        let Admit::Resident(a) = c.admit(1, 1, &mut bits, &mut ev) else {
            panic!()
        };
        let Admit::Resident(b) = c.admit(2, 1, &mut bits, &mut ev) else {
            panic!()
        };
        bits.referenced.insert(a);
        let Admit::Resident(_) = c.admit(3, 1, &mut bits, &mut ev) else {
            panic!()
        };
        assert_eq!(ev, vec![b], "the unreferenced resident is the victim");
        c.validate();
    }

    /// Readers that set every bit again before the hand returns: a busy shard still admits.
    struct AlwaysReferenced;
    impl Residents for AlwaysReferenced {
        fn take_referenced(&mut self, _: Token) -> bool {
            true
        }
        fn is_pinned(&self, _: Token) -> bool {
            false
        }
    }

    #[test]
    fn constantly_referenced_residents_are_not_all_pinned() {
        let mut c = Clock::new(2);
        let mut ev = Vec::new();
        for h in 1..=2 {
            assert!(matches!(
                c.admit(h, 1, &mut AlwaysReferenced, &mut ev),
                Admit::Resident(_)
            ));
        }
        assert!(matches!(
            c.admit(3, 1, &mut AlwaysReferenced, &mut ev),
            Admit::Resident(_)
        ));
        assert_eq!(ev.len(), 1, "one resident made room");
        c.validate();
    }

    #[test]
    fn all_pinned_and_too_heavy() {
        let mut c = Clock::new(2);
        let mut bits = Bits::default();
        let mut ev = Vec::new();
        assert_eq!(c.admit(0, 3, &mut bits, &mut ev), Admit::TooHeavy);
        let Admit::Resident(a) = c.admit(1, 1, &mut bits, &mut ev) else {
            panic!()
        };
        let Admit::Resident(b) = c.admit(2, 1, &mut bits, &mut ev) else {
            panic!()
        };
        bits.pinned.extend([a, b]);
        assert_eq!(c.admit(3, 1, &mut bits, &mut ev), Admit::AllPinned);
        assert!(ev.is_empty());
        assert_eq!(c.len(), 2);
        c.validate();
        // Growing `a` needs `b`'s room, which is pinned: refused, weight unchanged.
        assert_eq!(c.reweigh(a, 2, &mut bits, &mut ev), Reweigh::AllPinned);
        assert_eq!(c.weight, 2);
        c.validate();
        bits.pinned.clear();
        assert_eq!(c.reweigh(a, 2, &mut bits, &mut ev), Reweigh::Done);
        assert_eq!((ev.as_slice(), c.weight), ([b].as_slice(), 2));
        c.validate();
    }
}
