//! One client connection as a machine of its own: bytes, the time and the events that concern it
//! go in; what to do comes out. It never opens a socket, reads a clock or touches the timer
//! wheel, so every transition is tested without a network or a sleep (`tests.rs`).
//!
//! ```text
//!   reactor ──Event──> Connection::process(event, io, turn) ──Want──> reactor
//!   Ready{readable,writable,hung_up}   reads io, parses, asks   timer: keep / arm at T / cancel
//!   Deadline (its one timer fired)     `Endpoints` to answer,   flush: queue me for the flush phase
//!   Flush (its turn in the flush phase)  writes io, settles     closed: free my slab key
//!   Drain, Reclaim
//! ```
//!
//! `io` is the socket seen as `Read + Write` (a mio `TcpStream` in the reactor, a script of
//! bytes in the tests); `turn` is what the connection sees of the loop's current turn: the tick,
//! the `Date` header, the buffer pool and the `Endpoints` its requests are for. The reactor
//! keeps the syscalls of readiness (epoll), the slab, the wheel and the phases; this module keeps
//! the protocol.
//!
//! The states carry their own data (`State`), and the conversation a state carries
//! (`Conversation`) is in hand while a call reads, parses and writes (`pump`); `settle` then
//! picks the next state with `transitions::next_state`, a pure function with a table of tests.
//!
//! Invariants:
//! - The state decides the meaning of the connection's one timer (`Connection::deadline`);
//!   `Want::timer` re-arms it exactly when the state changes or its deadline restarts.
//! - An `Idle` connection owns no buffers, and a `Held` one none unless requests wait behind it;
//!   a `Streaming` one owns none between writes (it answers no other request, so what its client
//!   sends is dropped), and a `WebSocket` one none between frames (unless a message's fragments
//!   wait for the rest of it).
//! - Answers are appended in request order; nothing after an answer that closes the connection
//!   is parsed, and requests behind a held poll wait for its answer.
//! - A `Closed` connection is never read, written or re-armed; it only waits for `reap`.
//! - Input whose edge was consumed without draining the socket (`Inbound::Unread`) is read on
//!   until `WouldBlock` or the end of the stream before the connection sleeps.

use std::io::{self, ErrorKind};
use std::time::Duration;

use log::debug;

use crate::buffer::Buffers;
use crate::http::date::HttpDate;
use crate::http::request::{self, HttpError, Method, Progress, Request};
use crate::http::response::{self, Persistence, Response, Status};
use crate::pubsub::{HoldKey, HoldOn};
use crate::timer::Tick;
use crate::ws::frame::CloseCode;

mod interface;
mod socket;
#[cfg(test)]
mod tests;
mod transitions;

pub use interface::{deadline_after, Endpoints, Event, Io, Reply, Settings, Timer, Turn, Want};
pub use socket::Socket;
pub use transitions::{
    keep_alive, must_linger, next_state, Asked, CloseReason, Framing, KeepAliveInput, Next, Settling,
};

/// How long a closing connection waits for the peer's FIN after our last answer.
pub const LINGER: Duration = Duration::from_secs(2);
/// Stop parsing pipelined requests while this much output waits for the socket: a client that
/// sends without reading must not grow our memory without bound.
pub const OUTPUT_CAP: usize = 256 * 1024;

/// A connection's state; each carries what it needs, and each gives the one timer its meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Waiting for (the rest of) a request. `continued`: `100 Continue` was sent for it, so it
    /// is not sent twice. Timer: the head deadline (`--header-timeout`), which also bounds a
    /// slow body.
    Reading { continued: bool },
    /// Between requests of a keep-alive connection, nothing buffered. Timer: `--idle-timeout`.
    Idle,
    /// A long poll waits for a message; no buffers unless pipelined requests wait behind it.
    /// Timer: the poll's hold deadline.
    Held(HeldPoll),
    /// An event stream is open: its head is sent, and events follow as messages come; no
    /// buffers between writes. Timer: the next heartbeat (or the next cost-view snapshot).
    Streaming(Stream),
    /// A WebSocket is open: frames either way, no buffers between them. Timer: the next ping,
    /// or the pong that is due.
    WebSocket(Socket),
    /// Answers are serialised but the socket will not take them yet (WRITABLE interest is
    /// registered); the conversation goes on as this says once they are written. Timer:
    /// `--write-timeout`, re-armed whenever the peer takes bytes.
    Writing(Conversation),
    /// The last answer is written and our side is shut down; input is read and discarded until
    /// the peer's FIN so that closing does not reset the connection under an unread answer
    /// (nginx's lingering close). Timer: `LINGER`.
    Closing(CloseReason),
    /// Done; freed in the reap phase. No timer.
    Closed(CloseReason),
}

/// A state's name without its data: what `/stats` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateKind {
    Reading,
    Idle,
    Held,
    Streaming,
    WebSocket,
    Writing,
    Closing,
    Closed,
}

impl State {
    pub fn kind(&self) -> StateKind {
        match self {
            State::Reading { .. } => StateKind::Reading,
            State::Idle => StateKind::Idle,
            State::Held(_) => StateKind::Held,
            State::Streaming(_) => StateKind::Streaming,
            State::WebSocket(_) => StateKind::WebSocket,
            State::Writing(_) => StateKind::Writing,
            State::Closing(_) => StateKind::Closing,
            State::Closed(_) => StateKind::Closed,
        }
    }

    /// The conversation this state carries.
    fn conversation(&self) -> Conversation {
        match *self {
            State::Reading { continued } => Conversation::Open { continued },
            State::Idle => Conversation::OPEN,
            State::Held(poll) => Conversation::Holding(poll),
            State::Streaming(stream) => Conversation::Streaming(stream),
            State::WebSocket(socket) => Conversation::Socket(socket),
            State::Writing(conversation) => conversation,
            State::Closing(reason) | State::Closed(reason) => Conversation::Ending(reason),
        }
    }
}

/// Where the conversation stands: requests flow, a poll is held, or the last answer said close.
/// It outlives a single state: a held poll or a closing answer waits while earlier answers are
/// still being written (`State::Writing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conversation {
    /// Requests are parsed and answered in turn. `continued`: `100 Continue` was sent for the
    /// request being read.
    Open { continued: bool },
    /// A long poll waits for a message; requests pipelined behind it wait for its answer.
    Holding(HeldPoll),
    /// An event stream: its answer never ends, so nothing after its request is parsed.
    Streaming(Stream),
    /// A WebSocket: after the `101`, the input is frames.
    Socket(Socket),
    /// The last answer said `Connection: close`, for this reason; nothing after it is parsed.
    Ending(CloseReason),
}

impl Conversation {
    /// A conversation between requests.
    pub const OPEN: Conversation = Conversation::Open { continued: false };

    /// What follows an answer: more requests, or the end.
    pub fn after_answer(closing: Option<CloseReason>) -> Conversation {
        closing.map_or(Conversation::OPEN, Conversation::Ending)
    }

    pub fn held(&self) -> Option<HeldPoll> {
        match *self {
            Conversation::Holding(poll) => Some(poll),
            _ => None,
        }
    }

    pub fn ending(&self) -> Option<CloseReason> {
        match *self {
            Conversation::Ending(reason) => Some(reason),
            _ => None,
        }
    }

    pub fn stream(&self) -> Option<Stream> {
        match *self {
            Conversation::Streaming(stream) => Some(stream),
            _ => None,
        }
    }

    pub fn socket(&self) -> Option<Socket> {
        match *self {
            Conversation::Socket(socket) => Some(socket),
            _ => None,
        }
    }
}

/// An event stream. It waits as a held poll does (`wait`), and is fed by what it waits on:
/// - a topic's messages (or several topics'): `wait.after` is the cursor the stream has sent up
///   to, `wait.deadline` the next heartbeat. Listed on its topics while it has sent everything;
///   a publish takes it off a list, and the machine feeds it and lists it again;
/// - the cost view (`/events/$stats`, for the live page), one snapshot a second: it waits on
///   nothing (`HoldKey::NOWHERE`), and `wait.deadline` is the next snapshot. With no one
///   watching, no snapshot is ever taken.
///
/// A stream opened with a token ends when the token expires (`ends`): the client is told with an
/// `expired` event, and must come back with a new token.
///
/// A `Wait` and four bytes, so that the state that carries a stream is no larger than the one
/// that carries a held poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stream {
    pub wait: Wait,
    pub ends: EndSecond,
}

/// The second of the server's clock (a tick divided by 1000, rounded down) at which a stream or
/// a socket ends: whole seconds, because a token's `exp` is whole seconds, and four bytes rather
/// than a tick's eight. Rounded down, it ends up to a second before its token expires, never
/// after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndSecond(u32);

impl EndSecond {
    pub const NEVER: EndSecond = EndSecond(u32::MAX);

    /// The second in which tick `at` falls; `Tick::MAX` (no token) is never.
    pub fn at(at: Tick) -> EndSecond {
        EndSecond(u32::try_from(at / 1000).unwrap_or(u32::MAX))
    }

    pub(crate) fn tick(self) -> Tick {
        if self == EndSecond::NEVER {
            Tick::MAX
        } else {
            Tick::from(self.0) * 1000
        }
    }
}

impl Stream {
    /// The stream of cost-view snapshots, the first due at `now`.
    pub fn cost_view(now: Tick) -> Stream {
        Stream { wait: Wait { hold: HoldKey::NOWHERE, after: 0, deadline: now }, ends: EndSecond::NEVER }
    }

    pub fn is_cost_view(&self) -> bool {
        self.wait.hold.on() == HoldOn::Nowhere
    }

    /// When the stream's timer fires: a heartbeat, the next snapshot, or its end.
    pub fn deadline(&self) -> Tick {
        self.wait.deadline.min(self.ends.tick())
    }

    pub fn has_ended(&self, now: Tick) -> bool {
        self.ends.tick() <= now
    }
}

/// A long poll waiting for a message: what the endpoints hold it by, and the request's framing
/// facts, applied when its answer is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldPoll {
    pub wait: Wait,
    pub framing: Framing,
}

/// What an endpoint asks a connection to wait for: a message on a topic after a cursor, until a
/// deadline. Aligned to 4 bytes rather than 8: a held poll is then 28 bytes with no padding, and
/// the state that carries it 32 rather than 40, which every connection's slab slot pays for.
/// (Its fields are read by value; a reference to a packed field would be unaligned.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, packed(4))]
pub struct Wait {
    /// Where the poll is listed on its topic (`pubsub::Topics::hold`).
    pub hold: HoldKey,
    /// The cursor: the last sequence number the client has seen.
    pub after: u64,
    /// When the hold expires with `status: timeout`.
    pub deadline: Tick,
}

/// The input side of the socket, which the peer closes when it likes, in any state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inbound {
    /// The last read was short or said `WouldBlock`: any later byte raises a new edge.
    Drained,
    /// Readiness seen but not consumed: reading stopped at the input cap, output had to drain
    /// first, or an event said read-closed (the FIN may sit behind a request). With
    /// edge-triggered epoll no second event comes for it, so the next read goes on until the
    /// end of the stream or `WouldBlock`.
    Unread,
    /// The peer's FIN was read: nothing more will arrive.
    Ended,
}

/// Why parsing stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Every byte read was parsed, or a request is incomplete.
    Waiting,
    /// Output reached `OUTPUT_CAP`: parse on once it drains.
    OutputCap,
    /// The conversation is not open (a held poll, or the end).
    NotOpen,
}

/// One connection's machine. The reactor's slab entry holds it beside the socket and the timer
/// key; kept small on purpose: an idle connection costs the entry plus one timer entry (see
/// `docs/costs.md`).
#[derive(Debug)]
pub struct Connection {
    state: State,
    inbound: Inbound,
    /// Lent from the pool while bytes are in flight; `None` while idle.
    buffers: Option<Box<Buffers>>,
    /// Requests answered on this connection.
    served: u32,
    /// Admitted beyond `--max-connections` only to be refused: its request is read so that
    /// `/stats` and `/metrics` can still be answered; anything else gets 503. Either way the
    /// connection closes after that one answer. Fixed at birth.
    refused: bool,
}

impl Connection {
    /// A newly accepted connection, waiting for its first request (arm `deadline`).
    pub fn new(refused: bool) -> Connection {
        Connection {
            state: State::Reading { continued: false },
            inbound: Inbound::Drained,
            buffers: None,
            served: 0,
            refused,
        }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn kind(&self) -> StateKind {
        self.state.kind()
    }

    pub fn refused(&self) -> bool {
        self.refused
    }

    pub fn served(&self) -> u32 {
        self.served
    }

    pub fn buffers(&self) -> Option<&Buffers> {
        self.buffers.as_deref()
    }

    /// The poll this connection holds, from its request until its answer.
    pub fn held(&self) -> Option<HeldPoll> {
        self.state.conversation().held()
    }

    /// The event stream this connection has open, between writes or while writing.
    pub fn stream(&self) -> Option<Stream> {
        self.state.conversation().stream()
    }

    /// The WebSocket this connection is, between frames or while writing.
    pub fn socket(&self) -> Option<Socket> {
        self.state.conversation().socket()
    }

    /// When the one timer should fire in the current state.
    pub fn deadline(&self, now: Tick, settings: &Settings) -> Option<Tick> {
        let after = match self.state {
            State::Reading { .. } => settings.header_timeout,
            State::Idle => settings.idle_timeout,
            State::Writing(_) => settings.write_timeout,
            State::Held(poll) => return Some(poll.wait.deadline),
            State::Streaming(stream) => return Some(stream.deadline()),
            State::WebSocket(socket) => return Some(socket.deadline()),
            State::Closing(_) => LINGER,
            State::Closed(_) => return None,
        };
        Some(deadline_after(now, after))
    }

    /// Handles one event and says what the reactor must do about it.
    pub fn process<E: Endpoints>(&mut self, event: Event, io: &mut impl Io, turn: &mut Turn<E>) -> Want {
        let mut want = Want::default();
        let conversation = self.state.conversation();
        match (event, self.state) {
            (_, State::Closed(_)) => {}
            (Event::Ready { readable, writable, hung_up }, _) => {
                self.on_ready(readable, writable, hung_up, io, turn, &mut want)
            }
            (Event::Deadline, State::Reading { .. }) => self.time_out_head(io, turn, &mut want),
            // Answered, fed or beaten in the flush phase, a slice per turn.
            (Event::Deadline, State::Held(_) | State::Streaming(_) | State::WebSocket(_)) => want.flush = true,
            (Event::Deadline, State::Idle) => self.close(conversation, CloseReason::IdleTimeout, turn, &mut want),
            (Event::Deadline, State::Writing(_)) => {
                self.close(conversation, CloseReason::WriteTimeout, turn, &mut want)
            }
            (Event::Deadline, State::Closing(reason)) => self.close(conversation, reason, turn, &mut want),
            (Event::Flush, State::Held(poll)) if self.is_due(&poll, turn) => {
                let answered = self.answer_held(poll, turn);
                self.pump(answered, false, true, io, turn, &mut want);
            }
            (Event::Flush, State::Writing(_) | State::Streaming(_) | State::WebSocket(_)) => {
                self.pump(conversation, false, true, io, turn, &mut want)
            }
            (Event::Flush, _) => {}
            (Event::Drain, State::Idle) => self.close(conversation, CloseReason::Drain, turn, &mut want),
            (Event::Drain, State::Reading { .. }) if self.buffers.as_ref().is_none_or(|b| b.is_empty()) => {
                self.close(conversation, CloseReason::Drain, turn, &mut want)
            }
            (Event::Drain, State::Held(_)) => want.flush = true, // due now: answered `timeout`
            (Event::Drain, _) => {
                // A stream's body ends where the connection closes: closing is its clean end. A
                // socket says so first (1001: the server is going away).
                if let Some(stream) = conversation.stream() {
                    turn.endpoints.end_stream(turn.key, &stream, turn.now);
                    self.pump(Conversation::Ending(CloseReason::Drain), false, false, io, turn, &mut want);
                } else if let Some(socket) = conversation.socket() {
                    turn.endpoints.end_socket(turn.key, &socket, turn.now);
                    let buffers = self.buffers.get_or_insert_with(|| turn.pool.take());
                    crate::ws::frame::write_close(buffers.output(), CloseCode::GoingAway, "the server is draining");
                    self.pump(Conversation::Ending(CloseReason::Drain), false, false, io, turn, &mut want);
                }
            }
            (Event::Reclaim, _) => self.close(conversation, CloseReason::Reclaimed, turn, &mut want),
        }
        if want.closed.is_some() {
            want.timer = Timer::Cancel;
        } else if want.rearm {
            want.timer = self.deadline(turn.now, turn.settings).map_or(Timer::Cancel, Timer::At);
        }
        want
    }

    fn on_ready<E: Endpoints>(
        &mut self,
        readable: bool,
        writable: bool,
        hung_up: bool,
        io: &mut impl Io,
        turn: &mut Turn<E>,
        want: &mut Want,
    ) {
        if hung_up && self.inbound != Inbound::Ended {
            // The FIN (or an error) came with this event, maybe behind a request: no second
            // event will announce it, so reading goes on to the end instead of stopping at a
            // short read.
            self.inbound = Inbound::Unread;
        }
        match self.state {
            State::Closed(_) => {}
            State::Closing(reason) => self.discard_input(reason, io, turn, want),
            State::Writing(conversation) => {
                if readable && self.inbound == Inbound::Drained {
                    self.inbound = Inbound::Unread; // taken up once the output drains
                }
                if writable || hung_up {
                    self.pump(conversation, false, false, io, turn, want);
                }
            }
            // While held or streaming, reading notices a client that hangs up (and buffers any
            // pipelined request until the poll is answered); a socket reads its frames.
            State::Reading { .. } | State::Idle | State::Held(_) | State::Streaming(_) | State::WebSocket(_)
                if readable =>
            {
                self.pump(self.state.conversation(), true, false, io, turn, want)
            }
            State::Reading { .. } | State::Idle | State::Held(_) | State::Streaming(_) | State::WebSocket(_) => {}
        }
    }

    /// Reads, answers and writes until nothing more can be done without a new event, then
    /// settles. `readable`: an event says input waits. `fresh`: an answer was just prepared (its
    /// deadline restarts).
    fn pump<E: Endpoints>(
        &mut self,
        mut conversation: Conversation,
        mut readable: bool,
        mut fresh: bool,
        io: &mut impl Io,
        turn: &mut Turn<E>,
        want: &mut Want,
    ) {
        let mut buffers = self.buffers.take().unwrap_or_else(|| turn.pool.take());
        loop {
            if readable || self.inbound == Inbound::Unread {
                let cap = match conversation {
                    Conversation::Socket(_) => turn.settings.socket_input_cap,
                    _ => turn.settings.input_cap,
                };
                if let Err(e) = self.read_input(&mut buffers, io, cap) {
                    debug!("read failed on {}: {e}", turn.key);
                    self.buffers = Some(buffers);
                    return self.close(conversation, CloseReason::ByClient, turn, want);
                }
                readable = false;
            }
            if self.state == State::Idle && buffers.unread_len() > 0 {
                // A request begins: counted as `Reading` while it is answered, and its head
                // deadline starts now.
                self.set_state(State::Reading { continued: false }, turn);
                want.rearm = true;
            }
            let stop = self.answer_requests(&mut buffers, &mut conversation, turn, &mut fresh);
            match &mut conversation {
                Conversation::Streaming(stream) => {
                    // A stream never answers another request: what the client sends is dropped.
                    buffers.discard_input();
                    if stream.has_ended(turn.now) {
                        buffers.output().extend_from_slice(TOKEN_EXPIRED_EVENT);
                        turn.endpoints.end_stream(turn.key, stream, turn.now);
                        conversation = Conversation::Ending(CloseReason::TokenExpired);
                    } else {
                        feed(stream, buffers.output(), turn);
                    }
                }
                Conversation::Socket(socket) => {
                    if let Some(reason) = socket::converse(socket, &mut buffers, turn) {
                        turn.endpoints.end_socket(turn.key, socket, turn.now);
                        conversation = Conversation::Ending(reason);
                    }
                }
                _ => {}
            }
            match write_output(&mut buffers, io) {
                Ok(progressed) => fresh |= progressed,
                Err(e) => {
                    debug!("write failed on {}: {e}", turn.key);
                    self.buffers = Some(buffers);
                    return self.close(conversation, CloseReason::ByClient, turn, want);
                }
            }
            // Go on only with what no event will announce: requests parked at the output cap or
            // input left unread, or news a stream could not take while its output was full.
            let drained = buffers.pending_output().is_empty();
            let more = match conversation {
                Conversation::Open { .. } => stop == Stop::OutputCap || self.inbound == Inbound::Unread,
                Conversation::Streaming(stream) if !stream.is_cost_view() => {
                    !turn.endpoints.still_waiting(turn.key, stream.wait.hold)
                }
                Conversation::Socket(socket) => {
                    !turn.endpoints.still_waiting(turn.key, socket.hold) || self.inbound == Inbound::Unread
                }
                _ => false,
            };
            if !(drained && more) {
                break;
            }
        }
        turn.pool.reaccount(&mut buffers); // every read or answer ends here: count any growth
        self.buffers = Some(buffers);
        self.settle(conversation, fresh, io, turn, want);
    }

    /// Reads what the socket has. A short read means its receive queue was empty when the read
    /// returned: anything arriving later, data or FIN, raises a new edge. Not so for readiness
    /// whose edge was already consumed (`Inbound::Unread`): then only the end of the stream or
    /// `WouldBlock` says drained.
    fn read_input(&mut self, buffers: &mut Buffers, io: &mut impl Io, cap: usize) -> io::Result<()> {
        if self.inbound == Inbound::Ended {
            return Ok(());
        }
        let to_the_end = self.inbound == Inbound::Unread;
        self.inbound = Inbound::Drained;
        loop {
            if buffers.unread_len() >= cap {
                self.inbound = Inbound::Unread;
                return Ok(());
            }
            match buffers.read_from(io, cap) {
                Ok(0) => {
                    self.inbound = Inbound::Ended;
                    return Ok(());
                }
                Ok(_) if buffers.is_full() || to_the_end => {} // maybe more: read again
                Ok(_) => return Ok(()),                        // a short read drained the socket
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Parses and answers every complete request in `buffers`, in order (pipelining); sets
    /// `answered` if it answered one.
    fn answer_requests<E: Endpoints>(
        &mut self,
        buffers: &mut Buffers,
        conversation: &mut Conversation,
        turn: &mut Turn<E>,
        answered: &mut bool,
    ) -> Stop {
        while buffers.unread_len() > 0 {
            let Conversation::Open { continued } = *conversation else {
                // Nothing after a closing answer is parsed (its presence means lingering), and
                // requests behind a held poll wait for its answer, to keep answers in order.
                return Stop::NotOpen;
            };
            if buffers.pending_output().len() >= OUTPUT_CAP {
                return Stop::OutputCap;
            }
            let reused = self.served > 0;
            let (input, output) = buffers.split();
            let (len, next) = match request::parse_progress(input, &turn.settings.limits) {
                Ok(Progress::Waiting { awaits_continue }) if input.len() < turn.settings.input_cap => {
                    // Once per request: its body may take many reads to arrive.
                    let Some((method, path)) = awaits_continue.filter(|_| !continued) else {
                        return Stop::Waiting;
                    };
                    // A head that decides a refusal gets it now: the client then need not send
                    // a body that would only be thrown away.
                    let Some(refusal) = turn.endpoints.refuse_by_head(method, path, self.refused) else {
                        output.extend_from_slice(response::CONTINUE);
                        *conversation = Conversation::Open { continued: true };
                        return Stop::Waiting;
                    };
                    // It closes after this, since the client may or may not send the body.
                    turn.endpoints.count_request(reused);
                    response::write(output, &refusal, Persistence::Close, method == Method::Head, turn.date);
                    let reason = if self.refused { CloseReason::Rejected } else { CloseReason::Error };
                    (input.len(), Conversation::Ending(reason))
                }
                Ok(Progress::Waiting { .. }) => {
                    turn.endpoints.count_request(reused);
                    (input.len(), answer_error(HttpError::HeaderFieldsTooLarge, input, output, turn.date))
                }
                Ok(Progress::Complete(req)) => {
                    turn.endpoints.count_request(reused);
                    (req.len, self.answer(&req, output, turn))
                }
                Err(e) => {
                    turn.endpoints.count_request(reused);
                    (input.len(), answer_error(e, input, output, turn.date))
                }
            };
            buffers.consume(len);
            *answered = true;
            self.served = self.served.saturating_add(1);
            *conversation = next;
        }
        Stop::Waiting
    }

    /// Answers one complete request into `out`, or holds it (a long poll with nothing to say
    /// yet). Returns where the conversation goes.
    fn answer<E: Endpoints>(&self, req: &Request, out: &mut Vec<u8>, turn: &mut Turn<E>) -> Conversation {
        let framing = Framing::of(req, turn.settings);
        match turn.endpoints.answer(turn.key, req, self.refused, turn.now) {
            Reply::Wait(wait) => Conversation::Holding(HeldPoll { wait, framing }),
            Reply::Stream(head, stream) => {
                let head = head.allowing(turn.settings.origins.allowed(framing.cors));
                response::write(out, &head, Persistence::Stream, framing.head_only, turn.date);
                if framing.head_only {
                    turn.endpoints.end_stream(turn.key, &stream, turn.now);
                    return Conversation::Ending(CloseReason::ByClient);
                }
                // How long a browser waits before it reconnects a stream that broke.
                out.extend_from_slice(b"retry: 2000\n\n");
                Conversation::Streaming(stream)
            }
            Reply::Upgrade { accept, socket } => {
                response::write_switching_protocols(out, &accept, turn.date);
                Conversation::Socket(socket)
            }
            Reply::Now(answer) => {
                let (persistence, closing) = if self.refused {
                    (Persistence::Close, Some(CloseReason::Rejected))
                } else {
                    keep_alive(&framing.keep_alive_input(self.served, turn.settings, turn.draining))
                };
                let answer = answer.allowing(turn.settings.origins.allowed(framing.cors));
                response::write(out, &answer, persistence, framing.head_only, turn.date);
                Conversation::after_answer(closing)
            }
        }
    }

    /// The head deadline passed: `408` goes into the output, to be written in the flush phase
    /// (a slice of timeouts per turn), and the connection closes after it.
    fn time_out_head<E: Endpoints>(&mut self, io: &mut impl Io, turn: &mut Turn<E>, want: &mut Want) {
        let buffers = self.buffers.get_or_insert_with(|| turn.pool.take());
        let head_only = request::says_head(buffers.unread());
        buffers.discard_input();
        let timeout = Response::error(Status::REQUEST_TIMEOUT, b"request not received in time\n");
        response::write(buffers.output(), &timeout, Persistence::Close, head_only, turn.date);
        let ending = Conversation::Ending(CloseReason::HeaderTimeout);
        self.enter(State::Writing(ending), true, io, turn, want);
        want.flush = true;
    }

    /// Whether a held poll's answer is due: a publish took it off its topic's list, its
    /// deadline passed, or the server drains.
    fn is_due<E: Endpoints>(&self, poll: &HeldPoll, turn: &Turn<E>) -> bool {
        poll.wait.deadline <= turn.now || turn.draining || !turn.endpoints.still_waiting(turn.key, poll.wait.hold)
    }

    /// Writes the answer of a held poll into the output; returns where the conversation goes.
    fn answer_held<E: Endpoints>(&mut self, poll: HeldPoll, turn: &mut Turn<E>) -> Conversation {
        // `served` already counts this poll, since it was counted when it arrived.
        let input = poll.framing.keep_alive_input(self.served.saturating_sub(1), turn.settings, turn.draining);
        let (persistence, closing) = keep_alive(&input);
        let answer = turn.endpoints.answer_held(turn.key, &poll.wait, turn.now);
        let answer = answer.allowing(turn.settings.origins.allowed(poll.framing.cors));
        let buffers = self.buffers.get_or_insert_with(|| turn.pool.take());
        response::write(buffers.output(), &answer, persistence, poll.framing.head_only, turn.date);
        Conversation::after_answer(closing)
    }

    /// The transition: moves the connection to the state its buffers and conversation call
    /// for (`transitions::next_state`). `fresh`: a request was answered or the peer took bytes.
    fn settle<E: Endpoints>(
        &mut self,
        conversation: Conversation,
        fresh: bool,
        io: &mut impl Io,
        turn: &mut Turn<E>,
        want: &mut Want,
    ) {
        let buffers = self.buffers.as_deref();
        let facts = Settling {
            output_pending: buffers.is_some_and(|b| !b.pending_output().is_empty()),
            input_pending: buffers.is_some_and(|b| b.unread_len() > 0),
            read_closed: self.inbound == Inbound::Ended,
            conversation,
            draining: turn.draining,
        };
        match next_state(&facts) {
            Next::Enter(state) => self.enter(state, fresh, io, turn, want),
            Next::Close(reason) => self.close(conversation, reason, turn, want),
        }
    }

    /// Changes state: the timer is re-armed when the state changes, when another poll is held,
    /// or when `fresh` restarts the deadline of a state whose timer measures progress (the head
    /// deadline when a new request begins, the write deadline when the peer takes bytes, the
    /// idle deadline after an answer); empty buffers go back to the pool on `Idle`, `Held` and
    /// `Streaming`;
    /// the write side shuts on `Closing`.
    fn enter<E: Endpoints>(&mut self, next: State, fresh: bool, io: &mut impl Io, turn: &mut Turn<E>, want: &mut Want) {
        debug_assert!(!matches!(next, State::Closed(_)), "closing goes through close()");
        if matches!(next, State::Idle | State::Held(_) | State::Streaming(_) | State::WebSocket(_))
            && self.buffers.as_ref().is_some_and(|b| b.is_empty())
        {
            if let Some(buffers) = self.buffers.take() {
                turn.pool.give(buffers);
            }
        }
        debug_assert!(next != State::Idle || self.buffers.is_none(), "an idle connection owns no buffers");
        let changed = self.state.kind() != next.kind();
        if changed && next.kind() == StateKind::Closing {
            io.shutdown_write();
        }
        want.rearm |= changed
            || match (self.state, next) {
                (State::Held(previous), State::Held(next)) => previous != next,
                (State::Streaming(previous), State::Streaming(next)) => previous.deadline() != next.deadline(),
                (State::WebSocket(previous), State::WebSocket(next)) => previous.deadline() != next.deadline(),
                (_, State::Reading { .. } | State::Writing(_) | State::Idle) => fresh,
                _ => false,
            };
        self.set_state(next, turn);
    }

    /// The one assignment of `state`: the endpoints count the move.
    fn set_state<E: Endpoints>(&mut self, next: State, turn: &mut Turn<E>) {
        if self.state.kind() != next.kind() {
            turn.endpoints.count_state(self.state.kind(), next.kind());
        }
        self.state = next;
    }

    /// Closes: buffers go back, a held poll is released, and the reactor frees the key.
    fn close<E: Endpoints>(
        &mut self,
        conversation: Conversation,
        reason: CloseReason,
        turn: &mut Turn<E>,
        want: &mut Want,
    ) {
        if matches!(self.state, State::Closed(_)) {
            return;
        }
        debug!("closing {}: {reason:?} after {} requests", turn.key, self.served);
        if let Some(mut buffers) = self.buffers.take() {
            buffers.clear();
            turn.pool.give(buffers);
        }
        if let Some(poll) = conversation.held() {
            turn.endpoints.release(turn.key, &poll.wait, turn.now);
        }
        if let Some(stream) = conversation.stream() {
            turn.endpoints.end_stream(turn.key, &stream, turn.now);
        }
        if let Some(socket) = conversation.socket() {
            turn.endpoints.end_socket(turn.key, &socket, turn.now);
        }
        self.set_state(State::Closed(reason), turn);
        want.closed = Some(reason);
    }

    /// A closing connection's input is read and thrown away until the peer's FIN.
    fn discard_input<E: Endpoints>(
        &mut self,
        reason: CloseReason,
        io: &mut impl Io,
        turn: &mut Turn<E>,
        want: &mut Want,
    ) {
        let mut sink = [0u8; 4096];
        loop {
            match io.read(&mut sink) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => break,
            }
        }
        self.close(Conversation::Ending(reason), reason, turn, want);
    }
}

/// The last event of a stream whose token expired: its client must come back with a new one.
const TOKEN_EXPIRED_EVENT: &[u8] = b"event: expired\ndata: {\"reason\":\"the token has expired\"}\n\n";

/// How often `/events/$stats` sends a snapshot of the cost view.
const COST_VIEW_PERIOD: Duration = Duration::from_secs(1);

/// Feeds an open stream what is due: the news a publish brought (batch after batch while the
/// output has room), else a heartbeat or a snapshot once its deadline has passed. A stream's
/// deadline restarts whenever something is sent.
fn feed<E: Endpoints>(stream: &mut Stream, out: &mut Vec<u8>, turn: &mut Turn<E>) {
    let sent_before = out.len();
    let due = stream.deadline() <= turn.now;
    if stream.is_cost_view() {
        if due {
            turn.endpoints.stream_costs(out);
            stream.wait.deadline = deadline_after(turn.now, COST_VIEW_PERIOD);
        }
        return;
    }
    let wait = &mut stream.wait;
    while out.len() < OUTPUT_CAP && !turn.endpoints.still_waiting(turn.key, wait.hold) {
        turn.endpoints.stream_news(turn.key, wait, out, turn.now);
    }
    if out.len() == sent_before && due {
        out.extend_from_slice(b": heartbeat\n\n");
    }
    if out.len() > sent_before {
        wait.deadline = deadline_after(turn.now, turn.settings.heartbeat);
    }
}

/// Writes pending output until the socket stops taking it. Returns whether any byte went.
fn write_output(buffers: &mut Buffers, io: &mut impl Io) -> io::Result<bool> {
    let mut progressed = false;
    loop {
        let pending = buffers.pending_output();
        if pending.is_empty() {
            return Ok(progressed);
        }
        match io.write(pending) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => {
                let short = n < pending.len();
                buffers.advance_output(n);
                progressed = true;
                if short {
                    return Ok(true); // the send buffer is full: wait for WRITABLE
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(progressed),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Answers input that could not be parsed as a request; the connection closes after it,
/// because where the next request starts is no longer known.
fn answer_error(error: HttpError, input: &[u8], out: &mut Vec<u8>, date: &HttpDate) -> Conversation {
    debug!("bad request: {}", error.message());
    let line = format!("{}\n", error.message());
    let answer = Response::error(Status::from_code(error.status()), line.as_bytes());
    response::write(out, &answer, Persistence::Close, request::says_head(input), date);
    Conversation::Ending(CloseReason::Error)
}
