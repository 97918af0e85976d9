//! The lab's one event loop: client connections on one mio poll, each with a scenario's state
//! beside it, and what happens on them (connected, request written, answer read, ended) handed
//! to the scenario as it happens.
//!
//! ```text
//!   turn(load, sleep)  sleep until an event or for `sleep`, then per event:
//!                        connect done  -> load.connected
//!                        output drained -> load.written
//!                        each whole answer -> load.answered (then consumed)
//!                        close, reset, bad bytes -> load.ended (the connection is gone)
//! ```
//!
//! A scenario is the `Load` it implements plus its own loop around `turn`: what to open and
//! send, when (connects per turn, schedules, deadlines), and what to count. The engine owns no
//! policy: no timeouts, no retries, no figures but the bytes each connection carried.
//!
//! Invariants:
//! - A connection's token is its key in the slab. A closed connection's socket is dropped at
//!   once (which removes it from the poll) but its key stays taken until the event batch is
//!   over, so no event of this batch can reach a newer connection under the same key.
//! - After `ended` or `close`, no callback names that key again in this batch.
//! - Each event drains what it reports: writes until `WouldBlock`, reads until `WouldBlock`, a
//!   short read, or (when the peer's close is announced) the end of the stream, so no
//!   edge-triggered event is lost.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::{Events, Poll, Token};
use slab::Slab;

use super::conn::{Conn, ConnError};
use super::frame::Frame;

/// epoll sleeps in whole milliseconds, rounded up, so a wake timed by it alone would come up to
/// a millisecond late, and that lateness would be charged to the server. `sleep_before` sleeps
/// until this long before a due time; the scenario's loop then turns without sleeping until it.
const SPIN: Duration = Duration::from_millis(1);
const EVENTS_CAPACITY: usize = 4096;

/// How long a turn may sleep to wake no later than `due` (see `SPIN`): for a scenario whose
/// timing is part of what it measures.
pub fn sleep_before(due: Instant) -> Duration {
    due.saturating_duration_since(Instant::now()).saturating_sub(SPIN)
}

/// How a connection ended.
#[derive(Debug)]
pub enum Ending {
    /// The server closed its side; `partial` when bytes of an unfinished response were left.
    Closed { partial: bool },
    /// A failed connect, read or write, or bytes that are not a response.
    Failed(ConnError),
}

/// What happens on the connections, told to the scenario. Each callback may open, send to and
/// close any connection, this one included.
pub trait Load<S> {
    /// The connect of `key` has completed (not called when `open` found it complete already).
    fn connected(&mut self, _engine: &mut Engine<S>, _key: usize, _now: Instant) {}
    /// Everything queued on `key` has been written, after having had to wait for room or for
    /// the connect (not called when `send` wrote it all at once).
    fn written(&mut self, _engine: &mut Engine<S>, _key: usize, _now: Instant) {}
    /// A whole response arrived on `key`: its bytes are `engine.head(key, frame)` and
    /// `engine.body(key, frame)` until the callback returns, when it is consumed.
    fn answered(&mut self, engine: &mut Engine<S>, key: usize, frame: &Frame, now: Instant);
    /// `key` ended; the connection and its state are handed back.
    fn ended(&mut self, engine: &mut Engine<S>, key: usize, gone: Open<S>, ending: Ending, now: Instant);
}

/// An open connection and the scenario's state for it.
pub struct Open<S> {
    pub conn: Conn,
    pub state: S,
}

enum Entry<S> {
    Open(Open<S>),
    /// Closed during this batch: the key is released after it.
    Closed,
}

pub struct Engine<S> {
    poll: Poll,
    events: Events,
    addr: SocketAddr,
    entries: Slab<Entry<S>>,
    /// Keys closed in this batch, released after it.
    released: Vec<usize>,
    /// Connections opened so far (connects started).
    pub opened: u64,
}

impl<S> Engine<S> {
    /// # Errors
    ///
    /// When the poll cannot be created.
    pub fn new(addr: SocketAddr) -> Result<Engine<S>, String> {
        Ok(Engine {
            poll: Poll::new().map_err(|e| format!("cannot create a poll: {e}"))?,
            events: Events::with_capacity(EVENTS_CAPACITY),
            addr,
            entries: Slab::new(),
            released: Vec::new(),
            opened: 0,
        })
    }

    /// Starts a connect to the target, with `state` beside it; returns its key.
    ///
    /// # Errors
    ///
    /// When no socket can be made or registered (the open-file limit, no free local port).
    pub fn open(&mut self, state: S) -> Result<usize, ConnError> {
        let entry = self.entries.vacant_entry();
        let conn = Conn::open(self.poll.registry(), self.addr, Token(entry.key()))?;
        self.opened += 1;
        let key = entry.key();
        entry.insert(Entry::Open(Open { conn, state }));
        Ok(key)
    }

    /// The open connection at `key`, if it is open.
    pub fn get(&self, key: usize) -> Option<&Open<S>> {
        match self.entries.get(key) {
            Some(Entry::Open(open)) => Some(open),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, key: usize) -> Option<&mut Open<S>> {
        match self.entries.get_mut(key) {
            Some(Entry::Open(open)) => Some(open),
            _ => None,
        }
    }

    /// The open connections' states.
    pub fn states(&self) -> impl Iterator<Item = (usize, &Open<S>)> {
        self.entries.iter().filter_map(|(key, entry)| match entry {
            Entry::Open(open) => Some((key, open)),
            Entry::Closed => None,
        })
    }

    /// Queues `bytes` on `key` and writes what the socket takes (all of it once connected,
    /// unless the send buffer is full). Nothing happens on a closed key.
    ///
    /// # Errors
    ///
    /// The write's failure; the connection is then of no further use (`close` it).
    pub fn send(&mut self, key: usize, bytes: &[u8]) -> Result<(), ConnError> {
        let Some(open) = self.get_mut(key) else {
            return Ok(());
        };
        open.conn.queue(bytes);
        open.conn.flush()
    }

    /// The body of a response framed on `key` (empty for a closed key).
    pub fn body(&self, key: usize, frame: &Frame) -> &[u8] {
        self.get(key).map_or(&[], |open| open.conn.body(frame))
    }

    /// The head of a response framed on `key` (empty for a closed key).
    pub fn head(&self, key: usize, frame: &Frame) -> &[u8] {
        self.get(key).map_or(&[], |open| open.conn.head(frame))
    }

    /// Closes `key` now: its socket is dropped, its key released after the batch.
    pub fn close(&mut self, key: usize) -> Option<Open<S>> {
        let entry = self.entries.get_mut(key)?;
        match std::mem::replace(entry, Entry::Closed) {
            Entry::Open(open) => {
                self.released.push(key);
                Some(open)
            }
            Entry::Closed => None,
        }
    }

    /// One turn: sleeps until an event or for `sleep`, then hands every event's happenings to
    /// `load`. Returns how many answers were handed over.
    ///
    /// # Errors
    ///
    /// When the poll fails.
    pub fn turn(&mut self, load: &mut impl Load<S>, sleep: Duration) -> Result<usize, String> {
        if let Err(e) = self.poll.poll(&mut self.events, Some(sleep)) {
            if e.kind() != ErrorKind::Interrupted {
                return Err(format!("poll failed: {e}"));
            }
        }
        let events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        let mut answers = 0;
        for event in events.iter() {
            // One clock reading per event: the arrival time of this connection's answers.
            answers += self.dispatch(load, event, Instant::now());
        }
        self.events = events;
        for key in self.released.drain(..) {
            self.entries.remove(key);
        }
        Ok(answers)
    }

    fn dispatch(&mut self, load: &mut impl Load<S>, event: &Event, now: Instant) -> usize {
        let key = event.token().0;
        let Some(open) = self.get_mut(key) else {
            return 0; // closed earlier in this batch
        };
        if !open.conn.is_connected() {
            match open.conn.finish_connect() {
                Ok(true) => load.connected(self, key, now),
                Ok(false) => return 0, // spurious: still connecting
                Err(e) => return self.end(load, key, Ending::Failed(e), now),
            }
        }
        let Some(open) = self.get_mut(key) else {
            return 0;
        };
        if open.conn.wants_write() {
            if let Err(e) = open.conn.flush() {
                return self.end(load, key, Ending::Failed(e), now);
            }
            if !open.conn.wants_write() {
                load.written(self, key, now);
            }
        }
        if !(event.is_readable() || event.is_read_closed() || event.is_error()) {
            return 0;
        }
        let Some(open) = self.get_mut(key) else {
            return 0;
        };
        // A short read usually means the socket is drained; when the peer's close came with
        // the data, only reading on finds it, as no later edge will announce it.
        let eof = match open.conn.fill(event.is_read_closed() || event.is_error()) {
            Ok(eof) => eof,
            Err(e) => return self.end(load, key, Ending::Failed(e), now),
        };
        let mut answers = 0;
        loop {
            let Some(open) = self.get_mut(key) else {
                return answers; // the scenario closed it
            };
            match open.conn.next_response() {
                Ok(Some(frame)) => {
                    answers += 1;
                    load.answered(self, key, &frame, now);
                    if let Some(open) = self.get_mut(key) {
                        open.conn.consume(&frame);
                    }
                }
                Ok(None) => break,
                Err(e) => return answers + self.end(load, key, Ending::Failed(e), now),
            }
        }
        if eof {
            let partial = self.get(key).is_some_and(|open| open.conn.has_partial_input());
            self.end(load, key, Ending::Closed { partial }, now);
        }
        answers
    }

    fn end(&mut self, load: &mut impl Load<S>, key: usize, ending: Ending, now: Instant) -> usize {
        if let Some(gone) = self.close(key) {
            load.ended(self, key, gone, ending, now);
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// What a scenario heard, in order.
    #[derive(Default)]
    struct Heard(Vec<String>);

    impl Load<&'static str> for Heard {
        fn connected(&mut self, engine: &mut Engine<&'static str>, key: usize, _now: Instant) {
            self.0.push(format!("connected {}", engine.get(key).map_or("?", |open| open.state)));
        }

        fn answered(&mut self, engine: &mut Engine<&'static str>, key: usize, frame: &Frame, _now: Instant) {
            let body = String::from_utf8_lossy(engine.body(key, frame)).to_string();
            self.0.push(format!("answered {} {body}", frame.status));
        }

        fn ended(
            &mut self,
            _: &mut Engine<&'static str>,
            _: usize,
            gone: Open<&'static str>,
            ending: Ending,
            _: Instant,
        ) {
            self.0.push(format!("ended {} {ending:?} after {} bytes", gone.state, gone.conn.received));
        }
    }

    /// A scripted server answers twice in one write and closes: both answers, then the end.
    #[test]
    fn answers_then_the_close_reach_the_scenario_and_the_key_is_released() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut peer, _) = listener.accept().unwrap();
            peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut request = [0u8; 64];
            let _ = peer.read(&mut request).unwrap();
            peer.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 503 No\r\nContent-Length: 1\r\n\r\nb",
            )
            .unwrap();
        });
        let mut engine = Engine::new(addr).unwrap();
        let mut heard = Heard::default();
        let key = engine.open("one").unwrap();
        engine.send(key, b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while engine.get(key).is_some() && Instant::now() < deadline {
            engine.turn(&mut heard, Duration::from_millis(100)).unwrap();
        }
        server.join().unwrap();
        let heard: Vec<&str> = heard.0.iter().map(String::as_str).filter(|h| !h.starts_with("connected")).collect();
        assert_eq!(heard, ["answered 200 a", "answered 503 b", "ended one Closed { partial: false } after 78 bytes"]);
        assert_eq!(engine.open("two").unwrap(), key, "the key is free again after the batch");
    }
}
