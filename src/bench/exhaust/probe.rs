//! One client of `exhaust`, and what became of it: a newcomer on the lab's engine that asks for
//! `/plaintext` and, in the same write, for a long poll; and what a control exchange (the
//! keep-alive connection opened before filling, a publish, the fresh request) got back.
//!
//! ```text
//!   Connecting --connect done--> Asking --200 to /plaintext--> Held --poll answered--> Done
//!        |                          |                            |
//!        +-- refused, timed out --> +-- 503, reset, close, hang -+--> Refused / Lost
//! ```
//!
//! The `/plaintext` probe is how a held poll is told from a hang: both are a request without an
//! answer, but only a connection the server has accepted and served answers the probe. A
//! server that cannot accept leaves the newcomer in its listen backlog, connected as far as the
//! client can tell, with nothing coming back.
//!
//! Invariants:
//! - A `Probe` is the state machine only (no I/O): the engine's callbacks feed it.
//! - A probe reports becoming held once and its end once; the driver keeps the counts.

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use crate::bench::conn::ConnError;

/// How a newcomer was refused, or how a held poll was lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 503, with its `Retry-After` ("-" when absent).
    Unavailable { retry_after: String },
    /// Another status.
    Status(u16),
    /// The connection was reset.
    Reset,
    /// The server closed the connection without answering.
    Closed,
    /// Connected, asked, and no answer or close within the bound.
    Hang,
    /// The connect did not complete within the bound.
    ConnectTimeout,
    /// The connect failed (refused, or no socket could be made).
    ConnectError,
}

/// How a probe ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Refused before it was held, or its poll was refused (`--max-held`).
    Refused(Refusal),
    /// Its poll was answered 200; `marked` when the body carries the marker.
    Answered { marked: bool },
    /// Its held poll ended without an answer (`Reset` or `Closed`).
    Lost(Refusal),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Connecting,
    Asking,
    Held,
    Done,
}

/// A newcomer's progress; its connection lives in the engine under `key`.
pub struct Probe {
    pub key: Option<usize>,
    pub stage: Stage,
    /// Opened during the CPU window rather than while filling.
    pub knocker: bool,
    /// Its probe was answered: the driver counted it held.
    pub was_held: bool,
    /// A `Connecting` or `Asking` probe past this is a refusal.
    pub deadline: Instant,
}

impl Probe {
    pub fn new(knocker: bool, deadline: Instant) -> Probe {
        Probe { key: None, stage: Stage::Connecting, knocker, was_held: false, deadline }
    }

    pub fn connected(&mut self) {
        if self.stage == Stage::Connecting {
            self.stage = Stage::Asking;
        }
    }

    /// An answer: to the probe (`Asking`, 200: now held, and `None`) or to the poll (its end).
    /// `body` and `retry_after` are the response's; `marker` is the text a delivery must carry.
    pub fn answered(&mut self, status: u16, retry_after: Option<&[u8]>, body: &[u8], marker: &str) -> Option<End> {
        let end = match (self.stage, status) {
            (Stage::Done, _) => return None,
            (Stage::Connecting | Stage::Asking, 200) => {
                self.stage = Stage::Held;
                self.was_held = true;
                return None;
            }
            (_, 200) => End::Answered { marked: contains(body, marker.as_bytes()) },
            (_, 503) => {
                let retry_after = retry_after.map_or("-".into(), |value| String::from_utf8_lossy(value).into_owned());
                End::Refused(Refusal::Unavailable { retry_after })
            }
            (_, status) => End::Refused(Refusal::Status(status)),
        };
        self.stage = Stage::Done;
        Some(end)
    }

    /// The connection ended: a refusal before the probe was held, a lost poll after.
    pub fn ended(&mut self, why: &ConnError) -> End {
        let how = refusal(why);
        let end = if self.stage == Stage::Held { End::Lost(how) } else { End::Refused(how) };
        self.stage = Stage::Done;
        end
    }

    /// The refusal of a probe whose deadline has passed, if it is still waiting.
    pub fn expire(&mut self, now: Instant) -> Option<End> {
        let refusal = match self.stage {
            _ if now < self.deadline => return None,
            Stage::Connecting => Refusal::ConnectTimeout,
            Stage::Asking => Refusal::Hang,
            Stage::Held | Stage::Done => return None,
        };
        self.stage = Stage::Done;
        Some(End::Refused(refusal))
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// The answer to a control exchange, or how it failed.
#[derive(Debug)]
pub enum Reply {
    Answer { status: u16, body: Vec<u8>, took: Duration },
    Failed(Refusal),
}

impl Reply {
    pub fn is_ok(&self) -> bool {
        matches!(self, Reply::Answer { status: 200, .. })
    }

    /// `200 in 0.4 ms`, or how it failed.
    pub fn describe(&self) -> String {
        match self {
            Reply::Answer { status, took, .. } => format!("{status} in {}", crate::bench::report::human(*took)),
            Reply::Failed(refusal) => refusal.describe().to_string(),
        }
    }
}

impl Refusal {
    /// The kind, as the report names it.
    pub fn describe(&self) -> &'static str {
        match self {
            Refusal::Unavailable { .. } => "503",
            Refusal::Status(_) => "another status",
            Refusal::Reset => "reset",
            Refusal::Closed => "closed without an answer",
            Refusal::Hang => "no answer (hang)",
            Refusal::ConnectTimeout => "connect timeout",
            Refusal::ConnectError => "connect error",
        }
    }
}

/// How a connection's end refuses: a failed connect, a reset, or a close (or bytes that are
/// not a response: nothing more can be read).
pub fn refusal(why: &ConnError) -> Refusal {
    match why {
        ConnError::Connect(_) => Refusal::ConnectError,
        ConnError::Io(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => Refusal::Reset,
        ConnError::Io(_) | ConnError::Closed { .. } | ConnError::Frame(_) => Refusal::Closed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_carries_the_marker() {
        assert!(contains(b"{\"data\":\"mark 7\"}", b"mark 7") && !contains(b"mark", b"mark 7"));
    }

    /// The state machine, from the answers and ends a server can give.
    #[test]
    fn a_probe_is_held_then_answered_refused_or_lost() {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut probe = Probe::new(false, deadline);
        probe.connected();
        assert_eq!((probe.answered(200, None, b"ok", "mark 7"), probe.stage), (None, Stage::Held));
        let answered = probe.answered(200, None, b"{\"data\":\"mark 7\"}", "mark 7");
        assert_eq!(answered, Some(End::Answered { marked: true }));
        assert_eq!((probe.stage, probe.was_held), (Stage::Done, true));

        let mut refused = Probe::new(false, deadline);
        refused.connected();
        let end = refused.answered(503, Some(b"1"), b"", "m");
        assert_eq!(end, Some(End::Refused(Refusal::Unavailable { retry_after: "1".into() })));
        let mut refused = Probe::new(false, deadline);
        let end = refused.answered(503, None, b"", "m");
        assert_eq!(end, Some(End::Refused(Refusal::Unavailable { retry_after: "-".into() })));

        let mut lost = Probe::new(false, deadline);
        lost.connected();
        lost.answered(200, None, b"ok", "m");
        let reset = ConnError::Io(ErrorKind::ConnectionReset.into());
        assert_eq!(lost.ended(&reset), End::Lost(Refusal::Reset));
        let closed = ConnError::Closed { partial: false };
        assert_eq!(Probe::new(false, deadline).ended(&closed), End::Refused(Refusal::Closed));
    }

    #[test]
    fn a_probe_nobody_answers_is_a_hang_at_its_deadline() {
        let now = Instant::now();
        let deadline = now + Duration::from_millis(1);
        let mut connecting = Probe::new(false, deadline);
        assert_eq!(connecting.expire(now), None);
        assert_eq!(connecting.expire(deadline), Some(End::Refused(Refusal::ConnectTimeout)));
        let mut asking = Probe::new(true, deadline);
        asking.connected();
        assert_eq!(asking.expire(deadline), Some(End::Refused(Refusal::Hang)));
        assert_eq!(asking.expire(deadline + Duration::from_secs(1)), None, "reported once");
    }
}
