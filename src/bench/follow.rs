//! Followers of one topic, and its publisher, on the lab's engine: the load of `longpoll` and
//! `realtime`.
//!
//! ```text
//!   publisher   POST /publish/T "message i" at t0 + i * interval, i = 0..M (pipelined if the
//!               server is slow, never delayed by it; `publisher`)
//!   follower    long:  GET /poll/T?cursor=C&epoch=E&timeout=H, again as soon as it is answered
//!               short: GET /poll/T?cursor=C-1&epoch=E at its own slots, every --interval
//!               sse:   GET /events/T with Last-Event-ID: C, once: each message is an event
//!               ws:    GET /ws (an upgrade), once, then {"subscribe":"T","cursor":C}: each
//!                      message is a frame; each ping is answered with a pong
//! ```
//!
//! A short poll must be answered at once, but tether holds a poll that has nothing new for at
//! least a second (`timeout=` is clamped to 1 s), and a held poll *is* long polling. So a short
//! poll asks from one message before its cursor: the server always has that message, answers at
//! once, and an answer with nothing after the cursor is an empty response. The cost of the
//! trick is the one repeated message in every answer (its bytes are counted; `docs/lab.md`).
//!
//! A stream is asked for as an EventSource resumes one: the same URL every time, and the last id
//! seen in `Last-Event-ID` (from the start, the warm-up's seq). The URL carries no `cursor`: it
//! would win over the header (`docs/long-polling.md`), and a reconnect would replay. A WebSocket
//! is opened as a browser's is: a fresh `Sec-WebSocket-Key` per upgrade (its accept checked), a
//! fresh mask key per frame, and its subscribe names the last seq seen as its cursor.
//!
//! Invariants:
//! - On the lab's engine (`engine`), a connection is the publisher or a follower (its index); a
//!   follower whose connection ends asks again on a new one. A stream or a socket that breaks (a
//!   close, a close frame, or a reset after its head) is reopened at once and counted in
//!   `reconnects`, not in `errors`: whether the resume lost or repeated anything, the order
//!   check says.
//! - The publisher publishes over HTTP in every style (`POST /publish/T`), so that its cost, in
//!   the server's CPU, is the same in each; `traffic` counts the followers' bytes only.
//! - With several servers (`Plan::servers`) the publisher writes to the first, and follower i
//!   asks server i mod N, on every connection it opens.
//! - Delivery latency of message i runs from its *scheduled* publish time, not from when the
//!   publish was written: a late publisher or a slow server is charged to the latency instead of
//!   hidden (no coordinated omission).
//! - Each follower expects messages 0, 1, 2, ... in order (`delivery`, which reads what it
//!   receives); anything else is counted in `errors.delivery`, and so is every message still
//!   missing when the run ends: `delivered + missing = clients x messages`.

use std::cmp::Reverse;
use std::collections::hash_map::RandomState;
use std::collections::BinaryHeap;
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

use super::conn::ConnError;
use super::engine::{self, Engine, Gone, Load};
use super::frame::{self, Frame, FrameError, Reading};
use super::host::{CpuSample, OtherLoad};
use super::report::{self, Errors, Latency, Traffic};
use super::servers::{Readings, Servers};
use super::websocket::{self, Kind};
use super::Target;
use crate::backoff::XorShift;
use delivery::{message_data, request, Answer};
use publisher::Publisher;

mod delivery;
mod publisher;

/// Connections started per turn: opening faster than the server accepts overflows its listen
/// backlog and costs each dropped connection a 1 s SYN retransmit.
const CONNECTS_PER_TURN: usize = 256;
/// How long a turn may sleep when nothing is due: the progress bar moves this often.
const TICK: Duration = Duration::from_millis(100);
/// Re-polls written per turn once the answers stop coming (about a millisecond of writes), so
/// that answers still arriving are read between batches.
const ASKS_PER_TURN: usize = 256;
/// How often the server's count of held polls is read while waiting for them.
const STATS_EVERY: Duration = Duration::from_millis(50);
/// After the last scheduled publish, how long deliveries may still take.
const GRACE: Duration = Duration::from_secs(5);
/// A follower refused with 503 (at `--max-held`) asks again after this.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// How followers ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Ask again as soon as answered; the server holds the poll up to `hold`.
    Long { hold: Duration },
    /// Ask every `every`, at slots spread evenly over that period across the followers.
    Short { every: Duration },
    /// Ask once for an event stream; each message comes as an event of its response.
    Sse,
    /// Open a WebSocket once and subscribe; each message comes as a frame.
    WebSocket,
}

impl Style {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Style::Short { .. } => "short-poll",
            Style::Long { .. } => "long-poll",
            Style::Sse => "sse",
            Style::WebSocket => "ws",
        }
    }

    /// The `/stats` figure that counts what the server holds for each follower, if it holds one.
    pub fn held(self) -> Option<&'static str> {
        match self {
            Style::Long { .. } => Some("/polls/held"),
            Style::Sse => Some("/streams/open"),
            Style::WebSocket => Some("/sockets/open"),
            Style::Short { .. } => None,
        }
    }
}

/// What a run follows.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The servers, the publisher's first (as `Servers::targets`, never empty).
    pub servers: Vec<Target>,
    pub topic: String,
    pub clients: usize,
    pub messages: usize,
    pub interval: Duration,
    pub style: Style,
    /// The sequence number every follower starts after (a message already published).
    pub after: u64,
}

impl Plan {
    /// The server the publisher writes to.
    pub fn publisher(&self) -> &Target {
        &self.servers[0]
    }

    /// The server follower `index` asks: round-robin over `servers`.
    pub fn server(&self, index: usize) -> &Target {
        &self.servers[index % self.servers.len()]
    }
}

/// What a run measured, for the followers only (the publisher's traffic is the same in every
/// style and is left out). `traffic.requests` counts, for a WebSocket, its upgrade and every
/// frame its client sent (the subscribe, the pongs).
#[derive(Default)]
pub struct Followed {
    pub delivered: u64,
    pub latency: Latency,
    pub traffic: Traffic,
    /// Answers that carried nothing new: a short poll too early, a long poll's `timeout`.
    pub empty: u64,
    pub opened: u64,
    /// Streams that broke after they opened, and were opened again.
    pub reconnects: u64,
    pub errors: Errors,
    /// The server's CPU time over the publish schedule, if its pid is known.
    pub server_cpu: Option<Duration>,
    /// The CPU the rest of the host used over the schedule, in percent of one core: a run that
    /// shared the machine shows it here.
    pub other_cpu_percent: Option<f64>,
}

impl Followed {
    /// The server's CPU time per delivered message, in µs, when its CPU time is known.
    pub fn cpu_us_per_message(&self) -> Option<f64> {
        self.server_cpu.map(|cpu| report::round(report::ratio(cpu.as_micros() as u64, self.delivered), 2))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A poll is written or queued; its answer is due.
    Asking,
    /// Short polling: waiting for its next slot (in `due`).
    Waiting,
    /// Long polling: answered; its next poll waits in `ask_queue` until the answers stop
    /// coming (see `turn`).
    Answered,
    /// Its event stream or its socket is open: events or frames come as messages are published.
    Streaming,
}

#[derive(Clone)]
struct Follower {
    /// Its connection's key in the engine, while it has one.
    key: Option<usize>,
    phase: Phase,
    /// The last sequence number seen.
    cursor: u64,
    epoch: Option<String>,
    /// The index of the next message expected.
    next: usize,
    /// Short polling: the slot of the next poll.
    slot: Instant,
    /// A WebSocket: the `Sec-WebSocket-Key` of its last upgrade, which the answer must prove.
    handshake: Option<String>,
}

/// What a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Publisher,
    Follower(usize),
}

pub struct Follow {
    engine: Engine<Role>,
    watch: Watch,
}

/// The followers and what they received: the scenario's side of the engine.
struct Watch {
    plan: Plan,
    followers: Vec<Follower>,
    /// Scheduled publish times, set by `run_schedule`: delivery latencies run from them.
    schedule: Vec<Instant>,
    /// (when, follower) for short polls waiting for their slot and refused polls retrying.
    due: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Long polling: answered followers whose next polls wait until a poll finds no more
    /// answers to read.
    ask_queue: Vec<usize>,
    complete: usize,
    /// Followers' answers read in this turn.
    answers: usize,
    publisher: Publisher,
    /// Why the run cannot go on: the publisher's connection failed, or a publish was refused.
    fatal: Option<String>,
    /// WebSocket keys and masks.
    keys: XorShift,
    out: Followed,
}

impl Follow {
    /// Connects the publisher; followers open with `turn`, a batch at a time.
    ///
    /// # Errors
    ///
    /// When the poll or the publisher's connection cannot be made.
    pub fn new(plan: Plan) -> Result<Follow, String> {
        let mut engine = Engine::new(plan.publisher().addr, CONNECTS_PER_TURN)?;
        let publisher = Publisher::open(&mut engine);
        let slot = Instant::now();
        let (cursor, handshake) = (plan.after, None);
        let first = Follower { key: None, phase: Phase::Asking, cursor, epoch: None, next: 0, slot, handshake };
        let watch = Watch {
            followers: vec![first; plan.clients],
            schedule: Vec::new(),
            due: BinaryHeap::new(),
            ask_queue: Vec::new(),
            complete: 0,
            answers: 0,
            publisher,
            fatal: None,
            keys: XorShift::new(RandomState::new().hash_one(std::process::id())),
            out: Followed::default(),
            plan,
        };
        let mut follow = Follow { engine, watch };
        // The publisher connects now: it is part of the baseline. The followers connect from the
        // next turn on.
        follow.engine.turn(&mut follow.watch, Duration::ZERO)?;
        let (watch, engine) = (&mut follow.watch, &mut follow.engine);
        let clients = watch.followers.len();
        for index in 0..clients {
            match watch.plan.style {
                Style::Long { .. } | Style::Sse | Style::WebSocket => watch.ask(engine, index),
                Style::Short { every } => {
                    // A connection now, its polls at slots spread evenly over one period, as
                    // independent clients would be.
                    watch.open(engine, index, b"");
                    watch.followers[index].slot = Instant::now() + every.mul_f64(index as f64 / clients as f64);
                    watch.wait_until(index, watch.followers[index].slot);
                }
            }
        }
        Ok(follow)
    }

    /// Turns the loop until every follower is ready: its poll held or its stream open (as the
    /// `servers`' `/stats` say, summed, against what they held `before` the followers opened),
    /// or its connection open (short).
    ///
    /// # Errors
    ///
    /// As `turn`, when `/stats` fails, or when they are not ready within `engine::opening_bound`.
    pub fn wait_ready(&mut self, servers: &mut Servers, before: &Readings) -> Result<(), String> {
        let (clients, held) = (self.watch.followers.len(), self.watch.plan.style.held());
        let held_before = held.map_or(0, |pointer| before.sum(pointer));
        let (limit, mut next_check) = (engine::opening_bound(clients), Instant::now());
        let deadline = next_check + limit;
        loop {
            self.turn(STATS_EVERY)?;
            let now = Instant::now();
            if now < next_check && now < deadline {
                continue;
            }
            next_check = now + STATS_EVERY;
            // Every follower has a connection and its first poll is out or scheduled.
            let opened = self.engine.waiting() == 0;
            let (ready, state) = match held {
                Some(pointer) if opened => {
                    let now_held = servers.stats()?.sum(pointer);
                    let ours = now_held.saturating_sub(held_before);
                    let name = pointer[1..].replace('/', ".");
                    let state = format!("the server's {name} is {now_held}, {ours} of ours");
                    (ours >= clients as u64, state + " (see --max-held and the open-file limit)")
                }
                _ => {
                    let connected = |key: usize| self.engine.get(key).is_some_and(|open| open.conn.is_connected());
                    let connected = self.watch.followers.iter().filter(|f| f.key.is_some_and(connected)).count();
                    (opened && connected == clients, format!("only {connected} of {clients} followers are connected"))
                }
            };
            if ready {
                return Ok(());
            }
            if now >= deadline {
                return Err(format!("after {limit:?} {state}"));
            }
        }
    }

    /// Publishes on schedule, starting one interval from now, until every follower has every
    /// message (and has asked again after its last answer) or the last publish is `GRACE` old;
    /// `progress` hears how many were published. The CPU time of the server's processes `pids`
    /// meanwhile is its cost of the schedule.
    ///
    /// # Errors
    ///
    /// As `turn`.
    pub fn run_schedule(&mut self, pids: &[i32], mut progress: impl FnMut(u64)) -> Result<(), String> {
        let (cpu_start, other_start) = (CpuSample::take(pids), OtherLoad::take());
        let (first, plan) = (Instant::now() + self.watch.plan.interval, &self.watch.plan);
        self.watch.schedule = (0..plan.messages).map(|i| first + plan.interval * i as u32).collect();
        let deadline = self.watch.schedule.last().copied().unwrap_or(first) + GRACE;
        let all_delivered = |watch: &Watch| watch.complete == watch.followers.len() && watch.ask_queue.is_empty();
        while !all_delivered(&self.watch) && Instant::now() < deadline {
            self.turn(deadline.saturating_duration_since(Instant::now()))?;
            progress(self.watch.publisher.written as u64);
        }
        let server_cpu = cpu_start.used_until(&CpuSample::take(pids));
        self.watch.out.other_cpu_percent = other_start.percent_until(&OtherLoad::take(), server_cpu);
        self.watch.out.server_cpu = server_cpu;
        Ok(())
    }

    /// One turn of the loop, sleeping at most `max_wait`: start followers, poll, dispatch,
    /// write due publishes and polls.
    ///
    /// # Errors
    ///
    /// When the poll fails or the publisher's connection does: without it nothing is measured.
    pub fn turn(&mut self, max_wait: Duration) -> Result<(), String> {
        let now = Instant::now();
        let mut wake = now + max_wait.min(TICK);
        if let Some(&at) = self.watch.schedule.get(self.watch.publisher.written) {
            wake = wake.min(at);
        }
        if let Some(Reverse((at, _))) = self.watch.due.peek() {
            wake = wake.min(*at);
        }
        // With re-polls waiting, look for more answers without sleeping.
        let sleep = if self.watch.ask_queue.is_empty() { engine::sleep_before(wake) } else { Duration::ZERO };
        self.watch.answers = 0;
        self.engine.turn(&mut self.watch, sleep)?;
        if let Some(fatal) = self.watch.fatal.take() {
            return Err(fatal);
        }
        // Re-polls wait until a poll finds no answer to read, and then go out a batch per turn:
        // during a fan-out each answer is timed when it arrives, not after thousands of
        // re-poll writes. The wait is bounded by the fan-out itself; a message published
        // meanwhile is answered at once when the re-poll arrives, since its cursor is behind.
        let watch = &mut self.watch;
        if watch.answers == 0 {
            let batch = watch.ask_queue.len().min(ASKS_PER_TURN);
            let indexes: Vec<usize> = watch.ask_queue.drain(..batch).collect();
            for index in indexes {
                if watch.followers[index].phase == Phase::Answered {
                    watch.ask(&mut self.engine, index);
                }
            }
        }
        let now = Instant::now();
        self.watch.publish_due(&mut self.engine, now)?;
        while let Some(&Reverse((at, index))) = self.watch.due.peek() {
            if at > now {
                break;
            }
            self.watch.due.pop();
            if self.watch.followers[index].phase == Phase::Waiting {
                self.watch.ask(&mut self.engine, index);
            }
        }
        Ok(())
    }

    /// Ends the run: counts what every connection carried and every message still missing.
    pub fn finish(mut self) -> Followed {
        let watch = &mut self.watch;
        for index in 0..watch.followers.len() {
            watch.close(&mut self.engine, index);
            watch.out.errors.delivery += watch.plan.messages.saturating_sub(watch.followers[index].next) as u64;
        }
        self.watch.out
    }
}

impl Watch {
    fn open(&mut self, engine: &mut Engine<Role>, index: usize, request: &[u8]) {
        let addr = self.plan.server(index).addr;
        self.followers[index].key = Some(engine.open_to(addr, Role::Follower(index), request));
        self.out.opened += 1;
    }

    /// Writes the follower's next poll, stream request or upgrade, on a new connection if its
    /// last one ended.
    fn ask(&mut self, engine: &mut Engine<Role>, index: usize) {
        if self.plan.style == Style::WebSocket {
            self.followers[index].handshake = Some(websocket::new_key(&mut self.keys));
        }
        let request = request(&self.plan, index, &self.followers[index]);
        let follower = &mut self.followers[index];
        follower.phase = Phase::Asking;
        self.out.traffic.requests += 1;
        let Some(key) = follower.key else {
            return self.open(engine, index, request.as_bytes());
        };
        if let Err(e) = engine.send(key, request.as_bytes()) {
            self.fail(engine, index, &e);
        }
    }

    fn wait_until(&mut self, index: usize, at: Instant) {
        self.followers[index].phase = Phase::Waiting;
        self.due.push(Reverse((at, index)));
    }

    /// After an answer: the next poll at once (long), at the next slot (short), or after
    /// `RETRY_AFTER` when refused (or, for a stream or a socket, answered otherwise than with
    /// one).
    fn next_poll(&mut self, index: usize, retry: bool, now: Instant) {
        match (self.plan.style, retry) {
            (_, true) | (Style::Sse | Style::WebSocket, _) => self.wait_until(index, now + RETRY_AFTER),
            (Style::Long { .. }, false) => {
                self.followers[index].phase = Phase::Answered;
                self.ask_queue.push(index);
            }
            (Style::Short { every }, false) => {
                let follower = &mut self.followers[index];
                // The next slot after now: a slow answer skips slots, as setInterval would.
                while follower.slot <= now {
                    follower.slot += every;
                }
                let slot = follower.slot;
                self.wait_until(index, slot);
            }
        }
    }

    /// Closes the follower's connection, if it has one, and counts what it carried.
    fn close(&mut self, engine: &mut Engine<Role>, index: usize) {
        if let Some(gone) = self.followers[index].key.take().and_then(|key| engine.close(key)) {
            self.out.traffic.sent += gone.sent;
            self.out.traffic.received += gone.received;
        }
    }

    /// The follower's connection is of no further use: it asks again on a new one (after
    /// `RETRY_AFTER` when the connect failed). Out of open files, the run cannot go on.
    fn fail(&mut self, engine: &mut Engine<Role>, index: usize, error: &ConnError) {
        let broken = matches!(error, ConnError::Closed { .. } | ConnError::Io(_));
        if broken && self.followers[index].phase == Phase::Streaming {
            self.out.reconnects += 1;
        } else {
            self.out.errors.count(error);
        }
        log::debug!("follower {index}: {error}");
        self.close(engine, index);
        match error {
            ConnError::Connect(io) if io.raw_os_error() == Some(libc::EMFILE) => {
                self.fatal.get_or_insert(format!("follower {index}: out of open files ({io}); lower --clients"));
            }
            ConnError::Connect(_) => self.wait_until(index, Instant::now() + RETRY_AFTER),
            // Asks again on a new connection: at once (long, a stream), or at its slot (short).
            _ if !matches!(self.plan.style, Style::Short { .. }) => self.ask(engine, index),
            _ => self.wait_until(index, self.followers[index].slot.max(Instant::now())),
        }
    }
}

impl Load<Role> for Watch {
    fn answered(&mut self, engine: &mut Engine<Role>, key: usize, frame: &Frame, now: Instant) {
        let index = match engine.get(key).map(|open| open.state) {
            Some(Role::Publisher) => return self.published(engine, key, frame),
            Some(Role::Follower(index)) => index,
            None => return,
        };
        if self.followers[index].phase != Phase::Asking {
            // An answer nobody asked for: the connection is out of step.
            return self.fail(engine, index, &ConnError::Frame(FrameError::Malformed));
        }
        self.answers += 1;
        let retry = match (frame.status, self.plan.style) {
            (200, Style::Sse) if frame.then == Reading::Events => {
                // Its events follow: the connection stays open (its `Connection: close` says
                // only that the body runs until the close).
                self.followers[index].phase = Phase::Streaming;
                return;
            }
            (101, Style::WebSocket) if frame.then == Reading::WebSocket => {
                return self.subscribe(engine, key, index, frame)
            }
            (200, Style::Sse) | (101 | 200, Style::WebSocket) => {
                self.out.errors.malformed += 1;
                true
            }
            (200, _) => {
                match serde_json::from_slice::<Answer>(engine.bytes(key, &frame.body)) {
                    Ok(answer) => self.take_answer(index, &answer, now),
                    Err(_) => self.out.errors.malformed += 1,
                }
                false
            }
            _ => {
                self.out.errors.status += 1;
                true // 503 at --max-held: come back later, as Retry-After says
            }
        };
        if frame.close {
            // The server ends the connection (--max-requests, a drain): the next poll goes
            // out on a new one.
            self.close(engine, index);
        }
        self.next_poll(index, retry, now);
    }

    fn event(&mut self, engine: &mut Engine<Role>, key: usize, event: &frame::Event, now: Instant) {
        if let Some(&Role::Follower(index)) = engine.get(key).map(|open| &open.state) {
            if self.followers[index].phase == Phase::Streaming {
                self.take_event(index, event, engine.bytes(key, &(0..event.len)), now);
            }
        }
    }

    fn websocket(&mut self, engine: &mut Engine<Role>, key: usize, frame: &websocket::Frame, now: Instant) {
        let Some(&Role::Follower(index)) = engine.get(key).map(|open| &open.state) else {
            return;
        };
        if self.followers[index].phase != Phase::Streaming {
            return;
        }
        match frame.kind {
            Kind::Text => self.take_news(index, engine.bytes(key, &frame.payload), now),
            Kind::Ping => {
                let payload = engine.bytes(key, &frame.payload).to_vec();
                self.send_frame(engine, index, Kind::Pong, &payload);
            }
            Kind::Pong => {}
            // The server ends the socket (a drain, a ping unanswered): it is reopened.
            Kind::Close => self.fail(engine, index, &ConnError::Closed { partial: false }),
            Kind::Binary => self.out.errors.malformed += 1,
        }
    }

    fn ended(&mut self, engine: &mut Engine<Role>, _key: usize, gone: Gone<Role>, why: ConnError, _now: Instant) {
        let Role::Follower(index) = gone.state else {
            self.fatal.get_or_insert(match why {
                ConnError::Closed { .. } => "the server closed the publisher's connection".into(),
                why => format!("the publisher's connection failed: {why}"),
            });
            return;
        };
        self.followers[index].key = None;
        self.out.traffic.sent += gone.sent;
        self.out.traffic.received += gone.received;
        self.fail(engine, index, &why);
    }
}
