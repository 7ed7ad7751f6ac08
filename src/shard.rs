//! One shard: a lock-free reader half (the table) and a locked writer half (the policy and
//! the bookkeeping that maps policy tokens to table slots).
//!
//! Readers load the table pointer and probe it under an epoch guard; they never touch the
//! writer half. Every structural change happens under the writer lock: admission and eviction
//! through the policy, publication into the table, rebuilding the table, retiring entries.
//! User code (listeners, weighers, predicates) never runs under the lock: removed entries are
//! handed back to the caller, who reports them after unlocking while its guard keeps them
//! readable.

use crate::entry::Entry;
use crate::hash;
use crate::listener::RemovalCause;
use crate::policy::{Admit, EvictionPolicy, Policy, Residents, Token};
use crate::reclaim::Guard;
use crate::sync::{AtomicU64, AtomicUsize, Mutex, Ordering, lock};
use crate::table::{Probe, Table, TablePtr, new_entry};
use crossbeam_utils::CachePadded;

/// An entry that left a shard, with the reason; readable while the caller's guard lives.
pub(crate) type Removed<'g, K, V> = (&'g Entry<K, V>, RemovalCause);

/// What an insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InsertOutcome {
    Inserted,
    Replaced,
    TooHeavy,
    /// No room: every evictable entry is pinned.
    Full,
}

pub(crate) struct Shard<K, V> {
    table: CachePadded<TablePtr<K, V>>,
    writer: Mutex<Writer>,
    /// Mirrors of the writer's counts, for `len()` without the lock.
    len: AtomicUsize,
    weight: AtomicU64,
}

struct Writer {
    policy: Policy,
    /// Table slot of each resident token.
    slot_of: Vec<u32>,
    live: usize,
    tombstones: usize,
    slots: usize,
    /// Scratch for the policy's victims.
    evicted: Vec<Token>,
}

/// The shard's answers to the policy, valid for one locked operation.
struct Res<'a, K, V> {
    table: &'a Table<K, V>,
    slot_of: &'a [u32],
}

impl<K, V> Residents for Res<'_, K, V> {
    /// The reference bit lives in the slot's group, so the hand never loads the entry.
    fn take_referenced(&mut self, token: Token) -> bool {
        self.table.take_referenced(self.slot_of[token as usize])
    }

    fn is_pinned(&self, _token: Token) -> bool {
        false
    }
}

/// Most of the table may hold entries and tombstones before a rebuild; the rest keeps probe
/// paths short and guarantees every path ends at an empty slot.
fn max_load(slots: usize) -> usize {
    slots - slots / 8
}

/// Live entries above this share of the slots make a rebuild grow the table.
fn grow_at(slots: usize) -> usize {
    slots * 5 / 8
}

impl<K, V> Shard<K, V> {
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub(crate) fn weight(&self) -> u64 {
        self.weight.load(Ordering::Relaxed)
    }
}

impl<K: Eq, V> Shard<K, V> {
    /// A shard holding up to `capacity` weight, with a table sized for `expected` entries.
    pub(crate) fn new(kind: EvictionPolicy, capacity: u64, expected: usize) -> Self {
        let table = Table::with_slots(expected.saturating_mul(8) / 5 + 1);
        let slots = table.slots();
        Shard {
            table: CachePadded::new(TablePtr::new(table)),
            writer: Mutex::new(Writer {
                policy: Policy::new(kind, capacity),
                slot_of: Vec::new(),
                live: 0,
                tombstones: 0,
                slots,
                evicted: Vec::new(),
            }),
            len: AtomicUsize::new(0),
            weight: AtomicU64::new(0),
        }
    }

    /// Lock-free read: the live entry for the key, marked referenced.
    #[inline]
    pub(crate) fn get<'g>(
        &self,
        hash: u64,
        eq: impl FnMut(&K) -> bool,
        now: Option<u64>,
        guard: &'g Guard,
    ) -> Option<&'g Entry<K, V>> {
        let table = self.table.load(guard);
        let hit = table.find(hash, hash::tag(hash), eq, guard)?;
        if let Some(now) = now
            && hit.entry.is_expired(now)
        {
            return None;
        }
        hit.touch();
        Some(hit.entry)
    }

    /// Lock-free read without marking the entry referenced (for `contains_key`, `iter`).
    #[inline]
    pub(crate) fn peek<'g>(
        &self,
        hash: u64,
        eq: impl FnMut(&K) -> bool,
        guard: &'g Guard,
    ) -> Option<&'g Entry<K, V>> {
        self.table
            .load(guard)
            .find(hash, hash::tag(hash), eq, guard)
            .map(|hit| hit.entry)
    }

    /// Insert or replace. `now` decides whether a replaced entry had already expired (it is
    /// then reported as `Expired`, not `Replaced`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn insert<'g>(
        &self,
        hash: u64,
        key: K,
        value: V,
        weight: u32,
        deadline: u64,
        now: u64,
        guard: &'g Guard,
        out: &mut Vec<Removed<'g, K, V>>,
    ) -> InsertOutcome {
        let tag = hash::tag(hash);
        let mut w = lock(&self.writer);
        let w = &mut *w;
        self.ensure_room(w, guard);
        let table = self.table.load(guard);
        let outcome = match table.probe(hash, tag, |k| *k == key, guard) {
            Some(Probe::Found(slot)) => {
                let Some(old) = table.entry_at(slot, guard) else {
                    unreachable!("a found slot holds an entry")
                };
                let token = old.token;
                if old.weight != weight {
                    let mut res = Res {
                        table,
                        slot_of: &w.slot_of,
                    };
                    if !w.policy.reweigh(token, weight, &mut res, &mut w.evicted) {
                        // The caller meant to replace the value: keeping the old one would
                        // serve a value the caller has superseded. It leaves as `Replaced`.
                        let e = self.unlink(w, table, slot, guard);
                        w.policy.remove(e.token);
                        out.push((e, RemovalCause::Replaced));
                        self.publish_counts(w);
                        return InsertOutcome::TooHeavy;
                    }
                }
                let fresh = Entry::new(key, value, hash, token, weight, deadline);
                let expired = old.is_expired(now);
                // The slot keeps its reference bit across the replacement, unless the old
                // entry had expired: then the newcomer starts unreferenced.
                if expired {
                    table.take_referenced(slot);
                }
                let old_ptr = table.replace(slot, new_entry(fresh, guard), guard);
                self.table.retire(old_ptr, guard);
                out.push((
                    old,
                    if expired {
                        RemovalCause::Expired
                    } else {
                        RemovalCause::Replaced
                    },
                ));
                self.remove_victims(w, table, guard, out);
                if expired {
                    InsertOutcome::Inserted
                } else {
                    InsertOutcome::Replaced
                }
            }
            Some(Probe::Vacant(slot)) => {
                let mut res = Res {
                    table,
                    slot_of: &w.slot_of,
                };
                match w.policy.admit(hash, weight, &mut res, &mut w.evicted) {
                    Admit::TooHeavy => InsertOutcome::TooHeavy,
                    Admit::AllPinned => {
                        self.remove_victims(w, table, guard, out);
                        InsertOutcome::Full
                    }
                    Admit::Resident(token) => {
                        // Victims first: the newcomer may reuse a victim's token.
                        self.remove_victims(w, table, guard, out);
                        let e =
                            new_entry(Entry::new(key, value, hash, token, weight, deadline), guard);
                        if table.publish(slot, tag, e) {
                            w.tombstones -= 1;
                        }
                        let t = token as usize;
                        if w.slot_of.len() <= t {
                            w.slot_of.resize(t + 1, u32::MAX);
                        }
                        w.slot_of[t] = slot;
                        w.live += 1;
                        InsertOutcome::Inserted
                    }
                }
            }
            None => unreachable!("ensure_room leaves a free slot on every probe path"),
        };
        self.publish_counts(w);
        outcome
    }

    /// Remove the key's entry, if present.
    pub(crate) fn remove<'g>(
        &self,
        hash: u64,
        eq: impl FnMut(&K) -> bool,
        guard: &'g Guard,
    ) -> Option<&'g Entry<K, V>> {
        let mut w = lock(&self.writer);
        let w = &mut *w;
        let table = self.table.load(guard);
        let Some(Probe::Found(slot)) = table.probe(hash, hash::tag(hash), eq, guard) else {
            return None;
        };
        let e = self.unlink(w, table, slot, guard);
        w.policy.remove(e.token);
        self.publish_counts(w);
        Some(e)
    }

    /// Remove `entry` if it is still the key's current entry (not replaced meanwhile).
    pub(crate) fn remove_exact<'g>(&self, entry: &'g Entry<K, V>, guard: &'g Guard) -> bool {
        let mut w = lock(&self.writer);
        let w = &mut *w;
        let table = self.table.load(guard);
        let Some(Probe::Found(slot)) = table.probe(
            entry.hash,
            hash::tag(entry.hash),
            |k| *k == entry.key,
            guard,
        ) else {
            return false;
        };
        if !std::ptr::eq(table.ptr_at(slot, guard).as_raw(), entry) {
            return false;
        }
        let e = self.unlink(w, table, slot, guard);
        w.policy.remove(e.token);
        self.publish_counts(w);
        true
    }

    /// Remove every entry.
    pub(crate) fn clear<'g>(&self, guard: &'g Guard, out: &mut Vec<Removed<'g, K, V>>) {
        let mut w = lock(&self.writer);
        let w = &mut *w;
        let table = self.table.load(guard);
        for (slot, e) in table.entries(guard) {
            self.table.retire(table.ptr_at(slot, guard), guard);
            out.push((e, RemovalCause::Removed));
        }
        // A fresh table instead of clearing slot by slot: readers on the old one still see a
        // consistent (if stale) snapshot, and no tombstones are left behind.
        self.table.swap_in(Table::with_slots(w.slots), guard);
        w.policy.clear();
        w.slot_of.clear();
        w.live = 0;
        w.tombstones = 0;
        self.publish_counts(w);
    }

    /// Weakly consistent snapshot of the shard's entries, read without the lock.
    pub(crate) fn entries<'g>(&self, guard: &'g Guard) -> impl Iterator<Item = &'g Entry<K, V>> + 'g
    where
        K: 'g,
        V: 'g,
    {
        self.table.load(guard).entries(guard).map(|(_, e)| e)
    }

    fn unlink<'g>(
        &self,
        w: &mut Writer,
        table: &Table<K, V>,
        slot: u32,
        guard: &'g Guard,
    ) -> &'g Entry<K, V> {
        let Some(e) = table.entry_at(slot, guard) else {
            unreachable!("unlink of an empty slot")
        };
        let (ptr, tomb) = table.clear(slot, guard);
        if tomb {
            w.tombstones += 1;
        }
        w.live -= 1;
        self.table.retire(ptr, guard);
        e
    }

    fn remove_victims<'g>(
        &self,
        w: &mut Writer,
        table: &Table<K, V>,
        guard: &'g Guard,
        out: &mut Vec<Removed<'g, K, V>>,
    ) {
        let mut victims = std::mem::take(&mut w.evicted);
        for token in victims.drain(..) {
            let slot = w.slot_of[token as usize];
            let e = self.unlink(w, table, slot, guard);
            out.push((e, RemovalCause::Evicted));
        }
        w.evicted = victims;
    }

    /// Rebuild the table if one more entry could leave a probe path without a free slot.
    fn ensure_room(&self, w: &mut Writer, guard: &Guard) {
        if w.live + w.tombstones < max_load(w.slots) {
            return;
        }
        let slots = if w.live + 1 > grow_at(w.slots) {
            w.slots * 2
        } else {
            w.slots
        };
        let old = self.table.load(guard);
        let fresh = Table::with_slots(slots);
        for (slot, e) in old.entries(guard) {
            let new_slot = fresh.place(e.hash, hash::tag(e.hash), old.ptr_at(slot, guard), guard);
            if old.is_referenced(slot) {
                fresh.touch(new_slot);
            }
            w.slot_of[e.token as usize] = new_slot;
        }
        w.slots = fresh.slots();
        w.tombstones = 0;
        self.table.swap_in(fresh, guard);
    }

    fn publish_counts(&self, w: &Writer) {
        self.len.store(w.live, Ordering::Relaxed);
        self.weight.store(w.policy.weight(), Ordering::Relaxed);
    }

    /// Check the writer's bookkeeping against the table (tests).
    pub(crate) fn validate(&self, guard: &Guard) {
        let w = lock(&self.writer);
        let table = self.table.load(guard);
        let mut n = 0;
        for (slot, e) in table.entries(guard) {
            n += 1;
            assert_eq!(
                w.slot_of[e.token as usize], slot,
                "slot_of maps each token to its slot"
            );
        }
        assert_eq!(n, w.live, "live counts the table's entries");
        assert_eq!(w.policy.len(), w.live, "the policy tracks every live entry");
        w.policy.validate();
    }
}
