//! One non-blocking client connection of the load generator: its socket, what it still has to
//! write, what it has read and not yet framed, and how many bytes crossed it.
//!
//! Invariants:
//! - The socket is registered once, for READABLE and WRITABLE, edge-triggered. The WRITABLE
//!   edge announces the end of the connect and, later, room after a full send buffer; it costs
//!   nothing in between, so no `reregister` call is ever needed.
//! - `flush` and `fill` drain until `WouldBlock` (or a short read, which means the same for a
//!   TCP socket), so an edge is never lost. Nothing is written before the connect completes;
//!   `flush` checks for that itself, so a request may be queued at any time.
//! - The input buffer never grows past one response or event at the framing caps (`MAX_INPUT`):
//!   more unconsumed input than that is an error, so a peer cannot make it grow without bound.
//! - `sent` and `received` count the bytes of HTTP (and, after an upgrade, of WebSocket frames)
//!   that crossed the socket, not TCP/IP headers.

use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use super::frame::{self, FrameError, Framed, Reading};
use super::websocket;

/// The input buffer's first size: a batch of 16 pipelined answers or a long-poll answer fits,
/// and twenty thousand idle followers stay under 100 MB. It doubles when a response needs more.
const INITIAL_INPUT: usize = 4 * 1024;
/// The input buffer never grows past this: one response or event at the framing caps.
const MAX_INPUT: usize = frame::MAX_HEAD_BYTES + frame::MAX_BODY_BYTES;

/// Why a connection is of no further use.
#[derive(Debug)]
pub enum ConnError {
    /// The connect failed.
    Connect(io::Error),
    /// A read or write failed.
    Io(io::Error),
    /// The server closed its side; `partial` when bytes of an unfinished response were left.
    Closed { partial: bool },
    /// The bytes are not a response the generator frames.
    Frame(FrameError),
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnError::Connect(e) => write!(f, "connect failed: {e}"),
            ConnError::Io(e) => write!(f, "connection failed: {e}"),
            ConnError::Closed { .. } => f.write_str("the server closed the connection"),
            ConnError::Frame(e) => write!(f, "bad response: {e}"),
        }
    }
}

pub struct Conn {
    stream: TcpStream,
    connected: bool,
    output: Vec<u8>,
    /// `output[written..]` is still to be written.
    written: usize,
    /// Allocated to its full length once (`read` needs initialised bytes; zeroing per read
    /// would cost more than the read); `input[start..end]` is read and not yet consumed.
    input: Vec<u8>,
    start: usize,
    end: usize,
    /// What the input is: responses, or, after one that opened an event stream or switched to
    /// WebSocket, events or frames until the close.
    reading: Reading,
    pub sent: u64,
    pub received: u64,
}

impl Conn {
    /// Starts a non-blocking connect and registers the socket under `token`.
    ///
    /// # Errors
    ///
    /// `ConnError::Connect` when the socket cannot be made or registered (the open-file limit).
    pub fn open(registry: &Registry, addr: SocketAddr, token: Token) -> Result<Conn, ConnError> {
        let mut stream = TcpStream::connect(addr).map_err(ConnError::Connect)?;
        registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE).map_err(ConnError::Connect)?;
        // Requests are written whole; there is nothing for Nagle to coalesce.
        let _ = stream.set_nodelay(true);
        let (output, input) = (Vec::new(), Vec::new());
        let (start, end, reading, sent, received) = (0, 0, Reading::Responses, 0, 0);
        Ok(Conn { stream, connected: false, output, written: 0, input, start, end, reading, sent, received })
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// On a WRITABLE or error event while connecting: `Ok(true)` once the connect has completed.
    /// A spurious event leaves it connecting (`Ok(false)`).
    ///
    /// # Errors
    ///
    /// `ConnError::Connect` with the connect's own error (refused, reset).
    pub fn finish_connect(&mut self) -> Result<bool, ConnError> {
        if self.connected {
            return Ok(true);
        }
        if let Some(e) = self.stream.take_error().map_err(ConnError::Connect)? {
            return Err(ConnError::Connect(e));
        }
        match self.stream.peer_addr() {
            Ok(_) => {
                self.connected = true;
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(ConnError::Connect(e)),
        }
    }

    /// Appends a request to the output; `flush` writes it.
    pub fn queue(&mut self, request: &[u8]) {
        if self.written == self.output.len() {
            self.output.clear();
            self.written = 0;
        }
        self.output.extend_from_slice(request);
    }

    /// Output is waiting for room in the send buffer (or for the connect).
    pub fn wants_write(&self) -> bool {
        self.written < self.output.len()
    }

    /// Writes queued output until it is all written or the socket is full. Before the connect
    /// completes it writes nothing (and the WRITABLE edge that ends the connect calls again).
    ///
    /// # Errors
    ///
    /// `ConnError::Connect` when the connect failed, `ConnError::Io` when the write fails.
    pub fn flush(&mut self) -> Result<(), ConnError> {
        if !self.finish_connect()? {
            return Ok(());
        }
        while self.wants_write() {
            match self.stream.write(&self.output[self.written..]) {
                Ok(0) => return Err(ConnError::Io(ErrorKind::WriteZero.into())),
                Ok(n) => {
                    self.written += n;
                    self.sent += n as u64;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(ConnError::Io(e)),
            }
        }
        Ok(())
    }

    /// Reads what the socket holds: until `WouldBlock`, or a short read (which on a TCP socket
    /// means the same) unless `to_the_end`, when the peer's close may sit behind the data.
    /// `Ok(true)` when the server has closed its side.
    ///
    /// # Errors
    ///
    /// `ConnError::Io` when the read fails (a reset).
    pub fn fill(&mut self, to_the_end: bool) -> Result<bool, ConnError> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
        loop {
            if self.end == self.input.len() {
                self.make_room()?;
            }
            match self.stream.read(&mut self.input[self.end..]) {
                Ok(0) => return Ok(true),
                Ok(n) => {
                    self.end += n;
                    self.received += n as u64;
                    if self.end < self.input.len() && !to_the_end {
                        return Ok(false); // a short read: the socket is drained
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(ConnError::Io(e)),
            }
        }
    }

    /// Moves unconsumed input to the front, or doubles the buffer when it is all unconsumed.
    fn make_room(&mut self) -> Result<(), ConnError> {
        if self.start > 0 {
            self.input.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        } else if self.input.len() >= MAX_INPUT {
            return Err(ConnError::Frame(FrameError::TooLarge));
        } else {
            let size = (self.input.len() * 2).clamp(INITIAL_INPUT, MAX_INPUT);
            self.input.resize(size, 0);
        }
        Ok(())
    }

    /// The next whole response in the input, or, once a response opened an event stream or
    /// switched to WebSocket, its next event or frame, if one has arrived. Its bytes are
    /// `self.bytes(range)` until `consume`.
    ///
    /// # Errors
    ///
    /// `ConnError::Frame` when the bytes cannot be framed.
    pub fn next(&self) -> Result<Option<Framed>, ConnError> {
        let input = &self.input[self.start..self.end];
        let framed = match self.reading {
            Reading::Responses => frame::frame(input).map(|frame| frame.map(Framed::Response)),
            Reading::Events => frame::event(input).map(|event| event.map(Framed::Event)),
            Reading::WebSocket => websocket::read(input).map(|frame| frame.map(Framed::WebSocket)),
        };
        framed.map_err(ConnError::Frame)
    }

    /// Bytes of the response or event at the front of the input, at `at` within it (a frame's
    /// body or header value, an event's field).
    pub fn bytes(&self, at: &std::ops::Range<usize>) -> &[u8] {
        &self.input[self.start + at.start..self.start + at.end]
    }

    pub fn consume(&mut self, framed: &Framed) {
        self.start += match framed {
            Framed::Response(frame) => {
                self.reading = frame.then;
                frame.len
            }
            Framed::Event(event) => event.len,
            Framed::WebSocket(frame) => frame.len,
        };
    }

    /// Unconsumed input: bytes of a response or event not yet whole.
    pub fn has_partial_input(&self) -> bool {
        self.start < self.end
    }
}
