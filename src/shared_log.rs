//! The shared log: one order of every topic's messages when several reactors serve the same
//! topics (`--workers N`), or several processes (`--redis`). A publish on any worker is
//! numbered and appended here, once (or, with Redis, numbered by Redis and appended here when
//! Redis reports it), and handed to every worker's inbox; each worker keeps its own copy of the
//! topics its clients wait on (`pubsub::Topics`), appends from its inbox and wakes its own holds.
//! See docs/scale-out.md.
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
//! - Ticks are the same on every worker (the servers share one start, the log's), so `now`
//!   means the same instant whichever worker passes it.
//! - With Redis, the log here follows Redis: only what Redis reported is appended (`take_in`),
//!   in the order the link reports it; an outcome of a publish reaches its worker only once the
//!   log has that message, so its publisher, reading next, finds it.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Instant;

use log::{info, warn};
use mio::Waker;

use crate::pubsub::{Message, TopicError, TopicLimits, Topics};
use crate::redis_log::{LinkStatus, LogSettings, RedisLog, Report, StartError, TopicLog};
use crate::timer::Tick;

/// One message as a worker's inbox receives it: the topic and the life of it it belongs to.
#[derive(Debug, Clone)]
pub struct News {
    pub topic: Arc<str>,
    pub epoch: Arc<str>,
    pub message: Message,
}

/// What arrives in a worker's inbox: a message of any topic, or how one of its own publishes
/// fared in Redis (`--redis`): its seq, or `None`, refused.
#[derive(Debug, Clone)]
pub enum Inbound {
    News(News),
    Outcome { ticket: u64, seq: Option<u64> },
}

/// What became of a publish handed to the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Appended, with this seq.
    Numbered(u64),
    /// Handed to Redis: the outcome comes to the publishing worker's inbox, with its ticket.
    Awaiting,
}

/// The ticket of a publish whose outcome nobody waits for (a WebSocket's).
pub const NO_TICKET: u64 = u64::MAX;

/// A ticket names one waiting publish: its worker in the top 16 bits (whose inbox the outcome
/// goes to), the rest is the worker's own.
pub fn ticket_worker(ticket: u64) -> usize {
    (ticket >> 48) as usize
}

/// A topic as the log has it now, for a worker to keep a copy of.
#[derive(Debug)]
pub struct TopicCopy {
    pub epoch: Arc<str>,
    pub last_seq: u64,
    /// The retained messages, oldest first.
    pub messages: Vec<Message>,
}

/// What the cost view says of the topics (those of the log, not of the workers' copies) and of
/// the link to Redis.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogFigures {
    pub topics: u64,
    pub messages: u64,
    pub retained_bytes: u64,
    pub evicted: u64,
    pub forgotten: u64,
    /// With `--redis`: the link's state and counters.
    pub link: Option<LinkStatus>,
}

/// Where the order of messages comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// This process numbers them.
    Own,
    /// Redis numbers them; `synced`: the log here has been brought up to date with Redis and
    /// is kept so (publishes go, topics Redis has are known here).
    Redis { synced: bool, ever_synced: bool },
}

/// The log and who is told of what is appended to it.
pub struct SharedLog {
    state: Mutex<Log>,
    /// With `--redis`, once started (the link's reports need the log to exist first).
    redis: OnceLock<RedisLog>,
    /// Tick 0 of every worker's clock, and of the link's reports.
    started: Instant,
}

/// One life of a topic: its name and epoch.
type Life = (Arc<str>, Arc<str>);

struct Log {
    topics: Topics,
    source: Source,
    /// One per worker, in worker order: where its news goes, and how it is woken.
    inboxes: Vec<(Sender<Inbound>, Arc<Waker>)>,
    /// Publishes handed to Redis, by ticket: their topic.
    sent: HashMap<u64, Arc<str>>,
    /// Publishes Redis acknowledged before it reported their message appended, by topic and
    /// life: their seq and ticket, in the order Redis acknowledged them (so seqs ascend, and
    /// those due are at the front). Told to their worker once the log has the message, so that
    /// its publisher, reading right after the answer, finds it.
    acked_early: HashMap<Life, VecDeque<(u64, u64)>>,
}

impl SharedLog {
    /// A log kept in this process: it numbers every publish itself.
    pub fn new(limits: TopicLimits) -> SharedLog {
        SharedLog::with_source(limits, Source::Own)
    }

    fn with_source(limits: TopicLimits, source: Source) -> SharedLog {
        SharedLog {
            state: Mutex::new(Log {
                topics: Topics::new(limits),
                source,
                inboxes: Vec::new(),
                sent: HashMap::new(),
                acked_early: HashMap::new(),
            }),
            redis: OnceLock::new(),
            started: Instant::now(),
        }
    }

    /// A log kept in Redis at `url`, of which this one is the process's copy, brought up to
    /// date in the background: until then, publishes and new waits are refused (`Unavailable`).
    pub fn in_redis(limits: TopicLimits, url: &str, settings: LogSettings) -> Result<Arc<SharedLog>, StartError> {
        let source = Source::Redis { synced: false, ever_synced: false };
        let log = Arc::new(SharedLog::with_source(limits, source));
        // Weak: the link lives in the log, and must not keep it alive from its own thread.
        let reports_to: Weak<SharedLog> = Arc::downgrade(&log);
        let sink = Arc::new(move |report: Report| {
            if let Some(log) = reports_to.upgrade() {
                log.report(report);
            }
        });
        let redis = RedisLog::start(url, settings, sink)?;
        info!("topics kept in Redis at {}", redis.endpoint());
        let _ = log.redis.set(redis);
        Ok(log)
    }

    /// The tick of now on every worker's clock (they all count from `started`).
    fn now(&self) -> Tick {
        Tick::try_from(self.started.elapsed().as_millis()).unwrap_or(Tick::MAX)
    }

    /// When tick 0 was: every worker of this log counts its ticks from it.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Adds a worker, woken by `waker` when news arrives; its number and its inbox.
    pub fn join(&self, waker: Arc<Waker>) -> (usize, Receiver<Inbound>) {
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

    /// Whether a publish waits for an acknowledgment (`Accepted::Awaiting`).
    pub fn acknowledges(&self) -> bool {
        self.redis.get().is_some()
    }

    /// Appends `data` to topic `name` on behalf of worker `from`. Kept here: its sequence number;
    /// every inbox gets the message, `from`'s included (it reads its own at once), and every
    /// other worker is woken. In Redis: handed to the link, whose outcome comes back with
    /// `ticket`, unless the link is down.
    pub fn publish(&self, from: usize, ticket: u64, name: &str, data: &str, now: Tick) -> Result<Accepted, TopicError> {
        if let Some(redis) = self.redis.get() {
            let topic: Arc<str> = Arc::from(name);
            let mut log = self.lock();
            if log.source != (Source::Redis { synced: true, ever_synced: true }) {
                return Err(TopicError::Unavailable);
            }
            if ticket != NO_TICKET {
                log.sent.insert(ticket, topic.clone());
            }
            drop(log);
            redis.publish(ticket, &topic, Arc::from(data));
            return Ok(Accepted::Awaiting);
        }
        // Escaped outside the lock: that is the part of a publish that grows with the message.
        let unnumbered = Message::new(0, data);
        let mut log = self.lock();
        let topic = log.topics.get_or_create(name, now)?;
        let message = Message { seq: log.topics.last_seq(topic) + 1, ..unnumbered };
        let seq = message.seq;
        log.topics.append(topic, message.clone(), now);
        let (topic, epoch) = log.topics.shared_names(topic);
        log.tell_everyone(News { topic, epoch, message });
        let wakers = log.wakers(true, Some(from));
        drop(log);
        wake(wakers);
        Ok(Accepted::Numbered(seq))
    }

    /// A copy of topic `name` for a worker whose client waits on it, creating the topic if it is
    /// new; the worker then keeps it (`drop_copy` when it forgets it). With Redis, a topic this
    /// log does not know yet is known to be new only while the log is in step with Redis.
    pub fn copy(&self, name: &str, now: Tick) -> Result<TopicCopy, TopicError> {
        let mut log = self.lock();
        let topic = match (log.topics.find(name), log.source) {
            (Some(topic), Source::Redis { ever_synced: true, .. } | Source::Own) => topic,
            (None, Source::Redis { synced: true, .. } | Source::Own) => log.topics.get_or_create(name, now)?,
            _ => return Err(TopicError::Unavailable),
        };
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
            link: self.redis.get().map(RedisLog::status),
        }
    }

    /// What the link to Redis reports, on its thread: the log brought in step with Redis, or
    /// kept in step, and the outcome of a publish sent to its worker.
    fn report(&self, report: Report) {
        let mut log = self.lock();
        let wakers = match report {
            Report::Synced { topics } => {
                log.source = Source::Redis { synced: true, ever_synced: true };
                info!("in step with Redis: {} topics", topics.len());
                let mut told = false;
                for topic in topics {
                    told |= log.take_in(topic, self.now());
                }
                let mut wakers = log.wakers(told, None);
                let waiting: Vec<Arc<str>> = log.acked_early.keys().map(|(topic, _)| topic.clone()).collect();
                for topic in waiting {
                    wakers.extend(log.tell_acked(&topic));
                }
                wakers
            }
            Report::Lost { reason } => {
                warn!("Redis lost: {reason}; publishes are refused until it is back");
                log.source = Source::Redis { synced: false, ever_synced: true };
                // Their notice may never come on this connection: acknowledged all the same.
                let early: Vec<_> = log.acked_early.drain().flat_map(|(_, acked)| acked).collect();
                let mut wakers = Vec::new();
                for (seq, ticket) in early {
                    wakers.extend(log.tell_worker(ticket, Inbound::Outcome { ticket, seq: Some(seq) }));
                }
                wakers
            }
            Report::Appended { topic, epoch, seq, data } => {
                let appended = TopicLog { name: topic.clone(), epoch, last_seq: seq, messages: vec![(seq, data)] };
                let told = log.take_in(appended, self.now());
                let mut wakers = log.wakers(told, None);
                wakers.extend(log.tell_acked(&topic));
                wakers
            }
            Report::Acked { ticket, epoch, seq } => {
                let Some(topic) = log.sent.remove(&ticket) else {
                    return; // a socket's publish: nobody waits for it
                };
                log.acked_early.entry((topic.clone(), epoch)).or_default().push_back((seq, ticket));
                log.tell_acked(&topic)
            }
            Report::Refused { ticket } => {
                log.sent.remove(&ticket);
                log.tell_worker(ticket, Inbound::Outcome { ticket, seq: None })
            }
        };
        drop(log);
        wake(wakers);
    }
}

impl Log {
    /// Sends `news` to every inbox (a worker that has stopped has dropped its inbox; nobody is
    /// left to tell).
    fn tell_everyone(&self, news: News) {
        for (inbox, _) in &self.inboxes {
            let _ = inbox.send(Inbound::News(news.clone()));
        }
    }

    /// Sends the outcome of publish `ticket` to the worker that made it; its waker.
    fn tell_worker(&self, ticket: u64, outcome: Inbound) -> Vec<Arc<Waker>> {
        let Some((inbox, waker)) = self.inboxes.get(ticket_worker(ticket)) else {
            return Vec::new();
        };
        let _ = inbox.send(outcome);
        vec![waker.clone()]
    }

    /// Tells each worker of its publishes to `topic` acknowledged whose messages the log now
    /// has (behind the news of them in its inbox); their wakers. Only the topic's current life
    /// is looked at, and only its front: a publish acknowledged in another life waits for that
    /// life's notice, or for the link to be lost.
    fn tell_acked(&mut self, topic: &Arc<str>) -> Vec<Arc<Waker>> {
        let Some(found) = self.topics.find(topic) else { return Vec::new() };
        let life = self.topics.shared_names(found);
        let last_seq = self.topics.last_seq(found);
        let Some(acked) = self.acked_early.get_mut(&life) else { return Vec::new() };
        let due = acked.iter().take_while(|&&(seq, _)| seq <= last_seq).count();
        let due: Vec<(u64, u64)> = acked.drain(..due).collect();
        if acked.is_empty() {
            self.acked_early.remove(&life);
        }
        let mut wakers = Vec::new();
        for (seq, ticket) in due {
            wakers.extend(self.tell_worker(ticket, Inbound::Outcome { ticket, seq: Some(seq) }));
        }
        wakers
    }

    /// The wakers of every worker but `except`, if anybody was `told` anything.
    fn wakers(&self, told: bool, except: Option<usize>) -> Vec<Arc<Waker>> {
        let others = self.inboxes.iter().enumerate().filter(|&(worker, _)| told && Some(worker) != except);
        others.map(|(_, (_, waker))| waker.clone()).collect()
    }

    /// Brings a topic in step with what Redis has of it: a new life (another epoch) restarts it
    /// here; messages after ours are appended (a gap first counted as missed) and told to every
    /// worker. Whether any was.
    fn take_in(&mut self, redis: TopicLog, now: Tick) -> bool {
        let before_first = redis.messages.first().map_or(redis.last_seq, |(seq, _)| seq - 1);
        let topic = match self.topics.find(&redis.name) {
            Some(topic) => {
                if *self.topics.epoch(topic) != *redis.epoch {
                    self.topics.restart(topic, redis.epoch.clone(), before_first);
                }
                topic
            }
            None => match self.topics.insert_copy(&redis.name, redis.epoch.clone(), before_first, Vec::new(), now) {
                Ok(topic) => topic,
                Err(error) => {
                    warn!("topic {} from Redis not kept: {error:?}", redis.name);
                    return false;
                }
            },
        };
        let mut told = false;
        for (seq, data) in &redis.messages {
            let message = Message::new(*seq, data);
            if self.topics.receive(topic, message.clone(), now) {
                self.tell_everyone(News { topic: redis.name.clone(), epoch: redis.epoch.clone(), message });
                told = true;
            }
        }
        self.topics.skip_to(topic, redis.last_seq);
        told
    }
}

/// Wakes each worker once, however many things it was told (it drains its whole inbox when
/// woken); after the lock, since waking is a write to its eventfd.
fn wake(wakers: Vec<Arc<Waker>>) {
    let mut woken: Vec<&Arc<Waker>> = Vec::new();
    for waker in &wakers {
        if woken.iter().any(|done| Arc::ptr_eq(done, waker)) {
            continue;
        }
        woken.push(waker);
        if let Err(e) = waker.wake() {
            warn!("cannot wake a worker: {e}");
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
    fn joined(workers: usize) -> (SharedLog, Vec<Receiver<Inbound>>, Vec<mio::Poll>) {
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

    fn received(inbox: &Receiver<Inbound>) -> Vec<(String, u64)> {
        let news = inbox.try_iter().filter_map(|inbound| match inbound {
            Inbound::News(news) => Some(news),
            Inbound::Outcome { .. } => None,
        });
        news.map(|news| (news.topic.to_string(), news.message.seq)).collect()
    }

    #[test]
    fn every_inbox_gets_every_message_in_the_logs_order() {
        let (log, inboxes, _polls) = joined(3);
        for (from, topic) in [(0, "a"), (1, "b"), (2, "a"), (1, "a"), (0, "b")] {
            log.publish(from, 0, topic, "x", 0).unwrap();
        }
        let order = [("a", 1), ("b", 1), ("a", 2), ("a", 3), ("b", 2)].map(|(t, seq)| (t.to_string(), seq));
        for inbox in &inboxes {
            assert_eq!(received(inbox), order);
        }
        assert_eq!(log.publish(0, 0, "not a name!", "x", 0), Err(TopicError::BadName));
        assert_eq!(log.publish(0, 0, "a", "x", 0), Ok(Accepted::Numbered(4)));
    }

    /// A copy is the log as it was under the lock; the messages before it, still in the inbox,
    /// are the worker's to skip by seq, and those after follow in order.
    #[test]
    fn a_copy_is_followed_by_the_messages_after_it() {
        let (log, inboxes, _polls) = joined(1);
        for data in ["1", "2", "3", "4", "5"] {
            log.publish(0, 0, "t", data, 0).unwrap();
        }
        let copy = log.copy("t", 0).unwrap();
        assert_eq!(copy.last_seq, 5);
        let seqs: Vec<u64> = copy.messages.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, [2, 3, 4, 5], "the newest --topic-capacity");
        log.publish(0, 0, "t", "6", 0).unwrap();
        let after: Vec<u64> = received(&inboxes[0]).into_iter().map(|(_, seq)| seq).collect();
        assert_eq!(after, [1, 2, 3, 4, 5, 6]);
        assert_eq!(log.copy("t", 0).unwrap().epoch, copy.epoch, "one life of the topic");
    }

    /// While a worker keeps a copy the topic is watched here; once the last copy is dropped its
    /// idle time starts, and a copy taken before then gets the same life and messages.
    #[test]
    fn the_log_forgets_a_topic_only_when_no_worker_keeps_a_copy() {
        let (log, _inboxes, _polls) = joined(2);
        log.publish(0, 0, "t", "kept", 0).unwrap();
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

    fn outcomes(inbox: &Receiver<Inbound>) -> Vec<(u64, Option<u64>)> {
        let outcomes = inbox.try_iter().filter_map(|inbound| match inbound {
            Inbound::News(_) => None,
            Inbound::Outcome { ticket, seq } => Some((ticket, seq)),
        });
        outcomes.collect()
    }

    /// Read-your-writes with Redis: an acknowledged publish is answered only once the log has
    /// its message, whichever of the ack and the notice comes first; a lost link answers the
    /// rest, acknowledged all the same.
    #[test]
    fn an_acknowledged_publish_is_answered_once_the_log_has_its_message() {
        let (log, inboxes, _polls) = joined(1);
        log.report(Report::Synced { topics: Vec::new() });
        let appended = |seq: u64| Report::Appended { topic: "t".into(), epoch: "e1".into(), seq, data: "x".into() };
        let acked = |ticket: u64, seq: u64| Report::Acked { ticket, epoch: "e1".into(), seq };
        for ticket in [11, 12, 13, 14] {
            log.lock().sent.insert(ticket, Arc::from("t"));
        }
        log.report(acked(11, 1));
        log.report(acked(12, 2));
        log.report(acked(13, 3));
        assert_eq!(outcomes(&inboxes[0]), [], "no message in the log yet");
        log.report(appended(1));
        assert_eq!(outcomes(&inboxes[0]), [(11, Some(1))]);
        log.report(appended(2));
        log.report(appended(3));
        log.report(appended(4));
        assert_eq!(outcomes(&inboxes[0]), [(12, Some(2)), (13, Some(3))]);
        log.report(acked(14, 4));
        assert_eq!(outcomes(&inboxes[0]), [(14, Some(4))], "its notice came first");
        for ticket in [15, 16] {
            log.lock().sent.insert(ticket, Arc::from("t"));
        }
        log.report(acked(15, 5));
        log.report(acked(16, 6));
        log.report(Report::Lost { reason: "test".into() });
        let mut lost = outcomes(&inboxes[0]);
        lost.sort_unstable();
        assert_eq!(lost, [(15, Some(5)), (16, Some(6))]);
        assert!(log.lock().acked_early.is_empty());
    }
}
