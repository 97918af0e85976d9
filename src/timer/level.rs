//! One level of the wheel, and the arithmetic that maps a tick to a level, a slot, and the tick at
//! which that slot comes due.
//!
//! A `Level` owns the heads of its 64 slot lists and a bitmap of which lists are non-empty; the
//! entries and the links between them live in the wheel's slab (`wheel.rs`). Invariant: bit `s` of
//! `occupied` is set exactly when `heads[s]` is not `NIL`. `set_head` is the only writer of either,
//! so the two cannot drift apart.

use super::{Tick, BITS_PER_LEVEL, LEVELS, SLOTS};

/// A slab key, narrowed to 32 bits to keep entries small.
pub(super) type Link = u32;

/// The end of a list. The wheel refuses to hand out this key, so no entry can be mistaken for it.
pub(super) const NIL: Link = Link::MAX;

pub(super) struct Level {
    occupied: u64,
    heads: [Link; SLOTS],
}

impl Level {
    pub(super) const EMPTY: Level = Level { occupied: 0, heads: [NIL; SLOTS] };

    pub(super) fn head(&self, slot: usize) -> Link {
        self.heads[slot]
    }

    pub(super) fn set_head(&mut self, slot: usize, head: Link) {
        self.heads[slot] = head;
        let bit = 1 << slot;
        if head == NIL {
            self.occupied &= !bit;
        } else {
            self.occupied |= bit;
        }
    }

    /// The first non-empty slot at or after `from`, going once round the level: one rotate and one
    /// count instead of a scan of 64 heads.
    pub(super) fn next_occupied(&self, from: usize) -> Option<usize> {
        if self.occupied == 0 {
            return None;
        }
        // Rotating brings slot `from` to bit 0, so the trailing zeros count the slots between it
        // and the next occupied one.
        let distance = self.occupied.rotate_right(from as u32).trailing_zeros() as usize;
        Some((from + distance) % SLOTS)
    }
}

/// Ticks spanned by one slot of `level`.
pub(super) const fn slot_span(level: usize) -> Tick {
    1 << (BITS_PER_LEVEL * level)
}

/// Ticks spanned by all slots of `level`, which is one slot of the level above.
const fn level_span(level: usize) -> Tick {
    slot_span(level + 1)
}

/// The level for a timer due at `when`: the level of the highest bit in which `when` differs from
/// `elapsed`, so that every lower digit is resolved later, by cascading. Needs `when` in
/// `elapsed..=elapsed + MAX_DURATION`.
pub(super) fn level_for(elapsed: Tick, when: Tick) -> usize {
    // Setting the level-0 bits gives `when == elapsed` a highest differing bit too, on level 0,
    // where due timers belong.
    let differing = (elapsed ^ when) | (SLOTS as Tick - 1);
    let highest_bit = (Tick::BITS - 1 - differing.leading_zeros()) as usize;
    // A `when` up to MAX_DURATION ahead can still differ above the top level when it crosses a
    // multiple of 2^36; the top level's slots then act as a ring and hold it in the next rotation
    // (see `slot_due`).
    (highest_bit / BITS_PER_LEVEL).min(LEVELS - 1)
}

/// The slot for `when` on `level`: its 6-bit digit there.
pub(super) fn slot_for(when: Tick, level: usize) -> usize {
    (when >> (BITS_PER_LEVEL * level)) as usize % SLOTS
}

/// The tick at which `slot` of `level` comes due: the first tick of the span it covers, the
/// earliest deadline it can hold. For a slot filled by `level_for` and `slot_for` that is at or
/// after `elapsed`, and strictly after it above level 0.
pub(super) fn slot_due(elapsed: Tick, level: usize, slot: usize) -> Tick {
    let level_start = elapsed & !(level_span(level) - 1);
    let due = level_start + slot as Tick * slot_span(level);
    if due >= elapsed {
        due
    } else {
        // A slot behind `elapsed` holds the next rotation. Only the top level has one: a lower
        // level only holds deadlines inside the span of the level above that `elapsed` is in.
        debug_assert_eq!(level, LEVELS - 1);
        due + level_span(level)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{xorshift, MAX_DURATION};
    use super::*;

    /// The level by its definition: the lowest whose aligned range holds both ticks, else the top.
    fn reference_level(elapsed: Tick, when: Tick) -> usize {
        (0..LEVELS).find(|&level| elapsed / level_span(level) == when / level_span(level)).unwrap_or(LEVELS - 1)
    }

    fn reference_slot(when: Tick, level: usize) -> usize {
        (when / slot_span(level) % SLOTS as Tick) as usize
    }

    fn check(elapsed: Tick, when: Tick) {
        let level = level_for(elapsed, when);
        let slot = slot_for(when, level);
        assert_eq!(level, reference_level(elapsed, when), "level of {when} at {elapsed}");
        assert_eq!(slot, reference_slot(when, level), "slot of {when} at {elapsed}");
        // What placement is for: the slot comes due at or before `when`, its span holds `when`, and
        // above level 0 it is still ahead, so the wheel reaches it and cascades before `when` is
        // due.
        let due = slot_due(elapsed, level, slot);
        assert!(due <= when && when - due < slot_span(level), "{when} at {elapsed}: due {due}");
        if level == 0 {
            assert_eq!(due, when);
        } else {
            assert!(due > elapsed, "{when} at {elapsed}: due {due}");
        }
    }

    #[test]
    fn every_pair_across_the_first_two_levels() {
        let end = (SLOTS * SLOTS + SLOTS) as Tick;
        for elapsed in 0..end {
            for when in elapsed..elapsed + end {
                check(elapsed, when);
            }
        }
    }

    #[test]
    fn around_every_level_boundary() {
        let mut distances: Vec<Tick> = (0..4).collect();
        for level in 1..=LEVELS {
            let span = slot_span(level);
            distances.extend(span - 3..=span + 3);
        }
        distances.retain(|&d| d <= MAX_DURATION);
        distances.extend(MAX_DURATION - 3..=MAX_DURATION);

        let mut bases = vec![0, 1 << 40, u64::MAX / 2];
        for level in 1..=LEVELS + 1 {
            let span = slot_span(level);
            bases.extend([span, 3 * span, 63 * span, 64 * span, 65 * span]);
        }
        for base in bases {
            for elapsed in base.saturating_sub(3)..=base + 3 {
                for &distance in &distances {
                    check(elapsed, elapsed + distance);
                }
                // And a deadline on each boundary ahead, from either side.
                for level in 1..=LEVELS {
                    let next_boundary = (elapsed / slot_span(level) + 1) * slot_span(level);
                    for when in next_boundary - 2..=next_boundary + 2 {
                        if (elapsed..=elapsed + MAX_DURATION).contains(&when) {
                            check(elapsed, when);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn random_pairs_at_every_distance() {
        let mut rng = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..200_000 {
            let elapsed = xorshift(&mut rng) >> 14;
            // Log-uniform distances reach every level equally often.
            let bits = xorshift(&mut rng) % (BITS_PER_LEVEL * LEVELS) as u64 + 1;
            let distance = xorshift(&mut rng) & ((1 << bits) - 1);
            check(elapsed, elapsed + distance.min(MAX_DURATION));
        }
    }

    #[test]
    fn next_occupied_goes_round_once() {
        let sets: [&[usize]; 4] = [&[0], &[63], &[5, 40], &[0, 1, 62, 63]];
        for set in sets {
            let mut level = Level::EMPTY;
            for &slot in set {
                level.set_head(slot, slot as Link);
            }
            for from in 0..SLOTS {
                let expected = (0..SLOTS).map(|step| (from + step) % SLOTS).find(|slot| set.contains(slot));
                assert_eq!(level.next_occupied(from), expected, "{set:?} from {from}");
            }
            for &slot in set {
                level.set_head(slot, NIL);
            }
            assert_eq!(level.next_occupied(0), None);
        }
    }
}
