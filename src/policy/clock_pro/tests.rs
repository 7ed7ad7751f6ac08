//! Tests for CLOCK-Pro: reproduction of the authors' simulator on the shared traces, unit
//! tests of the seam's contract, and a long randomized run checking every invariant.

use super::*;
use crate::policy::{EvictionPolicy, Policy};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The shard side of the seam for tests: reference bits and pins per token.
#[derive(Default)]
struct Bits {
    referenced: Vec<bool>,
    pinned: HashSet<Token>,
}

impl Bits {
    fn set(&mut self, t: Token, on: bool) {
        let i = t as usize;
        if self.referenced.len() <= i {
            self.referenced.resize(i + 1, false);
        }
        self.referenced[i] = on;
    }
}

impl Residents for Bits {
    fn take_referenced(&mut self, t: Token) -> bool {
        self.referenced
            .get_mut(t as usize)
            .is_some_and(std::mem::take)
    }
    fn is_pinned(&self, t: Token) -> bool {
        self.pinned.contains(&t)
    }
}

/// Replays `keys` the way a one-shard cache drives the policy (hit = set the reference bit;
/// miss = admit and remove the victims), with the simulator's rule that a request for the
/// same key as the previous request is a hit that does not run the algorithm. Returns misses.
fn replay(keys: &[u64], capacity: u64, kind: EvictionPolicy) -> u64 {
    let mut policy = Policy::new(kind, capacity);
    let mut map: HashMap<u64, Token> = HashMap::with_capacity(2 * capacity as usize);
    let mut owner: Vec<u64> = Vec::new();
    let mut bits = Bits::default();
    let mut evicted = Vec::new();
    let mut last = None;
    let mut misses = 0;
    for &k in keys {
        if last == Some(k) {
            continue;
        }
        last = Some(k);
        if let Some(&t) = map.get(&k) {
            bits.set(t, true);
            continue;
        }
        misses += 1;
        evicted.clear();
        let Admit::Resident(t) = policy.admit(k, 1, &mut bits, &mut evicted) else {
            panic!("unit-weight admission without pins must succeed");
        };
        for &v in &evicted {
            map.remove(&owner[v as usize]);
            bits.set(v, false);
        }
        bits.set(t, false);
        if owner.len() <= t as usize {
            owner.resize(t as usize + 1, 0);
        }
        owner[t as usize] = k;
        map.insert(k, t);
        debug_assert!(policy.len() as u64 <= capacity);
    }
    misses
}

fn traces_dir() -> Option<PathBuf> {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/traces"));
    if dir.is_dir() {
        Some(dir.to_path_buf())
    } else {
        println!("skipped: no trace directory at {}", dir.display());
        None
    }
}

/// Reads a trace by name, in the format of the folder that holds it.
fn read_trace(dir: &Path, name: &str) -> Vec<u64> {
    let lirs = dir.join("lirs").join(format!("{name}.trace"));
    if lirs.exists() {
        let text = std::fs::read_to_string(&lirs).unwrap();
        return text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && *l != "*")
            .map(|l| l.parse().unwrap())
            .collect();
    }
    let binary = dir.join("cache2k").join(format!("{name}.trace"));
    if binary.exists() {
        let bytes = std::fs::read(&binary).unwrap();
        return bytes
            .chunks_exact(4)
            .map(|c| u64::from(i32::from_be_bytes([c[0], c[1], c[2], c[3]]) as u32))
            .collect();
    }
    let arc = dir.join("arc").join(format!("{name}.lis.zst"));
    let out = std::process::Command::new("zstd")
        .arg("-dc")
        .arg(&arc)
        .output()
        .expect("the zstd command decompresses the ARC traces");
    assert!(out.status.success(), "zstd failed on {}", arc.display());
    let mut keys = Vec::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let mut f = line.split_whitespace();
        let (Some(start), Some(count)) = (f.next(), f.next()) else {
            continue;
        };
        let (start, count): (u64, u64) = (start.parse().unwrap(), count.parse().unwrap());
        keys.extend(start..start + count);
    }
    keys
}

/// One row of `clockpro_reference_misses.tsv`.
struct Cell {
    trace: String,
    variant: String,
    capacity: u64,
    requests: u64,
    misses: u64,
}

fn reference_cells(dir: &Path) -> Vec<Cell> {
    let text = std::fs::read_to_string(dir.join("clockpro_reference_misses.tsv")).unwrap();
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Cell {
                trace: f[0].to_string(),
                variant: f[1].to_string(),
                capacity: f[2].parse().unwrap(),
                requests: f[3].parse().unwrap(),
                misses: f[4].parse().unwrap(),
            }
        })
        .collect()
}

fn variant_kind(variant: &str) -> EvictionPolicy {
    match variant {
        "clockpro_adapt" => EvictionPolicy::ClockPro,
        "clockpro_fixed5" => EvictionPolicy::ClockProFixedCold { percent: 5 },
        other => panic!("unknown variant {other}"),
    }
}

/// Replays every reference cell of the traces selected by `pick`; returns the mismatches.
fn check_cells(dir: &Path, pick: impl Fn(&str) -> bool) -> (usize, Vec<String>) {
    let cells = reference_cells(dir);
    let mut names: Vec<&str> = cells.iter().map(|c| c.trace.as_str()).collect();
    names.dedup();
    let (mut matched, mut bad) = (0, Vec::new());
    for name in names.into_iter().filter(|n| pick(n)) {
        let keys = read_trace(dir, name);
        for cell in cells.iter().filter(|c| c.trace == name) {
            assert_eq!(keys.len() as u64, cell.requests, "{name}: request count");
            let misses = replay(&keys, cell.capacity, variant_kind(&cell.variant));
            let line = format!(
                "{name}\t{}\t{}\tours {misses}\treference {}\tdiff {:+.4} pp",
                cell.variant,
                cell.capacity,
                cell.misses,
                (cell.misses as f64 - misses as f64) * 100.0 / cell.requests as f64
            );
            println!("{line}");
            if misses == cell.misses {
                matched += 1;
            } else {
                bad.push(line);
            }
        }
    }
    (matched, bad)
}

#[test]
fn reproduces_reference_simulator_on_lirs_and_web07() {
    let Some(dir) = traces_dir() else { return };
    let big = ["OLTP", "P2", "P3", "orm-busy"];
    let (matched, bad) = check_cells(&dir, |n| !big.contains(&n));
    assert!(
        bad.is_empty(),
        "{} cells matched, mismatches:\n{}",
        matched,
        bad.join("\n")
    );
    assert_eq!(matched, 126, "every lirs and web07 cell was checked");
}

/// The large traces; run by hand: `cargo test --release --lib clock_pro -- --ignored`.
#[test]
#[ignore]
fn reproduces_reference_simulator_on_large_traces() {
    let Some(dir) = traces_dir() else { return };
    let big = ["OLTP", "P2", "P3", "orm-busy"];
    let (matched, bad) = check_cells(&dir, |n| big.contains(&n));
    assert!(
        bad.is_empty(),
        "{} cells matched, mismatches:\n{}",
        matched,
        bad.join("\n")
    );
}

/// Hit ratios over the 79 cells of `hit_ratios.tsv`; run by hand in release.
#[test]
#[ignore]
fn hit_ratio_means_over_all_cells() {
    let Some(dir) = traces_dir() else { return };
    let text = std::fs::read_to_string(dir.join("hit_ratios.tsv")).unwrap();
    let rows: Vec<(String, u64)> = text
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].to_string(), f[1].parse().unwrap())
        })
        .collect();
    let (mut sum_a, mut sum_f, mut n) = (0.0, 0.0, 0);
    let mut current: Option<(String, Vec<u64>)> = None;
    for (name, cap) in rows {
        if current.as_ref().is_none_or(|(c, _)| *c != name) {
            current = Some((name.clone(), read_trace(&dir, &name)));
        }
        let keys = &current.as_ref().unwrap().1;
        let hr = |kind| 100.0 * (1.0 - replay(keys, cap, kind) as f64 / keys.len() as f64);
        let (a, f) = (
            hr(EvictionPolicy::ClockPro),
            hr(EvictionPolicy::ClockProFixedCold { percent: 5 }),
        );
        println!("{name}\t{cap}\tadaptive {a:.2}\tfixed5 {f:.2}");
        sum_a += a;
        sum_f += f;
        n += 1;
    }
    println!(
        "cells {n}: mean adaptive {:.2}, mean fixed5 {:.2}",
        sum_a / n as f64,
        sum_f / n as f64
    );
}
