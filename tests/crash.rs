//! Crash safety of write-behind over redb.
//!
//! The parent test re-runs this test binary as a child process (selecting only
//! [`crash_child`]). The child writes a deterministic, seeded sequence of puts and removes
//! through a write-behind cache over a [`RedbStore`], with the writer thread running, and
//! calls `flush()` every few writes; after each successful flush it prints `ACK <seq>`:
//! every operation with a sequence number ≤ `seq` is durable. The parent SIGKILLs the child
//! after a seeded, pseudo-random number of output events (acknowledged flushes, or batches
//! begun or finished by the store), reopens the file and checks, key by key, that the store
//! holds the state of an operation the child really issued, never older than the key's last
//! acknowledged operation. The only non-determinism is where exactly the kill lands.
//!
//! `COGWHEEL_CRASH_ITERATIONS` sets the number of kills (default 50); `COGWHEEL_CRASH_SEED`
//! the base seed (printed, to replay a failure).
#![cfg(all(unix, feature = "redb"))]

use cogwheel::store::{BackingStore, RedbStore, ScanItem, StoreError, Stored, WriteOp};
use cogwheel::{Cache, WriteBehind, WritePolicy};
use std::collections::{BTreeMap, HashMap};
use std::env;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Set (to the redb file's path) only in the child process.
const DB_ENV: &str = "COGWHEEL_CRASH_CHILD_DB";
const SEED_ENV: &str = "COGWHEEL_CRASH_CHILD_SEED";
const GENERATION_ENV: &str = "COGWHEEL_CRASH_CHILD_GENERATION";
/// The child's test name (see `crash_child`).
const CHILD_TEST: &str = "crash_child";

/// Keys `0..KEYS`; the cache holds fewer, so eviction (which must skip dirty keys) runs too.
const KEYS: u64 = 300;
const CAPACITY: u64 = 128;
/// Length of the child's operation sequence (the parent kills it long before the end, mostly).
const OPS: u64 = 4_000;
/// Children per iteration, one after another on the same file: each after the first starts
/// from a file its predecessor's kill left behind (redb repairs it on open).
const GENERATIONS: u64 = 2;
/// The longest the parent waits for the next line of the child's output before giving up.
const STALL: Duration = Duration::from_secs(120);

/// SplitMix64: a tiny deterministic generator, the same in parent and child.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform enough in `lo..=hi` for a test.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// One operation of the child's sequence; its sequence number is its index + 1.
#[derive(Debug, Clone, Copy)]
struct Op {
    key: u64,
    /// `Some(value)` for a put, `None` for a remove.
    put: Option<u64>,
}

/// The value a put with sequence number `seq` of child `generation` writes to `key`: all
/// three, readable back.
fn value_of(key: u64, generation: u64, seq: u64) -> u64 {
    (key << 32) | (generation << 24) | seq
}

fn describe(state: Option<u64>) -> String {
    match state {
        Some(v) => format!(
            "the value of generation {} seq {} (key {})",
            (v >> 24) & 0xFF,
            v & 0xFF_FFFF,
            v >> 32
        ),
        None => "absent".to_string(),
    }
}

/// What the child does for a seed; the parent rebuilds it to know what the child wrote.
struct Plan {
    ops: Vec<Op>,
    /// `flush[i]`: the child flushes right after the operation with sequence number `i + 1`
    /// (always after the last one).
    flush: Vec<bool>,
    /// The write-behind batch size: often below the number of keys dirtied between flushes,
    /// so the writer thread also writes batches on its own, between flushes.
    max_batch: usize,
}

impl Plan {
    fn new(seed: u64, generation: u64) -> Self {
        let mut rng = Rng::new(seed);
        // How often the child flushes, on average: after nearly every write (a barrier with
        // next to nothing to wait for, racing the writer thread) up to every few hundred
        // writes (the writer thread writes many batches on its own in between).
        let mean_gap = [1, 3, 16, 64, 200][rng.range(0, 4) as usize];
        let max_batch = [4, 16, 64][rng.range(0, 2) as usize];
        // A skewed key choice: a hot tenth of the keys gets half the writes, so keys are
        // rewritten while their previous write is in flight (coalescing, re-queueing).
        let ops = (1..=OPS)
            .map(|seq| {
                let key = if rng.next().is_multiple_of(2) {
                    rng.next() % (KEYS / 10)
                } else {
                    rng.next() % KEYS
                };
                let put = (!rng.next().is_multiple_of(8)).then(|| value_of(key, generation, seq));
                Op { key, put }
            })
            .collect();
        let flush = (1..=OPS)
            .map(|seq| seq == OPS || rng.next().is_multiple_of(mean_gap))
            .collect();
        Plan {
            ops,
            flush,
            max_batch,
        }
    }

    /// Whether the child flushes right after operation `seq`.
    fn flushes_after(&self, seq: u64) -> bool {
        self.flush[(seq - 1) as usize]
    }

    /// The first flush point after `seq`: after `ACK seq` the child issues operations up to
    /// it, then flushes (and cannot issue more before that flush returns).
    fn next_flush_after(&self, seq: u64) -> u64 {
        (seq + 1..=OPS)
            .find(|s| self.flushes_after(*s))
            .unwrap_or(OPS)
    }
}

/// Starts each line of the protocol: the harness's own output shares the child's stdout, and
/// its `test crash_child ... ` has no line break.
const MARK: &str = "@crash ";

/// One line of output, written and flushed at once (the parent acts on each line as it
/// arrives; a line written before the kill is in the pipe and still read after it).
fn say(line: &str) {
    let mut out = io::stdout().lock();
    // A broken pipe means the parent is gone; the child is killed or exits soon anyway.
    let _ = writeln!(out, "{MARK}{line}").and_then(|()| out.flush());
}

/// The child's store: redb, announcing each batch as it begins and ends so the parent can
/// kill the child inside a write transaction and tell afterwards where the kill landed.
struct Traced {
    inner: RedbStore<u64, u64>,
    batches: AtomicU64,
}

impl BackingStore<u64, u64> for Traced {
    fn load(&self, key: &u64) -> Result<Option<Stored<u64>>, StoreError> {
        self.inner.load(key)
    }

    fn write_batch(&self, ops: &[WriteOp<'_, u64, u64>]) -> Result<(), StoreError> {
        let n = self.batches.fetch_add(1, Ordering::Relaxed) + 1;
        say(&format!("BEGIN {n} {}", ops.len()));
        let r = self.inner.write_batch(ops);
        say(&format!("END {n} {}", if r.is_ok() { "ok" } else { "err" }));
        r
    }

    fn scan(&self, visit: &mut dyn FnMut(ScanItem<u64, u64>) -> bool) -> Result<(), StoreError> {
        self.inner.scan(visit)
    }
}

/// The child: a no-op unless the parent set `DB_ENV`. Never returns on its own after it
/// started writing: when the plan is done it waits for stdin to close (the parent kills it
/// first, or its death closes the pipe).
#[test]
fn crash_child() {
    let Ok(path) = env::var(DB_ENV) else {
        return;
    };
    let seed: u64 = env::var(SEED_ENV)
        .expect("seed")
        .parse()
        .expect("numeric seed");
    let generation: u64 = env::var(GENERATION_ENV)
        .expect("generation")
        .parse()
        .expect("numeric generation");
    let plan = Plan::new(seed, generation);
    say("OPEN");
    let store = Traced {
        inner: RedbStore::open(&path).expect("open the store"),
        batches: AtomicU64::new(0),
    };
    let cache = Cache::<u64, u64>::builder()
        .max_capacity(CAPACITY)
        .store(store)
        .write_policy(WritePolicy::WriteBehind(
            WriteBehind::default()
                .max_batch(plan.max_batch)
                .max_delay(Duration::from_millis(1)),
        ))
        .build()
        .expect("build the cache");
    say("READY");
    for (seq, op) in (1..).zip(&plan.ops) {
        match op.put {
            Some(v) => cache.insert(op.key, v).expect("insert"),
            None => {
                cache.remove(&op.key).expect("remove");
            }
        }
        if plan.flushes_after(seq) {
            say(&format!("FLUSH {seq}"));
            cache.flush().expect("flush");
            say(&format!("ACK {seq}"));
        }
    }
    say("DONE");
    let _ = io::stdin().read_to_end(&mut Vec::new());
    // Not reached in the test: the parent kills the child before closing stdin.
    std::process::exit(0);
}

/// Which output event the parent counts before it kills the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// The child is about to create the store: the kill lands while the file is being
    /// created and initialized, or just after.
    Open,
    /// The k-th acknowledged flush (0: right after the cache is built).
    Ack,
    /// The k-th batch the store begins: the kill lands in or just after a write transaction.
    Begin,
    /// The k-th batch the store finishes.
    End,
    /// The k-th flush the child begins (the barrier may be mid-wait).
    Flush,
}

/// A child that is killed when the handle goes away (also if the parent panics).
struct Killer(Child);

impl Drop for Killer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What one child run produced, as seen by the parent after the child is dead.
#[derive(Debug, Default)]
struct Run {
    last_ack: u64,
    /// The highest `FLUSH <seq>` seen.
    last_flush_begun: u64,
    began: u64,
    ended: u64,
    /// The kill landed inside the store's `write_batch` (a `BEGIN` without its `END`).
    in_batch: bool,
    /// The kill landed inside `flush` (a `FLUSH` without its `ACK`).
    in_flush: bool,
    ready: bool,
    done: bool,
}

impl Run {
    /// Take in one line of the child's output; the event it is, if one that can trigger.
    fn observe(&mut self, line: &str) -> Option<Trigger> {
        // Anything else is the test harness's own output.
        let line = &line[line.find(MARK)? + MARK.len()..];
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        let num = || -> u64 {
            rest.split(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("bad child line {line:?}"))
        };
        match word {
            "OPEN" => return Some(Trigger::Open),
            "READY" => self.ready = true,
            "DONE" => self.done = true,
            "ACK" => {
                self.last_ack = num();
                return Some(Trigger::Ack);
            }
            "FLUSH" => {
                self.last_flush_begun = num();
                return Some(Trigger::Flush);
            }
            "BEGIN" => {
                self.began = num();
                return Some(Trigger::Begin);
            }
            "END" => {
                self.ended = num();
                return Some(Trigger::End);
            }
            _ => panic!("bad child line {line:?}"),
        }
        None
    }
}

fn run_child(dir: &Path, seed: u64, generation: u64, trigger: Trigger, k: u64) -> Run {
    let db = dir.join("crash.redb");
    let exe = env::current_exe().expect("test binary");
    let child = Command::new(exe)
        .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
        .env(DB_ENV, &db)
        .env(SEED_ENV, seed.to_string())
        .env(GENERATION_ENV, generation.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child");
    let mut child = Killer(child);
    let stdout = child.0.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel::<String>();
    let reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut run = Run::default();
    let mut count = 0;
    let mut killed = false;
    loop {
        let line = match rx.recv_timeout(STALL) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("the child (seed {seed}) printed nothing for {STALL:?}")
            }
            // End of output: the child is dead.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let event = run.observe(&line);
        if killed {
            continue; // drain what the child wrote before it died
        }
        if event == Some(trigger) {
            count += 1;
        }
        if (run.ready && k == 0) || count >= k.max(1) || run.done {
            // SIGKILL on Unix.
            child.0.kill().expect("kill the child");
            killed = true;
        }
    }
    reader.join().expect("reader thread");
    let status = child.0.wait().expect("wait for the child");
    assert!(
        run.ready || trigger == Trigger::Open,
        "the child (seed {seed}) died before it was ready: {status}"
    );
    assert_eq!(
        status.signal(),
        Some(9),
        "the child (seed {seed}) must die by SIGKILL, not on its own: {status}"
    );
    run.in_batch = run.began > run.ended;
    run.in_flush = run.last_flush_begun > run.last_ack;
    run
}

/// The outcome of checking one reopened store.
#[derive(Debug, Default)]
struct Check {
    keys: u64,
    /// Keys whose stored state is newer than their last acknowledged operation (a write
    /// after the last flush that reached the store anyway: allowed).
    ahead: u64,
    violations: Vec<String>,
    /// What the store holds: the starting state of the next child on the same file.
    stored: HashMap<u64, u64>,
}

/// Every key's stored state must be the state of an operation the child issued on that key,
/// no older than the key's last operation with a sequence number ≤ `ack` (or its state in
/// `before`, what the file held when the child started, if it has none), and no newer than
/// `max_issued`.
fn check_store(
    plan: &Plan,
    db: &Path,
    before: &HashMap<u64, u64>,
    ack: u64,
    max_issued: u64,
) -> Check {
    let store = RedbStore::<u64, u64>::open(db)
        .unwrap_or_else(|e| panic!("the store must reopen cleanly after SIGKILL: {e}"));
    let mut stored = HashMap::new();
    store
        .scan(&mut |item| {
            let (k, v) = item.unwrap();
            assert!(v.expires_at.is_none(), "key {k} has a deadline");
            stored.insert(k, v.value);
            true
        })
        .expect("scan the reopened store");

    // Per key: its state after its last acknowledged op, and the states it took after that.
    let mut acked: HashMap<u64, Option<u64>> = before.iter().map(|(k, v)| (*k, Some(*v))).collect();
    let mut later: HashMap<u64, Vec<Option<u64>>> = HashMap::new();
    for (seq, op) in (1..).zip(&plan.ops).take(max_issued as usize) {
        if seq <= ack {
            acked.insert(op.key, op.put);
        } else {
            later.entry(op.key).or_default().push(op.put);
        }
    }

    let mut check = Check::default();
    for (k, v) in &stored {
        if *k >= KEYS {
            check.violations.push(format!("key {k} was never written"));
        }
        let loaded = store.load(k).expect("load").map(|s| s.value);
        if loaded != Some(*v) {
            check
                .violations
                .push(format!("key {k}: scan says {v:#x}, load says {loaded:x?}"));
        }
    }
    for key in 0..KEYS {
        check.keys += 1;
        let have = stored.get(&key).copied();
        let base = acked.get(&key).copied().flatten();
        if have == base {
            continue;
        }
        let newer = later.get(&key).is_some_and(|s| s.contains(&have));
        if newer {
            check.ahead += 1;
            continue;
        }
        check.violations.push(format!(
            "key {key}: store holds {}, but after ACK {ack} it must be {} or a later state \
             among {:?} (ops ≤ {max_issued})",
            describe(have),
            describe(base),
            later
                .get(&key)
                .map(|s| s.iter().map(|v| describe(*v)).collect::<Vec<_>>())
                .unwrap_or_default(),
        ));
    }
    check.stored = stored;
    check
}

#[test]
fn flushed_writes_survive_sigkill() {
    if env::var_os(DB_ENV).is_some() {
        return; // this process is a child
    }
    let iterations: u64 = env::var("COGWHEEL_CRASH_ITERATIONS")
        .ok()
        .map(|s| s.parse().expect("COGWHEEL_CRASH_ITERATIONS: a number"))
        .unwrap_or(50);
    let base_seed: u64 = env::var("COGWHEEL_CRASH_SEED")
        .ok()
        .map(|s| s.parse().expect("COGWHEEL_CRASH_SEED: a number"))
        .unwrap_or(0xC0C0_2026);
    let started = Instant::now();
    let mut kill_rng = Rng::new(base_seed ^ 0x5EED_0FC1_A500);
    let (mut in_batch, mut in_flush, mut done) = (0u64, 0u64, 0u64);
    let (mut no_file, mut temp_left) = (0u64, 0u64);
    let (mut acked_total, mut keys_total, mut ahead_total, mut batches_total) = (0, 0, 0, 0);
    let mut violations = Vec::new();
    let mut by_trigger: BTreeMap<String, u64> = BTreeMap::new();

    let temp_files = |dir: &Path| {
        std::fs::read_dir(dir)
            .expect("list the temp dir")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().contains("cogwheel-new"))
            })
            .count() as u64
    };
    let mut kills = 0;
    for i in 0..iterations {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("crash.redb");
        // What the file holds: the last child's writes that survived its kill.
        let mut state = HashMap::new();
        for generation in 0..GENERATIONS {
            let seed = base_seed
                .wrapping_mul(1_000_003)
                .wrapping_add(i * GENERATIONS + generation);
            let plan = Plan::new(seed, generation);
            let (trigger, k) = match kill_rng.next() % 9 {
                0 | 1 => (Trigger::Ack, kill_rng.range(0, 20)),
                2..=4 => (Trigger::Begin, kill_rng.range(1, 30)),
                5 | 6 => (Trigger::End, kill_rng.range(1, 30)),
                7 => (Trigger::Flush, kill_rng.range(1, 20)),
                _ => (Trigger::Open, 1),
            };
            *by_trigger.entry(format!("{trigger:?}")).or_default() += 1;
            let temps_before = temp_files(dir.path());
            let run = run_child(dir.path(), seed, generation, trigger, k);
            kills += 1;
            // A kill while the store was being created: the file is absent, or complete.
            no_file += u64::from(!db.exists());
            temp_left += temp_files(dir.path()) - temps_before;
            // After ACK a, the child issued at most the ops up to the next flush point.
            let max_issued = plan.next_flush_after(run.last_ack);
            let check = check_store(&plan, &db, &state, run.last_ack, max_issued);
            in_batch += u64::from(run.in_batch);
            in_flush += u64::from(run.in_flush);
            done += u64::from(run.done);
            acked_total += run.last_ack;
            batches_total += run.ended;
            keys_total += check.keys;
            ahead_total += check.ahead;
            for v in check.violations {
                violations.push(format!(
                    "iteration {i} generation {generation} (seed {seed}, kill after \
                     {trigger:?} #{k}): {v}"
                ));
            }
            state = check.stored;
        }
    }

    let triggers: Vec<_> = by_trigger.into_iter().collect();
    println!(
        "crash: base seed {base_seed}, {iterations} iterations of {GENERATIONS} children on one \
         file, {kills} SIGKILLs \
         (triggers {triggers:?}); kills inside a store batch: {in_batch}, between batches: {}; \
         inside flush: {in_flush}; after the whole plan: {done}; before the store file \
         existed: {no_file} ({temp_left} left a half-built temporary file); batches committed: \
         {batches_total}; acked ops verified: {acked_total}; keys checked: {keys_total} \
         ({ahead_total} ahead of their last ack); violations: {}; {:.1?}",
        kills - in_batch,
        violations.len(),
        started.elapsed(),
    );
    assert!(
        violations.is_empty(),
        "{} violations:\n{}",
        violations.len(),
        violations.join("\n")
    );
}
