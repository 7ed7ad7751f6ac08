use super::{MpscQueue, Node, TryPopError};
use crate::sync::{Arc, AtomicUsize, Ordering, thread};

/// Counts drops of the tokens it hands out.
#[derive(Default)]
struct DropCounter(Arc<AtomicUsize>);

impl DropCounter {
    fn token(&self) -> DropToken {
        DropToken(Arc::clone(&self.0))
    }

    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

struct DropToken(Arc<AtomicUsize>);

impl Drop for DropToken {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn fifo_single_thread() {
    let q = MpscQueue::new();
    assert!(q.is_empty());
    assert_eq!(q.pop().unwrap_err(), TryPopError::Empty);
    for i in 0..100 {
        q.push(Arc::new(Node::new(i)));
    }
    assert!(!q.is_empty());
    for i in 0..100 {
        assert_eq!(**q.pop().unwrap(), i);
    }
    assert_eq!(q.pop().unwrap_err(), TryPopError::Empty);
    assert!(q.is_empty());
}

#[test]
fn drains_and_refills_through_the_stub() {
    // Every drain re-queues the stub; alternate single pushes and pops across many rounds.
    let q = MpscQueue::new();
    for round in 0..50 {
        for i in 0..(round % 4) {
            q.push(Arc::new(Node::new((round, i))));
        }
        for i in 0..(round % 4) {
            assert_eq!(**q.pop().unwrap(), (round, i));
        }
        assert_eq!(q.pop().unwrap_err(), TryPopError::Empty);
        assert!(q.is_empty());
    }
}

#[test]
fn a_popped_node_can_be_pushed_again() {
    let q = MpscQueue::new();
    let a = Arc::new(Node::new('a'));
    let b = Arc::new(Node::new('b'));
    q.push(Arc::clone(&a));
    q.push(Arc::clone(&b));
    let first = q.pop().unwrap();
    assert!(Arc::ptr_eq(&first, &a));
    q.push(first);
    assert!(Arc::ptr_eq(&q.pop().unwrap(), &b));
    assert!(Arc::ptr_eq(&q.pop().unwrap(), &a));
    assert_eq!(q.pop().unwrap_err(), TryPopError::Empty);
    // The queue gave back every count it took.
    assert_eq!(Arc::strong_count(&a), 1);
    assert_eq!(Arc::strong_count(&b), 1);
}

#[test]
#[should_panic(expected = "already queued")]
fn pushing_a_queued_node_panics() {
    let q = MpscQueue::new();
    let a = Arc::new(Node::new(1));
    q.push(Arc::clone(&a));
    q.push(a);
}

#[test]
#[should_panic(expected = "already queued")]
fn pushing_a_node_queued_elsewhere_panics() {
    let (q1, q2) = (MpscQueue::new(), MpscQueue::new());
    let a = Arc::new(Node::new(1));
    q1.push(Arc::clone(&a));
    q2.push(a);
}

#[test]
fn a_node_moves_between_queues_once_popped() {
    let (q1, q2) = (MpscQueue::new(), MpscQueue::new());
    let a = Arc::new(Node::new(1));
    q1.push(Arc::clone(&a));
    q2.push(q1.pop().unwrap());
    assert_eq!(q1.pop().unwrap_err(), TryPopError::Empty);
    assert!(Arc::ptr_eq(&q2.pop().unwrap(), &a));
    drop((q1, q2));
    assert_eq!(Arc::strong_count(&a), 1);
}

#[test]
fn one_consumer_at_a_time() {
    let q = MpscQueue::new();
    q.push(Arc::new(Node::new(1)));
    let mut c = q.consumer().expect("consumer role is free");
    assert!(q.consumer().is_none());
    assert_eq!(q.pop().unwrap_err(), TryPopError::Busy);
    assert_eq!(q.pop_wait().unwrap_err(), TryPopError::Busy);
    assert_eq!(**c.pop_wait().unwrap(), 1);
    assert!(c.pop_wait().is_none());
    drop(c);
    assert_eq!(q.pop_wait().unwrap_err(), TryPopError::Empty);
    assert!(q.consumer().is_some());
}

#[test]
fn multi_producer_stress() {
    const PRODUCERS: usize = 4;
    const PER_PRODUCER: usize = 10_000;
    let q = Arc::new(MpscQueue::new());
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let q = Arc::clone(&q);
            thread::spawn(move || {
                for seq in 0..PER_PRODUCER {
                    q.push(Arc::new(Node::new((p, seq))));
                }
            })
        })
        .collect();

    let mut next_seq = [0usize; PRODUCERS];
    let mut popped = 0;
    let mut consumer = q.consumer().expect("only consumer");
    while popped < PRODUCERS * PER_PRODUCER {
        match consumer.pop_wait() {
            Some(node) => {
                let (p, seq) = **node;
                // Per-producer FIFO, and together with the count: every node exactly once.
                assert_eq!(seq, next_seq[p], "producer {p} out of order");
                next_seq[p] += 1;
                popped += 1;
            }
            None => thread::yield_now(),
        }
    }
    drop(consumer);
    for h in producers {
        h.join().unwrap();
    }
    assert_eq!(next_seq, [PER_PRODUCER; PRODUCERS]);
    assert_eq!(q.pop().unwrap_err(), TryPopError::Empty);
    assert!(q.is_empty());
}

#[test]
fn drop_releases_every_queued_node_once() {
    let drops = DropCounter::default();
    let q = MpscQueue::new();
    let kept = Arc::new(Node::new(drops.token()));
    for _ in 0..10 {
        q.push(Arc::new(Node::new(drops.token())));
    }
    q.push(Arc::clone(&kept));
    for _ in 0..3 {
        drop(q.pop().unwrap());
    }
    assert_eq!(drops.count(), 3);
    drop(q);
    // The 7 queued nodes are dropped; `kept` lost only the queue's count.
    assert_eq!(drops.count(), 10);
    assert_eq!(Arc::strong_count(&kept), 1);
    drop(kept);
    assert_eq!(drops.count(), 11);
}

#[test]
fn drop_of_an_untouched_queue_and_of_a_drained_one() {
    let drops = DropCounter::default();
    drop(MpscQueue::<Node<u8>>::new());
    let q = MpscQueue::new();
    q.push(Arc::new(Node::new(drops.token())));
    drop(q.pop().unwrap());
    drop(q);
    assert_eq!(drops.count(), 1);
}
