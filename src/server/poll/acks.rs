//! Publishes that wait for the backplane (`--redis`). A publish is acknowledged only once Redis
//! has stored it, which takes a round trip the reactor must not wait for: the publish's
//! connection waits instead, as a held poll does, on `HoldKey::ack(n)`, and the acknowledgment
//! comes back through the worker's inbox, naming the publish by its ticket.
//!
//! Invariants:
//! - A waiting publish is in its connection's state (`Conversation::Holding`) and here, from the
//!   request until its answer or its client's hang-up; its outcome arrives at most once.
//! - A ticket names one waiting publish of one worker for good: its slot and the slot's
//!   generation, so an outcome that arrives after its publish was answered (at the deadline, or
//!   a drain) or abandoned finds no one, never the next publish in the same slot.
//! - Answered `200` only with the seq Redis gave; without one (refused, or no answer by the
//!   deadline) `503` with `Retry-After`: the client retries, so a message may be stored twice
//!   but an acknowledged one is never lost (docs/scale-out.md).

use std::fmt::Write;

use slab::Slab;

use crate::json;
use crate::server::service::Service;

/// How a publish's wait for Redis ended: its seq, or refused.
pub(in crate::server) type Outcome = Option<u64>;

#[derive(Debug)]
struct Waiting {
    key: usize,
    generation: u16,
    topic: Box<str>,
    outcome: Option<Outcome>,
}

/// The publishes of this worker waiting for Redis.
#[derive(Debug, Default)]
pub(in crate::server) struct Acks {
    waiting: Slab<Waiting>,
    generation: u16,
}

/// What a ticket carries: the worker in the top 16 bits (`shared_log::ticket_worker`: whose
/// inbox its outcome goes to), the generation and the slot.
pub(in crate::server) fn ticket(worker: usize, generation: u16, n: u32) -> u64 {
    ((worker as u64) << 48) | (u64::from(generation) << 32) | u64::from(n)
}

impl Acks {
    /// Connection `key`'s publish to `topic` waits: its number and generation.
    fn wait(&mut self, key: usize, topic: &str) -> (u32, u16) {
        self.generation = self.generation.wrapping_add(1);
        let generation = self.generation;
        let n = self.waiting.insert(Waiting { key, generation, topic: topic.into(), outcome: None });
        (u32::try_from(n).unwrap_or(u32::MAX), generation)
    }

    fn get(&self, n: u32, key: usize) -> Option<&Waiting> {
        self.waiting.get(n as usize).filter(|waiting| waiting.key == key)
    }

    fn take(&mut self, n: u32, key: usize) -> Option<Waiting> {
        self.get(n, key)?;
        self.waiting.try_remove(n as usize)
    }

    pub(in crate::server) fn len(&self) -> usize {
        self.waiting.len()
    }
}

impl Service {
    /// Connection `key`'s publish to `topic` is to wait for Redis: its number and its ticket.
    pub(in crate::server) fn await_ack(&mut self, key: usize, topic: &str, worker: usize) -> (u32, u64) {
        let (n, generation) = self.acks.wait(key, topic);
        (n, ticket(worker, generation, n))
    }

    /// Redis answered publish `ticket`: its connection is woken to answer, if it still waits.
    pub(in crate::server) fn settle(&mut self, ticket: u64, outcome: Outcome) {
        let (generation, n) = ((ticket >> 32) as u16, ticket as u32);
        let Some(waiting) = self.acks.waiting.get_mut(n as usize) else {
            return;
        };
        if waiting.generation == generation && waiting.outcome.is_none() {
            waiting.outcome = Some(outcome);
            self.woken.push(waiting.key);
        }
    }

    /// Whether publish `n` of connection `key` still waits for Redis.
    pub(in crate::server) fn awaits_ack(&self, n: u32, key: usize) -> bool {
        self.acks.get(n, key).is_some_and(|waiting| waiting.outcome.is_none())
    }

    /// The answer of publish `n`, now due: `true` with the body of its `200` in `self.body`, or
    /// `false` for a `503`.
    pub(in crate::server) fn ack_answer(&mut self, n: u32, key: usize) -> bool {
        let Some(Waiting { topic, outcome: Some(Some(seq)), .. }) = self.acks.take(n, key) else {
            self.backplane_refused += 1;
            return false;
        };
        // The waiters this worker woke for it are counted when its news arrives, maybe after.
        self.body.push_str("{\"topic\":");
        json::push_string(&mut self.body, &topic);
        let _ = writeln!(self.body, ",\"seq\":{seq},\"woken\":0}}");
        true
    }

    /// Publish `n` of connection `key` waits no more (refused at once, or its client left):
    /// whatever Redis says of it is for no one.
    pub(in crate::server) fn drop_ack(&mut self, n: u32, key: usize) {
        self.acks.take(n, key);
    }
}
