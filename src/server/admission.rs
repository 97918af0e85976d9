//! Admission: taking connections off the listener, and what a newcomer meets at the limits.
//!
//! Two limits meet a newcomer. `--max-connections` is ours, checked when a connection is
//! accepted. The open-file limit is the kernel's: `accept` fails with `EMFILE` (or `ENFILE`,
//! system-wide) and the connection stays in the listen backlog. At either one, in this order
//! (docs/architecture.md, "Limits"):
//!
//! 1. **Reclaim**: close the keep-alive connections idle longest, a batch at a time as nginx does
//!    (`ngx_drain_connections`). Busy and held connections are never sacrificed, and neither is
//!    a connection idle for less than `RECLAIM_AFTER`: a client between two requests is in use.
//! 2. **Refuse**: answer 503 with `Retry-After` and close. Up to `REJECT_BUDGET` refused
//!    newcomers get a slab entry: their request is read, so `/stats` and `/metrics` are still
//!    answered at the limit, and their close lingers like any other. Beyond the budget, or when
//!    no descriptor is left, the newcomer is answered at once and closed; at the open-file limit
//!    it is accepted on the spare descriptor, kept open (on `/dev/null`) for exactly this.
//! 3. **Pause**: when descriptors will come back soon (reclaimed connections are freed in the
//!    reap phase of this very turn) or nothing works (not even the spare can be had), stop
//!    accepting until `reap` frees a descriptor or `ACCEPT_BACKOFF` passes.
//!
//! Invariants:
//! - The accept loop never repeats without progress: every turn of it takes a connection off
//!   the backlog, or ends it (`WouldBlock`, or a pause). A level-triggered server that logs an
//!   `EMFILE` and returns to `epoll_wait` spins at 100 % CPU; an edge-triggered one that just
//!   returns strands the backlog until another client happens to connect.
//! - One reactor turn accepts at most `ACCEPT_BUDGET` newcomers; with the budget spent the
//!   listener is `Backlogged` and the next turn accepts again without waiting for an edge
//!   (none will come for connections already queued).
//! - While `Accepting::Paused`, exactly one back-off timer is armed for the listener. Listener
//!   readiness is ignored meanwhile; it is edge-triggered, so resuming calls `accept` itself.

use std::io::{self, ErrorKind, Read, Write};

use log::{debug, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Token};

use super::service::open_spare;
use super::{Server, Slot, ACCEPT_BUDGET, ACCEPT_TIMER, REJECT_BUDGET, SIGNALS};
use crate::connection::{CloseReason, Connection, Event, StateKind};
use crate::http::response::{self, Persistence};
use crate::timer::{Tick, TimerKey};

/// Idle connections younger than this are in use, not reclaimable.
const RECLAIM_AFTER: Tick = 1000;
/// At most this many idle connections are closed in one go (nginx: 32). Each one's descriptor
/// is freed only in the reap phase, so a small batch keeps a turn's overshoot small.
const RECLAIM_BATCH: usize = 8;
/// How long accepting pauses when nothing else will wake it.
const ACCEPT_BACKOFF: Tick = 100;
/// How often running out of descriptors is logged, at most.
const EXHAUSTION_LOG_EVERY: Tick = 1000;

/// Whether listener readiness leads to `accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Accepting {
    /// The backlog was emptied; the next listener event says a newcomer waits.
    Open,
    /// A turn's budget ran out with the backlog maybe not empty: accept again next turn.
    Backlogged,
    /// Out of descriptors: resumes when `reap` frees one, or when this back-off timer fires.
    Paused(TimerKey),
}

/// The listener and what a newcomer meets at the limits.
pub(super) struct Admission {
    /// `None` once draining: dropping the listener makes the kernel refuse new connections.
    pub(super) listener: Option<TcpListener>,
    pub(super) accepting: Accepting,
    /// When running out of descriptors was last logged.
    exhaustion_logged: Option<Tick>,
    /// No idle connection is old enough to reclaim before this tick.
    reclaim_scan_after: Tick,
    pub(super) max_connections: usize,
    /// Connections admitted over `max_connections` only to be refused, not yet closed; at
    /// most `REJECT_BUDGET`.
    pub(super) refusing: usize,
}

impl Admission {
    pub(super) fn new(listener: TcpListener, max_connections: usize) -> Self {
        Admission {
            listener: Some(listener),
            accepting: Accepting::Open,
            exhaustion_logged: None,
            reclaim_scan_after: 0,
            max_connections,
            refusing: 0,
        }
    }
}

fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

impl Server {
    /// Accepts until the backlog is empty or `ACCEPT_BUDGET` newcomers are in, admitting each;
    /// see the module docs for what happens when descriptors run out.
    pub(super) fn accept(&mut self) {
        if matches!(self.admission.accepting, Accepting::Paused(_)) {
            return;
        }
        self.admission.accepting = Accepting::Open;
        for _ in 0..ACCEPT_BUDGET {
            let Some(listener) = &self.admission.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => {
                    debug!("accepted {peer}");
                    self.admit(stream);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                // A connection reset while in the backlog is simply gone.
                Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::ConnectionAborted) => {}
                Err(e) if out_of_descriptors(&e) => {
                    self.service.costs.totals.fds_exhausted += 1;
                    self.log_exhaustion(&e);
                    if !self.make_room() {
                        return;
                    }
                }
                Err(e) => {
                    // ENOBUFS, ENOMEM and the like: retrying at once would only fail again.
                    warn!("accept failed: {e}; pausing");
                    self.pause_accepting();
                    return;
                }
            }
        }
        self.admission.accepting = Accepting::Backlogged;
    }

    /// Gives an accepted socket a slab entry. At `--max-connections` it reclaims idle
    /// connections first; a newcomer still over the limit is admitted to be refused (its
    /// request read and answered 503, or its `/stats` answered) within `REJECT_BUDGET`, and
    /// beyond that refused at once.
    fn admit(&mut self, stream: TcpStream) {
        if self.served_connections() >= self.admission.max_connections {
            self.reclaim_idle();
        }
        let over_limit = self.served_connections() >= self.admission.max_connections;
        if over_limit && self.admission.refusing >= REJECT_BUDGET {
            self.refuse_at_once(stream);
            return;
        }
        let costs = &mut self.service.costs;
        costs.totals.accepted += 1;
        // Small answers go out at once; we never write a response in pieces.
        let _ = stream.set_nodelay(true);
        let entry = self.connections.vacant_entry();
        let key = entry.key();
        let conn = Connection::new(over_limit);
        let mut slot = Slot { stream, timer: None, conn };
        if let Err(e) = self.poll.registry().register(&mut slot.stream, Token(key), Interest::READABLE) {
            warn!("cannot register a connection: {e}");
            costs.totals.closed.count(CloseReason::Error);
            return; // the entry was never inserted, so there is nothing to roll back
        }
        debug_assert!(key < SIGNALS.0, "slab keys stay below the reserved tokens");
        if over_limit {
            costs.totals.rejected += 1;
            self.admission.refusing += 1;
        }
        costs.by_state.count(slot.conn.kind(), 1);
        let deadline = slot.conn.deadline(self.now, &self.settings);
        slot.timer = deadline.map(|at| self.wheel.insert(at, key));
        entry.insert(slot);
    }

    /// What `--max-connections` counts: connections open, less those waiting to be reaped and
    /// those admitted only to be refused.
    fn served_connections(&self) -> usize {
        self.connections.len() - self.reap_queue.len() - self.admission.refusing
    }

    /// `accept` failed for want of a descriptor. Returns whether to go on accepting.
    fn make_room(&mut self) -> bool {
        if self.reclaim_idle() > 0 || !self.reap_queue.is_empty() {
            // Descriptors come back when `reap` drops the closed connections, this very turn.
            self.pause_accepting();
            return false;
        }
        self.refuse_on_spare()
    }

    /// Closes the keep-alive connections idle longest: an eighth of those idle for at least
    /// `RECLAIM_AFTER`, at least one and at most `RECLAIM_BATCH`. Returns how many it closed.
    fn reclaim_idle(&mut self) -> usize {
        if self.service.costs.by_state.idle == 0 || self.now < self.admission.reclaim_scan_after {
            return 0;
        }
        let idle_timeout = Tick::try_from(self.settings.idle_timeout.as_millis()).unwrap_or(Tick::MAX);
        // An idle connection's one timer is its idle deadline, so when it fell idle is known.
        let mut idle_since: Vec<(Tick, usize)> = self
            .connections
            .iter()
            .filter(|(_, slot)| slot.conn.kind() == StateKind::Idle)
            .filter_map(|(key, slot)| Some((self.wheel.deadline(slot.timer?)?.saturating_sub(idle_timeout), key)))
            .collect();
        let oldest = idle_since.iter().map(|&(since, _)| since).min().unwrap_or(self.now);
        idle_since.retain(|&(since, _)| self.now.saturating_sub(since) >= RECLAIM_AFTER);
        let batch = (idle_since.len() / 8).clamp(1, RECLAIM_BATCH).min(idle_since.len());
        if batch == 0 {
            // None is old enough, and none will be before the oldest is: a storm of newcomers
            // at the limit does not rescan the table for each one.
            self.admission.reclaim_scan_after = oldest + RECLAIM_AFTER;
            return 0;
        }
        idle_since.select_nth_unstable(batch - 1);
        for &(_, key) in &idle_since[..batch] {
            self.process(key, Event::Reclaim);
        }
        debug!("reclaimed {batch} idle connections");
        batch
    }

    /// At the open-file limit with nothing to reclaim: frees the spare descriptor, accepts one
    /// newcomer with it, refuses it, and takes the spare back. Returns whether to go on
    /// accepting: not once the backlog is empty, nor when the spare cannot be had (then
    /// accepting pauses).
    fn refuse_on_spare(&mut self) -> bool {
        let Some(listener) = &self.admission.listener else {
            return false;
        };
        if self.service.spare.take().is_none() {
            self.pause_accepting();
            return false;
        }
        let go_on = match listener.accept() {
            Ok((stream, _)) => {
                self.refuse_at_once(stream);
                true
            }
            // Linux reports EMFILE before it looks at the backlog, so only now is it known
            // to be empty.
            Err(e) if e.kind() == ErrorKind::WouldBlock => false,
            Err(e) => {
                debug!("accept on the spare descriptor failed: {e}");
                false
            }
        };
        self.service.spare = open_spare();
        if self.service.spare.is_none() {
            self.pause_accepting();
            return false;
        }
        go_on
    }

    /// Answers 503 on a connection that gets no slab entry and closes it at once: there is no
    /// descriptor to linger with. What the client already sent is read first, so that the
    /// close is a FIN rather than a reset that could destroy the answer in flight.
    fn refuse_at_once(&mut self, mut stream: TcpStream) {
        let mut sink = [0u8; 4096];
        for _ in 0..4 {
            match stream.read(&mut sink) {
                Ok(n) if n == sink.len() => {}
                _ => break,
            }
        }
        let mut answer = Vec::with_capacity(256);
        let refusal = self.service.refusal();
        response::write(&mut answer, &refusal, Persistence::Close, false, &self.date);
        // An empty send buffer takes it whole; if not, the peer gets the close alone.
        let _ = stream.write(&answer);
        let totals = &mut self.service.costs.totals;
        totals.accepted += 1;
        totals.rejected += 1;
        totals.closed.count(CloseReason::Rejected);
    }

    pub(super) fn pause_accepting(&mut self) {
        if !matches!(self.admission.accepting, Accepting::Paused(_)) {
            let timer = self.wheel.insert(self.now + ACCEPT_BACKOFF, ACCEPT_TIMER);
            self.admission.accepting = Accepting::Paused(timer);
        }
    }

    /// Accepts again after a pause: a descriptor was freed, or the back-off timer fired.
    pub(super) fn resume_accepting(&mut self) {
        if let Accepting::Paused(timer) = self.admission.accepting {
            self.wheel.cancel(timer); // a no-op when it is the timer that fired
            self.admission.accepting = Accepting::Open;
            self.accept();
        }
    }

    fn log_exhaustion(&mut self, e: &io::Error) {
        if self.admission.exhaustion_logged.is_some_and(|at| self.now < at + EXHAUSTION_LOG_EVERY) {
            return;
        }
        self.admission.exhaustion_logged = Some(self.now);
        warn!(
            "accept: {e} ({} connections open, {} failed accepts so far): reclaiming idle connections, refusing newcomers with 503",
            self.connections.len(),
            self.service.costs.totals.fds_exhausted
        );
    }
}
