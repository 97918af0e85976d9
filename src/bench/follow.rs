//! Followers of one topic, and its publisher, on one reactor: the engine of `longpoll` and
//! `realtime`.
//!
//! ```text
//!   publisher   POST /publish/T "message i" at t0 + i * interval, i = 0..M (pipelined if the
//!               server is slow, never delayed by it)
//!   follower    long:  GET /poll/T?cursor=C&epoch=E&timeout=H, again as soon as it is answered
//!               short: GET /poll/T?cursor=C-1&epoch=E at its own slots, every --interval
//! ```
//!
//! A short poll must be answered at once, but tether holds a poll that has nothing new for at
//! least a second (`timeout=` is clamped to 1 s), and a held poll *is* long polling. So a short
//! poll asks from one message before its cursor: the server always has that message, answers at
//! once, and an answer with nothing after the cursor is an empty response. The cost of the
//! trick is the one repeated message in every answer (its bytes are counted; `docs/lab.md`).
//!
//! Invariants:
//! - A follower's token is its index, the publisher's is `PUBLISHER`. A follower's socket is
//!   dropped only in `reap`, after the event batch, so no event of this batch reaches a newer one.
//! - Delivery latency of message i runs from its *scheduled* publish time, not from when the
//!   publish was written: a late publisher or a slow server is charged to the latency instead of
//!   hidden (no coordinated omission).
//! - Each follower expects messages 0, 1, 2, ... in order; anything else (a gap, a repeat, a
//!   `reset`, `missed` > 0) is counted in `errors.delivery`, and so is every message still
//!   missing when the run ends: `delivered + missing = clients x messages`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};
use serde::Deserialize;

use super::conn::{Conn, ConnError};
use super::report::{Errors, Latency, Traffic};

/// The publisher's token, outside the followers' index range.
const PUBLISHER: Token = Token(usize::MAX);
/// Connections started per turn: opening faster than the server accepts overflows its listen
/// backlog and costs each dropped connection a 1 s SYN retransmit.
const CONNECTS_PER_TURN: usize = 256;
/// How long a turn may sleep when nothing is due: the progress bar moves this often.
const TICK: Duration = Duration::from_millis(100);
/// Re-polls written per turn once the answers stop coming (about a millisecond of writes), so
/// that answers still arriving are read between batches.
const ASKS_PER_TURN: usize = 256;
/// epoll sleeps in whole milliseconds, rounded up, so a publish timed by it alone would go out
/// up to a millisecond late, and that lateness would be charged to the server. The loop sleeps
/// until this long before a due time, then polls without sleeping until it comes.
const SPIN: Duration = Duration::from_millis(1);
/// A follower refused with 503 (at `--max-held`) asks again after this.
const RETRY_AFTER: Duration = Duration::from_secs(1);
const EVENTS_CAPACITY: usize = 4096;

/// How followers ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Ask again as soon as answered; the server holds the poll up to `hold`.
    Long { hold: Duration },
    /// Ask every `every`, at slots spread evenly over that period across the followers.
    Short { every: Duration },
}

/// What a run follows.
#[derive(Debug, Clone)]
pub struct Plan {
    pub addr: SocketAddr,
    /// Prefix of the endpoints, and the `Host` header.
    pub base_path: String,
    pub authority: String,
    pub topic: String,
    pub clients: usize,
    pub messages: usize,
    pub interval: Duration,
    pub style: Style,
    /// The sequence number every follower starts after (a message already published).
    pub after: u64,
}

/// What a run measured, for the followers only (the publisher's traffic is the same in every
/// style and is left out).
#[derive(Debug, Default)]
pub struct Followed {
    pub delivered: u64,
    pub latency: Latency,
    pub traffic: Traffic,
    /// Answers that carried nothing new: a short poll too early, a long poll's `timeout`.
    pub empty: u64,
    pub opened: u64,
    pub errors: Errors,
}

/// A poll answer.
#[derive(Deserialize)]
struct Answer {
    status: String,
    epoch: String,
    cursor: u64,
    missed: u64,
    messages: Vec<Message>,
}

#[derive(Deserialize)]
struct Message {
    seq: u64,
    data: String,
}

/// How long `poll` may sleep to wake no later than `due` from now (see `SPIN`).
fn sleep_before(due: Duration) -> Duration {
    due.saturating_sub(SPIN)
}

/// The text of message `index`, and back.
fn message_data(index: usize) -> String {
    format!("message {index}")
}

fn message_index(data: &str) -> Option<usize> {
    data.strip_prefix("message ")?.parse().ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not started yet (connections open a batch per turn).
    Idle,
    /// A poll is written or queued; its answer is due.
    Asking,
    /// Short polling: waiting for its next slot (in `due`).
    Waiting,
    /// Long polling: answered; its next poll waits in `ask_queue` until the answers stop
    /// coming (see `turn`).
    Answered,
    /// The connection ended this turn; `reap` drops it and the follower asks again.
    Closed,
}

struct Follower {
    conn: Option<Conn>,
    phase: Phase,
    /// The last sequence number seen.
    cursor: u64,
    epoch: Option<String>,
    /// The index of the next message expected.
    next: usize,
    /// Short polling: the slot of the next poll.
    slot: Instant,
}

pub struct Follow {
    poll: Poll,
    plan: Plan,
    followers: Vec<Follower>,
    publisher: Conn,
    /// Scheduled publish times, set by `start`; `publish_next` indexes the next one to write.
    schedule: Vec<Instant>,
    publish_next: usize,
    /// Followers started so far (they open in batches).
    started: usize,
    /// (when, follower) for short polls waiting for their slot and refused polls retrying.
    due: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Long polling: answered followers whose next polls wait until a poll finds no more
    /// answers to read.
    ask_queue: Vec<usize>,
    reap_queue: Vec<usize>,
    complete: usize,
    out: Followed,
    events: Events,
}

impl Follow {
    /// Connects the publisher; followers open with `turn`, a batch at a time.
    ///
    /// # Errors
    ///
    /// When the poll or the publisher's connection cannot be made.
    pub fn new(plan: Plan) -> Result<Follow, String> {
        let poll = Poll::new().map_err(|e| format!("cannot create a poll: {e}"))?;
        let publisher = Conn::open(poll.registry(), plan.addr, PUBLISHER).map_err(|e| format!("publisher: {e}"))?;
        let now = Instant::now();
        let followers = (0..plan.clients)
            .map(|_| Follower { conn: None, phase: Phase::Idle, cursor: plan.after, epoch: None, next: 0, slot: now })
            .collect();
        Ok(Follow {
            poll,
            followers,
            publisher,
            schedule: Vec::new(),
            publish_next: 0,
            started: 0,
            due: BinaryHeap::new(),
            ask_queue: Vec::new(),
            reap_queue: Vec::new(),
            complete: if plan.messages == 0 { plan.clients } else { 0 },
            out: Followed::default(),
            events: Events::with_capacity(EVENTS_CAPACITY),
            plan,
        })
    }

    pub fn clients(&self) -> usize {
        self.followers.len()
    }

    /// Every follower has a connection and its first poll is out or scheduled.
    pub fn all_started(&self) -> bool {
        self.started == self.followers.len()
    }

    pub fn connected(&self) -> usize {
        self.followers.iter().filter(|f| f.conn.as_ref().is_some_and(Conn::is_connected)).count()
    }

    /// Every follower has every message, and has asked again after its last answer.
    pub fn all_delivered(&self) -> bool {
        self.complete == self.followers.len() && self.ask_queue.is_empty()
    }

    pub fn published(&self) -> usize {
        self.publish_next
    }

    /// Schedules the M publishes, the first at `first`.
    pub fn start(&mut self, first: Instant) {
        self.schedule = (0..self.plan.messages).map(|i| first + self.plan.interval * i as u32).collect();
    }

    /// The scheduled time of the last publish (`None` before `start`).
    pub fn last_publish(&self) -> Option<Instant> {
        self.schedule.last().copied()
    }

    /// One turn of the loop, sleeping at most `max_wait`: start followers, poll, dispatch,
    /// write due publishes and polls, reap.
    ///
    /// # Errors
    ///
    /// When the poll fails or the publisher's connection does: without it nothing is measured.
    pub fn turn(&mut self, max_wait: Duration) -> Result<(), String> {
        self.start_followers()?;
        let now = Instant::now();
        let mut wake = now + max_wait.min(TICK);
        if let Some(&at) = self.schedule.get(self.publish_next) {
            wake = wake.min(at);
        }
        if let Some(Reverse((at, _))) = self.due.peek() {
            wake = wake.min(*at);
        }
        // With re-polls waiting, look for more answers without sleeping.
        let sleep =
            if self.ask_queue.is_empty() { sleep_before(wake.saturating_duration_since(now)) } else { Duration::ZERO };
        let mut events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        let polled = self.poll.poll(&mut events, Some(sleep));
        if let Err(e) = polled {
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(format!("poll failed: {e}"));
            }
        }
        let mut answers = 0;
        for event in events.iter() {
            // One clock reading per event: the arrival time of this follower's answer.
            let now = Instant::now();
            let readable = event.is_readable() || event.is_read_closed() || event.is_error();
            if event.token() == PUBLISHER {
                self.on_publisher(readable)?;
            } else if let Some(follower) = self.followers.get_mut(event.token().0) {
                let key = event.token().0;
                match (follower.phase, follower.conn.as_mut()) {
                    (Phase::Asking, _) => {
                        answers += 1;
                        self.on_follower(key, readable, now);
                    }
                    // A short poller's connect completes while it waits for its first slot.
                    (Phase::Waiting, Some(conn)) => {
                        if let Err(e) = conn.finish_connect() {
                            self.fail(key, &e);
                        }
                    }
                    _ => {}
                }
            }
        }
        self.events = events;
        // Re-polls wait until a poll finds no answer to read, and then go out a batch per turn:
        // during a fan-out each answer is timed when it arrives, not after thousands of
        // re-poll writes. The wait is bounded by the fan-out itself; a message published
        // meanwhile is answered at once when the re-poll arrives, since its cursor is behind.
        if answers == 0 {
            let batch = self.ask_queue.len().min(ASKS_PER_TURN);
            let keys: Vec<usize> = self.ask_queue.drain(..batch).collect();
            for key in keys {
                if self.followers[key].phase == Phase::Answered {
                    self.ask(key);
                }
            }
        }
        let now = Instant::now();
        self.publish_due(now)?;
        while let Some(&Reverse((at, key))) = self.due.peek() {
            if at > now {
                break;
            }
            self.due.pop();
            if self.followers[key].phase == Phase::Waiting {
                self.ask(key);
            }
        }
        self.reap();
        Ok(())
    }

    /// Ends the run: counts what every connection carried and every message still missing.
    pub fn finish(mut self) -> Followed {
        for follower in &mut self.followers {
            if let Some(conn) = follower.conn.take() {
                self.out.traffic.sent += conn.sent;
                self.out.traffic.received += conn.received;
            }
            self.out.errors.delivery += (self.plan.messages - follower.next.min(self.plan.messages)) as u64;
        }
        self.out
    }

    fn start_followers(&mut self) -> Result<(), String> {
        let end = (self.started + CONNECTS_PER_TURN).min(self.followers.len());
        for key in self.started..end {
            self.open(key)?;
            match self.plan.style {
                Style::Long { .. } => self.ask(key),
                Style::Short { every } => {
                    // Slots spread evenly over one period, as independent clients would be.
                    let offset = every.mul_f64(key as f64 / self.followers.len() as f64);
                    let slot = Instant::now() + offset;
                    self.followers[key].slot = slot;
                    self.wait_until(key, slot);
                }
            }
        }
        self.started = end;
        Ok(())
    }

    fn open(&mut self, key: usize) -> Result<(), String> {
        let conn = Conn::open(self.poll.registry(), self.plan.addr, Token(key)).map_err(|e| match &e {
            ConnError::Connect(io) if io.raw_os_error() == Some(libc::EMFILE) => {
                format!("follower {key}: out of open files ({io}); lower --clients")
            }
            _ => format!("follower {key}: {e}"),
        })?;
        self.followers[key].conn = Some(conn);
        self.out.opened += 1;
        Ok(())
    }

    /// Writes the follower's next poll, on a new connection if its last one ended (the request
    /// is queued until the connect completes).
    fn ask(&mut self, key: usize) {
        if self.followers[key].conn.is_none() {
            if let Err(e) = self.open(key) {
                log::debug!("{e}");
                self.out.errors.connect += 1;
                return self.wait_until(key, Instant::now() + RETRY_AFTER);
            }
        }
        let plan = &self.plan;
        let follower = &mut self.followers[key];
        let Some(conn) = follower.conn.as_mut() else {
            return;
        };
        let mut request = String::with_capacity(160);
        let (after, hold) = match plan.style {
            Style::Long { hold } => (follower.cursor, Some(hold)),
            // One message back, so that the server always has something and answers at once.
            Style::Short { .. } => (follower.cursor.saturating_sub(1), None),
        };
        let _ = write!(request, "GET {}/poll/{}?cursor={after}", plan.base_path, plan.topic);
        if let Some(epoch) = &follower.epoch {
            let _ = write!(request, "&epoch={epoch}");
        }
        if let Some(hold) = hold {
            let _ = write!(request, "&timeout={}ms", hold.as_millis());
        }
        let _ = write!(request, " HTTP/1.1\r\nHost: {}\r\n\r\n", plan.authority);
        conn.queue(request.as_bytes());
        follower.phase = Phase::Asking;
        self.out.traffic.requests += 1;
        if let Err(e) = conn.flush() {
            self.fail(key, &e);
        }
    }

    fn wait_until(&mut self, key: usize, at: Instant) {
        self.followers[key].phase = Phase::Waiting;
        self.due.push(Reverse((at, key)));
    }

    fn on_follower(&mut self, key: usize, readable: bool, now: Instant) {
        let Some(conn) = self.followers[key].conn.as_mut() else {
            return;
        };
        if let Err(e) = conn.flush() {
            return self.fail(key, &e);
        }
        if !readable {
            return;
        }
        let eof = match conn.fill(false) {
            Ok(eof) => eof,
            Err(e) => return self.fail(key, &e),
        };
        let frame = match conn.next_response() {
            Ok(Some(frame)) => frame,
            Ok(None) if eof => return self.fail(key, &ConnError::Io(std::io::ErrorKind::UnexpectedEof.into())),
            Ok(None) => return,
            Err(e) => return self.fail(key, &e),
        };
        let retry = if frame.status == 200 {
            let parsed = serde_json::from_slice::<Answer>(conn.body(&frame));
            match parsed {
                Ok(answer) => {
                    self.take_answer(key, &answer, now);
                    false
                }
                Err(_) => {
                    self.out.errors.malformed += 1;
                    false
                }
            }
        } else {
            self.out.errors.status += 1;
            true // 503 at --max-held: come back later, as Retry-After says
        };
        let Some(conn) = self.followers[key].conn.as_mut() else {
            return;
        };
        conn.consume(&frame);
        if frame.close || conn.has_partial_input() {
            // The server ends the connection (--max-requests, a drain): reap replaces it.
            self.followers[key].phase = Phase::Closed;
            self.reap_queue.push(key);
            return;
        }
        match (self.plan.style, retry) {
            (_, true) => self.wait_until(key, now + RETRY_AFTER),
            (Style::Long { .. }, false) => {
                self.followers[key].phase = Phase::Answered;
                self.ask_queue.push(key);
            }
            (Style::Short { every }, false) => {
                let follower = &mut self.followers[key];
                // The next slot after now: a slow answer skips slots, as setInterval would.
                while follower.slot <= now {
                    follower.slot += every;
                }
                let slot = follower.slot;
                self.wait_until(key, slot);
            }
        }
    }

    /// Records each new message of an answer and moves the follower's cursor.
    fn take_answer(&mut self, key: usize, answer: &Answer, now: Instant) {
        let follower = &mut self.followers[key];
        let out = &mut self.out;
        follower.epoch = Some(answer.epoch.clone());
        out.errors.delivery += answer.missed;
        let mut fresh = 0;
        for message in &answer.messages {
            if message.seq <= follower.cursor {
                continue; // a short poll's repeat of what it has
            }
            fresh += 1;
            match message_index(&message.data) {
                Some(index) if index == follower.next && index < self.schedule.len() => {
                    out.latency.record(now.saturating_duration_since(self.schedule[index]));
                    out.delivered += 1;
                    follower.next += 1;
                    if follower.next == self.plan.messages {
                        self.complete += 1;
                    }
                }
                Some(index) => {
                    out.errors.delivery += 1;
                    follower.next = follower.next.max(index + 1);
                }
                None => out.errors.delivery += 1,
            }
        }
        match answer.status.as_str() {
            "reset" => out.errors.delivery += 1,
            _ if fresh == 0 => out.empty += 1,
            _ => {}
        }
        follower.cursor = answer.cursor;
    }

    fn fail(&mut self, key: usize, error: &ConnError) {
        let errors = &mut self.out.errors;
        match error {
            ConnError::Connect(_) => errors.connect += 1,
            ConnError::Io(_) => errors.io += 1,
            ConnError::Frame(_) => errors.malformed += 1,
        }
        log::debug!("follower {key}: {error}");
        self.followers[key].phase = Phase::Closed;
        self.reap_queue.push(key);
    }

    /// Drops the connections that ended this turn; their followers ask again on new ones.
    fn reap(&mut self) {
        for key in std::mem::take(&mut self.reap_queue) {
            if let Some(conn) = self.followers[key].conn.take() {
                self.out.traffic.sent += conn.sent;
                self.out.traffic.received += conn.received;
            }
            // `ask` opens the new connection.
            match self.plan.style {
                Style::Long { .. } => self.ask(key),
                Style::Short { .. } => {
                    let slot = self.followers[key].slot.max(Instant::now());
                    self.wait_until(key, slot);
                }
            }
        }
    }

    fn publish_due(&mut self, now: Instant) -> Result<(), String> {
        while let Some(&at) = self.schedule.get(self.publish_next) {
            if at > now {
                break;
            }
            let data = message_data(self.publish_next);
            let request = format!(
                "POST {}/publish/{} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{data}",
                self.plan.base_path,
                self.plan.topic,
                self.plan.authority,
                data.len()
            );
            // Written even if earlier replies are outstanding (pipelined): the schedule is kept.
            self.publisher.queue(request.as_bytes());
            self.publish_next += 1;
        }
        self.publisher.flush().map_err(|e| format!("publisher: {e}"))
    }

    fn on_publisher(&mut self, readable: bool) -> Result<(), String> {
        let failed = |e: ConnError| format!("the publisher's connection failed: {e}");
        self.publisher.flush().map_err(failed)?;
        if !readable {
            return Ok(());
        }
        let eof = self.publisher.fill(false).map_err(failed)?;
        while let Some(frame) = self.publisher.next_response().map_err(failed)? {
            if frame.status != 200 {
                let body = String::from_utf8_lossy(self.publisher.body(&frame)).trim().to_string();
                return Err(format!("a publish was answered {}: {body}", frame.status));
            }
            self.publisher.consume(&frame);
        }
        if eof {
            return Err("the server closed the publisher's connection".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_texts_round_trip() {
        assert_eq!(message_index(&message_data(17)), Some(17));
        assert_eq!(message_index("warm-up"), None);
        assert_eq!(message_index("message x"), None);
    }

    #[test]
    fn a_poll_answer_parses() {
        let body = br#"{"status":"ok","topic":"t","epoch":"3f9c","cursor":43,"missed":0,
            "messages":[{"seq":42,"data":"message 0"},{"seq":43,"data":"message 1"}]}"#;
        let answer: Answer = serde_json::from_slice(body).unwrap();
        assert_eq!((answer.status.as_str(), answer.cursor, answer.messages.len()), ("ok", 43, 2));
        assert_eq!(message_index(&answer.messages[1].data), Some(1));
    }
}
