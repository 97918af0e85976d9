//! Fan-out end to end (docs/long-polling.md, "Fan-out"): one publish reaching many held polls.
//! The answers go out a slice per reactor turn, after the publisher's own answer, so other
//! clients are served while a large fan-out is under way; and a queue of answers that is refilled
//! while it is drained (a woken poll with a publish pipelined behind it) loses nobody.
//!
//! No test asserts that anything is fast. Order is observed instead: a client-side epoll
//! instance reports sockets in the order they became readable, which on loopback is the order in
//! which the server wrote to them.

mod common;

use std::io::{ErrorKind, Read};
use std::time::{Duration, Instant};

use common::{assert_accounting, num, Client, Server};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

fn request(method: &str, target: &str, body: &str) -> Vec<u8> {
    format!("{method} {target} HTTP/1.1\r\nHost: tether.test\r\nContent-Length: {}\r\n\r\n{body}", body.len())
        .into_bytes()
}

fn wait_held(server: &Server, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while num(&server.stats(), "polls.held") != n {
        assert!(Instant::now() < deadline, "{n} polls not held within 60 s: {}", server.stats());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn answers_queued_while_the_queue_is_drained_are_all_written() {
    // A poll on `first` with a publish to `second` pipelined behind it; polls on `second`, each
    // with a plaintext request pipelined behind. Publishing to `first` answers the first poll;
    // its publish then wakes the `second` polls while the flush phase is draining its queue, and
    // their plaintext requests wait in that queue too. (The queue once dropped what was added
    // while it was drained: those requests then sat until the header timeout, 100 s here.)
    const SECOND: usize = 20;
    let server = Server::start(&["--header-timeout", "100s", "--poll-timeout", "100s"]);
    let mut relay = server.connect();
    relay.send(&[request("GET", "/poll/first", ""), request("POST", "/publish/second", "relayed")].concat());
    let mut followers: Vec<Client> = (0..SECOND)
        .map(|_| {
            let mut client = server.connect();
            client.send(&[request("GET", "/poll/second", ""), request("GET", "/plaintext", "")].concat());
            client
        })
        .collect();
    wait_held(&server, 1 + SECOND as u64);

    let mut publisher = server.connect();
    publisher.send(&request("POST", "/publish/first", "go"));
    assert_eq!(publisher.read_response().status, 200);
    assert_eq!(relay.read_response().status, 200, "the first poll");
    assert_eq!(relay.read_response().status, 200, "the publish pipelined behind it");
    for (i, client) in followers.iter_mut().enumerate() {
        let poll = client.read_response();
        assert!(poll.text().contains("\"data\":\"relayed\""), "follower {i}: {poll:?}");
        let plaintext = client.read_response();
        assert_eq!((plaintext.status, plaintext.text()), (200, "Hello, World!"), "follower {i}");
    }
    let stats = server.stats();
    assert_eq!(num(&stats, "totals.closed.header_timeout"), 0, "{stats}");
    assert_accounting(&stats);
}

/// Opens `n` connections that each hold a poll on `topic`, registered with `poll` under tokens
/// `0..n`. Connects in batches, each held before the next, so the listen backlog never
/// overflows.
fn hold_polls(server: &Server, poll: &Poll, topic: &str, n: usize) -> Vec<TcpStream> {
    const BATCH: usize = 500;
    let request = request("GET", &format!("/poll/{topic}?timeout=120s"), "");
    let mut streams = Vec::with_capacity(n);
    while streams.len() < n {
        for _ in 0..BATCH.min(n - streams.len()) {
            let mut client = server.connect();
            client.send(&request);
            let std_stream = client.into_stream();
            std_stream.set_nonblocking(true).expect("nonblocking");
            let mut stream = TcpStream::from_std(std_stream);
            poll.registry().register(&mut stream, Token(streams.len()), Interest::READABLE).expect("register");
            streams.push(stream);
        }
        wait_held(server, streams.len() as u64);
    }
    streams
}

#[test]
fn other_clients_are_served_while_a_fan_out_to_15000_polls_is_written() {
    const POLLS: usize = 15_000;
    const PUBLISHER: Token = Token(POLLS);
    const PROBE: Token = Token(POLLS + 1);
    let server = Server::start(&["--max-poll-timeout", "120s"]);
    let mut poll = Poll::new().expect("poll");
    let mut streams = hold_polls(&server, &poll, "crowd", POLLS);
    let mut probe = server.connect();
    assert_eq!(probe.get("/plaintext").status, 200); // connected and idle before the fan-out

    let mut publisher = server.connect();
    publisher.send(&request("POST", "/publish/crowd", "m1"));
    let mut publisher = TcpStream::from_std(nonblocking(publisher));
    poll.registry().register(&mut publisher, PUBLISHER, Interest::READABLE).expect("register");
    let probe_request = request("GET", "/plaintext", "");
    let mut probe_stream = TcpStream::from_std(nonblocking(probe));
    poll.registry().register(&mut probe_stream, PROBE, Interest::READABLE).expect("register");

    // Readiness in order: each poll answer once; the publisher's answer; and a keep-alive
    // client that sends its next request each time its last answer came.
    let mut answered = vec![false; POLLS];
    let (mut polls_answered, mut polls_before_publisher) = (0, None);
    let mut probes_during_fan_out = 0;
    let mut events = Events::with_capacity(1024);
    let deadline = Instant::now() + Duration::from_secs(120);
    while polls_answered < POLLS {
        assert!(Instant::now() < deadline, "{polls_answered} of {POLLS} polls answered in 120 s");
        poll.poll(&mut events, Some(Duration::from_secs(1))).expect("poll");
        for event in &events {
            match event.token() {
                PUBLISHER => {
                    if polls_before_publisher.is_none() {
                        polls_before_publisher = Some(polls_answered);
                        send_all(&mut probe_stream, &probe_request);
                    }
                }
                PROBE => {
                    // One answer per request: read it whole, then ask again.
                    if drain(&mut probe_stream) > 0 && polls_answered < POLLS {
                        probes_during_fan_out += 1;
                        send_all(&mut probe_stream, &probe_request);
                    }
                }
                Token(i) if !answered[i] => {
                    answered[i] = true;
                    polls_answered += 1;
                }
                Token(_) => {}
            }
        }
    }
    assert_eq!(polls_before_publisher, Some(0), "the publisher hears before any poll it woke");
    assert!(
        probes_during_fan_out >= 1,
        "a keep-alive client got no answer while the {POLLS} poll answers were being written"
    );
    eprintln!("keep-alive answers during the fan-out to {POLLS}: {probes_during_fan_out}");

    // Every poll got its message.
    for (i, stream) in streams.iter_mut().enumerate() {
        let mut answer = Vec::new();
        let _ = read_available(stream, &mut answer);
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 200 OK") && text.contains("\"data\":\"m1\""), "poll {i}: {text}");
    }
    let stats = server.stats();
    assert_eq!((num(&stats, "polls.held"), num(&stats, "polls.answered")), (0, POLLS as u64), "{stats}");
}

fn nonblocking(client: Client) -> std::net::TcpStream {
    let stream = client.into_stream();
    stream.set_nonblocking(true).expect("nonblocking");
    stream
}

fn send_all(stream: &mut TcpStream, bytes: &[u8]) {
    use std::io::Write;
    // A few hundred bytes into an empty send buffer: one write takes them.
    let written = stream.write(bytes).expect("write");
    assert_eq!(written, bytes.len(), "a short write of a small request");
}

/// Reads what the socket has now; returns how many bytes.
fn drain(stream: &mut TcpStream) -> usize {
    let mut sink = Vec::new();
    read_available(stream, &mut sink)
}

fn read_available(stream: &mut TcpStream, into: &mut Vec<u8>) -> usize {
    let mut chunk = [0u8; 4096];
    let before = into.len();
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => into.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    into.len() - before
}
