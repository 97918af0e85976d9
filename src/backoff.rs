//! How long a client waits before trying again: exponential backoff with full jitter.
//!
//! Invariants:
//! - The n-th wait in a row (counting from 0) is uniform in `[0, min(cap, BASE * 2^n)]`, so the
//!   ceiling doubles from 100 ms and stops at the cap (30 s, `CAP`, unless made `capped`), and no
//!   wait ever exceeds the cap.
//! - `reset` after a success starts again from the 100 ms ceiling.
//!
//! Full jitter spreads clients that failed together (a server restart disconnects all of them at
//! once) over the whole window instead of bringing them back in synchronised waves; see
//! `docs/client.md`.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;

/// The first ceiling.
pub const BASE: Duration = Duration::from_millis(100);
/// No ceiling is higher, unless a `capped` backoff says otherwise.
pub const CAP: Duration = Duration::from_secs(30);

/// The wait before each retry of a run of failures.
#[derive(Debug)]
pub struct Backoff {
    /// Failures in a row so far.
    failures: u32,
    /// The highest ceiling.
    cap: Duration,
    rng: XorShift,
}

impl Backoff {
    /// Seeded from the OS's randomness, so that clients started together do not draw the same
    /// waits.
    pub fn new() -> Backoff {
        Backoff::with_seed(RandomState::new().hash_one(std::process::id()))
    }

    /// A reproducible sequence, for tests.
    pub fn with_seed(seed: u64) -> Backoff {
        Backoff { failures: 0, cap: CAP, rng: XorShift::new(seed) }
    }

    /// Ceilings that stop at `cap` instead of `CAP`: for a link that should be back soon after
    /// its server is (src/redis_log/ retries Redis within 5 s).
    pub fn capped(cap: Duration) -> Backoff {
        Backoff { cap: cap.max(BASE), ..Backoff::new() }
    }

    /// The ceiling of the next wait.
    pub fn ceiling(&self) -> Duration {
        // 2^20 * 100 ms is past any cap worth having; the shift cannot overflow.
        BASE.saturating_mul(1 << self.failures.min(20)).min(self.cap)
    }

    /// Counts a failure and returns how long to wait before the next try.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = u64::try_from(self.ceiling().as_micros()).unwrap_or(u64::MAX);
        self.failures = self.failures.saturating_add(1);
        // Modulo bias is negligible against a ceiling of a few times 1e7 microseconds.
        Duration::from_micros(self.rng.next_u64() % (ceiling + 1))
    }

    /// A success: the next failure waits at most `BASE` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

/// Marsaglia's xorshift64: not for secrets, only to spread waits.
#[derive(Debug)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator whose state is `seed`, or a fixed odd value for 0 (which xorshift never leaves).
    pub fn new(seed: u64) -> XorShift {
        XorShift(if seed == 0 { 0x9e37_79b9_7f4a_7c15 } else { seed })
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_from_base_to_cap() {
        let mut backoff = Backoff::with_seed(1);
        let mut ceilings = Vec::new();
        for _ in 0..12 {
            ceilings.push(backoff.ceiling().as_millis());
            backoff.next_delay();
        }
        assert_eq!(ceilings, [100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000]);
        for _ in 0..100 {
            backoff.next_delay();
        }
        assert_eq!(backoff.ceiling(), CAP, "no overflow after many failures");
        backoff.reset();
        assert_eq!(backoff.ceiling(), BASE);
    }

    #[test]
    fn a_capped_backoff_stops_at_its_cap() {
        let mut backoff = Backoff::capped(Duration::from_secs(5));
        let mut ceilings = Vec::new();
        for _ in 0..8 {
            ceilings.push(backoff.ceiling().as_millis());
            assert!(backoff.next_delay() <= Duration::from_secs(5));
        }
        assert_eq!(ceilings, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(Backoff::capped(Duration::ZERO).ceiling(), BASE, "a cap below BASE is BASE");
    }

    #[test]
    fn waits_are_spread_over_the_whole_window() {
        let mut backoff = Backoff::with_seed(42);
        for failures in 0..12 {
            let mut lowest = Duration::MAX;
            let mut highest = Duration::ZERO;
            for _ in 0..200 {
                let ceiling = backoff.ceiling();
                let delay = backoff.next_delay();
                assert!(delay <= ceiling, "{delay:?} > {ceiling:?}");
                lowest = lowest.min(delay);
                highest = highest.max(delay);
                // Stay at this number of failures.
                backoff.failures = failures;
            }
            let ceiling = backoff.ceiling();
            assert!(highest > ceiling.mul_f64(0.9), "{failures}: highest {highest:?} of {ceiling:?}");
            assert!(lowest < ceiling.mul_f64(0.1), "{failures}: lowest {lowest:?} of {ceiling:?}");
        }
    }

    #[test]
    fn generators_differ_by_seed() {
        let draw = |seed| {
            let mut rng = XorShift::new(seed);
            (0..4).map(|_| rng.next_u64()).collect::<Vec<_>>()
        };
        assert_ne!(draw(1), draw(2));
        assert!(draw(0).iter().all(|&x| x != 0), "a zero seed does not stick at zero");
        assert_ne!(Backoff::new().rng.0, Backoff::new().rng.0, "each client draws its own waits");
    }
}
