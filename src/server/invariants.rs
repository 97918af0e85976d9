//! The reactor's invariants, checked by walking everything after every turn in debug builds.
//!
//! What is counted as it changes (connections by state, holds, lent buffer bytes) is recounted
//! here from the structures themselves, and every cross-reference is followed both ways: a
//! connection's timer back to its key, a connection's hold to its topic's list and back (through
//! its subscription, for a wait on several topics), WRITABLE interest to the `Writing` state. A
//! bookkeeping slip fails the first test that reaches it, at the turn where it happened, instead
//! of showing later as a wrong figure or a lost answer.
//! The walk is O(connections + holds) per turn: a debug build's price, never paid in release.

use std::collections::HashSet;

use mio::Interest;

use super::Server;
use crate::buffer::BufferPool;
use crate::connection::{Connection, Endpoints, State, StateKind};
use crate::pubsub::{HoldKey, HoldOn};
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
        let (mut holds, mut streams, mut sockets, mut lent, mut timers) = (0u64, 0u64, 0u64, 0usize, 0usize);
        let (mut subscriptions, mut acks) = (0, 0u64);
        let reaped: HashSet<usize> = self.reap_queue.iter().copied().collect();
        let queued: HashSet<usize> = self.flush_queue.iter().copied().collect();
        for (key, slot) in &self.connections {
            let (conn, kind) = (&slot.conn, slot.conn.kind());
            if kind == StateKind::Closed {
                assert!(reaped.contains(&key), "closed {key} is not queued for reap");
                assert!(slot.timer.is_none() && conn.buffers().is_none() && conn.held().is_none(), "closed {key}");
                continue;
            }
            by_state.count(kind, 1);
            // Invariant 3: one timer, armed for this very connection; only a connection whose
            // timer fired and whose answer waits in the flush queue may be without one.
            match slot.timer {
                Some(timer) => {
                    assert_eq!(self.wheel.get(timer), Some(&key), "{key}'s timer belongs to another");
                    timers += 1;
                    if let State::Held(poll) = conn.state() {
                        assert_eq!(
                            self.wheel.deadline(timer),
                            Some(poll.wait.deadline),
                            "{key}'s timer is not its hold"
                        );
                    }
                }
                None => assert!(queued.contains(&key), "{key} in {kind:?} has no timer and is not queued"),
            }
            // Invariant 4: WRITABLE interest exactly while `Writing`.
            assert_eq!(
                self.invariants.writable.contains(&key),
                kind == StateKind::Writing,
                "{key} in {kind:?}: WRITABLE interest does not follow the state"
            );
            if kind == StateKind::Idle {
                assert!(conn.buffers().is_none(), "idle {key} owns buffers");
            }
            streams += u64::from(conn.stream().is_some());
            sockets += u64::from(conn.socket().is_some());
            if let Some(poll) = conn.held() {
                // A publish waiting for Redis is held too, but is no poll.
                holds += u64::from(!matches!(poll.wait.hold.on(), HoldOn::Ack(_)));
                let listed = self.service.still_waiting(key, poll.wait.hold);
                assert!(listed || queued.contains(&key), "{key}'s poll is neither listed nor woken");
            }
            acks += u64::from(matches!(conn.held().map(|poll| poll.wait.hold.on()), Some(HoldOn::Ack(_))));
            if let Some(HoldOn::Many(n)) = waits_on(&slot.conn).map(|hold| hold.on()) {
                subscriptions += 1;
                assert_eq!(self.service.subscriptions.holder(n), Some(key), "{key} waits on another's subscription");
            }
            lent += conn.buffers().map_or(0, BufferPool::accounted);
        }
        let costs = &self.service.costs;
        assert_eq!(by_state, costs.by_state, "connections by state drifted from a recount");
        assert_eq!(holds, costs.polls.held, "polls.held drifted from a recount");
        assert_eq!(streams, costs.streams_open, "streams.open drifted from a recount");
        assert_eq!(sockets, costs.sockets_open, "sockets.open drifted from a recount");
        assert_eq!(subscriptions, self.service.subscriptions.len(), "a subscription outlived its wait");
        assert_eq!(acks, self.service.acks.len() as u64, "a publish's wait for Redis outlived its connection's");
        for (hold, key) in self.service.topics.held_polls() {
            let slot = self.connections.get(key).unwrap_or_else(|| panic!("topic lists a freed {key}"));
            let listed_by_its_wait = waits_on(&slot.conn).is_some_and(|waits| match waits.on() {
                HoldOn::One(_) => waits == hold,
                HoldOn::Many(n) => self.service.subscriptions.has(n, hold),
                HoldOn::Nowhere | HoldOn::Ack(_) => false,
            });
            assert!(listed_by_its_wait, "topic lists {key}, which waits on something else");
        }
        assert_eq!(lent, self.pool.lent_bytes(), "lent buffer bytes drifted from a recount");
        assert!(self.wheel.len() >= timers, "fewer timers armed than connections hold");
    }
}

/// What a connection waits on: its held poll, its topic stream, or its socket's subscription.
fn waits_on(conn: &Connection) -> Option<HoldKey> {
    match (conn.stream(), conn.socket()) {
        (Some(stream), _) if !stream.is_cost_view() => Some(stream.wait.hold),
        (_, Some(socket)) => Some(socket.hold),
        _ => conn.held().map(|poll| poll.wait.hold),
    }
}
