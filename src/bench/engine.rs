//! The lab's one event loop: client connections on one mio poll, each with a scenario's state
//! beside it, and what happens on them (connected, request written, answer read, ended) handed
//! to the scenario as it happens.
//!
//! ```text
//!   open(state, request)  a connection waits its turn to connect, its request queued (to the
//!                         engine's address; `open_to` names another, for a run over servers)
//!   turn(load, sleep)     connect up to `connects_per_turn` of those waiting, sleep until an
//!                         event or for `sleep`, then per connection:
//!                           connect done  -> load.connected
//!                           output drained -> load.written
//!                           each whole answer -> load.answered (then consumed)
//!                           each event of an event-stream body -> load.event (then consumed)
//!                           each frame after a switch to WebSocket -> load.websocket (then
//!                           consumed)
//!                           close, reset, bad bytes, failed connect -> load.ended (gone)
//! ```
//!
//! A scenario is the `Load` it implements plus its own loop around `turn`: what to open and
//! send, when (schedules, deadlines), and what to count. The engine owns no policy but the
//! connect budget (opening faster than the server accepts overflows its listen backlog and costs
//! each dropped connection a 1 s SYN retransmit): no timeouts, no retries, no figures but the
//! bytes each connection carried.
//!
//! Invariants:
//! - A connection's token is its key in the slab. A closed connection's socket is dropped at
//!   once (which removes it from the poll) but its key stays taken until the event batch is
//!   over, so no event of this batch can reach a newer connection under the same key.
//! - After `ended` or `close`, no callback names that key again in this batch.
//! - Each event drains what it reports: writes until `WouldBlock`, reads until `WouldBlock`, a
//!   short read, or (when the peer's close is announced) the end of the stream, so no
//!   edge-triggered event is lost.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::{Events, Poll, Token};
use slab::Slab;

use super::conn::{Conn, ConnError};
use super::frame::{self, Frame, Framed};
use super::websocket;

/// epoll sleeps in whole milliseconds, rounded up, so a wake timed by it alone would come up to
/// a millisecond late, and that lateness would be charged to the server. `sleep_before` sleeps
/// until this long before a due time; the scenario's loop then turns without sleeping until it.
const SPIN: Duration = Duration::from_millis(1);
const EVENTS_CAPACITY: usize = 4096;

/// How long opening `connections` may take, each connected and its request written, before a
/// scenario stops waiting and reports what it has: 10 s, plus 2 s per thousand.
pub fn opening_bound(connections: usize) -> Duration {
    Duration::from_secs(10) + Duration::from_secs(2) * (connections / 1000) as u32
}

/// How long a turn may sleep to wake no later than `due` (see `SPIN`): for a scenario whose
/// timing is part of what it measures.
pub fn sleep_before(due: Instant) -> Duration {
    due.saturating_duration_since(Instant::now()).saturating_sub(SPIN)
}

/// What happens on the connections, told to the scenario. Each callback may open, send to and
/// close any connection, this one included.
pub trait Load<S> {
    /// The connect of `key` has completed.
    fn connected(&mut self, _engine: &mut Engine<S>, _key: usize, _now: Instant) {}
    /// Everything queued on `key` has been written: the request given to `open`, or what a
    /// `send` could not write at once.
    fn written(&mut self, _engine: &mut Engine<S>, _key: usize, _now: Instant) {}
    /// A whole response arrived on `key`: its bytes are `engine.bytes(key, range)` (its body at
    /// `frame.body`) until the callback returns, when it is consumed.
    fn answered(&mut self, engine: &mut Engine<S>, key: usize, frame: &Frame, now: Instant);
    /// An event arrived on `key`, whose last answer opened an event stream (`Reading::Events`):
    /// its bytes are `engine.bytes(key, &(0..event.len))` until the callback returns. Comments
    /// (heartbeats) and `retry` are not events (`frame::Event::is_dispatched`).
    fn event(&mut self, _engine: &mut Engine<S>, _key: usize, _event: &frame::Event, _now: Instant) {}
    /// A frame arrived on `key`, whose last answer switched it to WebSocket
    /// (`Reading::WebSocket`): its payload is `engine.bytes(key, &frame.payload)` until the
    /// callback returns. Pings are handed over too: answering them is the scenario's.
    fn websocket(&mut self, _engine: &mut Engine<S>, _key: usize, _frame: &websocket::Frame, _now: Instant) {}
    /// `key` ended, for the reason `why` (its connect failed, the connection did, or the server
    /// closed it); its state is handed back.
    fn ended(&mut self, engine: &mut Engine<S>, key: usize, gone: Gone<S>, why: ConnError, now: Instant);
}

/// An open connection and the scenario's state for it.
pub struct Open<S> {
    pub conn: Conn,
    pub state: S,
    /// When its connect began.
    pub opened_at: Instant,
}

/// What is left of a connection that ended: its state and the bytes it carried.
pub struct Gone<S> {
    pub state: S,
    pub sent: u64,
    pub received: u64,
}

enum Entry<S> {
    /// Waiting for its turn to connect to its address, with the request to send once connected.
    Waiting(S, Vec<u8>, SocketAddr),
    Open(Open<S>),
    /// Closed during this batch: the key is released after it.
    Closed,
}

pub struct Engine<S> {
    poll: Poll,
    events: Events,
    /// Where `open` connects.
    addr: SocketAddr,
    entries: Slab<Entry<S>>,
    /// Keys waiting to connect, oldest first.
    waiting: VecDeque<usize>,
    connects_per_turn: usize,
    /// Keys closed in this batch, released after it.
    released: Vec<usize>,
    /// Connections opened so far (connects started).
    pub opened: u64,
}

impl<S> Engine<S> {
    /// # Errors
    ///
    /// When the poll cannot be created.
    pub fn new(addr: SocketAddr, connects_per_turn: usize) -> Result<Engine<S>, String> {
        Ok(Engine {
            poll: Poll::new().map_err(|e| format!("cannot create a poll: {e}"))?,
            events: Events::with_capacity(EVENTS_CAPACITY),
            addr,
            entries: Slab::new(),
            waiting: VecDeque::new(),
            connects_per_turn,
            released: Vec::new(),
            opened: 0,
        })
    }

    /// A connection to the target, with `state` beside it and `request` (may be empty) to send
    /// once connected: it connects in a coming turn, within the connect budget. Returns its key.
    pub fn open(&mut self, state: S, request: &[u8]) -> usize {
        self.open_to(self.addr, state, request)
    }

    /// As `open`, to `addr` instead of the engine's address.
    pub fn open_to(&mut self, addr: SocketAddr, state: S, request: &[u8]) -> usize {
        let key = self.entries.insert(Entry::Waiting(state, request.to_vec(), addr));
        self.waiting.push_back(key);
        key
    }

    /// Connections waiting for their turn to connect.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
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

    /// The keys of the open connections that `which` picks (those past a scenario's timeout).
    pub fn keys(&self, which: impl Fn(&Open<S>) -> bool) -> Vec<usize> {
        let picked =
            |(key, entry): (usize, &Entry<S>)| matches!(entry, Entry::Open(open) if which(open)).then_some(key);
        self.entries.iter().filter_map(picked).collect()
    }

    /// Queues `bytes` on `key` and writes what the socket takes (all of it once connected,
    /// unless the send buffer is full); `written` is told when a remainder goes out. Nothing
    /// happens on a closed key.
    ///
    /// # Errors
    ///
    /// The write's failure; the connection is then of no further use (`close` it).
    pub fn send(&mut self, key: usize, bytes: &[u8]) -> Result<(), ConnError> {
        match self.entries.get_mut(key) {
            Some(Entry::Waiting(_, request, _)) => request.extend_from_slice(bytes),
            Some(Entry::Open(open)) => {
                open.conn.queue(bytes);
                open.conn.flush()?;
            }
            Some(Entry::Closed) | None => {}
        }
        Ok(())
    }

    /// Bytes of a response framed on `key`, at `at` (its body or a header value located by the
    /// frame); empty for a closed key.
    pub fn bytes(&self, key: usize, at: &Range<usize>) -> &[u8] {
        self.get(key).map_or(&[], |open| open.conn.bytes(at))
    }

    /// Closes `key` now (or forgets it, if it is still waiting to connect): its socket is
    /// dropped, its key released after the batch. Returns what is left of an open one.
    pub fn close(&mut self, key: usize) -> Option<Gone<S>> {
        let entry = self.entries.get_mut(key)?;
        match std::mem::replace(entry, Entry::Closed) {
            Entry::Open(open) => {
                self.released.push(key);
                Some(Gone { state: open.state, sent: open.conn.sent, received: open.conn.received })
            }
            Entry::Waiting(..) => {
                self.released.push(key);
                self.waiting.retain(|&k| k != key);
                None
            }
            Entry::Closed => None,
        }
    }

    /// Closes every connection, open or waiting to connect.
    pub fn close_all(&mut self) {
        self.waiting.clear(); // so that closing each is not a search of the queue
        let keys: Vec<usize> = self.entries.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.close(key);
        }
    }

    /// One turn: sleeps until an event or for `sleep`, then hands every event's happenings to
    /// `load`.
    ///
    /// # Errors
    ///
    /// When the poll fails.
    pub fn turn(&mut self, load: &mut impl Load<S>, sleep: Duration) -> Result<(), String> {
        self.connect_waiting(load);
        match self.poll.poll(&mut self.events, Some(sleep)) {
            Err(e) if e.kind() != ErrorKind::Interrupted => return Err(format!("poll failed: {e}")),
            _ => {}
        }
        let events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        for event in events.iter() {
            // One clock reading per event: the arrival time of this connection's answers.
            self.dispatch(load, event, Instant::now());
        }
        self.events = events;
        for key in self.released.drain(..) {
            self.entries.remove(key);
        }
        Ok(())
    }

    /// Starts the connects of up to `connects_per_turn` waiting connections.
    fn connect_waiting(&mut self, load: &mut impl Load<S>) {
        let keys: Vec<usize> = self.waiting.drain(..self.connects_per_turn.min(self.waiting.len())).collect();
        for key in keys {
            let Some(Entry::Waiting(state, request, addr)) =
                self.entries.get_mut(key).map(|e| std::mem::replace(e, Entry::Closed))
            else {
                continue;
            };
            let now = Instant::now();
            match Conn::open(self.poll.registry(), addr, Token(key)) {
                Ok(mut conn) => {
                    self.opened += 1;
                    conn.queue(&request);
                    self.entries[key] = Entry::Open(Open { conn, state, opened_at: now });
                    // On loopback the handshake often completes inside connect(): then the
                    // first request goes out now instead of one event later.
                    self.progress(load, key, now);
                }
                Err(e) => {
                    self.released.push(key);
                    load.ended(self, key, Gone { state, sent: 0, received: 0 }, e, now);
                }
            }
        }
    }

    /// Completes the connect and writes what is queued, telling `load` of each. Returns `false`
    /// when the connection is gone (or still connecting).
    fn progress(&mut self, load: &mut impl Load<S>, key: usize, now: Instant) -> bool {
        let Some(open) = self.get_mut(key) else {
            return false;
        };
        if !open.conn.is_connected() {
            match open.conn.finish_connect() {
                Ok(true) => load.connected(self, key, now),
                Ok(false) => return false, // still connecting
                Err(e) => {
                    self.end(load, key, e, now);
                    return false;
                }
            }
        }
        let Some(open) = self.get_mut(key) else {
            return false;
        };
        if open.conn.wants_write() {
            if let Err(e) = open.conn.flush() {
                self.end(load, key, e, now);
                return false;
            }
            if !open.conn.wants_write() {
                load.written(self, key, now);
            }
        }
        self.get(key).is_some()
    }

    fn dispatch(&mut self, load: &mut impl Load<S>, event: &Event, now: Instant) {
        let key = event.token().0;
        if !self.progress(load, key, now) || !(event.is_readable() || event.is_read_closed() || event.is_error()) {
            return; // gone, still connecting, or nothing to read
        }
        let Some(open) = self.get_mut(key) else {
            return;
        };
        // A short read usually means the socket is drained; when the peer's close came with
        // the data, only reading on finds it, as no later edge will announce it.
        let eof = match open.conn.fill(event.is_read_closed() || event.is_error()) {
            Ok(eof) => eof,
            Err(e) => return self.end(load, key, e, now),
        };
        // Until the scenario closes it, or no whole response is left.
        while let Some(open) = self.get_mut(key) {
            match open.conn.next() {
                Ok(Some(framed)) => {
                    match &framed {
                        Framed::Response(frame) => load.answered(self, key, frame, now),
                        Framed::Event(event) if event.is_dispatched() => load.event(self, key, event, now),
                        Framed::Event(_) => {}
                        Framed::WebSocket(frame) => load.websocket(self, key, frame, now),
                    }
                    if let Some(open) = self.get_mut(key) {
                        open.conn.consume(&framed);
                    }
                }
                Ok(None) => break,
                Err(e) => return self.end(load, key, e, now),
            }
        }
        if eof {
            let partial = self.get(key).is_some_and(|open| open.conn.has_partial_input());
            self.end(load, key, ConnError::Closed { partial }, now);
        }
    }

    fn end(&mut self, load: &mut impl Load<S>, key: usize, why: ConnError, now: Instant) {
        if let Some(gone) = self.close(key) {
            load.ended(self, key, gone, why, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// What a scenario heard, in order; a connection's state is its name.
    #[derive(Default)]
    struct Heard(Vec<String>);
    type Name = &'static str;

    impl Load<Name> for Heard {
        fn connected(&mut self, engine: &mut Engine<Name>, key: usize, _now: Instant) {
            self.0.push(format!("connected {}", engine.get(key).map_or("?", |open| open.state)));
        }

        fn written(&mut self, engine: &mut Engine<Name>, key: usize, _now: Instant) {
            self.0.push(format!("written {}", engine.get(key).map_or("?", |open| open.state)));
        }

        fn answered(&mut self, engine: &mut Engine<Name>, key: usize, frame: &Frame, _now: Instant) {
            let body = String::from_utf8_lossy(engine.bytes(key, &frame.body)).to_string();
            self.0.push(format!("answered {} {body}", frame.status));
        }

        fn event(&mut self, engine: &mut Engine<Name>, key: usize, event: &frame::Event, _now: Instant) {
            let block = engine.bytes(key, &(0..event.len));
            let id = String::from_utf8_lossy(event.id.clone().map_or(b"-".as_slice(), |at| &block[at])).to_string();
            self.0.push(format!("event {id} {}", String::from_utf8_lossy(&event.data(block))));
        }

        fn websocket(&mut self, engine: &mut Engine<Name>, key: usize, frame: &websocket::Frame, _now: Instant) {
            let payload = String::from_utf8_lossy(engine.bytes(key, &frame.payload)).to_string();
            self.0.push(format!("{:?} {payload}", frame.kind));
        }

        fn ended(&mut self, _: &mut Engine<Name>, _: usize, gone: Gone<Name>, why: ConnError, _: Instant) {
            self.0.push(format!("ended {} {why:?} after {} and {} bytes", gone.state, gone.sent, gone.received));
        }
    }

    /// A scripted server answers twice in one write and closes: the connect, the write, both
    /// answers and the end reach the scenario in that order, with the bytes each way.
    #[test]
    fn answers_then_the_close_reach_the_scenario_and_the_key_is_released() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut peer, _) = listener.accept().unwrap();
            peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut request = [0u8; 64];
            let _ = peer.read(&mut request).unwrap();
            let two = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 503 No\r\nContent-Length: 1\r\n\r\nb";
            peer.write_all(two).unwrap();
        });
        let mut engine = Engine::new(addr, 1).unwrap();
        let mut heard = Heard::default();
        let key = engine.open("one", b"GET / HTTP/1.1\r\n\r\n");
        let deadline = Instant::now() + Duration::from_secs(5);
        while (engine.waiting() > 0 || engine.get(key).is_some()) && Instant::now() < deadline {
            engine.turn(&mut heard, Duration::from_millis(100)).unwrap();
        }
        server.join().unwrap();
        assert_eq!(
            heard.0,
            [
                "connected one",
                "written one",
                "answered 200 a",
                "answered 503 b",
                "ended one Closed { partial: false } after 18 and 78 bytes"
            ]
        );
        assert_eq!(engine.open("two", b""), key, "the key is free again after the batch");
    }

    /// `open` connects to the engine's address, `open_to` to the one it names: each listener
    /// gets its own connection and its own request.
    #[test]
    fn each_connection_goes_to_its_own_address() {
        let listeners = [(); 2].map(|()| TcpListener::bind("127.0.0.1:0").unwrap());
        let [first, second] = [0, 1].map(|i| listeners[i].local_addr().unwrap());
        let mut engine = Engine::new(first, 2).unwrap();
        engine.open("first", b"to the first");
        engine.open_to(second, "second", b"to the second");
        let mut heard = Heard::default();
        let deadline = Instant::now() + Duration::from_secs(5);
        while heard.0.iter().filter(|h| h.starts_with("written")).count() < 2 && Instant::now() < deadline {
            engine.turn(&mut heard, Duration::from_millis(100)).unwrap();
        }
        for (listener, sent) in listeners.iter().zip(["to the first", "to the second"]) {
            let (mut peer, _) = listener.accept().unwrap();
            peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut received = vec![0u8; sent.len()];
            peer.read_exact(&mut received).unwrap();
            assert_eq!(String::from_utf8_lossy(&received), sent);
        }
    }

    /// Serves one connection the `pieces`, 20 ms apart, and drives an engine that opened it with
    /// `request` under `label` until it ends: what the scenario heard after connecting.
    fn heard_from(pieces: &'static [&'static [u8]], label: &'static str, request: &[u8]) -> Vec<String> {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut peer, _) = listener.accept().unwrap();
            peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = peer.read(&mut [0u8; 64]).unwrap();
            for piece in pieces {
                peer.write_all(piece).unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let mut engine = Engine::new(addr, 1).unwrap();
        let mut heard = Heard::default();
        let key = engine.open(label, request);
        let deadline = Instant::now() + Duration::from_secs(5);
        while (engine.waiting() > 0 || engine.get(key).is_some()) && Instant::now() < deadline {
            engine.turn(&mut heard, Duration::from_millis(100)).unwrap();
        }
        server.join().unwrap();
        heard.0[2..].to_vec()
    }

    /// An event stream's head is an answer, then each event of its body reaches the scenario,
    /// written in pieces or together, its heartbeats left out, until the close.
    #[test]
    fn an_event_stream_reaches_the_scenario_one_event_at_a_time() {
        let pieces: &[&[u8]] = &[
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n",
            b"retry: 2000\n\nid: 1\nda",
            b"ta: a\n\n: heartbeat\n\n",
            b"id: 2\ndata: b\ndata: c\n\nid: 3\n",
        ];
        let ended = "ended stream Closed { partial: true } after 26 and 141 bytes";
        let heard = heard_from(pieces, "stream", b"GET /events/t HTTP/1.1\r\n\r\n");
        assert_eq!(heard, ["answered 200 ", "event 1 a", "event 2 b\nc", ended]);
    }

    /// A `101` to WebSocket is an answer, then each frame reaches the scenario, written in
    /// pieces or together, until the close.
    #[test]
    fn a_websocket_reaches_the_scenario_one_frame_at_a_time() {
        let pieces: &[&[u8]] = &[
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            b"\x81\x01a\x89",
            b"\x00\x81\x02bc",
            b"\x88\x02\x03\xe9",
        ];
        let ended = "ended socket Closed { partial: false } after 20 and 90 bytes";
        let heard = heard_from(pieces, "socket", b"GET /ws HTTP/1.1\r\n\r\n");
        assert_eq!(heard, ["answered 101 ", "Text a", "Ping ", "Text bc", "Close \u{3}\u{fffd}", ended]);
    }
}
