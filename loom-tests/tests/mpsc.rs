//! loom models of the write-behind MPSC queue (`src/write_behind/mpsc.rs`).
//!
//! Every model checks, in every explored execution: each pushed node is popped exactly once,
//! nodes of one producer come out in push order, the consumer sees what the producer wrote into
//! a node before pushing it, and every node is dropped exactly once (a drop counter) and none
//! leaks (`loom::alloc::Track` in each node, and loom's own leak check of the node `Arc`s).
//! Run with `.ci/loom.sh mpsc`.
//!
//! These models were checked against bugs planted by hand (then reverted) in
//! `src/write_behind/mpsc.rs`; loom rejected each within a fraction of a second:
//! - link store `prev.next = n` Relaxed instead of Release: "Causality violation: Concurrent
//!   load and mut accesses" at the consumer's load of `n.next` (all five models);
//! - `head.swap` Release instead of AcqRel: "Causality violation: Concurrent atomic store and
//!   mut accesses" at a producer's link store, or a lost link ("Model exceeded maximum number of
//!   branches" in `pop_wait`) (all five);
//! - `n.next = null` stored again after the swap (node published before its link is reset): a
//!   lost link, reported as exceeded branches in `pop_wait` or "MpscQueue dropped while
//!   inconsistent" (all five);
//! - the stub pushed without checking `tail == head`: loom's `Arc::from_raw` panics on a node
//!   that was already released, a double pop (four of five; `mpsc_dropped_non_empty` pops
//!   once only).
//!
//! The claim/reset of `next` made Relaxed is not reported, as expected: coherence of `next`
//! alone keeps the queue correct, and the stronger orderings are there for the caller.
#![cfg(loom)]

use cogwheel::__loom::{MpscQueue, Node, TryPopError};
use loom::alloc::Track;
use loom::sync::Arc;
use loom::sync::atomic::AtomicBool;
use loom::sync::atomic::AtomicUsize;
use loom::sync::atomic::Ordering::{AcqRel, Relaxed, Release};
use loom::thread;

/// The payload of a model node.
struct Item {
    producer: usize,
    seq: usize,
    /// Written (Relaxed) by the producer after the node is built and before it is pushed: the
    /// consumer must read it back, which only the queue's Release/Acquire hand-off guarantees.
    stamp: AtomicUsize,
    /// The cache entry's dirty flag, for the model of the clean→dirty protocol.
    dirty: AtomicBool,
    drops: Arc<AtomicUsize>,
    _leak_check: Track<()>,
}

impl Drop for Item {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Relaxed);
    }
}

type Queue = MpscQueue<Node<Item>>;

/// `loom::model`, printing how many executions were explored and how long they took.
fn model<F: Fn() + Sync + Send + 'static>(name: &str, f: F) {
    let executions = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&executions);
    let start = std::time::Instant::now();
    loom::model(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f();
    });
    println!(
        "{name}: {} executions in {:.2?}",
        executions.load(std::sync::atomic::Ordering::Relaxed),
        start.elapsed()
    );
}

fn stamp_of(producer: usize, seq: usize) -> usize {
    100 * (producer + 1) + seq
}

/// Build node `seq` of `producer`, stamped.
fn new_node(drops: &Arc<AtomicUsize>, producer: usize, seq: usize) -> Arc<Node<Item>> {
    let node = Arc::new(Node::new(Item {
        producer,
        seq,
        stamp: AtomicUsize::new(0),
        dirty: AtomicBool::new(false),
        drops: Arc::clone(drops),
        _leak_check: Track::new(()),
    }));
    node.stamp.store(stamp_of(producer, seq), Relaxed);
    node
}

/// Build node `seq` of `producer` and push it, as a producer thread does.
fn push(q: &Queue, drops: &Arc<AtomicUsize>, producer: usize, seq: usize) {
    q.push(new_node(drops, producer, seq));
}

/// Record a popped node: checks its stamp and its producer's order.
fn record(node: &Node<Item>, next_seq: &mut [usize]) {
    assert_eq!(
        node.stamp.load(Relaxed),
        stamp_of(node.producer, node.seq),
        "consumer did not see the producer's writes"
    );
    assert_eq!(
        node.seq, next_seq[node.producer],
        "producer {} popped out of order (or twice)",
        node.producer
    );
    next_seq[node.producer] += 1;
}

/// `producers` threads push `per_producer` nodes each while the main thread consumes all of
/// them with `pop_wait` (yielding while the queue is empty).
fn producers_and_consumer(name: &str, producers: usize, per_producer: usize) {
    model(name, move || {
        let q = Arc::new(Queue::new());
        let drops = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..producers)
            .map(|p| {
                let (q, drops) = (Arc::clone(&q), Arc::clone(&drops));
                thread::spawn(move || {
                    for seq in 0..per_producer {
                        push(&q, &drops, p, seq);
                    }
                })
            })
            .collect();

        let mut next_seq = vec![0; producers];
        let mut popped = 0;
        while popped < producers * per_producer {
            match q.pop_wait() {
                Ok(node) => {
                    record(&node, &mut next_seq);
                    popped += 1;
                }
                Err(TryPopError::Empty) => thread::yield_now(),
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        for h in handles {
            h.join().unwrap();
        }
        assert!(matches!(q.pop(), Err(TryPopError::Empty)));
        assert!(q.is_empty());
        drop(q);
        assert_eq!(drops.load(Relaxed), producers * per_producer);
    });
}

#[test]
fn mpsc_two_producers_two_nodes_each() {
    producers_and_consumer("mpsc_two_producers_two_nodes_each", 2, 2);
}

#[test]
fn mpsc_three_producers_one_node_each() {
    producers_and_consumer("mpsc_three_producers_one_node_each", 3, 1);
}

/// Two producers push while the consumer pops at most once; then the queue is dropped with the
/// remaining nodes in it. Every node is dropped exactly once, none leaks.
#[test]
fn mpsc_dropped_non_empty() {
    model("mpsc_dropped_non_empty", || {
        let q = Arc::new(Queue::new());
        let drops = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..2)
            .map(|p| {
                let (q, drops) = (Arc::clone(&q), Arc::clone(&drops));
                thread::spawn(move || {
                    push(&q, &drops, p, 0);
                    push(&q, &drops, p, 1);
                })
            })
            .collect();
        let mut next_seq = [0; 2];
        match q.pop() {
            Ok(node) => record(&node, &mut next_seq),
            Err(TryPopError::Empty | TryPopError::Inconsistent) => {}
            Err(TryPopError::Busy) => panic!("no other consumer exists"),
        }
        for h in handles {
            h.join().unwrap();
        }
        let q = Arc::try_unwrap(q).unwrap_or_else(|_| panic!("producers are joined"));
        drop(q);
        assert_eq!(drops.load(Relaxed), 4);
    });
}

/// The consumer pops a node and pushes it again (the cache's writer flushes an entry, the entry
/// is dirtied again), while a producer pushes two more. Exercises the stub's re-queueing and
/// the reuse of a node's links.
#[test]
fn mpsc_popped_node_is_pushed_again() {
    model("mpsc_popped_node_is_pushed_again", || {
        let q = Arc::new(Queue::new());
        let drops = Arc::new(AtomicUsize::new(0));
        push(&q, &drops, 0, 0);
        let producer = {
            let (q, drops) = (Arc::clone(&q), Arc::clone(&drops));
            thread::spawn(move || {
                push(&q, &drops, 1, 0);
                push(&q, &drops, 1, 1);
            })
        };

        let first = loop {
            match q.pop_wait() {
                Ok(node) => break node,
                Err(TryPopError::Empty) => thread::yield_now(),
                Err(e) => panic!("unexpected {e:?}"),
            }
        };
        // Producer 0's only node is always first: it was pushed before the producer started.
        assert_eq!((first.producer, first.seq), (0, 0));
        q.push(first);

        let mut seen_again = false;
        let mut next_seq = [1, 0];
        let mut popped = 0;
        while popped < 3 {
            match q.pop_wait() {
                Ok(node) if node.producer == 0 => {
                    assert!(!seen_again, "re-pushed node popped twice");
                    seen_again = true;
                    popped += 1;
                }
                Ok(node) => {
                    record(&node, &mut next_seq);
                    popped += 1;
                }
                Err(TryPopError::Empty) => thread::yield_now(),
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        producer.join().unwrap();
        assert!(q.is_empty());
        drop(q);
        assert_eq!(drops.load(Relaxed), 3);
    });
}

/// Two threads try to consume at once while one producer pushes: the consumer flag lets only
/// one pop at a time (the other gets `Busy`), and no node is lost or popped twice.
#[test]
fn mpsc_contended_consumers() {
    model("mpsc_contended_consumers", || {
        let q = Arc::new(Queue::new());
        let drops = Arc::new(AtomicUsize::new(0));
        let producer = {
            let (q, drops) = (Arc::clone(&q), Arc::clone(&drops));
            thread::spawn(move || {
                push(&q, &drops, 0, 0);
                push(&q, &drops, 0, 1);
            })
        };
        let other_consumer = {
            let q = Arc::clone(&q);
            thread::spawn(move || q.pop().ok().map(|node| node.seq))
        };
        let mine = q.pop().ok().map(|node| node.seq);
        let theirs = other_consumer.join().unwrap();
        producer.join().unwrap();

        let mut seqs: Vec<usize> = mine.into_iter().chain(theirs).collect();
        while let Ok(node) = q.pop_wait() {
            seqs.push(node.seq);
        }
        seqs.sort_unstable();
        assert_eq!(seqs, [0, 1], "every node popped exactly once");
        drop(q);
        assert_eq!(drops.load(Relaxed), 2);
    });
}

/// The cache's protocol: an entry is pushed only on its clean→dirty transition, and the writer
/// (the consumer) cleans it after popping it. The entry starts dirty and queued; another thread
/// writes it again (dirties it, pushing it only if it was clean) while the writer pops and
/// cleans it. So a node popped on one thread is pushed again on another, and `push`'s claim
/// must never find it still queued.
#[test]
fn mpsc_redirtied_entry_is_pushed_again_by_another_thread() {
    model(
        "mpsc_redirtied_entry_is_pushed_again_by_another_thread",
        || {
            let q = Arc::new(Queue::new());
            let drops = Arc::new(AtomicUsize::new(0));
            let entry = new_node(&drops, 0, 0);
            entry.dirty.store(true, Relaxed);
            q.push(Arc::clone(&entry));

            let other_writer = {
                let (q, entry) = (Arc::clone(&q), Arc::clone(&entry));
                thread::spawn(move || {
                    let was_dirty = entry.dirty.swap(true, AcqRel);
                    if !was_dirty {
                        q.push(entry);
                    }
                    !was_dirty
                })
            };

            let popped = loop {
                match q.pop_wait() {
                    Ok(node) => break node,
                    Err(TryPopError::Empty) => thread::yield_now(),
                    Err(e) => panic!("unexpected {e:?}"),
                }
            };
            assert!(Arc::ptr_eq(&popped, &entry));
            popped.dirty.store(false, Release);
            drop(popped);

            let pushed_again = other_writer.join().unwrap();
            let mut popped_again = 0;
            while let Ok(node) = q.pop_wait() {
                assert!(Arc::ptr_eq(&node, &entry));
                popped_again += 1;
            }
            assert_eq!(popped_again, usize::from(pushed_again));
            drop(q);
            drop(entry);
            assert_eq!(drops.load(Relaxed), 1);
        },
    );
}
