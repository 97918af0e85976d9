//! The reactor: one `mio::Poll`, the listener, every connection, the timer wheel, and the loop
//! that turns readiness into answers. The only module that touches sockets.
//!
//! `run_once` is one turn of the loop, in named phases:
//!
//! ```text
//! next_deadline  how long poll() may sleep: the wheel's earliest deadline
//! poll           epoll_wait
//! dispatch       LISTENER: accept until WouldBlock; SIGNALS: start draining;
//!                a connection: read, parse, answer and write its own requests at once
//! expire_timers  every due deadline: head (408), idle, write, linger, drain
//! flush          write answers queued for connections by something other than their own
//!                event (a 408 from a timer)
//! reap           free the slab keys of connections closed during this turn
//! ```
//!
//! Invariants (checked with `debug_assert!` where they can be):
//! 1. A connection's token is its slab key; `LISTENER` and `SIGNALS` lie outside the key range.
//! 2. Slab keys are freed only in `reap`, after the event batch, so a stale event in the same
//!    batch finds a `Closed` connection, never a new one under a reused key.
//! 3. A connection has at most one armed timer, and its meaning follows its state
//!    (`State::deadline`). `enter` is the one function that changes state, and it re-arms or
//!    cancels the timer in the same step.
//! 4. WRITABLE interest is registered only while output is pending (`State::Writing`).
//! 5. Readiness is drained until `WouldBlock` (or a short read or write, which means the same
//!    for a TCP socket); `WouldBlock` is never an error.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::buffer::{BufferPool, Buffers};
use crate::config::{Config, FD_RESERVE};
use crate::connection::{self, Connection, Deadline, KeepAliveInput, State};
use crate::http::date::HttpDate;
use crate::http::request::{self, HttpError, Limits, Method, Request};
use crate::http::response::{self, Persistence, Response, Status};
use crate::routes::{self, Route};
use crate::stats::{self, ByState, CloseReason, Snapshot, Totals};
use crate::timer::{Tick, Wheel};

const LISTENER: Token = Token(usize::MAX);
const SIGNALS: Token = Token(usize::MAX - 1);
/// The wheel's value for the server-wide drain deadline; never a slab key (invariant 1).
const DRAIN_TIMER: usize = usize::MAX;
/// How long a closing connection waits for the peer's FIN after our last answer.
const LINGER: Duration = Duration::from_secs(2);
/// Stop parsing pipelined requests while this much output waits for the socket: a client that
/// sends without reading must not grow our memory without bound.
const OUTPUT_CAP: usize = 256 * 1024;
/// Connections that may be answered 503 and lingering on top of `--max-connections`; beyond
/// this a newcomer is closed at once without an answer.
const REJECT_BUDGET: usize = FD_RESERVE / 2;
const EVENTS_CAPACITY: usize = 1024;

pub struct Server {
    poll: Poll,
    /// `None` once draining: dropping the listener makes the kernel refuse new connections.
    listener: Option<TcpListener>,
    signals: Signals,
    connections: Slab<Connection>,
    wheel: Wheel<usize>,
    pool: BufferPool,
    /// Connections with answers queued outside their own event, written in the flush phase.
    flush_queue: Vec<usize>,
    /// Connections closed this turn, freed in the reap phase.
    reap_queue: Vec<usize>,
    config: Config,
    limits: Limits,
    /// Unread input never exceeds this: the parser errors before a request could need more.
    input_cap: usize,
    max_connections: usize,
    started: Instant,
    now: Tick,
    date: HttpDate,
    totals: Totals,
    by_state: ByState,
    draining: bool,
    stop: bool,
}

impl Server {
    /// Binds the listener and sets up the reactor; `run` serves.
    pub fn bind(config: Config) -> io::Result<Server> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(config.listen)?;
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
        Ok(Server {
            poll,
            listener: Some(listener),
            signals,
            connections: Slab::new(),
            wheel: Wheel::new(),
            pool: BufferPool::default(),
            flush_queue: Vec::new(),
            reap_queue: Vec::new(),
            input_cap: 2 * limits.max_head_bytes + limits.max_body_bytes + 1,
            limits,
            config,
            max_connections,
            started: Instant::now(),
            now: 0,
            date: HttpDate::new(),
            totals: Totals::default(),
            by_state: ByState::default(),
            draining: false,
            stop: false,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.listener {
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
        if self.draining && self.connections.is_empty() {
            self.stop = true;
        }
        Ok(())
    }

    // ---- next_deadline ------------------------------------------------------------------

    fn next_deadline(&self) -> Option<Duration> {
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

    fn deadline(&self, after: Duration) -> Tick {
        self.now + Tick::try_from(after.as_millis()).unwrap_or(Tick::MAX / 2)
    }

    // ---- dispatch -----------------------------------------------------------------------

    fn dispatch(&mut self, events: &Events) {
        for event in events.iter() {
            match event.token() {
                LISTENER => self.accept(),
                SIGNALS => self.on_signal(),
                Token(key) => {
                    let Some(conn) = self.connections.get_mut(key) else {
                        continue; // spurious: mio allows events for sources already gone
                    };
                    let readable = event.is_readable() || event.is_read_closed() || event.is_error();
                    match conn.state {
                        State::Closed => {}
                        State::Closing => self.discard_input(key),
                        State::Writing => {
                            if readable {
                                conn.input_ready = true; // taken up once the output drains
                            }
                            if event.is_writable() || event.is_error() {
                                self.on_writable(key);
                            }
                        }
                        State::Reading | State::Idle if readable => self.serve(key),
                        State::Reading | State::Idle => {}
                    }
                }
            }
        }
    }

    fn accept(&mut self) {
        while let Some(listener) = &self.listener {
            match listener.accept() {
                Ok((stream, peer)) => {
                    debug!("accepted {peer}");
                    self.admit(stream);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and friends: the pending connection stays in the backlog and the
                    // next readiness edge retries. (Pausing and reclaiming come with hardening.)
                    warn!("accept failed: {e}");
                    return;
                }
            }
        }
    }

    /// Gives an accepted socket a slab entry; at the connection limit it is answered 503.
    fn admit(&mut self, stream: TcpStream) {
        let open = self.connections.len();
        self.totals.accepted += 1;
        let rejected = open >= self.max_connections;
        if rejected && open >= self.max_connections + REJECT_BUDGET {
            self.totals.rejected += 1;
            self.totals.closed.count(CloseReason::Rejected);
            return; // dropped: closed without an answer
        }
        // Small answers go out at once; we never write a response in pieces.
        let _ = stream.set_nodelay(true);
        let entry = self.connections.vacant_entry();
        let key = entry.key();
        let mut conn = Connection::new(stream);
        if let Err(e) = self.poll.registry().register(&mut conn.stream, Token(key), Interest::READABLE) {
            warn!("cannot register a connection: {e}");
            self.totals.closed.count(CloseReason::Error);
            return; // the entry was never inserted, so there is nothing to roll back
        }
        entry.insert(conn);
        debug_assert!(key < SIGNALS.0, "slab keys stay below the reserved tokens");
        self.count_state(State::Reading, 1);
        if rejected {
            self.totals.rejected += 1;
            let response = Response::error(Status::SERVICE_UNAVAILABLE, b"at the connection limit, retry later\n")
                .with_headers(&[("Retry-After", "1")]);
            self.queue_final_answer(key, &response, CloseReason::Rejected);
            self.write_output(key, false);
        } else {
            self.arm(key, Deadline::Head);
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
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
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
    }

    /// Reads what the socket has, answers every complete request in order, writes the
    /// answers, and repeats while backpressure left readable input behind.
    fn serve(&mut self, key: usize) {
        loop {
            let answered = self.read_and_answer(key);
            self.write_output(key, answered);
            match self.connections.get(key) {
                Some(conn) if conn.input_ready && matches!(conn.state, State::Reading | State::Idle) => {}
                _ => return,
            }
        }
    }

    /// The socket takes output again: write it, then take up input left behind meanwhile.
    fn on_writable(&mut self, key: usize) {
        self.write_output(key, false);
        match self.connections.get(key) {
            Some(conn) if conn.input_ready && matches!(conn.state, State::Reading | State::Idle) => self.serve(key),
            _ => {}
        }
    }

    /// Returns whether at least one request was answered (a new request starts a new head
    /// deadline).
    fn read_and_answer(&mut self, key: usize) -> bool {
        let Some(conn) = self.connections.get_mut(key) else {
            return false;
        };
        conn.input_ready = false;
        let mut buffers = conn.buffers.take().unwrap_or_else(|| self.pool.take());
        loop {
            if buffers.unread_len() >= self.input_cap {
                conn.input_ready = true;
                break;
            }
            match buffers.read_from(&mut conn.stream, self.input_cap) {
                Ok(0) => {
                    conn.read_closed = true;
                    break;
                }
                Ok(_) if buffers.is_full() => {} // maybe more: read again
                Ok(_) => break,                  // a short read drained the socket
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!("read failed on {key}: {e}");
                    conn.buffers = Some(buffers);
                    self.close(key, CloseReason::ByClient);
                    return false;
                }
            }
        }
        if conn.state == State::Idle && buffers.unread_len() > 0 {
            self.enter(key, State::Reading, true); // the request's head deadline starts now
        }
        let answered = self.answer_requests(key, &mut buffers);
        self.connections[key].buffers = Some(buffers);
        answered
    }

    /// Parses and answers every complete request in `buffers`, in order (pipelining).
    fn answer_requests(&mut self, key: usize, buffers: &mut Buffers) -> bool {
        let mut answered = false;
        while buffers.unread_len() > 0 {
            let conn = &mut self.connections[key];
            if conn.closing.is_some() {
                buffers.discard_input(); // nothing after a closing answer is read
                break;
            }
            if buffers.pending_output().len() >= OUTPUT_CAP {
                conn.input_ready = true; // resumes once the output drains
                break;
            }
            let served_before = conn.served;
            let (input, output) = buffers.split();
            let (len, closing) = match request::parse(input, &self.limits) {
                Ok(None) if input.len() < self.input_cap => break,
                Ok(None) => (input.len(), Some(self.answer_error(HttpError::HeaderFieldsTooLarge, output))),
                Ok(Some(req)) => (req.len, self.answer(&req, served_before, output)),
                Err(e) => (input.len(), Some(self.answer_error(e, output))),
            };
            buffers.consume(len);
            let conn = &mut self.connections[key];
            conn.served += 1;
            conn.closing = closing;
            answered = true;
        }
        answered
    }

    /// Answers one request into `out`; returns why the connection must close after it, if so.
    fn answer(&mut self, req: &Request, served_before: u32, out: &mut Vec<u8>) -> Option<CloseReason> {
        self.totals.requests += 1;
        if served_before > 0 {
            self.totals.reused += 1;
        }
        let (persistence, closing) = connection::keep_alive(&KeepAliveInput {
            version: req.version,
            close_requested: req.close,
            keep_alive_requested: req.keep_alive,
            served_before,
            max_requests: self.config.max_requests,
            idle_timeout_secs: self.config.idle_timeout.as_secs(),
            draining: self.draining,
            framing_error: false,
        });
        let head_only = req.method == Method::Head;
        let body: String;
        let allow: [(&str, &str); 1];
        let response = match routes::route(req.method, req.path) {
            Route::Plaintext => Response::new(Status::OK, "text/plain", b"Hello, World!"),
            Route::Stats => {
                body = self.snapshot().to_json();
                Response::new(Status::OK, "application/json", body.as_bytes())
            }
            Route::Metrics => {
                body = self.snapshot().to_prometheus();
                Response::new(Status::OK, "text/plain; version=0.0.4", body.as_bytes())
            }
            Route::NotFound => Response::error(Status::NOT_FOUND, b"no such endpoint\n"),
            Route::MethodNotAllowed(methods) => {
                allow = [("Allow", methods)];
                Response::error(Status::METHOD_NOT_ALLOWED, b"method not allowed here\n").with_headers(&allow)
            }
        };
        response::write(out, &response, persistence, head_only, &self.date);
        closing
    }

    /// Answers a request that could not be parsed; the connection closes after it, because
    /// where the next request starts is no longer known.
    fn answer_error(&mut self, error: HttpError, out: &mut Vec<u8>) -> CloseReason {
        self.totals.requests += 1;
        debug!("bad request: {}", error.message());
        let line = format!("{}\n", error.message());
        let response = Response::error(Status::from_code(error.status()), line.as_bytes());
        response::write(out, &response, Persistence::Close, false, &self.date);
        CloseReason::Error
    }

    /// Serialises an answer after which the connection closes, outside of request parsing
    /// (408 from a timer, 503 at the limit).
    fn queue_final_answer(&mut self, key: usize, response: &Response, reason: CloseReason) {
        let conn = &mut self.connections[key];
        let buffers = conn.buffers.get_or_insert_with(|| self.pool.take());
        buffers.discard_input();
        response::write(buffers.output(), response, Persistence::Close, false, &self.date);
        conn.closing = Some(reason);
    }

    /// Writes pending output until the socket stops taking it, then moves the connection to
    /// the state that follows. `fresh` says a request was answered (new head deadline).
    fn write_output(&mut self, key: usize, fresh: bool) {
        let Some(conn) = self.connections.get_mut(key) else {
            return;
        };
        if conn.state == State::Closed {
            return;
        }
        let mut progressed = false;
        if let Some(buffers) = conn.buffers.as_mut() {
            loop {
                let pending = buffers.pending_output();
                if pending.is_empty() {
                    break;
                }
                match conn.stream.write(pending) {
                    Ok(n) if n > 0 => {
                        let short = n < pending.len();
                        buffers.advance_output(n);
                        progressed = true;
                        if short {
                            break; // the send buffer is full: wait for WRITABLE
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    result => {
                        debug!("write failed on {key}: {result:?}");
                        self.close(key, CloseReason::ByClient);
                        return;
                    }
                }
            }
        }
        self.settle(key, fresh || progressed);
    }

    /// The transition function: moves a connection to the state its buffers and flags call
    /// for. `fresh` restarts the deadline even if the state does not change.
    fn settle(&mut self, key: usize, fresh: bool) {
        let conn = &self.connections[key];
        let buffers = conn.buffers.as_deref();
        let output_pending = buffers.is_some_and(|b| !b.pending_output().is_empty());
        let input_pending = buffers.is_some_and(|b| b.unread_len() > 0);
        if output_pending {
            self.enter(key, State::Writing, fresh);
        } else if let Some(reason) = conn.closing {
            if conn.read_closed {
                self.close(key, reason);
            } else {
                self.enter(key, State::Closing, false);
            }
        } else if conn.read_closed {
            self.close(key, CloseReason::ByClient);
        } else if input_pending {
            self.enter(key, State::Reading, fresh);
        } else if self.draining {
            self.close(key, CloseReason::Drain);
        } else {
            self.enter(key, State::Idle, false);
        }
    }

    /// Changes a connection's state, keeping invariants 3 and 4: the timer follows the state
    /// (kept when the state does not change and `fresh` is false), WRITABLE interest follows
    /// `Writing`, buffers go back to the pool on `Idle`, the write side shuts on `Closing`.
    fn enter(&mut self, key: usize, next: State, fresh: bool) {
        debug_assert!(next != State::Closed, "closing goes through close()");
        let conn = &mut self.connections[key];
        let previous = conn.state;
        if previous == next && !fresh {
            return;
        }
        conn.state = next;
        let interest = match (previous == State::Writing, next == State::Writing) {
            (false, true) => Some(Interest::READABLE | Interest::WRITABLE),
            (true, false) => Some(Interest::READABLE),
            _ => None,
        };
        if let Some(interest) = interest {
            if let Err(e) = self.poll.registry().reregister(&mut conn.stream, Token(key), interest) {
                warn!("cannot change interest of {key}: {e}");
            }
        }
        match next {
            State::Idle => {
                if let Some(buffers) = conn.buffers.take() {
                    self.pool.give(buffers);
                }
            }
            State::Closing => {
                let _ = conn.stream.shutdown(Shutdown::Write);
            }
            _ => {}
        }
        self.count_state(previous, -1);
        self.count_state(next, 1);
        if let Some(deadline) = next.deadline() {
            self.arm(key, deadline);
        }
    }

    /// Arms the connection's one timer for `deadline`, replacing the one it had.
    fn arm(&mut self, key: usize, deadline: Deadline) {
        let after = match deadline {
            Deadline::Head => self.config.header_timeout,
            Deadline::Idle => self.config.idle_timeout,
            Deadline::Write => self.config.write_timeout,
            Deadline::Linger => LINGER,
        };
        let at = self.deadline(after);
        let conn = &mut self.connections[key];
        if let Some(old) = conn.timer.take() {
            self.wheel.cancel(old);
        }
        conn.timer = Some(self.wheel.insert(at, key));
    }

    /// Marks a connection closed: its timer is cancelled now, its key freed in `reap`.
    fn close(&mut self, key: usize, reason: CloseReason) {
        let conn = &mut self.connections[key];
        if conn.state == State::Closed {
            return;
        }
        debug!("closing {key}: {reason:?} after {} requests", conn.served);
        if let Some(timer) = conn.timer.take() {
            self.wheel.cancel(timer);
        }
        if let Some(mut buffers) = conn.buffers.take() {
            buffers.clear();
            self.pool.give(buffers);
        }
        let previous = std::mem::replace(&mut conn.state, State::Closed);
        self.count_state(previous, -1);
        self.totals.closed.count(reason);
        self.reap_queue.push(key);
    }

    /// A closing connection's input is read and thrown away until the peer's FIN.
    fn discard_input(&mut self, key: usize) {
        let conn = &mut self.connections[key];
        let mut sink = [0u8; 4096];
        loop {
            match conn.stream.read(&mut sink) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => break,
            }
        }
        let reason = conn.closing.unwrap_or(CloseReason::ByClient);
        self.close(key, reason);
    }

    // ---- expire_timers ------------------------------------------------------------------

    fn expire_timers(&mut self) {
        while let Some(key) = self.wheel.poll(self.now) {
            if key == DRAIN_TIMER {
                info!("drain timeout: {} connections cut", self.connections.len());
                self.stop = true;
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
                    self.flush_queue.push(key);
                }
                Some(Deadline::Idle) => self.close(key, CloseReason::IdleTimeout),
                Some(Deadline::Write) => self.close(key, CloseReason::WriteTimeout),
                Some(Deadline::Linger) => {
                    let reason = conn.closing.unwrap_or(CloseReason::ByClient);
                    self.close(key, reason);
                }
                None => debug_assert!(false, "a closed connection {key} had a timer"),
            }
        }
    }

    // ---- flush --------------------------------------------------------------------------

    fn flush(&mut self) {
        let mut queue = std::mem::take(&mut self.flush_queue);
        for key in queue.drain(..) {
            // The head timer fired, so the state has no timer yet: `fresh` arms one.
            self.write_output(key, true);
        }
        self.flush_queue = queue; // keep the allocation
    }

    // ---- reap ---------------------------------------------------------------------------

    /// Frees closed connections. Dropping the stream closes the descriptor, which also
    /// removes it from epoll's interest list, so no explicit deregister is needed.
    fn reap(&mut self) {
        for key in self.reap_queue.drain(..) {
            let conn = self.connections.remove(key);
            debug_assert!(conn.state == State::Closed && conn.timer.is_none() && conn.buffers.is_none());
        }
    }

    // ---- the cost view ------------------------------------------------------------------

    fn count_state(&mut self, state: State, delta: i64) {
        let counter = match state {
            State::Reading => &mut self.by_state.reading,
            State::Idle => &mut self.by_state.idle,
            State::Writing => &mut self.by_state.writing,
            State::Closing => &mut self.by_state.closing,
            State::Closed => return,
        };
        *counter = counter.wrapping_add_signed(delta);
    }

    fn snapshot(&self) -> Snapshot {
        let buffer_bytes: usize = self.connections.iter().filter_map(|(_, c)| c.buffers.as_ref()).map(|b| b.capacity()).sum();
        Snapshot {
            uptime_secs: self.started.elapsed().as_secs_f64(),
            fds_open: stats::fds_open(),
            fds_limit: stats::fds_limit(),
            connections_open: self.connections.len() as u64,
            by_state: self.by_state,
            totals: self.totals.clone(),
            timers_armed: self.wheel.len() as u64,
            rss_bytes: stats::rss_bytes(),
            connection_bytes: (self.connections.capacity() * connection::ENTRY_BYTES + self.wheel.memory_bytes()) as u64,
            buffer_bytes: buffer_bytes as u64,
            pool_bytes: self.pool.capacity() as u64,
            kernel: stats::sockstat(),
            ..Snapshot::default()
        }
    }
}
