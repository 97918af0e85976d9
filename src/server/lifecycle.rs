//! How a connection moves between states: writing its output, choosing the next state,
//! re-arming its one timer, and closing. Every state change goes through `enter` or `close`.

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;

use log::{debug, warn};
use mio::{Interest, Token};

use super::{Server, LINGER};
use crate::connection::{self, CloseReason, Deadline, Next, Settling, State};
use crate::timer::Tick;

impl Server {
    /// Writes pending output until the socket stops taking it, then moves the connection to
    /// the state that follows. `fresh` says a request was answered (new head deadline).
    pub(super) fn write_output(&mut self, key: usize, fresh: bool) {
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
        let conn = &mut self.connections[key];
        if let Some(buffers) = conn.buffers.as_deref_mut() {
            self.pool.reaccount(buffers); // every read or answer ends here: count any growth
        }
        let buffers = conn.buffers.as_deref();
        let facts = Settling {
            output_pending: buffers.is_some_and(|b| !b.pending_output().is_empty()),
            input_pending: buffers.is_some_and(|b| b.unread_len() > 0),
            input_ready: conn.input_ready,
            read_closed: conn.read_closed,
            closing: conn.ending(),
            holding: conn.held().is_some(),
            draining: self.draining,
        };
        match connection::next_state(&facts) {
            // A new deadline only where the state's timer measures progress: the write timeout
            // restarts when the peer takes bytes, the head timeout when a new request begins.
            Next::Enter(state) => self.enter(key, state, fresh && matches!(state, State::Writing | State::Reading)),
            Next::Close(reason) => self.close(key, reason),
        }
    }

    /// Changes a connection's state, keeping invariants 3 and 4: the timer follows the state
    /// (kept when the state does not change and `fresh` is false), WRITABLE interest follows
    /// `Writing`, empty buffers go back to the pool on `Idle` and `Held`, the write side shuts
    /// on `Closing`.
    pub(super) fn enter(&mut self, key: usize, next: State, fresh: bool) {
        debug_assert!(next != State::Closed, "closing goes through close()");
        let conn = &mut self.connections[key];
        if matches!(next, State::Idle | State::Held) && conn.buffers.as_ref().is_some_and(|b| b.is_empty()) {
            if let Some(buffers) = conn.buffers.take() {
                self.pool.give(buffers);
            }
        }
        debug_assert!(next != State::Idle || conn.buffers.is_none(), "an idle connection owns no buffers");
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
            #[cfg(debug_assertions)]
            self.invariants.interest_changed(key, interest);
        }
        if next == State::Closing {
            let _ = conn.stream.shutdown(Shutdown::Write);
        }
        let hold_deadline = conn.held().map_or(self.now, |held| held.deadline);
        self.count_state(previous, -1);
        self.count_state(next, 1);
        let at = match next.deadline() {
            Some(Deadline::Head) => self.deadline(self.config.header_timeout),
            Some(Deadline::Idle) => self.deadline(self.config.idle_timeout),
            Some(Deadline::Write) => self.deadline(self.config.write_timeout),
            Some(Deadline::Linger) => self.deadline(LINGER),
            Some(Deadline::Hold) => hold_deadline,
            None => return, // Closed, which only close() enters
        };
        self.arm(key, at);
    }

    /// Arms the connection's one timer for tick `at`, replacing the one it had.
    pub(super) fn arm(&mut self, key: usize, at: Tick) {
        let conn = &mut self.connections[key];
        if let Some(old) = conn.timer.take() {
            self.wheel.cancel(old);
        }
        conn.timer = Some(self.wheel.insert(at, key));
    }

    /// Marks a connection closed: its timer is cancelled now, its key freed in `reap`.
    pub(super) fn close(&mut self, key: usize, reason: CloseReason) {
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
        if let Some(held) = conn.take_hold() {
            self.holds.topics.release(held.hold, key, self.now);
            self.costs.polls.held -= 1;
        }
        if conn.over_limit {
            self.admission.refusing -= 1;
        }
        let previous = std::mem::replace(&mut conn.state, State::Closed);
        self.count_state(previous, -1);
        self.costs.totals.closed.count(reason);
        self.reap_queue.push(key);
    }

    /// A closing connection's input is read and thrown away until the peer's FIN.
    pub(super) fn discard_input(&mut self, key: usize) {
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
        let reason = conn.ending().unwrap_or(CloseReason::ByClient);
        self.close(key, reason);
    }
}
