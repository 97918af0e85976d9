//! The shared log: one order of every topic's messages when several reactors serve the same
//! topics (`--workers N`). A publish on any worker is numbered and appended here, once, and
//! handed to every worker's inbox; each worker keeps its own copy of the topics its clients wait
//! on (`pubsub::Topics`), appends from its inbox and wakes its own holds. See docs/scale-out.md.
//!
//! Invariants:
//! - The log is a `Topics` behind one `Mutex`, which is held only to number, append and copy:
//!   never across a system call (a worker's `Waker` is woken after the lock is released) and
//!   never across a turn of any loop.
//! - Every message is sent to every inbox while the lock is held, so each inbox receives every
//!   topic's messages in sequence order, and a copy taken under the lock is followed in its
//!   worker's inbox by exactly the messages after it (earlier ones the worker skips by `seq`).
//! - A worker's copy of a topic counts as a watcher of the topic here: the log forgets a topic
//!   only when no worker keeps a copy and it has been idle for `--topic-idle-timeout`, so a
//!   worker that copies a topic again later gets the same epoch and the messages retained.
//! - Ticks are the same on every worker (the servers share one start), so `now` means the same
//!   instant whichever worker passes it.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use mio::Waker;

use crate::pubsub::{Message, TopicError, TopicLimits, Topics};
use crate::timer::Tick;

/// One message as a worker's inbox receives it: the topic and the life of it it belongs to.
#[derive(Debug, Clone)]
pub struct News {
    pub topic: Arc<str>,
    pub epoch: Arc<str>,
    pub message: Message,
}

/// A topic as the log has it now, for a worker to keep a copy of.
#[derive(Debug)]
pub struct TopicCopy {
    pub epoch: Arc<str>,
    pub last_seq: u64,
    /// The retained messages, oldest first.
    pub messages: Vec<Message>,
}

/// What the cost view says of the topics: those of the log, not of the workers' copies.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogFigures {
    pub topics: u64,
    pub messages: u64,
    pub retained_bytes: u64,
    pub evicted: u64,
    pub forgotten: u64,
}

/// The log and who is told of what is appended to it.
pub struct SharedLog {
    state: Mutex<Log>,
}

struct Log {
    topics: Topics,
    /// One per worker, in worker order: where its news goes, and how it is woken.
    inboxes: Vec<(Sender<News>, Arc<Waker>)>,
}

impl SharedLog {
    pub fn new(limits: TopicLimits) -> SharedLog {
        SharedLog { state: Mutex::new(Log { topics: Topics::new(limits), inboxes: Vec::new() }) }
    }

    /// Adds a worker, woken by `waker` when news arrives; its number and its inbox.
    pub fn join(&self, waker: Arc<Waker>) -> (usize, Receiver<News>) {
        let (sender, inbox) = mpsc::channel();
        let mut log = self.lock();
        log.inboxes.push((sender, waker));
        (log.inboxes.len() - 1, inbox)
    }

    /// A worker panicked while holding the lock: the log is still whole (every change to it is
    /// made in one call of `Topics`), so the others go on with it.
    fn lock(&self) -> MutexGuard<'_, Log> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `data` to topic `name` on behalf of worker `from`: its sequence number. Every
    /// inbox gets the message, `from`'s included (it reads its own at once), and every other
    /// worker is woken.
    pub fn publish(&self, from: usize, name: &str, data: &str, now: Tick) -> Result<u64, TopicError> {
        // Escaped outside the lock: that is the part of a publish that grows with the message.
        let unnumbered = Message::new(0, data);
        let mut log = self.lock();
        let topic = log.topics.get_or_create(name, now)?;
        let message = Message { seq: log.topics.last_seq(topic) + 1, ..unnumbered };
        let seq = message.seq;
        log.topics.append(topic, message.clone(), now);
        let (topic, epoch) = log.topics.shared_names(topic);
        let news = News { topic, epoch, message };
        for (inbox, _) in &log.inboxes {
            // A worker that has stopped has dropped its inbox; nobody is left to tell.
            let _ = inbox.send(news.clone());
        }
        let others = log.inboxes.iter().enumerate().filter(|&(worker, _)| worker != from);
        let wakers: Vec<Arc<Waker>> = others.map(|(_, (_, waker))| waker.clone()).collect();
        drop(log);
        // After the lock: waking is a write to each worker's eventfd.
        for waker in wakers {
            if let Err(e) = waker.wake() {
                log::warn!("cannot wake a worker: {e}");
            }
        }
        Ok(seq)
    }

    /// A copy of topic `name` for a worker whose client waits on it, creating the topic if it is
    /// new; the worker then keeps it (`drop_copy` when it forgets it).
    pub fn copy(&self, name: &str, now: Tick) -> Result<TopicCopy, TopicError> {
        let mut log = self.lock();
        let topic = log.topics.get_or_create(name, now)?;
        log.topics.watch(topic);
        let (_, epoch) = log.topics.shared_names(topic);
        let messages = log.topics.messages(topic).cloned().collect();
        Ok(TopicCopy { epoch, last_seq: log.topics.last_seq(topic), messages })
    }

    /// A worker forgot its copy of topic `name`: the topic's idle time here starts if no other
    /// worker keeps one.
    pub fn drop_copy(&self, name: &str, now: Tick) {
        let mut log = self.lock();
        if let Some(topic) = log.topics.find(name) {
            log.topics.unwatch(topic, now);
        }
    }

    /// Forgets the topics no worker keeps that have been idle for `--topic-idle-timeout`.
    pub fn forget_idle(&self, now: Tick) -> usize {
        self.lock().topics.forget_idle(now, |_| {})
    }

    pub fn figures(&self) -> LogFigures {
        let log = self.lock();
        LogFigures {
            topics: log.topics.count() as u64,
            messages: log.topics.retained(),
            retained_bytes: log.topics.retained_bytes() as u64,
            evicted: log.topics.evicted(),
            forgotten: log.topics.forgotten(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> TopicLimits {
        TopicLimits { capacity: 4, max_topics: 10, max_retained_bytes: 1 << 20, idle_timeout: 1_000 }
    }

    /// A log with `workers` joined, and their inboxes (each `Waker` needs a `Poll` to live in).
    fn joined(workers: usize) -> (SharedLog, Vec<Receiver<News>>, Vec<mio::Poll>) {
        let log = SharedLog::new(limits());
        let mut inboxes = Vec::new();
        let mut polls = Vec::new();
        for worker in 0..workers {
            let poll = mio::Poll::new().expect("epoll");
            let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).expect("eventfd"));
            let (number, inbox) = log.join(waker);
            assert_eq!(number, worker);
            inboxes.push(inbox);
            polls.push(poll);
        }
        (log, inboxes, polls)
    }

    fn received(inbox: &Receiver<News>) -> Vec<(String, u64)> {
        inbox.try_iter().map(|news| (news.topic.to_string(), news.message.seq)).collect()
    }

    #[test]
    fn every_inbox_gets_every_message_in_the_logs_order() {
        let (log, inboxes, _polls) = joined(3);
        for (from, topic) in [(0, "a"), (1, "b"), (2, "a"), (1, "a"), (0, "b")] {
            log.publish(from, topic, "x", 0).unwrap();
        }
        let order = [("a", 1), ("b", 1), ("a", 2), ("a", 3), ("b", 2)].map(|(t, seq)| (t.to_string(), seq));
        for inbox in &inboxes {
            assert_eq!(received(inbox), order);
        }
        assert_eq!(log.publish(0, "not a name!", "x", 0), Err(TopicError::BadName));
    }

    /// A copy is the log as it was under the lock; the messages before it, still in the inbox,
    /// are the worker's to skip by seq, and those after follow in order.
    #[test]
    fn a_copy_is_followed_by_the_messages_after_it() {
        let (log, inboxes, _polls) = joined(1);
        for data in ["1", "2", "3", "4", "5"] {
            log.publish(0, "t", data, 0).unwrap();
        }
        let copy = log.copy("t", 0).unwrap();
        assert_eq!(copy.last_seq, 5);
        let seqs: Vec<u64> = copy.messages.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, [2, 3, 4, 5], "the newest --topic-capacity");
        log.publish(0, "t", "6", 0).unwrap();
        let after: Vec<u64> = received(&inboxes[0]).into_iter().map(|(_, seq)| seq).collect();
        assert_eq!(after, [1, 2, 3, 4, 5, 6]);
        assert_eq!(log.copy("t", 0).unwrap().epoch, copy.epoch, "one life of the topic");
    }

    /// While a worker keeps a copy the topic is watched here; once the last copy is dropped its
    /// idle time starts, and a copy taken before then gets the same life and messages.
    #[test]
    fn the_log_forgets_a_topic_only_when_no_worker_keeps_a_copy() {
        let (log, _inboxes, _polls) = joined(2);
        log.publish(0, "t", "kept", 0).unwrap();
        let first = log.copy("t", 0).unwrap();
        let second = log.copy("t", 10).unwrap();
        assert_eq!(log.forget_idle(50_000), 0, "two copies kept");
        log.drop_copy("t", 50_000);
        assert_eq!(log.forget_idle(60_000), 0, "one copy kept");
        let again = log.copy("t", 60_000).unwrap();
        assert_eq!((again.epoch.clone(), again.last_seq, again.messages.len()), (first.epoch.clone(), 1, 1));
        log.drop_copy("t", 60_000);
        log.drop_copy("t", 60_000);
        assert_eq!(log.forget_idle(60_999), 0, "idle for less than --topic-idle-timeout");
        assert_eq!(log.forget_idle(61_000), 1);
        assert_ne!(log.copy("t", 61_000).unwrap().epoch, second.epoch, "a new life");
    }
}
