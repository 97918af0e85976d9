//! Timers: a hierarchical timing wheel (Varghese & Lauck, "Hashed and Hierarchical Timing Wheels",
//! 1987; laid out like tokio's `runtime/time/wheel`).
//!
//! This module owns every armed timer of one event loop. The server arms a timer per idle
//! connection and re-arms it on each request, so most timers are cancelled long before they fire:
//! insert and cancel must be O(1) and cheap, and only the few that fire may cost more (each is
//! moved down at most once per level on its way to firing).
//!
//! Time is an integer [`Tick`] of one millisecond since the server started. The caller turns its
//! clock into ticks; nothing here reads a clock, so the tests drive time by hand and never sleep.
//!
//! # Levels
//!
//! Each level has 64 slots, and a slot of level `n` spans all 64 slots of level `n - 1`:
//!
//! | level | slot span            | range covered (64 slots)  |
//! |-------|----------------------|---------------------------|
//! | 0     | 1 ms                 | 64 ms                     |
//! | 1     | 64 ms                | 4.1 s                     |
//! | 2     | 4.1 s (2^12 ms)      | 4.4 min (2^18 ms)         |
//! | 3     | 4.4 min              | 4.7 h (2^24 ms)           |
//! | 4     | 4.7 h                | 12.4 days (2^30 ms)       |
//! | 5     | 12.4 days            | 795 days (2^36 ms)        |
//!
//! A timer sits on the lowest level whose range, aligned on multiples of itself, holds both
//! `elapsed` and the deadline: the level of the highest bit in which the two differ. Its slot is
//! the deadline's 6-bit digit on that level. When `elapsed` reaches the start of a slot above level
//! 0, the slot's timers are re-placed ("cascaded") on lower levels; a level-0 slot holds timers of
//! exactly one tick.
//!
//! A deadline more than [`MAX_DURATION`] ticks after `elapsed` is parked in the top level at the
//! slot for `elapsed + MAX_DURATION`. It keeps its true deadline: when that slot comes due, about
//! 795 days later, it is placed again. So it never fires early; it only costs one extra cascade per
//! 795 days of waiting.
//!
//! # Invariants
//!
//! - Every timer with a deadline at or before `elapsed` is in the level-0 slot of `elapsed` (the
//!   "due" slot), and only such timers are there.
//! - Every other timer is in the slot that `level_for` and `slot_for` (in `level.rs`) pick for it
//!   from `elapsed` at the time it was placed; `elapsed` never moves past the start of an occupied
//!   slot without cascading it, so that placement stays correct as time advances.
//! - A slot's `occupied` bit is set exactly when its list is non-empty.

mod level;
mod wheel;

pub use wheel::{TimerKey, Wheel, ENTRY_BYTES};

/// Milliseconds since the server started.
pub type Tick = u64;

/// Bits of a tick that one level resolves: its slots are this digit.
const BITS_PER_LEVEL: usize = 6;

/// Slots per level; 64 so a level's occupancy fits one `u64` bitmap.
const SLOTS: usize = 1 << BITS_PER_LEVEL;

/// Enough levels that the top one spans two years, longer than any timeout the server sets.
const LEVELS: usize = 6;

/// The furthest a deadline can be placed from `elapsed`; farther ones are parked at this distance
/// and placed again when it comes (2^36 - 1 ms, about 795 days).
pub const MAX_DURATION: Tick = (1 << (BITS_PER_LEVEL * LEVELS)) - 1;

/// xorshift64: a seeded, reproducible stream for the tests, without a crate.
#[cfg(test)]
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}
