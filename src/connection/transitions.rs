//! The connection's decisions as pure functions of facts: which state follows a read or a
//! write (`next_state`), whether a close lingers (`must_linger`), and whether a connection
//! survives an answer (`keep_alive`). Each has a table of tests; the machine (`super`) applies
//! them.

use super::{Conversation, Settings, State};
use crate::http::cors::Grant;
use crate::http::request::{Method, Request, Version};
use crate::http::response::Persistence;

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
    /// An event stream or a WebSocket whose token expired.
    TokenExpired,
    /// A WebSocket that did not answer a ping within a heartbeat.
    PingTimeout,
}

/// What the transition function looks at once a connection has read, answered and written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settling {
    /// Answers are serialised that the socket has not taken yet.
    pub output_pending: bool,
    /// Bytes read and not parsed: a partial request, or requests behind a held poll.
    pub input_pending: bool,
    /// The peer's FIN was read: nothing more will arrive.
    pub read_closed: bool,
    /// Where the conversation stands after what was answered.
    pub conversation: Conversation,
    pub draining: bool,
}

/// Where a connection goes from `settle`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Enter(State),
    Close(CloseReason),
}

/// The transition function: the state a connection's buffers and conversation call for after
/// a read or a write, in order of precedence. Output waiting for the socket comes first; then a
/// FIN, after which nothing the peer sent can become an answer any more (every complete request
/// was parsed before this is asked: what is left is a request cut short, or requests behind a
/// poll whose client left); then an answer that ended the conversation; then a held poll or an
/// open stream; then a request begun; then idleness, which a drain turns into a close.
pub fn next_state(s: &Settling) -> Next {
    if s.output_pending {
        return Next::Enter(State::Writing(s.conversation));
    }
    if s.read_closed {
        return Next::Close(s.conversation.ending().unwrap_or(CloseReason::ByClient));
    }
    match s.conversation {
        Conversation::Ending(reason) if must_linger(reason, s.input_pending) => Next::Enter(State::Closing(reason)),
        Conversation::Ending(reason) => Next::Close(reason),
        Conversation::Holding(poll) => Next::Enter(State::Held(poll)),
        Conversation::Streaming(stream) => Next::Enter(State::Streaming(stream)),
        Conversation::Socket(socket) => Next::Enter(State::WebSocket(socket)),
        Conversation::Open { continued } if s.input_pending => Next::Enter(State::Reading { continued }),
        Conversation::Open { .. } if s.draining => Next::Close(CloseReason::Drain),
        Conversation::Open { .. } => Next::Enter(State::Idle),
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

/// What a request asked of its connection's persistence, reduced once from its version and
/// `Connection` header (RFC 9112 §9.3): HTTP/1.1 persists unless `close` is asked for, HTTP/1.0
/// only with `keep-alive`. One byte, kept by a held poll until its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    Close,
    KeepAlive11,
    /// HTTP/1.0 with `Connection: keep-alive`, which its answer must say too.
    KeepAlive10,
}

impl Asked {
    pub fn of(version: Version, close: bool, keep_alive: bool) -> Asked {
        match version {
            _ if close => Asked::Close,
            Version::Http11 => Asked::KeepAlive11,
            Version::Http10 if keep_alive => Asked::KeepAlive10,
            Version::Http10 => Asked::Close,
        }
    }
}

/// What the keep-alive rule needs to know about one request.
#[derive(Debug, Clone, Copy)]
pub struct KeepAliveInput {
    pub asked: Asked,
    /// Requests answered on this connection before this one.
    pub served_before: u32,
    pub max_requests: u32,
    pub idle_timeout_secs: u64,
    pub draining: bool,
}

/// The one place that decides whether a connection survives an answer to a request (RFC 9112
/// section 9.3): as the client asked (`Asked`), unless the server ends it at `--max-requests`
/// or on drain. Returns the headers to
/// write and, when closing, why. (Input that could not be parsed as a request never gets here:
/// where the next request would start is unknown, so its error answer always closes.)
pub fn keep_alive(input: &KeepAliveInput) -> (Persistence, Option<CloseReason>) {
    let served = input.served_before.saturating_add(1);
    let reason = if input.draining {
        Some(CloseReason::Drain)
    } else if input.asked == Asked::Close {
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
                http10: input.asked == Asked::KeepAlive10,
            },
            None,
        ),
    }
}

/// A request's facts that decide how its answer is framed; a held poll keeps them until its
/// answer is written. Three bytes: a held poll's 28 bytes have no room for more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    pub asked: Asked,
    pub head_only: bool,
    /// What the request's `Origin` was granted: whom the answer tells it may read it.
    pub cors: Grant,
}

impl Framing {
    pub fn of(req: &Request, settings: &Settings) -> Framing {
        Framing {
            asked: Asked::of(req.version, req.close, req.keep_alive),
            head_only: req.method == Method::Head,
            cors: settings.origins.grant(req.origin),
        }
    }

    /// What the keep-alive rule needs, with `served_before` requests answered before this one.
    pub fn keep_alive_input(&self, served_before: u32, settings: &Settings, draining: bool) -> KeepAliveInput {
        KeepAliveInput {
            asked: self.asked,
            served_before,
            max_requests: settings.max_requests,
            idle_timeout_secs: settings.idle_timeout.as_secs(),
            draining,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: Version) -> KeepAliveInput {
        KeepAliveInput {
            asked: Asked::of(version, false, false),
            served_before: 0,
            max_requests: 1000,
            idle_timeout_secs: 75,
            draining: false,
        }
    }

    #[test]
    fn the_transition_function_table() {
        use CloseReason::{ByClient, Drain, Error};
        use Next::{Close, Enter};
        let poll = crate::connection::tests::a_held_poll();
        let (open, holding) = (Conversation::OPEN, Conversation::Holding(poll));
        let ending = Conversation::Ending;
        let at_rest = Settling {
            output_pending: false,
            input_pending: false,
            read_closed: false,
            conversation: open,
            draining: false,
        };
        let cases = [
            ("nothing pending", at_rest, Enter(State::Idle)),
            ("nothing pending while draining", Settling { draining: true, ..at_rest }, Close(Drain)),
            ("answers not yet taken", Settling { output_pending: true, ..at_rest }, Enter(State::Writing(open))),
            (
                "answers not yet taken come before everything",
                Settling { output_pending: true, read_closed: true, conversation: ending(Error), ..at_rest },
                Enter(State::Writing(ending(Error))),
            ),
            (
                "answers before a held poll",
                Settling { output_pending: true, conversation: holding, ..at_rest },
                Enter(State::Writing(holding)),
            ),
            (
                "a partial request",
                Settling { input_pending: true, ..at_rest },
                Enter(State::Reading { continued: false }),
            ),
            (
                "a partial request told to continue",
                Settling { input_pending: true, conversation: Conversation::Open { continued: true }, ..at_rest },
                Enter(State::Reading { continued: true }),
            ),
            (
                "a request begun while draining is finished",
                Settling { input_pending: true, draining: true, ..at_rest },
                Enter(State::Reading { continued: false }),
            ),
            ("a held poll", Settling { conversation: holding, ..at_rest }, Enter(State::Held(poll))),
            (
                "requests behind a held poll",
                Settling { conversation: holding, input_pending: true, ..at_rest },
                Enter(State::Held(poll)),
            ),
            (
                "a held poll whose client left",
                Settling { conversation: holding, read_closed: true, ..at_rest },
                Close(ByClient),
            ),
            (
                "a held poll whose client left, requests behind it",
                Settling { conversation: holding, read_closed: true, input_pending: true, ..at_rest },
                Close(ByClient),
            ),
            ("a FIN after the last answer", Settling { read_closed: true, ..at_rest }, Close(ByClient)),
            (
                "a request cut short by a FIN",
                Settling { read_closed: true, input_pending: true, ..at_rest },
                Close(ByClient),
            ),
            (
                "an error answer, the client still sending",
                Settling { conversation: ending(Error), ..at_rest },
                Enter(State::Closing(Error)),
            ),
            (
                "an error answer after the FIN",
                Settling { conversation: ending(Error), read_closed: true, ..at_rest },
                Close(Error),
            ),
            (
                "Connection: close, nothing more sent",
                Settling { conversation: ending(ByClient), ..at_rest },
                Close(ByClient),
            ),
            (
                "Connection: close, bytes after it",
                Settling { conversation: ending(ByClient), input_pending: true, ..at_rest },
                Enter(State::Closing(ByClient)),
            ),
            (
                "a drain's last answer",
                Settling { conversation: ending(Drain), draining: true, ..at_rest },
                Enter(State::Closing(Drain)),
            ),
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
        let asked = KeepAliveInput { asked: Asked::of(Version::Http10, false, true), ..request(Version::Http10) };
        assert!(matches!(keep_alive(&asked).0, Persistence::KeepAlive { http10: true, .. }));
    }

    #[test]
    fn the_server_ends_a_connection_for_its_own_reasons() {
        let close = KeepAliveInput { asked: Asked::of(Version::Http11, true, false), ..request(Version::Http11) };
        assert_eq!(keep_alive(&close).1, Some(CloseReason::ByClient));
        let last = KeepAliveInput { served_before: 999, ..request(Version::Http11) };
        assert_eq!(keep_alive(&last), (Persistence::Close, Some(CloseReason::MaxRequests)));
        let one_before_last = KeepAliveInput { served_before: 998, ..request(Version::Http11) };
        assert!(matches!(keep_alive(&one_before_last).0, Persistence::KeepAlive { remaining: 1, .. }));
        let draining = KeepAliveInput { draining: true, ..request(Version::Http11) };
        assert_eq!(keep_alive(&draining).1, Some(CloseReason::Drain));
    }
}
