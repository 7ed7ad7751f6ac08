use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

const SEC: u64 = 1_000_000_000;
const MIN: u64 = 60 * SEC;
const HOUR: u64 = 60 * MIN;
const DAY: u64 = 24 * HOUR;
const YEAR: u64 = 365 * DAY;
const TICK: u64 = 1 << 30;

/// Advance with an unlimited budget; returns the tokens in firing order.
fn drain(w: &mut TimerWheel, now: u64) -> Vec<u32> {
    let mut out = Vec::new();
    assert!(w.advance(now, usize::MAX, &mut out));
    w.validate();
    out
}

/// Advance in steps of `step` up to `to`; returns the first time (step end) `token` fired.
fn fire_time(w: &mut TimerWheel, token: u32, from: u64, to: u64, step: u64) -> Option<u64> {
    let mut t = from;
    while t < to {
        t = (t + step).min(to);
        if drain(w, t).contains(&token) {
            return Some(t);
        }
    }
    None
}

#[test]
fn level0_fires_at_the_end_of_its_tick() {
    let mut w = TimerWheel::new();
    w.schedule(7, SEC / 2);
    w.validate();
    assert_eq!(w.len(), 1);
    assert!(
        drain(&mut w, SEC / 2).is_empty(),
        "the current tick is not swept"
    );
    assert!(drain(&mut w, TICK - 1).is_empty());
    assert_eq!(drain(&mut w, TICK), vec![7]);
    assert!(w.is_empty() && !w.contains(7));
}

#[test]
fn level0_later_bucket_fires_when_its_tick_starts_if_due() {
    let mut w = TimerWheel::new();
    w.schedule(1, 5 * TICK);
    w.schedule(2, 5 * TICK + 1);
    assert_eq!(w.nodes[index(1)].level, 0);
    assert_eq!(drain(&mut w, 5 * TICK), vec![1]);
    assert_eq!(drain(&mut w, 6 * TICK), vec![2]);
}

#[test]
fn each_level_and_overflow_is_used_and_cascades_down() {
    // (deadline, expected level at time 0)
    let cases = [
        (30 * SEC, 0),
        (10 * MIN, 1),
        (5 * HOUR, 2),
        (3 * DAY, 3),
        (30 * DAY, 4),
    ];
    for (d, level) in cases {
        let mut w = TimerWheel::new();
        w.schedule(3, d);
        assert_eq!(w.nodes[index(3)].level, level, "deadline {d}");
        w.validate();
        // Walk in uneven steps (a prime number of seconds) so ticks are crossed at odd places.
        let fired = fire_time(&mut w, 3, 0, d + 2 * TICK, 7 * SEC).expect("never fired");
        assert!(fired >= d, "fired early: {fired} < {d}");
        assert!(
            fired < fire_bound(d) + 7 * SEC,
            "fired late: {fired} for {d}"
        );
        assert!(w.is_empty());
    }
}

#[test]
fn cascade_from_overflow_moves_only_down() {
    let mut w = TimerWheel::new();
    let d = 20 * DAY + 3 * HOUR + 5 * MIN + 7 * SEC;
    w.schedule(9, d);
    let mut levels = vec![w.nodes[index(9)].level];
    let mut t = 0;
    while w.contains(9) {
        t += 37 * SEC;
        let fired = drain(&mut w, t);
        if w.contains(9) {
            let l = w.nodes[index(9)].level;
            if *levels.last().unwrap() != l {
                levels.push(l);
            }
        } else {
            assert_eq!(fired, vec![9]);
            assert!(t >= d && t < fire_bound(d) + 37 * SEC);
        }
    }
    // A node only ever moves down; how many levels it skips depends on when it is visited.
    assert_eq!(levels[0], 4);
    assert!(levels.windows(2).all(|p| p[0] > p[1]), "{levels:?}");
    assert!(levels.len() >= 3, "{levels:?}");
}

#[test]
fn a_jump_of_years_fires_everything_due_and_keeps_the_rest() {
    let mut w = TimerWheel::new();
    for (t, d) in [
        (0, SEC),
        (1, HOUR),
        (2, 3 * DAY),
        (3, 2 * YEAR),
        (4, 10 * YEAR),
        (5, u64::MAX - 1),
    ] {
        w.schedule(t, d);
    }
    let mut fired = drain(&mut w, 5 * YEAR);
    fired.sort();
    assert_eq!(fired, vec![0, 1, 2, 3]);
    assert_eq!(drain(&mut w, 10 * YEAR), vec![4]);
    assert!(drain(&mut w, u64::MAX - 2).is_empty());
    assert_eq!(drain(&mut w, u64::MAX), vec![5]);
}

#[test]
fn end_of_time_fires_the_last_tick_too() {
    let mut w = TimerWheel::new();
    assert!(drain(&mut w, u64::MAX - 10).is_empty());
    w.schedule(1, u64::MAX - 5); // inside the current (last) level-0 tick
    assert!(drain(&mut w, u64::MAX - 1).is_empty());
    assert_eq!(drain(&mut w, u64::MAX), vec![1]);
    // At the end of time anything scheduled is already due.
    w.schedule(2, u64::MAX - 1);
    assert_eq!(drain(&mut w, 0), vec![2]);
}

#[test]
fn never_is_not_scheduled_and_unschedules() {
    let mut w = TimerWheel::new();
    w.schedule(4, NEVER);
    assert!(!w.contains(4) && w.is_empty());
    w.schedule(4, SEC);
    w.schedule(4, NEVER);
    assert!(!w.contains(4) && w.is_empty());
    assert_eq!(w.next_deadline_hint(), None);
    w.validate();
}

#[test]
fn past_deadlines_fire_on_the_next_advance_even_without_time_moving() {
    let mut w = TimerWheel::new();
    drain(&mut w, 10 * SEC);
    w.schedule(1, 3 * SEC);
    w.schedule(2, 10 * SEC);
    assert_eq!(w.next_deadline_hint(), Some(10 * SEC));
    let mut fired = drain(&mut w, 10 * SEC);
    fired.sort();
    assert_eq!(fired, vec![1, 2]);
}

#[test]
fn time_going_backwards_is_clamped() {
    let mut w = TimerWheel::new();
    drain(&mut w, 100 * SEC);
    w.schedule(1, 101 * SEC);
    assert!(drain(&mut w, 5 * SEC).is_empty());
    assert_eq!(w.now(), 100 * SEC);
    assert_eq!(drain(&mut w, fire_bound(101 * SEC)), vec![1]);
}

#[test]
fn cancel_and_reschedule_are_exact() {
    let mut w = TimerWheel::new();
    w.schedule(1, 10 * SEC);
    w.schedule(2, 10 * SEC);
    assert!(w.cancel(1));
    assert!(!w.cancel(1));
    assert!(!w.cancel(99), "a token never seen is not scheduled");
    assert!(w.reschedule(2, 2 * HOUR));
    assert!(!w.reschedule(3, SEC), "reschedule does not revive");
    assert!(!w.contains(3));
    assert_eq!(w.deadline(2), Some(2 * HOUR));
    assert!(drain(&mut w, HOUR).is_empty());
    assert_eq!(drain(&mut w, 3 * HOUR), vec![2]);
}

#[test]
fn budget_splits_work_without_losing_or_duplicating() {
    let mut w = TimerWheel::new();
    for t in 0..100 {
        w.schedule(t, 2 * SEC + u64::from(t));
    }
    let mut out = Vec::new();
    let mut calls = 0;
    while !w.advance(10 * SEC, 7, &mut out) {
        calls += 1;
        w.validate();
        // Interleave edits with an interrupted sweep: cancel one not yet fired, add one due.
        if calls == 3 {
            let victim = (0..100).find(|t| w.contains(*t)).unwrap();
            assert!(w.cancel(victim));
            w.schedule(500, 5 * SEC);
        }
    }
    w.validate();
    out.sort();
    out.dedup();
    assert_eq!(out.len(), 100, "99 survivors plus token 500");
    assert!(calls >= 100 / 7);
    assert!(w.is_empty());
}

#[test]
fn tokens_grow_the_arena_on_demand() {
    let mut w = TimerWheel::new();
    w.schedule(100_000, SEC);
    assert!(w.contains(100_000) && !w.contains(99_999) && !w.contains(200_000));
    assert!(!w.cancel(200_000));
    w.validate();
    assert_eq!(drain(&mut w, 2 * SEC), vec![100_000]);
}

#[test]
fn budget_zero_only_reports() {
    let mut w = TimerWheel::new();
    w.schedule(1, SEC);
    let mut out = Vec::new();
    assert!(w.advance(0, 0, &mut out), "nothing to visit yet");
    assert!(!w.advance(2 * SEC, 0, &mut out));
    assert!(out.is_empty());
    assert!(w.advance(2 * SEC, 1, &mut out));
    assert_eq!(out, vec![1]);
}

#[test]
fn next_deadline_hint_is_a_sound_lower_bound() {
    let mut w = TimerWheel::new();
    assert_eq!(w.next_deadline_hint(), None);
    w.schedule(1, SEC / 2); // current level-0 bucket: visited at the next tick
    assert_eq!(w.next_deadline_hint(), Some(TICK));
    w.schedule(2, 0); // overdue
    assert_eq!(w.next_deadline_hint(), Some(0));
    drain(&mut w, 0);
    w.cancel(1);
    w.schedule(3, 10 * MIN); // level 1
    let hint = w.next_deadline_hint().unwrap();
    assert!(hint <= 10 * MIN && hint > 9 * MIN, "{hint}");
    assert!(drain(&mut w, hint - 1).is_empty());
    w.schedule(4, 40 * DAY); // overflow does not lower the hint
    assert_eq!(w.next_deadline_hint(), Some(hint));
}

/// One step of a random workload.
#[derive(Debug, Clone)]
enum Op {
    Schedule(u32, Deadline),
    Reschedule(u32, Deadline),
    Cancel(u32),
    Advance(Step, usize),
}

#[derive(Debug, Clone)]
enum Deadline {
    /// Offset from the wheel's now (possibly 0 or reaching NEVER).
    After(u64),
    /// In the past, by this much.
    Before(u64),
    /// An absolute time near the end.
    NearMax(u64),
}

#[derive(Debug, Clone)]
enum Step {
    Forward(u64),
    Backward(u64),
    ToNearMax(u64),
}

fn span() -> impl Strategy<Value = u64> {
    prop_oneof![
        0..TICK,
        0..4 * TICK,
        0..2 * HOUR,
        0..10 * DAY,
        0..50 * YEAR,
        Just(TICK),
        Just(u64::MAX),
        any::<u64>(),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let token = 0u32..48;
    let deadline = prop_oneof![
        6 => span().prop_map(Deadline::After),
        1 => span().prop_map(Deadline::Before),
        1 => (0u64..3 * TICK).prop_map(Deadline::NearMax),
    ];
    let step = prop_oneof![
        8 => span().prop_map(Step::Forward),
        1 => span().prop_map(Step::Backward),
        1 => (0u64..3 * TICK).prop_map(Step::ToNearMax),
    ];
    prop_oneof![
        4 => (token.clone(), deadline.clone()).prop_map(|(t, d)| Op::Schedule(t, d)),
        1 => (token.clone(), deadline).prop_map(|(t, d)| Op::Reschedule(t, d)),
        1 => token.prop_map(Op::Cancel),
        3 => (step, prop_oneof![0usize..4, 0usize..40, Just(usize::MAX)])
            .prop_map(|(s, b)| Op::Advance(s, b)),
    ]
}

/// Runs `ops` against the wheel and a `BTreeMap<token, deadline>` oracle, checking the module's
/// guarantee after every call.
fn check(ops: Vec<Op>) {
    let mut w = TimerWheel::new();
    let mut model: BTreeMap<u32, u64> = BTreeMap::new();
    let mut now = 0u64;
    let mut out = Vec::new();
    // Whether the last advance returned true, and the tokens scheduled overdue since then.
    let mut caught_up = true;
    let mut overdue: Vec<u32> = Vec::new();
    let resolve = |d: &Deadline, now: u64| match *d {
        Deadline::After(x) => now.saturating_add(x),
        Deadline::Before(x) => now.saturating_sub(x),
        Deadline::NearMax(x) => u64::MAX - x,
    };
    let mut advance =
        |w: &mut TimerWheel, model: &mut BTreeMap<u32, u64>, now: u64, budget, overdue: &[u32]| {
            out.clear();
            let done = w.advance(now, budget, &mut out);
            let clamped = w.now();
            assert!(out.len() <= budget);
            for t in &out {
                let d = model
                    .remove(t)
                    .unwrap_or_else(|| panic!("token {t} fired twice or unscheduled"));
                assert!(
                    d <= clamped,
                    "token {t} fired early: deadline {d} > now {clamped}"
                );
            }
            if done && let Some((t, d)) = model.iter().find(|(_, d)| fire_bound(**d) <= clamped) {
                panic!("token {t} (deadline {d}) missed: now {clamped} completed");
            }
            if done && let Some(t) = overdue.iter().find(|t| model.contains_key(t)) {
                panic!("token {t}, scheduled overdue, outlived a completed advance");
            }
            w.validate();
            done
        };
    for op in ops {
        // Any later schedule, reschedule or cancel of a token replaces its overdue schedule.
        if let Op::Schedule(t, _) | Op::Reschedule(t, _) | Op::Cancel(t) = op {
            overdue.retain(|&o| o != t);
        }
        match op {
            Op::Schedule(t, d) => {
                let d = resolve(&d, now);
                if caught_up && d <= w.now() {
                    overdue.push(t);
                }
                w.schedule(t, d);
                if d == NEVER {
                    model.remove(&t);
                } else {
                    model.insert(t, d);
                }
            }
            Op::Reschedule(t, d) => {
                let d = resolve(&d, now);
                let was = model.contains_key(&t);
                if was && caught_up && d <= w.now() {
                    overdue.push(t);
                }
                assert_eq!(w.reschedule(t, d), was);
                if was {
                    if d == NEVER {
                        model.remove(&t);
                    } else {
                        model.insert(t, d);
                    }
                }
            }
            Op::Cancel(t) => assert_eq!(w.cancel(t), model.remove(&t).is_some()),
            Op::Advance(step, budget) => {
                now = match step {
                    Step::Forward(x) => now.saturating_add(x),
                    Step::Backward(x) => now.saturating_sub(x),
                    Step::ToNearMax(x) => now.max(u64::MAX - x),
                };
                caught_up = advance(&mut w, &mut model, now, budget, &overdue);
                if caught_up {
                    overdue.clear();
                }
            }
        }
        w.validate();
        assert_eq!(w.len(), model.len());
        for t in 0..48 {
            assert_eq!(w.deadline(t), model.get(&t).copied());
        }
    }
    // Finishing any interrupted sweep with a small budget terminates...
    let mut calls = 0;
    while !advance(&mut w, &mut model, now, 3, &overdue) {
        calls += 1;
        assert!(calls < 100_000, "advance does not make progress");
    }
    // ... and the end of time fires everything left.
    while !advance(&mut w, &mut model, u64::MAX, 5, &[]) {}
    assert!(model.is_empty() && w.is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn matches_the_oracle(ops in prop::collection::vec(op(), 1..1000)) {
        check(ops);
    }
}
