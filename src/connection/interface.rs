//! What passes between a connection's machine and the rest of the server: an `Event` in, a
//! `Want` out; the socket seen as `Io`; the `Endpoints` a request is for; and the `Turn`, what a
//! connection sees of the reactor's current turn of the loop. A new transport (an event stream,
//! WebSocket) is a new state or a new machine behind these same types (docs/architecture.md,
//! "Adding a transport").

use std::io::{Read, Write};
use std::time::Duration;

use super::{CloseReason, Socket, StateKind, Stream, Wait};
use crate::buffer::BufferPool;
use crate::http::cors::AllowedOrigins;
use crate::http::date::HttpDate;
use crate::http::request::{Limits, Method, Request};
use crate::http::response::Response;
use crate::pubsub::HoldKey;
use crate::timer::Tick;

/// What happened that concerns one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Its socket's readiness: `hung_up` says read-closed or an error came with it.
    Ready { readable: bool, writable: bool, hung_up: bool },
    /// Its one timer fired.
    Deadline,
    /// Its turn in the flush phase: an answer was prepared outside its own event, or its held
    /// poll is due (woken by a publish, past its deadline, or the server drains).
    Flush,
    /// The server starts draining.
    Drain,
    /// Closed while idle to make room at a limit.
    Reclaim,
}

/// What the connection asks of the reactor after an event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Want {
    pub timer: Timer,
    /// Queue it for the flush phase: an answer is due outside its own event.
    pub flush: bool,
    /// It is closed, for this reason: cancel its timer and free its key in the reap phase.
    pub closed: Option<CloseReason>,
    /// The deadline changed during the call: `timer` is set from the final state.
    pub(super) rearm: bool,
}

/// The connection's one timer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Timer {
    /// Leave it as it is.
    #[default]
    Keep,
    /// Re-arm it for this tick.
    At(Tick),
    /// Cancel it (the connection closed).
    Cancel,
}

/// The socket as the machine sees it.
pub trait Io: Read + Write {
    /// Shuts our side down: the peer reads end-of-stream after our last answer.
    fn shutdown_write(&mut self);
}

/// What a connection's requests are for: routing and the topics. The machine owns HTTP (framing,
/// pipelining, keep-alive, timeouts); the endpoints own what a request means.
pub trait Endpoints {
    /// Counts a request about to be answered, error answers included; `reused`: its connection
    /// served one before. (Counted before it is answered, so that `/stats` counts itself.)
    fn count_request(&mut self, reused: bool);
    /// Counts a connection out of one state and into another, as it moves (`Closed` is not
    /// counted). Counted as it happens, so that a connection answering `/stats` counts itself
    /// as `Reading`.
    fn count_state(&mut self, from: StateKind, to: StateKind);
    /// The refusal a request's head decides on its own (no such endpoint, a method it does not
    /// take, a malformed topic name, a connection admitted only to be refused), or `None`.
    /// Asked before `100 Continue` is sent, so that a client need not send a body only to have
    /// it thrown away.
    fn refuse_by_head(&mut self, method: Method, path: &str, refused: bool) -> Option<Response<'static>>;
    /// Answers a complete request of connection `key`, asks it to wait, or opens a stream.
    fn answer(&mut self, key: usize, request: &Request, refused: bool, now: Tick) -> Reply<'_>;
    /// Answers a held poll that is due, and forgets its hold.
    fn answer_held(&mut self, key: usize, wait: &Wait, now: Tick) -> Response<'_>;
    /// Whether a poll, stream or socket is still listed on its topics: a publish takes the
    /// whole list, and then it has news.
    fn still_waiting(&self, key: usize, hold: HoldKey) -> bool;
    /// Forgets a held poll whose connection closes (its client left, a timeout, a drain).
    fn release(&mut self, key: usize, wait: &Wait, now: Tick);
    /// Appends a topic stream's events after `wait.after` (a batch at most, as a poll answer
    /// carries), moves the cursor, and lists the stream on its topic again once it has sent
    /// everything.
    fn stream_news(&mut self, key: usize, wait: &mut Wait, out: &mut Vec<u8>, now: Tick);
    /// Appends one event carrying a snapshot of the cost view.
    fn stream_costs(&mut self, out: &mut Vec<u8>);
    /// A stream ends (its client left, a timeout, a drain): off its topic, counted down.
    fn end_stream(&mut self, key: usize, stream: &Stream, now: Tick);
    /// Answers one text message of a WebSocket (subscribe, unsubscribe, publish), appending any
    /// reply frame to `out`.
    fn socket_message(&mut self, key: usize, socket: &Socket, text: &str, out: &mut Vec<u8>, now: Tick);
    /// Appends a socket's news as frames (a batch at most), and lists it on its topics again
    /// once it has sent everything.
    fn socket_news(&mut self, key: usize, socket: &Socket, out: &mut Vec<u8>, now: Tick);
    /// A socket ends: off its topics, its subscription freed, counted down.
    fn end_socket(&mut self, key: usize, socket: &Socket, now: Tick);
}

/// An endpoint's answer to a request.
pub enum Reply<'a> {
    Now(Response<'a>),
    Wait(Wait),
    /// An event stream: its head, then the events of what feeds it.
    Stream(Response<'a>, Stream),
    /// A WebSocket: `101 Switching Protocols` with this `Sec-WebSocket-Accept`, then frames.
    Upgrade {
        accept: [u8; 28],
        socket: Socket,
    },
}

/// The limits and timeouts a connection lives by, from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub limits: Limits,
    /// Unread input never exceeds this: the parser errors before a request could need more.
    pub input_cap: usize,
    /// The same for a WebSocket's frames (`ws::frame::input_cap`).
    pub socket_input_cap: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
    pub max_requests: u32,
    /// `--sse-heartbeat`: an idle event stream gets a comment this often.
    pub heartbeat: Duration,
    /// `--allow-origin`: whom an answer that may be shared across origins tells so.
    pub origins: AllowedOrigins,
}

/// What a connection sees of the reactor's current turn.
pub struct Turn<'a, E> {
    /// The connection's slab key, which the endpoints list held polls by.
    pub key: usize,
    /// The tick read once at the start of the turn.
    pub now: Tick,
    pub date: &'a HttpDate,
    pub draining: bool,
    pub settings: &'a Settings,
    pub pool: &'a mut BufferPool,
    pub endpoints: &'a mut E,
}

/// The tick by which `after` has passed, counted from `now`, the start of the turn truncated to
/// the millisecond: one more tick makes up for the fraction cut off, so a deadline may come up
/// to a millisecond (and epoll's rounding) late, never early.
pub fn deadline_after(now: Tick, after: Duration) -> Tick {
    now + Tick::try_from(after.as_millis()).unwrap_or(Tick::MAX / 2) + 1
}
