//! The wheel: where timers are stored, and the moves that keep each in the right slot as time
//! advances.
//!
//! It owns a slab of entries and `elapsed`, the tick up to which it has been polled. Each entry is
//! linked into exactly one slot list by `prev`/`next` slab keys; the lists are doubly linked so
//! that any entry can be unlinked in O(1) without unsafe code. Invariants, besides those of the
//! module:
//!
//! - An entry's `level` and `slot` name the list it is linked into, and a list's head is the one
//!   entry in it whose `prev` is `NIL`.
//! - `elapsed` only grows, and only to the due tick of the next occupied slot (which is then
//!   cascaded) or to a `now` before that tick. So it never skips a slot, and the due slot is empty
//!   whenever it moves.

use std::fmt;
use std::num::NonZeroU32;

use slab::Slab;

use super::level::{level_for, slot_due, slot_for, Level, Link, NIL};
use super::{Tick, LEVELS, MAX_DURATION};

/// Names an armed timer, to cancel it.
///
/// The generation makes a key stale for good once its timer fires or is cancelled, even after the
/// slab hands the same index to a new timer: `cancel` checks both, so a stale key finds nothing.
/// Generations repeat only every 2^32 - 1 inserts, and a stale key could match only a timer that
/// reused its index exactly a multiple of that many inserts later. Being non-zero, the generation
/// also makes `Option<TimerKey>` 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerKey {
    index: Link,
    generation: NonZeroU32,
}

struct Entry<T> {
    deadline: Tick,
    value: T,
    prev: Link,
    next: Link,
    /// Non-zero, which gives the slab's slot enum a niche for its tag.
    generation: NonZeroU32,
    /// The list this entry is in, so that unlinking a head can update it.
    level: u8,
    slot: u8,
}

/// Layout twin of `slab`'s private `enum Entry<T> { Vacant(usize), Occupied(T) }`, to name the size
/// of one slab slot. rustc lays out identical definitions identically, though the language does not
/// promise it, so this serves accounting only. Thanks to `Entry::generation`'s niche the tag costs
/// no space: a slot is as big as an entry (32 bytes rather than 40 when `T` is `usize`).
#[expect(dead_code, reason = "only its size is used")]
enum SlabSlot<T> {
    Vacant(usize),
    Occupied(T),
}

/// Bytes per timer in the slab when `T` is `usize`, the server's connection key: 32 on 64-bit
/// targets.
pub const ENTRY_BYTES: usize = size_of::<SlabSlot<Entry<usize>>>();

/// A hierarchical timing wheel of `T`s; see the module docs for its levels.
pub struct Wheel<T> {
    entries: Slab<Entry<T>>,
    levels: [Level; LEVELS],
    elapsed: Tick,
    next_generation: NonZeroU32,
}

impl<T> Wheel<T> {
    /// An empty wheel at tick 0.
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// An empty wheel at tick 0 with room for `entries` timers before its slab grows.
    pub fn with_capacity(entries: usize) -> Self {
        Wheel {
            entries: Slab::with_capacity(entries),
            levels: [Level::EMPTY; LEVELS],
            elapsed: 0,
            next_generation: NonZeroU32::MIN,
        }
    }

    /// The tick up to which the wheel has been polled: every timer due by then has been returned by
    /// `poll`, or is waiting in the due slot.
    pub fn elapsed(&self) -> Tick {
        self.elapsed
    }

    /// Arms a timer that `poll` returns once it reaches `deadline`. A deadline at or before
    /// `elapsed()` counts as due at `elapsed()`: the next `poll` returns it.
    ///
    /// # Panics
    ///
    /// If `u32::MAX` timers are already armed, since keys are 32 bits.
    pub fn insert(&mut self, deadline: Tick, value: T) -> TimerKey {
        let vacant = self.entries.vacant_entry();
        let index = match Link::try_from(vacant.key()) {
            Ok(index) if index != NIL => index,
            _ => panic!("timer wheel full: {NIL} timers armed"),
        };
        let generation = self.next_generation;
        self.next_generation = generation.checked_add(1).unwrap_or(NonZeroU32::MIN);
        vacant.insert(Entry { deadline, value, prev: NIL, next: NIL, generation, level: 0, slot: 0 });
        self.link(index);
        TimerKey { index, generation }
    }

    /// Disarms the timer and returns its value, or `None` if it is no longer armed: it has fired or
    /// been cancelled (see [`TimerKey`]).
    pub fn cancel(&mut self, key: TimerKey) -> Option<T> {
        let entry = self.entries.get(key.index as usize)?;
        if entry.generation != key.generation {
            return None;
        }
        Some(self.remove(key.index))
    }

    /// The deadline an armed timer was inserted with, or `None` once it has fired or been
    /// cancelled.
    pub fn deadline(&self, key: TimerKey) -> Option<Tick> {
        let entry = self.entries.get(key.index as usize)?;
        (entry.generation == key.generation).then_some(entry.deadline)
    }

    /// The value of an armed timer, or `None` once it has fired or been cancelled.
    pub fn get(&self, key: TimerKey) -> Option<&T> {
        let entry = self.entries.get(key.index as usize)?;
        (entry.generation == key.generation).then_some(&entry.value)
    }

    /// The earliest tick at which `poll` may have a timer to return, or `None` when no timer is
    /// armed.
    ///
    /// Never later than the earliest deadline, but it may be earlier: for a timer above level 0 it
    /// is the start of its slot, where `poll` only cascades. Sleeping until then costs one early
    /// wake-up per level at most. While a timer is due it is `elapsed()`.
    pub fn next_deadline(&self) -> Option<Tick> {
        self.next_due_slot().map(|(_, _, due)| due)
    }

    /// Returns the next timer due by `now`, or `None` when none is left, and then `elapsed()` is
    /// `now`. Drain it in a loop; inserting and cancelling between calls is fine.
    ///
    /// Timers come out in order of deadline, a deadline already past when inserted counting as the
    /// `elapsed()` of then; equal deadlines come out in no set order. `now` must not go backwards:
    /// a `now` before `elapsed()` is taken as `elapsed()`.
    pub fn poll(&mut self, now: Tick) -> Option<T> {
        loop {
            let head = self.levels[0].head(slot_for(self.elapsed, 0));
            if head != NIL {
                return Some(self.remove(head));
            }
            match self.next_due_slot() {
                Some((level, slot, due)) if due <= now => {
                    self.elapsed = due;
                    // A level-0 slot need not move: at `due` it is the due slot, so the next turn
                    // of the loop returns from it.
                    if level > 0 {
                        self.cascade(level, slot);
                    }
                }
                _ => {
                    self.elapsed = self.elapsed.max(now);
                    return None;
                }
            }
        }
    }

    /// The number of armed timers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes the wheel holds: its slab, at capacity, and its slot heads. Memory that a `T` owns
    /// elsewhere is not counted.
    pub fn memory_bytes(&self) -> usize {
        self.entries.capacity() * size_of::<SlabSlot<Entry<T>>>() + size_of_val(&self.levels)
    }

    /// The occupied slot that comes due first: its level, slot and due tick. Looking from level 0
    /// up is enough, as every occupied slot of a level comes due before any of the level above: a
    /// level only holds deadlines inside the span of the level above that `elapsed` is in.
    fn next_due_slot(&self) -> Option<(usize, usize, Tick)> {
        self.levels.iter().enumerate().find_map(|(level, slots)| {
            let slot = slots.next_occupied(slot_for(self.elapsed, level))?;
            Some((level, slot, slot_due(self.elapsed, level, slot)))
        })
    }

    /// Links an unlinked entry at the head of the slot its deadline belongs in, as seen from
    /// `elapsed`.
    fn link(&mut self, index: Link) {
        let deadline = self.entries[index as usize].deadline;
        // A past deadline goes to the due slot. One beyond the top level's reach is parked at its
        // far end, to be placed again from there.
        let when = deadline.clamp(self.elapsed, self.elapsed.saturating_add(MAX_DURATION));
        let level = level_for(self.elapsed, when);
        let slot = slot_for(when, level);

        let head = self.levels[level].head(slot);
        if head != NIL {
            self.entries[head as usize].prev = index;
        }
        let entry = &mut self.entries[index as usize];
        entry.prev = NIL;
        entry.next = head;
        entry.level = level as u8;
        entry.slot = slot as u8;
        self.levels[level].set_head(slot, index);
    }

    fn unlink(&mut self, index: Link) {
        let entry = &self.entries[index as usize];
        let (prev, next) = (entry.prev, entry.next);
        let (level, slot) = (entry.level as usize, entry.slot as usize);
        if prev == NIL {
            self.levels[level].set_head(slot, next);
        } else {
            self.entries[prev as usize].next = next;
        }
        if next != NIL {
            self.entries[next as usize].prev = prev;
        }
    }

    fn remove(&mut self, index: Link) -> T {
        self.unlink(index);
        self.entries.remove(index as usize).value
    }

    /// Empties a slot that has just come due and places its entries again, now that `elapsed` has
    /// reached it: each lands on a lower level, or in the due slot if its deadline is now.
    fn cascade(&mut self, level: usize, slot: usize) {
        let mut index = self.levels[level].head(slot);
        self.levels[level].set_head(slot, NIL);
        while index != NIL {
            let next = self.entries[index as usize].next;
            self.link(index);
            index = next;
        }
    }
}

impl<T> Default for Wheel<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for Wheel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wheel")
            .field("elapsed", &self.elapsed)
            .field("len", &self.len())
            .field("next_deadline", &self.next_deadline())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::super::level::slot_span;
    use super::super::{xorshift, SLOTS};
    use super::*;

    impl<T> Wheel<T> {
        /// Walks every list and checks the invariants of both module docs.
        fn check_invariants(&self) {
            let mut linked = 0;
            for (level, slots) in self.levels.iter().enumerate() {
                for slot in 0..SLOTS {
                    let mut prev = NIL;
                    let mut index = slots.head(slot);
                    assert_eq!(slots.next_occupied(slot) == Some(slot), index != NIL);
                    while index != NIL {
                        let entry = &self.entries[index as usize];
                        assert_eq!((entry.level as usize, entry.slot as usize), (level, slot));
                        assert_eq!(entry.prev, prev);
                        if entry.deadline <= self.elapsed {
                            assert_eq!((level, slot), (0, slot_for(self.elapsed, 0)));
                        } else {
                            let due = slot_due(self.elapsed, level, slot);
                            let parked = level == LEVELS - 1;
                            assert!(self.elapsed < due && due <= entry.deadline);
                            assert!(parked || entry.deadline - due < slot_span(level));
                        }
                        linked += 1;
                        prev = index;
                        index = entry.next;
                    }
                }
            }
            assert_eq!(linked, self.len());
        }
    }

    fn drain<T>(wheel: &mut Wheel<T>, now: Tick) -> Vec<T> {
        std::iter::from_fn(|| wheel.poll(now)).collect()
    }

    #[test]
    fn an_empty_wheel_moves_to_now() {
        let mut wheel = Wheel::<()>::new();
        assert_eq!(wheel.next_deadline(), None);
        assert!(wheel.poll(100).is_none());
        assert_eq!(wheel.elapsed(), 100);
        assert!(wheel.is_empty());
    }

    #[test]
    fn a_timer_fires_at_its_deadline_not_before() {
        let mut wheel = Wheel::new();
        wheel.insert(10, 'a');
        assert_eq!(wheel.poll(9), None);
        assert_eq!(wheel.next_deadline(), Some(10));
        assert_eq!(wheel.poll(10), Some('a'));
        assert_eq!(wheel.poll(10), None);
        assert!(wheel.is_empty());
    }

    #[test]
    fn next_deadline_steps_down_the_levels() {
        let mut wheel = Wheel::new();
        // 5000 = 1 * 4096 + 14 * 64 + 8: slot 1 of level 2, then slot 14 of level 1, then tick 5000
        // itself.
        wheel.insert(5000, ());
        for due in [4096, 4096 + 14 * 64] {
            assert_eq!(wheel.next_deadline(), Some(due));
            assert_eq!(wheel.poll(due), None);
            wheel.check_invariants();
        }
        assert_eq!(wheel.next_deadline(), Some(5000));
        assert_eq!(wheel.poll(5000), Some(()));
    }

    #[test]
    fn a_past_deadline_fires_on_the_next_poll() {
        let mut wheel = Wheel::new();
        assert_eq!(wheel.poll(100), None);
        wheel.insert(50, 'p');
        wheel.insert(0, 'z');
        wheel.insert(100, 'n');
        wheel.check_invariants();
        assert_eq!(wheel.next_deadline(), Some(100));
        let mut fired = drain(&mut wheel, 100);
        fired.sort();
        assert_eq!(fired, ['n', 'p', 'z']);
    }

    #[test]
    fn inserts_while_draining_fire_in_the_same_drain_only_if_due() {
        let mut wheel = Wheel::new();
        for value in 0..3 {
            wheel.insert(10, value);
        }
        let mut fired = vec![wheel.poll(10).unwrap()];
        wheel.insert(10, 10);
        wheel.insert(11, 11);
        wheel.insert(5, 5);
        fired.extend(drain(&mut wheel, 10));
        fired.sort();
        assert_eq!(fired, [0, 1, 2, 5, 10]);
        assert_eq!(wheel.poll(11), Some(11));
    }

    #[test]
    fn cancel_returns_the_value_once() {
        let mut wheel = Wheel::new();
        let cancelled = wheel.insert(10, 'c');
        let fired = wheel.insert(20, 'f');
        assert_eq!(wheel.cancel(cancelled), Some('c'));
        assert_eq!(wheel.cancel(cancelled), None);
        assert_eq!(drain(&mut wheel, 30), ['f']);
        assert_eq!(wheel.cancel(fired), None);
        assert!(wheel.is_empty());
    }

    #[test]
    fn deadline_is_known_while_armed_only() {
        let mut wheel = Wheel::new();
        let key = wheel.insert(700, ());
        assert_eq!(wheel.deadline(key), Some(700));
        wheel.cancel(key);
        assert_eq!(wheel.deadline(key), None);
        let reused = wheel.insert(900, ());
        assert_eq!((wheel.deadline(key), wheel.deadline(reused)), (None, Some(900)));
    }

    #[test]
    fn a_stale_key_does_not_cancel_the_timer_reusing_its_index() {
        let mut wheel = Wheel::new();
        let cancelled = wheel.insert(10, 1);
        wheel.cancel(cancelled);
        let reuser = wheel.insert(20, 2);
        assert_eq!(reuser.index, cancelled.index);
        assert_eq!(wheel.cancel(cancelled), None);

        let fired = wheel.insert(15, 3);
        assert_eq!(drain(&mut wheel, 15), [3]);
        let reuser_of_fired = wheel.insert(40, 4);
        assert_eq!(reuser_of_fired.index, fired.index);
        assert_eq!(wheel.cancel(fired), None);

        assert_eq!(wheel.len(), 2);
        assert_eq!(drain(&mut wheel, 40), [2, 4]);
    }

    #[test]
    fn a_deadline_beyond_max_duration_is_parked_and_never_fires_early() {
        for deadline in [MAX_DURATION + 1, 3 * MAX_DURATION + 12_345] {
            let mut wheel = Wheel::new();
            wheel.insert(deadline, ());
            let mut wake_ups = 0;
            loop {
                let due = wheel.next_deadline().unwrap();
                assert!(due <= deadline);
                wake_ups += 1;
                if wheel.poll(due).is_some() {
                    assert_eq!(wheel.elapsed(), deadline);
                    break;
                }
                wheel.check_invariants();
            }
            // Each parking moves it at least 63 top-level slots on; then it wakes at most once per
            // level.
            let parkings = deadline / (63 * slot_span(LEVELS - 1));
            assert!(wake_ups <= parkings as usize + LEVELS, "{wake_ups} wake-ups");
        }
    }

    #[test]
    fn timers_across_the_top_level_boundary() {
        let boundary = 1 << 36;
        let mut wheel = Wheel::new();
        wheel.poll(boundary - 10);
        let deadlines = [boundary - 1, boundary, boundary + 5, boundary + (1 << 30) + 7];
        for deadline in deadlines {
            wheel.insert(deadline, deadline);
        }
        wheel.check_invariants();
        let mut fired = Vec::new();
        while let Some(due) = wheel.next_deadline() {
            fired.extend(drain(&mut wheel, due));
            assert!(fired.iter().all(|&deadline| deadline <= due));
            wheel.check_invariants();
        }
        assert_eq!(fired, deadlines);
    }

    #[test]
    fn memory_is_counted_per_slab_slot() {
        #[cfg(target_pointer_width = "64")]
        assert_eq!(ENTRY_BYTES, 32);
        assert_eq!(size_of::<Option<TimerKey>>(), 8);
        let wheel = Wheel::<usize>::with_capacity(1000);
        let levels = LEVELS * (8 + SLOTS * size_of::<Link>());
        assert!(wheel.memory_bytes() >= 1000 * ENTRY_BYTES + levels);
        assert_eq!(wheel.memory_bytes(), wheel.entries.capacity() * ENTRY_BYTES + levels);
    }

    /// A deadline at 1 to 2^`max_bits` ticks ahead, log-uniform so that all levels get timers.
    fn distance(rng: &mut u64, max_bits: u64) -> Tick {
        let bits = xorshift(rng) % max_bits + 1;
        xorshift(rng) & ((1 << bits) - 1)
    }

    #[test]
    fn random_timers_fire_in_order_and_next_deadline_is_never_late() {
        let mut rng = 0x2545_f491_4f6c_dd1d;
        let mut wheel = Wheel::new();
        let mut armed = BTreeSet::new();
        let mut keys = Vec::new();
        let mut now = 0;
        let mut last_fired = 0;
        for _ in 0..2_000 {
            for _ in 0..xorshift(&mut rng) % 4 {
                let deadline = now + distance(&mut rng, 20);
                let id = keys.len();
                keys.push(wheel.insert(deadline, (deadline, id)));
                armed.insert((deadline, id));
            }
            if xorshift(&mut rng).is_multiple_of(3) && !keys.is_empty() {
                let id = xorshift(&mut rng) as usize % keys.len();
                let cancelled = wheel.cancel(keys[id]);
                assert_eq!(cancelled.is_some(), armed.iter().any(|&(_, i)| i == id));
                if let Some(timer) = cancelled {
                    armed.remove(&timer);
                }
            }
            wheel.check_invariants();
            if let Some(&(earliest, _)) = armed.first() {
                assert!(wheel.next_deadline().unwrap() <= earliest);
            }

            now += distance(&mut rng, 12);
            while let Some(timer @ (deadline, _)) = wheel.poll(now) {
                assert!(last_fired <= deadline && deadline <= now);
                assert!(armed.remove(&timer), "{timer:?} fired twice");
                last_fired = deadline;
            }
            assert_eq!(wheel.elapsed(), now);
            assert!(armed.first().is_none_or(|&(earliest, _)| earliest > now));
        }
    }

    /// The big one: a million timers, half of them cancelled, time advancing in random leaps;
    /// exactly the uncancelled ones must fire, each once, in order of deadline, and none late.
    #[test]
    fn a_million_timers() {
        const TIMERS: usize = 1_000_000;
        #[derive(Clone, Copy, PartialEq, Debug)]
        enum State {
            Armed,
            Cancelled,
            Fired,
        }
        let mut rng = 0xdead_beef_cafe_f00d;
        let mut wheel = Wheel::new();
        // Per timer id: its effective deadline and state.
        let mut deadlines: Vec<Tick> = Vec::with_capacity(TIMERS);
        let mut states = Vec::with_capacity(TIMERS);
        // Keys of timers not yet cancelled (some of which have fired).
        let mut keys: Vec<(u32, TimerKey)> = Vec::new();
        let mut now: Tick = 0;
        let mut last_fired = 0;
        let mut fire = |id: u32, now: Tick, states: &mut Vec<State>, deadlines: &[Tick]| {
            let id = id as usize;
            assert_eq!(states[id], State::Armed, "timer {id}");
            assert!(last_fired <= deadlines[id] && deadlines[id] <= now);
            last_fired = deadlines[id];
            states[id] = State::Fired;
        };

        while deadlines.len() < TIMERS {
            for _ in 0..xorshift(&mut rng) % 2_000 {
                let id = deadlines.len() as u32;
                let deadline = match xorshift(&mut rng) % 1_000 {
                    0 => now.saturating_sub(xorshift(&mut rng) % 100),
                    1 => now + MAX_DURATION + xorshift(&mut rng) % MAX_DURATION,
                    _ => now + distance(&mut rng, 26),
                };
                keys.push((id, wheel.insert(deadline, id)));
                deadlines.push(deadline.max(now));
                states.push(State::Armed);
            }
            for _ in 0..xorshift(&mut rng) % 2_000 {
                if keys.is_empty() {
                    break;
                }
                let (id, key) = keys.swap_remove(xorshift(&mut rng) as usize % keys.len());
                let cancelled = wheel.cancel(key);
                assert_eq!(cancelled, (states[id as usize] == State::Armed).then_some(id));
                if cancelled.is_some() {
                    states[id as usize] = State::Cancelled;
                }
            }

            now += distance(&mut rng, 16);
            while let Some(id) = wheel.poll(now) {
                fire(id, now, &mut states, &deadlines);
            }
            assert!(wheel.next_deadline().is_none_or(|due| due > now));
        }

        let end = deadlines.iter().max().unwrap() + 1;
        while let Some(id) = wheel.poll(end) {
            fire(id, end, &mut states, &deadlines);
        }
        assert!(wheel.is_empty());
        assert!(states.iter().all(|&state| state != State::Armed));
        let cancelled = states.iter().filter(|&&state| state == State::Cancelled).count();
        assert!(cancelled > TIMERS / 4, "only {cancelled} cancelled");
    }
}
