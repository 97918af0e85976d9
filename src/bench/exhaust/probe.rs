//! One client of `exhaust`, and what became of it: a non-blocking connection that asks for
//! `/plaintext` and, in the same write, for a long poll; and the blocking keep-alive connection
//! opened before filling.
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
//! - The socket is registered once, READABLE and WRITABLE, edge-triggered; every event reads
//!   and writes until `WouldBlock`, so no edge is lost.
//! - Input is capped (`MAX_INPUT`): a peer that sends more than one small answer cannot make a
//!   probe buffer without bound.
//! - A probe reports becoming held once and its end once; the driver keeps the counts.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream as StdStream};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::bench::frame::{self, Frame};

/// More unanswered input than this is not a small answer; the probe stops reading it.
const MAX_INPUT: usize = 64 * 1024;

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

/// What one event changed: the probe became held, ended, or both (a poll refused or answered
/// in the same read as its probe's answer).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Update {
    pub held: bool,
    pub end: Option<End>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Connecting,
    Asking,
    Held,
    Done,
}

pub struct Probe {
    stream: TcpStream,
    pub stage: Stage,
    /// Opened during the CPU window rather than while filling.
    pub knocker: bool,
    /// Its probe was answered: the driver counted it held.
    pub was_held: bool,
    /// A `Connecting` or `Asking` probe past this is a refusal.
    pub deadline: Instant,
    output: Vec<u8>,
    written: usize,
    input: Vec<u8>,
}

impl Probe {
    /// Starts a connect to `addr` that will send `request` once connected.
    ///
    /// # Errors
    ///
    /// When no socket can be made or registered (the open-file limit, no free local port).
    pub fn open(
        registry: &Registry,
        addr: SocketAddr,
        token: Token,
        request: &[u8],
        deadline: Instant,
    ) -> io::Result<Probe> {
        let mut stream = TcpStream::connect(addr)?;
        registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        let _ = stream.set_nodelay(true);
        let mut probe = Probe {
            stream,
            stage: Stage::Connecting,
            knocker: false,
            was_held: false,
            deadline,
            output: request.to_vec(),
            written: 0,
            input: Vec::new(),
        };
        // On loopback the handshake often completes inside connect().
        if probe.stream.peer_addr().is_ok() {
            probe.stage = Stage::Asking;
            if probe.flush().is_err() {
                probe.stage = Stage::Connecting; // the event will report the failure
            }
        }
        Ok(probe)
    }

    /// Handles a readiness event (or a spurious one): completes the connect, writes, reads,
    /// and says what changed. `marker` is the text a delivery must carry.
    pub fn on_event(&mut self, marker: &str) -> Update {
        let mut update = Update::default();
        if self.stage == Stage::Connecting {
            let connected = match self.stream.take_error() {
                Ok(None) => self.stream.peer_addr(),
                Ok(Some(e)) | Err(e) => Err(e),
            };
            match connected {
                Ok(_) => self.stage = Stage::Asking,
                Err(e) if e.kind() == ErrorKind::NotConnected => return update,
                Err(_) => return self.end(update, End::Refused(Refusal::ConnectError)),
            }
        }
        if self.stage == Stage::Done {
            return update;
        }
        let fill = self.flush().and_then(|()| self.fill());
        while let Ok(Some(frame)) = frame::frame(&self.input) {
            let end = match (self.stage, frame.status) {
                (Stage::Asking, 200) => None,
                (_, 200) => {
                    Some(End::Answered { marked: contains(&self.input[frame.body.clone()], marker.as_bytes()) })
                }
                (_, 503) => Some(End::Refused(Refusal::Unavailable { retry_after: retry_after(&self.input, &frame) })),
                (_, status) => Some(End::Refused(Refusal::Status(status))),
            };
            self.input.drain(..frame.len);
            match end {
                None => {
                    self.stage = Stage::Held;
                    self.was_held = true;
                    update.held = true;
                }
                Some(end) => return self.end(update, end),
            }
        }
        let ended = match fill {
            Ok(false) => return update,
            Ok(true) => Refusal::Closed,
            Err(e) if e.kind() == ErrorKind::ConnectionReset || e.kind() == ErrorKind::BrokenPipe => Refusal::Reset,
            Err(_) => Refusal::Closed, // an input overflow or another failure: nothing more to read
        };
        let end = if self.stage == Stage::Held { End::Lost(ended) } else { End::Refused(ended) };
        self.end(update, end)
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

    fn end(&mut self, mut update: Update, end: End) -> Update {
        self.stage = Stage::Done;
        update.end = Some(end);
        update
    }

    fn flush(&mut self) -> io::Result<()> {
        while self.written < self.output.len() {
            match self.stream.write(&self.output[self.written..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads until `WouldBlock`; `Ok(true)` at the server's close.
    fn fill(&mut self) -> io::Result<bool> {
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return Ok(true),
                Ok(n) if self.input.len() + n > MAX_INPUT => return Err(ErrorKind::OutOfMemory.into()),
                Ok(n) => self.input.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// The `Retry-After` of the response framed at the start of `input`, or "-".
fn retry_after(input: &[u8], frame: &Frame) -> String {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut head = httparse::Response::new(&mut headers);
    if head.parse(&input[..frame.body.start]).is_err() {
        return "-".into();
    }
    head.headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("retry-after"))
        .map_or_else(|| "-".into(), |h| String::from_utf8_lossy(h.value).trim().to_string())
}

/// An answer on a blocking connection, or how it failed.
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
            Reply::Answer { status, took, .. } => {
                format!("{status} in {}", crate::bench::report::human_us(took.as_secs_f64() * 1e6))
            }
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

/// Whether the server has closed `stream` while it sat idle (a reclaim): a non-blocking read
/// that sees the end of the stream or a reset.
pub fn closed_while_idle(stream: &StdStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let mut byte = [0u8; 1];
    let closed = match stream.peek(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != ErrorKind::WouldBlock,
    };
    closed || stream.set_nonblocking(false).is_err()
}

/// Sends `request` on a blocking connection and reads one answer, all within `timeout`.
pub fn exchange(stream: &mut StdStream, request: &[u8], timeout: Duration) -> Reply {
    let started = Instant::now();
    let deadline = started + timeout;
    let _ = stream.set_write_timeout(Some(timeout));
    if let Err(e) = stream.write_all(request) {
        return Reply::Failed(failure(&e));
    }
    let mut input = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match frame::frame(&input) {
            Ok(Some(frame)) => {
                let body = input[frame.body.clone()].to_vec();
                return Reply::Answer { status: frame.status, body, took: started.elapsed() };
            }
            Ok(None) => {}
            Err(_) => return Reply::Failed(Refusal::Closed),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || input.len() > MAX_INPUT {
            return Reply::Failed(Refusal::Hang);
        }
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut buf) {
            Ok(0) => return Reply::Failed(Refusal::Closed),
            Ok(n) => input.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Reply::Failed(failure(&e)),
        }
    }
}

/// Connects with a bound, then `exchange`.
pub fn connect_and_exchange(addr: SocketAddr, request: &[u8], timeout: Duration) -> (Option<StdStream>, Reply) {
    match StdStream::connect_timeout(&addr, timeout) {
        Ok(mut stream) => {
            let _ = stream.set_nodelay(true);
            let reply = exchange(&mut stream, request, timeout);
            (Some(stream), reply)
        }
        Err(e) if e.kind() == ErrorKind::TimedOut => (None, Reply::Failed(Refusal::ConnectTimeout)),
        Err(_) => (None, Reply::Failed(Refusal::ConnectError)),
    }
}

fn failure(error: &io::Error) -> Refusal {
    match error.kind() {
        ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted => Refusal::Reset,
        ErrorKind::WouldBlock | ErrorKind::TimedOut => Refusal::Hang,
        _ => Refusal::Closed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn retry_after_is_read_from_the_head() {
        let input = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 2\r\nContent-Length: 3\r\n\r\nno\n";
        let frame = frame::frame(input).unwrap().unwrap();
        assert_eq!(retry_after(input, &frame), "2");
        let input = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(retry_after(input, &frame::frame(input).unwrap().unwrap()), "-");
        assert!(contains(b"{\"data\":\"mark 7\"}", b"mark 7") && !contains(b"mark", b"mark 7"));
    }

    /// A scripted server: answers the probe, holds the poll, then answers it with the marker.
    #[test]
    fn a_probe_is_held_then_answered() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let server = std::thread::spawn(move || {
            let (mut peer, _) = listener.accept().unwrap();
            peer.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").unwrap();
            go_rx.recv().unwrap();
            peer.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nmark 7").unwrap();
        });
        let mut poll = mio::Poll::new().unwrap();
        let mut events = mio::Events::with_capacity(8);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut probe = Probe::open(poll.registry(), addr, Token(0), b"GET / HTTP/1.1\r\n\r\n", deadline).unwrap();
        let (mut held, mut end) = (false, None);
        while end.is_none() && Instant::now() < deadline {
            poll.poll(&mut events, Some(Duration::from_millis(50))).unwrap();
            let update = probe.on_event("mark 7");
            if update.held {
                assert!(!held, "held once");
                held = true;
                go_tx.send(()).unwrap();
            }
            end = update.end;
        }
        server.join().unwrap();
        assert!(held && probe.was_held);
        assert_eq!(end, Some(End::Answered { marked: true }));
        assert_eq!(probe.stage, Stage::Done);
    }

    #[test]
    fn a_probe_nobody_answers_is_a_hang_at_its_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let poll = mio::Poll::new().unwrap();
        let now = Instant::now();
        let deadline = now + Duration::from_millis(1);
        let mut probe = Probe::open(poll.registry(), listener.local_addr().unwrap(), Token(0), b"x", deadline).unwrap();
        assert_eq!(probe.expire(now), None);
        assert!(matches!(probe.expire(deadline), Some(End::Refused(Refusal::Hang | Refusal::ConnectTimeout))));
        assert_eq!(probe.expire(deadline + Duration::from_secs(1)), None, "reported once");
    }
}
