//! The reactor's invariants, checked by walking everything after every turn in debug builds.
//!
//! What is counted as it changes (connections by state, holds, lent buffer bytes) is recounted
//! here from the structures themselves, and every cross-reference is followed both ways: a
//! connection's timer back to its key, a connection's hold to its topic's list and back, WRITABLE
//! interest to the `Writing` state. A bookkeeping slip fails the first test that reaches it, at
//! the turn where it happened, instead of showing later as a wrong figure or a lost answer.
//! The walk is O(connections + holds) per turn: a debug build's price, never paid in release.

use std::collections::HashSet;

use mio::Interest;

use super::Server;
use crate::buffer::BufferPool;
use crate::connection::State;
use crate::stats::ByState;

/// What the reactor keeps only so that it can be checked: the kernel will not say which
/// interest a socket is registered with, so every change is recorded beside the call.
#[derive(Debug, Default)]
pub(super) struct Mirror {
    writable: HashSet<usize>,
}

impl Mirror {
    pub(super) fn interest_changed(&mut self, key: usize, interest: Interest) {
        if interest.is_writable() {
            self.writable.insert(key);
        } else {
            self.writable.remove(&key);
        }
    }

    pub(super) fn freed(&mut self, key: usize) {
        self.writable.remove(&key);
    }
}

impl Server {
    pub(super) fn check_invariants(&self) {
        let mut by_state = ByState::default();
        let (mut holds, mut lent, mut timers) = (0u64, 0usize, 0usize);
        let reaped: HashSet<usize> = self.reap_queue.iter().copied().collect();
        let queued: HashSet<usize> = self.flush_queue.iter().copied().collect();
        for (key, conn) in &self.connections {
            match conn.state {
                State::Reading => by_state.reading += 1,
                State::Idle => by_state.idle += 1,
                State::Writing => by_state.writing += 1,
                State::Held => by_state.held += 1,
                State::Closing => by_state.closing += 1,
                State::Closed => {
                    assert!(reaped.contains(&key), "closed {key} is not queued for reap");
                    assert!(conn.timer.is_none() && conn.buffers.is_none() && conn.held().is_none(), "closed {key}");
                    continue;
                }
            }
            // Invariant 3: one timer, armed for this very connection.
            let timer = conn.timer.unwrap_or_else(|| panic!("{key} in {:?} has no timer", conn.state));
            assert_eq!(self.wheel.get(timer), Some(&key), "{key}'s timer belongs to another");
            timers += 1;
            // Invariant 4: WRITABLE interest exactly while `Writing`.
            assert_eq!(
                self.invariants.writable.contains(&key),
                conn.state == State::Writing,
                "{key} in {:?}: WRITABLE interest does not follow the state",
                conn.state
            );
            if conn.state == State::Idle {
                assert!(conn.buffers.is_none(), "idle {key} owns buffers");
            }
            if conn.state == State::Held {
                assert!(conn.held().is_some(), "{key} is Held without a poll");
            }
            if let Some(held) = conn.held() {
                holds += 1;
                let listed = self.holds.topics.holds(held.hold, key);
                assert!(listed || queued.contains(&key), "{key}'s poll is neither listed nor woken");
                if conn.state == State::Held && listed {
                    assert_eq!(self.wheel.deadline(timer), Some(held.deadline), "{key}'s timer is not its hold");
                }
            }
            lent += conn.buffers.as_deref().map_or(0, BufferPool::accounted);
        }
        assert_eq!(by_state, self.costs.by_state, "connections by state drifted from a recount");
        assert_eq!(holds, self.costs.polls.held, "polls.held drifted from a recount");
        for (hold, key) in self.holds.topics.held_polls() {
            let conn = self.connections.get(key).unwrap_or_else(|| panic!("topic lists a freed {key}"));
            assert_eq!(conn.held().map(|h| h.hold), Some(hold), "topic lists {key}, which holds another poll");
        }
        assert_eq!(lent, self.pool.lent_bytes(), "lent buffer bytes drifted from a recount");
        assert!(self.wheel.len() >= timers, "fewer timers armed than connections hold");
    }
}
