//! WebSocket end to end (docs/transports.md): `GET /ws` upgrades, then JSON text frames:
//! subscribe (with a cursor, as a poll), unsubscribe, publish; news as frames, in the same order
//! as polls and streams get it; pings from the server; the closing handshake; a drain's 1001;
//! and hostile frames, each closed with its code while the server goes on. The client here is
//! written from RFC 6455 for these tests; clients nobody here wrote are in `tests/browser.rs`
//! and `tests/ws_clients.rs`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{num, Server, IO_TIMEOUT};
use serde_json::{json, Value};

/// A WebSocket client: masks what it sends, reads what the server sends.
struct Socket {
    stream: TcpStream,
    pending: Vec<u8>,
}

/// One frame from the server.
#[derive(Debug, PartialEq, Eq)]
enum Frame {
    Text(String),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>),
}

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A client frame: FIN as given, masked with `MASK`, the length in its shortest form.
fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![u8::from(fin) << 7 | opcode];
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=65535 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    out
}

fn text(payload: &str) -> Vec<u8> {
    frame(true, 0x1, payload.as_bytes())
}

impl Socket {
    /// Opens `/ws` (with `query`), expecting `101`.
    fn open(server: &Server, query: &str) -> Socket {
        let (status, socket) = Socket::try_open(server, query, "");
        assert_eq!(status, 101);
        socket
    }

    /// Sends an upgrade with `extra` header lines; the status and, on 101, the socket.
    fn try_open(server: &Server, query: &str, extra: &str) -> (u16, Socket) {
        let mut client = server.connect();
        client.send(
            format!(
                "GET /ws{query} HTTP/1.1\r\nHost: tether.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
            )
            .as_bytes(),
        );
        let mut socket = Socket { stream: client.into_stream(), pending: Vec::new() };
        let head = socket.read_until(b"\r\n\r\n");
        let head = String::from_utf8(head).expect("an ASCII head");
        let status = head[9..12].parse().expect("a status");
        if status == 101 {
            // RFC 6455 §1.3's example key and its accept value.
            assert!(head.contains("\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"), "{head}");
            assert!(head.contains("\r\nUpgrade: websocket\r\n") && head.contains("\r\nConnection: Upgrade\r\n"));
            assert!(!head.contains("Content-Length"), "{head}");
        }
        (status, socket)
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to the server");
    }

    fn send_json(&mut self, value: Value) {
        self.send(&text(&value.to_string()));
    }

    fn read_until(&mut self, needle: &[u8]) -> Vec<u8> {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            if let Some(at) = self.pending.windows(needle.len()).position(|w| w == needle) {
                return self.pending.drain(..at + needle.len()).collect();
            }
            self.fill(deadline);
        }
    }

    fn fill(&mut self, deadline: Instant) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "nothing more from the server in time: {:?}", self.pending);
        self.stream.set_read_timeout(Some(left)).expect("set_read_timeout");
        let mut chunk = [0u8; 16384];
        match self.stream.read(&mut chunk) {
            Ok(0) => panic!("the server closed the connection; unread {:?}", self.pending),
            Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("reading from the server: {e}"),
        }
    }

    /// The next frame, within `IO_TIMEOUT`. Server frames are unmasked and never fragmented.
    fn next(&mut self) -> Frame {
        self.next_within(IO_TIMEOUT)
    }

    fn next_within(&mut self, within: Duration) -> Frame {
        let deadline = Instant::now() + within;
        loop {
            if let Some(frame) = self.parse() {
                return frame;
            }
            self.fill(deadline);
        }
    }

    fn parse(&mut self) -> Option<Frame> {
        let p = &self.pending;
        if p.len() < 2 {
            return None;
        }
        assert_eq!(p[0] & 0x80, 0x80, "a server frame is not fragmented");
        assert_eq!(p[1] & 0x80, 0, "a server frame is not masked");
        let (len, start) = match p[1] & 0x7f {
            126 if p.len() >= 4 => (u16::from_be_bytes([p[2], p[3]]) as usize, 4),
            127 if p.len() >= 10 => (u64::from_be_bytes(p[2..10].try_into().unwrap()) as usize, 10),
            126 | 127 => return None,
            n => (n as usize, 2),
        };
        if p.len() < start + len {
            return None;
        }
        let opcode = p[0] & 0x0f;
        let payload: Vec<u8> = self.pending.drain(..start + len).skip(start).collect();
        Some(match opcode {
            0x1 => Frame::Text(String::from_utf8(payload).expect("a text frame is UTF-8")),
            0x8 => Frame::Close((payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))),
            0x9 => Frame::Ping(payload),
            0xA => Frame::Pong(payload),
            other => panic!("unexpected opcode {other:#x}"),
        })
    }

    /// The next text frame as JSON, answering pings on the way.
    fn json(&mut self) -> Value {
        loop {
            match self.next() {
                Frame::Text(text) => return serde_json::from_str(&text).expect("a JSON frame"),
                Frame::Ping(payload) => self.send(&frame(true, 0xA, &payload)),
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Reads until the server's close frame, then expects the TCP connection to end.
    fn expect_close(&mut self, code: u16) {
        loop {
            match self.next() {
                Frame::Close(got) => {
                    assert_eq!(got, Some(code), "the close code");
                    break;
                }
                Frame::Ping(_) | Frame::Text(_) => {}
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
        self.stream.set_read_timeout(Some(IO_TIMEOUT)).expect("set_read_timeout");
        let mut rest = [0u8; 64];
        match self.stream.read(&mut rest) {
            Ok(0) => {}
            Ok(n) => panic!("bytes after the close frame: {:?}", &rest[..n]),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
    }
}

#[test]
fn a_socket_subscribes_and_receives_what_is_published_in_order() {
    let server = Server::start(&[]);
    let mut socket = Socket::open(&server, "");
    socket.send_json(json!({"subscribe": "news"}));
    server.wait_for_stats("the socket is listed", |s| {
        num(s, "sockets.open") == 1 && num(s, "connections.websocket") == 1
    });
    server.publish("news", "first");
    server.publish("news", "say \"hi\"\nü");
    assert_eq!(socket.json(), json!({"topic": "news", "seq": 1, "data": "first"}));
    assert_eq!(socket.json(), json!({"topic": "news", "seq": 2, "data": "say \"hi\"\nü"}));
    // A socket publishes too, and hears its own message like any subscriber.
    socket.send_json(json!({"publish": "news", "data": "from the socket"}));
    assert_eq!(socket.json(), json!({"topic": "news", "seq": 3, "data": "from the socket"}));
    // From a cursor, as a poll: the backlog first.
    let mut late = Socket::open(&server, "");
    late.send_json(json!({"subscribe": "news", "cursor": 1}));
    assert_eq!(late.json()["seq"], 2);
    assert_eq!(late.json()["seq"], 3);
    late.send_json(json!({"unsubscribe": "news"}));
    late.send_json(json!({"subscribe": "other"}));
    server.publish("news", "only the first socket");
    server.publish("other", "the late socket's");
    assert_eq!(socket.json()["data"], "only the first socket");
    assert_eq!(late.json(), json!({"topic": "other", "seq": 1, "data": "the late socket's"}));
}

/// One publish reaches a long poll, an event stream and a socket alike, with the same seq.
#[test]
fn one_publish_reaches_polls_streams_and_sockets() {
    let server = Server::start(&[]);
    let mut socket = Socket::open(&server, "");
    socket.send_json(json!({"subscribe": "t"}));
    let mut poll = server.connect();
    poll.send(b"GET /poll/t HTTP/1.1\r\nHost: tether.test\r\n\r\n");
    let mut stream = server.connect();
    stream.send(b"GET /events/t HTTP/1.1\r\nHost: tether.test\r\n\r\n");
    stream.read_stream_head();
    server.wait_for_stats("all three wait", |s| {
        num(s, "polls.held") == 1 && num(s, "streams.open") == 1 && num(s, "sockets.open") == 1
    });
    let mut publisher = Socket::open(&server, "");
    publisher.send_json(json!({"publish": "t", "data": "to all"}));
    assert_eq!(socket.json(), json!({"topic": "t", "seq": 1, "data": "to all"}));
    assert!(poll.read_response().text().contains(r#""messages":[{"seq":1,"data":"to all"}]"#));
    assert!(stream.read_stream_until("\n\nid: 1\ndata: to all\n\n").starts_with("retry:"));
}

#[test]
fn loss_and_resets_are_reported_per_topic() {
    let server = Server::start(&["--topic-capacity", "2"]);
    for data in ["a", "b", "c", "d"] {
        server.publish("t", data);
    }
    let mut socket = Socket::open(&server, "");
    socket.send_json(json!({"subscribe": "t", "cursor": 0}));
    assert_eq!(socket.json(), json!({"topic": "t", "missed": 2}));
    assert_eq!(socket.json()["seq"], 3);
    assert_eq!(socket.json()["seq"], 4);
    socket.send_json(json!({"subscribe": "t", "cursor": 1, "epoch": "not-this-one"}));
    let reset = socket.json();
    assert_eq!((reset["topic"].clone(), reset["reset"].clone()), (json!("t"), json!(4)), "{reset}");
    assert!(reset["epoch"].as_str().is_some_and(|e| !e.is_empty()), "{reset}");
}

#[test]
fn a_bad_message_gets_an_error_and_the_socket_stays_open() {
    let server = Server::start(&[]);
    let mut socket = Socket::open(&server, "");
    for bad in [
        "not json",
        r#"{"subscribe":"a b"}"#,
        r#"{"subscribe":"t","unsubscribe":"t"}"#,
        r#"{"publish":"t"}"#,
        r#"{"unsubscribe":"never"}"#,
        r#"{"subscribe":"t","shout":true}"#,
    ] {
        socket.send(&text(bad));
        let answer = socket.json();
        assert!(answer["error"].as_str().is_some_and(|e| !e.is_empty()), "{bad}: {answer}");
    }
    socket.send_json(json!({"subscribe": "t"}));
    server.publish("t", "still open");
    assert_eq!(socket.json()["data"], "still open");
}

#[test]
fn the_server_pings_and_closes_a_peer_that_does_not_answer() {
    let server = Server::start(&["--sse-heartbeat", "1s"]);
    let mut answering = Socket::open(&server, "");
    // A ping of the client's is answered with its payload.
    answering.send(&frame(true, 0x9, b"are you there"));
    loop {
        match answering.next() {
            Frame::Pong(payload) => break assert_eq!(payload, b"are you there"),
            Frame::Ping(_) => answering.send(&frame(true, 0xA, b"")),
            other => panic!("{other:?}"),
        }
    }
    // The answering peer keeps answering on its own thread, for as long as the test runs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answerer = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut pings = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Frame::Ping(payload) = answering.next() {
                    answering.send(&frame(true, 0xA, &payload));
                    pings += 1;
                }
            }
            pings
        })
    };
    let mut silent = Socket::open(&server, "");
    assert_eq!(silent.next(), Frame::Ping(Vec::new()));
    silent.expect_close(1001);
    drop(silent);
    let stats = server.wait_for_stats("the silent one closed", |s| num(s, "totals.closed.ping_timeout") == 1);
    assert_eq!(num(&stats, "sockets.open"), 1, "the answering one is still open");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    // The answerer wakes at its next ping, within a heartbeat, and sees the flag.
    assert!(answerer.join().expect("the answerer") >= 2, "pinged every heartbeat");
}

#[test]
fn the_closing_handshake_and_a_drain() {
    let server = Server::start(&[]);
    let mut socket = Socket::open(&server, "");
    socket.send(&frame(true, 0x8, &1000u16.to_be_bytes()));
    socket.expect_close(1000);
    let mut server = server;
    let mut draining = Socket::open(&server, "");
    draining.send_json(json!({"subscribe": "t"}));
    server.wait_for_stats("subscribed", |s| num(s, "sockets.open") == 1);
    server.signal(libc::SIGTERM);
    draining.expect_close(1001);
    assert!(server.wait_exit(Duration::from_secs(10)).is_some_and(|status| status.success()));
}

/// Upgrades that are not: 400 or 426, and 403 for a page of another site (no CORS protects a
/// WebSocket: a page of any site could otherwise read topics in its visitor's name).
#[test]
fn bad_upgrades_are_refused() {
    let server = Server::start(&["--allow-origin", "http://app.test"]);
    let (status, _) = Socket::try_open(&server, "", "Origin: http://evil.example\r\n");
    assert_eq!(status, 403);
    let (status, _) = Socket::try_open(&server, "", "Origin: http://app.test\r\n");
    assert_eq!(status, 101);
    let (status, _) = Socket::try_open(&server, "", &format!("Origin: http://{}\r\n", "tether.test"));
    assert_eq!(status, 101, "the server's own origin");
    for (request, status) in [
        ("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n", 400),
        ("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n\r\n", 400),
        ("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n", 426),
    ] {
        let mut client = server.connect();
        client.send(request.as_bytes());
        let response = client.read_response();
        assert_eq!(response.status, status, "{request:?}: {response:?}");
        if status == 426 {
            assert_eq!(response.header("Sec-WebSocket-Version"), Some("13"));
        }
    }
    let mut client = server.connect();
    client.send(b"HEAD /ws HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(client.read_head_response().status, 405);
}

/// Hostile frames: each closes the socket with its code, and the server goes on.
#[test]
fn hostile_frames_get_their_close_codes() {
    let server = Server::start(&["--max-message-bytes", "1KiB"]);
    let mut unmasked = vec![0x81, 0x02];
    unmasked.extend_from_slice(b"hi");
    let huge_length = [vec![0x82, 0xff], vec![0x80, 0, 0, 0, 0, 0, 0, 1], MASK.to_vec()].concat();
    let bad_utf8 = [frame(false, 0x1, &[0xe2, 0x82]), frame(true, 0x0, &[0x28])].concat();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("an unmasked client frame", unmasked, 1002),
        ("a 64-bit length with the top bit set", huge_length, 1002),
        ("a control frame of 126 bytes", frame(true, 0x9, &[b'x'; 126]), 1002),
        ("a fragmented ping", frame(false, 0x9, b"x"), 1002),
        ("a continuation without a start", frame(true, 0x0, b"x"), 1002),
        ("invalid UTF-8 split across fragments", bad_utf8, 1007),
        ("a close with 1005 on the wire", frame(true, 0x8, &1005u16.to_be_bytes()), 1002),
        ("a message over --max-message-bytes", text(&"x".repeat(1025)), 1009),
        (
            "an oversize message in fragments",
            [frame(false, 0x1, &[b'x'; 600]), frame(true, 0x0, &[b'x'; 600])].concat(),
            1009,
        ),
        ("a binary message", frame(true, 0x2, b"\x00\x01"), 1003),
    ];
    for (what, bytes, code) in cases {
        let mut socket = Socket::open(&server, "");
        socket.send(&bytes);
        eprintln!("{what}");
        socket.expect_close(code);
    }
    let mut fine = Socket::open(&server, "");
    fine.send_json(json!({"subscribe": "t"}));
    server.publish("t", "the server lives on");
    assert_eq!(fine.json()["data"], "the server lives on");
    let stats = server.wait_for_stats("every socket counted", |s| num(s, "sockets.open") == 1);
    assert_eq!(num(&stats, "connections.websocket"), 1);
}

/// A fragmented message with a ping in the middle: the pong comes first, then the message.
#[test]
fn a_fragmented_message_with_a_ping_inside_is_reassembled() {
    let server = Server::start(&[]);
    let mut socket = Socket::open(&server, "");
    let message = json!({"subscribe": "t"}).to_string();
    let (a, b) = message.as_bytes().split_at(5);
    socket.send(&[frame(false, 0x1, a), frame(true, 0x9, b"mid"), frame(true, 0x0, b)].concat());
    assert_eq!(socket.next(), Frame::Pong(b"mid".to_vec()));
    server.publish("t", "subscribed by fragments");
    assert_eq!(socket.json()["data"], "subscribed by fragments");
}

/// Answers come in the order of what they answer: a subscribe's backlog before the error of the
/// message sent after it, though both came in one read.
#[test]
fn a_subscribes_backlog_comes_before_the_answer_to_the_next_message() {
    let server = Server::start(&[]);
    server.publish("t", "one");
    server.publish("t", "two");
    let mut socket = Socket::open(&server, "");
    socket.send(&[text(&json!({"subscribe": "t", "cursor": 0}).to_string()), text("not json")].concat());
    assert_eq!(socket.json()["seq"], 1);
    assert_eq!(socket.json()["seq"], 2);
    assert!(socket.json()["error"].is_string());
}

#[test]
fn max_held_counts_sockets() {
    let server = Server::start(&["--max-held", "1"]);
    let _first = Socket::open(&server, "");
    let (status, _) = Socket::try_open(&server, "", "");
    assert_eq!(status, 503);
}

const SECRET: &str = "a WebSocket test secret of thirty-two bytes";

fn token(secs: u64, claims: tether::token::Claims) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs();
    let key = tether::token::TokenKey::new(SECRET.as_bytes()).expect("a long secret");
    key.mint(&tether::token::Claims { exp: now + secs, ..claims }).expect("minted")
}

/// With tokens: the upgrade needs one (`?token=`, as a browser's `WebSocket` cannot set
/// headers); each subscribe and publish is checked against its claims; the socket closes
/// (1008) when it expires.
#[test]
fn a_socket_lives_by_its_token() {
    let server = Server::start(&["--jwt-secret", SECRET]);
    let (status, _) = Socket::try_open(&server, "", "");
    assert_eq!(status, 401);
    let claims =
        tether::token::Claims { subscribe: vec!["news".into()], publish: vec!["news".into()], ..Default::default() };
    let short = token(3, claims);
    let mut socket = Socket::open(&server, &format!("?token={short}"));
    socket.send_json(json!({"subscribe": "sport"}));
    assert!(socket.json()["error"].as_str().is_some_and(|e| e.contains("subscribe to sport")));
    socket.send_json(json!({"publish": "sport", "data": "x"}));
    assert!(socket.json()["error"].as_str().is_some_and(|e| e.contains("publish to sport")));
    socket.send_json(json!({"subscribe": "news"}));
    socket.send_json(json!({"publish": "news", "data": "allowed"}));
    assert_eq!(socket.json(), json!({"topic": "news", "seq": 1, "data": "allowed"}));
    // The token lasts 2 to 3 s more; a generous wait for its close.
    assert_eq!(socket.next_within(Duration::from_secs(30)), Frame::Close(Some(1008)));
}
