//! Slow clients end to end (issue 5, "Slow clients"): slowloris heads and slow bodies are cut at
//! `--header-timeout` with a 408, a peer that never reads is dropped at `--write-timeout` and its
//! buffers leave the connection, the per-connection output cap bounds what a stuck reader costs,
//! and none of it slows the clients that behave.
//!
//! Timeouts are short (1 s), every loop is bounded in count and in time, and the only upper
//! bounds on time are generous margins around a configured timeout (or, for "stays fast", far
//! above what an answer takes), so a loaded machine is slow, not wrong. Lower bounds say a
//! timer did not fire early: timers never do, so those cannot flake.

mod common;

use std::cell::{Cell, RefCell};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{assert_accounting, num, Client, Response, Server};
use serde_json::Value;

/// The `--header-timeout` and `--write-timeout` these tests run with.
const TIMEOUT: Duration = Duration::from_secs(1);
const TIMEOUT_FLAG: &str = "1s";
/// How late past its deadline a close may come: timer rounding, a busy machine.
const MARGIN: Duration = Duration::from_millis(1500);
/// A timer never fires early; this only absorbs millisecond rounding.
const EARLY: Duration = Duration::from_millis(100);
/// One trickled byte every this long.
const TRICKLE: Duration = Duration::from_millis(200);
/// "Stays fast": far above what one answer on loopback takes, far below a timeout.
const PROMPT: Duration = Duration::from_millis(500);
/// What one stuck connection may hold in buffers: the output cap (256 KiB, `OUTPUT_CAP` in
/// src/server/mod.rs) plus one answer past it plus the input buffer, with room to spare.
const STUCK_CONNECTION_MAX_BYTES: u64 = 1024 * 1024;
/// Buffers held by connections once the slow ones are gone: "near zero".
const NEAR_ZERO_BYTES: u64 = 64 * 1024;

// ---- slowloris ------------------------------------------------------------------------------

/// One slowloris connection, driven without blocking by `slowloris_until_closed`.
struct Slowloris {
    stream: TcpStream,
    connected: Instant,
    received: Vec<u8>,
    /// When the server's FIN arrived, or how the connection failed.
    ended: Option<Result<Instant, String>>,
}

#[test]
fn three_hundred_slowloris_connections_are_closed_at_the_header_timeout_while_fresh_requests_stay_fast() {
    const SLOWLORIS: usize = 300;
    const FRESH_REQUESTS: usize = 20;
    let server = Server::start(&["--header-timeout", TIMEOUT_FLAG, "--idle-timeout", "30s"]);

    let mut slow: Vec<Slowloris> = (0..SLOWLORIS)
        .map(|_| {
            let mut stream = TcpStream::connect_timeout(&server.addr, common::IO_TIMEOUT).expect("connect a slowloris");
            let connected = Instant::now();
            stream.write_all(b"GET /plaintext HTTP/1.1\r\nHost: tether.test\r\nX-Slow: ").expect("send a partial head");
            stream.set_nonblocking(true).expect("set_nonblocking");
            Slowloris { stream, connected, received: Vec::new(), ended: None }
        })
        .collect();

    // A well-behaved client meanwhile: fresh connections, one request each, spread over the
    // slowloris' life so that they share the server with all 300 of them.
    let fresh_latencies = thread::scope(|scope| {
        let fresh = scope.spawn(|| {
            (0..FRESH_REQUESTS)
                .map(|_| {
                    let started = Instant::now();
                    let mut client = server.connect();
                    client.send(b"GET /plaintext HTTP/1.1\r\nHost: tether.test\r\nConnection: close\r\n\r\n");
                    let response = client.read_response();
                    let took = started.elapsed();
                    assert_eq!((response.status, response.text()), (200, "Hello, World!"));
                    client.expect_eof();
                    thread::sleep(Duration::from_millis(30));
                    took
                })
                .collect::<Vec<_>>()
        });
        slowloris_until_closed(&mut slow, TIMEOUT + MARGIN + Duration::from_secs(2));
        fresh.join().expect("the fresh client")
    });

    let slowest_fresh = fresh_latencies.iter().max().copied().unwrap_or_default();
    assert!(
        slowest_fresh <= PROMPT,
        "with {SLOWLORIS} slowloris open, a fresh request took {slowest_fresh:?}: {fresh_latencies:?}"
    );

    let mut times_to_408 = Vec::new();
    for (i, conn) in slow.iter().enumerate() {
        let ended = match &conn.ended {
            Some(Ok(at)) => at.duration_since(conn.connected),
            Some(Err(e)) => panic!("slowloris {i}: {e} after {:?}", String::from_utf8_lossy(&conn.received)),
            None => panic!("slowloris {i} still open after {:?}", TIMEOUT + MARGIN + Duration::from_secs(2)),
        };
        let text = String::from_utf8_lossy(&conn.received);
        assert!(
            text.starts_with("HTTP/1.1 408 ") && text.contains("\r\nConnection: close\r\n"),
            "slowloris {i} got {text:?} instead of a 408"
        );
        assert!(ended + EARLY >= TIMEOUT, "slowloris {i} closed after {ended:?}, before the header timeout");
        assert!(ended <= TIMEOUT + MARGIN, "slowloris {i} kept for {ended:?}, past the header timeout");
        times_to_408.push(ended);
    }
    times_to_408.sort();
    eprintln!(
        "{SLOWLORIS} slowloris: 408 and FIN after {:?} (first) / {:?} (median) / {:?} (last); \
         fresh requests: slowest {slowest_fresh:?}",
        times_to_408[0],
        times_to_408[SLOWLORIS / 2],
        times_to_408[SLOWLORIS - 1]
    );

    // Our FINs end the server's lingering close; then each is counted once, as a header timeout.
    drop(slow);
    let stats = server.wait_for_stats("every slowloris closed as a header timeout", |s| {
        num(s, "totals.closed.header_timeout") >= SLOWLORIS as u64 && num(s, "connections.open") == 1
    });
    assert_eq!(num(&stats, "totals.closed.header_timeout"), SLOWLORIS as u64, "{stats}");
    assert_accounting(&stats);
}

/// Trickles one more header byte into every open slowloris every `TRICKLE`, reads whatever the
/// server sends, and notes when each one's FIN arrives; returns when all ended or at `limit`.
fn slowloris_until_closed(slow: &mut [Slowloris], limit: Duration) {
    let started = Instant::now();
    let mut next_trickle = started;
    let mut chunk = [0u8; 1024];
    while started.elapsed() < limit && slow.iter().any(|c| c.ended.is_none()) {
        let trickle = Instant::now() >= next_trickle;
        if trickle {
            next_trickle += TRICKLE;
        }
        for conn in slow.iter_mut().filter(|c| c.ended.is_none()) {
            loop {
                match conn.stream.read(&mut chunk) {
                    Ok(0) => {
                        conn.ended = Some(Ok(Instant::now()));
                        break;
                    }
                    Ok(n) => conn.received.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => {
                        conn.ended = Some(Err(format!("read failed: {e}")));
                        break;
                    }
                }
            }
            // Never the blank line: the head cannot complete. Once answered, stop sending.
            if trickle && conn.ended.is_none() && conn.received.is_empty() {
                match conn.stream.write(b"a") {
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => conn.ended = Some(Err(format!("trickle failed: {e}"))),
                }
            }
        }
        thread::sleep(Duration::from_millis(10));
    }
}

// ---- slow bodies ----------------------------------------------------------------------------

/// Sends `head` at once, then `body` one byte every `TRICKLE` (far slower than the timeout
/// allows: the body cannot complete before it), and returns the first answer and how long after
/// the head it came. A server that restarted its clock per byte would answer only when the body
/// is complete, after the read has given up.
fn trickle_body(client: &mut Client, head: &[u8], body: &[u8]) -> (Response, Duration) {
    assert!(TRICKLE * body.len() as u32 > TIMEOUT + MARGIN + common::IO_TIMEOUT, "the body is slow enough");
    let stop = AtomicBool::new(false);
    let mut writer = client.stream().try_clone().expect("clone the socket");
    client.send(head);
    let sent = Instant::now();
    thread::scope(|scope| {
        scope.spawn(|| {
            for byte in body {
                thread::sleep(TRICKLE);
                if stop.load(Ordering::Relaxed) || writer.write_all(std::slice::from_ref(byte)).is_err() {
                    break;
                }
            }
        });
        let response = client.try_read_response(false);
        let took = sent.elapsed();
        stop.store(true, Ordering::Relaxed);
        (response.unwrap_or_else(|e| panic!("{e}")), took)
    })
}

#[test]
fn a_slow_content_length_body_is_cut_at_the_header_timeout() {
    let server = Server::start(&["--header-timeout", TIMEOUT_FLAG]);
    let client = server.connect();
    let head = b"POST /publish/slow HTTP/1.1\r\nHost: tether.test\r\nContent-Length: 100\r\n\r\n";
    assert_body_cut_at_the_header_timeout(&server, client, head, &[b'x'; 100]);
}

/// Trickles `body` after `head` and checks the server answers 408 and closes at the header
/// timeout, publishing nothing.
fn assert_body_cut_at_the_header_timeout(server: &Server, mut client: Client, head: &[u8], body: &[u8]) {
    let (response, took) = trickle_body(&mut client, head, body);
    response.assert_error(408);
    client.expect_eof();
    eprintln!("body at 5 bytes/s: 408 after {took:?}");
    assert!(took + EARLY >= TIMEOUT, "408 after {took:?}, before the header timeout");
    assert!(took <= TIMEOUT + MARGIN, "408 after {took:?}, long past the header timeout");

    drop(client);
    let stats = server.wait_for_stats("a header timeout", |s| num(s, "totals.closed.header_timeout") == 1);
    assert_eq!(num(&stats, "topics.messages"), 0, "the cut message was not published: {stats}");
    assert_accounting(&stats);
}

#[test]
fn a_slow_chunked_body_is_cut_at_the_header_timeout_counted_from_its_first_byte() {
    let server = Server::start(&["--header-timeout", TIMEOUT_FLAG, "--idle-timeout", "30s"]);
    let mut client = server.connect();
    // A first request, then an idle pause longer than half the timeout: the deadline of the
    // next request starts with its first byte, not with the connection or the last answer.
    let response = client.get("/plaintext");
    assert_eq!(response.status, 200);
    response.assert_keeps_alive();
    thread::sleep(TIMEOUT * 6 / 10);

    let head = b"POST /publish/slow HTTP/1.1\r\nHost: tether.test\r\nTransfer-Encoding: chunked\r\n\r\n";
    // One-byte chunks: every chunk completes, the body never does.
    let body = [b"1\r\nx\r\n".repeat(20), b"0\r\n\r\n".to_vec()].concat();
    assert_body_cut_at_the_header_timeout(&server, client, head, &body);
}

// ---- readers that never read ----------------------------------------------------------------

/// A topic whose every poll answer is as large as an answer gets: `MESSAGES` messages of
/// `MESSAGE_BYTES`, the 64 KiB of message data one answer carries at most.
const BIG_TOPIC: &str = "big";
const MESSAGES: usize = 4;
const MESSAGE_BYTES: usize = 16 * 1024;
const BIG_POLL: &[u8] = b"GET /poll/big?cursor=0 HTTP/1.1\r\nHost: tether.test\r\n\r\n";

/// Fills `BIG_TOPIC` and returns the body size of one answer to `BIG_POLL` (its head adds a few
/// hundred bytes).
fn fill_big_topic(server: &Server) -> usize {
    let mut client = server.connect();
    let data = "x".repeat(MESSAGE_BYTES);
    for _ in 0..MESSAGES {
        let mut request = format!(
            "POST /publish/{BIG_TOPIC} HTTP/1.1\r\nHost: tether.test\r\nContent-Length: {}\r\n\r\n",
            data.len()
        )
        .into_bytes();
        request.extend_from_slice(data.as_bytes());
        client.send(&request);
        assert_eq!(client.read_response().status, 200);
    }
    client.send(BIG_POLL);
    let response = client.read_response();
    assert_eq!(response.status, 200, "{response:?}");
    let json: Value = serde_json::from_slice(&response.body).expect("a poll answer is JSON");
    assert_eq!(json["messages"].as_array().map(Vec::len), Some(MESSAGES), "{json}");
    response.body.len()
}

/// The largest send buffer the kernel may give the server's socket (`tcp_wmem` max).
fn kernel_send_buffer_max() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 * 1024 * 1024)
}

/// A connection that pipelines enough large polls to fill every buffer between it and the
/// server, and never reads. Its receive buffer is made small and fixed, so the kernel holds
/// little on our side; the server's send buffer holds at most `tcp_wmem` max. The requests ask
/// for 2 MiB more than the kernel can hold plus the output cap twice over, so the server is
/// left with answers it cannot send: stuck at its output cap, or, without one, holding the rest.
fn never_reading_client(server: &Server, answer_len: usize) -> (Client, usize) {
    let mut client = server.connect();
    let small: libc::c_int = 16 * 1024;
    // SAFETY: setsockopt(2) on a socket we own, with a pointer to a live c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            client.stream().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&small as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt(SO_RCVBUF): {}", std::io::Error::last_os_error());
    let requests = (kernel_send_buffer_max() + 2 * 1024 * 1024 + 2 * 256 * 1024) / answer_len + 1;
    client.send(&BIG_POLL.repeat(requests));
    (client, requests)
}

#[test]
fn a_reader_that_never_reads_is_dropped_at_the_write_timeout_and_its_buffers_are_freed() {
    let server = Server::start(&["--write-timeout", TIMEOUT_FLAG]);
    let answer_len = fill_big_topic(&server);
    let before = server.stats();
    let buffers_before = num(&before, "memory.buffer_bytes");

    let (client, requests) = never_reading_client(&server, answer_len);
    let sent = Instant::now();

    // Watch it get stuck, then dropped: `buffer_bytes` of every snapshot that shows it writing.
    let stuck: RefCell<Vec<u64>> = RefCell::new(Vec::new());
    let after = server.wait_for_stats("the stuck reader dropped for its write timeout", |s| {
        if num(s, "connections.writing") == 1 {
            stuck.borrow_mut().push(num(s, "memory.buffer_bytes"));
        }
        num(s, "totals.closed.write_timeout") == 1
    });
    let dropped_after = sent.elapsed();
    let stuck = stuck.into_inner();
    let peak = stuck.iter().copied().max().unwrap_or(0);
    let buffers_after = num(&after, "memory.buffer_bytes");
    eprintln!(
        "never-reading client ({requests} pipelined answers of {answer_len} bytes): buffer_bytes {buffers_before} \
         before, {peak} at most in {} snapshots while stuck, {buffers_after} after; dropped within {dropped_after:?} \
         of sending; pool_bytes after {}",
        stuck.len(),
        num(&after, "memory.pool_bytes"),
    );

    assert!(!stuck.is_empty(), "the connection was never seen writing before it was dropped: {after}");
    assert!(
        peak >= answer_len as u64,
        "while stuck, the connection's buffers hold the answers it could not send: peak {peak}"
    );
    assert!(
        peak <= STUCK_CONNECTION_MAX_BYTES,
        "the output cap bounds a stuck reader's buffers: {peak} > {STUCK_CONNECTION_MAX_BYTES}"
    );
    assert!(dropped_after + EARLY >= TIMEOUT, "dropped after {dropped_after:?}, before the write timeout");
    assert!(dropped_after <= TIMEOUT + MARGIN + Duration::from_secs(1), "dropped only after {dropped_after:?}");
    assert_eq!(num(&after, "connections.open"), 1, "only the /stats connection is left: {after}");
    assert!(
        buffers_after <= buffers_before.max(NEAR_ZERO_BYTES),
        "the dropped connection's buffers are released: {buffers_before} before, {buffers_after} after"
    );
    // The pool keeps no oversized buffer (it shrinks them above 64 KiB per direction).
    assert!(num(&after, "memory.pool_bytes") <= 2 * NEAR_ZERO_BYTES, "{after}");
    assert_accounting(&after);

    // Our side sees the end: what the kernel had queued, then EOF or a reset, never all the
    // answers asked for and never a connection left open.
    let mut received = 0usize;
    let mut chunk = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + common::IO_TIMEOUT;
    let mut stream = client.stream();
    let ending = loop {
        assert!(Instant::now() < deadline, "the dropped connection is still open after {:?}", common::IO_TIMEOUT);
        match stream.read(&mut chunk) {
            Ok(0) => break "EOF".to_string(),
            Ok(n) => received += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("the dropped connection is still open: no EOF after {received} bytes")
            }
            Err(e) => break e.to_string(),
        }
    };
    eprintln!("the dropped reader then received {received} bytes and {ending}");
    assert!(received < requests * answer_len, "all {requests} answers were delivered: not dropped");
}

#[test]
fn fifty_stuck_readers_do_not_slow_a_keep_alive_client() {
    const STUCK: usize = 50;
    const REQUESTS: usize = 20;
    let server = Server::start(&["--write-timeout", "60s"]);
    let answer_len = fill_big_topic(&server);
    let stuck: Vec<(Client, usize)> = (0..STUCK).map(|_| never_reading_client(&server, answer_len)).collect();

    // Stuck: all 50 writing and the server answering nothing else, i.e. between two snapshots
    // only the second snapshot's own request was answered.
    let last_requests = Cell::new(u64::MAX);
    let stats = server.wait_for_stats("50 readers stuck at their output cap", |s| {
        let requests = num(s, "totals.requests");
        let quiet = requests == last_requests.replace(requests).wrapping_add(1);
        quiet && num(s, "connections.writing") == STUCK as u64
    });
    let held = num(&stats, "memory.buffer_bytes");
    eprintln!("{STUCK} stuck readers hold buffer_bytes {held} ({} per connection)", held / STUCK as u64);
    assert!(held >= (STUCK * answer_len) as u64, "each stuck reader holds at least one answer: {stats}");
    assert!(held <= STUCK as u64 * STUCK_CONNECTION_MAX_BYTES, "the output cap bounds each stuck reader: {stats}");

    let mut client = server.connect();
    let mut slowest = Duration::ZERO;
    for _ in 0..REQUESTS {
        let started = Instant::now();
        let response = client.get("/plaintext");
        slowest = slowest.max(started.elapsed());
        assert_eq!((response.status, response.text()), (200, "Hello, World!"));
        response.assert_keeps_alive();
    }
    eprintln!("keep-alive client beside {STUCK} stuck readers: slowest of {REQUESTS} answers {slowest:?}");
    assert!(slowest <= PROMPT, "a keep-alive request took {slowest:?} beside {STUCK} stuck readers");

    let stats = client.stats();
    assert_eq!(num(&stats, "connections.writing"), STUCK as u64, "the stuck readers are still there: {stats}");
    assert_eq!(num(&stats, "totals.closed.write_timeout"), 0, "{stats}");
    assert_accounting(&stats);
    drop(stuck);
}
