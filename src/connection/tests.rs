//! The machine driven without a socket or a sleep: a scripted peer (`Peer`) stands for the
//! socket, a few endpoints (`Endpoints` over a real `Topics`) stand for the service, and the
//! clock is a number the test moves to the deadline the machine asked for. Every state
//! transition has a row in `every_transition`, the timeouts included: a 75 s idle timeout takes
//! no longer to test than a request.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::time::Duration;

use super::*;
use crate::buffer::BufferPool;
use crate::http::cors::{AllowedOrigins, Grant};
use crate::http::request::Limits;
use crate::pubsub::{HoldKey, TopicLimits, Topics};

/// A peer scripted by the test, seen through the socket's two calls.
#[derive(Default)]
struct Peer {
    /// What the peer sent and the server has not read; each entry arrived as one segment.
    sent: VecDeque<Vec<u8>>,
    /// The peer shut its side down after what it sent.
    fin: bool,
    /// The next read fails as a reset would.
    reset: bool,
    /// Bytes the send buffer still takes; `None`: as many as come.
    room: Option<usize>,
    /// What the server wrote.
    received: Vec<u8>,
    shut_down: bool,
}

impl Read for Peer {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.reset {
            return Err(ErrorKind::ConnectionReset.into());
        }
        let Some(mut segment) = self.sent.pop_front() else {
            return if self.fin { Ok(0) } else { Err(ErrorKind::WouldBlock.into()) };
        };
        let n = segment.len().min(buf.len());
        buf[..n].copy_from_slice(&segment[..n]);
        if n < segment.len() {
            self.sent.push_front(segment.split_off(n));
        }
        Ok(n)
    }
}

impl Write for Peer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.room.map_or(buf.len(), |room| room.min(buf.len()));
        if n == 0 {
            return Err(ErrorKind::WouldBlock.into());
        }
        if let Some(room) = self.room.as_mut() {
            *room -= n;
        }
        self.received.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Io for Peer {
    fn shutdown_write(&mut self) {
        self.shut_down = true;
    }
}

/// A few endpoints: `/plaintext` answers, `/poll` waits on topic `t`, `/events` streams it,
/// `/costs` streams a count, `/missing` is refused by its head (so `Expect: 100-continue` gets a
/// 404).
struct Site {
    topics: Topics,
    topic: u32,
    released: u32,
    requests: u32,
    reused: u32,
    /// Connections by `StateKind`, as counted through `count_state`.
    by_state: [i32; 8],
    streams: i32,
    sockets: i32,
    /// The socket's wait on the topic (a real service keeps one per topic of a socket).
    socket_wait: Wait,
}

impl Site {
    fn new() -> Site {
        let limits = TopicLimits { capacity: 8, max_topics: 4, max_retained_bytes: 1 << 20, idle_timeout: 1 << 30 };
        let mut topics = Topics::new(limits);
        let topic = topics.get_or_create("t", 0).unwrap_or_default();
        Site {
            topics,
            topic,
            released: 0,
            requests: 0,
            reused: 0,
            by_state: [0; 8],
            streams: 0,
            sockets: 0,
            socket_wait: Wait { hold: HoldKey::NOWHERE, after: 0, deadline: 0 },
        }
    }
}

impl Endpoints for Site {
    fn count_request(&mut self, reused: bool) {
        self.requests += 1;
        self.reused += u32::from(reused);
    }

    fn count_state(&mut self, from: StateKind, to: StateKind) {
        self.by_state[from as usize] -= 1;
        self.by_state[to as usize] += 1;
    }

    fn refuse_by_head(&mut self, _: Method, path: &str, _: bool) -> Option<Response<'static>> {
        (path == "/missing").then(|| Response::error(Status::NOT_FOUND, b"no\n"))
    }

    fn answer(&mut self, key: usize, req: &Request, refused: bool, now: Tick) -> Reply<'_> {
        match req.path {
            _ if refused => Reply::Now(Response::error(Status::SERVICE_UNAVAILABLE, b"full\n")),
            "/poll" => Reply::Wait(Wait { hold: self.topics.hold(self.topic, key), after: 0, deadline: now + 30_000 }),
            "/events" | "/events-for-40s" | "/costs" => {
                self.streams += 1;
                let head = Response::new(Status::OK, "text/event-stream", b"");
                let stream = match req.path {
                    "/events" | "/events-for-40s" => {
                        let hold = HoldKey::unlisted(self.topic);
                        let ends = if req.path == "/events" { EndSecond::NEVER } else { EndSecond::at(now + 40_000) };
                        Stream { wait: Wait { hold, after: 0, deadline: deadline_after(now, HEARTBEAT) }, ends }
                    }
                    _ => Stream::cost_view(now),
                };
                Reply::Stream(head, stream)
            }
            "/ws" => {
                self.sockets += 1;
                // A socket waits on its subscription, which the endpoints keep: here, one wait.
                self.socket_wait = Wait { hold: HoldKey::unlisted(self.topic), after: 0, deadline: 0 };
                let socket = Socket::new(HoldKey::many(0), now, HEARTBEAT, EndSecond::NEVER);
                Reply::Upgrade { accept: *b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", socket }
            }
            "/missing" => Reply::Now(Response::error(Status::NOT_FOUND, b"no\n")),
            _ => Reply::Now(Response::new(Status::OK, "text/plain", b"hi")),
        }
    }

    fn answer_held(&mut self, key: usize, wait: &Wait, now: Tick) -> Response<'_> {
        self.topics.release(wait.hold, key, now);
        Response::new(Status::OK, "text/plain", b"message").with_cors(response::Cors::Shared)
    }

    fn still_waiting(&self, key: usize, hold: HoldKey) -> bool {
        match hold.on() {
            HoldOn::Many(_) => self.topics.holds(self.socket_wait.hold, key),
            _ => self.topics.holds(hold, key),
        }
    }

    fn release(&mut self, key: usize, wait: &Wait, now: Tick) {
        self.topics.release(wait.hold, key, now);
        self.released += 1;
    }

    fn stream_news(&mut self, key: usize, wait: &mut Wait, out: &mut Vec<u8>, _: Tick) {
        match self.topics.read(self.topic, wait.after) {
            crate::pubsub::Read::Messages { messages, cursor, .. } => {
                for message in messages {
                    out.extend_from_slice(format!("id: {}\n{}\n", message.seq, message.lines).as_bytes());
                }
                wait.after = cursor;
            }
            _ => wait.hold = self.topics.hold(self.topic, key),
        }
    }

    fn stream_costs(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(format!("data: {} streams\n\n", self.streams).as_bytes());
    }

    /// A socket here says back what it is sent, and `publish:TEXT` publishes TEXT on the topic.
    fn socket_message(&mut self, _: usize, _: &Socket, text: &str, out: &mut Vec<u8>, now: Tick) {
        match text.strip_prefix("publish:") {
            Some(message) => {
                self.topics.publish(self.topic, message, now);
            }
            None => crate::ws::frame::write_text(out, text),
        }
    }

    /// A socket's news: each message of the topic as a text frame of its data; listed again
    /// once it has sent everything.
    fn socket_news(&mut self, key: usize, _: &Socket, out: &mut Vec<u8>, now: Tick) {
        let mut wait = self.socket_wait;
        let sent = out.len();
        self.stream_news(key, &mut wait, out, now);
        if out.len() > sent {
            let data = String::from_utf8(out.split_off(sent)).unwrap_or_default();
            crate::ws::frame::write_text(out, &data);
        }
        self.socket_wait = wait;
    }

    fn end_socket(&mut self, key: usize, _: &Socket, now: Tick) {
        self.topics.release(self.socket_wait.hold, key, now);
        self.sockets -= 1;
        self.released += 1;
    }

    fn end_stream(&mut self, key: usize, stream: &Stream, now: Tick) {
        if !stream.is_cost_view() {
            self.topics.release(stream.wait.hold, key, now);
        }
        self.streams -= 1;
        self.released += 1;
    }
}

const HEARTBEAT: Duration = Duration::from_secs(15);

/// A held poll for tables that need one.
pub(super) fn a_held_poll() -> HeldPoll {
    let mut site = Site::new();
    let hold = site.topics.hold(site.topic, 7);
    let framing = Framing { asked: Asked::KeepAlive11, head_only: false, cors: Grant::NONE };
    HeldPoll { wait: Wait { hold, after: 0, deadline: 100 }, framing }
}

const KEY: usize = 7;

/// One connection, its peer, and what a reactor would keep for it: the clock and the timer.
struct Rig {
    conn: Connection,
    peer: Peer,
    site: Site,
    pool: BufferPool,
    settings: Settings,
    date: HttpDate,
    now: Tick,
    draining: bool,
    /// The deadline of the one timer, as the machine last asked.
    timer: Option<Tick>,
    /// The machine asked to be flushed and has not been yet.
    queued: bool,
    last: Want,
}

impl Rig {
    fn new(refused: bool) -> Rig {
        let settings = Settings {
            limits: Limits { max_head_bytes: 8192, max_uri_bytes: 8192, max_body_bytes: 1 << 20 },
            input_cap: 2 * 8192 + (1 << 20) + 1,
            socket_input_cap: crate::ws::frame::input_cap(1 << 20),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            write_timeout: Duration::from_secs(30),
            max_requests: 10_000,
            heartbeat: HEARTBEAT,
            origins: AllowedOrigins::new(&["http://page.test".into()]),
        };
        let conn = Connection::new(refused);
        let timer = conn.deadline(0, &settings);
        let mut site = Site::new();
        site.by_state[conn.kind() as usize] = 1; // the reactor counts a newcomer in
        Rig {
            conn,
            peer: Peer::default(),
            site,
            pool: BufferPool::default(),
            settings,
            date: HttpDate::new(),
            now: 0,
            draining: false,
            timer,
            queued: false,
            last: Want::default(),
        }
    }

    fn event(&mut self, event: Event) {
        let mut turn = Turn {
            key: KEY,
            now: self.now,
            date: &self.date,
            draining: self.draining,
            settings: &self.settings,
            pool: &mut self.pool,
            endpoints: &mut self.site,
        };
        let want = self.conn.process(event, &mut self.peer, &mut turn);
        match want.timer {
            Timer::Keep => {}
            Timer::At(at) => self.timer = Some(at),
            Timer::Cancel => self.timer = None,
        }
        self.queued |= want.flush;
        self.last = want;
    }

    fn step(&mut self, step: &Step) {
        const READABLE: Event = Event::Ready { readable: true, writable: false, hung_up: false };
        match *step {
            Step::Send(bytes) => {
                self.peer.sent.push_back(bytes.as_bytes().to_vec());
                self.event(READABLE);
            }
            Step::SendBytes(bytes) => {
                self.peer.sent.push_back(bytes.to_vec());
                self.event(READABLE);
            }
            Step::SendRepeated(bytes, times) => {
                self.peer.sent.push_back(bytes.repeat(times).into_bytes());
                self.event(READABLE);
            }
            Step::SendAndFin(bytes) => {
                self.peer.sent.push_back(bytes.as_bytes().to_vec());
                self.peer.fin = true;
                self.event(Event::Ready { readable: true, writable: false, hung_up: true });
            }
            Step::Fin => {
                self.peer.fin = true;
                self.event(Event::Ready { readable: true, writable: false, hung_up: true });
            }
            Step::Reset => {
                self.peer.reset = true;
                self.event(Event::Ready { readable: true, writable: false, hung_up: true });
            }
            Step::Room(room) => {
                self.peer.room = room;
                self.event(Event::Ready { readable: false, writable: true, hung_up: false });
            }
            Step::Expire => {
                // The reactor's wheel fires the timer at its deadline: the clock jumps there.
                let at = self.timer.take().expect("a timer to expire");
                self.now = self.now.max(at);
                self.event(Event::Deadline);
            }
            Step::Wake => {
                let woken = self.site.topics.take_held(self.site.topic, self.now);
                self.queued |= woken.contains(&KEY);
            }
            Step::Publish(text) => {
                self.site.topics.publish(self.site.topic, text, self.now);
                self.step(&Step::Wake);
            }
            Step::Flush => {
                assert!(std::mem::take(&mut self.queued), "flushed without being queued");
                self.event(Event::Flush);
            }
            Step::Drain => {
                self.draining = true;
                self.event(Event::Drain);
            }
            Step::Reclaim => self.event(Event::Reclaim),
            Step::Later(ms) => self.now += ms,
        }
    }

    /// The status codes the peer has received, in order.
    fn statuses(&self) -> Vec<u16> {
        let text = String::from_utf8_lossy(&self.peer.received);
        text.match_indices("HTTP/1.1 ").filter_map(|(i, _)| text.get(i + 9..i + 12)?.parse().ok()).collect()
    }
}

#[derive(Debug, Clone, Copy)]
enum Step {
    /// The peer sends these bytes; one readiness event.
    Send(&'static str),
    /// Bytes that are not text (WebSocket frames); one readiness event.
    SendBytes(&'static [u8]),
    SendRepeated(&'static str, usize),
    /// The bytes and the FIN come in one event (read-closed).
    SendAndFin(&'static str),
    Fin,
    Reset,
    /// The send buffer takes this much more (`None`: all); a writable event.
    Room(Option<usize>),
    /// The clock moves to the timer's deadline, which fires.
    Expire,
    /// A publish on the poll's topic takes its held polls off the list.
    Wake,
    /// A message is published on that topic, which wakes it.
    Publish(&'static str),
    /// The flush phase serves the connection it queued.
    Flush,
    Drain,
    Reclaim,
    /// The clock moves on this many milliseconds.
    Later(Tick),
}

const GET: &str = "GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n";
const POLL: &str = "GET /poll HTTP/1.1\r\nHost: x\r\n\r\n";
const CLOSE: &str = "GET /plaintext HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
const PARTIAL: &str = "GET /plaintext HTTP/1.1\r\nHo";
const EVENTS: &str = "GET /events HTTP/1.1\r\nHost: x\r\n\r\n";
const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n";
/// A client's text frame "hello", masked (with the key 0, which leaves the payload as it is).
const HELLO_FRAME: &[u8] = b"\x81\x85\0\0\0\0hello";
/// A client's close frame, code 1000, masked.
const CLOSE_FRAME: &[u8] = b"\x88\x82\0\0\0\0\x03\xe8";
/// A text frame a client did not mask: a protocol error.
const UNMASKED_FRAME: &[u8] = b"\x81\x02hi";
const COSTS: &str = "GET /costs HTTP/1.1\r\nHost: x\r\n\r\n";
const EXPECT: &str = "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n";
const EXPECT_MISSING: &str = "POST /missing HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n";

/// Where a script leaves the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ends {
    In(StateKind),
    Closed(CloseReason),
}

#[test]
fn every_transition() {
    use CloseReason::{ByClient, Error, HeaderTimeout, IdleTimeout, Reclaimed, WriteTimeout};
    use Ends::{Closed, In};
    use StateKind::{Closing, Held, Idle, Reading, Streaming, WebSocket, Writing};
    use Step::*;
    #[rustfmt::skip]
    let cases: &[(&str, &[Step], Ends, &[u16])] = &[
        ("accepted, nothing sent yet", &[], In(Reading), &[]),
        ("a request is answered; the connection idles", &[Send(GET)], In(Idle), &[200]),
        ("pipelined requests are answered in order", &[Send("GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\nGET /missing HTTP/1.1\r\nHost: x\r\n\r\n")], In(Idle), &[200, 404]),
        ("a partial request waits", &[Send(PARTIAL)], In(Reading), &[]),
        ("a partial request completed", &[Send(PARTIAL), Send("st: x\r\n\r\n")], In(Idle), &[200]),
        ("head deadline: 408 queued for the flush phase", &[Send(PARTIAL), Expire], In(Writing), &[]),
        ("head deadline: 408 written, then lingering", &[Send(PARTIAL), Expire, Flush], In(Closing), &[408]),
        ("head deadline with nothing sent", &[Expire, Flush], In(Closing), &[408]),
        ("lingering ends at the peer's FIN", &[Send(PARTIAL), Expire, Flush, Fin], Closed(HeaderTimeout), &[408]),
        ("lingering ends at its deadline", &[Send(PARTIAL), Expire, Flush, Expire], Closed(HeaderTimeout), &[408]),
        ("idle deadline: closed without a word", &[Send(GET), Expire], Closed(IdleTimeout), &[200]),
        ("bytes after idling begin a request", &[Send(GET), Later(70_000), Send(PARTIAL)], In(Reading), &[200]),
        ("a request and the FIN in one event", &[SendAndFin(GET)], Closed(ByClient), &[200]),
        ("a FIN while idle", &[Send(GET), Fin], Closed(ByClient), &[200]),
        ("a request cut short by a FIN", &[SendAndFin(PARTIAL)], Closed(ByClient), &[]),
        ("a reset", &[Send(GET), Reset], Closed(ByClient), &[200]),
        ("Connection: close, nothing more sent: closed at once", &[Send(CLOSE)], Closed(ByClient), &[200]),
        ("Connection: close, then more bytes: lingers", &[Send("GET /plaintext HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /")], In(Closing), &[200]),
        ("a malformed request: 400, lingers", &[Send("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")], In(Closing), &[400]),
        ("a malformed request, then the FIN", &[Send("BAD\r\n\r\n"), Fin], Closed(Error), &[400]),
        ("a poll with nothing to say is held", &[Send(POLL)], In(Held), &[]),
        ("a held poll woken by a publish", &[Send(POLL), Wake, Flush], In(Idle), &[200]),
        ("a held poll's deadline", &[Send(POLL), Expire, Flush], In(Idle), &[200]),
        ("a held poll whose client leaves", &[Send(POLL), Fin], Closed(ByClient), &[]),
        ("a poll and its FIN in one event", &[SendAndFin(POLL)], Closed(ByClient), &[]),
        ("requests behind a held poll wait for its answer", &[Send(POLL), Send(GET)], In(Held), &[]),
        ("then both are answered, in order", &[Send(POLL), Send(GET), Wake, Flush], In(Idle), &[200, 200]),
        ("a poll behind a poll is held next", &[Send(POLL), Send(POLL), Wake, Flush], In(Held), &[200]),
        ("a flush that is not due changes nothing", &[Send(POLL), Send(POLL), Wake, Flush, Later(1), Wake, Flush], In(Idle), &[200, 200]),
        ("the socket will not take the answer", &[Room(Some(0)), Send(GET)], In(Writing), &[]),
        ("write deadline: dropped", &[Room(Some(0)), Send(GET), Expire], Closed(WriteTimeout), &[]),
        ("the socket takes part, then the rest", &[Room(Some(10)), Send(GET), Room(None)], In(Idle), &[200]),
        ("input while writing waits for the output", &[Room(Some(0)), Send(GET), Send(GET), Room(None)], In(Idle), &[200, 200]),
        ("a FIN while writing: answered, then closed", &[Room(Some(0)), Send(GET), Fin, Room(None)], Closed(ByClient), &[200]),
        ("requests parked at the output cap are answered after it drains", &[Room(Some(0)), SendRepeated(GET, 3000), Room(None)], In(Idle), &[200; 3000]),
        ("parked requests, then the FIN: all answered, then closed", &[Room(Some(0)), SendRepeated(GET, 3000), Fin, Room(None)], Closed(ByClient), &[200; 3000]),
        ("Expect: 100-continue", &[Send(EXPECT)], In(Reading), &[100]),
        ("Expect: 100-continue, then the body", &[Send(EXPECT), Send("ok")], In(Idle), &[100, 200]),
        ("Expect: 100-continue on a refusal: no body wanted", &[Send(EXPECT_MISSING)], In(Closing), &[404]),
        ("drain: an idle connection closes", &[Send(GET), Drain], Closed(CloseReason::Drain), &[200]),
        ("drain: a connection with nothing sent closes", &[Drain], Closed(CloseReason::Drain), &[]),
        ("drain: a request begun is finished", &[Send(PARTIAL), Drain, Send("st: x\r\n\r\n")], In(Closing), &[200]),
        ("drain: a held poll is answered, and closes", &[Send(POLL), Drain, Flush], In(Closing), &[200]),
        ("reclaimed while idle", &[Send(GET), Reclaim], Closed(Reclaimed), &[200]),
        ("an event stream opens", &[Send(EVENTS)], In(Streaming), &[200]),
        ("a stream is fed when a publish wakes it", &[Send(EVENTS), Publish("m"), Flush], In(Streaming), &[200]),
        ("a stream's heartbeat", &[Send(EVENTS), Expire, Flush], In(Streaming), &[200]),
        ("a stream whose client leaves", &[Send(EVENTS), Fin], Closed(ByClient), &[200]),
        ("a stream and its FIN in one event", &[SendAndFin(EVENTS)], Closed(ByClient), &[200]),
        ("a stream the client does not read", &[Send(EVENTS), Room(Some(0)), Publish("m"), Flush], In(Writing), &[200]),
        ("a stream not read until the write deadline", &[Send(EVENTS), Room(Some(0)), Publish("m"), Flush, Expire], Closed(WriteTimeout), &[200]),
        ("a stream read again", &[Send(EVENTS), Room(Some(0)), Publish("m"), Flush, Room(None)], In(Streaming), &[200]),
        ("requests after a stream's are never answered", &[Send(EVENTS), Send(GET)], In(Streaming), &[200]),
        ("drain: a stream ends, lingering", &[Send(EVENTS), Drain], In(Closing), &[200]),
        ("the cost view streams", &[Send(COSTS), Expire, Flush], In(Streaming), &[200]),
        ("a WebSocket opens", &[Send(UPGRADE)], In(WebSocket), &[101]),
        ("a socket's message is answered", &[Send(UPGRADE), SendBytes(HELLO_FRAME)], In(WebSocket), &[101]),
        ("an upgrade and the start of a frame in one read", &[Send("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n\u{1}")], In(WebSocket), &[101]),
        ("a socket is fed when a publish wakes it", &[Send(UPGRADE), Publish("m"), Flush], In(WebSocket), &[101]),
        ("a socket pings", &[Send(UPGRADE), Expire, Flush], In(WebSocket), &[101]),
        ("a socket that does not answer a ping", &[Send(UPGRADE), Expire, Flush, Expire, Flush], In(Closing), &[101]),
        ("the closing handshake", &[Send(UPGRADE), SendBytes(CLOSE_FRAME)], Closed(ByClient), &[101]),
        ("a socket whose client leaves", &[Send(UPGRADE), Fin], Closed(ByClient), &[101]),
        ("an upgrade and its FIN in one event", &[SendAndFin(UPGRADE)], Closed(ByClient), &[101]),
        ("a socket's protocol error: its close frame, lingering", &[Send(UPGRADE), SendBytes(UNMASKED_FRAME)], In(Closing), &[101]),
        ("a socket the client does not read", &[Send(UPGRADE), Room(Some(0)), Publish("m"), Flush], In(Writing), &[101]),
        ("drain: a socket says 1001 and lingers", &[Send(UPGRADE), Drain], In(Closing), &[101]),
    ];
    for &(what, steps, ends, statuses) in cases {
        let mut rig = Rig::new(false);
        for step in steps {
            rig.step(step);
        }
        let reached = match *rig.conn.state() {
            State::Closed(reason) => Ends::Closed(reason),
            ref state => Ends::In(state.kind()),
        };
        assert_eq!(reached, ends, "{what}");
        assert_eq!(rig.statuses(), statuses, "{what}: statuses written");
        check_at_rest(&rig, what);
    }
}

/// What holds between events in every state: the timer follows the state, buffers are
/// returned, a held poll is listed, a closed connection keeps nothing.
fn check_at_rest(rig: &Rig, what: &str) {
    let conn = &rig.conn;
    let mut counted = [0; 8];
    counted[conn.kind() as usize] = 1;
    assert_eq!(rig.site.by_state, counted, "{what}: the state counts");
    match conn.state() {
        State::Closed(_) => {
            assert_eq!(rig.timer, None, "{what}: a closed connection has no timer");
            assert!(conn.buffers().is_none(), "{what}: a closed connection keeps buffers");
            assert_eq!(rig.pool.lent_bytes(), 0, "{what}: buffers not returned");
            assert!(rig.site.topics.held_polls().next().is_none(), "{what}: a hold outlived its connection");
            assert_eq!(
                rig.last.closed,
                Some(match conn.state() {
                    State::Closed(r) => *r,
                    _ => unreachable!(),
                })
            );
        }
        state => {
            if !rig.queued {
                assert!(rig.timer.is_some(), "{what}: {state:?} without a timer");
            }
            if let State::Held(poll) = state {
                assert_eq!(rig.timer, Some(poll.wait.deadline), "{what}: the hold deadline is not armed");
            }
            if let State::Streaming(stream) = state {
                assert_eq!(rig.timer, Some(stream.deadline()), "{what}: the stream's deadline is not armed");
                assert!(conn.buffers().is_none(), "{what}: a stream between writes owns buffers");
            }
            if let State::WebSocket(socket) = state {
                assert_eq!(rig.timer, Some(socket.deadline()), "{what}: the socket's deadline is not armed");
                let unread = conn.buffers().map_or(0, |b| b.unread_len());
                assert!(conn.buffers().is_none() || unread > 0, "{what}: a socket between frames owns buffers");
            }
            if *state == State::Idle {
                assert!(conn.buffers().is_none(), "{what}: an idle connection owns buffers");
            }
            assert_eq!(rig.peer.shut_down, matches!(state, State::Closing(_)), "{what}: write side");
        }
    }
}

#[test]
fn each_state_arms_its_own_deadline() {
    let mut rig = Rig::new(false);
    assert_eq!(rig.timer, Some(10_001), "head deadline from accept");
    rig.step(&Step::Later(5));
    rig.step(&Step::Send(GET));
    assert_eq!(rig.timer, Some(5 + 75_001), "idle deadline from the answer");
    rig.step(&Step::Later(1_000));
    rig.step(&Step::Send(PARTIAL));
    assert_eq!(rig.timer, Some(1_005 + 10_001), "head deadline from the first byte");
    rig.step(&Step::Later(9_000));
    rig.step(&Step::Send("st"));
    assert_eq!(rig.last.timer, Timer::Keep, "a slow head does not extend its deadline");
    rig.step(&Step::Send(": x\r\n\r\n"));
    assert_eq!(rig.timer, Some(10_005 + 75_001));
    rig.step(&Step::Room(Some(0)));
    rig.step(&Step::Send(GET));
    assert_eq!(rig.timer, Some(10_005 + 30_001), "write deadline");
    rig.step(&Step::Later(20_000));
    rig.step(&Step::Room(Some(5)));
    assert_eq!(rig.timer, Some(30_005 + 30_001), "taking bytes restarts the write deadline");
    rig.step(&Step::Room(None));
    assert_eq!(rig.timer, Some(30_005 + 75_001));
    rig.step(&Step::Later(60_000));
    rig.step(&Step::Send(GET));
    assert_eq!(rig.timer, Some(90_005 + 75_001), "each answer restarts the idle deadline");
    rig.step(&Step::Send(POLL));
    rig.step(&Step::Later(1));
    rig.step(&Step::Send(POLL));
    assert_eq!(rig.timer, Some(90_005 + 30_000), "the first poll's deadline");
    rig.step(&Step::Wake);
    rig.step(&Step::Flush);
    assert_eq!(rig.timer, Some(90_006 + 30_000), "the poll behind it holds with its own deadline");
}

#[test]
fn a_connection_admitted_to_be_refused_closes_after_one_answer() {
    let mut rig = Rig::new(true);
    rig.step(&Step::Send(GET));
    assert_eq!(rig.statuses(), [503]);
    assert!(String::from_utf8_lossy(&rig.peer.received).contains("Connection: close"));
    assert_eq!(*rig.conn.state(), State::Closing(CloseReason::Rejected));
}

#[test]
fn the_last_request_allowed_says_close() {
    let mut rig = Rig::new(false);
    rig.settings.max_requests = 2;
    rig.step(&Step::Send(GET));
    rig.step(&Step::Send(GET));
    let text = String::from_utf8_lossy(&rig.peer.received).into_owned();
    assert_eq!(text.matches("Connection: close").count(), 1, "{text}");
    assert_eq!(*rig.conn.state(), State::Closing(CloseReason::MaxRequests));
    assert_eq!((rig.site.requests, rig.site.reused), (2, 1));
}

#[test]
fn a_closed_hold_is_released_once() {
    let mut rig = Rig::new(false);
    rig.step(&Step::Send(POLL));
    rig.step(&Step::Fin);
    assert_eq!(rig.site.released, 1);
    rig.step(&Step::Fin);
    assert_eq!(rig.site.released, 1, "a closed connection does nothing more");
}

#[test]
fn pipelined_answers_are_counted_and_written_in_one_write_each_event() {
    let mut rig = Rig::new(false);
    rig.step(&Step::Send("GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\nGET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert_eq!((rig.site.requests, rig.site.reused), (2, 1));
    assert_eq!(rig.statuses(), [200, 200]);
}

/// What a stream sends: the head without a length, `retry:`, then each message as it comes
/// with its seq as `id:`, a heartbeat when nothing came for a while; and its hold is released
/// exactly once when it ends.
#[test]
fn a_stream_sends_its_head_then_events_then_heartbeats() {
    let mut rig = Rig::new(false);
    rig.step(&Step::Send(EVENTS));
    let head = String::from_utf8_lossy(&rig.peer.received).into_owned();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.contains("text/event-stream"), "{head}");
    assert!(head.contains("Connection: close") && !head.contains("Content-Length"), "{head}");
    assert!(head.ends_with("\r\n\r\nretry: 2000\n\n"), "{head}");
    rig.peer.received.clear();
    rig.step(&Step::Publish("one\ntwo"));
    rig.step(&Step::Publish("three"));
    rig.step(&Step::Flush);
    let events = String::from_utf8_lossy(&rig.peer.received).into_owned();
    assert_eq!(events, "id: 1\ndata: one\ndata: two\n\nid: 2\ndata: three\n\n", "both, in one write");
    rig.peer.received.clear();
    let quiet_since = rig.now;
    assert_eq!(rig.timer, Some(deadline_after(quiet_since, HEARTBEAT)), "the heartbeat restarts after a write");
    rig.step(&Step::Expire);
    rig.step(&Step::Flush);
    assert_eq!(rig.peer.received, b": heartbeat\n\n");
    assert_eq!(rig.timer, Some(deadline_after(rig.now, HEARTBEAT)));
    rig.step(&Step::Fin);
    assert_eq!((rig.site.released, rig.site.streams), (1, 0));
    assert!(rig.site.topics.held_polls().next().is_none());
}

/// A stream opened with a token ends when the token does: its timer fires then even between
/// heartbeats, the client is told with an `expired` event, and the stream is released once.
#[test]
fn a_stream_ends_when_its_token_expires() {
    let mut rig = Rig::new(false);
    rig.step(&Step::Send("GET /events-for-40s HTTP/1.1\r\nHost: x\r\n\r\n"));
    rig.peer.received.clear();
    rig.step(&Step::Expire);
    rig.step(&Step::Flush);
    rig.step(&Step::Expire);
    rig.step(&Step::Flush);
    assert_eq!(rig.peer.received, b": heartbeat\n\n: heartbeat\n\n", "at 15 s and 30 s");
    assert_eq!(rig.timer, Some(40_000), "the end comes before the next heartbeat");
    rig.peer.received.clear();
    rig.step(&Step::Expire);
    rig.step(&Step::Flush);
    assert_eq!(rig.peer.received, b"event: expired\ndata: {\"reason\":\"the token has expired\"}\n\n");
    assert_eq!(rig.conn.kind(), StateKind::Closing, "it lingers: the client may still be sending");
    assert_eq!((rig.site.released, rig.site.streams), (1, 0));
    rig.step(&Step::Fin);
    assert_eq!(rig.conn.state, State::Closed(CloseReason::TokenExpired));
    assert_eq!(rig.site.released, 1, "released once");
}

/// A stream whose client reads slowly keeps what it could not send: news is taken up once the
/// output drains, nothing is lost and nothing is sent twice.
#[test]
fn a_slow_stream_catches_up_once_its_output_drains() {
    let mut rig = Rig::new(false);
    rig.step(&Step::Send(EVENTS));
    rig.peer.received.clear();
    rig.step(&Step::Room(Some(5)));
    rig.step(&Step::Publish("a"));
    rig.step(&Step::Flush);
    assert_eq!(rig.conn.kind(), StateKind::Writing);
    rig.step(&Step::Publish("b")); // taken off the list while writing: not queued again
    rig.step(&Step::Room(None));
    let events = String::from_utf8_lossy(&rig.peer.received).into_owned();
    assert_eq!(events, "id: 1\ndata: a\n\nid: 2\ndata: b\n\n");
    assert_eq!(rig.conn.kind(), StateKind::Streaming);
}

/// A held poll keeps its request's CORS grant (one byte, not the origin's text): its answer,
/// written when a publish comes, names the allowed origin as an immediate answer would.
#[test]
fn a_held_poll_answers_the_allowed_origin_of_its_request() {
    let mut rig = Rig::new(false);
    rig.step(&Step::Send("GET /poll HTTP/1.1\r\nHost: x\r\nOrigin: http://page.test\r\n\r\n"));
    assert_eq!(rig.conn.kind(), StateKind::Held);
    rig.step(&Step::Publish("m"));
    rig.step(&Step::Flush);
    let answer = String::from_utf8_lossy(&rig.peer.received).into_owned();
    assert!(answer.contains("\r\nAccess-Control-Allow-Origin: http://page.test\r\nVary: Origin\r\n"), "{answer}");
    rig.peer.received.clear();
    rig.step(&Step::Send("GET /poll HTTP/1.1\r\nHost: x\r\nOrigin: http://elsewhere.test\r\n\r\n"));
    rig.step(&Step::Publish("n"));
    rig.step(&Step::Flush);
    let answer = String::from_utf8_lossy(&rig.peer.received).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200") && !answer.contains("Access-Control"), "{answer}");
}
