//! Where a worker's topics come from. Alone (`--workers 1`), the worker's `Topics` are the log:
//! a publish appends to them. One of several, its `Topics` hold copies: a publish is appended to
//! the shared log (`shared_log`), and every worker, this one included, appends it to its copy
//! from its inbox and wakes its own holds. A worker copies a topic when a client of its first
//! waits on it, and forgets its copy like any idle topic.
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
use crate::shared_log::{News, SharedLog};
use crate::timer::Tick;

/// A worker's place among several: its number, its inbox in the shared log, and the board it
/// posts its figures on.
pub(in crate::server) struct Member {
    pub(in crate::server) log: Arc<SharedLog>,
    pub(in crate::server) worker: usize,
    pub(in crate::server) inbox: Receiver<News>,
    pub(in crate::server) board: Arc<Board>,
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

    /// Publishes `data` to topic `name`: its sequence number and how many of this worker's
    /// waiters it woke.
    pub(in crate::server) fn append_message(
        &mut self,
        name: &str,
        data: &str,
        now: Tick,
    ) -> Result<(u64, usize), TopicError> {
        let Some(member) = &self.shared else {
            let topic = self.topics.get_or_create(name, now)?;
            let seq = self.topics.publish(topic, data, now);
            return Ok((seq, self.wake(topic, now)));
        };
        let seq = member.log.publish(member.worker, name, data, now)?;
        // The inbox holds this message now, behind any sent before it: read them all, in order.
        Ok((seq, self.take_news(now, Some((name, seq)))))
    }

    /// Appends what the inbox holds to this worker's copies and wakes their waiters; how many
    /// the message `mine` (a topic and a seq) woke.
    pub(in crate::server) fn take_news(&mut self, now: Tick, mine: Option<(&str, u64)>) -> usize {
        let mut woken_by_mine = 0;
        while let Some(news) = self.shared.as_ref().and_then(|member| member.inbox.try_recv().ok()) {
            let Some(topic) = self.topics.find(&news.topic) else {
                continue; // nobody here waits on it
            };
            let seq = news.message.seq;
            if *self.topics.epoch(topic) != *news.epoch || seq <= self.topics.last_seq(topic) {
                continue; // sent before this copy was taken
            }
            self.topics.append(topic, news.message, now);
            let woken = self.wake(topic, now);
            if mine == Some((&news.topic, seq)) {
                woken_by_mine = woken;
            }
        }
        woken_by_mine
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
