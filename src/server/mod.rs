//! The reactor: one `mio::Poll`, the listener, every socket, the timer wheel, and the loop that
//! turns readiness into events for the connections' machines (`connection`). The only module
//! that touches sockets; what a request means is the service's (`service`, `poll`).
//!
//! `run_once` is one turn of the loop, in named phases; each hands `Event`s to the machines and
//! does what their `Want`s ask (`process`, `apply`):
//!
//! ```text
//! next_deadline  how long poll() may sleep: the wheel's earliest deadline (no sleep while
//!                closed connections wait to be reaped, or newcomers or answers are carried)
//! poll           epoll_wait; then the clock is read, once for the whole turn
//! dispatch       a connection: Event::Ready (it reads, parses, answers and writes at once);
//!                SIGNALS: start draining (Event::Drain to every connection); then LISTENER:
//!                accept up to `ACCEPT_BUDGET` newcomers (`admission`: the limits)
//! expire_timers  every due deadline: Event::Deadline to its connection; the drain's end, the
//!                listener's back-off, the topic sweep
//! flush          up to `FLUSH_BUDGET` connections queued by something other than their own
//!                event (Event::Flush): a timer's 408 or `timeout`, a publish's woken polls
//!                (each answer is built and written here), requests that waited behind them
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
//! 3. A connection has at most one armed timer, at the deadline its machine last asked for
//!    (`Want::timer`); only a connection whose timer fired and whose answer waits in the flush
//!    queue has none.
//! 4. WRITABLE interest is registered only while output is pending (`StateKind::Writing`).
//! 5. Readiness is drained until `WouldBlock` (or a short read or write, which means the same
//!    for a TCP socket); `WouldBlock` is never an error (the machine's `read_input`).
//! 6. A snapshot costs O(1) in connections: descriptors, states, holds and buffer bytes are
//!    counted as they change, never recounted by walking the slab.
//!
//! In debug builds `check_invariants` walks the whole structure after every turn and checks
//! what can be checked of these (see `invariants`).

use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::io::{self, ErrorKind};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::backoff::XorShift;
use crate::buffer::BufferPool;
use crate::config::{Config, FD_RESERVE};
use crate::connection::{deadline_after, Connection, Event, Io, Settings, StateKind, Timer, Turn, Want};
use crate::http::cors::AllowedOrigins;
use crate::http::date::HttpDate;
use crate::http::request::Limits;
use crate::stats;
use crate::timer::{Tick, TimerKey, Wheel};
use admission::{Accepting, Admission};
use service::{ReactorFigures, Service};

const LISTENER: Token = Token(usize::MAX);
const SIGNALS: Token = Token(usize::MAX - 1);
/// The worker's `Waker`: the shared log has news for it (`--workers N`).
const INBOX: Token = Token(usize::MAX - 2);
/// The wheel's values for the server-wide drain deadline and the listener's back-off after
/// running out of descriptors; never slab keys (invariant 1).
const DRAIN_TIMER: usize = usize::MAX;
const ACCEPT_TIMER: usize = usize::MAX - 1;
/// The wheel's value for the periodic sweep that forgets idle topics (`poll::sweep_topics`).
const TOPIC_SWEEP_TIMER: usize = usize::MAX - 2;
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
#[cfg(debug_assertions)]
mod invariants;
mod poll;
mod service;
mod workers;

pub use workers::Workers;

/// A slab entry: the socket, its one timer, and the connection's machine. Kept small on
/// purpose: an idle connection costs this plus one timer entry (see `docs/costs.md`).
struct Slot {
    stream: TcpStream,
    /// The one armed timer; its meaning follows the machine's state.
    timer: Option<TimerKey>,
    conn: Connection,
}

/// Bytes one slab slot takes: slab stores `enum Entry { Vacant(usize), Occupied(T) }`, which
/// this private mirror reproduces, since slab does not export its entry type.
pub const ENTRY_BYTES: usize = {
    #[allow(dead_code)]
    enum SlabEntry {
        Vacant(usize),
        Occupied(Slot),
    }
    std::mem::size_of::<SlabEntry>()
};

impl Io for TcpStream {
    fn shutdown_write(&mut self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

/// The reactor's state, grouped by what owns it: the loop's own (the poll, the slab, the wheel,
/// the buffer pool, the queues of the flush and reap phases, the clock), `admission` (the
/// listener and the limits a newcomer meets) and `service` (what the endpoints answer: the
/// topics, the polls held on them, and the counters of the cost view).
pub struct Server {
    poll: Poll,
    signals: Signals,
    connections: Slab<Slot>,
    wheel: Wheel<usize>,
    pool: BufferPool,
    /// Connections with answers queued outside their own event, written in the flush phase,
    /// oldest first; what `FLUSH_BUDGET` leaves is carried to the next turn.
    flush_queue: VecDeque<usize>,
    /// Connections closed this turn, freed in the reap phase.
    reap_queue: Vec<usize>,
    settings: Settings,
    started: Instant,
    now: Tick,
    date: HttpDate,
    admission: Admission,
    service: Service,
    /// Descriptors open at start other than the listener and the spare (stdio, epoll, the
    /// signal pipe): with those two and one per slab entry, `fds.open` without reading `/proc`.
    fds_at_start: u64,
    draining: bool,
    stop: bool,
    /// What only the debug invariant checks need.
    #[cfg(debug_assertions)]
    invariants: invariants::Mirror,
}

impl Server {
    /// Binds the listener and sets up the reactor; `run` serves.
    pub fn bind(config: Config) -> io::Result<Server> {
        Server::bind_worker(config, None)
    }

    /// A reactor alone, or worker `crew.worker` of several, which share the port (each listener
    /// has `SO_REUSEPORT`), the clock's start, the topics and the board of figures.
    fn bind_worker(config: Config, crew: Option<workers::Seat>) -> io::Result<Server> {
        let fds_before = stats::fds_open();
        let poll = Poll::new()?;
        let listen = crew.as_ref().map_or(config.listen, |seat| seat.listen);
        let mut listener = listen_on(listen, crew.is_some())?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        poll.registry().register(&mut signals, SIGNALS, Interest::READABLE)?;
        let limits = Limits {
            max_head_bytes: config.max_head_bytes,
            max_uri_bytes: config.max_head_bytes.min(8192),
            max_body_bytes: config.max_message_bytes,
        };
        let settings = Settings {
            input_cap: 2 * limits.max_head_bytes + limits.max_body_bytes + 1,
            socket_input_cap: crate::ws::frame::input_cap(limits.max_body_bytes),
            limits,
            header_timeout: config.header_timeout,
            idle_timeout: config.idle_timeout,
            write_timeout: config.write_timeout,
            max_requests: config.max_requests,
            heartbeat: config.sse_heartbeat,
            origins: AllowedOrigins::new(&config.allow_origin),
        };
        // The open-file limit is the process's: several workers divide it, and the limits.
        let share = |total: usize| total.div_ceil(config.workers).max(1);
        let fd_limit = usize::try_from(stats::fds_limit()).unwrap_or(usize::MAX);
        let max_connections =
            share(config.max_connections.unwrap_or_else(|| fd_limit.saturating_sub(FD_RESERVE * config.workers)));
        let max_held = config.max_held.map_or(max_connections, share);
        if crew.as_ref().is_none_or(|seat| seat.worker == 0) {
            let per = if config.workers > 1 { " per worker" } else { "" };
            info!("limits: {max_connections} connections{per}, {fd_limit} open files");
        }
        let jitter = XorShift::new(RandomState::new().hash_one((std::process::id(), listen)));
        let started = crew.as_ref().map_or_else(Instant::now, |seat| seat.started);
        let mut service = Service::new(config, max_held, jitter, started);
        if let Some(seat) = crew {
            let waker = std::sync::Arc::new(Waker::new(poll.registry(), INBOX)?);
            service.shared = Some(seat.join(waker));
        }
        // Everything this server will ever open is open now but for connections, so this one
        // reading of `/proc` is the base that `fds.open` counts from: the process's descriptors
        // too when alone; only its own (epoll, signals, waker) as one of several, whose board
        // adds the process's once.
        let fds_after = stats::fds_open().saturating_sub(1 + u64::from(service.spare.is_some()));
        let fds_at_start = if service.shared.is_some() { fds_after.saturating_sub(fds_before) } else { fds_after };
        let mut server = Server {
            poll,
            signals,
            connections: Slab::new(),
            wheel: Wheel::new(),
            pool: BufferPool::default(),
            flush_queue: VecDeque::new(),
            reap_queue: Vec::new(),
            settings,
            started,
            now: 0,
            date: HttpDate::new(),
            admission: Admission::new(listener, max_connections),
            service,
            fds_at_start,
            draining: false,
            stop: false,
            #[cfg(debug_assertions)]
            invariants: invariants::Mirror::default(),
        };
        server.refresh_clock();
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
        if let Some(member) = &self.service.shared {
            // One turn's figures for whichever worker answers the next `/stats`.
            self.service.reactor = self.figures();
            member.board.post(member.worker, self.service.own_figures());
        }
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

    /// The clock is read here, once per turn; everything else takes `now` as an argument.
    fn refresh_clock(&mut self) {
        self.now = self.now_tick();
        self.date.refresh(SystemTime::now());
    }

    // ---- one connection's event ---------------------------------------------------------

    /// Hands an event to connection `key`'s machine and does what it asks: re-arm or cancel
    /// its timer, follow its state with WRITABLE interest, queue it for the flush phase or the
    /// reap phase.
    fn process(&mut self, key: usize, event: Event) {
        // Any request may be `/stats`, answered inside this call; the figures are a dozen loads
        // (`figures`), so they are handed over every time rather than asked for.
        self.service.reactor = self.figures();
        let Some(slot) = self.connections.get_mut(key) else {
            return; // spurious: mio allows events for sources already gone
        };
        let before = slot.conn.kind();
        let mut turn = Turn {
            key,
            now: self.now,
            date: &self.date,
            draining: self.draining,
            settings: &self.settings,
            pool: &mut self.pool,
            endpoints: &mut self.service,
        };
        let want = slot.conn.process(event, &mut slot.stream, &mut turn);
        self.apply(key, before, want);
    }

    fn apply(&mut self, key: usize, before: StateKind, want: Want) {
        let slot = &mut self.connections[key];
        let after = slot.conn.kind();
        match want.timer {
            Timer::Keep => {}
            Timer::At(at) => {
                if let Some(old) = slot.timer.take() {
                    self.wheel.cancel(old);
                }
                slot.timer = Some(self.wheel.insert(at, key));
            }
            Timer::Cancel => {
                if let Some(old) = slot.timer.take() {
                    self.wheel.cancel(old);
                }
            }
        }
        if (before == StateKind::Writing) != (after == StateKind::Writing) && after != StateKind::Closed {
            let interest =
                if after == StateKind::Writing { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
            if let Err(e) = self.poll.registry().reregister(&mut slot.stream, Token(key), interest) {
                warn!("cannot change interest of {key}: {e}");
            }
            #[cfg(debug_assertions)]
            self.invariants.interest_changed(key, interest);
        }
        if let Some(reason) = want.closed {
            self.service.costs.totals.closed.count(reason);
            if slot.conn.refused() {
                self.admission.refusing -= 1;
            }
            self.reap_queue.push(key);
        }
        if want.flush {
            self.flush_queue.push_back(key);
        }
        if !self.service.woken.is_empty() {
            self.flush_queue.extend(self.service.woken.drain(..));
        }
    }

    /// The reactor's figures for the cost view, each O(1).
    fn figures(&self) -> ReactorFigures {
        // Closed connections wait in the slab until `reap`; they keep their descriptors until
        // then, and are already counted in `closed.*`.
        let fds_open = self.fds_at_start
            + self.connections.len() as u64
            + u64::from(self.admission.listener.is_some())
            + u64::from(self.service.spare.is_some());
        ReactorFigures {
            fds_open,
            connections_open: (self.connections.len() - self.reap_queue.len()) as u64,
            connection_bytes: (self.connections.capacity() * ENTRY_BYTES + self.wheel.memory_bytes()) as u64,
            timers_armed: self.wheel.len() as u64,
            buffer_bytes: self.pool.lent_bytes() as u64,
            pool_bytes: self.pool.capacity() as u64,
        }
    }

    // ---- dispatch -----------------------------------------------------------------------

    fn dispatch(&mut self, events: &Events) {
        let mut newcomers = self.admission.accepting == Accepting::Backlogged;
        for event in events.iter() {
            match event.token() {
                LISTENER => newcomers = true,
                SIGNALS => self.on_signal(),
                INBOX => {
                    self.service.take_news(self.now, None);
                    self.flush_queue.extend(self.service.woken.drain(..));
                }
                Token(key) => {
                    let hung_up = event.is_read_closed() || event.is_error();
                    let ready = Event::Ready {
                        readable: event.is_readable() || hung_up,
                        writable: event.is_writable() || event.is_error(),
                        hung_up,
                    };
                    self.process(key, ready);
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

    /// Graceful shutdown: stop accepting, close what is idle, answer held polls, let in-flight
    /// answers finish (they now say `Connection: close`), and give up at `--drain-timeout`.
    fn start_drain(&mut self) {
        let timeout = self.service.config.drain_timeout;
        info!("draining {} connections (up to {timeout:?})", self.connections.len());
        self.draining = true;
        if let Some(mut listener) = self.admission.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        if let Accepting::Paused(timer) = std::mem::replace(&mut self.admission.accepting, Accepting::Open) {
            self.wheel.cancel(timer);
        }
        self.wheel.insert(deadline_after(self.now, timeout), DRAIN_TIMER);
        let keys: Vec<usize> = self.connections.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.process(key, Event::Drain);
        }
    }

    // ---- expire_timers ------------------------------------------------------------------

    fn expire_timers(&mut self) {
        while let Some(key) = self.wheel.poll(self.now) {
            match key {
                DRAIN_TIMER => {
                    info!("drain timeout: {} connections cut", self.connections.len());
                    self.stop = true;
                }
                ACCEPT_TIMER => self.resume_accepting(),
                TOPIC_SWEEP_TIMER => {
                    self.service.sweep_topics(self.now);
                    self.arm_topic_sweep();
                }
                _ => {
                    let Some(slot) = self.connections.get_mut(key) else {
                        debug_assert!(false, "a timer outlived its connection {key}");
                        continue;
                    };
                    slot.timer = None;
                    self.process(key, Event::Deadline);
                }
            }
        }
    }

    fn arm_topic_sweep(&mut self) {
        let period = poll::topic_sweep_period(self.service.config.topic_idle_timeout);
        self.wheel.insert(deadline_after(self.now, period), TOPIC_SWEEP_TIMER);
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
            // A woken poll's answer is built now, so at most a slice of answers is in memory.
            self.process(key, Event::Flush);
        }
        if !self.flush_queue.is_empty() {
            return;
        }
        // A fan-out to 15,000 grew the queue to 120 KB; a burst does not pin its peak.
        self.flush_queue.shrink_to(FLUSH_BUDGET);
        if let Some(started) = self.service.fanout_started.take() {
            let polls = &mut self.service.costs.polls;
            polls.last_fanout_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            debug!(
                "fan-out: {} answers written {} µs after the publish",
                polls.last_fanout_woken, polls.last_fanout_us
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
            self.flush_queue.retain(|&key| connections.get(key).is_some_and(|s| s.conn.kind() != StateKind::Closed));
        }
        for key in self.reap_queue.drain(..) {
            #[cfg(debug_assertions)]
            self.invariants.freed(key);
            let slot = self.connections.remove(key);
            debug_assert!(
                slot.conn.kind() == StateKind::Closed && slot.timer.is_none() && slot.conn.buffers().is_none()
            );
        }
        self.resume_accepting();
    }
}

/// A non-blocking listener on `addr`, with `SO_REUSEPORT` when it shares the port with other
/// workers' listeners (the kernel then spreads new connections over them by a hash of the
/// peer's address). Its backlog is `LISTEN_BACKLOG`, not std's 128: a burst of more
/// connections than that (every long-poll client reconnecting after a restart) overflows the
/// accept queue, and each dropped SYN costs its client a 1 s retransmit. The kernel caps it at
/// net.core.somaxconn.
fn listen_on(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // As std and nginx do: a restart may bind while the last life's connections linger.
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(TcpListener::from_std(socket.into()))
}

#[cfg(test)]
mod tests {
    /// An idle connection costs one slab slot and one timer entry; keep both small.
    #[test]
    fn per_connection_structures_stay_small() {
        let (slot, timer) = (super::ENTRY_BYTES, crate::timer::ENTRY_BYTES);
        println!(
            "slab slot: {slot} bytes (a Slot: {}, of which the machine {} and the socket {}), timer entry: {timer} bytes",
            size_of::<super::Slot>(),
            size_of::<crate::connection::Connection>(),
            size_of::<mio::net::TcpStream>()
        );
        // Checked when the test compiles: a field that grows the entry fails the build of the tests.
        const { assert!(super::ENTRY_BYTES <= 80, "the slab slot grew") };
        // The machine alone, which does not depend on the build (mio's socket is 4 bytes in a
        // release build, 16 in a debug one): a state that grows past a held poll's fails here.
        const { assert!(size_of::<crate::connection::Connection>() <= 48, "the connection machine grew") };
        const { assert!(crate::timer::ENTRY_BYTES <= 48, "the timer entry grew") };
    }
}
