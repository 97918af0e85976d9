//! Where a worker's topics come from. Alone (one worker, no Redis), the worker's `Topics` are
//! the log: a publish appends to them. One of several, or with `--redis`, its `Topics` hold
//! copies: a publish goes to the shared log (`shared_log`; numbered there, or by Redis), and
//! every worker, this one included, appends it to its copy from its inbox and wakes its own
//! holds. A worker copies a topic when a client of its first waits on it, and forgets its copy
//! like any idle topic.
//!
//! Invariants:
//! - Every topic id the service hands out comes from `topic` (a wait) or is found by name, so a
//!   worker with a shared log never numbers a message itself.
//! - A copy takes from the inbox only the message after its newest, of its own epoch: news that
//!   was sent before the copy was taken is skipped, never appended twice.

use std::sync::mpsc::Receiver;
use std::sync::Arc;

use crate::pubsub::{valid_topic_name, TopicError};
use crate::server::service::Service;
use crate::server::workers::Board;
use crate::shared_log::{Accepted, Inbound, News, SharedLog, NO_TICKET};
use crate::timer::Tick;

/// A worker's place among several (or the one worker's, with `--redis`): its number, its inbox
/// in the shared log, and the board it posts its figures on.
pub(in crate::server) struct Member {
    pub(in crate::server) log: Arc<SharedLog>,
    pub(in crate::server) worker: usize,
    pub(in crate::server) inbox: Receiver<Inbound>,
    pub(in crate::server) board: Arc<Board>,
}

/// What became of a publish.
pub(in crate::server) enum Appended {
    /// Appended: its seq, and how many of this worker's waiters it woke.
    Now { seq: u64, woken: usize },
    /// Handed to Redis; the connection waits for the outcome as publish `n` (`acks`).
    Awaiting(u32),
    /// Handed to Redis, and nobody waits for the outcome (a socket's publish).
    Sent,
}

impl Service {
    /// The id of topic `name` for a client to wait on: this worker's topic, created if new (its
    /// copy of the shared log's, taken if it has none yet).
    pub(in crate::server) fn topic(&mut self, name: &str, now: Tick) -> Result<u32, TopicError> {
        if let Some(topic) = self.topics.find(name) {
            return Ok(topic);
        }
        let Some(member) = &self.shared else {
            return self.topics.get_or_create(name, now);
        };
        if !valid_topic_name(name) {
            return Err(TopicError::BadName);
        }
        let copy = member.log.copy(name, now)?;
        let copied = self.topics.insert_copy(name, copy.epoch, copy.last_seq, copy.messages, now);
        if copied.is_err() {
            member.log.drop_copy(name, now);
        }
        copied
    }

    /// Publishes `data` to topic `name` for connection `key`; `answered`: the client expects to
    /// hear the outcome (an HTTP publish, not a socket's).
    pub(in crate::server) fn append_message(
        &mut self,
        key: usize,
        name: &str,
        data: &str,
        answered: bool,
        now: Tick,
    ) -> Result<Appended, TopicError> {
        let Some(member) = &self.shared else {
            let topic = self.topics.get_or_create(name, now)?;
            let seq = self.topics.publish(topic, data, now);
            return Ok(Appended::Now { seq, woken: self.wake(topic, now) });
        };
        if !valid_topic_name(name) {
            return Err(TopicError::BadName);
        }
        let (log, worker) = (member.log.clone(), member.worker);
        // A socket's publish has no answer to wait for: its outcome is for no one.
        let waiting = (answered && log.acknowledges()).then(|| self.await_ack(key, name, worker));
        let ticket = waiting.map_or(NO_TICKET, |(_, ticket)| ticket);
        match log.publish(worker, ticket, name, data, now) {
            Ok(Accepted::Numbered(seq)) => {
                // The inbox holds this message now, behind any sent before it: read them all.
                Ok(Appended::Now { seq, woken: self.take_news(now, Some((name, seq))) })
            }
            Ok(Accepted::Awaiting) => Ok(waiting.map_or(Appended::Sent, |(n, _)| Appended::Awaiting(n))),
            Err(error) => {
                if let Some((n, _)) = waiting {
                    self.drop_ack(n, key);
                }
                self.backplane_refused += u64::from(error == TopicError::Unavailable);
                Err(error)
            }
        }
    }

    /// Takes what the inbox holds: news appended to this worker's copies, whose waiters are
    /// woken, and the outcomes of its publishes. Returns how many the message `mine` (a topic
    /// and a seq) woke.
    pub(in crate::server) fn take_news(&mut self, now: Tick, mine: Option<(&str, u64)>) -> usize {
        let mut woken_by_mine = 0;
        while let Some(inbound) = self.shared.as_ref().and_then(|member| member.inbox.try_recv().ok()) {
            match inbound {
                Inbound::News(news) => {
                    let seq = news.message.seq;
                    let woken = self.take_one(news, now);
                    if mine.is_some_and(|(name, mine)| mine == seq && *woken.0 == *name) {
                        woken_by_mine = woken.1;
                    }
                }
                Inbound::Outcome { ticket, seq } => self.settle(ticket, seq),
            }
        }
        woken_by_mine
    }

    /// One message for this worker's copy of its topic, if it keeps one: its topic, and how
    /// many waiters it woke.
    fn take_one(&mut self, news: News, now: Tick) -> (Arc<str>, usize) {
        let Some(topic) = self.topics.find(&news.topic) else {
            return (news.topic, 0); // nobody here waits on it
        };
        if *self.topics.epoch(topic) != *news.epoch {
            // The topic began a new life (Redis forgot it, and a publish made it again).
            if self.topics.last_seq(topic) == 0 {
                // Every cursor on it is 0, which means the same in every life.
                self.topics.restart(topic, news.epoch.clone(), news.message.seq.saturating_sub(1));
            } else {
                // Its waiters read `reset`; later ones wait on a new copy.
                let woken = self.topics.retire(topic, news.epoch.clone(), news.message.seq, now);
                self.woken.extend(woken);
                if let Some(member) = &self.shared {
                    member.log.drop_copy(&news.topic, now);
                }
                return (news.topic, 0);
            }
        }
        if !self.topics.receive(topic, news.message, now) {
            return (news.topic, 0); // sent before this copy was taken
        }
        let woken = self.wake(topic, now);
        (news.topic, woken)
    }

    /// A waiter of `retired` (a topic whose log began a new life, `Topics::retire`) moves to the
    /// topic of that name now, created if need be: watched instead. `None` if there is none to
    /// be had (at `--max-topics`); it then stays where it was.
    pub(in crate::server) fn move_off_retired(&mut self, retired: u32, now: Tick) -> Option<u32> {
        let name = self.topics.name(retired).to_owned();
        let fresh = self.topic(&name, now).ok()?;
        self.topics.watch(fresh);
        self.topics.unwatch(retired, now);
        Some(fresh)
    }

    /// Forgets this worker's idle topics (and tells the shared log it keeps no copy of them),
    /// then the shared log's own idle topics.
    pub(in crate::server) fn forget_idle_topics(&mut self, now: Tick) -> usize {
        let shared = &self.shared;
        let forgotten = self.topics.forget_idle(now, |name| {
            if let Some(member) = shared {
                member.log.drop_copy(name, now);
            }
        });
        if let Some(member) = shared {
            member.log.forget_idle(now);
        }
        forgotten
    }
}
