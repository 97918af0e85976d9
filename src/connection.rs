//! One client connection: its state, the one timer that state arms, and the keep-alive rule.
//!
//! ```text
//!             accept
//!               v
//!    +----> Reading --(request answered)------------------------------------> (settle)
//!    |        |   \--(long poll, nothing newer)--> Held --(publish, hold deadline
//!    |        |                                     |       or drain: answer queued)--> (settle)
//!    |   head deadline: 408, close           peer hangs up: freed at once
//!    |
//!    |   (settle) = Writing while the socket will not take the answer (write deadline: dropped),
//!    |              then Closing if the answer said close, Held if a poll is still held,
//!    |              Reading if a pipelined request is buffered, else Idle
//!    |
//!    +---- Idle <-- bytes arrive
//!            |  idle deadline: closed
//!
//!    Closing --(peer's FIN, or the linger deadline)--> Closed --(reap)--> freed
//!    (a client that asked to close and sent nothing more is closed at once: `must_linger`)
//! ```
//!
//! Invariants (the server checks them with `debug_assert!`):
//! - the state decides the meaning of the connection's single timer (`State::deadline`);
//! - an `Idle` connection owns no buffers, and a `Held` one none unless requests wait behind it;
//! - a `Closed` connection is never read, written or re-armed; it only waits for `reap`.

use mio::net::TcpStream;

use crate::buffer::Buffers;
use crate::http::request::Version;
use crate::http::response::Persistence;
use crate::pubsub::HoldKey;
use crate::timer::{Tick, TimerKey};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Waiting for (the rest of) a request. Timer: the head deadline (`--header-timeout`),
    /// which also bounds a slow body.
    Reading,
    /// Between requests of a keep-alive connection, nothing buffered. Timer: `--idle-timeout`.
    Idle,
    /// Answers are serialised but the socket will not take them yet; WRITABLE interest is
    /// registered. Timer: `--write-timeout`, re-armed whenever the peer takes bytes.
    Writing,
    /// A long poll waits for a message; no buffers unless pipelined requests wait behind it
    /// (`Conversation::Holding` says which poll). Timer: the poll's hold deadline.
    Held,
    /// The last answer is written and our side is shut down; input is read and discarded until
    /// the peer's FIN so that closing does not reset the connection under an unread answer
    /// (nginx's lingering close). Timer: `LINGER`.
    Closing,
    /// Done; freed in the reap phase. No timer.
    Closed,
}

/// What the connection's one timer means in each state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    Head,
    Idle,
    Write,
    Hold,
    Linger,
}

impl State {
    pub fn deadline(self) -> Option<Deadline> {
        match self {
            State::Reading => Some(Deadline::Head),
            State::Idle => Some(Deadline::Idle),
            State::Writing => Some(Deadline::Write),
            State::Held => Some(Deadline::Hold),
            State::Closing => Some(Deadline::Linger),
            State::Closed => None,
        }
    }
}

/// Why a connection was closed; each has a counter in `totals.closed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer hung up, or asked for `Connection: close`.
    ByClient,
    IdleTimeout,
    HeaderTimeout,
    WriteTimeout,
    MaxRequests,
    /// Closed while idle to make room at the connection limit.
    Reclaimed,
    /// A malformed request, a request refused before its body was sent, a failed read or write.
    Error,
    /// Closed by a graceful shutdown.
    Drain,
    /// Answered 503 at the connection limit.
    Rejected,
}

/// A slab entry: everything the server keeps per connection. Kept small on purpose: an idle
/// connection costs this plus one timer entry (see `docs/costs.md`).
#[derive(Debug)]
pub struct Connection {
    pub stream: TcpStream,
    pub state: State,
    /// The one armed timer; its meaning follows `state`.
    pub timer: Option<TimerKey>,
    /// Lent from the pool while bytes are in flight; `None` while idle.
    pub buffers: Option<Box<Buffers>>,
    /// Requests answered on this connection.
    pub served: u32,
    /// Where the conversation stands: requests flow, a poll is held, or the last answer said
    /// close. It outlives a single I/O state: a held poll or a closing answer waits while
    /// earlier answers are still being written (`Writing`).
    pub conversation: Conversation,
    /// The peer sent FIN: nothing more will arrive.
    pub read_closed: bool,
    /// Readable readiness seen but not consumed: the server stopped reading to apply
    /// backpressure, or an event said read-closed (the FIN may sit behind a request). With
    /// edge-triggered epoll no second event will come for it, so the next read goes on until
    /// the end of the stream or `WouldBlock`.
    pub input_ready: bool,
    /// Admitted beyond `--max-connections` only to be refused: its request is read so that
    /// `/stats` and `/metrics` can still be answered; anything else gets 503. Either way the
    /// connection closes after that one answer.
    pub over_limit: bool,
}

/// Where the conversation on a connection stands, beside its I/O `State`. Each stage carries
/// what it needs, so that no flag beside it can contradict it: a connection cannot be both
/// holding a poll and ending, and only an open one reads requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conversation {
    /// Requests are parsed and answered in turn. `continued`: `100 Continue` was sent for the
    /// request being read (`Expect: 100-continue`), so it is not sent twice.
    Open { continued: bool },
    /// A long poll waits for a message; requests pipelined behind it wait for its answer.
    Holding(HeldPoll),
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
}

impl Connection {
    pub fn new(stream: TcpStream) -> Self {
        Connection {
            stream,
            state: State::Reading,
            timer: None,
            buffers: None,
            served: 0,
            conversation: Conversation::OPEN,
            read_closed: false,
            input_ready: false,
            over_limit: false,
        }
    }

    /// The poll this connection holds, from its request until its answer.
    pub fn held(&self) -> Option<HeldPoll> {
        match self.conversation {
            Conversation::Holding(held) => Some(held),
            _ => None,
        }
    }

    /// Takes the held poll to answer it (or to release it); the conversation is open again.
    pub fn take_hold(&mut self) -> Option<HeldPoll> {
        let held = self.held()?;
        self.conversation = Conversation::OPEN;
        Some(held)
    }

    /// Why this connection will end, once an answer said `Connection: close`.
    pub fn ending(&self) -> Option<CloseReason> {
        match self.conversation {
            Conversation::Ending(reason) => Some(reason),
            _ => None,
        }
    }

    /// Input is left to take up: readiness not consumed, or requests buffered behind an answer.
    pub fn input_waiting(&self) -> bool {
        self.input_ready || self.buffers.as_ref().is_some_and(|b| b.unread_len() > 0)
    }
}

/// A long poll waiting for a message: what its answer needs once the message (or the hold
/// deadline, or a drain) comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldPoll {
    pub hold: HoldKey,
    /// The cursor: the last sequence number the client has seen.
    pub after: u64,
    /// When the hold expires with `status: timeout`.
    pub deadline: Tick,
    /// The request's keep-alive facts, applied when the answer is written.
    pub version: Version,
    pub close_requested: bool,
    pub keep_alive_requested: bool,
    pub head_only: bool,
}

/// Bytes one slab slot takes: slab stores `enum Entry { Vacant(usize), Occupied(T) }`, which
/// this private mirror reproduces, since slab does not export its entry type.
pub const ENTRY_BYTES: usize = {
    #[allow(dead_code)]
    enum SlabEntry {
        Vacant(usize),
        Occupied(Connection),
    }
    std::mem::size_of::<SlabEntry>()
};

/// What the transition function looks at once a connection has read or written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settling {
    /// Answers are serialised that the socket has not taken yet.
    pub output_pending: bool,
    /// Bytes read and not parsed: a partial request, or requests behind a held poll or parked
    /// for backpressure.
    pub input_pending: bool,
    /// Readiness left unconsumed (`Connection::input_ready`): more input will be parsed.
    pub input_ready: bool,
    /// The peer's FIN was read: nothing more will arrive.
    pub read_closed: bool,
    /// The last answer said `Connection: close`, for this reason.
    pub closing: Option<CloseReason>,
    /// A long poll is held (`Conversation::Holding`).
    pub holding: bool,
    pub draining: bool,
}

/// Where a connection goes from `settle`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Enter(State),
    Close(CloseReason),
}

/// The transition function (`Server::settle` applies it): the state a connection's buffers
/// and facts call for after a read or a write, in order of precedence. Output waiting for the
/// socket comes first; then an answer that ended the conversation; then a FIN after which
/// nothing the peer sent can still become an answer (a held poll's client that left, a request
/// cut short; requests parked for backpressure are still answered); then a held poll; then a
/// request begun; then idleness, which a drain turns into a close.
pub fn next_state(s: &Settling) -> Next {
    if s.output_pending {
        Next::Enter(State::Writing)
    } else if let Some(reason) = s.closing {
        if s.read_closed || !must_linger(reason, s.input_pending) {
            Next::Close(reason)
        } else {
            Next::Enter(State::Closing)
        }
    } else if s.read_closed && (s.holding || !s.input_ready) {
        Next::Close(CloseReason::ByClient)
    } else if s.holding {
        Next::Enter(State::Held)
    } else if s.input_pending {
        Next::Enter(State::Reading)
    } else if s.draining {
        Next::Close(CloseReason::Drain)
    } else {
        Next::Enter(State::Idle)
    }
}

/// Whether a connection must linger in `Closing` after its last answer rather than close at
/// once. Closing at once is safe only when the client itself ended the conversation and all it
/// sent has been parsed: after an error, a timeout, a 503, `--max-requests` or a drain the
/// client may still be sending, and closing over unread bytes resets the connection under the
/// answer. (nginx's `lingering_close on` makes the same distinction.)
pub fn must_linger(reason: CloseReason, unread_input: bool) -> bool {
    reason != CloseReason::ByClient || unread_input
}

/// What the keep-alive rule needs to know about one request.
#[derive(Debug, Clone, Copy)]
pub struct KeepAliveInput {
    pub version: Version,
    pub close_requested: bool,
    pub keep_alive_requested: bool,
    /// Requests answered on this connection before this one.
    pub served_before: u32,
    pub max_requests: u32,
    pub idle_timeout_secs: u64,
    pub draining: bool,
}

/// The one place that decides whether a connection survives an answer to a request (RFC 9112
/// section 9.3): HTTP/1.1 persists unless `close` is asked for; HTTP/1.0 only with
/// `keep-alive`; the server ends it at `--max-requests` and on drain. Returns the headers to
/// write and, when closing, why. (Input that could not be parsed as a request never gets here:
/// where the next request would start is unknown, so its error answer always closes.)
pub fn keep_alive(input: &KeepAliveInput) -> (Persistence, Option<CloseReason>) {
    let served = input.served_before.saturating_add(1);
    let reason = if input.draining {
        Some(CloseReason::Drain)
    } else if input.close_requested || (input.version == Version::Http10 && !input.keep_alive_requested) {
        Some(CloseReason::ByClient)
    } else if served >= input.max_requests {
        Some(CloseReason::MaxRequests)
    } else {
        None
    };
    match reason {
        Some(reason) => (Persistence::Close, Some(reason)),
        None => (
            Persistence::KeepAlive {
                timeout_secs: input.idle_timeout_secs,
                remaining: input.max_requests - served,
                http10: input.version == Version::Http10,
            },
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: Version) -> KeepAliveInput {
        KeepAliveInput {
            version,
            close_requested: false,
            keep_alive_requested: false,
            served_before: 0,
            max_requests: 1000,
            idle_timeout_secs: 75,
            draining: false,
        }
    }

    /// An idle connection costs one slab slot and one timer entry; keep both small.
    #[test]
    fn per_connection_structures_stay_small() {
        let timer = crate::timer::ENTRY_BYTES;
        println!(
            "Connection: {} bytes, slab slot: {ENTRY_BYTES} bytes, timer entry: {timer} bytes",
            size_of::<Connection>()
        );
        // Checked when the test compiles: a field that grows the entry fails the build of the tests.
        const { assert!(ENTRY_BYTES <= 80, "the slab slot grew") };
        const { assert!(crate::timer::ENTRY_BYTES <= 48, "the timer entry grew") };
    }

    #[test]
    fn the_transition_function_table() {
        use CloseReason::{ByClient, Drain, Error};
        use Next::{Close, Enter};
        use State::{Closing, Held, Idle, Reading, Writing};
        let at_rest = Settling::default();
        let cases = [
            ("nothing pending", at_rest, Enter(Idle)),
            ("nothing pending while draining", Settling { draining: true, ..at_rest }, Close(Drain)),
            ("answers not yet taken", Settling { output_pending: true, ..at_rest }, Enter(Writing)),
            (
                "answers not yet taken come before everything",
                Settling { output_pending: true, read_closed: true, closing: Some(Error), holding: true, ..at_rest },
                Enter(Writing),
            ),
            ("a partial request", Settling { input_pending: true, ..at_rest }, Enter(Reading)),
            ("a held poll", Settling { holding: true, ..at_rest }, Enter(Held)),
            ("requests behind a held poll", Settling { holding: true, input_pending: true, ..at_rest }, Enter(Held)),
            (
                "a held poll whose client left",
                Settling { holding: true, read_closed: true, ..at_rest },
                Close(ByClient),
            ),
            (
                "a held poll whose client left, requests behind it",
                Settling { holding: true, read_closed: true, input_pending: true, input_ready: true, ..at_rest },
                Close(ByClient),
            ),
            ("a FIN after the last answer", Settling { read_closed: true, ..at_rest }, Close(ByClient)),
            (
                "a request cut short by a FIN",
                Settling { read_closed: true, input_pending: true, ..at_rest },
                Close(ByClient),
            ),
            (
                "requests parked for backpressure, then a FIN",
                Settling { read_closed: true, input_pending: true, input_ready: true, ..at_rest },
                Enter(Reading),
            ),
            ("an error answer, the client still sending", Settling { closing: Some(Error), ..at_rest }, Enter(Closing)),
            (
                "an error answer after the FIN",
                Settling { closing: Some(Error), read_closed: true, ..at_rest },
                Close(Error),
            ),
            ("Connection: close, nothing more sent", Settling { closing: Some(ByClient), ..at_rest }, Close(ByClient)),
            (
                "Connection: close, bytes after it",
                Settling { closing: Some(ByClient), input_pending: true, ..at_rest },
                Enter(Closing),
            ),
            ("a drain's last answer", Settling { closing: Some(Drain), draining: true, ..at_rest }, Enter(Closing)),
        ];
        for (what, facts, expected) in cases {
            assert_eq!(next_state(&facts), expected, "{what}");
        }
    }

    #[test]
    fn only_a_client_that_asked_to_close_and_sent_nothing_more_is_closed_at_once() {
        assert!(!must_linger(CloseReason::ByClient, false));
        assert!(must_linger(CloseReason::ByClient, true));
        for reason in [CloseReason::Error, CloseReason::HeaderTimeout, CloseReason::MaxRequests, CloseReason::Drain] {
            assert!(must_linger(reason, false), "{reason:?}");
        }
    }

    #[test]
    fn http11_persists_by_default_and_counts_down() {
        let (persistence, reason) = keep_alive(&request(Version::Http11));
        assert_eq!(persistence, Persistence::KeepAlive { timeout_secs: 75, remaining: 999, http10: false });
        assert_eq!(reason, None);
    }

    #[test]
    fn http10_persists_only_when_asked() {
        assert_eq!(keep_alive(&request(Version::Http10)), (Persistence::Close, Some(CloseReason::ByClient)));
        let asked = KeepAliveInput { keep_alive_requested: true, ..request(Version::Http10) };
        assert!(matches!(keep_alive(&asked).0, Persistence::KeepAlive { http10: true, .. }));
    }

    #[test]
    fn the_server_ends_a_connection_for_its_own_reasons() {
        let close = KeepAliveInput { close_requested: true, ..request(Version::Http11) };
        assert_eq!(keep_alive(&close).1, Some(CloseReason::ByClient));
        let last = KeepAliveInput { served_before: 999, ..request(Version::Http11) };
        assert_eq!(keep_alive(&last), (Persistence::Close, Some(CloseReason::MaxRequests)));
        let one_before_last = KeepAliveInput { served_before: 998, ..request(Version::Http11) };
        assert!(matches!(keep_alive(&one_before_last).0, Persistence::KeepAlive { remaining: 1, .. }));
        let draining = KeepAliveInput { draining: true, ..request(Version::Http11) };
        assert_eq!(keep_alive(&draining).1, Some(CloseReason::Drain));
    }
}
