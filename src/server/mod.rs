//! The reactor: one `mio::Poll`, the listener, every connection, the timer wheel, and the loop
//! that turns readiness into answers. The only module that touches sockets.
//!
//! `run_once` is one turn of the loop, in named phases:
//!
//! ```text
//! next_deadline  how long poll() may sleep: the wheel's earliest deadline (no sleep while
//!                closed connections wait to be reaped, or newcomers or answers are carried)
//! poll           epoll_wait
//! dispatch       a connection: read, parse, answer and write its own requests at once;
//!                SIGNALS: start draining; then LISTENER: accept up to `ACCEPT_BUDGET`
//!                newcomers (`admission`: the limits)
//! expire_timers  every due deadline: head (408), idle, write, hold (timeout), linger, drain,
//!                the listener's back-off, the topic sweep (`poll::sweep_topics`)
//! flush          up to `FLUSH_BUDGET` connections queued by something other than their own
//!                event: a timer's 408 or `timeout`, a publish's woken polls (each answer is
//!                built and written here), requests that waited behind an answer
//! reap           free the slab keys (and descriptors) of connections closed during this turn;
//!                a freed descriptor resumes accepting if it was paused
//! ```
//!
//! Fairness: a burst is cut into slices. Newcomers beyond `ACCEPT_BUDGET` and queued answers
//! beyond `FLUSH_BUDGET` are carried to the next turn, which then polls without sleeping, so a
//! fan-out to 15,000 polls or 10,000 connects at once delays other ready connections by one
//! slice, not by the whole burst. A publisher's own answer is written in dispatch, before the
//! fan-out it causes.
//!
//! Invariants (checked with `debug_assert!` where they can be):
//! 1. A connection's token is its slab key; `LISTENER` and `SIGNALS` lie outside the key range.
//! 2. Slab keys are freed only in `reap`, after the event batch, so a stale event in the same
//!    batch finds a `Closed` connection, never a new one under a reused key.
//! 3. A connection has at most one armed timer, and its meaning follows its state
//!    (`State::deadline`). `enter` and `close` are the only functions that change state, and
//!    each re-arms or cancels the timer in the same step.
//! 4. WRITABLE interest is registered only while output is pending (`State::Writing`).
//! 5. Readiness is drained until `WouldBlock` (or a short read or write, which means the same
//!    for a TCP socket); `WouldBlock` is never an error. Readiness whose edge was consumed
//!    without draining (read-closed, backpressure) is remembered in `input_ready`.
//! 6. A snapshot costs O(1) in connections: descriptors, states, holds and buffer bytes are
//!    counted as they change, never recounted by walking the slab.
//!
//! In debug builds `check_invariants` walks the whole structure after every turn and checks
//! what can be checked of these (see `invariants`).

use std::collections::VecDeque;
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime};

use log::{debug, info};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::buffer::BufferPool;
use crate::config::{Config, FD_RESERVE};
use crate::connection::{self, CloseReason, Connection, Deadline, State};
use crate::http::date::HttpDate;
use crate::http::request::Limits;
use crate::http::response::{Response, Status};
use crate::pubsub::{TopicLimits, Topics};
use crate::stats::{self, ByState, Polls, Snapshot, Totals};
use crate::timer::{Tick, Wheel};
use admission::{Accepting, Admission};

const LISTENER: Token = Token(usize::MAX);
const SIGNALS: Token = Token(usize::MAX - 1);
/// The wheel's values for the server-wide drain deadline and the listener's back-off after
/// running out of descriptors; never slab keys (invariant 1).
const DRAIN_TIMER: usize = usize::MAX;
const ACCEPT_TIMER: usize = usize::MAX - 1;
/// The wheel's value for the periodic sweep that forgets idle topics (`poll::sweep_topics`).
const TOPIC_SWEEP_TIMER: usize = usize::MAX - 2;
/// How long a closing connection waits for the peer's FIN after our last answer.
const LINGER: Duration = Duration::from_secs(2);
/// Stop parsing pipelined requests while this much output waits for the socket: a client that
/// sends without reading must not grow our memory without bound.
const OUTPUT_CAP: usize = 256 * 1024;
/// Connections that may be read, answered 503 and lingering at once on top of
/// `--max-connections`; beyond this a newcomer is answered at once and closed without lingering.
const REJECT_BUDGET: usize = FD_RESERVE / 2;
const EVENTS_CAPACITY: usize = 1024;
/// Newcomers accepted per turn at most; the rest wait in the backlog for the next turn.
const ACCEPT_BUDGET: usize = 256;
/// Queued connections answered and written per turn at most, about 4 ms of `sendto` in a
/// release build; the rest wait for the next turn.
const FLUSH_BUDGET: usize = 512;
/// Pending connections the kernel queues before `accept` (nginx uses 511; see `bind`).
const LISTEN_BACKLOG: i32 = 4096;

mod admission;
mod answer;
#[cfg(debug_assertions)]
mod invariants;
mod lifecycle;
mod poll;

/// The reactor's state, grouped by what owns it: the loop's own (the poll, the slab, the wheel,
/// the buffer pool, the queues of the flush and reap phases, the clock), `admission` (the
/// listener and the limits a newcomer meets), `holds` (the topics and the polls held on them)
/// and `costs` (what the cost view counts as it happens).
pub struct Server {
    poll: Poll,
    signals: Signals,
    connections: Slab<Connection>,
    wheel: Wheel<usize>,
    pool: BufferPool,
    /// Connections with answers queued outside their own event, written in the flush phase,
    /// oldest first; what `FLUSH_BUDGET` leaves is carried to the next turn.
    flush_queue: VecDeque<usize>,
    /// Connections closed this turn, freed in the reap phase.
    reap_queue: Vec<usize>,
    config: Config,
    limits: Limits,
    /// Unread input never exceeds this: the parser errors before a request could need more.
    input_cap: usize,
    started: Instant,
    now: Tick,
    date: HttpDate,
    admission: Admission,
    holds: Holds,
    costs: Costs,
    draining: bool,
    stop: bool,
    /// What only the debug invariant checks need.
    #[cfg(debug_assertions)]
    invariants: invariants::Mirror,
}

/// The topics and the long polls held on them (see `poll`).
struct Holds {
    topics: Topics,
    /// `--max-held`, checked against `costs.polls.held`.
    max_held: usize,
    /// When the last publish that woke polls was parsed: the flush phase reports how long
    /// writing all their answers took.
    fanout_started: Option<Instant>,
}

/// What the cost view counts as it happens, so that a snapshot never walks the connections.
struct Costs {
    totals: Totals,
    by_state: ByState,
    polls: Polls,
    /// Descriptors open at start other than the listener and the spare (stdio, epoll, the
    /// signal pipe): with those two and one per slab entry, `fds.open` without reading `/proc`.
    fds_at_start: u64,
}

impl Server {
    /// Binds the listener and sets up the reactor; `run` serves.
    pub fn bind(config: Config) -> io::Result<Server> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(config.listen)?;
        // mio listens with std's backlog of 128: a burst of more connections than that (every
        // long-poll client reconnecting after a restart) overflows the accept queue, and each
        // dropped SYN costs its client a 1 s retransmit. Listening again raises the backlog;
        // the kernel caps it at net.core.somaxconn.
        // SAFETY: listen() on a descriptor we own, with no pointers involved.
        if unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) } != 0 {
            return Err(io::Error::last_os_error());
        }
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        poll.registry().register(&mut signals, SIGNALS, Interest::READABLE)?;
        let limits = Limits {
            max_head_bytes: config.max_head_bytes,
            max_uri_bytes: config.max_head_bytes.min(8192),
            max_body_bytes: config.max_message_bytes,
        };
        let fd_limit = usize::try_from(stats::fds_limit()).unwrap_or(usize::MAX);
        let max_connections = config.max_connections.unwrap_or_else(|| fd_limit.saturating_sub(FD_RESERVE).max(1));
        info!("limits: {max_connections} connections, {fd_limit} open files");
        let spare = admission::open_spare();
        // Everything this server will ever open is open now but for connections, so this one
        // reading of `/proc` is the base that `fds.open` counts from.
        let fds_at_start = stats::fds_open().saturating_sub(1 + u64::from(spare.is_some()));
        let mut server = Server {
            poll,
            signals,
            connections: Slab::new(),
            wheel: Wheel::new(),
            pool: BufferPool::default(),
            flush_queue: VecDeque::new(),
            reap_queue: Vec::new(),
            input_cap: 2 * limits.max_head_bytes + limits.max_body_bytes + 1,
            limits,
            started: Instant::now(),
            now: 0,
            date: HttpDate::new(),
            admission: Admission::new(listener, spare, max_connections),
            holds: Holds {
                topics: Topics::new(TopicLimits::from(&config)),
                max_held: config.max_held.unwrap_or(max_connections),
                fanout_started: None,
            },
            costs: Costs {
                totals: Totals::default(),
                by_state: ByState::default(),
                polls: Polls::default(),
                fds_at_start,
            },
            config,
            draining: false,
            stop: false,
            #[cfg(debug_assertions)]
            invariants: invariants::Mirror::default(),
        };
        server.arm_topic_sweep();
        Ok(server)
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.admission.listener {
            Some(listener) => listener.local_addr(),
            None => Err(io::Error::new(ErrorKind::NotConnected, "the listener is closed")),
        }
    }

    /// Serves until a graceful drain finishes (or a second signal cuts it short).
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        while !self.stop {
            self.run_once(&mut events)?;
        }
        info!("stopped: {} connections left", self.connections.len());
        Ok(())
    }

    fn run_once(&mut self, events: &mut Events) -> io::Result<()> {
        let timeout = self.next_deadline();
        if let Err(e) = self.poll.poll(events, timeout) {
            if e.kind() != ErrorKind::Interrupted {
                return Err(e);
            }
            events.clear();
        }
        self.refresh_clock();
        self.dispatch(events);
        self.expire_timers();
        self.flush();
        self.reap();
        #[cfg(debug_assertions)]
        self.check_invariants();
        if self.draining && self.connections.is_empty() {
            self.stop = true;
        }
        Ok(())
    }

    // ---- next_deadline ------------------------------------------------------------------

    fn next_deadline(&self) -> Option<Duration> {
        // Closed after this turn's reap, answers or newcomers carried over: no sleeping.
        if !self.reap_queue.is_empty()
            || !self.flush_queue.is_empty()
            || self.admission.accepting == Accepting::Backlogged
        {
            return Some(Duration::ZERO);
        }
        let deadline = self.wheel.next_deadline()?;
        // epoll rounds its timeout up to whole milliseconds, so this never wakes before `deadline`.
        Some(Duration::from_millis(deadline.saturating_sub(self.now_tick())))
    }

    fn now_tick(&self) -> Tick {
        Tick::try_from(self.started.elapsed().as_millis()).unwrap_or(Tick::MAX)
    }

    fn refresh_clock(&mut self) {
        self.now = self.now_tick();
        self.date.refresh(SystemTime::now());
    }

    /// The tick by which `after` has passed, counted from this turn's start. `now` is that
    /// start truncated to the millisecond, so one more tick makes up for the fraction cut off:
    /// a deadline may come up to a millisecond (and epoll's rounding) late, never early.
    fn deadline(&self, after: Duration) -> Tick {
        self.now + Tick::try_from(after.as_millis()).unwrap_or(Tick::MAX / 2) + 1
    }

    // ---- dispatch -----------------------------------------------------------------------

    fn dispatch(&mut self, events: &Events) {
        let mut newcomers = self.admission.accepting == Accepting::Backlogged;
        for event in events.iter() {
            match event.token() {
                LISTENER => newcomers = true,
                SIGNALS => self.on_signal(),
                Token(key) => {
                    let Some(conn) = self.connections.get_mut(key) else {
                        continue; // spurious: mio allows events for sources already gone
                    };
                    let readable = event.is_readable() || event.is_read_closed() || event.is_error();
                    if event.is_read_closed() || event.is_error() {
                        // The FIN (or an error) came with this event, maybe behind a request: no
                        // second event will announce it, so the next read goes on to the end
                        // instead of stopping at a short read (see `read_and_answer`).
                        conn.input_ready = true;
                    }
                    match conn.state {
                        State::Closed => {}
                        State::Closing => self.discard_input(key),
                        State::Writing => {
                            if readable {
                                conn.input_ready = true; // taken up once the output drains
                            }
                            if event.is_writable() || event.is_error() {
                                self.write_and_resume(key, false);
                            }
                        }
                        // While held, reading notices a client that hangs up (and buffers
                        // any pipelined request until the poll is answered).
                        State::Reading | State::Idle | State::Held if readable => self.serve(key),
                        State::Reading | State::Idle | State::Held => {}
                    }
                }
            }
        }
        // After the connections' own events: a burst of newcomers waits behind them.
        if newcomers {
            self.accept();
        }
    }

    fn on_signal(&mut self) {
        let received = self.signals.pending().count();
        if received == 0 {
            return;
        }
        if self.draining {
            info!("second signal: stopping at once");
            self.stop = true;
        } else {
            self.start_drain();
        }
    }

    /// Graceful shutdown: stop accepting, close what is idle, let in-flight answers finish
    /// (they now say `Connection: close`), and give up at `--drain-timeout`.
    fn start_drain(&mut self) {
        info!("draining {} connections (up to {:?})", self.connections.len(), self.config.drain_timeout);
        self.draining = true;
        if let Some(mut listener) = self.admission.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        if let Accepting::Paused(timer) = std::mem::replace(&mut self.admission.accepting, Accepting::Open) {
            self.wheel.cancel(timer);
        }
        self.wheel.insert(self.deadline(self.config.drain_timeout), DRAIN_TIMER);
        let quiet: Vec<usize> = self
            .connections
            .iter()
            .filter(|(_, c)| {
                let nothing_buffered = c.buffers.as_ref().is_none_or(|b| b.is_empty());
                matches!(c.state, State::Idle | State::Reading) && nothing_buffered
            })
            .map(|(key, _)| key)
            .collect();
        for key in quiet {
            self.close(key, CloseReason::Drain);
        }
        let held: Vec<usize> =
            self.connections.iter().filter(|(_, c)| c.held().is_some()).map(|(key, _)| key).collect();
        for key in held {
            self.answer_hold(key); // says `Connection: close`, since draining
            self.flush_queue.push_back(key);
        }
    }

    // ---- expire_timers ------------------------------------------------------------------

    fn expire_timers(&mut self) {
        while let Some(key) = self.wheel.poll(self.now) {
            if key == DRAIN_TIMER {
                info!("drain timeout: {} connections cut", self.connections.len());
                self.stop = true;
                continue;
            }
            if key == ACCEPT_TIMER {
                self.resume_accepting();
                continue;
            }
            if key == TOPIC_SWEEP_TIMER {
                self.sweep_topics();
                continue;
            }
            let Some(conn) = self.connections.get_mut(key) else {
                debug_assert!(false, "a timer outlived its connection {key}");
                continue;
            };
            conn.timer = None;
            match conn.state.deadline() {
                Some(Deadline::Head) => {
                    let response = Response::error(Status::REQUEST_TIMEOUT, b"request not received in time\n");
                    self.queue_final_answer(key, &response, CloseReason::HeaderTimeout);
                    self.flush_queue.push_back(key);
                }
                Some(Deadline::Hold) => {
                    self.answer_hold(key);
                    self.flush_queue.push_back(key);
                }
                Some(Deadline::Idle) => self.close(key, CloseReason::IdleTimeout),
                Some(Deadline::Write) => self.close(key, CloseReason::WriteTimeout),
                Some(Deadline::Linger) => {
                    let reason = conn.ending().unwrap_or(CloseReason::ByClient);
                    self.close(key, reason);
                }
                None => debug_assert!(false, "a closed connection {key} had a timer"),
            }
        }
    }

    // ---- flush --------------------------------------------------------------------------

    /// Writes what was queued, oldest first, up to `FLUSH_BUDGET` connections. Serving one can
    /// queue more (a request that waited behind an answer may be a publish that wakes polls):
    /// those join the back of the queue, in this turn if the budget allows, else the next.
    fn flush(&mut self) {
        for _ in 0..FLUSH_BUDGET {
            let Some(key) = self.flush_queue.pop_front() else {
                break;
            };
            if self.is_woken(key) {
                self.answer_hold(key); // built now, so at most a slice of answers is in memory
            }
            // The timer or publish that queued it left the state without a timer: `fresh`
            // arms one.
            self.write_and_resume(key, true);
        }
        if !self.flush_queue.is_empty() {
            return;
        }
        // A fan-out to 15,000 grew the queue to 120 KB; a burst does not pin its peak.
        self.flush_queue.shrink_to(FLUSH_BUDGET);
        if let Some(started) = self.holds.fanout_started.take() {
            self.costs.polls.last_fanout_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            debug!(
                "fan-out: {} answers written {} µs after the publish",
                self.costs.polls.last_fanout_woken, self.costs.polls.last_fanout_us
            );
        }
    }

    // ---- reap ---------------------------------------------------------------------------

    /// Frees closed connections. Dropping the stream closes the descriptor, which also
    /// removes it from epoll's interest list, so no explicit deregister is needed. A freed
    /// descriptor ends a pause in accepting (connections closed by that are reaped next turn).
    fn reap(&mut self) {
        if self.reap_queue.is_empty() {
            return;
        }
        if !self.flush_queue.is_empty() {
            // A carried entry must not reach whichever connection gets the key next.
            let connections = &self.connections;
            self.flush_queue.retain(|&key| connections.get(key).is_some_and(|c| c.state != State::Closed));
        }
        for key in self.reap_queue.drain(..) {
            #[cfg(debug_assertions)]
            self.invariants.freed(key);
            let conn = self.connections.remove(key);
            debug_assert!(conn.state == State::Closed && conn.timer.is_none() && conn.buffers.is_none());
        }
        self.resume_accepting();
    }

    // ---- the cost view ------------------------------------------------------------------

    pub(super) fn count_state(&mut self, state: State, delta: i64) {
        let counter = match state {
            State::Reading => &mut self.costs.by_state.reading,
            State::Idle => &mut self.costs.by_state.idle,
            State::Writing => &mut self.costs.by_state.writing,
            State::Held => &mut self.costs.by_state.held,
            State::Closing => &mut self.costs.by_state.closing,
            State::Closed => return,
        };
        *counter = counter.wrapping_add_signed(delta);
    }

    /// The cost view now. Reading `/proc` takes a descriptor, which at the open-file limit
    /// only the spare can lend.
    pub(super) fn snapshot(&mut self) -> Snapshot {
        // Counted with the spare: the `/proc` reads below borrow its descriptor, not another.
        let fds_open = self.fds_open();
        self.admission.spare = None;
        let snapshot = self.measure(fds_open);
        self.admission.spare = admission::open_spare();
        snapshot
    }

    /// Descriptors open now, counted rather than listed: one per slab entry (closed ones keep
    /// theirs until `reap`), the listener until a drain drops it, and the spare.
    fn fds_open(&self) -> u64 {
        self.costs.fds_at_start
            + self.connections.len() as u64
            + u64::from(self.admission.listener.is_some())
            + u64::from(self.admission.spare.is_some())
    }

    fn measure(&self, fds_open: u64) -> Snapshot {
        Snapshot {
            uptime_secs: self.started.elapsed().as_secs_f64(),
            fds_open,
            fds_limit: stats::fds_limit(),
            // Closed connections wait in the slab until `reap`; they are already counted in `closed.*`.
            connections_open: (self.connections.len() - self.reap_queue.len()) as u64,
            by_state: self.costs.by_state,
            totals: self.costs.totals.clone(),
            polls: self.costs.polls,
            topics: self.holds.topics.count() as u64,
            messages: self.holds.topics.retained(),
            retained_bytes: self.holds.topics.retained_bytes() as u64,
            max_retained_bytes: self.holds.topics.max_retained_bytes() as u64,
            evicted: self.holds.topics.evicted(),
            forgotten: self.holds.topics.forgotten(),
            timers_armed: self.wheel.len() as u64,
            rss_bytes: stats::rss_bytes(),
            connection_bytes: (self.connections.capacity() * connection::ENTRY_BYTES
                + self.wheel.memory_bytes()
                + self.holds.topics.hold_list_bytes()) as u64,
            buffer_bytes: self.pool.lent_bytes() as u64,
            pool_bytes: self.pool.capacity() as u64,
            kernel: stats::sockstat(),
        }
    }
}
