//! The timer wheel against the two usual alternatives, on the server's workloads: a binary heap
//! (cancel by lazy deletion: a cancelled timer stays in the heap, marked dead, until it reaches the
//! top) and a B-tree map (cancel removes).
//!
//! Each workload is a trace of operations, made once from a seeded PRNG outside the timing loop,
//! and replayed by one driver on each structure through the `TimerQueue` trait, so all three do the
//! same work.
//!
//! Run with `cargo bench --bench timer`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tether::timer::{Tick, TimerKey, Wheel};

/// What the server asks of its timers. A timer's value is a connection id, dense from 0 like the
/// server's slab keys.
trait TimerQueue: Default {
    type Key: Copy;
    fn insert(&mut self, deadline: Tick, conn: u32) -> Self::Key;
    fn cancel(&mut self, key: Self::Key);
    fn poll(&mut self, now: Tick) -> Option<u32>;
    /// Timers held, including dead ones awaiting lazy deletion.
    fn held(&self) -> usize;
}

impl TimerQueue for Wheel<u32> {
    type Key = TimerKey;

    fn insert(&mut self, deadline: Tick, conn: u32) -> TimerKey {
        Wheel::insert(self, deadline, conn)
    }

    fn cancel(&mut self, key: TimerKey) {
        Wheel::cancel(self, key);
    }

    fn poll(&mut self, now: Tick) -> Option<u32> {
        Wheel::poll(self, now)
    }

    fn held(&self) -> usize {
        self.len()
    }
}

#[derive(Default)]
struct LazyHeap {
    heap: BinaryHeap<Reverse<(Tick, u32, u32)>>,
    /// Per connection, the generation of its armed timer, 0 if none: a popped timer whose
    /// generation differs was cancelled.
    armed: Vec<u32>,
    last_generation: u32,
}

impl TimerQueue for LazyHeap {
    /// (connection, generation)
    type Key = (u32, u32);

    fn insert(&mut self, deadline: Tick, conn: u32) -> (u32, u32) {
        self.last_generation += 1;
        let generation = self.last_generation;
        let conn_index = conn as usize;
        if conn_index >= self.armed.len() {
            self.armed.resize(conn_index + 1, 0);
        }
        self.armed[conn_index] = generation;
        self.heap.push(Reverse((deadline, generation, conn)));
        (conn, generation)
    }

    fn cancel(&mut self, (conn, generation): (u32, u32)) {
        let armed = &mut self.armed[conn as usize];
        if *armed == generation {
            *armed = 0;
        }
    }

    fn poll(&mut self, now: Tick) -> Option<u32> {
        while let Some(&Reverse((deadline, generation, conn))) = self.heap.peek() {
            if deadline > now {
                return None;
            }
            self.heap.pop();
            let armed = &mut self.armed[conn as usize];
            if *armed == generation {
                *armed = 0;
                return Some(conn);
            }
        }
        None
    }

    fn held(&self) -> usize {
        self.heap.len()
    }
}

#[derive(Default)]
struct SortedMap {
    /// Keyed by (deadline, insertion number), unique and in firing order.
    map: BTreeMap<(Tick, u64), u32>,
    inserted: u64,
}

impl TimerQueue for SortedMap {
    type Key = (Tick, u64);

    fn insert(&mut self, deadline: Tick, conn: u32) -> (Tick, u64) {
        self.inserted += 1;
        let key = (deadline, self.inserted);
        self.map.insert(key, conn);
        key
    }

    fn cancel(&mut self, key: (Tick, u64)) {
        self.map.remove(&key);
    }

    fn poll(&mut self, now: Tick) -> Option<u32> {
        let first = self.map.first_entry()?;
        (first.key().0 <= now).then(|| first.remove())
    }

    fn held(&self) -> usize {
        self.map.len()
    }
}

/// Keeps no timers: replaying on it measures the driver alone, the part of every other figure that
/// is not the queue's.
#[derive(Default)]
struct NoQueue;

impl TimerQueue for NoQueue {
    type Key = ();

    fn insert(&mut self, _: Tick, _: u32) {}

    fn cancel(&mut self, _: ()) {}

    fn poll(&mut self, _: Tick) -> Option<u32> {
        None
    }

    fn held(&self) -> usize {
        0
    }
}

enum Op {
    /// A request on a keep-alive connection: its idle timer is cancelled.
    Disarm(u32),
    Arm {
        conn: u32,
        deadline: Tick,
    },
    /// The event loop's turn at `now`: drain every timer due.
    Advance(Tick),
}

struct Trace {
    ops: Vec<Op>,
    conns: usize,
    timers: u64,
}

/// Replays `trace` on a fresh `Q`; returns the number of timers fired and the most timers `Q` held
/// at once.
fn replay<Q: TimerQueue>(trace: &Trace) -> (u64, usize) {
    let mut queue = Q::default();
    let mut keys: Vec<Option<Q::Key>> = vec![None; trace.conns];
    let (mut fired, mut most_held) = (0, 0);
    for op in &trace.ops {
        match *op {
            Op::Disarm(conn) => {
                if let Some(key) = keys[conn as usize].take() {
                    queue.cancel(key);
                }
            }
            Op::Arm { conn, deadline } => {
                keys[conn as usize] = Some(queue.insert(deadline, conn));
            }
            Op::Advance(now) => {
                while let Some(conn) = queue.poll(now) {
                    keys[conn as usize] = None;
                    fired += 1;
                }
                most_held = most_held.max(queue.held());
            }
        }
    }
    (fired, most_held)
}

/// xorshift64, seeded: the same trace on every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

const IDLE_TIMEOUT: Tick = 75_000;

/// Idle timeouts on 10,000 keep-alive connections, one step per millisecond for 5 simulated
/// minutes. Each request re-arms its connection's timer 75-76 s ahead. After 9 requests in 10 the
/// next comes within 2 s, cancelling the timer; after the 10th the connection goes idle, its timer
/// fires, and a new connection takes its place within 1 s.
fn cancel_heavy() -> Trace {
    const CONNS: u32 = 10_000;
    const STEPS: Tick = 300_000;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // (tick, connection, whether its timer is armed): the next request.
    let mut requests: BinaryHeap<Reverse<(Tick, u32, bool)>> =
        (0..CONNS).map(|conn| Reverse((rng.below(1_000), conn, false))).collect();
    let (mut ops, mut timers) = (Vec::new(), 0);
    for now in 0..STEPS {
        while let Some(&Reverse((tick, conn, armed))) = requests.peek() {
            if tick > now {
                break;
            }
            requests.pop();
            if armed {
                ops.push(Op::Disarm(conn));
            }
            let deadline = now + IDLE_TIMEOUT + rng.below(1_000);
            ops.push(Op::Arm { conn, deadline });
            timers += 1;
            let next = if rng.below(10) < 9 {
                (now + 1 + rng.below(2_000), true)
            } else {
                (deadline + 1 + rng.below(1_000), false)
            };
            requests.push(Reverse((next.0, conn, next.1)));
        }
        ops.push(Op::Advance(now));
    }
    Trace { ops, conns: CONNS as usize, timers }
}

/// 100,000 timers armed at once, due over the next 10 s, then expired one millisecond step at a
/// time.
fn pure_expiry() -> Trace {
    const TIMERS: u32 = 100_000;
    const SPREAD: Tick = 10_000;
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let arms = (0..TIMERS).map(|conn| Op::Arm { conn, deadline: 1 + rng.below(SPREAD) });
    let steps = (1..=SPREAD).map(Op::Advance);
    Trace { ops: arms.chain(steps).collect(), conns: TIMERS as usize, timers: TIMERS.into() }
}

fn bench(c: &mut Criterion) {
    for (name, trace) in [("cancel_heavy", cancel_heavy()), ("pure_expiry", pure_expiry())] {
        let wheel = replay::<Wheel<u32>>(&trace);
        let heap = replay::<LazyHeap>(&trace);
        let map = replay::<SortedMap>(&trace);
        assert!(wheel.0 == heap.0 && heap.0 == map.0, "the queues disagree");
        eprintln!(
            "{name}: {} timers, {} fired; most held: wheel {}, heap {}, map {}",
            trace.timers, wheel.0, wheel.1, heap.1, map.1
        );

        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(trace.timers));
        group.sample_size(20);
        group.bench_function("wheel", |b| b.iter(|| replay::<Wheel<u32>>(black_box(&trace))));
        group.bench_function("binary_heap", |b| b.iter(|| replay::<LazyHeap>(black_box(&trace))));
        group.bench_function("btree_map", |b| b.iter(|| replay::<SortedMap>(black_box(&trace))));
        group.bench_function("driver_only", |b| b.iter(|| replay::<NoQueue>(black_box(&trace))));
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
