//! The command thread: the one owner of the link's state, and the only caller of the sink.
//!
//! ```text
//!              connect fails: retry after the backoff
//!              ┌─────┐
//!              v     │
//!   start ──> Down ──┴── connected, scripts loaded ──> Connected ── subscribed: sync, Synced ──> Up
//!             ^  ^                                     │    ^                                  │
//!             │  └────────── the sync fails ───────────┘    └── subscription lost, or a hole ──┤
//!             │                                                 in the notices: Lost           │
//!             └──────────────────── a command fails: Lost, its batch Refused ──────────────────┘
//! ```
//!
//! Invariants:
//! - Inputs (publishes from `RedisLog::publish`, and what the subscription thread hears) are
//!   handled one at a time in the order they were queued; this thread alone touches the link's
//!   state and calls the sink, so reports need no lock and come in one order.
//! - Every publish gets exactly one outcome: `Acked`, or `Refused` when it cannot be stored
//!   (not `Up`, or a topic name `pubsub::valid_topic_name` refuses) or when the connection
//!   failed before its reply (its fate unknown).
//! - `Synced` is reported only after the subscription is confirmed and then the sync read
//!   everything, so no append is missed between the two; every `Lost` is followed, once the
//!   link is back, by a `Synced` that supersedes everything before it.
//! - Notices heard while not `Up` are dropped: the next sync covers them.
//! - `status()` says up only after the sink has had the `Synced`.
//! - Pipelines of publishes are in flight only while `Up`, at most `PIPELINES_IN_FLIGHT`; their
//!   outcomes are reported as their replies are read. Before the link leaves `Up` every one is
//!   settled (the connection is good: its replies are read) or refused (it failed).
//! - The thread never sleeps while inputs wait, except on Redis (bounded by `store`'s
//!   deadlines) and in `Down`, where it waits for the next attempt but still refuses every
//!   publish as it arrives.

use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use redis::ConnectionInfo;

use super::notice;
use super::store::{Layout, Outcome, Publish, Store};
use super::timeline::{Life, Timeline, Verdict};
use super::{Report, Shared, Sink, RECONNECT_CAP};
use crate::backoff::{Backoff, XorShift};
use crate::pubsub::valid_topic_name;

/// At most this many publishes go into one pipeline.
const MAX_BATCH: usize = 1024;
/// At most this many pipelines are written and not yet answered. With one, Redis would wait
/// while this thread reports a pipeline's outcomes and fills the next one, and this thread
/// would wait while Redis runs it; with two, each works while the other does.
const PIPELINES_IN_FLIGHT: usize = 2;
/// At most this many inputs are taken while filling one batch, notices included.
const MAX_DRAIN: usize = 4 * MAX_BATCH;
/// How much longer than `--topic-idle-timeout` a topic must be unheard of before it is
/// forgotten, for the lag between Redis expiring it and this thread hearing its last notice.
const FORGET_SLACK: Duration = Duration::from_secs(1);

/// What the command thread is told.
#[derive(Debug)]
pub enum Input {
    Publish(Publish),
    /// The subscription is confirmed: every notice from here on will arrive.
    Subscribed,
    /// One message from the news channel.
    Notice(Vec<u8>),
    /// The subscription announced earlier ended.
    Unsubscribed {
        reason: String,
    },
    /// `RedisLog` was dropped: finish what is queued before this and return.
    Stop,
}

/// The link, as far as publishing goes.
enum Link {
    /// No command connection; the next attempt is at `retry_at`.
    Down { retry_at: Instant },
    /// A command connection, but no sync yet since the link was lost (or the subscription is
    /// not confirmed yet): publishes are refused.
    Connected { store: Store },
    /// Synced: publishes go to Redis and notices are reported.
    Up { store: Store, timeline: Timeline, sweep_at: Instant },
}

pub struct CommandThread {
    link: Link,
    subscribed: bool,
    inputs: Receiver<Input>,
    sink: Sink,
    shared: Arc<Shared>,
    info: ConnectionInfo,
    layout: Layout,
    backoff: Backoff,
    seeds: XorShift,
}

impl CommandThread {
    pub fn new(
        info: ConnectionInfo,
        layout: Layout,
        inputs: Receiver<Input>,
        sink: Sink,
        shared: Arc<Shared>,
        seed: u64,
    ) -> CommandThread {
        CommandThread {
            link: Link::Down { retry_at: Instant::now() },
            subscribed: false,
            inputs,
            sink,
            shared,
            info,
            layout,
            backoff: Backoff::capped(RECONNECT_CAP),
            seeds: XorShift::new(seed),
        }
    }

    /// Handles inputs until `Stop`, or until every sender is gone. While pipelines are in
    /// flight, an input queued is taken first (a publish may go out before the replies are
    /// read); with none queued, the oldest pipeline's replies are read. A deadline that has
    /// passed is met first, so that a steady stream of inputs cannot put it off.
    pub fn run(mut self) {
        loop {
            let deadline = match &self.link {
                Link::Down { retry_at } => Some(*retry_at),
                Link::Connected { .. } => None,
                Link::Up { sweep_at, .. } => Some(*sweep_at),
            };
            if deadline.is_some_and(|at| at <= Instant::now()) {
                self.on_deadline();
                continue;
            }
            let input = if self.in_flight() > 0 {
                match self.inputs.try_recv() {
                    Ok(input) => Ok(input),
                    Err(TryRecvError::Empty) => {
                        self.settle_oldest();
                        continue;
                    }
                    Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
                }
            } else {
                match deadline {
                    None => self.inputs.recv().map_err(|_| RecvTimeoutError::Disconnected),
                    Some(at) => self.inputs.recv_timeout(at.saturating_duration_since(Instant::now())),
                }
            };
            let mut next = match input {
                Ok(input) => Some(input),
                Err(RecvTimeoutError::Timeout) => None, // met at the top
                Err(RecvTimeoutError::Disconnected) => {
                    self.settle_all();
                    return;
                }
            };
            // Filling a batch may stop at an input that is not a publish; it is next.
            while let Some(input) = next.take() {
                next = match input {
                    Input::Publish(first) => self.publish(first),
                    Input::Notice(payload) => {
                        self.hear(&payload);
                        None
                    }
                    Input::Subscribed => {
                        self.subscribed = true;
                        self.sync_again("subscribed again");
                        None
                    }
                    Input::Unsubscribed { reason } => {
                        self.subscribed = false;
                        self.lose(&format!("subscription lost: {reason}"));
                        None
                    }
                    Input::Stop => {
                        self.settle_all();
                        return;
                    }
                };
            }
        }
    }

    fn on_deadline(&mut self) {
        let quiet = self.layout_idle() + FORGET_SLACK;
        match &mut self.link {
            Link::Down { .. } => self.connect(),
            Link::Connected { .. } => {}
            Link::Up { timeline, sweep_at, .. } => {
                let forgotten = timeline.forget_quiet(Instant::now(), quiet);
                debug!(
                    "redis: forgot {forgotten} quiet topics; {} followed, {} awaiting their read mark",
                    timeline.len(),
                    timeline.awaiting_marks()
                );
                *sweep_at = Instant::now() + quiet;
            }
        }
    }

    fn layout_idle(&self) -> Duration {
        Duration::from_millis(self.layout.idle_ms)
    }

    /// Down -> Connected (then Up if the subscription is ready), or a later attempt.
    fn connect(&mut self) {
        match Store::connect(&self.info, self.seeds.next_u64()) {
            Ok(store) => {
                debug!("redis: command connection up");
                self.link = Link::Connected { store };
                self.sync_if_ready();
            }
            Err(error) => self.retry_later(&error.to_string()),
        }
    }

    fn retry_later(&mut self, reason: &str) {
        let attempts = self.shared.count_failed_attempt();
        let delay = self.backoff.next_delay();
        if attempts == 1 {
            warn!("redis: cannot reach Redis ({reason}); retrying");
        } else {
            debug!("redis: attempt {attempts} failed ({reason}); next in {delay:?}");
        }
        self.link = Link::Down { retry_at: Instant::now() + delay };
    }

    /// Connected and subscribed: sync, report `Synced`, and serve.
    fn sync_if_ready(&mut self) {
        if !self.subscribed {
            return;
        }
        let Link::Connected { store } = &mut self.link else { return };
        match store.sync(&self.layout) {
            Ok(snapshot) => {
                let lives = snapshot.reads.iter().map(|(topic, log)| {
                    (topic.clone(), log.as_ref().map(|log| Life { epoch: log.epoch.clone(), last_seq: log.last_seq }))
                });
                let timeline = Timeline::new(&snapshot.sync, lives);
                let topics: Vec<_> = snapshot.reads.into_iter().filter_map(|(_, log)| log).collect();
                let Link::Connected { store } =
                    std::mem::replace(&mut self.link, Link::Down { retry_at: Instant::now() })
                else {
                    unreachable!("matched above")
                };
                info!("redis: synced {} topics", topics.len());
                self.link = Link::Up { store, timeline, sweep_at: Instant::now() + self.layout_idle() + FORGET_SLACK };
                self.backoff.reset();
                // Reported before the status says up: whoever reads `Up` (/stats) can count on
                // the log being in step, and publishes being taken.
                (self.sink)(Report::Synced { topics });
                self.shared.set_up();
            }
            Err(error) => self.fail(&format!("sync failed: {error}")),
        }
    }

    /// Up -> Connected -> Up: what this process has may be wrong; report `Lost` and sync again
    /// on the same connections.
    fn sync_again(&mut self, reason: &str) {
        self.lose(reason);
        self.sync_if_ready();
    }

    /// Up -> Connected: the subscription ended (or the notices showed a hole). The publishes
    /// in flight are settled first: the command connection is still good.
    fn lose(&mut self, reason: &str) {
        self.settle_all();
        if let Link::Up { .. } = self.link {
            let Link::Up { store, .. } = std::mem::replace(&mut self.link, Link::Down { retry_at: Instant::now() })
            else {
                unreachable!("matched above")
            };
            self.link = Link::Connected { store };
            self.report_lost(reason);
        }
    }

    /// Any state -> Down: the command connection failed, and the fate of the publishes in
    /// flight with it is unknown: refused (their notices or the next sync will say).
    fn fail(&mut self, reason: &str) {
        let abandoned = match &mut self.link {
            Link::Up { store, .. } | Link::Connected { store } => store.abandon(),
            Link::Down { .. } => Vec::new(),
        };
        self.refuse(&abandoned);
        if let Link::Up { .. } = self.link {
            self.report_lost(reason);
        }
        self.retry_later(reason);
    }

    fn report_lost(&mut self, reason: &str) {
        warn!("redis: link lost: {reason}");
        self.shared.set_down();
        (self.sink)(Report::Lost { reason: reason.to_string() });
    }

    /// One notice from the subscription.
    fn hear(&mut self, payload: &[u8]) {
        let Link::Up { timeline, .. } = &mut self.link else { return };
        let notice = match notice::decode(payload) {
            Ok(notice) => notice,
            Err(error) => {
                warn!("redis: a notice with {error} ignored ({} bytes)", payload.len());
                return;
            }
        };
        match timeline.observe(notice, Instant::now()) {
            Verdict::Deliver(report) => {
                self.shared.count_appended();
                (self.sink)(report);
            }
            Verdict::Skip => {}
            Verdict::Resync(reason) => self.sync_again(&reason),
        }
    }

    /// Fills a batch with the publishes queued behind `first` (hearing the notices met on the
    /// way), writes it as one pipeline (first reading the oldest one's replies if
    /// `PIPELINES_IN_FLIGHT` are out), and returns the input that ended the filling, if any.
    fn publish(&mut self, first: Publish) -> Option<Input> {
        let mut batch = vec![first];
        let mut stopped_at = None;
        for _ in 0..MAX_DRAIN {
            if batch.len() == MAX_BATCH {
                break;
            }
            match self.inputs.try_recv() {
                Ok(Input::Publish(publish)) => batch.push(publish),
                Ok(Input::Notice(payload)) => self.hear(&payload),
                Ok(other) => {
                    stopped_at = Some(other);
                    break;
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        self.shared.taken(&batch);
        // A name the topic table refuses would make malformed keys and notices.
        let (batch, malformed): (Vec<Publish>, Vec<Publish>) =
            batch.into_iter().partition(|publish| valid_topic_name(&publish.topic));
        self.refuse(&malformed);
        if batch.is_empty() {
            return stopped_at;
        }
        // A rerun after NOSCRIPT may have put one more in flight.
        while self.in_flight() >= PIPELINES_IN_FLIGHT {
            self.settle_oldest();
        }
        let Link::Up { store, .. } = &mut self.link else {
            self.refuse(&batch);
            return stopped_at;
        };
        if let Err(error) = store.send(batch, &self.layout) {
            self.fail(&format!("publish failed: {error}"));
        }
        stopped_at
    }

    fn in_flight(&self) -> usize {
        match &self.link {
            Link::Up { store, .. } => store.in_flight(),
            _ => 0,
        }
    }

    /// Reads the replies to the oldest pipeline in flight and reports its outcomes.
    fn settle_oldest(&mut self) {
        let Link::Up { store, .. } = &mut self.link else { return };
        let mut settled = Vec::new();
        let received = store.receive(&self.layout, &mut settled);
        for (publish, outcome) in settled {
            match outcome {
                Outcome::Acked { epoch, seq } => {
                    self.shared.count_acked();
                    (self.sink)(Report::Acked { ticket: publish.ticket, epoch, seq });
                }
                Outcome::Refused => self.refuse(std::slice::from_ref(&publish)),
            }
        }
        if let Err(error) = received {
            // Some of what is in flight may be in Redis: its notices or the next sync will say.
            self.fail(&format!("publish failed: {error}"));
        }
    }

    fn settle_all(&mut self) {
        while self.in_flight() > 0 {
            self.settle_oldest();
        }
    }

    fn refuse(&self, batch: &[Publish]) {
        for publish in batch {
            self.shared.count_refused();
            (self.sink)(Report::Refused { ticket: publish.ticket });
        }
    }
}
